"""Noise landscapes: layered ridges under a sky, with atmospheric perspective.

Each ridge line is 1-D fbm (periodic across the width, so tiles join left-right). Layers are drawn
far to near; farther layers are mixed towards the haze colour (aerial perspective) and every layer
fades into mist towards its foot, which is what sells depth with flat silhouettes. Ridge edges are
anti-aliased analytically: coverage from the signed distance to the ridge, using its slope.
Vertical sizes follow the "scene scale" min(height, 1.2 * width), so tall and wide frames keep the
mountains in proportion instead of stretching them.
"""

from __future__ import annotations

import numpy as np

from echo_pipeline.render.backends.procedural import noise
from echo_pipeline.render.backends.procedural.finish import blur, splat
from echo_pipeline.render.backends.procedural.motifs import Canvas, blend

NIGHT_PALETTES = {"noir", "neon noir", "neon", "monochrome"}
RETRO_PALETTES = {"vaporwave", "neon"}


def make(rng: np.random.Generator, canvas: Canvas, kinds: list[str]) -> dict:
    n_layers = int(rng.integers(4, 7))
    dunes = "dunes" in kinds
    layers = []
    for i in range(n_layers):
        near = i / max(1, n_layers - 1)
        layers.append({
            "freq": float(rng.uniform(1.0, 2.6) * (1.0 + 0.6 * near) * (0.6 if dunes else 1.0)),
            "amp": float(rng.uniform(0.10, 0.22) * (1.0 - 0.35 * near)),
            "gain": float(rng.uniform(0.32, 0.42) if dunes else rng.uniform(0.45, 0.58)),
            "ridged": bool(not dunes and rng.random() < 0.45 and near < 0.8),
            "phase": float(rng.uniform(0, 1)),
        })
    night = "night" in kinds
    lake = bool("lake" in kinds or rng.random() < 0.22)  # a mirror lake in front
    return {
        "style": "dunes" if dunes else "lake" if lake else "mountains",
        "layers": layers,
        "horizon": float(rng.uniform(0.42, 0.6)),
        "spread": float(rng.uniform(0.28, 0.42)),  # vertical span from the farthest to the nearest layer
        "sun_x": float(rng.uniform(0.22, 0.78)),
        "sun_y": float(rng.uniform(0.08, 0.3)),  # above the horizon, in scene scales
        "sun_r": float(rng.uniform(0.045, 0.09)),
        "night": night,
        "sun": "sun" in kinds or not night,
        "lake": lake,
        "trees": bool("trees" in kinds or rng.random() < 0.2),
        "mist": float(rng.uniform(0.35, 0.75)),
        "sky_lo": float(rng.uniform(0.12, 0.3)),
        "sky_hi": float(rng.uniform(0.78, 0.95)),
        "stars": bool(night or rng.random() < 0.15),
        "retro": bool(rng.random() < 0.6),
        "dunes": dunes,
    }


def vary(params: dict, rng: np.random.Generator, amount: float, canvas: Canvas, kinds: list[str]) -> dict:
    if amount <= 0:
        return dict(params)
    fresh = make(rng, canvas, kinds)
    out = blend(params, fresh, amount, rng)
    if len(fresh["layers"]) != len(params["layers"]):
        out["layers"] = params["layers"] if rng.random() > amount else fresh["layers"]
    for key in ("night", "sun", "dunes"):
        out[key] = params[key]
    for key in ("night", "sun", "trees", "lake"):
        if key in kinds:
            out[key] = True
    out["style"] = "dunes" if out["dunes"] else "lake" if out["lake"] else "mountains"
    return out


def periodic(params: dict, canvas: Canvas) -> tuple[bool, bool]:
    return False, True


def fog_profile(params: dict, canvas: Canvas) -> np.ndarray:
    """Mist gathers low: used by the fog effect."""
    y = np.linspace(0, 1, canvas.height, dtype=np.float32)
    return np.clip((y - 0.25) / 0.6, 0, 1) ** 0.8


def _ridge(layer: dict, idx: int, canvas: Canvas, S: float, base: float, detail: float) -> np.ndarray:
    w = canvas.width
    octaves = int(round(5 + 2 * (detail - 1)))
    r = noise.fbm1(w, layer["freq"] * w / S, max(3, octaves), canvas.seed + [31, idx], gain=layer["gain"],
                   phase=layer["phase"], ridged=layer["ridged"])
    if layer["ridged"]:
        r = r * 0.8 + 0.2
    return (base - layer["amp"] * S * (r + 0.6)).astype(np.float32)


def draw(params: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    pal = canvas.palette
    S = float(min(h, 1.2 * w))  # scene scale
    px_scale = max(S / 512.0, 0.25)
    night = params["night"] or canvas.light < -0.5 or pal.name in NIGHT_PALETTES
    y = (np.arange(h, dtype=np.float32) + 0.5)[:, None]
    x = (np.arange(w, dtype=np.float32) + 0.5)[None, :]
    horizon = h - S * (1.0 - params["horizon"])  # foot of the farthest layer, in pixels

    # ---- sky: palette gradient, darker at night, with a warm glow around the sun
    lo, hi = params["sky_lo"], params["sky_hi"]
    if night:
        lo, hi = lo * 0.4, hi * 0.6
    ty = np.clip((y - (horizon - S * 0.9)) / (S * 0.9), 0, 1) ** 1.3
    sky = pal.at(lo + (hi - lo) * ty) * np.ones((1, w, 1), np.float32)
    if pal.name in ("forest", "earthy"):
        sky = sky * 0.6 + sky.mean(axis=-1, keepdims=True) * 0.4  # a green or brown sky reads wrong: mute it
    sun_cx = params["sun_x"] * w
    sun_cy = horizon - params["sun_y"] * S
    sun_r = params["sun_r"] * S
    dx = x - sun_cx
    if canvas.tiling:
        dx = w / np.pi * np.sin(np.pi * dx / w)
    d = np.sqrt(dx * dx + (y - sun_cy) ** 2)
    sun_col = pal.at(0.97) if not night else np.array([0.85, 0.87, 0.9], np.float32) * 0.9
    glow_col = pal.at(0.85)
    if params["sun"] or night:
        glow = 0.55 * np.exp(-d / (sun_r * 2.2)) + 0.35 * np.exp(-d / (sun_r * 9))
        sky = sky + glow[..., None] * glow_col * (0.35 if night else 1.0)
    if params["stars"] or night:
        rng = np.random.default_rng(canvas.seed + [32])
        count = int(w * h * 0.0015)
        sy, sx = rng.uniform(0, horizon, count), rng.uniform(0, w, count)
        acc = np.zeros((h, w), np.float32)
        splat(acc, sy, sx, rng.pareto(2.5, count).astype(np.float32) * 0.5, canvas.tiling)
        acc = blur(acc, 0.6 * px_scale, canvas.tiling)
        fade = np.clip((horizon - y) / (S * 0.4), 0, 1)
        sky = sky + (acc * fade * (1.0 if night else 0.4))[..., None] * np.float32(2.5)
    img = sky
    if params["sun"] or night:
        disc = np.clip(sun_r - d + 0.5, 0, 1)
        if params["retro"] and pal.name in RETRO_PALETTES and not night:
            # synthwave sun: horizontal slits that widen towards the bottom
            v = np.clip((y - (sun_cy - sun_r)) / (2 * sun_r), 0, 1)
            slit = (np.sin(v * 28.0) * 0.5 + 0.5) < (v - 0.35) * 1.4
            disc = disc * (1 - slit)
            sun_col = pal.at(0.9 - 0.45 * v)[..., None, :].reshape(-1, 1, 3) * np.ones((1, w, 1), np.float32)
        elif night:
            # moon: a little shading so it is a sphere, not a disc
            sun_col = sun_col * (0.85 + 0.15 * np.clip(1 - ((x - sun_cx + sun_r * 0.3) ** 2 + (y - sun_cy) ** 2)
                                                       / (sun_r * sun_r * 1.6), 0, 1))[..., None]
        img = img * (1 - disc[..., None]) + sun_col * disc[..., None]

    # ---- layers, far to near
    layers = params["layers"]
    n = len(layers)
    haze = pal.at(min(hi + 0.02, 1.0)) * (0.55 if night else 1.0)
    if params["sun"] and not night:
        haze = haze * 0.75 + glow_col * 0.25
    water = horizon + params["spread"] * S * 0.62 if params["lake"] else None
    mist = params["mist"]
    for i, layer in enumerate(layers):
        near = i / max(1, n - 1)
        if water is not None and i == n - 1:
            break  # the nearest layer would stand in the lake
        base = horizon + params["spread"] * S * near ** 1.15
        ridge = _ridge(layer, i, canvas, S, base, canvas.detail)
        slope = np.gradient(ridge)
        dist = (y - ridge[None, :]) / np.sqrt(1.0 + slope[None, :] ** 2)
        cov = np.clip(dist + 0.5, 0, 1)
        # aerial perspective: far layers are mostly haze, near ones the palette's dark end
        depth = 0.25 + 0.75 * near ** 1.2
        body = pal.at(0.42 - 0.38 * near) * (0.45 if night else 1.0)
        col = haze * (1 - depth) + body * depth
        # valley mist: each layer fades towards haze below its mean crest line (a horizontal band, so
        # it reads as fog lying in the valley, not as streaks hanging from the ridge)
        crest = float(ridge.mean())
        below = np.clip((y - crest) / (base - crest + S * 0.08), 0, 1)
        m = (mist * (1 - 0.8 * near) * below ** 1.6)[..., None]
        # rim light on slopes that face the sun
        facing = np.clip(-slope * np.sign(ridge * 0 + (np.arange(w) - sun_cx)), 0, 2)[None, :]
        rim = np.exp(-np.maximum(dist, 0) / (2.5 * px_scale)) * np.clip(facing, 0, 1) * (0.0 if night else 0.35)
        layer_col = col[None, None, :] * (1 - m) + haze[None, None, :] * m + rim[..., None] * glow_col
        if near > 0.6:
            tex = noise.fbm2(h, w, 10.0, 3, canvas.seed + [33, i])
            layer_col = layer_col * (1.0 + 0.05 * tex)[..., None]
        img = img * (1 - cov[..., None]) + layer_col * cov[..., None]
        if params["trees"] and i == n - 1 - (1 if water is not None else 0) and i > 0:
            img = _trees(img, ridge, col * 0.8, canvas, S, i)

    if water is not None:
        img = _lake(img, int(water), canvas, pal, S, haze)
    return img.astype(np.float32)


def _trees(img, ridge, colour, canvas, S, idx):
    """Pine silhouettes along a ridge: three offset rows of triangles with analytic edges."""
    h, w = img.shape[:2]
    y = (np.arange(h, dtype=np.float32) + 0.5)[:, None]
    k = np.arange(w, dtype=np.float32)
    top = np.full(w, np.inf, np.float32)
    spacing = max(4.0, 0.03 * S)
    for row in range(3):
        shift = row * spacing / 3.0
        cell = np.floor((k + shift) / spacing)
        rnd = noise.hash01(cell.astype(np.int64), idx, row, canvas.seed[0])
        height = (0.03 + 0.06 * rnd) * S * (rnd > 0.2)
        cx = (cell + 0.5) * spacing - shift + (noise.hash01(cell.astype(np.int64), row, 7) - 0.5) * spacing * 0.3
        half_w = np.maximum(height * 0.2, 1.0)
        profile = height * np.clip(1 - np.abs(k - cx) / half_w, 0, 1)
        top = np.minimum(top, np.where(profile > 0, ridge - profile + 0.02 * S, np.inf))
    top = np.minimum(top, ridge)
    slope = np.abs(np.gradient(np.where(np.isfinite(top), top, ridge)))
    cov = np.clip((y - top[None, :]) / np.sqrt(1 + np.minimum(slope, 8.0)[None, :] ** 2) + 0.5, 0, 1)
    return img * (1 - cov[..., None]) + colour * cov[..., None]


def _lake(img, water, canvas, pal, S, haze):
    """Mirror everything above the waterline, rippled and dimmed."""
    h, w = img.shape[:2]
    if water >= h - 1:
        return img
    rows = np.arange(water, h)
    depth = (rows - water).astype(np.float32)
    src = np.clip(water - 1 - depth * 1.0, 0, water - 1).astype(np.int64)
    ripple = (np.sin(depth * 0.9 / max(S / 512, 0.3)) * (1.0 + depth / (S * 0.05)) * 0.8).astype(np.float32)
    x = np.arange(w, dtype=np.float32)
    xs = (x[None, :] + ripple[:, None]).astype(np.float32)
    x0 = np.floor(xs).astype(np.int64)
    f = (xs - x0)[..., None]
    reflected = img[src[:, None], np.clip(x0, 0, w - 1)] * (1 - f) + img[src[:, None], np.clip(x0 + 1, 0, w - 1)] * f
    reflected = blur(reflected, (1.5, 0.6), canvas.tiling)
    fade = np.clip(depth / (h - water + 1), 0, 1)[:, None, None]
    water_col = pal.at(0.15)
    out = img.copy()
    out[water:] = reflected * (0.72 - 0.3 * fade) + water_col * (0.2 + 0.3 * fade) + haze * 0.05
    # a thin bright line where the water meets the land
    out[water:water + 1] = out[water:water + 1] * 0.6 + haze * 0.4
    return out
