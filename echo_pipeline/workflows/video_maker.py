"""Videos from a render request: keyframes on successive seeds, frames between them, MP4 + GIF.

Procedural backend: the keyframes are parameter dicts (`ProceduralBackend.params_for` on the
template's seed and the next seeds that draw the same motif and kind, so walks interpolate like with
like) and every frame is drawn from `animate.frame_params` — a walk, a fractal zoom or a palette
cycle, driven by the audio's beats when there is a track. Any other backend (only the
`ImageBackend` protocol is used): keyframes are txt2img renders on successive seeds, and each frame
in between is img2img (`refine`) of the previous frame blended towards the next keyframe, with the
next keyframe's seed and a low strength, so the chain drifts coherently from one keyframe to the
next; a beat cut jumps to the next keyframe. Backends without img2img crossfade between keyframes.
Every frame follows from the record in `VideoResult.info` (and the audio file it names by hash).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.media import audio as audio_mod
from echo_pipeline.media import video as video_mod
from echo_pipeline.render.backends import procedural
from echo_pipeline.render.backends.base import ImageBackend, ParentImage, RenderedImage
from echo_pipeline.render.backends.procedural import animate
from echo_pipeline.render.backends.procedural.backend import ProceduralBackend
from echo_pipeline.render.backends.procedural.palettes import linear_to_srgb, srgb_to_linear
from echo_pipeline.render.requests import MAX_SEED, RenderRequest

MAX_FRAMES = 600
MAX_FPS = 60
MAX_KEYFRAMES = 16
CHAIN_STRENGTH = 0.3  # img2img strength of each frame of a model backend's chain
GIF_MAX_SIDE = 384  # the GIF is a preview: frames are scaled down to this
SEED_SEARCH = 24  # further seeds tried for a keyframe that draws the same motif as keyframe 0

Progress = Callable[[int, int], None]


@dataclass
class VideoResult:
    frames: list[Image.Image]
    poster: Image.Image
    mp4: bytes
    gif: bytes
    info: dict[str, Any] = field(default_factory=dict)


def _check(request: RenderRequest, frames: int, fps: int, keyframes: int, motion: str,
           audio_path: str | Path | None) -> None:
    if not isinstance(frames, int) or not 2 <= frames <= MAX_FRAMES:
        raise InvalidInputError(f"frames must be in 2..{MAX_FRAMES}, not {frames!r}")
    if not isinstance(fps, int) or not 1 <= fps <= MAX_FPS:
        raise InvalidInputError(f"fps must be in 1..{MAX_FPS}, not {fps!r}")
    if not isinstance(keyframes, int) or not 1 <= keyframes <= min(MAX_KEYFRAMES, frames):
        raise InvalidInputError(f"keyframes must be in 1..{min(MAX_KEYFRAMES, frames)}, not {keyframes!r}")
    if motion not in animate.MOTIONS:
        raise InvalidInputError(f"unknown motion {motion!r}; choose one of {', '.join(animate.MOTIONS)}")
    if request.width % 2 or request.height % 2:
        raise InvalidInputError(f"video width and height must be even (H.264), not {request.width}x{request.height}")
    if request.tiling:
        raise InvalidInputError("videos cannot be tiling")
    if audio_path is not None and not Path(audio_path).is_file():
        raise InvalidInputError(f"audio file not found: {audio_path}")


def _still(request: RenderRequest, seed: int) -> RenderRequest:
    """The template as a plain txt2img request on `seed` (no media record, no parent)."""
    update: dict[str, Any] = {"seed": int(seed) % (MAX_SEED + 1), "parent_id": None, "strength": None,
                              "media_type": "image"}
    if "media" in RenderRequest.model_fields:
        update["media"] = None
    return request.model_copy(update=update)


def _family(params: dict[str, Any]) -> tuple[str, Any]:
    mp = params["motif_params"]
    return params["motif"], mp.get("kind") or mp.get("style")


def procedural_keyframes(request: RenderRequest, count: int) -> tuple[list[int], list[dict[str, Any]]]:
    """(seeds, params) of `count` keyframes: the template's seed, then the next seeds whose picture
    is of the same family (motif and kind/style) as the first, so walks interpolate like with like;
    where none is found within `SEED_SEARCH` seeds, the next seed of the same motif, else the next.
    Remembered per process (a request is checked, then rendered: the search runs once)."""
    seeds, params = _keyframes(request.prompt, request.negative_prompt, request.seed, request.width, request.height,
                               int(count))
    return list(seeds), [copy.deepcopy(p) for p in params]


@functools.lru_cache(maxsize=64)
def _keyframes(prompt: str, negative: str, first_seed: int, width: int, height: int,
               count: int) -> tuple[tuple[int, ...], tuple[dict[str, Any], ...]]:
    request = RenderRequest(prompt=prompt, negative_prompt=negative, seed=first_seed, width=width, height=height)
    first = ProceduralBackend.params_for(_still(request, request.seed))
    seeds, params = [request.seed], [first]
    seed = request.seed
    for _ in range(1, count):
        tried: list[tuple[int, dict[str, Any]]] = []
        pick = None
        for _ in range(SEED_SEARCH):
            seed += 1
            p = ProceduralBackend.params_for(_still(request, seed))
            tried.append((seed, p))
            if _family(p) == _family(first):
                pick = (seed, p)
                break
        if pick is None:
            pick = next(((s, p) for s, p in tried if p["motif"] == first["motif"]), tried[0])
            seed = max(seed, pick[0])
        seeds.append(int(pick[0]) % (MAX_SEED + 1))
        params.append(pick[1])
    return tuple(seeds), tuple(params)


def make_video(backend: ImageBackend, request_template: RenderRequest, *, frames: int, fps: int, loop: bool,
               keyframes: int = 3, motion: str = "auto", audio_path: str | Path | None = None,
               progress: Progress | None = None, keyframe_images: Sequence[RenderedImage] | None = None) -> VideoResult:
    """Render a video of `frames` frames at `fps` (see the module docstring); `progress(done, total)`
    after each frame. Inputs are checked before anything renders. `keyframe_images`: keyframes
    already rendered (stored artifacts: their requests, pixels and info, whose procedural `params`
    the frames are drawn from), instead of the template's own seeds."""
    if keyframe_images is not None:
        if not keyframe_images:
            raise InvalidInputError("a video needs at least one keyframe")
        keyframes = len(keyframe_images)
    _check(request_template, frames, fps, keyframes, motion, audio_path)
    backend.check_requests([_still(request_template, request_template.seed)])
    analysis = None
    audio_info = None
    if audio_path is not None:
        samples, sr = audio_mod.load_audio(audio_path)
        analysis = audio_mod.analyze(samples, sr, fps=fps, frames=frames)
        audio_info = {"name": Path(audio_path).name, "sha256": hashlib.sha256(Path(audio_path).read_bytes()).hexdigest(),
                      "analysis": analysis.summary()}
    drive = audio_mod.drive_from_audio(analysis, frames) if analysis is not None else None

    info: dict[str, Any] = {
        "kind": "video", "frames": frames, "fps": fps, "loop": bool(loop), "motion": motion,
        "width": request_template.width, "height": request_template.height,
        "prompt": request_template.prompt, "negative_prompt": request_template.negative_prompt,
        "seed": request_template.seed, "backend": backend.describe().backend, "audio": audio_info,
        "animate_version": animate.ANIMATE_VERSION,
    }
    if isinstance(backend, ProceduralBackend):
        images = _procedural(backend, request_template, frames, loop, keyframes, motion, drive, info, progress,
                             keyframe_images)
    else:
        images = _model_chain(backend, request_template, frames, loop, keyframes, drive, info, progress,
                              keyframe_images)

    poster_at = video_mod.poster_index(images)
    info["poster_index"] = poster_at
    mp4 = video_mod.encode_mp4(images, fps, audio_path=str(audio_path) if audio_path is not None else None)
    gif = video_mod.encode_gif(_gif_frames(images), fps, loop=loop)
    return VideoResult(frames=images, poster=images[poster_at], mp4=mp4, gif=gif, info=info)


def _gif_frames(images: list[Image.Image]) -> list[Image.Image]:
    w, h = images[0].size
    scale = min(1.0, GIF_MAX_SIDE / max(w, h))
    if scale >= 1.0:
        return images
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return [im.resize(size, Image.Resampling.LANCZOS) for im in images]


# --------------------------------------------------------------------------------------- procedural
def _procedural(backend: ProceduralBackend, request: RenderRequest, frames: int, loop: bool, keyframes: int,
                motion: str, drive: list[dict] | None, info: dict[str, Any], progress: Progress | None,
                given: Sequence[RenderedImage] | None = None) -> list[Image.Image]:
    if given is not None:
        seeds = [k.request.seed for k in given]
        kfs = [k.info["params"] if isinstance(k.info.get("params"), dict) and "motif_params" in k.info["params"]
               else ProceduralBackend.params_for(k.request) for k in given]
    else:
        seeds, kfs = procedural_keyframes(request, keyframes)
    per_frame = animate.frame_params(kfs, frames, motion=motion, loop=loop, drive=drive)
    info.update({"keyframe_seeds": seeds, "procedural_version": procedural.backend.PROCEDURAL_VERSION,
                 "resolved_motion": _resolved(motion, kfs[0])})
    w, h = request.width, request.height
    images: list[Image.Image] = []
    workers = min(getattr(backend, "workers", 1), frames)
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # frames are pure NumPy: one process per core; map keeps the order
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for done, image in enumerate(pool.map(_render_one, per_frame, [w] * frames, [h] * frames), start=1):
                images.append(image)
                if progress is not None:
                    progress(done, frames)
        return images
    for done, p in enumerate(per_frame, start=1):
        images.append(animate.render_frame(p, w, h))
        if progress is not None:
            progress(done, frames)
    return images


def _render_one(p: dict[str, Any], w: int, h: int) -> Image.Image:
    return animate.render_frame(p, w, h)


def _resolved(motion: str, first: dict[str, Any]) -> str:
    if motion != "auto":
        return motion
    return "zoom+cycle" if first["motif"] == "fractal" else "walk+cycle"


# ------------------------------------------------------------------------------------ model backends
def _lin(img: Image.Image) -> np.ndarray:
    return srgb_to_linear(np.asarray(img.convert("RGB"), np.float32) / 255.0)


def _srgb(lin: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(linear_to_srgb(lin) * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")


def _crossfade(a: Image.Image, b: Image.Image, t: float) -> Image.Image:
    if t <= 0:
        return a.copy()
    if t >= 1:
        return b.copy()
    return _srgb(_lin(a) * (1 - t) + _lin(b.resize(a.size, Image.Resampling.LANCZOS)) * t)


def _chain_plan(frames: int, keyframes: int, loop: bool, drive: list[dict] | None) -> list[tuple[int, int, float]]:
    """Per frame (from keyframe, to keyframe, progress 0..1): segments of equal length between
    successive keyframes (in a loop the last one goes back to keyframe 0); a cut starts the next
    keyframe's segment at once."""
    seg = frames / keyframes if loop else (frames - 1) / max(1, keyframes - 1)
    plan: list[tuple[int, int, float]] = []
    origin, base = 0, 0.0  # a cut re-bases the timeline on the next keyframe
    for i in range(frames):
        if drive is not None and i > 0 and drive[i].get("cut"):
            current = plan[-1][0]
            base, origin = float(current + 1), i
        u = base + (i - origin) / seg if keyframes > 1 else 0.0
        if not loop and drive is None:
            u = min(u, keyframes - 1.0)
        a = int(math.floor(u + 1e-9))
        f = u - a
        plan.append((a % keyframes, (a + 1) % keyframes, f))
    return plan


def _post(img: Image.Image, d: dict[str, Any]) -> Image.Image:
    """Audio drive on finished pixels (model frames have no params): a zoom bump and a hue swing."""
    pulse, shift = float(d.get("pulse", 0.0)), float(d.get("shift", 0.0))
    out = img
    if pulse > 0:
        z = 1.0 + animate.PULSE_CAMERA * pulse
        w, h = img.size
        cw, ch = w / z, h / z
        out = img.resize((w, h), Image.Resampling.BICUBIC, box=((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2))
    turns = animate.HUE_SWING * math.sin(2 * math.pi * shift)
    if turns:
        from echo_pipeline.render.backends.procedural.palettes import linear_to_oklab, oklab_to_linear

        lab = linear_to_oklab(_lin(out).reshape(-1, 3))
        ang = 2 * math.pi * turns
        rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        lab[:, 1:] = lab[:, 1:] @ rot.T
        out = _srgb(np.clip(oklab_to_linear(lab), 0, 1).reshape(out.size[1], out.size[0], 3).astype(np.float32))
    return out


def _model_chain(backend: ImageBackend, request: RenderRequest, frames: int, loop: bool, keyframes: int,
                 drive: list[dict] | None, info: dict[str, Any], progress: Progress | None,
                 given: Sequence[RenderedImage] | None = None) -> list[Image.Image]:
    seeds = ([k.request.seed for k in given] if given is not None
             else [(request.seed + k) % (MAX_SEED + 1) for k in range(keyframes)])
    kf_requests = [k.request for k in given] if given is not None else [_still(request, s) for s in seeds]
    img2img = bool(backend.capabilities.img2img)
    chain_request = kf_requests[0].model_copy(update={"parent_id": "video-frame", "strength": CHAIN_STRENGTH})
    backend.check_requests(kf_requests + ([chain_request] if img2img else []))
    plan = _chain_plan(frames, keyframes, loop, drive)
    info.update({"keyframe_seeds": seeds, "method": "img2img-chain" if img2img else "crossfade",
                 "strength": CHAIN_STRENGTH if img2img else None})

    rendered: list[RenderedImage] = list(given) if given is not None else []
    for r in (backend.render(kf_requests) if given is None else []):
        rendered.append(r)
    if len(rendered) != keyframes:
        raise InvalidInputError(f"backend {backend.name!r} returned {len(rendered)} of {keyframes} keyframes")
    keys = [r.image.convert("RGB").resize((request.width, request.height), Image.Resampling.LANCZOS)
            for r in rendered]

    images: list[Image.Image] = []
    prev: RenderedImage | None = None
    for i, (a, b, f) in enumerate(plan):
        if f <= 1e-9 or prev is None or (drive is not None and drive[i].get("cut")):
            current = RenderedImage(request=kf_requests[a], image=keys[a], info=dict(rendered[a].info))
        elif not img2img:
            current = RenderedImage(request=kf_requests[a], image=_crossfade(keys[a], keys[b], animate._ease(f)))
        else:
            # img2img of the previous frame pulled towards the next keyframe (more as it nears)
            guide = _crossfade(prev.image, keys[b], 0.5 * animate._ease(f) ** 2 + 0.1 * f)
            parent = ParentImage(artifact_id=f"video-frame-{i - 1}", image=guide, request=prev.request,
                                 info=dict(prev.info))
            step = kf_requests[b].model_copy(update={"parent_id": f"video-frame-{i - 1}", "strength": CHAIN_STRENGTH})
            current = backend.refine(parent, step)
            current = RenderedImage(request=current.request, info=current.info,
                                    image=current.image.convert("RGB").resize((request.width, request.height),
                                                                              Image.Resampling.LANCZOS))
        prev = current
        images.append(_post(current.image, drive[i]) if drive is not None else current.image)
        if progress is not None:
            progress(i + 1, frames)
    return images
