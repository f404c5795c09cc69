"""Framing points: where in a motif's composition space an image sits, spread evenly over seeds.

A collection is many seeds of one prompt. When composition choices (which fractal neighbourhood,
zoom, rotation) are drawn from an RNG per seed, a few hundred images collide by the birthday
paradox: two batches of a project land on the same framing and look identical. Instead the
composition coordinates come from a Kronecker (additive-recurrence) low-discrepancy sequence over
the seed: point(n) = frac(n * alpha), alpha the R_d vector of the generalised golden ratio (Roberts,
"The unreasonable effectiveness of quasirandom sequences", 2018).

Why the seed and not a project-wide image counter: the renderer only sees the request, and seeds of
a project are an arithmetic lattice (visual_planner: base + batch * stride + k). The sequence is
additive, so the distance between two images' points depends only on their seed difference; for
the planner's lattice the closest pair of 500 images is ~5x (4 dims) to ~6x (3 dims) farther apart
than for RNG draws. The text hash shifts the whole sequence, so
"warm fractal 01" and "warm fractal 02" on one seed still frame differently.
"""

from __future__ import annotations

DIMS = 5
_ONE = 1 << 64


def _alphas(dims: int) -> tuple[int, ...]:
    """R_d increments as 64-bit fixed-point integers (exact integer arithmetic: no float drift)."""
    g = 2.0
    for _ in range(64):  # g = the unique positive root of x^(d+1) = x + 1
        g = (1.0 + g) ** (1.0 / (dims + 1))
    return tuple(int(((1.0 / g ** (i + 1)) % 1.0) * _ONE) for i in range(dims))


_ALPHA = _alphas(DIMS)
_TEXT_STEP = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: decorrelates the text shift from the seed steps


def framing_point(seed: int, text_hash: int = 0) -> tuple[float, ...]:
    """A point in [0, 1)^DIMS for this seed (and prompt text); consecutive seeds spread evenly."""
    n = int(seed) % _ONE
    shift = (int(text_hash) * _TEXT_STEP) % _ONE
    return tuple(((n * a + shift * (i + 1)) % _ONE) / _ONE for i, a in enumerate(_ALPHA))
