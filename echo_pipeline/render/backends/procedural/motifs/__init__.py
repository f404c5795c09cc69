"""Motif families. Each module provides:

- `make(rng, canvas, kinds) -> dict`: draw the family's parameters (JSON-able) from an RNG.
- `vary(params, rng, amount, canvas, kinds) -> dict`: a variation, `amount` 0 (same) .. 1 (free).
- `draw(params, canvas) -> ndarray`: linear RGB float32 (height, width, 3) at the output size.
- `periodic(params, canvas) -> (bool, bool)`: which axes `draw` already made seamless when tiling.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from echo_pipeline.render.backends.procedural.palettes import Palette


@dataclass
class Canvas:
    """Everything a motif may read besides its own params."""

    width: int
    height: int
    tiling: bool
    palette: Palette
    seed: list[int]  # base key for noise lattices and per-element hashes
    detail: float = 1.0  # 0.55 (minimal) .. 1.6 (intricate)
    light: float = 0.0  # -1 dark .. +1 bright
    effects: dict[str, float] = field(default_factory=dict)
    # Low-discrepancy composition coordinates in [0, 1) (see `framing`); None: motifs draw from their RNG.
    framing: tuple[float, ...] | None = None

    @property
    def unit(self) -> float:
        """Geometric-mean side: feature sizes scale with it, so any aspect ratio stays composed."""
        return float(np.sqrt(self.width * self.height))

    @property
    def aspect(self) -> float:
        return self.width / self.height


def blend(old: Any, fresh: Any, amount: float, rng: np.random.Generator) -> Any:
    """Move `old` towards `fresh` by `amount`: numbers interpolate, choices switch with probability
    `amount`, nested dicts/lists recurse. amount 0 -> old, 1 -> fresh."""
    if amount <= 0:
        return old
    if amount >= 1:
        return fresh
    if isinstance(old, bool) or isinstance(fresh, bool) or isinstance(old, str) or old is None:
        return fresh if rng.random() < amount else old
    if isinstance(old, dict) and isinstance(fresh, dict):
        return {k: (blend(old[k], fresh[k], amount, rng) if k in fresh else old[k]) for k in old}
    if isinstance(old, list) and isinstance(fresh, list):
        if len(old) == len(fresh):
            return [blend(a, b, amount, rng) for a, b in zip(old, fresh, strict=True)]
        return fresh if rng.random() < amount else old
    if isinstance(old, int) and isinstance(fresh, int):
        return int(round(old + (fresh - old) * amount))
    if isinstance(old, (int, float)) and isinstance(fresh, (int, float)):
        return float(old + (fresh - old) * amount)
    return fresh if rng.random() < amount else old


MOTIF_MODULES = ("fractal", "flow", "waves", "landscape", "geometric", "city", "nebula", "material", "object")


def get(name: str):
    """The module drawing motif `name` (imported on first use)."""
    if name not in MOTIF_MODULES:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
