"""How model backends plug into the pipeline: backend specs and settings, img2img through the store,
per-step progress, extra PNG chunks, imported init images, the Dagster resource, and the CLI's
render --init, models and compare."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.errors import InvalidInputError, NotFoundError
from echo_pipeline.render.backends.base import (
    BackendCapabilities,
    BackendConfig,
    BackendDescription,
    ImageBackend,
    RenderedImage,
)
from echo_pipeline.render.backends.registry import create_backend, split_backend_spec
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.settings import Settings
from echo_pipeline.workflows.batch_processor import BatchProcessor
from echo_pipeline.workflows.creative_engine import CreativeEngine
from echo_pipeline_tests.conftest import REPO_ROOT


class SteppingBackend(ImageBackend):
    """A sampler-like backend: four steps per image, all images of a call in one batch (like
    diffusers), plus ComfyUI-style PNG chunks."""

    name = "stepping"
    capabilities = BackendCapabilities(img2img=True)
    steps = 4

    def describe(self) -> BackendDescription:
        return BackendDescription(backend="stepping", model=self.config.model or "m", version="1")

    def render(self, requests, progress=None):
        requests = list(requests)
        self.check_requests(requests)
        total = self.steps * len(requests)
        for step in range(1, self.steps + 1):  # the whole batch advances together
            if progress is not None:
                progress(step * len(requests), total)
        for request in requests:
            pixels = np.full((request.height, request.width, 3), request.seed % 256, dtype=np.uint8)
            yield RenderedImage(request, Image.fromarray(pixels), {"steps": self.steps},
                                png_text={"prompt": json.dumps({"3": {"class_type": "KSampler"}}),
                                          "workflow": '{"nodes": []}', "parameters": "not ours"})

    def refine(self, parent, request, progress=None):
        if progress is not None:
            progress(1, 2)
            progress(2, 2)
        pixels = 255 - np.asarray(parent.image.resize(request.size))
        return RenderedImage(request, Image.fromarray(pixels), {"parent_artifact_id": parent.artifact_id})


def _requests(n: int, project: str = "p", **extra) -> list[RenderRequest]:
    return [RenderRequest(prompt=f"grey {k}", seed=k + 1, width=64, height=64, project=project, index=k, **extra)
            for k in range(n)]


# -- specs and settings --------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "expected"), [
    ("procedural", ("procedural", None)),
    ("Diffusers:stabilityai/sd-turbo", ("diffusers", "stabilityai/sd-turbo")),
    ("diffusers:C:/models/x.safetensors", ("diffusers", "C:/models/x.safetensors")),
    (" openai : gpt-image-1 ", ("openai", "gpt-image-1")),
])
def test_backend_spec_splits_on_the_first_colon(spec, expected):
    assert split_backend_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "   ", "diffusers:", "diffusers:  "])
def test_bad_backend_specs_are_one_line_errors(spec):
    with pytest.raises(InvalidInputError) as info:
        split_backend_spec(spec)
    assert "\n" not in str(info.value)


def test_unknown_backend_suggests_the_closest():
    with pytest.raises(NotFoundError, match="did you mean 'diffusers'"):
        create_backend("difusers:x")


def test_a_model_in_the_spec_overrides_the_configured_one():
    backend = create_backend("procedural:ignored", BackendConfig(model="other"))
    assert backend.config.model == "ignored"


def test_settings_yaml_environment_and_flags_configure_backends(config_dir, monkeypatch):
    (config_dir / "settings.yaml").write_text(
        "backends:\n  comfyui_url: http://10.0.0.5:8188/\n  device: cpu\nmodels:\n  diffusers: ./tiny-sd\n")
    settings = Settings.load(config_dir=config_dir)
    assert settings.backends.comfyui_url == "http://10.0.0.5:8188" and settings.backends.device == "cpu"
    config = settings.backend_config("diffusers")
    assert config.model == "./tiny-sd" and config.config_dir == str(config_dir)
    assert settings.backend_config("diffusers", "other").model == "other"
    assert settings.backend_config("comfyui").model is None

    monkeypatch.setenv("ECHO_COMFYUI_URL", "http://127.0.0.1:9999")
    assert Settings.load(config_dir=config_dir).backends.comfyui_url == "http://127.0.0.1:9999"
    flagged = Settings.load(config_dir=config_dir, backend_options={"comfyui_url": "http://h:1", "dtype": None})
    assert flagged.backends.comfyui_url == "http://h:1" and flagged.backends.device == "cpu"


@pytest.mark.parametrize(("yaml_text", "needle"), [
    ("backends:\n  comfyui_url: ftp://x\n", "not an http(s) URL"),
    ("backends:\n  gpu: yes\n", "gpu"),
    ("backends:\n  batch_size: 0\n", "batch_size"),
])
def test_bad_backend_settings_are_one_line_errors(config_dir, yaml_text, needle):
    (config_dir / "settings.yaml").write_text(yaml_text)
    with pytest.raises(InvalidInputError) as info:
        Settings.load(config_dir=config_dir)
    assert needle in str(info.value) and "\n" not in str(info.value)


# -- the batch processor with a model-like backend -------------------------------------------------
def test_progress_moves_between_images_and_never_claims_an_unstored_one(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "a"))
    seen: list[tuple[float, int, bool]] = []
    result = BatchProcessor(store, SteppingBackend()).run(
        _requests(3), progress=lambda done, total, record: seen.append((done, total, record is not None)))
    assert len(result.new) == 3
    values = [v for v, _, _ in seen]
    assert values == sorted(values) and values[0] == 0 and values[-1] == 3
    fractional = [v for v, _, stored in seen if not stored and 0 < v < 3]
    assert fractional and all(v < 1 for v in fractional)  # the batch advances, capped below image 1
    assert [v for v, _, stored in seen if stored] == [1, 2, 3]


def test_extra_png_chunks_are_kept_and_ours_win(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "a"))
    record = BatchProcessor(store, SteppingBackend()).run(_requests(1)).new[0]
    with Image.open(store.image_path("p", record.artifact_id)) as png:
        text = dict(png.text)
    assert json.loads(text["prompt"]) == {"3": {"class_type": "KSampler"}}
    assert text["workflow"] == '{"nodes": []}'
    assert text["parameters"].startswith("grey 0") and "Steps: 30" in text["parameters"]
    assert store.verify("p").ok


def test_img2img_requests_refine_their_stored_parent(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "a"))
    processor = BatchProcessor(store, SteppingBackend())
    parent = processor.run(_requests(1)).new[0]
    child_request = _requests(1, parent_id=parent.artifact_id, strength=0.6)[0].model_copy(update={"prompt": "rain"})
    seen: list[float] = []
    child = processor.run([child_request], progress=lambda d, t, r: seen.append(d)).new[0]
    assert child.parent_id == parent.artifact_id and child.info["parent_artifact_id"] == parent.artifact_id
    parent_pixels = np.asarray(store.load_image(parent))
    assert (np.asarray(store.load_image(child)) == 255 - parent_pixels).all()
    assert seen == sorted(seen) and seen[-1] == 1 and 0.5 in seen
    again = processor.run([child_request])
    assert not again.new and again.existing[0].artifact_id == child.artifact_id  # idempotent


def test_img2img_with_a_missing_parent_is_a_clear_error(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "a"))
    request = _requests(1, parent_id="abcdef0123456789abcd", strength=0.5)[0]
    with pytest.raises(NotFoundError, match="abcdef0123456789abcd"):
        BatchProcessor(store, SteppingBackend()).run([request])
    assert store.catalog("p").empty


# -- init images -----------------------------------------------------------------------------------
def test_an_imported_init_image_is_stored_once_and_scaled_to_fit(settings, tmp_path):
    engine = CreativeEngine(settings)
    path = tmp_path / "ref.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (3000, 100, 3), dtype=np.uint8)).save(path)
    first = engine.init_image(str(path), "refs")
    again = engine.init_image(str(path), "refs")
    assert first.artifact_id == again.artifact_id and len(engine.store.catalog("refs")) == 1
    assert first.backend.backend == "import" and max(first.width, first.height) == 2048
    assert engine.init_image(first.artifact_id[:8], "other-project").artifact_id == first.artifact_id
    with pytest.raises(NotFoundError, match="does not exist"):
        engine.init_image(str(tmp_path / "missing.png"), "refs")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InvalidInputError, match="not a readable image"):
        engine.init_image(str(tmp_path / "bad.png"), "refs")


# -- the Dagster resource ---------------------------------------------------------------------------
def test_the_resource_creates_each_backend_and_model_once_with_the_settings(settings):
    from echo_pipeline.defs.resources import ImageBackendResource

    settings = settings.model_copy(update={"models": {"procedural": "from-settings"}})
    resource = ImageBackendResource(**ImageBackendResource.config_for(settings))
    first = resource.get("procedural")
    assert first is resource.get("procedural") and first.config.model == "from-settings"
    other = resource.get("procedural", "spec-model")
    assert other is resource.get("procedural:spec-model") and other is not first
    assert other.config.config_dir == str(settings.config_dir)


# -- CLI ------------------------------------------------------------------------------------------
def test_render_init_from_a_file_and_from_an_artifact_names_the_parent(cli, tmp_path, artifact_root):
    code, out, err = cli("render", "warm fractal", "--size", "96", "--json")
    assert code == 0, err
    parent = json.loads(out)["artifacts"][0]["artifact_id"]
    code, out, err = cli("render", "warm fractal with rain", "--init", parent[:8], "--strength", "0.6", "--json")
    assert code == 0, err
    child = json.loads(out)
    assert child["parent"] == parent and child["artifacts"][0]["width"] == 96
    store = ArtifactStore.open(str(artifact_root))
    record = store.find(child["artifacts"][0]["artifact_id"])
    assert record.parent_id == parent and record.request.strength == 0.6

    Image.new("RGB", (128, 64), (200, 90, 20)).save(tmp_path / "mine.webp")
    code, out, err = cli("render", "ember glow", "--init", str(tmp_path / "mine.webp"), "--json")
    assert code == 0, err
    made = json.loads(out)
    imported = store.find(made["parent"])
    assert imported.backend.backend == "import" and made["artifacts"][0]["width"] == 128

    code, _, err = cli("render", "x", "--strength", "0.5")
    assert code == 2 and "--strength needs --init" in err


def test_models_lists_procedural_as_usable(cli, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, out, err = cli("models", "--json")
    assert code == 0, err
    rows = {r["backend"]: r for r in json.loads(out)}
    assert rows["procedural"]["usable"] is True
    assert rows["openai"]["usable"] is False and "OPENAI_API_KEY" in rows["openai"]["reason"]
    assert rows["diffusers"]["usable"] is False and rows["diffusers"]["reason"]


def test_render_on_a_comfyui_server_from_the_cli_keeps_its_chunks(cli, artifact_root):
    from echo_pipeline_tests.comfyui_server import running_comfyui_server

    with running_comfyui_server() as (url, state):
        code, out, err = cli("--comfyui-url", url, "render", "warm fractal", "--backend", "comfyui", "--size", "64",
                             "--steps", "3", "--sampler", "DPM++ 2M Karras", "--count", "2", "--json")
        assert code == 0, err
        made = json.loads(out)
        assert made["new"] == 2 and made["backend"] == "comfyui"
        assert len(state.prompts) == 2
    store = ArtifactStore.open(str(artifact_root))
    record = store.find(made["artifacts"][0]["artifact_id"])
    assert record.info["sampler_name"] == "dpmpp_2m" and record.info["scheduler"] == "karras"
    with Image.open(store.image_path(record.project, record.artifact_id)) as png:
        text = dict(png.text)
    graph = json.loads(text["prompt"])  # ComfyUI's own chunk: the API graph it ran
    assert any(node["class_type"] == "KSampler" for node in graph.values())
    assert "Steps: 3, Sampler: DPM++ 2M Karras, CFG scale: 7" in text["parameters"]
    assert "Echo backend: comfyui" in text["parameters"]


def test_a_comfyui_server_that_is_down_is_one_line_and_stores_nothing(cli, artifact_root):
    from echo_pipeline_tests.comfyui_server import _free_socket

    sock = _free_socket()  # bound, never listening: connections are refused
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        code, _, err = cli("--comfyui-url", url, "render", "x", "--backend", "comfyui", "--model", "a.safetensors",
                           "--size", "64")
    finally:
        sock.close()
    assert code == 2 and "not reachable" in err and url in err and len(err.strip().splitlines()) == 1
    assert not (artifact_root / "projects" / "default" / "images").exists() or not any(
        (artifact_root / "projects" / "default" / "images").iterdir())


# -- the acceptance path on the tiny diffusers pipeline ------------------------------------
@pytest.mark.torch
@pytest.mark.slow(seconds=10)
def test_diffusers_from_the_cli_render_img2img_and_a_project_batch(cli, tiny_sd, artifact_root, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ("--size", "64", "--steps", "3", "--json")
    code, out, err = cli("render", "warm fractal", "--backend", "diffusers", "--model", str(tiny_sd), *args)
    assert code == 0, err
    first = json.loads(out)
    assert first["backend"] == f"diffusers:{tiny_sd}" and first["new"] == 1
    store = ArtifactStore.open(str(artifact_root))
    parent = store.find(first["artifacts"][0]["artifact_id"])
    with Image.open(store.image_path(parent.project, parent.artifact_id)) as png:
        parameters = png.text["parameters"]
        pixels = png.tobytes()
    assert "Steps: 3, Sampler: Euler a, CFG scale: 7, Seed: " in parameters
    assert f"Model hash: {parent.backend.model_hash}" in parameters and len(parent.backend.model_hash) == 10
    assert parent.info["scheduler"] == "EulerAncestralDiscreteScheduler"

    # The same seed twice gives identical pixels (a fresh artifact root, so nothing is skipped).
    code, out, err = cli("--artifact-root", str(artifact_root.parent / "again"), "render", "warm fractal",
                         "--backend", f"diffusers:{tiny_sd}", *args)
    assert code == 0, err
    again = ArtifactStore.open(str(artifact_root.parent / "again"))
    with Image.open(again.image_path("default", json.loads(out)["artifacts"][0]["artifact_id"])) as png:
        assert png.tobytes() == pixels

    code, out, err = cli("render", "warm fractal in the rain", "--backend", f"diffusers:{tiny_sd}",
                         "--init", parent.artifact_id, "--strength", "0.6", *args)
    assert code == 0, err
    child = store.find(json.loads(out)["artifacts"][0]["artifact_id"])
    assert child.parent_id == parent.artifact_id and child.request.strength == 0.6
    assert child.info["parent_artifact_id"] == parent.artifact_id

    code, _, err = cli("plan", "Tiny Diffusion", "warm fractal, no human forms", "--backend",
                       f"diffusers:{tiny_sd}", "--size", "64x64", "--count", "3", "--steps", "2", "--json")
    assert code == 0, err
    code, out, err = cli("batch", "--project", "tiny", "--json")
    assert code == 0, err
    records = store.catalog("tiny-diffusion")
    assert len(records) == 3 and set(records.backend) == {"diffusers"} and set(records.steps) == {2}
    assert set(records.model) == {str(tiny_sd)}

    # render into that project: its spec's backend, model, size and steps apply unless given.
    code, out, err = cli("render", "a lighthouse", "-p", "tiny", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["backend"] == f"diffusers:{tiny_sd}" and made["artifacts"][0]["width"] == 64
    assert store.find(made["artifacts"][0]["artifact_id"]).request.steps == 2
    code, _, err = cli("render", "x", "--model", str(tiny_sd))
    assert code == 2 and "procedural renderer has no models" in err


@pytest.mark.torch
def test_compare_prints_a_table_over_three_backends_and_selects_the_best(cli, tiny_sd, config_dir, artifact_root):
    from echo_pipeline_tests.comfyui_server import running_comfyui_server

    code, _, err = cli("plan", "Compare Me", "warm fractal", "--size", "64x64", "--steps", "2")
    assert code == 0, err
    with running_comfyui_server() as (url, _state):
        code, out, err = cli("--comfyui-url", url, "compare", "--project", "compare-me", "--count", "2",
                             "--backends", f"procedural,diffusers:{tiny_sd},comfyui", "--select", "best")
    assert code == 0, err
    lines = out.splitlines()
    for backend in ("procedural", "diffusers:", "comfyui"):
        row = next(line for line in lines if line.strip("│ ").startswith(backend))
        assert " 2 " in row and row.count(".") >= 4  # images and four scores
    assert "contact sheet:" in out and "now renders with" in out
    sheet = next(line.split(": ", 1)[1] for line in lines if line.startswith("contact sheet:"))
    with Image.open(sheet if sheet.startswith("/") else str(artifact_root.parent / sheet)) as image:
        assert image.height > 3 * 64  # three labelled rows
    spec = (config_dir / "projects" / "compare-me.yaml").read_text()
    assert "backend:" in spec


def test_infotext_names_local_models_by_file_and_leaves_out_seeds_an_api_ignores():
    from echo_pipeline.artifacts.metadata import infotext_params
    from echo_pipeline.artifacts.records import ArtifactRecord

    request = RenderRequest(prompt="fox", seed=9, width=64, height=64, backend="diffusers",
                            model="/models/dreamshaper_8.safetensors")
    record = ArtifactRecord(artifact_id=request.request_id, project="p", request=request,
                            backend=BackendDescription(backend="diffusers", model=request.model, model_hash="abcdef0123"))
    params = infotext_params(record, sampler=True)
    assert params["Model"] == "dreamshaper_8" and params["Model hash"] == "abcdef0123" and params["Seed"] == "9"
    hub = record.model_copy(update={"request": request.model_copy(update={"model": "stabilityai/sd-turbo"})})
    assert infotext_params(hub, sampler=True)["Model"] == "stabilityai/sd-turbo"
    api = record.model_copy(update={"info": {"seed_honoured": False}})
    assert "Seed" not in infotext_params(api, sampler=False)


def test_render_with_your_own_comfyui_workflow_and_node_map(cli, tmp_path, artifact_root):
    from echo_pipeline_tests.comfyui_server import running_comfyui_server

    template = json.loads((REPO_ROOT / "configs" / "comfyui" / "txt2img.json").read_text())
    values = {"{{checkpoint}}": "sd15-test.safetensors", "{{prompt}}": "old", "{{negative}}": "", "{{seed}}": 0,
              "{{steps}}": 2, "{{cfg}}": 5.0, "{{sampler}}": "euler", "{{scheduler}}": "normal",
              "{{width}}": 64, "{{height}}": 64, "{{denoise}}": 1.0}
    fixed = {node: {**spec, "inputs": {k: values.get(v, v) if isinstance(v, str) else v
                                       for k, v in spec["inputs"].items()}} for node, spec in template.items()}
    assert "{{" not in json.dumps(fixed)
    prompt_node = next(n for n, s in fixed.items() if s["class_type"] == "CLIPTextEncode")
    seed_node = next(n for n, s in fixed.items() if s["class_type"] == "KSampler")
    (tmp_path / "mine.json").write_text(json.dumps(fixed))
    with running_comfyui_server() as (url, state):
        code, out, err = cli("--comfyui-url", url, "--comfyui-workflow", str(tmp_path / "mine.json"),
                             "--comfyui-node", f"prompt={prompt_node}", "--comfyui-node", f"seed={seed_node}",
                             "render", "a lighthouse", "--backend", "comfyui", "--size", "64", "--seed", "77", "--json")
        assert code == 0, err
        sent = next(iter(state.prompts.values()))["prompt"]
    assert sent[prompt_node]["inputs"]["text"] == "a lighthouse" and sent[seed_node]["inputs"]["seed"] == 77
    code, _, err = cli("--comfyui-node", "prompt", "render", "x", "--backend", "comfyui")
    assert code == 2 and "ROLE=NODE_ID" in err
    (tmp_path / "ui.json").write_text(json.dumps({"nodes": [], "links": []}))
    code, _, err = cli("--comfyui-workflow", str(tmp_path / "ui.json"), "render", "x", "--backend", "comfyui")
    assert code == 2 and "API" in err and len(err.strip().splitlines()) == 1


def test_relative_model_paths_in_a_spec_mean_the_same_file_from_anywhere(settings, tmp_path, monkeypatch):
    engine = CreativeEngine(settings)
    monkeypatch.chdir(tmp_path)
    spec = engine.projects.create("Rel Model", "warm fractal", backend="diffusers:./models/tiny")
    assert spec.backend == "diffusers" and spec.model == str(tmp_path / "models" / "tiny")
    spec = engine.projects.create("Hub Model", "warm fractal", backend="diffusers", model="stabilityai/sd-turbo")
    assert spec.model == "stabilityai/sd-turbo"
    # Written by hand: relative to the folder that holds configs/, wherever echo-os runs.
    path = settings.config_dir / "projects" / "by-hand.yaml"
    path.write_text("name: By Hand\nintent: warm fractal\nbackend: diffusers\nmodel: ./weights/x.safetensors\n")
    monkeypatch.chdir(settings.config_dir)
    assert engine.projects.load("by-hand").model == str(settings.config_dir.parent / "weights" / "x.safetensors")
