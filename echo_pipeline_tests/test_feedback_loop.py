"""`echo-os resonance --project X --rounds N`: the feedback loop refines the weakest images, keeps
only children that really score better, and its reported gain is recomputed from the stored scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.resonance.memory_system import load_scores
from echo_pipeline.resonance.quality_assessor import PROJECT_DUPLICATE_DISTANCE, hamming


@pytest.mark.slow(seconds=9)
def test_resonance_improves_the_weakest_and_the_gain_is_recomputable(cli, artifact_root):
    code, _, err = cli("plan", "Loop Test", "warm fractal, no human forms", "--size", "96x96", "--count", "10")
    assert code == 0, err
    code, _, err = cli("batch", "--project", "loop")
    assert code == 0, err

    code, out, err = cli("resonance", "--project", "loop", "--rounds", "2", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["project"] == "loop-test" and len(report["images"]) == 2  # the weakest 20 % of 10
    assert 1 <= len(report["rounds"]) <= 2 and report["rounds"][0]["tried"] == 6  # 3 candidates per image

    store = ArtifactStore.open(str(artifact_root))
    scores = load_scores(store, "loop-test").set_index("artifact_id")
    start = np.mean([scores.loc[i["original"], "total"] for i in report["images"]])
    end = np.mean([scores.loc[i["head"], "total"] for i in report["images"]])
    assert abs(start - report["start_mean"]) < 0.01 and abs(end - report["final_mean"]) < 0.01
    assert abs(100 * (end - start) / start - report["improvement_pct"]) < 0.01
    assert report["improvement_pct"] >= 0  # a head only ever changes for a better child

    others = {a: h for a, h in scores["phash"].items() if isinstance(h, str)}
    for image in report["images"]:
        chain = [image["original"], *image["lineage"]]
        for parent, child in zip(chain, chain[1:], strict=False):
            record = store.find(child, project="loop-test")
            assert record.parent_id == parent  # every kept child names its parent
            assert scores.loc[child, "total"] > scores.loc[parent, "total"]
        if image["lineage"]:  # a kept child is no near-duplicate of anything outside its lineage
            head_hash = scores.loc[image["head"], "phash"]
            assert min(hamming(head_hash, h) for a, h in others.items() if a not in chain
                       and store.find(a, project="loop-test").parent_id not in chain) > PROJECT_DUPLICATE_DISTANCE

    code, out, err = cli("runs", "--project", "loop", "--json")
    assert code == 0 and "resonance_job" in [run["job"] for run in json.loads(out)]


def test_guidance_words_steer_towards_what_the_head_lacks():
    from echo_pipeline.workflows.feedback_loop import guidance_words

    dark = {"sharpness": 80.0, "exposure": 40.0, "colourfulness": 65.0, "style_consistency": 90.0}
    assert guidance_words(dark, "warm", 60.0) == ["brighter"]  # the weakest component, not every weak one
    off_style_blurry = {"sharpness": 30.0, "exposure": 90.0, "colourfulness": 90.0, "style_consistency": 40.0}
    assert guidance_words(off_style_blurry, "warm", 60.0) == ["intricate", "warm palette"]
    assert guidance_words({"sharpness": 85.0, "exposure": 90.0, "colourfulness": 75.0}, None, 60.0) == []
    # the words mean something to the procedural renderer (its detail / light / saturation axes)
    from echo_pipeline.render.backends.procedural.words import parse

    parsed = parse("warm fractal, intricate, brighter, vibrant")
    assert parsed.detail > 0 and parsed.light > 0 and parsed.saturation > 0
