"""Nebulae and galaxies: domain-warped noise gas, dust lanes and star fields.

Gas density is fbm sampled at coordinates displaced by two other fbm fields (Inigo Quilez's domain
warping), which turns round noise blobs into the folded, filamentary shapes of real nebulae. Two gas
layers take colours from different parts of the palette; a ridged-noise dust layer absorbs light in
front of them; stars come in three depth layers, the brightest with a glow and diffraction spikes.
All noise is periodic and stars wrap, so tiling is native (the galaxy, a centred subject, is not).
"""

from __future__ import annotations

import numpy as np

from echo_pipeline.render.backends.procedural import noise
from echo_pipeline.render.backends.procedural.finish import blur, splat
from echo_pipeline.render.backends.procedural.motifs import Canvas, blend


def make(rng: np.random.Generator, canvas: Canvas, kinds: list[str]) -> dict:
    galaxy = "galaxy" in kinds and not canvas.tiling
    return {
        "style": "galaxy" if galaxy else "nebula",
        "freq": float(rng.uniform(1.2, 2.6)),
        "warp": float(rng.uniform(0.7, 1.6)),
        "phase": [float(rng.uniform(0, 1)), float(rng.uniform(0, 1))],
        "morph": 0.0,
        "density": float(rng.uniform(0.12, 0.42)),  # threshold: higher = sparser gas
        "dust": float(rng.uniform(0.3, 0.8)),
        "second": float(rng.uniform(0.4, 1.0)),
        "tone": float(rng.uniform(0.0, 0.3)),
        "stars": float(rng.uniform(0.7, 1.3)),
        "arms": int(rng.integers(2, 5)),
        "twist": float(rng.uniform(1.6, 3.0)),
        "tilt": float(rng.uniform(0.45, 0.95)),
        "angle": float(rng.uniform(0, np.pi)),
    }


def vary(params: dict, rng: np.random.Generator, amount: float, canvas: Canvas, kinds: list[str]) -> dict:
    if amount <= 0:
        return dict(params)
    fresh = make(rng, canvas, kinds)
    out = blend(params, fresh, amount, rng)
    out["style"] = params["style"] if "galaxy" not in kinds else fresh["style"]
    out["arms"] = params["arms"] if rng.random() > amount else fresh["arms"]
    out["morph"] = float(params.get("morph", 0.0) + rng.normal(0, 1.0 * amount))
    return out


def periodic(params: dict, canvas: Canvas) -> tuple[bool, bool]:
    native = params["style"] != "galaxy"
    return native, native


def _gas(params, canvas, h, w):
    """Two warped gas densities and a dust field, each about [0, 1]."""
    unit = float(np.sqrt(h * w))
    f = params["freq"]
    ph = tuple(params["phase"])
    mo = params["morph"]
    octv = int(round(6 + canvas.detail))
    seed = canvas.seed
    qx = noise.fbm2(h, w, f * 0.8, 4, seed + [61], phase=ph, morph=mo)
    qy = noise.fbm2(h, w, f * 0.8, 4, seed + [62], phase=ph, morph=mo)
    base = noise.fbm2(h, w, f, octv, seed + [63], phase=ph, morph=mo)
    second = noise.fbm2(h, w, f * 1.4, octv, seed + [64], phase=ph, morph=mo)
    dust = noise.fbm2(h, w, f * 1.8, 5, seed + [65], phase=ph, morph=mo, ridged=True)
    Y, X = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    amp = params["warp"] * unit * 0.12
    g1 = noise.sample(base, Y + qy * amp, X + qx * amp)
    g2 = noise.sample(second, Y - qx * amp * 1.4, X + qy * amp * 1.4)
    dd = noise.sample(dust, Y + qx * amp * 0.8, X + qy * amp * 0.8)
    return g1, g2, dd, qx


def _stars(canvas, h, w, amount, rng, palette):
    """Star light (h, w, 3): faint dust of stars, brighter ones, and a few with spikes."""
    scale = max(np.sqrt(h * w) / 512.0, 0.35)
    out = np.zeros((h, w, 3), np.float32)
    wrap = canvas.tiling
    tints = [np.array([1.0, 1.0, 1.0], np.float32), palette.at(0.9) * 0.5 + 0.5, palette.at(0.6) * 0.4 + 0.6]
    for density, sigma, bright in ((0.004, 0.45, 0.5), (0.0006, 0.7, 1.2), (0.00005, 1.1, 3.5)):
        count = max(2, int(density * h * w * amount))
        acc = np.zeros((h, w), np.float32)
        ys, xs = rng.uniform(0, h, count), rng.uniform(0, w, count)
        wts = (rng.pareto(2.2, count) * 0.4 + 0.3).astype(np.float32)
        splat(acc, ys, xs, wts, wrap)
        if bright > 2:
            # diffraction spikes: thin crosses through the brightest stars
            length = 14.0 * scale
            t = np.linspace(-1, 1, max(9, int(length * 2)), dtype=np.float32)
            fall = (1 - np.abs(t)) ** 3 * 0.25
            for dy, dx in ((1, 0), (0, 1)):
                splat(acc, (ys[:, None] + dy * t * length).ravel(), (xs[:, None] + dx * t * length).ravel(),
                      (fall[None, :] * wts[:, None]).ravel(), wrap)
        layer = blur(acc, sigma * scale, wrap) * bright
        if bright > 1:
            layer = layer + blur(acc, 4.0 * sigma * scale, wrap) * bright * 0.15
        tint = tints[int(rng.integers(len(tints)))]
        out += layer[..., None] * tint
    return out


def draw(params: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    pal = canvas.palette
    rng = np.random.default_rng(canvas.seed + [66])
    g1, g2, dd, qx = _gas(params, canvas, h, w)
    if params["style"] == "galaxy":
        dens1, dens2 = _galaxy(params, canvas, g1, g2)
    else:
        # the threshold is a quantile, so the gas always covers the intended share of the frame
        # (a fixed threshold leaves some seeds nearly empty and floods others)
        coverage = float(np.clip(0.75 - params["density"], 0.3, 0.7))
        g = 0.5 + 0.5 * g1
        thr = float(np.quantile(g[::4, ::4], 1.0 - coverage))
        env = np.clip((g - thr) / max(1e-3, float(g.max()) - thr), 0, 1) ** 0.8
        # thin bright filaments along the noise's zero crossings, inside the gas envelope
        fil = np.clip(1 - np.abs(g2) * 2.2, 0, 1) ** 4 * np.clip(env * 2.5, 0, 1)
        dens1 = env ** 2.0 * 0.8 + fil * 0.45
        dens2 = np.clip((0.5 + 0.5 * g2 - thr - 0.15) / (1 - thr), 0, 1) ** 2.5 * params["second"] * env
    dust = np.clip(0.5 + 0.5 * dd, 0, 1) ** 3 * params["dust"]
    tone = params["tone"]
    # space stays dark even for light palettes (pastel): their darkest stop, deepened
    sky = pal.at(0.0) * 0.2 if pal.light else pal.bg * 0.5 + pal.at(0.05) * 0.5
    img = np.broadcast_to(sky.astype(np.float32), (h, w, 3)).copy()
    stars = _stars(canvas, h, w, params["stars"] * (0.7 + 0.3 * canvas.detail), rng, pal)
    # gas: emission coloured along the palette by density; the hue drifts with the warp field
    c1 = pal.at(np.clip(0.25 + tone + 0.55 * dens1 + 0.12 * qx, 0, 1))
    c2 = pal.at(np.clip(0.55 + tone + 0.4 * dens2 - 0.12 * qx, 0, 1))
    emission = c1 * (dens1 * 1.1)[..., None] + c2 * (dens2 * 0.9)[..., None]
    absorb = (1 - 0.85 * dust * np.clip(dens1 * 2.0 + 0.3, 0, 1))[..., None]
    img = img + stars * (1 - 0.6 * np.clip(dens1 + dens2, 0, 1))[..., None] * absorb
    img = img + emission * absorb
    # inner glow where the gas is densest
    core = blur(np.clip(dens1 + dens2 - 0.5, 0, None), 6.0 * max(canvas.unit / 512, 0.3), canvas.tiling)
    img = img + core[..., None] * pal.at(0.9) * 0.35
    return np.clip(img, 0, None).astype(np.float32)


def _galaxy(params, canvas, g1, g2):
    """Spiral density: logarithmic arms, an exponential disc and a bright core, roughened by gas."""
    h, w = canvas.height, canvas.width
    unit = min(h, w)
    y = (np.arange(h, dtype=np.float32) + 0.5 - h / 2)[:, None] / unit
    x = (np.arange(w, dtype=np.float32) + 0.5 - w / 2)[None, :] / unit
    ca, sa = np.cos(params["angle"]), np.sin(params["angle"])
    u = x * ca + y * sa
    v = (-x * sa + y * ca) / params["tilt"]
    r = np.sqrt(u * u + v * v) + 1e-4
    th = np.arctan2(v, u)
    arms = params["arms"]
    spiral = arms * (th - params["twist"] * np.log(r)) + 2.2 * g1
    wave = np.cos(spiral)
    disc = np.exp(-r / 0.2)
    arm = np.clip(0.5 + 0.5 * wave, 0, 1) ** 3
    lane = np.clip(0.5 + 0.5 * np.cos(spiral - 0.9), 0, 1) ** 10  # dust on the arms' inner edges
    clumps = np.clip(0.5 + 0.9 * g2, 0, 1.5)  # star-forming knots
    core = np.exp(-(r / 0.045) ** 2) + 0.4 * np.exp(-(r / 0.12) ** 2)
    dens1 = np.clip(disc * (0.12 + arm * clumps) * (1 - 0.8 * lane * (r > 0.05)) + core, 0, 1.5)
    dens2 = np.clip(disc * arm * clumps ** 2 * 0.7, 0, 1) * params["second"]
    return dens1, dens2
