"""`echo-os refine <id> ["<new prompt>"]`: img2img of a stored image, the child naming its parent
(the vision's use case 2: `refine <id> "add rain effects"`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.render.prompt_engine import PromptSpec
from echo_pipeline.workflows.creative_engine import CreativeEngine


@pytest.fixture
def engine(settings) -> CreativeEngine:
    return CreativeEngine(settings)


def _parent(engine: CreativeEngine, prompt: str, style: str | None = None):
    from echo_pipeline.render.backends.procedural import ProceduralBackend

    spec = PromptSpec(prompt=prompt, style=style, width=128, height=128, negative_prompt="text")
    return engine.render(spec, ProceduralBackend(workers=1)).new[0]


def test_refine_spec_adds_words_replaces_the_prompt_or_makes_a_variation(engine):
    parent = _parent(engine, "cyberpunk cityscape", style="neon noir")
    style = engine.styles.get("neon noir")
    added = engine.refine_spec(parent, "add rain effects")
    assert added.prompt == "cyberpunk cityscape, rain effects" and added.style == "neon noir"
    assert added.parent_id == parent.artifact_id and added.strength == 0.5 and added.seed == parent.request.seed
    assert added.negative_prompt == "text"  # the style's own negative is not doubled: it is applied again
    final = engine.plan_requests(added)[0]
    assert final.negative_prompt == f"text, {style.negative_prompt}"
    assert engine.refine_spec(parent, "a quiet harbour at dawn", strength=0.8).prompt == "a quiet harbour at dawn"
    assert engine.refine_spec(parent).prompt == "cyberpunk cityscape"
    assert (added.width, added.height, added.steps, added.sampler) == (128, 128, parent.request.steps,
                                                                       parent.request.sampler)


def test_refine_from_the_cli_adds_rain_to_a_fractal_as_its_child(cli, artifact_root):
    code, out, err = cli("render", "warm fractal", "--size", "128", "--json")
    assert code == 0, err
    parent_id = json.loads(out)["artifacts"][0]["artifact_id"]
    code, out, err = cli("refine", parent_id[:8], "add rain effects", "--json")
    assert code == 0, err
    child = json.loads(out)
    assert child["parent"] == parent_id and child["status"] == "new" and child["backend"] == "procedural"
    assert child["prompt"].startswith("warm fractal, rain effects") and "+rain" in child["changes"]
    store = ArtifactStore.open(str(artifact_root))
    record = store.find(child["artifact_id"])
    assert record.parent_id == parent_id and record.request.strength == 0.5
    parent_pixels = np.asarray(store.load_image(store.find(parent_id)), dtype=np.float32)
    child_pixels = np.asarray(store.load_image(record), dtype=np.float32)
    assert np.abs(parent_pixels - child_pixels).mean() > 1  # it visibly changed
    with Image.open(store.image_path(record.project, record.artifact_id)) as png:
        assert f"Echo parent: {parent_id}" in png.text["parameters"]
    code, out, err = cli("refine", parent_id, "add rain effects", "--json")
    assert code == 0 and json.loads(out)["status"] == "stored"  # the same refinement is not made twice
    code, _, err = cli("refine", "ffffffff", "add fog")
    assert code == 2 and "no artifact matches" in err


def test_a_contextual_word_changes_the_look_not_the_motif():
    """"add stars" to a fractal keeps the fractal ("stars" only suggests a nebula when a prompt names
    no family); naming a family ("nebula") does change the motif."""
    from echo_pipeline.render.backends import ParentImage
    from echo_pipeline.render.backends.procedural import ProceduralBackend
    from echo_pipeline.render.requests import RenderRequest

    backend = ProceduralBackend(workers=1)
    parent_request = RenderRequest(prompt="warm fractal", seed=3, width=64, height=64)
    (parent,) = list(backend.render([parent_request]))
    base = ParentImage("parent", parent.image, parent_request, parent.info)

    def child(prompt: str) -> dict:
        request = RenderRequest(prompt=prompt, seed=4, width=64, height=64, parent_id="parent", strength=0.5)
        return backend.refine(base, request).info

    from echo_pipeline.render.backends.procedural.words import parse

    assert parse("stars").motif == "nebula" and parse("stars").motif_contextual
    assert child("warm fractal, stars")["params"]["motif"] == "fractal"
    nebula = child("warm fractal, nebula")
    assert nebula["params"]["motif"] == "nebula" and "motif:nebula" in nebula["changes"]
