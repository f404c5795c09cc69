"""`DiffusersBackend`: Stable Diffusion 1.5 / SDXL / SD-Turbo-class pipelines through Hugging Face diffusers.

Model (`BackendConfig.model`, or `diffusers:<model>` as the backend spec):

* a hub id (`stabilityai/sd-turbo`): loaded from the local Hugging Face cache; fetched only when
  `backends: {allow_downloads: true}` is set in configs/settings.yaml;
* a local `save_pretrained` folder (holds `model_index.json`);
* one `.safetensors` / `.ckpt` checkpoint in the original (A1111) layout: SDXL when its keys hold
  `conditioner.*`, else SD 1.x/2.x; `single_file_config` names a folder or hub id with the
  pipeline's configs (else diffusers infers them, which needs them in the cache or downloads).

The pipeline loads once per backend instance, on the first `render`/`refine` (never in `__init__`;
torch and diffusers are imported inside methods so `echo-os --help` stays fast). img2img shares the
loaded weights (`AutoPipelineForImage2Image.from_pipe`). The safety checker is not loaded.

Samplers: the request's A1111 sampler name picks the scheduler (`SAMPLERS`, built with
`from_config(pipe.scheduler.config, **overrides)` so the model's training schedule carries over):

    Euler a -> EulerAncestralDiscrete      Euler -> EulerDiscrete          Heun -> HeunDiscrete
    LMS (Karras) -> LMSDiscrete            DPM2 (Karras) -> KDPM2Discrete  DPM2 a (Karras) -> KDPM2AncestralDiscrete
    DPM++ 2M (Karras) -> DPMSolverMultistep
    DPM++ 2M SDE (Karras) -> DPMSolverMultistep(algorithm_type="sde-dpmsolver++")
    DDIM -> DDIM    PLMS -> PNDM(skip_prk_steps)    UniPC -> UniPCMultistep    DEIS -> DEISMultistep    LCM -> LCM

"Karras" adds `use_karras_sigmas=True`. Names match case-insensitively. "DPM++ SDE" is not offered
(it needs torchsde). `BackendConfig.scheduler` (a diffusers scheduler class name) overrides the
request's sampler. Each image's `info` records `sampler`, `scheduler`, `scheduler_config` (only the
overrides), `device`, `dtype`, `pipeline` and `batch_size` (img2img adds `parent_artifact_id`, `strength`).

Device and dtype: `cuda` when available, else `mps`, else `cpu`; float16 on cuda, float32 elsewhere
(float16 on mps is not reliable for every model). `BackendConfig.device` / `dtype` override; a bad
value is an `InvalidInputError`, cuda asked for but missing a `BackendUnavailableError`. Noise comes
from one CPU `torch.Generator` per image, seeded with the request's seed, so a seed gives the same
image in a batch of any size (and on any device, up to float rounding).

Batches: consecutive requests sharing size, steps, CFG, sampler and tiling go through the pipeline
together, `batch_size` at a time (`BackendConfig.batch_size`, else sized to free GPU / unified
memory, at most 8, and 1 on the CPU so a seed's pixels never depend on its batch); a CUDA
out-of-memory error halves the batch and retries. Each image is yielded
as soon as its batch finishes. `tiling` renders seamless textures (circular padding in every
convolution of the UNet and VAE).

Errors are one line, never a traceback: no model configured, a missing path (`NotFoundError`), a
folder without `model_index.json`, a hub id not in the cache while offline, an unreadable checkpoint
(`BackendUnavailableError`, with the cause chained) each say which model and how to provide it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.metadata
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echo_pipeline.errors import BackendUnavailableError, EchoError, Interrupted, InvalidInputError, NotFoundError
from echo_pipeline.render.backends.base import (
    BackendCapabilities,
    BackendConfig,
    BackendDescription,
    ImageBackend,
    ParentImage,
    ProgressCallback,
    RenderedImage,
)
from echo_pipeline.render.requests import RenderRequest

log = logging.getLogger(__name__)

# A1111 sampler name -> (diffusers scheduler class, from_config overrides)
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++",
                                                            "use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),  # plain PLMS as in A1111, no Runge-Kutta warm-up
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
    "LCM": ("LCMScheduler", {}),
}
_SAMPLER_KEYS = {name.lower(): name for name in SAMPLERS}
_SCHEDULER_CLASSES = sorted({cls for cls, _ in SAMPLERS.values()} | {"DPMSolverSinglestepScheduler",
                                                                     "EDMEulerScheduler", "TCDScheduler"})

DTYPES = {"float16": "float16", "fp16": "float16", "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float32": "float32", "fp32": "float32", "float": "float32"}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
MAX_AUTO_BATCH = 8
# Peak memory per image per megapixel (UNet activations and the VAE decode dominate), by bytes per value.
_GIB = 1024**3
_BYTES_PER_MEGAPIXEL = {2: 2.0 * _GIB, 4: 4.0 * _GIB}
_MODEL_HINT = ("set one with --model, as diffusers:<model>, or as models: {diffusers: <hub id, folder or "
               ".safetensors>} in configs/settings.yaml")


def samplers() -> list[str]:
    """The A1111 sampler names this backend renders with."""
    return list(SAMPLERS)


def _scheduler_class_name(name: str) -> bool:
    """A diffusers scheduler class name given as the sampler (checked against diffusers at load)."""
    return name in _SCHEDULER_CLASSES or (name.endswith("Scheduler") and name.isidentifier())


def canonical_sampler(name: str) -> str | None:
    """'euler A' -> 'Euler a'; None for a name not in `SAMPLERS`."""
    return _SAMPLER_KEYS.get(" ".join(name.split()).lower())


# --- where the model is ----------------------------------------------------------------------------


def hf_home() -> Path:
    """The Hugging Face home, as huggingface_hub resolves it (read from the environment each time)."""
    env = os.environ.get("HF_HOME")
    if env:
        return Path(os.path.expandvars(env)).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return (Path(os.path.expandvars(cache)).expanduser() / "huggingface").resolve()


def hf_hub_cache() -> Path:
    env = os.environ.get("HF_HUB_CACHE")
    return Path(os.path.expandvars(env)).expanduser().resolve() if env else hf_home() / "hub"


@dataclass(frozen=True)
class ModelSource:
    """A configured model, resolved: `kind` is "hub", "folder" or "file"; `location` the hub id or absolute path."""

    kind: str
    location: str
    snapshot: Path | None = None  # a hub model's folder in the local cache, when it is there


def _looks_like_path(text: str) -> bool:
    return (text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1
            or text.lower().endswith(SINGLE_FILE_SUFFIXES + (".pt", ".pth", ".bin")))


def _hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of `repo_id` holding model_index.json, or None (no network, cheap)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=str(hf_hub_cache()))
    except Exception:  # an id huggingface_hub refuses (bad characters): not cached either
        return None
    return Path(found).parent if isinstance(found, str) else None


def _hub_missing_message(repo_id: str) -> str:
    return (f"diffusers model {repo_id!r} is not in the local Hugging Face cache (HF_HOME={hf_home()}) and downloads "
            f"are off: pass a local folder or .safetensors with --model, download it first "
            f"(huggingface-cli download {repo_id}), or set backends: {{allow_downloads: true}} in configs/settings.yaml")


def resolve_model(model: str | None, allow_downloads: bool = False) -> ModelSource:
    """Where `model` is, or a one-line error saying what is missing and how to provide it. Cheap: no torch."""
    text = (model or "").strip()
    if not text:
        raise BackendUnavailableError(f"the diffusers backend has no model configured: {_MODEL_HINT}")
    path = Path(text).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise BackendUnavailableError(
                    f"diffusers model folder {str(path)!r} has no model_index.json (not a save_pretrained pipeline "
                    f"folder): pass the folder that holds model_index.json, or a .safetensors/.ckpt checkpoint")
            return ModelSource("folder", str(path))
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise BackendUnavailableError(
                f"diffusers model file {str(path)!r} is not a .safetensors or .ckpt checkpoint: pass one of those or "
                f"a save_pretrained folder")
        return ModelSource("file", str(path))
    if _looks_like_path(text):
        raise NotFoundError(f"diffusers model {str(path.absolute())!r} does not exist: pass an existing "
                            f"save_pretrained folder or .safetensors/.ckpt file, or a Hugging Face hub id")
    snapshot = _hub_snapshot(text)
    if snapshot is None and not allow_downloads:
        raise BackendUnavailableError(_hub_missing_message(text))
    return ModelSource("hub", text, snapshot)


# --- model hashes -----------------------------------------------------------------------------------


def hash_cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(os.path.expandvars(base)).expanduser() / "echo-os" / "model-hashes.json"


def _read_hash_cache(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(path: Path, cache: dict[str, Any] | None = None) -> str:
    """sha256 of a file; `cache` (path -> [size, mtime_ns, sha]) skips files hashed before."""
    stat = path.stat()
    key = str(path)
    entry = (cache or {}).get(key)
    if isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns] and len(entry) == 3:
        return str(entry[2])
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    sha = digest.hexdigest()
    if cache is not None:
        cache[key] = [stat.st_size, stat.st_mtime_ns, sha]
    return sha


def model_hash(path: str | Path) -> str:
    """A1111-style short hash: the first 10 hex digits of the file's sha256; for a folder (or hub
    snapshot), of the sha256 over `relative/path sha256` lines of its weight files, sorted. File
    hashes are cached in `hash_cache_file()` by (path, size, mtime), so a big model is read once;
    a hub snapshot's blobs are already named by their sha256 and are not read at all."""
    from echo_pipeline.atomic import write_atomic

    root = Path(path)
    cache_path = hash_cache_file()
    cache = _read_hash_cache(cache_path)
    before = dict(cache)
    if root.is_file():
        short = file_sha256(root.resolve(), cache)[:10]
    else:
        lines = []
        for file in sorted((p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)),
                           key=lambda p: p.relative_to(root).as_posix()):
            real = file.resolve()
            # The HF cache names each LFS blob by its sha256: the snapshot's hash needs no reading.
            blob = real.name if real.parent.name == "blobs" and len(real.name) == 64 else None
            lines.append(f"{file.relative_to(root).as_posix()} {blob or file_sha256(real, cache)}\n")
        short = hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()[:10] if lines else ""
    if cache != before:
        try:
            write_atomic(cache_path, json.dumps(cache, indent=1, sort_keys=True))
        except OSError as exc:  # a read-only home only costs re-hashing next time
            log.debug("model hash cache not written: %s", exc)
    return short


# --- device, dtype, single files ----------------------------------------------------------------------


def check_device_name(device: str | None) -> str | None:
    """Normalized device name ('CUDA:1' -> 'cuda:1'), None for auto; `InvalidInputError` for junk."""
    if device is None or not device.strip() or device.strip().lower() == "auto":
        return None
    text = device.strip().lower()
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise InvalidInputError(f"device {device!r} is not one of cpu, cuda, cuda:N, mps (or auto)")
    return text


def check_dtype_name(dtype: str | None) -> str | None:
    if dtype is None or not dtype.strip() or dtype.strip().lower() == "auto":
        return None
    name = DTYPES.get(dtype.strip().lower().removeprefix("torch."))
    if name is None:
        raise InvalidInputError(f"dtype {dtype!r} is not one of float16, bfloat16, float32 (or auto)")
    return name


def checkpoint_keys(path: Path) -> list[str]:
    """The tensor names in a single-file checkpoint (header only for .safetensors)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    import torch

    data = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    return list(data) if isinstance(data, dict) else []


def is_sdxl_checkpoint(keys: Sequence[str]) -> bool:
    """SDXL's original layout keeps its text encoders under `conditioner.embedders`, SD 1.x/2.x under `cond_stage_model`."""
    return any(key.startswith("conditioner.") for key in keys)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """diffusers/transformers at WARNING and without progress bars while a model loads."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    saved = [(mod, mod.get_verbosity(), mod.is_progress_bar_enabled()) for mod in (dlog, tlog)]
    for mod, _, _ in saved:
        mod.set_verbosity(logging.WARNING)
        mod.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # diffusers passes an argument huggingface_hub deprecated: noise about their code, not the user's
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            yield
    finally:
        for mod, verbosity, bars in saved:
            mod.set_verbosity(verbosity)
            if bars:
                mod.enable_progress_bar()


def _dtype_option(dtype: Any) -> dict[str, Any]:
    """`dtype=` for diffusers that renamed it (0.42+ warns about `torch_dtype`), `torch_dtype=` before."""
    try:
        from diffusers.utils import deprecation_utils

        renamed = hasattr(deprecation_utils, "_resolve_dtype")
    except ImportError:
        renamed = False
    return {"dtype" if renamed else "torch_dtype": dtype}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class DiffusersBackend(ImageBackend):
    """Stable Diffusion 1.5 / SDXL / SD-Turbo through diffusers (txt2img, img2img, tiling); see the module docstring."""

    name = "diffusers"
    capabilities = BackendCapabilities(
        txt2img=True, img2img=True, tiling=True, negative_prompt=True, sampler=True,
        min_side=64, max_side=2048, size_multiple=8,
    )

    def __init__(self, config: BackendConfig | None = None) -> None:
        super().__init__(config)
        self._pipe: Any = None
        self._img2img: Any = None
        self._device: str = ""
        self._dtype: str = ""
        self._base_scheduler_config: Any = None
        self._description: BackendDescription | None = None
        self._batch_cap: int | None = None  # lowered after a CUDA out-of-memory error
        self._tiling: bool | None = None
        self._padding_modes: dict[int, Any] = {}  # id(conv) -> its padding mode as loaded

    # -- cheap queries -------------------------------------------------------------------------------

    def describe(self) -> BackendDescription:
        """Backend, model (hub id, or absolute path) and A1111-style model hash; no torch, hashes cached."""
        if self._description is None:
            model = (self.config.model or "").strip()
            digest = ""
            try:
                source = resolve_model(model, allow_downloads=True)
            except EchoError:
                source = None
                if model and _looks_like_path(model):
                    model = str(Path(model).expanduser().absolute())
            if source is not None:
                model = source.location
                target = Path(source.location) if source.kind != "hub" else source.snapshot
                if target is not None:
                    try:
                        digest = model_hash(target)
                    except OSError as exc:
                        log.debug("no model hash for %s: %s", target, exc)
            self._description = BackendDescription(backend=self.name, model=model, model_hash=digest,
                                                   version=f"diffusers-{importlib.metadata.version('diffusers')}")
        return self._description

    def available_models(self) -> list[str]:
        """Diffusers pipelines in the local Hugging Face cache (repos whose snapshot holds a
        `model_index.json`): what renders offline without naming a path."""
        cache = hf_hub_cache()
        if not cache.is_dir():
            return []
        found = []
        for repo in sorted(cache.glob("models--*")):
            if any((snapshot / "model_index.json").is_file() for snapshot in (repo / "snapshots").glob("*")):
                found.append(repo.name.removeprefix("models--").replace("--", "/"))
        return found

    def check_usable(self) -> str | None:
        """Why the model cannot be loaded right now (none configured, missing, not cached offline), or None."""
        try:
            check_device_name(self.config.device)
            check_dtype_name(self.config.dtype)
            source = resolve_model(self.config.model, self.config.allow_downloads)
        except EchoError as exc:
            return exc.message
        if source.kind == "file" and self.config.single_file_config:
            try:
                resolve_model(self.config.single_file_config, self.config.allow_downloads)
            except EchoError as exc:
                return f"single_file_config: {exc.message}"
        return None

    @classmethod
    def check_requests(cls, requests: Sequence[RenderRequest]) -> None:
        super().check_requests(requests)
        for request in requests:
            if canonical_sampler(request.sampler) is None and not _scheduler_class_name(request.sampler):
                raise InvalidInputError(f"sampler {request.sampler!r} is not known to backend 'diffusers'; known: "
                                        f"{', '.join(SAMPLERS)}")
            if request.strength is not None and int(request.steps * request.strength) < 1:
                raise InvalidInputError(
                    f"img2img with {request.steps} steps at strength {request.strength} runs no denoising step "
                    f"(steps x strength must be at least 1): raise steps or strength")

    def prepare(self, request: RenderRequest) -> RenderRequest:
        """Also name the configured scheduler (`backends: {scheduler: ...}`) as the request's sampler:
        it decides the pixels, so it enters the request id, and the A1111 parameters name it."""
        request = super().prepare(request)
        if self.config.scheduler:
            request = request.model_copy(update={"sampler": self.config.scheduler})
        return request

    def _check_config(self) -> None:
        check_device_name(self.config.device)
        check_dtype_name(self.config.dtype)
        name = self.config.scheduler
        if name is not None and name not in _SCHEDULER_CLASSES:
            import diffusers

            if not (name.endswith("Scheduler") and hasattr(diffusers, name)):
                raise InvalidInputError(f"scheduler {name!r} is not a diffusers scheduler class; e.g. "
                                        f"{', '.join(_SCHEDULER_CLASSES)}")

    # -- rendering -----------------------------------------------------------------------------------

    def render(
        self, requests: Sequence[RenderRequest], progress: ProgressCallback | None = None
    ) -> Iterator[RenderedImage]:
        """Validate everything now (requests, config, that the model exists), then load on the first
        `next()` and stream the images batch by batch."""
        requests = list(requests)
        self.check_requests(requests)
        for request in requests:
            if request.parent_id is not None:
                raise InvalidInputError("render() is txt2img: refine an image (parent_id/strength) with refine()")
        self._check_config()
        if self._pipe is None:
            resolve_model(self.config.model, self.config.allow_downloads)
        return self._stream(requests, progress)

    def _stream(self, requests: list[RenderRequest], progress: ProgressCallback | None) -> Iterator[RenderedImage]:
        if not requests:
            return
        pipe = self._load()
        counter = _Progress(progress, sum(r.steps for r in requests))
        offset = 0  # requests before this group
        for group in _groups(requests):
            first = group[0]
            self._set_scheduler(pipe, first.sampler)
            self._set_tiling(first.tiling)
            start = 0
            while start < len(group):
                size = min(self._batch_size(first.width, first.height), len(group) - start)
                chunk = group[start:start + size]
                try:
                    images = self._call(pipe, chunk, counter, base=sum(r.steps for r in requests[:offset + start]),
                                        prompt=[r.prompt for r in chunk],
                                        negative_prompt=[r.negative_prompt for r in chunk],
                                        width=first.width, height=first.height)
                except (EchoError, Interrupted):
                    raise
                except Exception as exc:
                    if size > 1 and _is_oom(exc):
                        self._out_of_memory(size)
                        continue
                    raise self._render_error(exc, first) from exc
                start += size
                for request, image in zip(chunk, images, strict=True):
                    yield RenderedImage(request=request, image=image.convert("RGB"),
                                        info=self._info(pipe, request, len(chunk)))
            offset += len(group)
        counter.finish()

    def refine(self, parent: ParentImage, request: RenderRequest,
               progress: ProgressCallback | None = None) -> RenderedImage:
        """img2img: `parent.image` resized to the request's size (LANCZOS), denoised from `request.strength`."""
        from PIL import Image

        self.check_requests([request])
        self._check_config()
        strength = 0.5 if request.strength is None else float(request.strength)
        steps = min(int(request.steps * strength), request.steps)
        if steps < 1:
            raise InvalidInputError(f"img2img with {request.steps} steps at strength {strength} runs no denoising "
                                    f"step: raise steps or strength")
        self._load()
        pipe = self._image_to_image()
        self._set_scheduler(pipe, request.sampler)
        self._set_tiling(request.tiling)
        source = parent.image.convert("RGB")
        if source.size != request.size:
            source = source.resize(request.size, Image.Resampling.LANCZOS)
        counter = _Progress(progress, steps)
        try:
            images = self._call(pipe, [request], counter, base=0, prompt=[request.prompt],
                                negative_prompt=[request.negative_prompt], image=[source], strength=strength,
                                units=steps)
        except (EchoError, Interrupted):
            raise
        except Exception as exc:
            raise self._render_error(exc, request) from exc
        counter.finish()
        info = self._info(pipe, request, 1)
        info.update(parent_artifact_id=parent.artifact_id, strength=strength)
        return RenderedImage(request=request, image=images[0].convert("RGB"), info=info)

    def close(self) -> None:
        """Drop the pipelines and free their memory (the next render loads the model again)."""
        if self._pipe is None and self._img2img is None:
            return
        self._pipe = self._img2img = None
        self._base_scheduler_config = None
        self._tiling = None
        self._padding_modes = {}
        if self._device.startswith("cuda"):
            import torch

            gc.collect()  # reference cycles would keep CUDA memory until the next collection
            torch.cuda.empty_cache()

    # -- internals -----------------------------------------------------------------------------------

    def _call(self, pipe: Any, chunk: list[RenderRequest], counter: _Progress, base: int, units: int | None = None,
              **kwargs: Any) -> list[Any]:
        """One pipeline call for `chunk` (same size/steps/CFG/sampler), with per-image generators; progress
        from `base` (the units of the images done before) up by `units` (default: steps) per image."""
        import torch

        first = chunk[0]
        per_image = first.steps if units is None else units
        call_units = per_image * len(chunk)

        def on_step(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            # Some samplers run more timesteps than steps (Heun, DPM2): report in the request's units.
            total_steps = max(1, int(getattr(pipeline, "_num_timesteps", 0) or len(pipeline.scheduler.timesteps)))
            counter.report(base + min(call_units, (step + 1) * call_units // total_steps))
            return tensors

        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in chunk]
        with torch.inference_mode():
            result = pipe(num_inference_steps=first.steps, guidance_scale=first.cfg_scale, generator=generators,
                          callback_on_step_end=on_step, output_type="pil", **kwargs)
        counter.report(base + call_units)
        return list(result.images)

    def _render_error(self, exc: Exception, request: RenderRequest) -> EchoError:
        if _is_oom(exc):
            return BackendUnavailableError(
                f"out of memory rendering {request.width}x{request.height} with {self.describe().model} on "
                f"{self._device}: render smaller images, set backends: {{batch_size: 1}} or dtype float16")
        return BackendUnavailableError(f"diffusers failed rendering with {self.describe().model}: {_first_line(exc)}")

    def _out_of_memory(self, size: int) -> None:
        import torch

        self._batch_cap = max(1, size // 2)
        log.warning("out of memory at batch size %d: retrying with %d", size, self._batch_cap)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _batch_size(self, width: int, height: int) -> int:
        if self.config.batch_size is not None:
            wanted = int(self.config.batch_size)
        else:
            wanted = self._auto_batch_size(width, height)
        return max(1, min(wanted, self._batch_cap or wanted))

    def _auto_batch_size(self, width: int, height: int) -> int:
        """Images per call that fit in free memory (GPU on cuda, unified memory on mps), 1 to 8;
        always 1 on the CPU: a CPU is busy with one image already, so batching gains little there,
        while batched kernels round differently (~1e-6) and could move a pixel by one level, and a
        seed must give exactly the same image whatever else was rendered with it."""
        import torch

        if self._device == "cpu":
            return 1
        value_bytes = 4 if self._dtype == "float32" else 2
        per_image = max(0.25, width * height / 1e6) * _BYTES_PER_MEGAPIXEL[value_bytes]
        if self._device.startswith("cuda"):
            free, _ = torch.cuda.mem_get_info(torch.device(self._device))
        else:
            import psutil

            free = psutil.virtual_memory().available
        return max(1, min(MAX_AUTO_BATCH, int(free * 0.8 // per_image)))

    def _info(self, pipe: Any, request: RenderRequest, batch_size: int) -> dict[str, Any]:
        scheduler, overrides = self._scheduler_for(request.sampler)
        return {
            "sampler": canonical_sampler(request.sampler) or request.sampler,
            "scheduler": scheduler,
            "scheduler_config": dict(overrides),
            "device": self._device,
            "dtype": self._dtype,
            "pipeline": type(pipe).__name__,
            "batch_size": batch_size,
        }

    def _scheduler_for(self, sampler: str) -> tuple[str, dict[str, Any]]:
        if self.config.scheduler:
            return self.config.scheduler, {}
        if _scheduler_class_name(sampler):  # what `prepare` writes for a configured scheduler
            return sampler, {}
        name = canonical_sampler(sampler)
        if name is None:
            raise InvalidInputError(f"sampler {sampler!r} is not known; known: {', '.join(SAMPLERS)}")
        return SAMPLERS[name]

    def _set_scheduler(self, pipe: Any, sampler: str) -> None:
        import diffusers

        class_name, overrides = self._scheduler_for(sampler)
        # Always from the model's own config (never the last sampler's: its overrides would stick); cheap.
        pipe.scheduler = getattr(diffusers, class_name).from_config(self._base_scheduler_config, **overrides)

    def _set_tiling(self, tiling: bool) -> None:
        """Circular padding in every Conv2d of the UNet and VAE (seamless textures); restored otherwise."""
        if self._tiling is tiling:
            return
        import torch

        for model in (self._pipe.unet, self._pipe.vae):
            for module in model.modules():
                if isinstance(module, torch.nn.Conv2d):
                    original = self._padding_modes.setdefault(id(module), module.padding_mode)
                    module.padding_mode = "circular" if tiling else original
        self._tiling = tiling

    def _device_and_dtype(self) -> tuple[str, Any]:
        import torch

        device = check_device_name(self.config.device)
        dtype_name = check_dtype_name(self.config.dtype)
        if device is None:
            if torch.cuda.is_available():
                device = "cuda"
            elif torch.backends.mps.is_available():
                device = "mps"
            else:
                device = "cpu"
        elif device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise BackendUnavailableError(f"device {device!r} was asked for but torch {torch.__version__} sees "
                                              f"no CUDA GPU: set backends: {{device: cpu}} or leave device unset")
            index = int(device.partition(":")[2] or 0)
            if index >= torch.cuda.device_count():
                raise BackendUnavailableError(f"device {device!r} does not exist: {torch.cuda.device_count()} "
                                              f"CUDA GPU(s) found")
        elif device == "mps" and not torch.backends.mps.is_available():
            raise BackendUnavailableError("device 'mps' was asked for but this torch build has no MPS support: "
                                          "set backends: {device: cpu} or leave device unset")
        if dtype_name is None:
            dtype_name = "float16" if device.startswith("cuda") else "float32"
        return device, getattr(torch, dtype_name)

    def _load(self) -> Any:
        """The txt2img pipeline, loaded on first use (once per backend instance)."""
        if self._pipe is not None:
            return self._pipe
        source = resolve_model(self.config.model, self.config.allow_downloads)
        device, dtype = self._device_and_dtype()
        local_only = not self.config.allow_downloads
        try:
            with _quiet_loading():
                if source.kind == "file":
                    pipe = self._load_single_file(Path(source.location), dtype, local_only)
                else:
                    pipe = self._load_pretrained(source, dtype, local_only)
                pipe = pipe.to(device)
        except (EchoError, Interrupted):
            raise
        except Exception as exc:
            raise self._load_error(source, exc) from exc
        pipe.set_progress_bar_config(disable=True)
        self._device, self._dtype = device, str(dtype).removeprefix("torch.")
        self._base_scheduler_config = pipe.scheduler.config
        self._pipe, self._tiling = pipe, None
        return pipe

    def _load_pretrained(self, source: ModelSource, dtype: Any, local_only: bool) -> Any:
        from diffusers import AutoPipelineForText2Image, DiffusionPipeline

        options: dict[str, Any] = {}
        if source.kind == "hub":
            options.update(local_files_only=local_only, cache_dir=str(hf_hub_cache()))
        index = DiffusionPipeline.load_config(source.location, **options)
        options.update(_dtype_option(dtype))
        if "safety_checker" in index:  # SD 1.x/2.x: no checker, no warning about leaving it out
            options.update(safety_checker=None, requires_safety_checker=False)
        return AutoPipelineForText2Image.from_pretrained(source.location, **options)

    def _load_single_file(self, path: Path, dtype: Any, local_only: bool) -> Any:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        try:
            keys = checkpoint_keys(path)
        except Exception as exc:
            raise BackendUnavailableError(f"diffusers model file {str(path)!r} cannot be read as a checkpoint "
                                          f"({_first_line(exc)}): pass a valid .safetensors/.ckpt file") from exc
        if not any(key.startswith("model.diffusion_model.") for key in keys):
            raise BackendUnavailableError(f"diffusers model file {str(path)!r} holds no Stable Diffusion UNet "
                                          f"(model.diffusion_model.*): pass a full SD 1.x/2.x/XL checkpoint")
        options: dict[str, Any] = {**_dtype_option(dtype), "local_files_only": local_only}
        if self.config.single_file_config:
            config = resolve_model(self.config.single_file_config, self.config.allow_downloads)
            options["config"] = config.location if config.kind != "hub" else str(config.snapshot or config.location)
        if is_sdxl_checkpoint(keys):
            return StableDiffusionXLPipeline.from_single_file(str(path), **options)
        return StableDiffusionPipeline.from_single_file(str(path), safety_checker=None, requires_safety_checker=False,
                                                        **options)

    def _load_error(self, source: ModelSource, exc: Exception) -> BackendUnavailableError:
        cause = _first_line(exc)
        if source.kind == "hub":
            return BackendUnavailableError(
                f"diffusers model {source.location!r} could not be loaded from the Hugging Face cache "
                f"(HF_HOME={hf_home()}; {cause}): download it completely (huggingface-cli download "
                f"{source.location}), pass a local folder or .safetensors with --model, or set backends: "
                f"{{allow_downloads: true}} in configs/settings.yaml")
        if source.kind == "file" and not self.config.single_file_config:
            return BackendUnavailableError(
                f"diffusers checkpoint {source.location!r} could not be loaded ({cause}): set backends: "
                f"{{single_file_config: <save_pretrained folder or hub id with the pipeline configs>}} in "
                f"configs/settings.yaml, or pass a save_pretrained folder with --model")
        return BackendUnavailableError(f"diffusers model {source.location!r} could not be loaded ({cause}): pass a "
                                       f"complete save_pretrained folder or .safetensors/.ckpt checkpoint with --model")

    def _image_to_image(self) -> Any:
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            with _quiet_loading():
                # from_pipe shares the loaded modules: the weights are never loaded twice.
                self._img2img = AutoPipelineForImage2Image.from_pipe(self._pipe)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img


class _Progress:
    """`done` out of `total` for one render call: only grows, ends at `total`."""

    def __init__(self, callback: ProgressCallback | None, total: int):
        self.callback: Callable[[int, int], None] | None = callback
        self.total = total
        self.done = 0

    def report(self, done: int) -> None:
        done = min(done, self.total)
        if done > self.done:
            self.done = done
            if self.callback is not None:
                self.callback(done, self.total)

    def finish(self) -> None:
        self.report(self.total)


def _groups(requests: list[RenderRequest]) -> Iterator[list[RenderRequest]]:
    """Runs of consecutive requests one pipeline call can render together."""
    def key(r: RenderRequest) -> tuple[Any, ...]:
        return r.width, r.height, r.steps, r.cfg_scale, canonical_sampler(r.sampler), r.tiling

    group: list[RenderRequest] = []
    for request in requests:
        if group and key(request) != key(group[0]):
            yield group
            group = []
        group.append(request)
    if group:
        yield group
