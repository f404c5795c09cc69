"""Learn a style preset from reference images (`echo-os memory --learn-from`).

From any PNG/JPEG/WebP images (a user's own references, or stored artifacts) it learns:

* **palette**: each image is reduced to its 6 dominant colours (PIL median-cut quantisation of a
  64 px copy), converted to OKLab. The distance of an image to a named palette (the palettes the
  procedural renderer draws with, whose names also mean something to diffusion models: warm,
  ocean, neon noir...) is the weighted mean, over its dominant colours, of the OKLab
  distance to the palette's nearest colour (stops, background, accents), each colour weighted by the
  square root of its pixel share (so a large dark ground does not drown the accents). The palette with the
  lowest mean distance over all references wins; `palette_distance` reports it (0 = identical
  colours; below ~0.08 the colours are close, above ~0.15 the match is loose).
* **words**: prompt words found in at least half of the references that carry a prompt (A1111
  `parameters` or echo lineage in their PNG, or an artifact's record), stop words and numbers
  dropped, at most `MAX_WORDS`, most frequent first.
* **style descriptor centroid and spread** of the references (the offline embedder), so a later
  consistency check can compare new images with them.

The style's prompt is "<palette> palette, <words>" (appended to prompts, A1111 style semantics), so
`render --style <name>` and project specs can use it on every backend.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends.procedural.palettes import (
    PALETTES,
    hex_to_rgb,
    linear_to_oklab,
    srgb_to_linear,
)
from echo_pipeline.resonance.embedders import StyleDescriptor, to_rgb
from echo_pipeline.resonance.memory_system import tokenize

DOMINANT_COLOURS = 6
WORK_SIDE = 64
MAX_WORDS = 6
MAX_REFERENCES = 500
MATERIAL_PALETTES = frozenset({"steel", "wood", "stone"})  # texture materials, not a look to learn


@dataclass
class LearnedStyle:
    palette: str
    palette_distance: float
    words: list[str]
    images: int
    prompts: int
    centroid: list[float] = field(default_factory=list)
    spread: float = 0.0

    @property
    def description(self) -> str:
        return ", ".join([f"{self.palette} palette", *self.words])


def _dominant(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(k, 3) OKLab colours and their pixel shares."""
    small = to_rgb(image).copy()
    small.thumbnail((WORK_SIDE, WORK_SIDE))
    quantised = small.quantize(colors=DOMINANT_COLOURS, method=Image.Quantize.MEDIANCUT)
    palette = np.asarray((quantised.getpalette() or [])[: 3 * DOMINANT_COLOURS], dtype=np.float32).reshape(-1, 3) / 255.0
    counts = np.bincount(np.asarray(quantised).ravel(), minlength=len(palette)).astype(np.float64)
    used = counts > 0
    return linear_to_oklab(srgb_to_linear(palette[used])), counts[used] / counts.sum()


def _palette_colours(name: str) -> np.ndarray:
    spec = PALETTES[name]
    codes = [*spec["stops"], spec["bg"], *spec["accents"]]
    return linear_to_oklab(srgb_to_linear(np.asarray([hex_to_rgb(c) for c in codes], dtype=np.float32)))


def palette_distances(images: Sequence[Image.Image]) -> dict[str, float]:
    """Mean OKLab distance of the images' dominant colours to each named palette (lower = closer)."""
    names = [n for n in PALETTES if n not in MATERIAL_PALETTES]
    colours = {n: _palette_colours(n) for n in names}
    totals = dict.fromkeys(names, 0.0)
    for image in images:
        dominant, shares = _dominant(image)
        # sqrt of the pixel share: a dark ground must not drown the accent colours that make a look.
        weights = np.sqrt(shares) / np.sqrt(shares).sum()
        for name, reference in colours.items():
            nearest = np.linalg.norm(dominant[:, None, :] - reference[None, :, :], axis=2).min(axis=1)
            totals[name] += float((nearest * weights).sum())
    return {n: t / max(1, len(images)) for n, t in totals.items()}


def nearest_palette(image: Image.Image) -> str:
    """The named palette nearest an image's dominant colours (what `palette_distances` ranks first)."""
    return _closest(palette_distances([image]))


def _closest(distances: dict[str, float]) -> str:
    return min(distances, key=lambda n: (distances[n], n))


def prompt_names_palette(prompt: str) -> bool:
    """Whether a prompt already asks for a palette (a palette word such as "warm", "ocean" or
    "neon noir", or a material with its own colours): a learned palette must not override it."""
    from echo_pipeline.render.backends.procedural.words import parse

    return parse(prompt).palette is not None


def learn_from_images(images: Sequence[Image.Image], prompts: Sequence[str | None]) -> LearnedStyle:
    """The style of `images` (see the module docstring); `prompts[i]` is image i's prompt or None."""
    if not images:
        raise InvalidInputError("no reference images to learn from")
    if len(images) > MAX_REFERENCES:
        raise InvalidInputError(f"{len(images)} reference images; learn from at most {MAX_REFERENCES}")
    distances = palette_distances(images)
    palette = _closest(distances)
    known = [p for p in prompts if p]
    counts = Counter(tok for p in known for tok in tokenize(p))
    palette_words = set(palette.split()) | {"palette"}
    words = [t for t, c in counts.most_common() if 2 * c >= len(known) and t not in palette_words
             and not t.isdigit()][:MAX_WORDS] if known else []
    embeddings = StyleDescriptor().embed([to_rgb(i) for i in images])
    mean = embeddings.mean(axis=0)
    centroid = mean / max(float(np.linalg.norm(mean)), 1e-12)
    spread = float(np.mean(1.0 - embeddings @ centroid))
    return LearnedStyle(palette=palette, palette_distance=round(distances[palette], 4), words=words,
                        images=len(images), prompts=len(known), centroid=[float(x) for x in centroid],
                        spread=round(spread, 4))
