"""Materials: worked steel, wood, stone, leather and woven cloth, drawn as seamless surfaces.

Each kind builds a height field and a tone field from periodic pieces, then lights the height with
a fixed key light from the upper left (normals from wrap-around differences):

- `metal`: anisotropic brushing (value noise with many cells across the stroke, few along it),
  hammer dents (a paraboloid per Voronoi cell: dimpled centres, ridges where blows met), scratches
  (thin wrapped line segments, mostly along the brushing) and a broad specular sheen.
- `wood`: growth rings (early wood light, late wood a darker band), warped by slow noise, bulging
  around knots whose own rings are concentric; fine fibres and pores streaked along the grain.
- `stone`: Voronoi stones on a noise-warped domain with cracks where two cells nearly tie
  (F2 - F1 small), per-stone tone, granular speckle and mottling.
- `leather`: small rounded Voronoi pebbles with grooves between them, creases along the zero lines
  of two noise fields, mottled tone and a satin sheen.
- `cloth`: plain weave: warp (vertical) and weft (horizontal) threads alternate over and under,
  each thread a rounded profile with twisted fibres and its own shade; thread paths wobble a little
  (hand-woven irregularity, which also keeps the weave from phase-locking to the tile border).

Periodic domain: noise lattices use whole numbers of cells over the image, Voronoi cells and thread
counts are integers with cell indices wrapped, distances are taken on the torus and scratches wrap,
so every kind tiles natively and `finish.seamless` has nothing to do.
"""

from __future__ import annotations

import numpy as np

from echo_pipeline.render.backends.procedural import noise
from echo_pipeline.render.backends.procedural.finish import blur, splat
from echo_pipeline.render.backends.procedural.motifs import Canvas, blend

KINDS = ("metal", "wood", "stone", "leather", "cloth")
# Key light (x right, y down, z out of the image), normalised: from the upper left, fairly high.
_LIGHT = np.array([-0.45, -0.55, 0.70], np.float32) / np.float32(np.linalg.norm([-0.45, -0.55, 0.70]))
_HALF = (_LIGHT + np.array([0, 0, 1], np.float32)) / np.float32(np.linalg.norm(_LIGHT + np.array([0, 0, 1])))


def make(rng: np.random.Generator, canvas: Canvas, kinds: list[str]) -> dict:
    kind = next((k for k in kinds if k in KINDS), None) or str(rng.choice(KINDS))
    u = rng.uniform
    return {
        "kind": kind,
        "phase": [float(u(0, 1)), float(u(0, 1))],
        "morph": 0.0,
        "tone": float(u(-0.06, 0.06)),  # shifts the whole surface along the palette
        "relief": float(u(0.8, 1.2)),
        "axis": int(rng.random() < 0.25),  # 0: brushing / grain along x, 1: along y
        # metal
        "brush": float(u(0.6, 1.0)),
        "dent_cells": int(rng.integers(5, 10)),
        "dents": float(u(0.5, 1.0)),
        "scratches": int(rng.integers(40, 90)),
        "sheen": float(u(0.4, 0.8)),
        # wood
        "rings": int(rng.integers(9, 18)),
        "ring_warp": float(u(1.0, 2.5)),
        "knots": [[float(u(0, 1)), float(u(0, 1)), float(u(0.6, 1.3))] for _ in range(int(rng.integers(0, 3)))],
        "late": float(u(0.45, 0.75)),
        # stone
        "stone_cells": int(rng.integers(4, 8)),
        "crack": float(u(0.025, 0.05)),
        "stone_warp": float(u(0.15, 0.35)),
        # leather
        "pebbles": int(rng.integers(26, 40)),
        "creases": float(u(0.4, 1.0)),
        # cloth
        "threads": int(rng.integers(40, 64)),
        "two_tone": float(u(0.02, 0.08)),
        "wobble": float(u(0.4, 0.7)),
        "salt": int(rng.integers(0, 2**31 - 1)),
    }


def vary(params: dict, rng: np.random.Generator, amount: float, canvas: Canvas, kinds: list[str]) -> dict:
    if amount <= 0:
        return dict(params)
    fresh = make(rng, canvas, [params["kind"]])
    out = blend(params, fresh, amount, rng)
    out["kind"] = next((k for k in kinds if k in KINDS), params["kind"])
    out["morph"] = float(params.get("morph", 0.0) + rng.normal(0, 1.0 * amount))
    out["salt"] = params["salt"] if rng.random() > amount ** 2 else fresh["salt"]
    return out


def periodic(params: dict, canvas: Canvas) -> tuple[bool, bool]:
    return True, True


# ------------------------------------------------------------------------------ periodic helpers
def _aniso(h: int, w: int, across: float, along: float, octaves: int, seed, phase, morph: float,
           axis: int) -> np.ndarray:
    """Streaky periodic noise: `across` cells per image across the streaks, `along` along them
    (both doubling per octave), about [-1, 1]. axis 0: streaks run along x."""
    out = np.zeros((h, w), np.float32)
    total = 0.0
    for octave in range(octaves):
        a, b = across * 2 ** octave, along * 2 ** octave
        n_across = max(1, min(int(round(a)), (h if axis == 0 else w) // 2))
        n_along = max(1, min(int(round(b)), (w if axis == 0 else h) // 2))
        cy, cx = (n_across, n_along) if axis == 0 else (n_along, n_across)
        amp = 0.6 ** octave
        out += amp * noise.value2(h, w, cy, cx, list(seed) + [octave], (phase[0] + 0.3 * octave, phase[1]), morph)
        total += amp
    return out / np.float32(total) * np.float32(1.5)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1) per axis: (h, 1) and (1, w)."""
    return ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None], ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]


def voronoi(y: np.ndarray, x: np.ndarray, ny: int, nx: int, key: list[int], jitter: float = 0.85):
    """Periodic Voronoi (Worley) on a ny x nx grid of jittered points, coordinates in cells
    (any real values: cells wrap modulo the grid). Returns F1, F2 (in cell units) and the nearest
    cell's id (its index in the wrapped grid)."""
    iy, ix = np.floor(y), np.floor(x)
    fy, fx = y - iy, x - ix
    iy, ix = iy.astype(np.int64), ix.astype(np.int64)
    shape = np.broadcast_shapes(np.shape(y), np.shape(x))
    f1 = np.full(shape, 9.0, np.float32)
    f2 = np.full(shape, 9.0, np.float32)
    ids = np.zeros(shape, np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cy, cx = (iy + dy) % ny, (ix + dx) % nx
            py = dy + 0.5 + jitter * (noise.hash01(*key, cy, cx, 1) - 0.5) - fy
            px = dx + 0.5 + jitter * (noise.hash01(*key, cy, cx, 2) - 0.5) - fx
            d = np.sqrt(py * py + px * px)
            closer = d < f1
            f2 = np.where(closer, f1, np.minimum(f2, d))
            ids = np.where(closer, cy * nx + cx, ids)
            f1 = np.where(closer, d, f1)
    return f1, f2, ids


def _dimples(y: np.ndarray, x: np.ndarray, ny: int, nx: int, key: list[int]) -> np.ndarray:
    """Hammer blows: a round smooth dimple (0..1 deep) around a jittered point per cell, of random
    size and depth (some cells unstruck); neighbours' dimples overlap, so no cell outlines show."""
    iy, ix = np.floor(y), np.floor(x)
    fy, fx = y - iy, x - ix
    iy, ix = iy.astype(np.int64), ix.astype(np.int64)
    out = np.zeros(np.broadcast_shapes(np.shape(y), np.shape(x)), np.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cy, cx = (iy + dy) % ny, (ix + dx) % nx
            py = dy + 0.5 + 0.8 * (noise.hash01(*key, cy, cx, 1) - 0.5) - fy
            px = dx + 0.5 + 0.8 * (noise.hash01(*key, cy, cx, 2) - 0.5) - fx
            radius = 0.35 + 0.4 * noise.hash01(*key, cy, cx, 3)
            depth = np.clip(noise.hash01(*key, cy, cx, 4) * 1.5 - 0.3, 0, 1)
            out += np.clip(1 - (py * py + px * px) / (radius * radius), 0, 1) ** 2 * depth
    return out


def _torus_delta(a: np.ndarray, b: float) -> np.ndarray:
    """Signed shortest difference a - b on the unit circle, in [-0.5, 0.5)."""
    d = a - b
    return d - np.round(d)


def _normals(height: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit normals (x right, y down, z out) of a height field in pixels, wrap-around differences."""
    gy = (np.roll(height, -1, 0) - np.roll(height, 1, 0)) * np.float32(0.5 * strength)
    gx = (np.roll(height, -1, 1) - np.roll(height, 1, 1)) * np.float32(0.5 * strength)
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    return -gx * inv, -gy * inv, inv


def _light(height: np.ndarray, strength: float, shininess: float) -> tuple[np.ndarray, np.ndarray]:
    """(diffuse, specular) of the key light on a height field."""
    nx, ny, nz = _normals(height, strength)
    diffuse = np.clip(nx * _LIGHT[0] + ny * _LIGHT[1] + nz * _LIGHT[2], 0, 1)
    spec = np.clip(nx * _HALF[0] + ny * _HALF[1] + nz * _HALF[2], 0, 1) ** np.float32(shininess)
    return diffuse.astype(np.float32), spec.astype(np.float32)


def _smoothstep(a: float, b: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - a) / (b - a), 0, 1)
    return t * t * (3 - 2 * t)


def _scale(canvas: Canvas) -> float:
    """Pixels per 512-px reference: relief strengths are tuned at 512 px."""
    return canvas.unit / 512.0


# ------------------------------------------------------------------------------ kinds
def _metal(p: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    seed, ph, mo, axis = canvas.seed, tuple(p["phase"]), float(p["morph"]), int(p["axis"])
    pal = canvas.palette
    side_across = h if axis == 0 else w
    # brushing: fine streaks (many cells across, few along), plus a coarser layer of stroke bands
    fine = _aniso(h, w, 0.5 * side_across, 3, 3, seed + [101], ph, mo, axis)
    bands = _aniso(h, w, 24, 1, 2, seed + [102], ph, mo, axis)
    brush = (0.65 * fine + 0.35 * bands) * np.float32(p["brush"])
    # hammer dents: a shallow paraboloid per Voronoi cell (blows overlap: ridges where they meet)
    y, x = _grid(h, w)
    n = int(p["dent_cells"])
    nx_cells = max(1, int(round(n * w / h)))
    wy = noise.fbm2(h, w, 2.0, 3, seed + [103], phase=ph, morph=mo) * 0.18
    wx = noise.fbm2(h, w, 2.0, 3, seed + [104], phase=ph, morph=mo) * 0.18
    dents = _dimples(y * n + wy, x * nx_cells + wx, n, nx_cells, seed + [105]) * np.float32(p["dents"])
    waviness = noise.fbm2(h, w, 1.5, 3, seed + [107], phase=ph, morph=mo)
    # scratches: thin wrapped segments, most along the brushing, a few across at random angles
    rng = np.random.default_rng(seed + [108, int(p["salt"]) % 100003])
    count = int(p["scratches"] * (0.6 + 0.4 * canvas.detail))
    acc = np.zeros((h, w), np.float32)
    scale = _scale(canvas)
    along = rng.random(count) < 0.7
    base_angle = 0.0 if axis == 0 else np.pi / 2
    angle = np.where(along, base_angle + rng.normal(0, 0.08, count), rng.uniform(0, np.pi, count))
    length = (rng.pareto(1.5, count) * 25 + 12).clip(0, 160) * scale
    y0, x0 = rng.uniform(0, h, count), rng.uniform(0, w, count)
    steps = max(8, int(160 * scale * 1.5))
    s = np.linspace(0, 1, steps, dtype=np.float32)
    sy = (y0[:, None] + np.sin(angle)[:, None] * length[:, None] * s[None, :]).ravel()
    sx = (x0[:, None] + np.cos(angle)[:, None] * length[:, None] * s[None, :]).ravel()
    taper = np.maximum(np.sin(np.pi * s), 0) ** 0.5
    wgt = (taper[None, :] * rng.uniform(0.3, 1.0, count)[:, None] * (length[:, None] / steps)).ravel()
    splat(acc, sy, sx, wgt.astype(np.float32), True)
    scratches = np.clip(blur(acc, 0.55, True) * 2.2, 0, 1)

    relief = float(p["relief"])
    height = (-dents * 5.0 + waviness * 3.0 + brush * 0.35 - scratches * 1.2) * relief * scale
    diffuse, spec = _light(height, 1.0, 22.0)
    _d2, spec_broad = _light(height * 0.5, 1.0, 4.0)
    # brushed metal stretches reflections across the brushing: broad bright and dark bands
    sheen = np.clip(0.5 + 0.6 * _aniso(h, w, 1, 3, 2, seed + [109], ph, mo, 1 - axis), 0, 1)
    t = 0.44 + p["tone"] + 0.08 * brush + 0.05 * waviness - 0.05 * dents + 0.12 * (sheen - 0.5)
    base = pal.at(np.clip(t, 0, 1))
    lit = base * (0.42 + 0.5 * diffuse)[..., None]
    highlight = pal.at(0.93)
    lit = lit + highlight * (spec * 0.5 + spec_broad * 0.1 * p["sheen"] + sheen ** 3 * 0.22 * p["sheen"])[..., None]
    # scratches catch the light across the brushing: brighter hairlines with a darker groove side
    lit = lit * (1 - 0.25 * scratches)[..., None] + highlight * (0.22 * scratches)[..., None]
    return lit


def _wood(p: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    seed, ph, mo, axis = canvas.seed, tuple(p["phase"]), float(p["morph"]), int(p["axis"])
    pal = canvas.palette
    y, x = _grid(h, w)
    if axis:  # grain along y: swap the roles of the axes (broadcasting keeps the shapes right)
        y, x = x, y
    rings = int(p["rings"])
    # slow warp of the ring lines along the grain, a little across
    warp = (_aniso(h, w, 1, 1, 2, seed + [201], ph, mo, axis) * np.float32(p["ring_warp"])
            + _aniso(h, w, 4, 2, 2, seed + [205], ph, mo, axis) * np.float32(0.25))
    t = y * rings + warp
    knot_core = np.zeros((h, w), np.float32)
    for i, (ky, kx, size) in enumerate(p["knots"]):
        dy = _torus_delta(y, ky) * rings  # in ring spacings
        dx = _torus_delta(x, kx) * rings * (w / h if not axis else h / w) / 2.6  # knots stretch along the grain
        d = np.sqrt(dy * dy + dx * dx) / np.float32(size)
        bump = np.exp(-d * d * 0.5)
        t = t + np.sign(dy) * bump * 1.6 * size  # ring lines bulge around the knot
        inner = np.exp(-(d / 0.9) ** 2)
        t = t * (1 - inner) + (d * 2.2 + i * 0.37) * inner  # concentric rings inside the knot
        knot_core = np.maximum(knot_core, np.exp(-(d / 0.32) ** 2))
    r = t - np.floor(t)
    late = _smoothstep(0.62, 0.94, r) * (1 - _smoothstep(0.95, 1.0, r)) * np.float32(p["late"])
    fibres = _aniso(h, w, 0.42 * (h if axis == 0 else w), 4, 2, seed + [202], ph, mo, axis)
    pores = np.clip(_aniso(h, w, 0.3 * (h if axis == 0 else w), 10, 1, seed + [203], ph, mo, axis) - 0.55, 0, 1)
    boards = _aniso(h, w, 3, 1, 2, seed + [204], ph, mo, axis)
    tone = (0.6 + p["tone"] - 0.3 * late + 0.05 * fibres - 0.25 * pores + 0.06 * boards - 0.35 * knot_core)
    base = pal.at(np.clip(tone, 0, 1))
    scale = _scale(canvas)
    height = (late * 1.2 + fibres * 0.25 - pores * 0.8 - knot_core * 0.6) * float(p["relief"]) * scale
    diffuse, spec = _light(height, 1.0, 12.0)
    return base * (0.62 + 0.45 * diffuse)[..., None] + pal.at(0.85) * (spec * 0.06)[..., None]


def _stone(p: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    seed, ph, mo = canvas.seed, tuple(p["phase"]), float(p["morph"])
    pal = canvas.palette
    y, x = _grid(h, w)
    n = int(p["stone_cells"])
    nx_cells = max(1, int(round(n * w / h)))
    amp = float(p["stone_warp"])
    wy = noise.fbm2(h, w, 3.0, 4, seed + [301], phase=ph, morph=mo) * amp
    wx = noise.fbm2(h, w, 3.0, 4, seed + [302], phase=ph, morph=mo) * amp
    f1, f2, ids = voronoi(y * n + wy, x * nx_cells + wx, n, nx_cells, seed + [303], jitter=0.8)
    edge = f2 - f1
    crack_w = float(p["crack"]) * (1.0 + 0.6 * noise.fbm2(h, w, 5.0, 2, seed + [304], phase=ph))
    crack = 1 - _smoothstep(0.0, 1.0, edge / np.maximum(crack_w, 0.005))
    chipped = _smoothstep(0.0, 0.22, edge)  # stones round off towards their edges
    grain = noise.fbm2(h, w, 40.0, 3, seed + [305], phase=ph, morph=mo)
    speckle = noise.hash01(*(seed + [306]), np.arange(h)[:, None], np.arange(w)[None, :]) - 0.5
    mottle = noise.fbm2(h, w, 4.0, 5, seed + [307], phase=ph, morph=mo)
    cell_tone = noise.hash01(*(seed + [308]), ids) - 0.5
    tone = 0.52 + p["tone"] + 0.16 * cell_tone + 0.08 * mottle + 0.05 * grain + 0.07 * speckle - 0.38 * crack
    base = pal.at(np.clip(tone, 0, 1))
    scale = _scale(canvas)
    height = (chipped * 6.0 + mottle * 2.0 + grain * 0.6 + speckle * 0.25 - crack * 2.5) * float(p["relief"]) * scale
    diffuse, _spec = _light(height, 1.0, 8.0)
    return base * (0.38 + 0.7 * diffuse)[..., None]


def _leather(p: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    seed, ph, mo = canvas.seed, tuple(p["phase"]), float(p["morph"])
    pal = canvas.palette
    y, x = _grid(h, w)
    n = max(3, min(int(p["pebbles"]), h // 5))
    nx_cells = max(3, int(round(n * w / h)))
    # warp at the pebbles' own scale too, so grains are rounded and irregular, not polygons
    wy = (noise.fbm2(h, w, 6.0, 3, seed + [401], phase=ph, morph=mo) * 0.35
          + noise.fbm2(h, w, float(n) * 0.7, 2, seed + [409], phase=ph) * 0.22)
    wx = (noise.fbm2(h, w, 6.0, 3, seed + [402], phase=ph, morph=mo) * 0.35
          + noise.fbm2(h, w, float(n) * 0.7, 2, seed + [410], phase=ph) * 0.22)
    f1, f2, ids = voronoi(y * n + wy, x * nx_cells + wx, n, nx_cells, seed + [403], jitter=0.95)
    dome = np.clip(1 - f1 * f1 * 0.9, 0, 1)
    pebble = _smoothstep(0.0, 0.45, f2 - f1) ** 0.5 * dome * (0.8 + 0.4 * noise.hash01(*(seed + [404]), ids))
    c1 = noise.fbm2(h, w, 2.2, 5, seed + [405], phase=ph, morph=mo)
    c2 = noise.fbm2(h, w, 3.1, 5, seed + [406], phase=ph, morph=mo)
    creases = (np.exp(-(c1 / 0.06) ** 2) + 0.6 * np.exp(-(c2 / 0.05) ** 2)) * np.float32(p["creases"])
    mottle = noise.fbm2(h, w, 3.0, 5, seed + [407], phase=ph, morph=mo)
    wear = np.clip(noise.fbm2(h, w, 2.0, 4, seed + [408], phase=ph, morph=mo), 0, 1)
    tone = 0.5 + p["tone"] + 0.06 * pebble + 0.08 * mottle + 0.12 * wear - 0.1 * creases
    base = pal.at(np.clip(tone, 0, 1))
    scale = _scale(canvas)
    height = (pebble * 2.2 - creases * 1.8 + mottle * 1.0) * float(p["relief"]) * scale
    diffuse, spec = _light(height, 1.0, 14.0)
    lit = base * (0.45 + 0.6 * diffuse)[..., None]
    return lit + pal.at(0.8) * (spec * (0.12 + 0.15 * wear))[..., None]


def _cloth(p: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    seed, ph, mo = canvas.seed, tuple(p["phase"]), float(p["morph"])
    pal = canvas.palette
    n_y = max(4, min(int(p["threads"]), h // 6))
    n_x = max(4, min(int(round(p["threads"] * w / h)), w // 6))
    y, x = _grid(h, w)
    wob = float(p["wobble"])
    # thread paths wobble by a fraction of a thread (periodic noise), in thread units
    v = y * n_y + ph[0] * 2.0 + noise.fbm2(h, w, 3.0, 3, seed + [501], phase=ph, morph=mo) * wob
    u = x * n_x + ph[1] * 2.0 + noise.fbm2(h, w, 3.0, 3, seed + [502], phase=ph, morph=mo) * wob
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    col = iu.astype(np.int64) % n_x  # warp thread index
    row = iv.astype(np.int64) % n_y  # weft thread index
    # each thread undulates continuously over and under the crossing ones: the weft of row r is up
    # over warp c when r + c is even, the warp is up where the weft is down
    sign_row = np.where(row % 2 == 0, 1.0, -1.0).astype(np.float32)
    sign_col = np.where(col % 2 == 0, 1.0, -1.0).astype(np.float32)
    z_weft = 0.35 * np.sin(np.pi * u) * sign_row
    z_warp = -0.35 * np.sin(np.pi * v) * sign_col
    # rounded cross-sections a little narrower than the spacing (gaps between threads); slubs: the
    # thickness varies slowly along each thread
    slub_warp = 0.42 + 0.05 * noise.fbm2(h, w, 6.0, 2, seed + [507], phase=ph) * (noise.hash01(*(seed + [508]), col) > 0.5)
    slub_weft = 0.42 + 0.05 * noise.fbm2(h, w, 6.0, 2, seed + [509], phase=ph) * (noise.hash01(*(seed + [510]), row) > 0.5)
    prof_warp = np.sqrt(np.clip(1 - ((fu - 0.5) / slub_warp) ** 2, 0, 1))
    prof_weft = np.sqrt(np.clip(1 - ((fv - 0.5) / slub_weft) ** 2, 0, 1))
    warp_s = np.where(prof_warp > 0, z_warp + 0.4 * prof_warp, -0.6)
    weft_s = np.where(prof_weft > 0, z_weft + 0.4 * prof_weft, -0.6)
    is_warp = warp_s >= weft_s
    height = np.maximum(warp_s, weft_s)
    # twisted fibres: fine diagonal stripes along each thread
    twist = np.where(is_warp, 0.5 + 0.5 * np.sin(2 * np.pi * (v * 2.5 + fu * 0.9)),
                     0.5 + 0.5 * np.sin(2 * np.pi * (u * 2.5 + fv * 0.9)))
    shade = np.where(is_warp, noise.hash01(*(seed + [503]), col), noise.hash01(*(seed + [504]), row)) - 0.5
    fuzz = noise.fbm2(h, w, 60.0, 2, seed + [505], phase=ph)
    mottle = noise.fbm2(h, w, 2.5, 4, seed + [506], phase=ph, morph=mo)
    two_tone = float(p["two_tone"])
    tone = (0.58 + p["tone"] + np.where(is_warp, -two_tone, two_tone) * 0.6 + 0.07 * shade + 0.05 * twist
            + 0.03 * fuzz + 0.05 * mottle)
    gap = 1 - _smoothstep(-0.45, 0.1, height)  # low places between threads fall into shadow
    base = pal.at(np.clip(tone - 0.2 * gap, 0, 1))
    scale = _scale(canvas)
    relief = float(p["relief"]) * scale * 512.0 / max(n_y, 1) / 10.0  # thread relief scales with thread size
    diffuse, _spec = _light((height + 0.05 * twist) * relief * 2.5, 1.0, 6.0)
    return base * (0.35 + 0.7 * diffuse)[..., None] * (1 - 0.45 * gap)[..., None]


_DRAW = {"metal": _metal, "wood": _wood, "stone": _stone, "leather": _leather, "cloth": _cloth}


def draw(params: dict, canvas: Canvas) -> np.ndarray:
    img = _DRAW[params["kind"]](params, canvas)
    return np.clip(np.nan_to_num(img, nan=0.0), 0, None).astype(np.float32)
