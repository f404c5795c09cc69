"""Texture maps for game engines, derived from a tileable albedo, and the seam measure that proves tiling.

`derive_maps(albedo, kind=...)` makes the maps a PBR material takes beside its albedo:

- `height` (L): luminance with material-aware tweaks (bright metal scratches become grooves, dark
  late wood stands proud, dark stone cracks sink), normalised by robust percentiles and smoothed;
- `normal` (RGB): tangent-space normals of that height, OpenGL convention (`NORMAL_CONVENTION`):
  red = +X right, green = +Y up, blue = +Z out of the surface, each component encoded as
  (n + 1) / 2 * 255. A surface rising towards the top of the image faces down (green < 128);
  DirectX-convention engines (Unreal) flip the green channel;
- `roughness` (L, 0 smooth .. 255 rough): a per-material base (metal low, cloth high) varied by the
  albedo (scratches, pores, creases rougher).

Every filter wraps around the borders (scipy.ndimage `mode="wrap"`, periodic finite differences),
so the maps of a tileable albedo tile too: `seam_measure` says so for each of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from echo_pipeline.errors import InvalidInputError

NORMAL_CONVENTION = "OpenGL (+Y up)"
KINDS = ("metal", "wood", "stone", "leather", "cloth")  # the procedural `material` motif's kinds
# seam_ratio at or under this: the wrap edge is no busier than the rest of the image (invisible seam).
# Exactly periodic textures measure about 0.3 .. 3: the seam is one line of pixels, and streaky or
# regular textures (brushed metal, wood fibres, woven threads) vary that much from line to line;
# a seam that shows measures 10 and far more.
SEAM_RATIO_TILEABLE = 3.0
MIN_SIDE = 8

# relief of the height map's full range, in pixels at 512 px (how strongly the normal map tilts)
_DEPTH = {"metal": 2.0, "wood": 3.0, "stone": 7.0, "leather": 4.0, "cloth": 5.0, None: 4.0}
# (base roughness, how much fine detail roughens, how much darkness roughens)
_ROUGHNESS = {"metal": (0.28, 0.35, 0.18), "wood": (0.58, 0.12, 0.22), "stone": (0.82, 0.12, 0.08),
              "leather": (0.5, 0.12, 0.25), "cloth": (0.86, 0.06, 0.1), None: (0.65, 0.2, 0.1)}


def _luma(image: Any) -> np.ndarray:
    """Rec. 709 luma of the stored (sRGB-coded) values, float64 in [0, 1]; (h, w)."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("L") if image.mode in ("L", "I;16", "I", "F") else image.convert("RGB"),
                         dtype=np.float64)
        arr = arr / (65535.0 if image.mode == "I;16" else 255.0) if image.mode != "F" else arr
    else:
        arr = np.asarray(image, dtype=np.float64)
        if arr.size and arr.max() > 1.0:
            arr = arr / 255.0
    if arr.ndim == 3:
        if arr.shape[2] < 3:
            arr = arr[..., 0]
        else:
            arr = arr[..., 0] * 0.2126 + arr[..., 1] * 0.7152 + arr[..., 2] * 0.0722
    if arr.ndim != 2 or min(arr.shape) < MIN_SIDE:
        raise InvalidInputError(f"texture image must be 2-D and at least {MIN_SIDE}x{MIN_SIDE} px, got shape "
                                f"{tuple(arr.shape)}")
    return arr


def seam_measure(image: Any) -> dict[str, float]:
    """How visible the wrap-around seam of `image` (PIL image or array) is when it tiles.

    Definition: tile the luma 2x2; take squared differences of horizontally and vertically adjacent
    pixels. `seam_energy` is their mean over the pairs that straddle the copies' joins (the column
    pair w-1 | w and the row pair h-1 | h, i.e. across the original's wrap edges); `interior_energy`
    their mean over all other pairs. `seam_ratio` = seam / interior: about 1 when the seam is as
    busy as any other place (invisible), far above 1 when the edges do not match (a non-tiling image
    gives tens to thousands). Both flat: ratio 1. Luma is of the stored sRGB values in [0, 1].
    """
    lum = _luma(image)
    h, w = lum.shape
    tiled = np.tile(lum, (2, 2))
    dx = np.diff(tiled, axis=1) ** 2  # (2h, 2w - 1): column w - 1 crosses the join
    dy = np.diff(tiled, axis=0) ** 2  # (2h - 1, 2w): row h - 1 crosses the join
    seam = np.concatenate([dx[:, w - 1], dy[h - 1, :]])
    interior = np.concatenate([np.delete(dx, w - 1, axis=1).ravel(), np.delete(dy, h - 1, axis=0).ravel()])
    seam_energy, interior_energy = float(seam.mean()), float(interior.mean())
    if interior_energy <= 1e-12:
        ratio = 1.0 if seam_energy <= 1e-12 else float(seam_energy / 1e-12)
    else:
        ratio = seam_energy / interior_energy
    return {"seam_energy": seam_energy, "interior_energy": interior_energy, "seam_ratio": float(ratio)}


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(a, sigma, mode="wrap", truncate=3.0) if sigma > 0 else a


def _normalise(a: np.ndarray) -> np.ndarray:
    """Stretch the 1st..99th percentile to 0..1 (a few outliers do not flatten the map)."""
    lo, hi = np.percentile(a, [1.0, 99.0])
    if hi - lo < 1e-9:
        return np.full_like(a, 0.5)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def _height(lum: np.ndarray, kind: str | None, scale: float) -> np.ndarray:
    """Height 0..1 from luma, per material: what is raised and what is sunk."""
    if kind == "metal":
        # local relief only (broad tone on metal is reflection, not shape); thin bright scratches are
        # grooves cut into it
        scratches = np.clip(lum - _blur(lum, 1.5 * scale), 0, None)
        height = _normalise(_blur(lum, 1.5 * scale) - _blur(lum, 20.0 * scale)) - 0.6 * _normalise(scratches)
    elif kind == "wood":
        height = 1.0 - lum  # worn early wood erodes: the dark late-wood rings stand proud
    elif kind == "stone":
        cracks = np.clip(lum - _blur(lum, 3.0 * scale), None, 0)  # dark thin features: sunk deeper
        height = lum + 1.5 * cracks
    else:  # leather (domes light, creases dark), cloth (threads light, gaps dark), anything else
        height = lum
    return _blur(_normalise(height), max(0.6, 0.8 * scale))


def normal_from_height(height: np.ndarray, *, depth: float = 4.0) -> Image.Image:
    """Tangent-space normal map (RGB, OpenGL +Y up) of a height field (0..1), whose full range is
    `depth` pixels of relief. Periodic central differences: it tiles when the height does.
    Image rows grow downwards, so d/dy(up) = -d/drow; n = normalise(-dh/dx, -dh/dy_up, 1)."""
    h = np.asarray(height, dtype=np.float64) * float(depth)
    dh_dx = (np.roll(h, -1, axis=1) - np.roll(h, 1, axis=1)) * 0.5
    dh_dup = (np.roll(h, 1, axis=0) - np.roll(h, -1, axis=0)) * 0.5  # row above minus row below
    n = np.stack([-dh_dx, -dh_dup, np.ones_like(h)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return Image.fromarray(np.clip(np.round((n * 0.5 + 0.5) * 255.0), 0, 255).astype(np.uint8), "RGB")


def decode_normal(normal: Image.Image) -> np.ndarray:
    """(h, w, 3) float vectors of an OpenGL normal map (x right, y up, z out), each about unit length."""
    return np.asarray(normal.convert("RGB"), dtype=np.float64) / 255.0 * 2.0 - 1.0


def _roughness(lum: np.ndarray, kind: str | None, scale: float) -> np.ndarray:
    base, detail_gain, dark_gain = _ROUGHNESS[kind]
    detail = np.abs(lum - _blur(lum, 2.0 * scale))
    detail = np.clip(detail / max(float(np.percentile(detail, 99.0)), 1e-6), 0, 1)
    dark = 1.0 - _normalise(_blur(lum, 2.0 * scale))
    rough = base + detail_gain * (detail - 0.3) + dark_gain * (dark - 0.5)
    return np.clip(_blur(rough, max(0.6, 0.8 * scale)), 0.02, 1.0)


def _to_l(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8), "L")


def derive_maps(albedo: Image.Image, *, kind: str | None = None) -> dict[str, Image.Image]:
    """Height (L), normal (RGB, `NORMAL_CONVENTION`) and roughness (L) maps of a tileable albedo,
    the albedo's size each, tileable when it is. `kind`: one of `KINDS` (material-aware height and
    roughness) or None (generic). Deterministic: same albedo, same bytes."""
    if not isinstance(albedo, Image.Image):
        raise InvalidInputError(f"derive_maps needs a PIL image, got {type(albedo).__name__}")
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(f"unknown material kind {kind!r}: use one of {', '.join(KINDS)}")
    lum = _luma(albedo)
    scale = float(np.sqrt(lum.size)) / 512.0
    height = _height(lum, kind, scale)
    height_img = _to_l(height)
    # the normals come from the quantised height: exactly what an engine reading the PNG would see
    quantised = np.asarray(height_img, dtype=np.float64) / 255.0
    normal = normal_from_height(_blur(quantised, 0.5), depth=_DEPTH[kind] * max(scale, 0.25))
    return {"height": height_img, "normal": normal, "roughness": _to_l(_roughness(lum, kind, scale))}
