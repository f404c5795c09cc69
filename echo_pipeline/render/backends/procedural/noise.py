"""Fast periodic value noise built from matrix products.

An octave of 2-D value noise is `A @ L @ B.T`: a random lattice `L` (cells_y x cells_x) interpolated
along each axis by a fixed Catmull-Rom matrix (`A`: height x cells_y, `B`: width x cells_x). That is
a pair of small BLAS matrix products instead of per-pixel gathers, so a full fbm stack costs a few
milliseconds, and because the interpolation wraps around the lattice, every octave tiles seamlessly
over the image (what `tiling=True` needs). `phase` slides the lattice and `morph` rotates between
two lattices, both continuously: refine uses them to move a noise field a little without re-rolling it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage


@lru_cache(maxsize=512)
def _interp_matrix(n_out: int, cells: int, phase_key: int) -> np.ndarray:
    """(n_out, cells) wrap-around Catmull-Rom interpolation weights; phase in 1/4096ths of a cell."""
    u = (np.arange(n_out, dtype=np.float64) + 0.5) * (cells / n_out) + phase_key / 4096.0
    i = np.floor(u).astype(np.int64)
    f = u - i
    f2, f3 = f * f, f * f * f
    weights = (
        -0.5 * f3 + f2 - 0.5 * f,
        1.5 * f3 - 2.5 * f2 + 1.0,
        -1.5 * f3 + 2.0 * f2 + 0.5 * f,
        0.5 * f3 - 0.5 * f2,
    )
    m = np.zeros((n_out, cells), dtype=np.float32)
    rows = np.arange(n_out)
    for k, w in enumerate(weights):
        m[rows, (i + k - 1) % cells] += w  # one index per row per tap: no duplicate writes
    m.flags.writeable = False
    return m


def _matrix(n_out: int, cells: int, phase: float) -> np.ndarray:
    # phase is in cells; quantised to 1/4096 of a cell, far below a pixel
    return _interp_matrix(n_out, cells, int(round(phase * 4096.0)) % (cells * 4096))


def lattice(seed: int | list[int], shape: tuple[int, ...], morph: float = 0.0) -> np.ndarray:
    """Random lattice in [-1, 1]; `morph` (radians) rotates towards a second, independent lattice."""
    key = list(seed) if isinstance(seed, (list, tuple)) else [int(seed)]
    a = np.random.default_rng(key + [1]).uniform(-1.0, 1.0, shape)
    if morph:
        b = np.random.default_rng(key + [2]).uniform(-1.0, 1.0, shape)
        a = np.cos(morph) * a + np.sin(morph) * b
    return a.astype(np.float32)


def cells_for(side: int, unit: float, freq: float) -> int:
    """Lattice cells along a side of `side` pixels, for `freq` cells per `unit` pixels (>= 1)."""
    return max(1, int(round(freq * side / unit)))


def value2(h: int, w: int, cy: int, cx: int, seed, phase=(0.0, 0.0), morph: float = 0.0) -> np.ndarray:
    """One octave of periodic 2-D value noise, about [-1, 1]."""
    a = _matrix(h, cy, phase[0] * cy)
    b = _matrix(w, cx, phase[1] * cx)
    return a @ lattice(seed, (cy, cx), morph) @ b.T


def fbm2(h: int, w: int, freq: float, octaves: int, seed, *, unit: float | None = None, gain: float = 0.5,
         lacunarity: float = 2.0, phase=(0.0, 0.0), morph: float = 0.0, ridged: bool = False) -> np.ndarray:
    """Fractal sum of value-noise octaves, normalised to about [-1, 1]; periodic over (h, w).

    `freq` is cells per `unit` pixels (default: the geometric mean side, so features keep their size
    whatever the aspect ratio). Octaves finer than ~2 px are skipped (invisible, and costly).
    """
    unit = unit or float(np.sqrt(h * w))
    out = np.zeros((h, w), dtype=np.float32)
    amp, total, f = 1.0, 0.0, freq
    base = list(seed) if isinstance(seed, (list, tuple)) else [int(seed)]
    for octave in range(octaves):
        cy, cx = cells_for(h, unit, f), cells_for(w, unit, f)
        if octave and (cy > h / 5 or cx > w / 5):  # finer than ~5 px: invisible, and costly
            break
        n = value2(h, w, cy, cx, base + [octave], (phase[0] + 0.37 * octave, phase[1] + 0.61 * octave), morph)
        if ridged:
            n = 1.0 - 2.0 * np.abs(n)
        out += amp * n
        total += amp
        amp *= gain
        f *= lacunarity
    return out / max(total, 1e-6) * 1.6  # value noise sums rarely reach +-1: stretch to about [-1, 1]


def fbm1(n: int, freq: float, octaves: int, seed, *, unit: float | None = None, gain: float = 0.5,
         phase: float = 0.0, morph: float = 0.0, ridged: bool = False) -> np.ndarray:
    """1-D periodic fbm over n samples (landscape ridge lines, skyline heights)."""
    unit = unit or float(n)
    out = np.zeros(n, dtype=np.float32)
    amp, total, f = 1.0, 0.0, freq
    base = list(seed) if isinstance(seed, (list, tuple)) else [int(seed)]
    for octave in range(octaves):
        cells = cells_for(n, unit, f)
        if octave and cells > n / 4:
            break
        m = _matrix(n, cells, (phase + 0.37 * octave) * cells)
        v = m @ lattice(base + [octave], (cells,), morph)
        if ridged:
            v = 1.0 - 2.0 * np.abs(v)
        out += amp * v
        total += amp
        amp *= gain
        f *= 2.0
    return out / max(total, 1e-6) * 1.6


def sample(texture: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a periodic texture at fractional pixel positions (wraps around)."""
    return ndimage.map_coordinates(texture, [y, x], order=1, mode="grid-wrap", output=np.float32)


def resize(field: np.ndarray, h: int, w: int) -> np.ndarray:
    """Smoothly resample a periodic 2-D field to (h, w) (cubic, wrap-around)."""
    if field.shape == (h, w):
        return field.astype(np.float32, copy=False)
    zy, zx = h / field.shape[0], w / field.shape[1]
    yy = (np.arange(h, dtype=np.float32) + 0.5) / zy - 0.5
    xx = (np.arange(w, dtype=np.float32) + 0.5) / zx - 0.5
    return ndimage.map_coordinates(field, np.meshgrid(yy, xx, indexing="ij"), order=1, mode="grid-wrap",
                                   output=np.float32)


def hash01(*keys) -> np.ndarray:
    """Stateless hash of integer arrays (broadcast together) to [0, 1): per-window, per-tile, per-star
    randomness that needs no RNG state and is identical wherever the same cell is drawn."""
    out = np.asarray(np.uint32(0x811C9DC5))
    with np.errstate(over="ignore"):
        return _hash(out, keys)


def _hash(out, keys):
    for k in keys:
        k = np.asarray(k).astype(np.int64).astype(np.uint32)
        out = (out ^ k) * np.uint32(0x01000193)
        out = out ^ (out >> np.uint32(15))
        out = out * np.uint32(0x2C1B3C6D)
        out = out ^ (out >> np.uint32(12))
    out = (out ^ (out >> np.uint32(16))) * np.uint32(0x45D9F3B)
    out = out ^ (out >> np.uint32(16))
    return (out.astype(np.float64) / 4294967296.0).astype(np.float32)
