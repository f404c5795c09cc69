"""The diffusers backend on tiny random SD 1.5 / SDXL pipelines built in code (no network, no real weights).

Images are 64x64 with 2-4 steps; one pipeline is loaded per module and shared where a test does not
change the backend's config, so the file runs in seconds on a CPU.
"""

from __future__ import annotations

import gc
import json
import re
import weakref
from pathlib import Path

import numpy as np
import pytest

from echo_pipeline.errors import BackendUnavailableError, InvalidInputError, NotFoundError
from echo_pipeline.render.backends import diffusion
from echo_pipeline.render.backends.base import ParentImage
from echo_pipeline.render.backends.diffusion import DiffusersBackend
from echo_pipeline.render.backends.registry import create_backend
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.settings import BackendConfig
from echo_pipeline_tests import tiny_models

# diffusers' schedulers call np.array on tensors in a way numpy 2 deprecates: their noise, not ours
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"), pytest.mark.torch]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No network, an empty Hugging Face home and a private model-hash cache for every test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def sd(tiny_sd) -> DiffusersBackend:
    """One loaded backend (batch size 3) shared by the tests that only render with it."""
    backend = create_backend(f"diffusers:{tiny_sd}", cpu_config(batch_size=3))
    assert isinstance(backend, DiffusersBackend)
    yield backend
    backend.close()


def cpu_config(**options) -> BackendConfig:
    """Tests render on the CPU in float32 everywhere, so pixels compare exactly on a GPU machine too."""
    return BackendConfig(device="cpu", **options)


def req(seed: int, **fields) -> RenderRequest:
    fields.setdefault("prompt", "a red fox in the snow")
    fields.setdefault("steps", 3)
    return RenderRequest(seed=seed, width=64, height=64, backend="diffusers", **fields)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def render(backend, requests, progress=None):
    return list(backend.render(requests, progress))


# --- txt2img ----------------------------------------------------------------------------------------


def test_txt2img_images_and_info(sd, tiny_sd):
    images = render(sd, [req(1), req(2, negative_prompt="blurry")])
    assert [im.image.size for im in images] == [(64, 64), (64, 64)]
    assert all(im.image.mode == "RGB" for im in images)
    info = images[0].info
    assert info == {"sampler": "Euler a", "scheduler": "EulerAncestralDiscreteScheduler", "scheduler_config": {},
                    "device": "cpu", "dtype": "float32", "pipeline": "StableDiffusionPipeline", "batch_size": 2}
    assert sd.describe().model == str(tiny_sd)


def test_same_seed_same_bytes_different_seeds_differ(sd):
    first, other = render(sd, [req(5), req(6)])
    again = render(sd, [req(5), req(6)])[0]  # the same batch again: identical bytes
    assert first.image.tobytes() == again.image.tobytes()
    assert np.abs(pixels(first.image) - pixels(other.image)).mean() > 5


def test_on_the_cpu_a_seed_gives_identical_bytes_whatever_it_is_rendered_with(tiny_sd):
    # The default on the CPU is one image per call, so no batch rounding can reach the pixels.
    backend = create_backend(f"diffusers:{tiny_sd}", cpu_config())
    trio = render(backend, [req(21), req(22, prompt="a blue lake"), req(23)])
    alone = render(backend, [req(22, prompt="a blue lake")])[0]
    assert [im.info["batch_size"] for im in trio] == [1, 1, 1]
    assert alone.image.tobytes() == trio[1].image.tobytes()
    backend.close()


def test_a_seed_gives_the_same_pixels_in_any_batch(tiny_sd):
    batched = create_backend(f"diffusers:{tiny_sd}", cpu_config(batch_size=3))
    single = create_backend(f"diffusers:{tiny_sd}", cpu_config(batch_size=1))
    trio = render(batched, [req(11), req(12, prompt="a blue lake"), req(13)])
    assert [im.info["batch_size"] for im in trio] == [3, 3, 3]
    alone_a = render(single, [req(11)])[0]
    alone_b = render(single, [req(12, prompt="a blue lake")])[0]
    assert alone_a.info["batch_size"] == 1
    for alone, in_batch in ((alone_a, trio[0]), (alone_b, trio[1])):
        # Same noise, same image: batched CPU kernels round differently (~1e-6), which may move a
        # rare 8-bit value by one level, never more.
        diff = np.abs(pixels(alone.image) - pixels(in_batch.image))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.001
    assert np.abs(pixels(alone_a.image) - pixels(trio[2].image)).mean() > 5
    batched.close()
    single.close()


def test_batches_split_by_settings_and_size(sd):
    requests = [req(1), req(2), req(3), req(4), req(5, steps=2), req(6, tiling=True)]
    images = render(sd, requests)
    assert [im.request for im in images] == requests  # order kept
    assert [im.info["batch_size"] for im in images] == [3, 3, 3, 1, 1, 1]


def test_render_is_a_lazy_stream_validated_up_front(tiny_sd):
    backend = DiffusersBackend(cpu_config(model=str(tiny_sd)))
    with pytest.raises(InvalidInputError, match="refine"):
        backend.render([req(1, parent_id="abc", strength=0.5)])
    stream = backend.render([req(1)])
    assert backend._pipe is None  # nothing loads until the first image is asked for
    assert next(iter(stream)).image.size == (64, 64)
    assert backend._pipe is not None
    backend.close()


# --- samplers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sampler", "scheduler", "overrides"), [
    ("Euler", "EulerDiscreteScheduler", {}),
    ("DPM++ 2M Karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("DPM++ 2M", "DPMSolverMultistepScheduler", {}),  # after Karras: no override sticks
    ("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    ("ddim", "DDIMScheduler", {}),
    ("Heun", "HeunDiscreteScheduler", {}),
    ("UniPC", "UniPCMultistepScheduler", {}),
])
def test_sampler_names_pick_schedulers(sd, sampler, scheduler, overrides):
    image = render(sd, [req(3, sampler=sampler, steps=2)])[0]
    assert image.info["scheduler"] == scheduler
    assert image.info["scheduler_config"] == overrides
    assert type(sd._pipe.scheduler).__name__ == scheduler
    config = sd._pipe.scheduler.config
    assert all(config[key] == value for key, value in overrides.items())
    assert config.get("use_karras_sigmas", False) == overrides.get("use_karras_sigmas", False)
    if scheduler == "DPMSolverMultistepScheduler":
        assert config["algorithm_type"] == overrides.get("algorithm_type", "dpmsolver++")


def test_sampler_map_is_public():
    assert diffusion.samplers()[0] == "Euler a"
    assert diffusion.SAMPLERS["LCM"] == ("LCMScheduler", {})
    assert "DPM++ SDE" not in diffusion.SAMPLERS  # needs torchsde


def test_unknown_sampler_refused_before_loading(tiny_sd):
    backend = DiffusersBackend(BackendConfig(model=str(tiny_sd)))
    with pytest.raises(InvalidInputError, match="known: Euler a, Euler"):
        DiffusersBackend.check_requests([req(1, sampler="Euler b")])
    with pytest.raises(InvalidInputError, match="Euler b"):
        backend.render([req(1, sampler="Euler b")])
    assert backend._pipe is None


def test_config_scheduler_overrides_the_sampler(tiny_sd):
    backend = DiffusersBackend(cpu_config(model=str(tiny_sd), scheduler="DDIMScheduler"))
    image = render(backend, [req(1, steps=2)])[0]
    assert (image.info["sampler"], image.info["scheduler"]) == ("Euler a", "DDIMScheduler")
    # Prepared (as the batch processor does), the request names it: a new request id, honest metadata.
    prepared = backend.prepare(req(1, steps=2))
    assert prepared.sampler == "DDIMScheduler" and prepared.request_id != DiffusersBackend(
        cpu_config(model=str(tiny_sd))).prepare(req(1, steps=2)).request_id
    assert render(backend, [prepared])[0].image.tobytes() == image.image.tobytes()
    backend.close()
    with pytest.raises(InvalidInputError, match="not a diffusers scheduler"):
        DiffusersBackend(BackendConfig(model=str(tiny_sd), scheduler="FastestScheduler")).render([req(1)])


def test_img2img_steps_times_strength_must_reach_one():
    with pytest.raises(InvalidInputError, match="at least 1"):
        DiffusersBackend.check_requests([req(1, steps=3, parent_id="p", strength=0.3)])
    DiffusersBackend.check_requests([req(1, steps=4, parent_id="p", strength=0.25)])


# --- progress, tiling, img2img ----------------------------------------------------------------------


def test_progress_counts_denoising_steps(sd):
    seen: list[tuple[int, int]] = []
    render(sd, [req(1, steps=2), req(2, steps=2), req(3, steps=2), req(4, steps=2), req(5, steps=3, sampler="Heun")],
           progress=lambda done, total: seen.append((done, total)))
    assert {total for _, total in seen} == {11}
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert done[-1] == 11 and len(done) >= 5  # per step, not per image


def test_tiling_sets_circular_padding_and_restores(sd):
    import torch

    def modes():
        return {conv.padding_mode for model in (sd._pipe.unet, sd._pipe.vae) for conv in model.modules()
                if isinstance(conv, torch.nn.Conv2d)}

    render(sd, [req(1, tiling=True, steps=2)])
    assert modes() == {"circular"}
    render(sd, [req(1, steps=2)])
    assert modes() == {"zeros"}


def test_tiling_makes_the_image_wrap_around(sd):
    """With circular padding the whole pipeline works on a torus: shifting the starting noise by 8
    latent pixels shifts the image by exactly 16 pixels (the tiny VAE upsamples 2x), so the image
    has no seam. Without tiling, the borders break that."""
    import torch
    from diffusers import DDIMScheduler

    pipe = sd._load()
    sd._set_scheduler(pipe, "DDIM")
    noise = torch.randn((1, 4, 32, 32), generator=torch.Generator("cpu").manual_seed(0))

    def image(latents: torch.Tensor) -> np.ndarray:
        out = pipe("tiles", latents=latents, num_inference_steps=2, width=64, height=64, output_type="np")
        return out.images[0]

    assert isinstance(pipe.scheduler, DDIMScheduler)
    errors = {}
    for tiling in (True, False):
        sd._set_tiling(tiling)
        shifted = image(torch.roll(noise, shifts=(8, 8), dims=(2, 3)))
        errors[tiling] = np.abs(np.roll(image(noise), shift=(16, 16), axis=(0, 1)) - shifted).max()
    sd._set_tiling(False)
    assert errors[True] < 1e-3 < errors[False]


def test_refine_moves_further_with_strength(sd):
    parent = render(sd, [req(21, steps=4)])[0]
    handle = ParentImage(artifact_id="parent-art", image=parent.image.resize((96, 96)), request=parent.request)
    distances = []
    for strength in (0.25, 0.5, 1.0):
        seen: list[tuple[int, int]] = []
        child = sd.refine(handle, req(22, steps=4, parent_id="parent-art", strength=strength),
                          progress=lambda done, total: seen.append((done, total)))  # noqa: B023
        steps = int(4 * strength)
        assert seen[-1] == (steps, steps) and [d for d, _ in seen] == list(range(1, steps + 1))
        assert child.image.size == (64, 64)
        assert child.info["parent_artifact_id"] == "parent-art"
        assert child.info["strength"] == strength
        assert child.info["pipeline"] == "StableDiffusionImg2ImgPipeline"
        distances.append(np.abs(pixels(child.image) - pixels(parent.image)).mean())
    assert distances == sorted(distances) and distances[0] < distances[-1]
    # img2img shares the txt2img weights
    assert sd._image_to_image().unet is sd._pipe.unet


# --- errors and usability ---------------------------------------------------------------------------


def test_missing_hub_model_offline_is_one_clear_line(tmp_path):
    backend = create_backend("diffusers:someone/not-cached-model")
    reason = backend.check_usable()
    assert reason is not None and "someone/not-cached-model" in reason
    with pytest.raises(BackendUnavailableError) as caught:
        backend.render([req(1)])
    message = str(caught.value)
    assert "\n" not in message
    assert "someone/not-cached-model" in message
    assert f"HF_HOME={(tmp_path / 'hf-home').resolve()}" in message
    assert "huggingface-cli download someone/not-cached-model" in message
    assert "allow_downloads: true" in message and "--model" in message
    assert backend.describe().model_hash == ""


def test_missing_paths_and_folders(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        create_backend(f"diffusers:{tmp_path / 'nope.safetensors'}").render([req(1)])
    with pytest.raises(NotFoundError, match="does not exist"):
        create_backend("diffusers:./models/absent").render([req(1)])
    empty = tmp_path / "empty"
    empty.mkdir()
    backend = create_backend(f"diffusers:{empty}")
    assert "model_index.json" in (backend.check_usable() or "")
    with pytest.raises(BackendUnavailableError, match="model_index.json"):
        backend.render([req(1)])


def test_no_model_configured(tmp_path):
    backend = DiffusersBackend()
    reason = backend.check_usable()
    assert reason is not None and "--model" in reason and "models: {diffusers:" in reason
    with pytest.raises(BackendUnavailableError, match="diffusers:<model>"):
        backend.render([req(1)])
    assert backend.describe().model == ""


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00not a checkpoint")
    backend = create_backend(f"diffusers:{bad}")
    assert backend.check_usable() is None  # the file exists; reading it is a load-time matter
    with pytest.raises(BackendUnavailableError, match="cannot be read") as caught:
        list(backend.render([req(1)]))
    assert "\n" not in str(caught.value) and caught.value.__cause__ is not None


def test_bad_device_and_dtype(tiny_sd):
    import torch

    for config, error, text in [
        ({"device": "tpu"}, InvalidInputError, "device 'tpu'"),
        ({"dtype": "int8"}, InvalidInputError, "dtype 'int8'"),
    ]:
        backend = DiffusersBackend(BackendConfig(model=str(tiny_sd), **config))
        assert text in (backend.check_usable() or "")
        with pytest.raises(error, match=text):
            backend.render([req(1)])
    if not torch.cuda.is_available():
        backend = DiffusersBackend(BackendConfig(model=str(tiny_sd), device="cuda"))
        with pytest.raises(BackendUnavailableError, match="no CUDA GPU") as caught:
            list(backend.render([req(1)]))
        assert "\n" not in str(caught.value)


def test_check_usable_present(tiny_sd):
    assert create_backend(f"diffusers:{tiny_sd}").check_usable() is None


def test_hub_id_found_in_the_local_cache(tiny_sd, tmp_path):
    """A hub id whose snapshot is in HF_HOME loads offline; its hash comes from the blob names."""
    import hashlib
    import shutil

    repo = tmp_path / "hf-home" / "hub" / "models--echo--tiny-sd"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in tiny_sd.rglob("*") if p.is_file()):
        target = snapshot / file.relative_to(tiny_sd)
        target.parent.mkdir(parents=True, exist_ok=True)
        if file.suffix == ".safetensors":  # stored like the hub does: a blob named by its sha256
            blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, blob)
            target.symlink_to(blob)
        else:
            shutil.copyfile(file, target)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    backend = create_backend("diffusers:echo/tiny-sd", cpu_config())
    assert backend.check_usable() is None
    description = backend.describe()
    assert description.model == "echo/tiny-sd"
    assert description.model_hash == create_backend(f"diffusers:{tiny_sd}").describe().model_hash
    assert render(backend, [req(1, steps=2)])[0].image.size == (64, 64)
    backend.close()


# --- describe, hashes, close ------------------------------------------------------------------------


def test_describe_hash_is_stable_cached_and_cheap(tiny_sd, tmp_path):
    description = create_backend(f"diffusers:{tiny_sd}").describe()
    assert description.backend == "diffusers" and description.model == str(tiny_sd)
    assert re.fullmatch(r"[0-9a-f]{10}", description.model_hash)
    assert description.version.startswith("diffusers-0.")
    cache = tmp_path / "xdg-cache" / "echo-os" / "model-hashes.json"
    entries = json.loads(cache.read_text())
    assert {Path(p).name for p in entries} == {"diffusion_pytorch_model.safetensors", "model.safetensors"}
    # a second backend reads the cached file hashes instead of the files
    for entry in entries.values():
        entry[2] = "f" * 64
    cache.write_text(json.dumps(entries))
    again = create_backend(f"diffusers:{tiny_sd}").describe()
    assert again.model_hash != description.model_hash  # proves the cache was used
    cache.unlink()
    assert create_backend(f"diffusers:{tiny_sd}").describe().model_hash == description.model_hash


def test_describe_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; from echo_pipeline.render.backends.registry import create_backend; "
            "b = create_backend('diffusers:someone/absent'); b.describe(); b.check_usable(); "
            "print('torch' in sys.modules, 'diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_close_frees_the_pipeline(tiny_sd):
    backend = DiffusersBackend(cpu_config(model=str(tiny_sd)))
    render(backend, [req(1, steps=2)])
    unet = weakref.ref(backend._pipe.unet)
    backend.close()
    gc.collect()
    assert backend._pipe is None and unet() is None
    assert render(backend, [req(1, steps=2)])[0].image.size == (64, 64)  # loads again on demand
    backend.close()


def test_out_of_memory_halves_the_batch(tiny_sd, monkeypatch):
    import torch

    backend = DiffusersBackend(cpu_config(model=str(tiny_sd), batch_size=4))
    pipe = backend._load()
    real_call = type(pipe).__call__
    sizes: list[int] = []

    def limited(self, *args, **kwargs):
        sizes.append(len(kwargs["prompt"]))
        if len(kwargs["prompt"]) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", limited)
    seen: list[int] = []
    images = render(backend, [req(i, steps=2) for i in range(3)], progress=lambda done, total: seen.append(done))
    assert sizes == [3, 1, 1, 1] or sizes[0] > 1 and sizes[-3:] == [1, 1, 1]
    assert [im.info["batch_size"] for im in images] == [1, 1, 1]
    assert seen == sorted(seen) and seen[-1] == 6
    backend.close()


def test_interrupts_and_pipeline_failures(tiny_sd, monkeypatch):
    """Ctrl-C/SIGTERM (`Interrupted`) passes through untouched; any other failure is one line with its cause."""
    from echo_pipeline.errors import Interrupted

    backend = DiffusersBackend(cpu_config(model=str(tiny_sd)))
    pipe = backend._load()
    for raised, expected in ((Interrupted(), Interrupted), (RuntimeError("shapes\ndo not match"), BackendUnavailableError)):
        def failing(self, *args, _exc=raised, **kwargs):
            raise _exc

        monkeypatch.setattr(type(pipe), "__call__", failing)
        with pytest.raises(expected) as caught:
            render(backend, [req(1)])
        assert caught.value is raised or ("shapes" in str(caught.value) and "\n" not in str(caught.value))
    backend.close()


# --- single file and SDXL ---------------------------------------------------------------------------


def test_single_file_checkpoint_matches_the_folder(sd, tiny_sd, tmp_path):
    checkpoint = tiny_models.write_single_file(tiny_sd, tmp_path / "tiny-sd.safetensors")
    backend = create_backend(f"diffusers:{checkpoint}", cpu_config(single_file_config=str(tiny_sd), batch_size=3))
    assert backend.check_usable() is None
    image = render(backend, [req(31), req(32)])
    reference = render(sd, [req(31), req(32)])
    assert image[0].info["pipeline"] == "StableDiffusionPipeline"
    assert [im.image.tobytes() for im in image] == [im.image.tobytes() for im in reference]
    description = backend.describe()
    assert description.model == str(checkpoint)
    assert description.model_hash == diffusion.file_sha256(checkpoint)[:10]
    backend.close()


def test_single_file_without_configs_offline_says_how(tiny_sd, tmp_path):
    checkpoint = tiny_models.write_single_file(tiny_sd, tmp_path / "tiny-sd.safetensors")
    with pytest.raises(BackendUnavailableError, match="single_file_config") as caught:
        list(create_backend(f"diffusers:{checkpoint}").render([req(1)]))
    assert "\n" not in str(caught.value)


def test_tiny_sdxl_txt2img_and_img2img(tmp_path_factory):
    folder = tiny_models.build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")
    backend = create_backend(f"diffusers:{folder}", cpu_config(batch_size=2))
    images = render(backend, [req(1, steps=2), req(2, steps=2)])
    assert images[0].info["pipeline"] == "StableDiffusionXLPipeline"
    assert images[0].image.size == (64, 64)
    alone = render(backend, [req(1, steps=2)])[0]
    assert render(backend, [req(1, steps=2)])[0].image.tobytes() == alone.image.tobytes()
    assert np.abs(pixels(alone.image) - pixels(images[0].image)).max() <= 1  # batch rounding only
    child = backend.refine(ParentImage("p", images[0].image, images[0].request),
                           req(3, steps=2, parent_id="p", strength=0.5))
    assert child.info["pipeline"] == "StableDiffusionXLImg2ImgPipeline"
    backend.close()


def test_tiny_models_main_reuses_a_built_folder(tiny_sd, capsys):
    assert tiny_models.main([str(tiny_sd)]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_sd)


def test_auto_device_and_dtype(tiny_sd):
    import torch

    backend = create_backend(f"diffusers:{tiny_sd}")
    image = render(backend, [req(1, steps=2), req(1, steps=2)])
    cuda = torch.cuda.is_available()
    assert image[0].info["device"] == ("cuda" if cuda else "mps" if torch.backends.mps.is_available() else "cpu")
    assert image[0].info["dtype"] == ("float16" if cuda else "float32")
    assert image[0].image.tobytes() == image[1].image.tobytes()  # CPU generators: a seed is a seed in a batch
    backend.close()


def test_available_models_lists_cached_hub_pipelines(tiny_sd, tmp_path):
    import shutil

    snapshot = tmp_path / "hf-home" / "hub" / "models--acme--tiny-sd" / "snapshots" / "0123abc"
    shutil.copytree(tiny_sd, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc")  # how the hub cache names a revision
    (tmp_path / "hf-home" / "hub" / "models--acme--not-a-pipeline" / "snapshots" / "x").mkdir(parents=True)
    backend = create_backend("diffusers", cpu_config())
    assert backend.available_models() == ["acme/tiny-sd"]
    usable = create_backend("diffusers:acme/tiny-sd", cpu_config())
    assert usable.check_usable() is None
