"""`echo-os memory --analyze | --export | --import` (the vision's `memory --analyze`)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from echo_pipeline.artifacts.storage import ArtifactStore


@pytest.mark.slow(seconds=10)
def test_memory_analyze_plots_exports_and_imports(cli, artifact_root, tmp_path):
    code, _, err = cli("plan", "Memory Test", "warm fractal", "--size", "64x64", "--count", "3")
    assert code == 0, err
    outputs = []
    for _ in range(2):
        code, out, err = cli("batch", "--project", "memory")
        assert code == 0, err
        outputs.append(out)
    assert "this batch's style consistency" in outputs[0] and "the batch before" not in outputs[0]
    assert "(the batch before: " in outputs[1]  # the new batch measured against the one before

    code, out, err = cli("memory", "--analyze")  # no project: every project with a memory
    assert code == 0, err
    assert "memory-test" in out and "learned from 6 accepted image(s)" in out
    assert "not stable yet: 44 more accepted image(s) needed (50)" in out
    plot = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("evolution plot:"))
    with Image.open(plot if plot.startswith("/") else str(artifact_root.parent / plot)) as png:
        assert png.format == "PNG" and png.width > 300

    code, out, err = cli("memory", "-p", "memory", "--json")
    assert code == 0, err
    (summary,) = json.loads(out)
    assert summary["images"] == 6 and summary["versions"] == 2 and len(summary["history"]) == 2
    assert [row["images"] for row in summary["history"]] == [3, 6]

    exported = tmp_path / "memory.json"
    code, _, err = cli("memory", "-p", "memory", "--export", str(exported))
    assert code == 0, err
    code, _, err = cli("plan", "Other Machine", "cool nebula")
    assert code == 0, err
    code, out, err = cli("memory", "--import", str(exported), "-p", "other")
    assert code == 0 and "into project other-machine" in out, err
    store = ArtifactStore.open(str(artifact_root))
    from echo_pipeline.resonance.memory_system import load_memory

    assert load_memory(store, "other-machine").count == 6

    (tmp_path / "junk.json").write_text("{not json")
    code, _, err = cli("memory", "--import", str(tmp_path / "junk.json"))
    assert code == 2 and "not a style memory export" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("memory", "--export", str(tmp_path / "x.json"))
    assert code == 2 and "--export needs --project" in err


def test_learn_from_references_makes_a_style_render_can_use(cli, artifact_root, tmp_path):
    code, out, err = cli("render", "ocean waves", "--count", "3", "--size", "128", "--json")
    assert code == 0, err
    ids = [a["artifact_id"] for a in json.loads(out)["artifacts"]]
    code, out, err = cli("memory", "--learn-from", ",".join(ids), "--json")  # the vision's --learn-from=<id>
    assert code == 0, err
    learned = json.loads(out)
    assert learned["palette"] == "ocean" and "waves" in learned["words"] and learned["images"] == 3
    assert learned["style"] == f"learned-{ids[0]}" and learned["prompt"].startswith("ocean palette")

    # A user's own files (no metadata, JPEG) from a folder and a glob, under a chosen name.
    store = ArtifactStore.open(str(artifact_root))
    refs = tmp_path / "refs"
    refs.mkdir()
    for k, artifact_id in enumerate(ids):
        store.load_image(store.find(artifact_id)).save(refs / f"ref{k}.jpg", quality=90)
    code, out, err = cli("memory", "--learn-from", str(refs), "--name", "sea study", "--json")
    assert code == 0, err
    assert json.loads(out)["palette"] == "ocean" and json.loads(out)["prompts"] == 0
    code, out, err = cli("memory", "--learn-from", str(refs / "*.jpg"), "--name", "sea study", "--json")
    assert code == 2 and "already exists" in err  # a chosen name is never overwritten silently

    code, out, err = cli("render", "calm sea", "--style", "sea study", "--size", "96", "--json")
    assert code == 0, err
    assert json.loads(out)["artifacts"][0]["prompt"] == "calm sea, ocean palette"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("memory", "--learn-from", str(empty))
    assert code == 2 and "no PNG, JPEG or WebP images" in err


def test_what_the_memory_learned_goes_into_the_next_prompt_set(settings):
    from echo_pipeline.render.backends.procedural import ProceduralBackend
    from echo_pipeline.resonance.memory_system import StyleMemory, save_memory
    from echo_pipeline.workflows.creative_engine import CreativeEngine
    from echo_pipeline.workflows.project_pipeline import ProjectPipeline

    engine = CreativeEngine(settings)
    engine.projects.create("Fed Back", "warm fractal", count=2, width=64, height=64)
    pipeline = ProjectPipeline(engine, "fed-back")
    pipeline.intent()
    pipeline.plan()
    save_memory(engine.store, StyleMemory(project="fed-back", count=5, learned_modifiers=["golden", "glow", "x"]))
    step = pipeline.prompt_set(ProceduralBackend(workers=1))
    assert all(r.prompt.startswith("warm fractal, golden, glow") for r in step.data)
    assert step.summary["memory_modifiers"] == "golden, glow"
    engine.projects.create("Fed Back", None, use_memory=False)
    step = ProjectPipeline(engine, "fed-back").prompt_set(ProceduralBackend(workers=1))
    assert not any("golden" in r.prompt for r in step.data) and step.summary["memory_modifiers"] == "-"


def test_the_memory_palette_goes_only_into_prompts_that_name_none(settings):
    from echo_pipeline.render.backends.procedural import ProceduralBackend
    from echo_pipeline.resonance.memory_system import StyleMemory, save_memory
    from echo_pipeline.workflows.creative_engine import CreativeEngine
    from echo_pipeline.workflows.project_pipeline import PROMPT_SET_FILE, ProjectPipeline

    engine = CreativeEngine(settings)
    learned = {"palette_seen": {"ocean": 4, "fire": 4}, "palette_accepted": {"ocean": 4, "fire": 2},
               "palette_total": {"ocean": 320.0, "fire": 200.0}, "palette_scored": {"ocean": 4, "fire": 4}}
    for name, intent in (("Open Palette", "mandelbrot fractal"), ("Warm Choice", "warm fractal")):
        spec = engine.projects.create(name, intent, count=2, width=64, height=64)
        pipeline = ProjectPipeline(engine, spec.slug)
        pipeline.intent()
        pipeline.plan()
        save_memory(engine.store, StyleMemory(project=spec.slug, count=6, **learned))
        step = pipeline.prompt_set(ProceduralBackend(workers=1))
        payload = json.loads(engine.store.read_project_file(spec.slug, PROMPT_SET_FILE))
        if name == "Open Palette":  # the memory's best palette (ocean, mean 80) where the prompt names none
            assert all(r.prompt.endswith(", ocean palette") for r in step.data)
            assert payload["memory_palette"] == "ocean" and step.summary["memory_palette"].startswith("ocean (2 ")
            # ... and the renderer draws with it
            assert ProceduralBackend.params_for(step.data[0])["palette"]["name"] == "ocean"
        else:  # "warm" is the user's choice: kept
            assert not any("ocean" in r.prompt for r in step.data) and payload["memory_palette"] is None
