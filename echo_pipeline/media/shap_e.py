"""Image-to-3D with OpenAI's Shap-E through diffusers (`ShapEImg2ImgPipeline`), when its weights are configured.

The prior turns the concept image's CLIP embedding into a latent; the renderer decodes it to a signed
distance field on a grid, marching cubes makes the surface and the colour head gives each vertex its colour.
Only a configured model loads: a save_pretrained folder, or a hub id already in the local Hugging Face cache
(downloads only with `allow_downloads=True`). torch and diffusers are imported inside the functions.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
from PIL import Image

from echo_pipeline.errors import BackendUnavailableError, EchoError, InvalidInputError
from echo_pipeline.media.mesh import MeshResult, mesh_stats
from echo_pipeline.render.backends.diffusion import (
    _dtype_option,
    _first_line,
    _quiet_loading,
    check_device_name,
    hf_hub_cache,
    resolve_model,
)

MAX_STEPS = 500
GRID_SIZES = (32, 48, 64, 96, 128, 192, 256)

_lock = threading.Lock()
_cached: tuple[tuple[str, str, bool], Any] | None = None  # ((location, device, allow_downloads), pipeline)


def _device(device: str | None) -> str:
    import torch

    name = check_device_name(device)
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {name!r} was asked for but torch sees no CUDA GPU")
    if name == "mps" and not torch.backends.mps.is_available():
        raise BackendUnavailableError("device 'mps' was asked for but this torch build has no MPS support")
    return name


def load_pipeline(model: str, device: str | None = None, *, allow_downloads: bool = False) -> Any:
    """The `ShapEImg2ImgPipeline` for `model` on `device`, loaded once and kept for the next call."""
    global _cached
    source = resolve_model(model, allow_downloads)
    if source.kind == "file":
        raise InvalidInputError(f"Shap-E model {source.location!r} is a single checkpoint file: pass the "
                                f"save_pretrained folder (with model_index.json) or a hub id such as "
                                f"openai/shap-e-img2img")
    dev = _device(device)
    key = (source.location, dev, allow_downloads)
    with _lock:
        if _cached is not None and _cached[0] == key:
            return _cached[1]
        import torch
        from diffusers import ShapEImg2ImgPipeline

        options: dict[str, Any] = {}
        if source.kind == "hub":
            options.update(local_files_only=not allow_downloads, cache_dir=str(hf_hub_cache()))
        if dev.startswith("cuda"):
            options.update(_dtype_option(torch.float16))
        try:
            with _quiet_loading():
                pipe = ShapEImg2ImgPipeline.from_pretrained(source.location, **options).to(dev)
        except EchoError:
            raise
        except Exception as exc:
            raise BackendUnavailableError(f"Shap-E model {source.location!r} could not be loaded "
                                          f"({_first_line(exc)}): pass a complete ShapEImg2ImgPipeline "
                                          f"save_pretrained folder or a cached hub id") from exc
        pipe.set_progress_bar_config(disable=True)
        _cached = (key, pipe)
        return pipe


def _check(image: Any, model: Any, steps: Any, seed: Any, guidance_scale: Any, grid_size: Any) -> None:
    if not isinstance(image, Image.Image):
        raise InvalidInputError(f"the Shap-E input must be a PIL image, not {type(image).__name__}")
    if min(image.size) < 16:
        raise InvalidInputError(f"the Shap-E input is {image.size[0]}x{image.size[1]}; each side must be >= 16 px")
    if not isinstance(model, str) or not model.strip():
        raise BackendUnavailableError("no Shap-E model is configured: pass a ShapEImg2ImgPipeline save_pretrained "
                                      "folder or a cached hub id (e.g. openai/shap-e-img2img)")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InvalidInputError(f"Shap-E steps must be an integer in 1..{MAX_STEPS}, not {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InvalidInputError(f"Shap-E seed must be a non-negative integer, not {seed!r}")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, int | float) or not (
            math.isfinite(guidance_scale) and 0 <= guidance_scale <= 50):
        raise InvalidInputError(f"Shap-E guidance scale must be a number in 0..50, not {guidance_scale!r}")
    if grid_size not in GRID_SIZES:
        raise InvalidInputError(f"Shap-E grid size {grid_size!r} is not one of {', '.join(map(str, GRID_SIZES))}")


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.asarray(np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055))


def shap_e_mesh(image: Image.Image, model: str, *, steps: int = 64, seed: int = 0, device: str | None = None,
                guidance_scale: float = 3.0, grid_size: int = 128, allow_downloads: bool = False) -> MeshResult:
    """A vertex-coloured mesh of the object in `image` from the Shap-E img2img model `model`.

    `steps` denoising steps of the prior from `seed` (same seed, same mesh on the same device);
    `grid_size` is the marching-cubes grid (128 as Shap-E's own decoder). The mesh is turned to glTF's
    Y-up frame, centred and scaled to a long side of 1 like `build_mesh`'s. Missing or unloadable weights
    raise `BackendUnavailableError`; an empty surface (nothing decoded) too.
    """
    _check(image, model, steps, seed, guidance_scale, grid_size)
    pipe = load_pipeline(model, device, allow_downloads=allow_downloads)
    import torch
    import trimesh

    rgb = image.convert("RGB")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    dev = pipe.device
    try:
        with torch.inference_mode():
            latents = pipe(rgb, num_inference_steps=steps, generator=generator, guidance_scale=float(guidance_scale),
                           output_type="latent").images
            decoded = pipe.shap_e_renderer.decode_to_mesh(latents[0][None, :], dev, grid_size=grid_size)
    except torch.cuda.OutOfMemoryError as exc:
        raise BackendUnavailableError(f"Shap-E ran out of GPU memory on {dev}: use a smaller grid_size or the "
                                      f"CPU") from exc
    verts = decoded.verts.detach().float().cpu().numpy().astype(np.float64)
    faces = decoded.faces.detach().cpu().numpy().astype(np.int64)
    if len(verts) < 4 or len(faces) < 4:
        raise BackendUnavailableError(f"Shap-E decoded no surface from this image with seed {seed}: try another "
                                      f"seed, more steps or the procedural methods (extrude, heightfield)")
    channels = decoded.vertex_channels or {}
    if all(k in channels for k in "RGB"):
        linear = np.stack([channels[k].detach().float().cpu().numpy() for k in "RGB"], -1)
        colours = np.round(_linear_to_srgb(linear) * 255).astype(np.uint8)
    else:
        colours = np.full((len(verts), 3), 200, dtype=np.uint8)
    rgba = np.concatenate([colours, np.full((len(verts), 1), 255, dtype=np.uint8)], axis=1)
    # Shap-E is Z-up; glTF is Y-up: turn -90 degrees about X, then centre and scale the long side to 1.
    verts = verts @ np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    lo, hi = verts.min(0), verts.max(0)
    verts = (verts - (lo + hi) / 2) / max(float((hi - lo).max()), 1e-9)
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, vertex_colors=rgba, process=True)
    mesh.fix_normals()
    _ = mesh.vertex_normals
    stats = mesh_stats(mesh, bool(mesh.is_watertight))
    stats.update(steps=steps, seed=seed, grid_size=grid_size, guidance_scale=float(guidance_scale))
    return MeshResult(mesh=mesh, method="shap_e", texture=None, stats=stats)
