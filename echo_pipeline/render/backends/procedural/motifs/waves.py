"""Waves: ripple interference, moiré and Chladni figures.

- `ripples`: circular waves from a few sources interfere; the summed height is lit as a glossy liquid
  surface (normals from the height gradient, diffuse + specular), coloured by height.
- `moire`: two or three gratings of rings or lines overlap; their beats make the moiré.
- `chladni`: standing-wave modes of a vibrating plate; "sand" collects on the nodal lines.

Thin lines are anti-aliased analytically: the distance to a line in *pixels* is the distance in
phase divided by the phase gradient, so a line has the same soft 1-px edge at any density, and where
lines crowd closer than ~2 px they fade to their average coverage instead of aliasing.
For tiling, distances are measured on the torus (a smooth periodic pseudo-distance) and gratings
use whole numbers of periods across the image, so every style is natively seamless.
"""

from __future__ import annotations

import numpy as np

from echo_pipeline.render.backends.procedural import noise
from echo_pipeline.render.backends.procedural.motifs import Canvas, blend

STYLES = ("ripples", "moire", "chladni")


def make(rng: np.random.Generator, canvas: Canvas, kinds: list[str]) -> dict:
    style = next((k for k in kinds if k in STYLES), None) or str(rng.choice(STYLES, p=[0.45, 0.3, 0.25]))
    n_src = int(rng.integers(2, 5))
    k0 = float(rng.uniform(3.5, 9.0))
    sources = [[float(rng.uniform(-0.8, 0.8)), float(rng.uniform(-0.8, 0.8)), k0 * float(rng.uniform(0.8, 1.25)),
                float(rng.uniform(0, 1)), float(rng.uniform(0.6, 1.0))] for _ in range(n_src)]
    # moiré: gratings of nearly equal frequency, so their beats are large, slow shapes
    f0 = float(rng.uniform(26, 42))
    gratings = []
    for i in range(int(rng.choice([2, 3], p=[0.7, 0.3]))):
        gratings.append({
            "type": str(rng.choice(("rings", "lines"), p=[0.7, 0.3])),
            "x": float(rng.uniform(-0.45, 0.45)), "y": float(rng.uniform(-0.45, 0.45)),
            "angle": float(rng.uniform(0, np.pi)), "freq": f0 * (1.0 if i == 0 else float(rng.uniform(0.9, 1.1))),
            "phase": float(rng.uniform(0, 1)),
        })
    n, m = sorted(rng.choice(np.arange(1, 9), size=2, replace=False).tolist())
    return {
        "style": style,
        "sources": sources,  # [x, y, cycles per unit, phase, amplitude]
        "falloff": float(rng.uniform(0.3, 1.5)),
        "light_angle": float(rng.uniform(0, 2 * np.pi)),
        "relief": float(rng.uniform(0.6, 1.4)),
        "gratings": gratings,
        "line_width": float(rng.uniform(0.16, 0.3)),
        "sweep": [float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))],
        "modes": [[int(n), int(m), 1.0], [int(rng.integers(1, 9)), int(rng.integers(1, 9)), float(rng.uniform(-0.6, 0.6))]],
        "mode_sign": float(rng.choice([-1.0, 1.0])),
        "zoom": float(rng.uniform(0.8, 1.4)),
        "tone_shift": float(rng.uniform(0, 1)),
    }


def vary(params: dict, rng: np.random.Generator, amount: float, canvas: Canvas, kinds: list[str]) -> dict:
    if amount <= 0:
        return dict(params)
    fresh = make(rng, canvas, [params["style"]])
    out = blend(params, fresh, amount, rng)
    out["style"] = params["style"] if rng.random() > amount * 0.5 else fresh["style"]
    # integer mode numbers only change on larger moves (each change is a different figure)
    out["modes"] = params["modes"] if rng.random() > amount else fresh["modes"]
    return out


def periodic(params: dict, canvas: Canvas) -> tuple[bool, bool]:
    return True, True


def _coords(canvas: Canvas):
    h, w = canvas.height, canvas.width
    u = canvas.unit
    x = ((np.arange(w, dtype=np.float32) + 0.5) - w / 2) / u
    y = ((np.arange(h, dtype=np.float32) + 0.5) - h / 2) / u
    return y[:, None], x[None, :]


def _distance(canvas: Canvas, y, x, cy: float, cx: float):
    """Distance from (cy, cx) in units; on a torus (smooth, periodic) when tiling."""
    if canvas.tiling:
        span_y, span_x = canvas.height / canvas.unit, canvas.width / canvas.unit
        dy = span_y / np.pi * np.sin(np.pi * (y - cy) / span_y)
        dx = span_x / np.pi * np.sin(np.pi * (x - cx) / span_x)
    else:
        dy, dx = y - cy, x - cx
    return np.sqrt(dy * dy + dx * dx)


def _gradient(f: np.ndarray, wrap: bool):
    """(d/dy, d/dx) per pixel; central differences that wrap around when tiling (so no border seam)."""
    if not wrap:
        return np.gradient(f)
    return ((np.roll(f, -1, 0) - np.roll(f, 1, 0)) * 0.5, (np.roll(f, -1, 1) - np.roll(f, 1, 1)) * 0.5)


def _line_coverage(phase: np.ndarray, width: float, wrap: bool = False) -> np.ndarray:
    """Anti-aliased coverage of lines at integer `phase`, `width` = fraction of a period."""
    if wrap:
        # phase itself is not periodic (it grows across the tile): difference it modulo 1
        dy = (np.roll(phase, -1, 0) - np.roll(phase, 1, 0)) * 0.5
        dx = (np.roll(phase, -1, 1) - np.roll(phase, 1, 1)) * 0.5
        gy, gx = dy - np.round(dy), dx - np.round(dx)
    else:
        gy, gx = np.gradient(phase)
    grad = np.sqrt(gx * gx + gy * gy) + 1e-6  # periods per pixel
    dist = np.abs(phase - np.round(phase)) / grad  # pixels to the nearest line
    half = 0.5 * width / grad  # half line width in pixels
    cov = np.clip(half + 0.5 - dist, 0.0, 1.0)
    crowd = np.clip((grad - 0.25) / 0.25, 0.0, 1.0)  # lines under ~2-4 px apart: use the average
    return cov * (1 - crowd) + width * crowd


def _sweep(params, canvas, y, x):
    """A slow ramp across the frame (about -0.7..0.7); a periodic bump instead when tiling."""
    sweep = params.get("sweep", [0.5, 0.5])
    if canvas.tiling:
        span_y, span_x = canvas.height / canvas.unit, canvas.width / canvas.unit
        return 0.35 * (sweep[0] * np.sin(2 * np.pi * x / span_x) + sweep[1] * np.sin(2 * np.pi * y / span_y))
    return x * sweep[0] + y * sweep[1]


def _ripples(params, canvas, y, x):
    """Interfering circular waves as a lit liquid surface (glints and sheen from the height gradient)."""
    pal = canvas.palette
    f = np.zeros((canvas.height, canvas.width), np.float32)
    total = 0.0
    for sx, sy, k, ph, amp in params["sources"]:
        r = _distance(canvas, y, x, sy * 0.6, sx * 0.6 * min(canvas.aspect, 2.0))
        k = k * params["zoom"] * (0.8 + 0.2 * canvas.detail)
        damp = 1.0 / (1.0 + params["falloff"] * r * 3.0)
        f += amp * damp * (np.sin(2 * np.pi * (k * r + ph)) + 0.22 * np.sin(2 * np.pi * (2.7 * k * r + 2 * ph)))
        total += amp
    f /= max(total, 1e-6) * 0.6
    gy, gx = _gradient(f, canvas.tiling)
    s = params["relief"] * canvas.unit / 45.0
    nx, ny = -gx * s, -gy * s
    inv = 1.0 / np.sqrt(nx * nx + ny * ny + 1.0)
    nx, ny, nz = nx * inv, ny * inv, inv
    a = params["light_angle"]
    lx, ly, lz = np.cos(a) * 0.6, np.sin(a) * 0.6, 0.8
    diffuse = np.clip(nx * lx + ny * ly + nz * lz, 0, 1)
    # Blinn-Phong: a tight glint plus a broad sheen, viewer straight above
    hx, hy, hz = lx, ly, lz + 1.0
    hn = np.sqrt(hx * hx + hy * hy + hz * hz)
    ndh = np.clip((nx * hx + ny * hy + nz * hz) / hn, 0, 1)
    spec = ndh ** 160 * 0.9 + ndh ** 16 * 0.18
    # colour: height plus a slow sweep across the frame, so the surface spans the palette; the tilt
    # of the surface shifts it a little too (like a reflected sky)
    t = 0.5 + 0.2 * np.tanh(f * 0.9) + 0.3 * _sweep(params, canvas, y, x) + 0.12 * (nx * np.cos(a + 1) + ny * np.sin(a + 1))
    base = pal.at(np.clip(t * 0.85 + 0.08, 0, 1))
    img = base * (0.22 + 0.88 * diffuse)[..., None] + spec[..., None] * pal.at(0.98)
    return img


def _moire(params, canvas, y, x):
    pal = canvas.palette
    h, w = canvas.height, canvas.width
    dark = not pal.light
    bg = pal.bg if dark else pal.at(0.97)
    img = np.broadcast_to(bg.astype(np.float32), (h, w, 3)).copy()
    # a soft radial light on the backdrop so the beats sit on something
    r0 = _distance(canvas, y, x, 0.0, 0.0)
    img *= (1.15 - 0.35 * np.clip(r0, 0, 1.2))[..., None]
    # one ink for all gratings, sweeping along the palette across the frame: the beats carry the image
    t = np.clip(0.62 + 0.35 * _sweep(params, canvas, y, x), 0, 1)
    col = pal.at(t) if dark else pal.at(t * 0.5)
    span_y, span_x = h / canvas.unit, w / canvas.unit
    for g in params["gratings"]:
        freq = g["freq"] * (0.85 + 0.15 * canvas.detail)
        if g["type"] == "rings":
            phase = _distance(canvas, y, x, g["y"], g["x"]) * freq + g["phase"]
        elif canvas.tiling:
            # whole numbers of periods across the tile along both axes
            a = np.round(np.cos(g["angle"]) * freq * span_x)
            b = np.round(np.sin(g["angle"]) * freq * span_y)
            phase = (x / span_x + 0.5) * a + (y / span_y + 0.5) * b + g["phase"]
        else:
            phase = (x * np.cos(g["angle"]) + y * np.sin(g["angle"])) * freq + g["phase"]
        cov = _line_coverage(phase.astype(np.float32), params["line_width"], canvas.tiling)[..., None]
        if dark:
            img = img + cov * col * 0.5  # light lines add up: the beats glow
        else:
            img = img * (1 - cov * (1 - col * 0.8))  # ink lines multiply like printed film
    return img


def _chladni(params, canvas, y, x):
    pal = canvas.palette
    h, w = canvas.height, canvas.width
    span_y, span_x = h / canvas.unit, w / canvas.unit
    zoom = params["zoom"]
    f = np.zeros((h, w), np.float32)
    for idx, (n, m, amp) in enumerate(params["modes"]):
        if idx == 0:
            amp = 1.0
        # whole periods per side (periodic); modes scale with the side so the figure is not stretched
        nx_, ny_ = max(1, round(n * zoom * span_x)), max(1, round(n * zoom * span_y))
        mx_, my_ = max(1, round(m * zoom * span_x)), max(1, round(m * zoom * span_y))
        if canvas.tiling:  # cos(k*pi*u) repeats over u in [0, 1) only for even k
            nx_, ny_, mx_, my_ = (k + (k % 2) for k in (nx_, ny_, mx_, my_))
        X = (x / span_x + 0.5) * np.pi
        Y = (y / span_y + 0.5) * np.pi
        f += amp * (np.cos(nx_ * X) * np.cos(my_ * Y) + params["mode_sign"] * np.cos(mx_ * X) * np.cos(ny_ * Y))
    f = f.astype(np.float32)
    gy, gx = _gradient(f, canvas.tiling)
    grad = np.sqrt(gx * gx + gy * gy) + 1e-6
    dist = np.abs(f) / grad  # pixels to the nodal line
    width = 1.2 * max(canvas.unit / 512.0, 0.5)
    sand = np.exp(-0.5 * (dist / width) ** 2)
    sand = np.where(grad > 0.6, 0.35, sand)  # sub-pixel crowding: average
    speck = 0.75 + 0.25 * noise.fbm2(h, w, 90.0, 2, canvas.seed + [21])
    amp = np.abs(f) / (np.abs(f).max() + 1e-6)
    plate = pal.at(0.05 + 0.3 * amp ** 0.7)
    halo = np.exp(-dist / (6.0 * width))
    img = plate * (0.8 + 0.2 * halo)[..., None] + (sand * speck)[..., None] * pal.at(0.9) * 0.95
    img += (0.12 * halo)[..., None] * pal.at(0.6)
    return img


def draw(params: dict, canvas: Canvas) -> np.ndarray:
    y, x = _coords(canvas)
    style = params["style"]
    if style == "moire":
        img = _moire(params, canvas, y, x)
    elif style == "chladni":
        img = _chladni(params, canvas, y, x)
    else:
        img = _ripples(params, canvas, y, x)
    return np.clip(img, 0, None).astype(np.float32)
