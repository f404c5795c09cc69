"""Flow fields: thousands of particles tracing a noise vector field, accumulated as soft strokes.

The field is periodic value noise (so tiling is native: particles and their deposits wrap around),
used either as an angle ("noise" field: meanders) or through its curl (divergence-free: streams that
never bunch up), blended with a prevailing direction for "wind". Particles start on a jittered grid
for even coverage, trace the field in lock-step (vectorised over particles), and deposit colour with
a taper at both ends. Three looks: `silk` (additive light on dark), `ink` (overlapping translucent
strokes on paper, after Tyler Hobbs) and `ribbons` (fewer, wider, shaded strokes).
"""

from __future__ import annotations

import numpy as np

from echo_pipeline.render.backends.procedural import noise
from echo_pipeline.render.backends.procedural.finish import blur, downsample
from echo_pipeline.render.backends.procedural.motifs import Canvas, blend
from echo_pipeline.render.backends.procedural.palettes import DARK_GROUND

STYLES = ("silk", "ink", "ribbons")
DARK_ONLY = {"noir", "neon", "neon noir", "monochrome", "vaporwave"}


def make(rng: np.random.Generator, canvas: Canvas, kinds: list[str]) -> dict:
    style = "silk" if "silk" in kinds else "ink" if "ink" in kinds else str(rng.choice(STYLES, p=[0.4, 0.38, 0.22]))
    field = str(rng.choice(("noise", "curl"), p=[0.5, 0.5]))
    drift = float(rng.uniform(0.0, 0.35))
    if "wind" in kinds:
        drift, field = float(rng.uniform(0.9, 1.6)), "curl"
    elif "stream" in kinds:
        drift = float(rng.uniform(0.5, 0.9))
    elif "swirl" in kinds:
        drift, field = 0.0, "curl"
    return {
        "style": style,
        "field": field,
        "freq": float(rng.uniform(1.2, 3.2)),
        "octaves": int(rng.integers(2, 4)),
        "turns": float(rng.uniform(0.6, 1.6)),
        "direction": float(rng.uniform(-0.5, 0.5) + (np.pi if rng.random() < 0.5 else 0.0)),
        "drift": drift,
        "phase": [float(rng.uniform(0, 1)), float(rng.uniform(0, 1))],
        "morph": 0.0,
        "spacing": float(rng.uniform(5.0, 13.0) if style != "ribbons" else rng.uniform(12.0, 20.0)),
        "length": float(rng.uniform(0.25, 0.6)),  # mean stroke length, in units of the mean side
        "width": float(rng.uniform(0.5, 1.1) if style == "silk" else rng.uniform(0.9, 2.0) if style == "ink"
                       else rng.uniform(3.0, 6.0)),
        "colour_freq": float(rng.uniform(0.8, 2.2)),
        "colour_shift": float(rng.uniform(0, 1)),
        "paper": bool(rng.random() < 0.4),
        "space": float(rng.uniform(0.05, 0.4)),
    }


def vary(params: dict, rng: np.random.Generator, amount: float, canvas: Canvas, kinds: list[str]) -> dict:
    """Continuous moves: the noise lattice morphs and slides, the mixing parameters interpolate."""
    if amount <= 0:
        return dict(params)
    fresh = make(rng, canvas, kinds)
    out = blend(params, fresh, amount, rng)
    out["style"] = params["style"] if rng.random() > amount * 0.6 else fresh["style"]
    out["field"] = params["field"] if rng.random() > amount * 0.5 else fresh["field"]
    out["paper"] = params["paper"] if rng.random() > amount * 0.5 else fresh["paper"]
    out["morph"] = float(params.get("morph", 0.0) + rng.normal(0, 1.1 * amount))
    out["phase"] = [float(p + rng.normal(0, 0.08 * amount)) for p in params["phase"]]
    return out


def periodic(params: dict, canvas: Canvas) -> tuple[bool, bool]:
    return True, True


def _field(params: dict, canvas: Canvas, gh: int, gw: int):
    """Unit vector field (vy, vx) on a (gh, gw) grid, periodic."""
    unit = float(np.sqrt(gh * gw))
    f = noise.fbm2(gh, gw, params["freq"], params["octaves"], canvas.seed + [11], unit=unit, gain=0.45,
                   phase=tuple(params["phase"]), morph=params["morph"])
    if params["field"] == "curl":
        dy = (np.roll(f, -1, 0) - np.roll(f, 1, 0)) * 0.5
        dx = (np.roll(f, -1, 1) - np.roll(f, 1, 1)) * 0.5
        vy, vx = dx, -dy
        mag = np.sqrt(vx * vx + vy * vy)
        mag = np.maximum(mag, np.percentile(mag, 50) * 0.3) + 1e-9
        vy, vx = vy / mag, vx / mag
    else:
        ang = params["direction"] + f * params["turns"] * np.pi * 2.0
        vy, vx = np.sin(ang), np.cos(ang)
    d = params["drift"]
    vy = vy + d * np.sin(params["direction"])
    vx = vx + d * np.cos(params["direction"])
    mag = np.sqrt(vx * vx + vy * vy) + 1e-9
    return (vy / mag).astype(np.float32), (vx / mag).astype(np.float32)


def _bilinear(field: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Wrap-around bilinear lookup in a complex field (both vector components in one gather)."""
    gh, gw = field.shape
    y0 = np.floor(y)
    x0 = np.floor(x)
    fy = (y - y0).astype(np.float32)
    fx = (x - x0).astype(np.float32)
    i0 = y0.astype(np.int64) % gh
    j0 = x0.astype(np.int64) % gw
    i1 = (i0 + 1) % gh
    j1 = (j0 + 1) % gw
    flat = field.reshape(-1)
    top = flat[i0 * gw + j0] * (1 - fx) + flat[i0 * gw + j1] * fx
    bot = flat[i1 * gw + j0] * (1 - fx) + flat[i1 * gw + j1] * fx
    return top * (1 - fy) + bot * fy


def draw(params: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    pal = canvas.palette
    rng = np.random.default_rng(canvas.seed + [12])
    ss = 2 if h * w <= 1100 * 1100 else 1
    H, W = h * ss, w * ss
    scale = canvas.unit / 512.0

    # field on a grid at ~1/2 output resolution (it is smooth), as complex vx + i*vy; grid units per
    # pixel are kept separately per axis so the field's period is exactly the image's (tiling)
    gh, gw = max(8, h // 2), max(8, w // 2)
    fy_s, fx_s = np.float32(gh / h), np.float32(gw / w)
    vy_f, vx_f = _field(params, canvas, gh, gw)
    field = (vx_f + 1j * vy_f).astype(np.complex64)

    # seeds on a jittered grid: even coverage, no clumps
    spacing = params["spacing"] * scale / np.sqrt(canvas.detail)
    ny, nx = max(2, int(h / spacing)), max(2, int(w / spacing))
    gy, gx = np.meshgrid((np.arange(ny) + 0.5) / ny, (np.arange(nx) + 0.5) / nx, indexing="ij")
    py = ((gy.ravel() + rng.uniform(-0.5, 0.5, gy.size) / ny) * h).astype(np.float32)
    px = ((gx.ravel() + rng.uniform(-0.5, 0.5, gx.size) / nx) * w).astype(np.float32)
    n = py.size

    step = 2.0 * max(scale, 0.25)
    mean_steps = params["length"] * canvas.unit / step
    life = np.clip(rng.gamma(3.0, mean_steps / 3.0, n), 4, None).astype(np.float32)
    steps = int(min(float(np.percentile(life, 97)), 320))
    life = np.minimum(life, steps)
    tone_field = noise.fbm2(gh, gw, params["colour_freq"], 2, canvas.seed + [13], unit=float(np.sqrt(gh * gw)))
    tone = 0.5 + 0.5 * noise.sample(tone_field, py * fy_s, px * fx_s)
    tone = ((tone + rng.normal(0, 0.06, n) + params["colour_shift"]) % 1.0).astype(np.float32)
    pweight = rng.uniform(0.55, 1.0, n).astype(np.float32)
    # negative space: a slow envelope thins the strokes out in some regions (composition, and the
    # dark ground of neon/noir palettes stays visible)
    space = float(params.get("space", 0.25))
    if pal.name in DARK_GROUND:
        space = max(space, 0.35)  # neon/noir: keep plenty of dark ground
    env_field = noise.fbm2(gh, gw, 1.3, 2, canvas.seed + [15], unit=float(np.sqrt(gh * gw)))
    env = noise.sample(env_field, py * fy_s, px * fx_s)
    thr = float(np.quantile(env, space))  # `space` = the share of seeds that stay empty
    pweight *= np.clip((env - thr) / (0.35 * (float(env.max()) - thr) + 1e-6), 0.0, 1.0) ** 1.5

    # trace all particles in lock-step (midpoint rule: smooth curves, two lookups per step)
    pos = np.empty((steps, n), np.complex64)
    p = (px + 1j * py).astype(np.complex64)
    half = np.float32(0.5 * step)
    for i in range(steps):
        pos[i] = p
        v = _bilinear(field, p.imag * fy_s, p.real * fx_s)
        q = p + v * half
        v = _bilinear(field, q.imag * fy_s, q.real * fx_s)
        p = p + v * np.float32(step)

    k = np.arange(steps, dtype=np.float32)[:, None]
    s = np.clip(k / life[None, :], 0.0, 1.0)
    taper = np.maximum(np.sin(np.pi * s), 0.0) ** 0.6 * (k <= life[None, :])
    wgt = (taper * pweight[None, :]).astype(np.float32)
    # sub-steps between trace points (continuous lines at the deposit resolution); deposit the weight
    # and weight*tone: a pixel's stroke colour is the palette at its mean tone
    subs = 2
    flats, ws, ts = [], [], []
    for j in range(subs):
        a = np.float32(j / subs)
        pj = pos if j == 0 else pos[:-1] * (1 - a) + pos[1:] * a
        wj = wgt if j == 0 else wgt[:-1] * (1 - a) + wgt[1:] * a
        sel = wj > 0.01
        pj = pj[sel]
        yi = (pj.imag * ss).astype(np.int64)
        xi = (pj.real * ss).astype(np.int64)
        wj = wj[sel]
        tj = np.broadcast_to(tone[None, :], sel.shape)[sel]
        if canvas.tiling:
            yi %= H
            xi %= W
        else:
            ok = (yi >= 0) & (yi < H) & (xi >= 0) & (xi < W) & (pj.imag >= 0) & (pj.real >= 0)
            yi, xi, wj, tj = yi[ok], xi[ok], wj[ok], tj[ok]
        flats.append(yi * W + xi)
        ws.append(wj)
        ts.append(tj * wj)
    flat = np.concatenate(flats)
    acc_w = np.bincount(flat, weights=np.concatenate(ws), minlength=H * W).reshape(H, W).astype(np.float32)
    acc_t = np.bincount(flat, weights=np.concatenate(ts), minlength=H * W).reshape(H, W).astype(np.float32)

    style = params["style"]
    width = params["width"] * scale * ss
    sigma = max(0.5 * ss, width * 0.45)
    both = downsample(blur(np.stack([acc_w, acc_t], -1), sigma, canvas.tiling), ss)  # compose at output size
    acc_w, acc_t = both[..., 0], both[..., 1]
    tone_px = acc_t / np.maximum(acc_w, 1e-6)
    # one stroke deposits subs/(step*ss) weight per deposit pixel of length, spread over ~2.5 sigma
    density = acc_w * ((step * ss / subs) * (2.5 * sigma))

    dark_bg = pal.name in DARK_ONLY or style == "silk" or not (params["paper"] or pal.light)
    if dark_bg:
        colour = pal.at(0.35 + 0.65 * tone_px)
        bg = pal.bg * 0.9 + pal.at(0.1) * 0.1
        ygrad = np.linspace(1.0, 0.65, h, dtype=np.float32)[:, None]
        base = bg[None, None, :] * ygrad[..., None]
        light = 1.0 - np.exp(-density * (0.3 if style == "silk" else 0.7))
        img = base * (1 - 0.9 * light[..., None]) + colour * (light[..., None] * (1.15 if style == "silk" else 1.0))
    else:
        colour = pal.at((0.6 if pal.light else 0.78) * tone_px)  # darker inks on a light ground
        # paper tinted by the palette's lightest colour: cream for warm palettes, icy for cool ones
        paper = pal.bg if pal.light else (pal.at(0.97) * 0.75 + np.array([0.80, 0.72, 0.60], np.float32) * 0.1)
        grain = noise.fbm2(h, w, 60.0, 2, canvas.seed + [14])
        base = paper[None, None, :] * (1.0 + 0.03 * grain)[..., None]
        alpha = 1.0 - np.exp(-density * 1.2)
        img = base * (1 - alpha[..., None]) + colour * alpha[..., None]
    if style == "ribbons":
        # shade from the density's gradient: a hint of rounded, lit ribbons
        gy, gx = np.gradient(density)
        lam = np.clip(0.55 - (gx - gy) * 1.5 * ss, 0.15, 1.25)
        img = img * (0.7 + 0.3 * lam)[..., None]
    return img.astype(np.float32)
