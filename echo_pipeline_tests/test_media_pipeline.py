"""Media through the pipeline: the vision's use case 3 as written, a project making every media type
through `echo-os batch`, kept views re-rendered, audio-driven video from the CLI, resuming a media
request killed mid-way, and bad media options as one-line errors."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends.procedural import ProceduralBackend
from echo_pipeline.render.prompt_engine import PromptSpec
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.settings import Settings
from echo_pipeline.workflows.creative_engine import CreativeEngine
from echo_pipeline.workflows.multi_modal import media_options, with_sources


def _store(artifact_root: Path) -> ArtifactStore:
    return ArtifactStore(str(artifact_root))


def _by_type(rendered: dict) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for artifact in rendered["artifacts"]:
        kinds.setdefault(artifact["media_type"], []).append(artifact)
    return kinds


@pytest.mark.slow(seconds=10)
def test_use_case_3_as_written(cli, artifact_root):
    """plan, render a 3D model and a texture, commit the work: a tileable steel texture with its maps,
    a GLB that loads back with its texture, a work-log entry materialized in Dagster."""
    import trimesh

    from echo_pipeline.media.texture_maps import SEAM_RATIO_TILEABLE, decode_normal, seam_measure

    code, out, err = cli("plan", "Video Game Assets", "medieval fantasy weapons")
    assert code == 0, err
    code, out, err = cli("render", "sword design", '--type=3d_model', "--json")
    assert code == 0, err
    assert json.loads(out)["words_ignored"] == []  # "design" asks for the concept-sheet item it gets
    model_run = _by_type(json.loads(out))
    model = model_run["3d_model"][0]
    assert set(model["made_from"]) == {"concept", "texture"}
    assert {"model.glb", "model.obj", "model.mtl", "texture.png"} <= set(model["files"])
    texture_of_model = model_run["texture"][0]
    assert model["made_from"]["texture"] == [texture_of_model["artifact_id"]]

    scene = trimesh.load(model["files"]["model.glb"], force="scene")
    (mesh,) = scene.geometry.values()
    assert len(mesh.vertices) > 100 and len(mesh.faces) > 100
    uv = np.asarray(mesh.visual.uv)
    assert uv.shape == (len(mesh.vertices), 2) and uv.min() >= -1e-6 and uv.max() <= 1 + 1e-6
    embedded = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    stored = np.asarray(Image.open(texture_of_model["path"]).convert("RGB"))
    assert embedded.shape == stored.shape and np.array_equal(embedded, stored)
    obj = trimesh.load(model["files"]["model.obj"], force="mesh")
    assert len(obj.faces) == len(mesh.faces)
    preview = np.asarray(Image.open(model["path"]).convert("RGB"), dtype=np.float32)
    assert preview.std() > 10  # an object on a backdrop, not a flat frame

    code, out, err = cli("render", "sword texture", '--type="texture"'.replace('"', ""), "--json")
    assert code == 0, err
    (texture,) = json.loads(out)["artifacts"]
    assert texture["media_type"] == "texture" and texture["width"] == texture["height"]
    albedo = Image.open(texture["path"]).convert("RGB")
    pixels = np.asarray(albedo, dtype=np.float32) / 255
    saturation = (pixels.max(-1) - pixels.min(-1)) / np.maximum(pixels.max(-1), 1e-6)
    assert saturation.mean() < 0.15, "forged steel is grey, not purple rings"
    assert seam_measure(albedo)["seam_ratio"] < SEAM_RATIO_TILEABLE
    for name in ("height.png", "normal.png", "roughness.png"):
        image = Image.open(texture["files"][name])
        assert image.size == albedo.size and seam_measure(image)["seam_ratio"] < SEAM_RATIO_TILEABLE
    normals = decode_normal(Image.open(texture["files"]["normal.png"]))
    assert np.allclose(np.linalg.norm(normals, axis=-1), 1, atol=0.05) and normals[..., 2].min() > 0

    code, out, err = cli("commit", "integrate 3D assets", "--minutes=120")
    assert code == 0, err
    code, out, err = cli("commit", "integrate 3D assets", "--minutes=120")
    assert code == 0 and "Nothing to commit" in out + err
    code, out, err = cli("log", "--json")
    (entry,) = json.loads(out)
    assert entry["message"] == "integrate 3D assets" and entry["minutes"] == 120
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("work_log"))
        assert event is not None and event.asset_materialization.partition == "default"
        metadata = event.asset_materialization.metadata
        assert metadata["minutes"].value == 120 and metadata["new_3d_model"].value == 1
        assert metadata["new_texture"].value == 2


@pytest.mark.slow(seconds=14)
def test_a_project_makes_every_media_type_through_batch(cli, artifact_root, config_dir):
    # A spec file as a user writes it (the done-when's `media:` list), then one batch.
    (config_dir / "projects").mkdir(parents=True, exist_ok=True)
    (config_dir / "projects" / "media-suite.yaml").write_text(
        "name: Media Suite\nintent: warm fractal relics\nwidth: 64\nheight: 64\ncount: 2\n"
        "media: [image, texture, video, 3d_model]\n")
    code, out, err = cli("batch", "Media Suite", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary["new_by_type"]) == {"image", "texture", "video", "3d_model"}, summary["new_by_type"]
    store = _store(artifact_root)
    catalog = store.catalog("media-suite")
    assert catalog["artifact_id"].is_unique
    videos = catalog[catalog["media_type"] == "video"]
    for row in videos.itertuples():
        record = store.record("media-suite", row.artifact_id)
        assert {"video.mp4", "video.gif"} <= set(record.info["media_files"])
        # every keyframe it names is a stored image of the same batch
        assert set(record.info["inputs"]["keyframes"]) <= set(catalog["artifact_id"])
    assert not store.verify("media-suite").problems
    # The style is learned from pictures, not from renders of meshes on a studio backdrop.
    from echo_pipeline.resonance.memory_system import load_memory

    memory = load_memory(store, "media-suite")
    models = set(catalog.loc[catalog["media_type"] == "3d_model", "artifact_id"])
    assert memory is not None and memory.count > 0 and not models & set(memory.learned_ids)

    # The gallery plays the videos and shows the 3D previews and texture maps.
    data = Path(summary["gallery"]).with_name("data.js").read_text()
    entries = json.loads(data.split("=", 1)[1].rstrip().rstrip(";"))["entries"]
    media = {e["media"]: e for e in entries}
    assert media["video"]["files"]["video.mp4"].endswith("/video.mp4")
    assert "model.glb" in media["3d_model"]["files"] and media["3d_model"]["facts"]["triangles"] > 0
    assert "normal.png" in media["texture"]["files"]


def test_a_kept_view_renders_the_pixels_the_page_showed(cli, artifact_root, tmp_path):
    from echo_pipeline.render.backends.procedural.live import LiveView, record_from_view

    code, out, err = cli("render", "Ruzgar warm fractal", "--type", "interactive", "--size", "96", "--json")
    assert code == 0, err
    piece = _by_type(json.loads(out))["interactive"][0]
    html = Path(piece["files"]["index.html"]).read_text()
    assert "<script" in html and "http://" not in html and "https://" not in html  # no CDN, works from file://
    record = _store(artifact_root).record("default", piece["artifact_id"])
    view = LiveView.model_validate_json(json.dumps(record.info["view"]))
    zoomed = view.model_copy(update={"scale": view.scale / 3})
    kept = tmp_path / "view.json"
    kept.write_text(json.dumps(record_from_view(zoomed, {"prompt": "Ruzgar warm fractal"})))

    code, out, err = cli("render", "--view", str(kept), "--json")
    assert code == 0, err
    (again,) = json.loads(out)["artifacts"]
    from echo_pipeline.render.backends.procedural.live import render_view

    assert np.array_equal(np.asarray(Image.open(again["path"]).convert("RGB")), np.asarray(render_view(zoomed)))
    code, out, err = cli("render", "--view", str(kept), "--json")
    assert code == 0 and json.loads(out)["artifacts"][0]["status"] == "stored"
    # A piece made from its sources is not refined by img2img: one line saying what to do instead.
    code, _, err = cli("refine", piece["artifact_id"], "add rain effects")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "made from its sources" in err


def _click_track(path: Path, clicks_s: list[float], seconds: float, rate: int = 22050) -> None:
    samples = np.zeros(int(seconds * rate), dtype=np.float32)
    for t in clicks_s:
        start = int(t * rate)
        burst = np.sin(np.arange(300) * 2 * np.pi * 2000 / rate) * np.exp(-np.arange(300) / 60)
        samples[start:start + 300] += burst[: len(samples) - start].astype(np.float32)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.mark.slow(seconds=8)
def test_an_audio_driven_video_from_the_cli_carries_its_track(cli, artifact_root, tmp_path):
    from echo_pipeline.media.video import probe

    track = tmp_path / "track.wav"
    _click_track(track, [0.25, 0.75, 1.25], 1.5)
    code, out, err = cli("render", "cool waves", "--type", "video", "--audio", str(track), "--frames", "24",
                         "--fps", "16", "--size", "64", "--json")
    assert code == 0, err
    video = _by_type(json.loads(out))["video"][0]
    mp4 = Path(video["files"]["video.mp4"]).read_bytes()
    facts = probe(mp4)
    assert facts["frames"] == 24 and facts["has_audio"] and facts["codec"] == "h264"
    record = _store(artifact_root).record("default", video["artifact_id"])
    assert record.info["video"]["audio"]["name"] == "track.wav"
    assert record.request.media["options"]["audio"]["sha256"] == record.info["video"]["audio"]["sha256"]
    # The track is kept in the project (content-addressed), so the video can be made again.
    assert _store(artifact_root).read_project_file("default", record.request.media["options"]["audio"]["path"])


def test_a_media_request_killed_mid_way_resumes_without_rendering_its_sources_again(
        artifact_root, config_dir, monkeypatch):
    from echo_pipeline.workflows import media_production

    engine = CreativeEngine(Settings.load(artifact_root=str(artifact_root), config_dir=config_dir))
    spec = PromptSpec(prompt="warm fractal", width=64, height=64, media_type="3d_model", media={"method": "heightfield"})
    backend = ProceduralBackend(workers=1)

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(media_production.MediaProducer, "_mesh", killed)
    with pytest.raises(KeyboardInterrupt):
        engine.render(spec, backend)
    store = engine.store
    catalog = store.catalog("default")
    assert sorted(catalog["media_type"]) == ["image", "texture"]  # the sources were stored and catalogued
    assert not store.list_project_files("default", "media") or not any(
        store.list_project_files("default", f"media/{i}") for i in store.list_project_files("default", "media")
        if i not in set(catalog["artifact_id"]))
    monkeypatch.undo()
    result = engine.render(spec, backend)
    assert [r.request.media_type for r in result.new] == ["3d_model"]  # sources found, not rendered again
    assert not store.verify("default").problems


def test_media_ids_cover_options_and_sources_and_plain_ids_stay_put():
    base = RenderRequest(prompt="cool waves", seed=7, width=64, height=64, media_type="video")
    short = with_sources(base, {"frames": 12})
    long = with_sources(base, {"frames": 24})
    assert short.request_id != long.request_id
    assert with_sources(base, {"frames": 12}).request_id == short.request_id
    plain = RenderRequest(prompt="cool waves", seed=7, width=64, height=64)
    assert "media" not in plain.pixel_key()  # ids of every image stored before media existed are unchanged
    model = with_sources(base.model_copy(update={"media_type": "3d_model"}), {})
    assert short.request_id != model.request_id
    assert set(model.media["sources"]) == {"concept", "texture"}
    assert model.media["sources"]["texture"][0]["tiling"] is True


@pytest.mark.parametrize(("kind", "options", "message"), [
    ("video", {"frames": 1}, "frames must be a whole number from 2 to 600"),
    ("video", {"fps": 0}, "fps must be a whole number from 1 to 60"),
    ("video", {"motion": "spin"}, "motion 'spin' is unknown"),
    ("video", {"depth": 3}, "video has no option 'depth'"),
    ("3d_model", {"method": "clay"}, "method 'clay' is unknown"),
    ("image", {"frames": 3}, "image has no option 'frames'"),
])
def test_media_options_are_checked(kind, options, message):
    with pytest.raises(InvalidInputError, match=message):
        media_options(kind, options)


@pytest.mark.parametrize("args", [
    ("render", "warm fractal", "--frames", "12"),
    ("render", "warm fractal", "--type", "video", "--frames", "1"),
    ("render", "warm fractal", "--type", "video", "--audio", "missing.wav"),
    ("render", "warm fractal", "--type", "3d_model", "--method", "clay"),
    ("render", "warm fractal", "--type", "hologram"),
    ("render", "--view", "missing.json"),
    ("render",),
])
def test_bad_media_input_is_one_line_and_stores_nothing(cli, artifact_root, args):
    code, _, err = cli(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not (artifact_root / "projects" / "default" / "images").exists()


def test_a_bad_view_record_is_one_line(cli, tmp_path):
    bad = tmp_path / "view.json"
    bad.write_text(json.dumps({"format": "echo-live-view", "version": 1, "view": {"motif": "fractal"}}))
    code, _, err = cli("render", "--view", str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "view" in err
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    bad.write_bytes(png.getvalue())
    code, _, err = cli("render", "--view", str(bad))
    assert code == 2 and "not JSON" in err


def test_verify_finds_a_missing_or_changed_media_file_and_a_render_remakes_it(artifact_root, config_dir):
    engine = CreativeEngine(Settings.load(artifact_root=str(artifact_root), config_dir=config_dir))
    spec = PromptSpec(prompt="oak wood texture", width=64, height=64, media_type="texture", tiling=True)
    backend = ProceduralBackend(workers=1)
    (texture,) = engine.render(spec, backend).new
    store = engine.store
    folder = Path(store.media_file_path("default", texture.artifact_id, "normal.png")).parent
    (folder / "normal.png").unlink()
    (folder / "height.png").write_bytes(b"not the height map")
    kinds = sorted(p.kind for p in store.verify("default").problems)
    assert kinds == ["media_mismatch", "media_missing"]
    again = engine.render(spec, backend)
    assert [r.artifact_id for r in again.new] == [texture.artifact_id]  # made again, same id
    assert not store.verify("default").problems
