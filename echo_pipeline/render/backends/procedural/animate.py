"""Frame parameters for procedural video: walks between keyframes, fractal zooms, palette cycles.

`frame_params(keyframes, frames, ...)` turns a few keyframe parameter dicts (`params.build_params` of
one prompt on several seeds) into one params dict per frame; `render_frame(p, w, h)` draws one. Every
frame is a pure function of the keyframes, the motion, the frame count, `loop` and the audio `drive`,
so a video is re-created exactly from its record.

Motions:
- "walk": numbers in `motif_params` and the palette interpolate between successive keyframes, eased
  (each keyframe is a moment of rest and is drawn exactly as its still). Angles take the short way
  round; fractal views travel on the van Wijk & Nuij zoom-and-pan path (zoom out, pan, zoom in)
  instead of flying across a deep zoom. Values that cannot be interpolated — the structure seed
  (noise lattices, stroke placement), strings, flags, integer counts, lists of other lengths — are
  the fallback: both sides of the segment are drawn with the same interpolated numbers, one with the
  first keyframe's discrete values and one with the second's, and crossfaded in linear light around
  mid-segment (`p["blend"]`). Keyframes of different motifs (or fractal kinds) only crossfade.
- "zoom": fractals zoom towards a point of interest on the set's boundary found by a coarse-to-fine
  search, the view width shrinking geometrically; other motifs get a slow camera push-in and drift
  (rendered with a margin and resampled, `p["camera"]`) while noise lattices morph.
- "cycle": palette rotation: a fractal's colour bands flow (classic colour cycling, `offset`), other
  motifs turn their palette's hue in OKLab.
- "auto": fractal -> zoom, others -> walk, both with a gentle palette cycle.

loop=True makes the video periodic: frame N (one past the last) would equal frame 0 — the walk goes
back to keyframe 0, zooms go in and come back out, cycles turn by whole turns.

`drive` (one dict per frame, from `media.audio.drive_from_audio`) adds to any motion:
`{"pulse": 0..1` zoom bump, `"shift": float` palette phase in turns (cumulative; fractal bands move by
it, other palettes swing their hue within +-43 deg), `"cut": bool` jump to the next keyframe now,
`"energy": 0..1` (optional) loudness, which lifts the light a little}.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends.procedural import params as P
from echo_pipeline.render.backends.procedural.palettes import (
    linear_to_oklab,
    linear_to_srgb,
    oklab_to_linear,
    srgb_to_linear,
)

ANIMATE_VERSION = "1"  # bump when the same keyframes/motion/drive would give different frames
MOTIONS = ("auto", "walk", "zoom", "cycle")
ANGLE_KEYS = frozenset({"rotation", "light_angle", "direction", "angle", "spin", "tone_angle"})
CONTINUOUS_INTS = frozenset({"max_iter"})  # ints that are amounts, not counts or hashes
ZOOM_RATE = 0.03  # log-width per frame of a fractal zoom (2x every ~23 frames)
MAX_ZOOM_DEPTH = math.log(1e6)  # complex128 resolves views ~1e-9 wide; start views are >= ~1e-3
CAMERA_ZOOM = 0.18  # non-fractal push-in at the end of a zoom
PULSE_ZOOM = 0.35  # fractal: log-width bump at pulse 1 (1.4x closer)
PULSE_CAMERA = 0.12  # other motifs: camera scale bump at pulse 1
ENERGY_LIGHT = 0.2  # light added at full loudness
HUE_SWING = 0.12  # turns: how far a beat-driven shift swings a non-fractal palette's hue
GENTLE_CYCLE = 0.035  # turns: amplitude of auto's palette breathing
MORPH_RATE = 0.01  # radians per frame (at most) the noise lattices of flow/nebula morph by
MORPH_SWING = 0.6  # the most a walk segment morphs them mid-way


# ------------------------------------------------------------------------------------------ helpers
def _ease(t: float) -> float:
    """Smootherstep: zero velocity and acceleration at both ends (a keyframe is a moment of rest)."""
    t = min(1.0, max(0.0, t))
    return t * t * t * (t * (t * 6 - 15) + 10)


def _angle_lerp(a: float, b: float, t: float) -> float:
    d = (b - a + math.pi) % (2 * math.pi) - math.pi
    return a + d * t


def _discrete(x: Any) -> bool:
    return isinstance(x, (bool, str)) or x is None


def _mix(a: Any, b: Any, t: float, side: str, key: str = "") -> Any:
    """Interpolate two param trees: numbers lerp (angles the short way), anything that cannot be
    interpolated comes from `side` ("a" or "b")."""
    pick = a if side == "a" else b
    if isinstance(a, dict) and isinstance(b, dict):
        out = {k: (_mix(a[k], b[k], t, side, k) if k in b else a[k]) for k in a}
        if side == "b":
            out.update({k: v for k, v in b.items() if k not in a})
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return copy.deepcopy(pick)
        return [_mix(x, y, t, side, key) for x, y in zip(a, b, strict=True)]
    if _discrete(a) or _discrete(b):
        return pick
    if isinstance(a, int) and isinstance(b, int):
        return int(round(a + (b - a) * t)) if key in CONTINUOUS_INTS else pick
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if key in ANGLE_KEYS:
            return float(_angle_lerp(float(a), float(b), t))
        return float(a + (b - a) * t)
    return pick


def _structurally_same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two keyframes can be interpolated at all (same motif, and for fractals same kind)."""
    if a["motif"] != b["motif"]:
        return False
    if a["motif"] == "fractal":
        ma, mb = a["motif_params"], b["motif_params"]
        return bool(ma["kind"] == mb["kind"] and ma.get("power", 2) == mb.get("power", 2)
                    and (ma.get("julia_c") is None) == (mb.get("julia_c") is None))
    return True


def _view_path(ca: complex, wa: float, cb: complex, wb: float, t: float, rho: float = 1.4) -> tuple[complex, float]:
    """van Wijk & Nuij (2003) optimal zoom-and-pan between two views (centre, width) at t in [0, 1]."""
    u1 = abs(cb - ca)
    if u1 < 1e-9 * max(wa, wb):  # same centre: pure geometric zoom
        return ca + (cb - ca) * t, wa * (wb / wa) ** t
    r2 = rho * rho
    b0 = (wb * wb - wa * wa + r2 * r2 * u1 * u1) / (2 * wa * r2 * u1)
    b1 = (wb * wb - wa * wa - r2 * r2 * u1 * u1) / (2 * wb * r2 * u1)
    r0 = math.log(-b0 + math.sqrt(b0 * b0 + 1))
    r1 = math.log(-b1 + math.sqrt(b1 * b1 + 1))
    s = t * (r1 - r0) / rho
    u = wa / r2 * (math.cosh(r0) * math.tanh(rho * s + r0) - math.sinh(r0))
    w = wa * math.cosh(r0) / math.cosh(rho * s + r0)
    if t >= 1.0:
        return cb, wb
    return ca + (cb - ca) / u1 * u, w


def _hue_rotate(spec: dict[str, Any], turns: float) -> dict[str, Any]:
    """The palette record with every colour's hue turned by `turns` in OKLab (lightness kept)."""
    if not turns:
        return spec
    angle = 2 * math.pi * turns
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def turn(colours: list[list[float]]) -> list[list[float]]:
        lab = linear_to_oklab(srgb_to_linear(np.asarray(colours, np.float64)))
        lab[:, 1:] = lab[:, 1:] @ rot.T
        rgb = linear_to_srgb(np.clip(oklab_to_linear(lab), 0, 1))
        return [[round(float(v), 4) for v in np.clip(c, 0, 1)] for c in rgb]

    out = dict(spec)
    out["stops"] = turn(spec["stops"])
    out["accents"] = turn(spec["accents"])
    out["bg"] = turn([spec["bg"]])[0]
    return out


# ------------------------------------------------------------------------------------- fractal zoom
def zoom_target(motif_params: dict[str, Any], depth: float) -> tuple[float, float]:
    """A point on the fractal's boundary near the view's centre that stays detailed `depth` e-folds
    deeper: coarse-to-fine, each stage keeps the most detailed (highest escape count, near the set)
    sample of a small grid around the previous target, which itself need not be on the boundary."""
    from echo_pipeline.render.backends.procedural.motifs import fractal

    kind, power, jc = motif_params["kind"], int(motif_params.get("power", 2)), motif_params.get("julia_c")
    target = complex(*motif_params["center"])
    width = float(motif_params["width"])
    final = width * math.exp(-depth)
    n = 33
    window = width * 0.5
    iters = int(motif_params["max_iter"])
    while True:
        offs = (np.arange(n) - n // 2) * (window / (n - 1))
        pts = (target + offs[None, :] + 1j * offs[:, None]).ravel()
        nu, _, log_de = fractal.iterate(kind, pts, jc, int(iters), np.complex128, power)
        px = window / (n - 1)
        ok = np.isfinite(nu) & (np.exp(np.minimum(log_de.astype(np.float64), 30.0)) < 2.0 * px)
        if ok.any():
            # the next stages zoom in around the pick: its neighbourhood here should be busy with
            # boundary, not filled by a bulb of the set (a black frame) or by empty exterior
            # (a 15-cell neighbourhood: about the frame the dive shows on its way there)
            inside = ndimage.uniform_filter((~np.isfinite(nu)).reshape(n, n).astype(np.float64), 15, mode="nearest")
            busy = ndimage.uniform_filter(ok.reshape(n, n).astype(np.float64), 15, mode="nearest")
            dist = np.abs(pts - target) / window
            depth_score = nu / max(1.0, float(np.nanmax(np.where(ok, nu, 0))))
            score = depth_score - 0.6 * dist - 2.0 * inside.ravel() - 2.5 * np.abs(busy.ravel() - 0.35)
            target = complex(pts[int(np.argmax(np.where(ok, score, -np.inf)))])
        if window <= final:
            break
        window /= 5.0
        iters = int(min(iters * 1.35, 8000))
    return target.real, target.imag


def _zoom_view(mp: dict[str, Any], target: tuple[float, float], z: float, depth: float) -> dict[str, Any]:
    """Motif params `z` e-folds deeper on the way to `target` (which drifts to the frame's centre)."""
    out = dict(mp)
    c0, w0 = complex(*mp["center"]), float(mp["width"])
    tc = complex(*target)
    k = math.exp(-z)
    # (w/w0)^1.5: the target's screen offset shrinks as sqrt(w/w0): it slides to the centre as we dive
    c = tc + (c0 - tc) * k ** 1.5
    out["center"] = [c.real, c.imag]
    out["width"] = w0 * k
    out["max_iter"] = int(min(8000, mp["max_iter"] * (1.0 + 0.22 * max(0.0, z))))
    out["rotation"] = float(mp["rotation"] + 0.25 * (z / depth if depth > 0 else 0.0))
    return out


# ------------------------------------------------------------------------------------------ timeline
def _check(keyframes: list[dict], frames: int, motion: str, drive: list[dict] | None) -> None:
    if not keyframes:
        raise InvalidInputError("a video needs at least one keyframe")
    for kf in keyframes:
        if not isinstance(kf, dict) or "motif" not in kf or "motif_params" not in kf or "palette" not in kf:
            raise InvalidInputError("keyframes must be procedural params dicts (params.build_params)")
    if not isinstance(frames, int) or frames < 1:
        raise InvalidInputError(f"frames must be a positive integer, not {frames!r}")
    if motion not in MOTIONS:
        raise InvalidInputError(f"unknown motion {motion!r}; choose one of {', '.join(MOTIONS)}")
    if drive is not None:
        if len(drive) != frames:
            raise InvalidInputError(f"drive has {len(drive)} entries for {frames} frames")
        for d in drive:
            if not 0.0 <= float(d.get("pulse", 0.0)) <= 1.0:
                raise InvalidInputError(f"drive pulse must be in 0..1, not {d.get('pulse')!r}")


def _shots(frames: int, drive: list[dict] | None, keyframes: int, loop: bool) -> list[tuple[int, int, int]]:
    """(first frame, length, keyframe index) of each shot: a cut starts the next keyframe's shot; in a
    loop the last shot is keyframe 0's unless it walks back there (see `frame_params`)."""
    starts = [0] + [i for i in range(1, frames) if drive is not None and drive[i].get("cut")]
    shots = []
    for j, s in enumerate(starts):
        end = starts[j + 1] if j + 1 < len(starts) else frames
        shots.append((s, end - s, j % keyframes))
    return shots


def frame_params(keyframes: list[dict], frames: int, *, motion: str = "auto", loop: bool = False,
                 drive: list[dict] | None = None) -> list[dict]:
    """One params dict per frame (see the module docstring); render each with `render_frame`."""
    _check(keyframes, frames, motion, drive)
    kfs = [copy.deepcopy(k) for k in keyframes]
    n_k = len(kfs)
    fractal0 = kfs[0]["motif"] == "fractal"
    if motion == "auto":
        motion, gentle = ("zoom" if fractal0 else "walk"), True
    else:
        gentle = False
    if all(k["motif"] == "fractal" for k in kfs):
        for later in kfs[1:]:
            later["seed"] = kfs[0]["seed"]  # a fractal's seed only keys the grain: keep it still

    shots = _shots(frames, drive, n_k, loop)
    # frames per keyframe-to-keyframe segment of a walk
    seg = frames / n_k if loop else (frames - 1) / max(1, n_k - 1)
    depth = min(MAX_ZOOM_DEPTH, ZOOM_RATE * (frames / 2 if loop else frames))
    targets: dict[int, tuple[float, float]] = {}
    out: list[dict] = []
    for j, (start, length, k) in enumerate(shots):
        last = j == len(shots) - 1
        if loop and last and motion != "walk":
            k = 0  # the last shot flows into frame 0
        for i in range(start, start + length):
            tau = i - start
            if motion == "walk" and n_k > 1:
                if loop and last:
                    u = k + (n_k - k) * (tau / length)  # arrive back at keyframe 0 at frame N
                else:
                    u = k + tau / seg
                p = _walk(kfs, u, min(MORPH_SWING, MORPH_RATE * seg))
            else:
                p = copy.deepcopy(kfs[k])
                morph = 0.0
                if motion == "zoom":
                    z = (depth * 0.5 * (1 - math.cos(2 * math.pi * i / frames)) if loop
                         else ZOOM_RATE * i)
                    if p["motif"] == "fractal":
                        if k not in targets:
                            targets[k] = zoom_target(p["motif_params"], depth)
                        p["motif_params"] = _zoom_view(p["motif_params"], targets[k], min(z, depth), depth)
                    else:
                        prog = z / depth if depth > 0 else 0.0
                        _camera(p, 1.0 + CAMERA_ZOOM * prog, 0.06 * math.sin(math.pi * prog),
                                0.04 * math.sin(2 * math.pi * prog))
                        morph = MORPH_RATE * (frames / (2 * math.pi) * math.sin(2 * math.pi * i / frames) if loop else i)
                if "morph" in p["motif_params"] and morph:
                    p["motif_params"]["morph"] = float(p["motif_params"]["morph"] + morph)
            phase = 0.0
            if motion == "cycle":
                phase = i / frames if loop else i / max(1, frames - 1)
            elif gentle:
                phase = GENTLE_CYCLE * math.sin(2 * math.pi * i / frames)
            d = drive[i] if drive is not None else {}
            _apply_colour(p, phase, float(d.get("shift", 0.0)), cycle=motion == "cycle")
            _apply_pulse(p, float(d.get("pulse", 0.0)), float(d.get("energy", 0.0)))
            p["frame"] = i
            out.append(p)
    _settle_margins(out)
    return out


def _walk(kfs: list[dict], u: float, swing: float) -> dict:
    """Params at keyframe position u (cyclic: segment a goes from keyframe a to a+1 mod K)."""
    n_k = len(kfs)
    a = int(math.floor(u + 1e-9)) % n_k
    f = _ease(u - math.floor(u + 1e-9))
    b = (a + 1) % n_k
    ka, kb = kfs[a], kfs[b]
    if f <= 0.0 or ka is kb:
        return copy.deepcopy(ka)
    if not _structurally_same(ka, kb):
        p = copy.deepcopy(ka)
        p["blend"] = {"params": copy.deepcopy(kb), "weight": f}
        return p
    pa = _mix(ka, kb, f, "a")
    pb = _mix(ka, kb, f, "b")
    if ka["motif"] == "fractal":
        ma, mb = ka["motif_params"], kb["motif_params"]
        c, w = _view_path(complex(*ma["center"]), ma["width"], complex(*mb["center"]), mb["width"], f)
        for side in (pa, pb):
            side["motif_params"]["center"] = [c.real, c.imag]
            side["motif_params"]["width"] = w
            side["motif_params"]["max_iter"] = int(max(ma["max_iter"], mb["max_iter"]))
    swing *= math.sin(math.pi * f)  # noise lattices drift mid-segment, rest at keyframes
    for side in (pa, pb):
        if "morph" in side["motif_params"]:
            side["motif_params"]["morph"] = float(side["motif_params"]["morph"] + swing)
    if pa == pb:
        return pa
    weight = _ease((f - 0.25) / 0.5)
    if weight <= 0.0:
        return pa
    if weight >= 1.0:
        return pb
    pa["blend"] = {"params": pb, "weight": weight}
    return pa


def _sides(p: dict) -> list[dict]:
    return [p] + ([p["blend"]["params"]] if "blend" in p else [])


def _camera(p: dict, zoom: float, dx: float, dy: float) -> None:
    cam = p.setdefault("camera", {"zoom": 1.0, "pan": [0.0, 0.0]})
    cam["zoom"] = float(cam["zoom"] * zoom)
    cam["pan"] = [float(cam["pan"][0] + dx), float(cam["pan"][1] + dy)]


def _apply_colour(p: dict, phase: float, shift: float, cycle: bool) -> None:
    for side in _sides(p):
        if side["motif"] == "fractal":
            mp = side["motif_params"]
            mp["offset"] = float(mp["offset"] + phase + shift)
        else:
            turns = phase + HUE_SWING * math.sin(2 * math.pi * shift)
            side["palette"] = _hue_rotate(side["palette"], turns)


def _apply_pulse(p: dict, pulse: float, energy: float) -> None:
    if pulse <= 0 and energy <= 0:
        return
    for side in _sides(p):
        if energy > 0:
            side["light"] = round(float(side["light"]) + ENERGY_LIGHT * energy, 4)
        if pulse > 0 and side["motif"] == "fractal":
            side["motif_params"]["width"] = float(side["motif_params"]["width"] * math.exp(-PULSE_ZOOM * pulse))
    if pulse > 0 and p["motif"] != "fractal":
        _camera(p, 1.0 + PULSE_CAMERA * pulse, 0.0, 0.0)


def _settle_margins(frames: list[dict]) -> None:
    """Every camera frame renders at one oversize (the video's largest zoom), so the drawn picture is
    the same composition on every frame and only the crop moves."""
    zooms = [p["camera"]["zoom"] for p in frames if "camera" in p]
    if not zooms:
        return
    margin = round(max(zooms) + 0.02, 4)
    for p in frames:
        p.setdefault("camera", {"zoom": 1.0, "pan": [0.0, 0.0]})["margin"] = margin


# ----------------------------------------------------------------------------------------- rendering
def _to_linear(img: Image.Image) -> np.ndarray:
    return srgb_to_linear(np.asarray(img, np.float32) / 255.0)


def render_frame(p: dict[str, Any], width: int, height: int) -> Image.Image:
    """One frame: the params' picture, crossfaded (`blend`) and cropped by the camera as they say."""
    cam = p.get("camera")
    if cam is not None:
        margin = float(cam["margin"])
        rw, rh = int(math.ceil(width * margin)), int(math.ceil(height * margin))
        base = _draw(p, rw, rh)
        # output pixel (x, y) -> source pixel: the source's scale is sqrt(rw*rh / (w*h)) of the frame
        s = math.sqrt(rw * rh / (width * height))
        a = s / float(cam["zoom"])
        cx = rw / 2 + float(cam["pan"][0]) * width * s
        cy = rh / 2 + float(cam["pan"][1]) * height * s
        # keep the crop inside the render (pan is limited by the zoom's slack)
        half_w, half_h = width * a / 2, height * a / 2
        cx = min(max(cx, half_w), rw - half_w)
        cy = min(max(cy, half_h), rh - half_h)
        coeffs = (a, 0.0, cx - half_w, 0.0, a, cy - half_h)
        return base.transform((width, height), Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC)
    return _draw(p, width, height)


def _draw(p: dict[str, Any], width: int, height: int) -> Image.Image:
    img = P.render_params(p, width, height, False)
    blend = p.get("blend")
    if not blend:
        return img
    other = P.render_params(blend["params"], width, height, False)
    w = float(blend["weight"])
    mixed = _to_linear(img) * (1 - w) + _to_linear(other) * w
    return Image.fromarray(np.clip(linear_to_srgb(mixed) * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
