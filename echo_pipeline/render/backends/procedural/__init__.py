"""Procedural backend: real generative art from prompt + seed, offline, no model weights.

Layout: `words` (prompt parsing) -> `params` (seeded parameter dict) -> `motifs/*` (one module per
family, drawing linear-light RGB) -> `finish` (tiling, effects, sRGB encode); `palettes`, `noise`
and `framing` (low-discrepancy composition coordinates per seed) are shared helpers; `backend`
implements the `ImageBackend` protocol. `vocabulary()` lists the words it understands; every image's
info says which prompt words it used and which it ignored (`words_used`, `words_ignored`).
"""

from echo_pipeline.render.backends.procedural.backend import PROCEDURAL_VERSION, ProceduralBackend
from echo_pipeline.render.backends.procedural.words import vocabulary

__all__ = ["PROCEDURAL_VERSION", "ProceduralBackend", "vocabulary"]
