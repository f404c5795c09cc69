"""Quality scores for generated images. Every score is 0-100, higher is better.

Technical scores (`technical_scores`, computed on a copy downscaled to at most 256 px, a few ms each;
luminance Y = 0.299 R + 0.587 G + 0.114 B on the 0-255 scale):

* **sharpness** = 100 * (1 - exp(-var(Laplacian(Y)) / 400)). Variance of the 4-neighbour Laplacian,
  mapped through a saturating curve: 0 for a flat or very blurry image, ~22 at variance 100 (the
  classic "blurry" threshold), ~63 at 400, ~92 at 1000 (crisp detail), 100 for noise-like detail.
* **contrast** = 100 * tanh(std(Y) / 48). 0 for a flat image, ~76 at std 48, ~91 at std 72 (a
  well-spread photograph), ~99 for a hard black/white split (std 127.5).
* **colourfulness** = min(100, M) with Hasler & Süsstrunk's (2003) metric
  M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2), rg = R - G,
  yb = (R + G) / 2 - B. Their scale: 0 grey, ~15 slightly, ~33 moderately, ~45 averagely,
  ~59 quite, ~82 highly, ~109 extremely colourful (capped at 100).
* **entropy** = 100 * H / 8, H the Shannon entropy (bits) of the 256-bin luminance histogram:
  0 for a single grey level, 100 when every level is equally frequent.
* **exposure** = 100 * clip_factor * level_factor. `clipped` = fraction of pixels with Y <= 4
  (crushed shadows) plus fraction with Y >= 251 (blown highlights); the first 5 % are free
  (generative art has black backgrounds and bright highlights), then the factor falls linearly to 0 at
  55 % clipped: clip_factor = clip01(1 - (clipped - 0.05) / 0.5). level_factor = 1 - ((mean(Y) -
  127.5) / 127.5)^2: 1 at mid-grey, 0.75 at a mean of 64 or 191, 0 for all-black or all-white.
* **noise** = 100 * exp(-(sigma / NOISE_SCALE)^2), higher = cleaner, sigma Immerkær's (1996) fast
  noise estimate on Y: sigma = sqrt(pi/2) / (6 (W-2)(H-2)) * sum |Y * N|, N the 3x3 mask
  [[1,-2,1],[-2,4,-2],[1,-2,1]] (it cancels planes and straight edges, so what is left is mostly
  pixel noise). NOISE_SCALE = 12 grey levels: ~94 at sigma 3 (clean procedural renders measure 2-4:
  dithering and fine detail), ~71 at 7 (busy textures), 50 at 10, ~6 at 20 and 0 for pure noise
  (uniform RGB noise measures ~50, Gaussian noise of std s measures about 0.67 s on Y).
  Noise is not detail: the Laplacian variance rises with noise (by 20 sigma^2 for white noise), so
  **sharpness is damped by the noise score**: sharpness = sharpness_raw * noise / 100, where
  sharpness_raw is the curve above. A clean render keeps ~95 % of it, pure noise gets 0.
* **technical** = weighted mean of the six with the technical weights (`configs/scoring.yaml`,
  built-in `TECHNICAL_WEIGHTS`: sharpness 0.20, contrast 0.15, colourfulness 0.10, entropy 0.10,
  exposure 0.15, noise 0.30). Before the noise component, uniform RGB noise out-scored clean fractal
  renders (94 against 55-82: sharpness, entropy and colourfulness all reward noise); now uniform and
  Gaussian noise score 38-46 and clean 256 px procedural renders 59-83 (warm fractals 65-83).

Weights (`load_scoring_weights(config_dir)` reads `config_dir/scoring.yaml`, sections `technical`
and `total`; a missing file or section means the built-in values, a missing key its built-in
value; an unknown key, a negative or non-numeric weight or an all-zero section is a one-line
`InvalidInputError` naming the file and the key). `QualityAssessor(weights=None)` uses the
built-in values; callers pass `load_scoring_weights(settings.config_dir)`.

Batch scores (`QualityAssessor.assess`):

* **style_consistency** (see `style_consistency`): cosine distance d of the image's style embedding to
  the style centroid, relative to the style's spread s (the mean cosine distance of its images to the
  centroid, floored at `SPREAD_FLOOR` = 0.05): score = 100 / (1 + (d / (3 s))^4). An image at the
  style's typical distance (d = s) scores ~99, at 2 s ~84, at 3 s exactly 50, at 4 s ~24, and a
  different style (typically d > 5 s) < 12. On procedural renders (16 palette x motif styles, centroid
  from 5 images) about 80 % of held-out same-style images score > 80 and 93 % of other-style images
  < 50 (the rest are near-identical palettes such as "warm" and "fire"). Without a centroid, the
  batch is its own reference: each image is compared with the centroid of the *other* images
  (leave-one-out, so an outlier does not pull the centroid to itself) and the spread is the median of
  those distances; NaN when there is no centroid and fewer than 2 images.
* **uniqueness** = 100 * min(h, 20) / 20, h the Hamming distance of the 64-bit perceptual hash
  (`imagehash.phash`) to the nearest other image in the batch or in `reference_hashes`: 0 = identical,
  20 = near-duplicate (h <= 4, `NEAR_DUPLICATE_DISTANCE`), 100 from h >= 20 bits (unrelated images
  differ by ~32 bits on average). 100 when there is nothing to compare with. `nearest_id` names it.
* **project-wide near-duplicates** (`project_near_duplicates`, the `unique_images` check): every new
  image against every image already in the project and the other new ones, flagged at pHash distance
  <= `PROJECT_DUPLICATE_DISTANCE` (10 bits of 64; see there why 10).
* **alignment**: prompt alignment, CLIPScore convention 100 * max(cos, 0) of the CLIP image and prompt
  embeddings (`clip.ClipScorer`): NaN without a `ClipScorer`, or for an image without a prompt.
* **aesthetic** = clip(AESTHETIC_SCALE * head output, 0, 100), AESTHETIC_SCALE = 10: the LAION
  1-10 rating scale as 0-100. NaN without a `ClipScorer` or when it has no aesthetic head.
* **total** = weighted mean of the *available* (non-NaN) components with the total weights
  (built-in `TOTAL_WEIGHTS`: technical 0.35, style_consistency 0.25, uniqueness 0.15, alignment 0.15,
  aesthetic 0.10), re-normalised over the components present.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from echo_pipeline.errors import InvalidInputError, StorageError
from echo_pipeline.resonance.embedders import StyleDescriptor, downscale, get_embedder

if TYPE_CHECKING:
    from echo_pipeline.artifacts.storage import ArtifactStore
    from echo_pipeline.resonance.clip import ClipScorer

WORK_SIDE = 256
SHARPNESS_SCALE = 400.0
CONTRAST_SCALE = 48.0
CLIP_LOW, CLIP_HIGH = 4, 251
CLIP_FREE, CLIP_SPAN = 0.05, 0.50
NOISE_SCALE = 12.0  # Immerkær sigma (grey levels of Y) at which noise = 100 / e; 50 at sigma = 10
AESTHETIC_SCALE = 10.0  # aesthetic head output (LAION's 1-10 scale) -> 0-100

# Built-in weights; `configs/scoring.yaml` overrides them (see `load_scoring_weights`).
TECHNICAL_WEIGHTS: dict[str, float] = {
    "sharpness": 0.20, "contrast": 0.15, "colourfulness": 0.10, "entropy": 0.10, "exposure": 0.15, "noise": 0.30,
}
TOTAL_WEIGHTS: dict[str, float] = {
    "technical": 0.35, "style_consistency": 0.25, "uniqueness": 0.15, "alignment": 0.15, "aesthetic": 0.10,
}

SPREAD_FLOOR = 0.05  # cosine distance: a spread below this (a very tight set) is treated as this
SPREAD_CEIL = 0.20  # ... and one above this (a mixed bag of styles) as this, so "consistent" keeps a meaning
DEFAULT_SPREAD = 0.10  # median spread of a procedural style; used when a centroid comes without one
CONSISTENCY_HALF = 3.0  # d / spread at which style_consistency = 50
CONSISTENCY_POWER = 4.0  # steepness of the fall-off
UNIQUE_FULL_BITS = 20  # phash distance from which uniqueness = 100
NEAR_DUPLICATE_DISTANCE = 4
# Project-wide near-duplicate threshold, in pHash bits (of 64) that differ: <= 10 is a duplicate.
# Why 10: pairs from different batches of one collection at distances 6-10 looked identical to a
# reviewer (the same Burning Ship mini-ship in the same place), so 10 must be caught; renders that
# merely share a subject (that mini-ship at another zoom, tilt or place) sit at 12-16, and unrelated
# images differ by ~32 +- 4. A tighter value (the per-image score's 4) lets identical-looking pairs
# through; a looser one (>= 12) flags variations a collection is meant to have.
PROJECT_DUPLICATE_DISTANCE = 10
_HASH_BLOCK = 1 << 22  # distances computed per block of (new x all) pairs: ~32 MB of uint64 at a time

SCORING_FILE = "scoring.yaml"

# Bump when a score's definition changes: stored scores of an older version are computed again by
# the next quality_scores step (2: the noise component and noise-damped sharpness).
SCORER_VERSION = 2
SCORE_COLUMNS = (
    "artifact_id", "sharpness", "contrast", "colourfulness", "entropy", "exposure", "noise", "technical",
    "style_consistency", "uniqueness", "nearest_id", "phash", "alignment", "aesthetic", "total",
)
TECHNICAL_KEYS = ("sharpness", "contrast", "colourfulness", "entropy", "exposure", "noise", "technical")


# --------------------------------------------------------------------------------------------------
# Weights


def _default_technical() -> dict[str, float]:
    return dict(TECHNICAL_WEIGHTS)


def _default_total() -> dict[str, float]:
    return dict(TOTAL_WEIGHTS)


class ScoringWeights(BaseModel):
    """Weights of the technical components and of the total; see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    technical: dict[str, float] = Field(default_factory=_default_technical)
    total: dict[str, float] = Field(default_factory=_default_total)


def _section(path: Path, data: Mapping[str, Any], name: str, defaults: Mapping[str, float]) -> dict[str, float]:
    raw = data.get(name)
    if raw is None:
        return dict(defaults)
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"{path}: '{name}' must be a mapping of component: weight")
    out = dict(defaults)
    for key, value in raw.items():
        where = f"{path}: '{name}.{key}'"
        if key not in defaults:
            raise InvalidInputError(f"{where} is not a {name} component; known: {', '.join(defaults)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
            raise InvalidInputError(f"{where} must be a number, got {value!r}")
        if value < 0:
            raise InvalidInputError(f"{where} must be >= 0, got {value!r}")
        out[str(key)] = float(value)
    if sum(out.values()) <= 0:
        raise InvalidInputError(f"{path}: '{name}' weights are all zero")
    return out


def load_scoring_weights(config_dir: Path | None) -> ScoringWeights:
    """Weights from `config_dir/scoring.yaml` (None: the default config folder); built-ins when absent."""
    import yaml

    if config_dir is None:
        from echo_pipeline.settings import default_config_dir

        config_dir = default_config_dir()
    path = Path(config_dir) / SCORING_FILE
    if not path.is_file():
        return ScoringWeights()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(f"{path}: cannot be read as YAML: {first}") from exc
    if data is None:
        return ScoringWeights()
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{path}: expected a mapping with 'technical' and 'total' sections")
    unknown = [str(k) for k in data if k not in ("technical", "total")]
    if unknown:
        raise InvalidInputError(f"{path}: '{unknown[0]}' is not a section; known: technical, total")
    return ScoringWeights(technical=_section(path, data, "technical", TECHNICAL_WEIGHTS),
                          total=_section(path, data, "total", TOTAL_WEIGHTS))


# --------------------------------------------------------------------------------------------------
# Technical scores


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def noise_sigma(y: np.ndarray) -> float:
    """Immerkær's fast noise standard deviation of a 2-D luminance array (0 below 3x3)."""
    h, w = y.shape
    if h < 3 or w < 3:
        return 0.0
    # The mask [[1,-2,1],[-2,4,-2],[1,-2,1]] is the outer product of [1,-2,1] with itself: two 1-D passes.
    rows = y[:, :-2] - 2.0 * y[:, 1:-1] + y[:, 2:]
    conv = rows[:-2] - 2.0 * rows[1:-1] + rows[2:]
    return math.sqrt(math.pi / 2.0) / (6.0 * (w - 2) * (h - 2)) * float(np.abs(conv).sum(dtype=np.float64))


def technical_scores(image: Image.Image, weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """sharpness, contrast, colourfulness, entropy, exposure, noise and their weighted mean `technical`, 0-100.

    `weights`: the technical weights (default `TECHNICAL_WEIGHTS`, see `load_scoring_weights`).
    """
    small = downscale(image, WORK_SIDE)
    rgb = np.asarray(small, dtype=np.float32)
    y = _luma(rgb)

    noise = 100.0 * math.exp(-((noise_sigma(y) / NOISE_SCALE) ** 2))
    if min(y.shape) >= 3:
        lap = y[1:-1, :-2] + y[1:-1, 2:] + y[:-2, 1:-1] + y[2:, 1:-1] - 4.0 * y[1:-1, 1:-1]
        lap_var = float(lap.var())
    else:
        lap_var = 0.0
    sharpness = 100.0 * (1.0 - math.exp(-lap_var / SHARPNESS_SCALE)) * noise / 100.0

    std = float(y.std())
    contrast = 100.0 * math.tanh(std / CONTRAST_SCALE)

    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    m = math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))
    colourfulness = min(100.0, m)

    levels = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    hist = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    entropy = 100.0 * float(-(p * np.log2(p)).sum()) / 8.0

    n = hist.sum()
    clipped = float(hist[: CLIP_LOW + 1].sum() + hist[CLIP_HIGH:].sum()) / n
    clip_factor = min(1.0, max(0.0, 1.0 - (clipped - CLIP_FREE) / CLIP_SPAN))
    level_factor = max(0.0, 1.0 - ((float(y.mean()) - 127.5) / 127.5) ** 2)
    exposure = 100.0 * clip_factor * level_factor

    scores = {
        "sharpness": sharpness, "contrast": contrast, "colourfulness": colourfulness,
        "entropy": entropy, "exposure": exposure, "noise": noise,
    }
    w = TECHNICAL_WEIGHTS if weights is None else weights
    scores["technical"] = sum(scores[k] * float(w.get(k, 0.0)) for k in scores) / sum(float(w.get(k, 0.0)) for k in scores)
    return {k: float(min(100.0, max(0.0, v))) for k, v in scores.items()}


# --------------------------------------------------------------------------------------------------
# Style consistency


def consistency_from_distance(distances: np.ndarray | float, spread: float | None) -> np.ndarray:
    """100 / (1 + (d / (CONSISTENCY_HALF * clip(spread, SPREAD_FLOOR, SPREAD_CEIL)))^CONSISTENCY_POWER)."""
    s = DEFAULT_SPREAD if spread is None or not np.isfinite(spread) else float(spread)
    scale = CONSISTENCY_HALF * min(max(s, SPREAD_FLOOR), SPREAD_CEIL)
    d = np.maximum(np.asarray(distances, dtype=np.float64), 0.0)
    return 100.0 / (1.0 + (d / scale) ** CONSISTENCY_POWER)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def style_consistency(embeddings: np.ndarray, centroid: np.ndarray, spread: float | None = None) -> np.ndarray:
    """Score (n,) 0-100 of each embedding against a style centroid; see the module docstring.

    `spread` is the style's mean cosine distance to its centroid (`StyleMemory.spread`); None uses
    `DEFAULT_SPREAD`.
    """
    emb = _unit_rows(embeddings)
    c = _unit_rows(np.asarray(centroid, dtype=np.float64).ravel())[0]
    if emb.shape[1] != c.shape[0]:
        raise InvalidInputError(
            f"style centroid has {c.shape[0]} dimensions but the embeddings have {emb.shape[1]}: "
            "was the style memory learned with another embedder?"
        )
    distances = 1.0 - emb @ c
    return consistency_from_distance(distances, spread)


def batch_consistency(embeddings: np.ndarray) -> np.ndarray:
    """Style consistency of a batch against itself (leave-one-out centroids, median spread); NaN for < 2."""
    emb = _unit_rows(embeddings)
    n = emb.shape[0]
    if n < 2:
        return np.full(n, np.nan)
    total = emb.sum(axis=0)
    others = total[None, :] - emb
    others = _unit_rows(others)
    distances = 1.0 - np.einsum("ij,ij->i", emb, others)
    spread = float(np.median(distances))
    return consistency_from_distance(distances, spread)


# --------------------------------------------------------------------------------------------------
# Uniqueness


def phash_hex(image: Image.Image) -> str:
    """64-bit DCT perceptual hash as 16 hex digits."""
    return str(imagehash.phash(downscale(image, WORK_SIDE)))


def uniqueness_from_distance(distance: float | int | None) -> float:
    if distance is None:
        return 100.0
    return 100.0 * min(int(distance), UNIQUE_FULL_BITS) / UNIQUE_FULL_BITS


def nearest_hashes(
    ids: Sequence[str], hashes: Sequence[str], reference_hashes: Mapping[str, str] | None = None
) -> list[tuple[str | None, int | None]]:
    """For each (id, hash): the nearest *other* id in the batch or the references, and the distance."""
    ref = {k: v for k, v in (reference_hashes or {}).items() if v}
    batch_ids = set(ids)
    ref_ids = [k for k in ref if k not in batch_ids]  # a re-scored id is compared with its new hash only
    all_ids = list(ids) + ref_ids
    n = len(ids)
    if len(all_ids) < 2:
        return [(None, None)] * n
    values = hash_ints(list(hashes) + [ref[k] for k in ref_ids])
    # Hamming distance = set bits of the XOR, for all pairs at once.
    dist = popcount(values[:n, None] ^ values[None, :]).astype(np.int32)
    dist[np.arange(n), np.arange(n)] = 10_000
    nearest = dist.argmin(axis=1)
    return [(all_ids[j], int(dist[i, j])) for i, j in enumerate(nearest)]


def hamming(hex_a: str, hex_b: str) -> int:
    a, b = hash_ints([hex_a, hex_b])
    return int(popcount(np.asarray([a ^ b]))[0])


def near_duplicates(df: pd.DataFrame, max_distance: int = NEAR_DUPLICATE_DISTANCE) -> list[tuple[str, str, int]]:
    """Pairs (id_a, id_b, distance) of artifacts whose phashes differ by <= max_distance bits.

    Each pair once, id_a before id_b in the frame's order, sorted by distance then order.
    """
    if df is None or len(df) == 0:
        return []
    if "phash" not in df.columns or "artifact_id" not in df.columns:
        raise InvalidInputError("near_duplicates needs a score table with 'artifact_id' and 'phash' columns")
    frame = df[df["phash"].notna() & (df["phash"].astype(str) != "")]
    ids = [str(x) for x in frame["artifact_id"]]
    values = hash_ints(list(frame["phash"].astype(str)))
    if len(ids) < 2:
        return []
    dist = popcount(values[:, None] ^ values[None, :])
    ii, jj = np.nonzero(np.triu(dist <= max_distance, k=1))
    pairs = [(ids[i], ids[j], int(dist[i, j])) for i, j in zip(ii, jj, strict=True) if ids[i] != ids[j]]
    return sorted(pairs, key=lambda p: p[2])


def hash_ints(hex_hashes: Sequence[str]) -> np.ndarray:
    """64-bit pHashes (16 hex digits, as `phash_hex` writes them) as a uint64 array."""
    try:
        return np.array([int(str(h), 16) for h in hex_hashes], dtype=np.uint64).reshape(-1)
    except (ValueError, OverflowError) as exc:
        raise InvalidInputError(f"invalid perceptual hash in {list(hex_hashes)[:3]!r}...: {exc}") from exc


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element (NumPy >= 2 has a ufunc for it; older ones count per byte)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int16)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int16)
    return table[np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1)


def project_near_duplicates(
    new: Mapping[str, str], existing: Mapping[str, str], max_distance: int = PROJECT_DUPLICATE_DISTANCE,
) -> list[tuple[str, str, int]]:
    """Near-duplicate pairs (new id, other id, distance) of new images against the project's existing
    images and against each other, at pHash distance <= `max_distance`; sorted by distance.

    Vectorised: XOR of 64-bit hashes and a popcount, (new x all) in blocks, so a 100-image batch
    against 100k stored images costs a few milliseconds. An id in both maps counts as new (its
    stored hash is stale). Each new-new pair appears once.
    """
    new_ids = [str(k) for k, v in new.items() if v]
    old_ids = [str(k) for k, v in existing.items() if v and str(k) not in new]
    if not new_ids:
        return []
    new_h = hash_ints([new[k] for k in new_ids])
    all_ids = new_ids + old_ids
    all_h = np.concatenate([new_h, hash_ints([existing[k] for k in old_ids])])
    n = len(new_ids)
    pairs: list[tuple[str, str, int]] = []
    rows = max(1, _HASH_BLOCK // max(1, len(all_h)))
    for start in range(0, n, rows):
        dist = popcount(new_h[start:start + rows, None] ^ all_h[None, :])
        ii, jj = np.nonzero(dist <= max_distance)
        for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
            a = start + i
            # new vs new: once (a < j); new vs existing: always
            if j >= n or a < j:
                pairs.append((new_ids[a], all_ids[j], int(dist[i, j])))
    return sorted(pairs, key=lambda p: (p[2], p[0], p[1]))


def project_hashes(store: ArtifactStore, project: str, exclude: Collection[str] = (),
                   unreadable: dict[str, str] | None = None) -> dict[str, str]:
    """pHashes of every image already in `project` (artifact id -> hex), except `exclude`.

    From the score table's `phash` column where an image was scored (hashed from the same
    thumbnails), else from the stored thumbnail; each read once. An image whose thumbnail and PNG
    cannot be read raises StorageError, or with `unreadable` given is left out and recorded there
    (artifact id -> the one-line reason).
    """
    from echo_pipeline.resonance.memory_system import load_scores  # memory_system imports this module

    skip = set(exclude)
    scores = load_scores(store, project)
    known = {str(a): str(h) for a, h in zip(scores["artifact_id"], scores["phash"], strict=True)
             if isinstance(h, str) and h and str(a) not in skip}
    catalog = store.catalog(project)
    for artifact_id in catalog["artifact_id"].astype(str):
        if artifact_id not in known and artifact_id not in skip:
            try:
                known[artifact_id] = phash_hex(store.load_thumbnail(project, artifact_id))
            except StorageError as exc:
                if unreadable is None:
                    raise
                unreadable[artifact_id] = str(exc)
    return known


# --------------------------------------------------------------------------------------------------
# Totals and the assessor


def weighted_total(row: Mapping[str, Any], weights: Mapping[str, float] = TOTAL_WEIGHTS) -> float:
    """Weighted mean of the non-NaN components in `row`; NaN when none is available."""
    num = 0.0
    den = 0.0
    for key, w in weights.items():
        value = row.get(key)
        if value is None:
            continue
        value = float(value)
        if math.isnan(value):
            continue
        num += w * value
        den += w
    return num / den if den > 0 else float("nan")


def empty_scores() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in SCORE_COLUMNS})
    for c in ("artifact_id", "nearest_id", "phash"):
        frame[c] = pd.Series(dtype="object")
    return frame


class QualityAssessor:
    """Scores a batch of (artifact_id, image) pairs; see the module docstring for every definition."""

    def __init__(
        self,
        embedder: StyleDescriptor | None = None,
        weights: ScoringWeights | None = None,
        clip: ClipScorer | None = None,
    ):
        """`weights`: None = the built-in weights (pass `load_scoring_weights(settings.config_dir)`);
        `clip`: fills `alignment` (needs prompts) and `aesthetic` (needs its head); loaded on first use."""
        self.embedder = embedder if embedder is not None else get_embedder()
        self.weights = weights if weights is not None else ScoringWeights()
        self.clip = clip

    def assess(
        self,
        items: Sequence[tuple[str, Image.Image]],
        *,
        centroid: np.ndarray | None = None,
        spread: float | None = None,
        reference_hashes: Mapping[str, str] | None = None,
        prompts: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        frame, _ = self.assess_with_embeddings(
            items, centroid=centroid, spread=spread, reference_hashes=reference_hashes, prompts=prompts
        )
        return frame

    def assess_with_embeddings(
        self,
        items: Sequence[tuple[str, Image.Image]],
        *,
        centroid: np.ndarray | None = None,
        spread: float | None = None,
        reference_hashes: Mapping[str, str] | None = None,
        prompts: Sequence[str] | None = None,
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """(score table with `SCORE_COLUMNS`, one row per item in order; (n, dim) style embeddings).

        `prompts`: one per item (an empty one gives NaN alignment); used only with a `ClipScorer`.
        """
        items = list(items)
        if prompts is not None:
            prompts = [str(p) if p is not None else "" for p in prompts]
            if len(prompts) != len(items):
                raise InvalidInputError(f"{len(items)} images but {len(prompts)} prompts")
        ids = [str(a) for a, _ in items]
        if len(set(ids)) != len(ids):
            dupes = sorted({a for a in ids if ids.count(a) > 1})
            raise InvalidInputError(f"artifact ids must be unique in one batch; repeated: {', '.join(dupes[:5])}")
        if not items:
            return empty_scores(), np.zeros((0, self.embedder.dim), dtype=np.float32)

        rows: list[dict] = []
        smalls = []
        for artifact_id, image in items:
            small = downscale(image, WORK_SIDE)  # shared by all scores: one resize per image
            smalls.append(small)
            row = {"artifact_id": artifact_id, **technical_scores(small, self.weights.technical),
                   "phash": str(imagehash.phash(small))}
            rows.append(row)
        embeddings = self.embedder.embed(smalls)
        alignment, aesthetic = self._clip_scores(smalls, prompts)

        if centroid is not None:
            consistency = style_consistency(embeddings, centroid, spread)
        else:
            consistency = batch_consistency(embeddings)

        nearest = nearest_hashes(ids, [r["phash"] for r in rows], reference_hashes)
        for i, (row, cons, (near_id, dist)) in enumerate(zip(rows, consistency, nearest, strict=True)):
            row["style_consistency"] = float(cons)
            row["uniqueness"] = uniqueness_from_distance(dist)
            row["nearest_id"] = near_id
            row["nearest_distance"] = dist
            row["alignment"] = float(alignment[i])
            row["aesthetic"] = float(aesthetic[i])
            row["total"] = weighted_total(row, self.weights.total)

        frame = pd.DataFrame(rows)
        frame["nearest_distance"] = frame["nearest_distance"].astype("Int64")
        columns = list(SCORE_COLUMNS) + ["nearest_distance"]
        return frame[columns], embeddings

    def _clip_scores(self, images: Sequence[Image.Image], prompts: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
        """(alignment, aesthetic) per image, both 0-100 or NaN; the images are embedded once."""
        n = len(images)
        alignment = np.full(n, np.nan)
        aesthetic = np.full(n, np.nan)
        if self.clip is None:
            return alignment, aesthetic
        has_prompt = [i for i, p in enumerate(prompts or []) if p.strip()]
        if not has_prompt and self.clip.aesthetic_head is None:
            return alignment, aesthetic
        image_emb = self.clip.embed_images(images)
        if has_prompt and prompts is not None:
            alignment[has_prompt] = self.clip.alignment_from_embeddings(
                image_emb[has_prompt], [prompts[i] for i in has_prompt])
        raw = self.clip.aesthetic_from_embeddings(image_emb)
        aesthetic = np.where(np.isnan(raw), np.nan, np.clip(AESTHETIC_SCALE * raw, 0.0, 100.0))
        return alignment, aesthetic
