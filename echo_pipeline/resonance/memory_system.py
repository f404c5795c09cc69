"""The project's style memory: what its accepted images look like, learned incrementally.

Learning (`learn_style`): an image is *accepted* when its total score >= `accept_threshold` (50 by
default). The memory keeps

* `centroid`: the normalised running mean of the accepted images' (unit) style embeddings. The mean
  vector m = (1/n) * sum(e_i) is never stored separately: its length |m| equals the mean cosine
  similarity of the accepted images to the normalised centroid, so `spread` = 1 - |m| and
  m = centroid * (1 - spread). That makes the update exact and O(dim): m' = (n m + sum(new)) / (n + k).
* `spread`: mean cosine distance of all accepted images to the centroid (exact, see above).
* `exemplars`: up to 8 ids of the most central, highest-scoring accepted images, ranked by
  0.5 * style_consistency + 0.5 * total (their embeddings are kept in `exemplar_embeddings` so they
  can be re-ranked as the centroid moves).
* `token_stats`: per prompt token, the Laplace-smoothed lift P(accepted | token) / P(accepted) over
  every image seen: > 1 means prompts with that word are accepted more often than average.
  Raw counts live in `token_seen` / `token_accepted` so the statistics update incrementally.
* `learned_modifiers`: up to 12 tokens with lift > 1 seen in at least 2 prompts (stop words,
  numbers and 1-2 letter tokens excluded), best first: modifiers prompt engineering can add.
* palette statistics: per named palette (the palette an image was rendered with when its backend
  says, else the named palette nearest its dominant colours, `style_learning.nearest_palette`) the
  images seen, accepted and the sum of their totals (`palette_seen`, `palette_accepted`,
  `palette_total`; `palette_table()` gives mean total and acceptance, `best_palette` the palette
  whose images score highest, from `MIN_TOKEN_SUPPORT` accepted images); and the accepted images'
  colours as a 4x4x4 RGB histogram (`colour_mass`, pixel share summed per bin, and `colour_sum`,
  the RGB sum per bin, so `dominant_colours()` gives each top bin's mean colour and share).
* `history`: one `MemorySnapshot` per `learn_style` call (bounded to the last `MAX_HISTORY`);
  `version` counts the calls that learned something, and `save_memory` also writes each version
  to its own file `resonance/memory/v<version>.json` that is never overwritten.

Idempotent: accepted ids are kept in `learned_ids` and every id seen in `seen_ids`; an image already
learned is skipped, an image seen but rejected is only reconsidered if it is now accepted (its token
counts are not counted twice). Repeating a call changes nothing but adds a history snapshot (with
`new_accepted = 0`).

The centroid is "stable" (`StyleMemory.stable`) from `MIN_STABLE_IMAGES` = 50 accepted images.
"""

from __future__ import annotations

import io
import math
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from echo_pipeline.errors import InvalidInputError, StorageError
from echo_pipeline.resonance.embedders import StyleDescriptor, to_rgb
from echo_pipeline.resonance.quality_assessor import (
    SCORE_COLUMNS,
    SCORER_VERSION,
    consistency_from_distance,
    empty_scores,
)

MIN_STABLE_IMAGES = 50
MAX_EXEMPLARS = 8
MAX_MODIFIERS = 12
MIN_TOKEN_SUPPORT = 2
MAX_HISTORY = 500
MEMORY_FILE = "resonance/style_memory.json"
MEMORY_VERSIONS_DIR = "resonance/memory"  # v0001.json, v0002.json...: one immutable file per version
COLOUR_BINS = 4  # per RGB channel: 64 colour bins
SCORES_FILE = "resonance/scores.parquet"

STOP_WORDS = frozenset(
    ["a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "for", "with", "without", "by", "from", "into", "over", "under", "as", "is", "are", "be", "this", "that", "it", "its", "very", "some", "no", "not", "de", "da", "ve", "bir", "ile"]
)
_TOKEN = re.compile(r"[a-z][a-z'-]*[a-z]|[a-z]")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class MemorySnapshot(BaseModel):
    """The memory after one `learn_style` call."""

    created: datetime = Field(default_factory=_now)
    count: int = Field(description="accepted images learned from so far")
    spread: float = Field(description="mean cosine distance of accepted images to the centroid")
    centroid_shift: float = Field(description="cosine distance between the previous and the new centroid")
    mean_total: float | None = Field(default=None, description="mean total score of this call's images")
    new_accepted: int = Field(default=0, description="images newly accepted in this call")
    seen: int = Field(default=0, description="images seen so far (accepted or not)")
    best_palette: str | None = Field(default=None, description="the palette whose images scored highest so far")


class StyleMemory(BaseModel):
    """A project's learned style (see the module docstring)."""

    project: str
    embedder: str = StyleDescriptor.name
    count: int = 0
    centroid: list[float] = Field(default_factory=list)
    spread: float = 0.0
    exemplars: list[str] = Field(default_factory=list)
    exemplar_embeddings: dict[str, list[float]] = Field(default_factory=dict)
    exemplar_totals: dict[str, float] = Field(default_factory=dict)
    token_stats: dict[str, float] = Field(default_factory=dict)
    token_seen: dict[str, int] = Field(default_factory=dict)
    token_accepted: dict[str, int] = Field(default_factory=dict)
    learned_modifiers: list[str] = Field(default_factory=list)
    learned_ids: list[str] = Field(default_factory=list)
    seen_ids: list[str] = Field(default_factory=list)
    palette_seen: dict[str, int] = Field(default_factory=dict)
    palette_accepted: dict[str, int] = Field(default_factory=dict)
    palette_total: dict[str, float] = Field(default_factory=dict)
    palette_scored: dict[str, int] = Field(default_factory=dict)  # images with a finite total, per palette
    colour_mass: list[float] = Field(default_factory=list)
    colour_sum: list[list[float]] = Field(default_factory=list)
    accept_threshold: float = 50.0
    version: int = 0
    history: list[MemorySnapshot] = Field(default_factory=list)
    updated: datetime = Field(default_factory=_now)

    @property
    def stable(self) -> bool:
        return self.count >= MIN_STABLE_IMAGES

    def palette_table(self) -> pd.DataFrame:
        """One row per palette seen: images, accepted, acceptance (%) and mean total, best first."""
        rows = [{"palette": name, "images": seen, "accepted": self.palette_accepted.get(name, 0),
                 "acceptance": 100.0 * self.palette_accepted.get(name, 0) / seen if seen else float("nan"),
                 "mean_total": (self.palette_total.get(name, 0.0) / self.palette_scored[name]
                                if self.palette_scored.get(name) else float("nan"))}
                for name, seen in self.palette_seen.items()]
        frame = pd.DataFrame(rows, columns=["palette", "images", "accepted", "acceptance", "mean_total"])
        return frame.sort_values(["mean_total", "palette"], ascending=[False, True], na_position="last",
                                 ignore_index=True)

    @property
    def best_palette(self) -> str | None:
        """The palette whose images score highest, among those with `MIN_TOKEN_SUPPORT` accepted images."""
        table = self.palette_table()
        table = table[(table.accepted >= MIN_TOKEN_SUPPORT) & table.mean_total.notna()]
        return str(table.palette.iloc[0]) if len(table) else None

    def dominant_colours(self, limit: int = 6) -> list[tuple[str, float]]:
        """The accepted images' main colours: (hex of the bin's mean colour, share of all pixels)."""
        mass = np.asarray(self.colour_mass, dtype=np.float64)
        if not mass.size or mass.sum() <= 0:
            return []
        sums = np.asarray(self.colour_sum, dtype=np.float64)
        out = []
        for b in np.argsort(-mass, kind="stable")[:limit]:
            if mass[b] <= 0:
                break
            r, g, bl = np.clip(np.rint(sums[b] / mass[b]), 0, 255).astype(int)
            out.append((f"#{r:02x}{g:02x}{bl:02x}", float(mass[b] / mass.sum())))
        return out

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def from_json(cls, data: str | bytes) -> StyleMemory:
        return cls.model_validate_json(data)


def tokenize(prompt: str) -> list[str]:
    """Distinct lower-case, accent-folded word tokens of a prompt, in order (stop words dropped)."""
    text = unicodedata.normalize("NFKD", str(prompt or "")).encode("ascii", "ignore").decode("ascii").lower()
    out: list[str] = []
    for tok in _TOKEN.findall(text):
        tok = tok.strip("'-")
        if len(tok) < 3 or tok in STOP_WORDS or tok in out:
            continue
        out.append(tok)
    return out


def _token_lift(seen: int, accepted: int, total_seen: int, total_accepted: int) -> float:
    base = (total_accepted + 1.0) / (total_seen + 2.0)
    return ((accepted + 1.0) / (seen + 2.0)) / base


def _finite(x: float) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def colour_histogram(image) -> tuple[np.ndarray, np.ndarray]:
    """(64,) pixel shares and (64, 3) RGB sums (on the share scale) of an image's 4x4x4 RGB bins."""
    rgb = np.asarray(to_rgb(image), dtype=np.float64).reshape(-1, 3)
    step = 256 // COLOUR_BINS
    bins = (rgb // step).astype(np.int64).clip(0, COLOUR_BINS - 1)
    index = (bins[:, 0] * COLOUR_BINS + bins[:, 1]) * COLOUR_BINS + bins[:, 2]
    n = COLOUR_BINS ** 3
    weight = 1.0 / max(1, len(rgb))
    mass = np.bincount(index, minlength=n) * weight
    sums = np.stack([np.bincount(index, weights=rgb[:, c], minlength=n) for c in range(3)], axis=1) * weight
    return mass, sums


def learn_style(
    previous: StyleMemory | None,
    project: str,
    embeddings: np.ndarray,
    artifact_ids: Sequence[str],
    prompts: Sequence[str],
    totals: Sequence[float],
    *,
    accept_threshold: float = 50.0,
    embedder: str = StyleDescriptor.name,
    palettes: Sequence[str | None] | None = None,
    colours: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> StyleMemory:
    """The memory after learning from these images (accepted: total >= accept_threshold). Pure function.

    `palettes[i]` names image i's palette (None: unknown) and `colours[i]` is its `colour_histogram`;
    both are optional (no palette statistics without them)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    ids = [str(a) for a in artifact_ids]
    prompts = list(prompts)
    totals = [float(t) if _finite(t) else float("nan") for t in totals]
    if emb.ndim != 2 and len(ids) == 0:
        emb = emb.reshape(0, 0)
    if emb.ndim != 2 or not (emb.shape[0] == len(ids) == len(prompts) == len(totals)):
        raise InvalidInputError(
            f"learn_style needs one embedding, id, prompt and total per image; got {emb.shape[0] if emb.ndim else 0} "
            f"embeddings, {len(ids)} ids, {len(prompts)} prompts, {len(totals)} totals"
        )
    for label, extra in (("palettes", palettes), ("colours", colours)):
        if extra is not None and len(extra) != len(ids):
            raise InvalidInputError(f"learn_style got {len(extra)} {label} for {len(ids)} images")
    if previous is not None and previous.project != project:
        raise InvalidInputError(f"style memory belongs to project {previous.project!r}, not {project!r}")
    if previous is not None and previous.count and previous.embedder != embedder:
        raise InvalidInputError(
            f"style memory of {project!r} was learned with embedder {previous.embedder!r}, not {embedder!r}; "
            "start a new memory (delete resonance/style_memory.json) to switch embedders"
        )
    memory = previous.model_copy(deep=True) if previous is not None else StyleMemory(project=project, embedder=embedder)
    memory.embedder = embedder
    memory.accept_threshold = float(accept_threshold)
    dim = len(memory.centroid)
    if emb.shape[0] and dim and emb.shape[1] != dim:
        raise InvalidInputError(
            f"embeddings have {emb.shape[1]} dimensions but the style memory of {project!r} has {dim}"
        )
    if emb.shape[0]:
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb / np.maximum(norms, 1e-12)

    learned = set(memory.learned_ids)
    seen = set(memory.seen_ids)
    old_centroid = np.asarray(memory.centroid, dtype=np.float64) if memory.centroid else None

    new_rows: list[int] = []
    batch_ids: set[str] = set()
    changed = False  # a new image seen or accepted: the memory becomes a new version
    for i, (artifact_id, total) in enumerate(zip(ids, totals, strict=True)):
        if artifact_id in learned or artifact_id in batch_ids:
            continue
        batch_ids.add(artifact_id)
        accepted = _finite(total) and total >= accept_threshold
        first_time = artifact_id not in seen
        palette = palettes[i] if palettes is not None else None
        if first_time:
            changed = True
            seen.add(artifact_id)
            memory.seen_ids.append(artifact_id)
            for tok in tokenize(prompts[i]):
                memory.token_seen[tok] = memory.token_seen.get(tok, 0) + 1
            if palette:
                memory.palette_seen[palette] = memory.palette_seen.get(palette, 0) + 1
                if _finite(total):
                    memory.palette_total[palette] = memory.palette_total.get(palette, 0.0) + float(total)
                    memory.palette_scored[palette] = memory.palette_scored.get(palette, 0) + 1
        if accepted:
            new_rows.append(i)
            learned.add(artifact_id)
            memory.learned_ids.append(artifact_id)
            for tok in tokenize(prompts[i]):
                memory.token_accepted[tok] = memory.token_accepted.get(tok, 0) + 1
            if palette:
                memory.palette_accepted[palette] = memory.palette_accepted.get(palette, 0) + 1

    # Colours of the accepted images: their bins summed into the memory's histogram.
    if colours is not None and new_rows:
        mass = np.sum([colours[i][0] for i in new_rows], axis=0)
        sums = np.sum([colours[i][1] for i in new_rows], axis=0)
        if memory.colour_mass:
            mass, sums = mass + np.asarray(memory.colour_mass), sums + np.asarray(memory.colour_sum)
        memory.colour_mass, memory.colour_sum = mass.tolist(), sums.tolist()

    # Centroid: exact running mean of unit vectors (see module docstring).
    if new_rows:
        n = memory.count
        mean = old_centroid * (1.0 - memory.spread) if (old_centroid is not None and n) else np.zeros(emb.shape[1])
        mean = (mean * n + emb[new_rows].sum(axis=0)) / (n + len(new_rows))
        length = float(np.linalg.norm(mean))
        memory.count = n + len(new_rows)
        memory.spread = float(min(1.0, max(0.0, 1.0 - length)))
        centroid = mean / length if length > 1e-12 else mean
        memory.centroid = [float(x) for x in centroid]

    # Exemplars: re-rank the old exemplars and the new accepted images against the current centroid.
    if memory.centroid:
        centroid = np.asarray(memory.centroid, dtype=np.float64)
        cand_emb = dict(memory.exemplar_embeddings)
        cand_tot = dict(memory.exemplar_totals)
        for i in new_rows:
            cand_emb[ids[i]] = [float(x) for x in emb[i]]
            cand_tot[ids[i]] = float(totals[i])
        cand = list(cand_emb)
        if cand:
            vecs = np.asarray([cand_emb[c] for c in cand], dtype=np.float64)
            cons = consistency_from_distance(1.0 - vecs @ centroid, memory.spread)
            rank = 0.5 * cons + 0.5 * np.asarray([cand_tot.get(c, 0.0) for c in cand])
            order = sorted(range(len(cand)), key=lambda k: (-rank[k], cand[k]))[:MAX_EXEMPLARS]
            memory.exemplars = [cand[k] for k in order]
            memory.exemplar_embeddings = {cand[k]: cand_emb[cand[k]] for k in order}
            memory.exemplar_totals = {cand[k]: cand_tot[cand[k]] for k in order}

    # Token statistics.
    total_seen = len(memory.seen_ids)
    total_acc = memory.count
    memory.token_stats = {
        tok: round(_token_lift(cnt, memory.token_accepted.get(tok, 0), total_seen, total_acc), 6)
        for tok, cnt in sorted(memory.token_seen.items())
    }
    candidates = [
        tok for tok, lift in memory.token_stats.items()
        if lift > 1.0 and memory.token_seen.get(tok, 0) >= MIN_TOKEN_SUPPORT and not tok.isdigit()
    ]
    candidates.sort(key=lambda t: (-memory.token_stats[t], -memory.token_seen[t], t))
    memory.learned_modifiers = candidates[:MAX_MODIFIERS]

    # History.
    if old_centroid is not None and memory.centroid:
        shift = float(1.0 - np.dot(old_centroid, np.asarray(memory.centroid, dtype=np.float64)))
    else:
        shift = 0.0
    finite_totals = [t for t in totals if _finite(t)]
    if changed or new_rows:
        memory.version += 1  # a call that learned nothing adds a snapshot but is not a new version
    memory.history.append(
        MemorySnapshot(
            count=memory.count,
            spread=memory.spread,
            centroid_shift=max(0.0, shift),
            mean_total=float(np.mean(finite_totals)) if finite_totals else None,
            new_accepted=len(new_rows),
            seen=total_seen,
            best_palette=memory.best_palette,
        )
    )
    memory.history = memory.history[-MAX_HISTORY:]
    memory.updated = _now()
    return memory


# --------------------------------------------------------------------------------------------------
# Persistence


def memory_version_file(version: int) -> str:
    return f"{MEMORY_VERSIONS_DIR}/v{version:04d}.json"


def save_memory(store, memory: StyleMemory) -> str:
    """Write the memory to `resonance/style_memory.json` of its project (the current one) and, once,
    to its version's own file (`memory_version_file`), which is never overwritten; returns the URL
    of the current one."""
    data = memory.to_json().encode("utf-8")
    if memory.version and store.read_project_file(memory.project, memory_version_file(memory.version)) is None:
        store.write_project_file(memory.project, memory_version_file(memory.version), data)
    return store.write_project_file(memory.project, MEMORY_FILE, data)


def memory_versions(store, project: str) -> list[int]:
    """The versions of the project's memory kept as files, oldest first."""
    names = store.list_project_files(project, MEMORY_VERSIONS_DIR)
    found = [int(m.group(1)) for n in names if (m := re.fullmatch(r"v(\d+)\.json", n))]
    return sorted(found)


def load_memory_version(store, project: str, version: int) -> StyleMemory | None:
    """One stored version of the project's memory, or None when that version has no file."""
    data = store.read_project_file(project, memory_version_file(version))
    return None if data is None else StyleMemory.from_json(data)


def load_memory(store, project: str) -> StyleMemory | None:
    """The project's stored memory, or None when it has none yet."""
    data = store.read_project_file(project, MEMORY_FILE)
    if data is None:
        return None
    try:
        return StyleMemory.from_json(data)
    except Exception as exc:
        where = store.project_file_path(project, MEMORY_FILE)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"style memory {where} is corrupted: {first}") from exc


def _normalise_scores(df: pd.DataFrame) -> pd.DataFrame:
    frame = df.copy()
    if "artifact_id" not in frame.columns:
        raise InvalidInputError("a score table needs an 'artifact_id' column")
    frame["artifact_id"] = frame["artifact_id"].astype(str)
    for col in SCORE_COLUMNS:
        if col not in frame.columns:
            frame[col] = None if col in ("nearest_id", "phash") else float("nan")
    for col in ("nearest_id", "phash"):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    ordered = list(SCORE_COLUMNS) + [c for c in frame.columns if c not in SCORE_COLUMNS]
    return frame[ordered]


def save_scores(store, project: str, df: pd.DataFrame) -> str:
    """Merge `df` into the project's score table by artifact_id (new rows replace old ones), each
    stamped with the `SCORER_VERSION` that computed it; returns the URL."""
    new = _normalise_scores(df)
    new["scorer_version"] = SCORER_VERSION
    if new["artifact_id"].duplicated().any():
        new = new.drop_duplicates(subset="artifact_id", keep="last")
    old = load_scores(store, project)
    if len(old):
        old = old[~old["artifact_id"].isin(set(new["artifact_id"]))]
        merged = pd.concat([old, new], ignore_index=True, sort=False) if len(old) else new
    else:
        merged = new
    merged = _normalise_scores(merged).reset_index(drop=True)
    table = pa.Table.from_pandas(merged, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return store.write_project_file(project, SCORES_FILE, buf.getvalue())


def load_scores(store, project: str) -> pd.DataFrame:
    """The project's score table (one row per artifact); an empty table with `SCORE_COLUMNS` when none."""
    data = store.read_project_file(project, SCORES_FILE)
    if data is None:
        return empty_scores()
    try:
        frame = pq.read_table(io.BytesIO(data)).to_pandas()
    except Exception as exc:
        where = store.project_file_path(project, SCORES_FILE)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"score table {where} is corrupted: {first}") from exc
    return _normalise_scores(frame)


__all__ = [
    "MAX_EXEMPLARS", "MEMORY_FILE", "MEMORY_VERSIONS_DIR", "MIN_STABLE_IMAGES", "MemorySnapshot", "SCORES_FILE",
    "StyleMemory", "colour_histogram", "learn_style", "load_memory", "load_memory_version", "load_scores",
    "memory_versions", "memory_version_file", "save_memory", "save_scores", "tokenize",
]


# --------------------------------------------------------------------------------------------------
# Analysis (`echo-os memory --analyze`) and moving a memory between machines

HISTORY_PLOT_FILE = "resonance/memory_history.png"


def history_frame(memory: StyleMemory) -> pd.DataFrame:
    """One row per learning step (version 1 = the first): images learned, mean total score of that
    step's images, cohesion = 100 * (1 - spread) (how tightly the accepted images sit around the
    centroid), the centroid's move in that step and its cumulative drift (cosine distance x 100)."""
    rows = [{"version": k, "created": snap.created, "images": snap.count, "new_accepted": snap.new_accepted,
             "mean_total": snap.mean_total, "cohesion": 100.0 * (1.0 - snap.spread),
             "centroid_shift": 100.0 * snap.centroid_shift}
            for k, snap in enumerate(memory.history, start=1)]
    frame = pd.DataFrame(rows, columns=["version", "created", "images", "new_accepted", "mean_total", "cohesion",
                                        "centroid_shift"])
    frame["drift"] = frame["centroid_shift"].cumsum()
    return frame


def plot_history(memory: StyleMemory) -> bytes:
    """PNG of the memory's evolution: mean score and cohesion (0-100, left axis) and cumulative
    centroid drift (right axis) over its versions. matplotlib is imported here only (Agg, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    frame = history_frame(memory)
    fig, left = plt.subplots(figsize=(7, 3.2), dpi=110)
    try:
        left.plot(frame["version"], frame["mean_total"], marker="o", label="mean score")
        left.plot(frame["version"], frame["cohesion"], marker="s", label="cohesion")
        left.set_ylim(0, 100)
        left.set_xlabel("memory version")
        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        left.set_ylabel("0-100")
        right = left.twinx()
        right.plot(frame["version"], frame["drift"], color="tab:red", linestyle="--", label="centroid drift")
        right.set_ylabel("drift (cosine distance x 100)")
        handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        left.legend(handles, [str(h.get_label()) for h in handles], loc="lower right", fontsize=8)
        left.set_title(f"{memory.project}: style memory over {len(frame)} version(s), {memory.count} image(s)")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def import_memory(data: bytes | str, project: str | None = None) -> StyleMemory:
    """A memory exported from another machine (`StyleMemory.to_json`), for `project` (default: its
    own); a file that is not one is a one-line `InvalidInputError`."""
    try:
        memory = StyleMemory.from_json(data)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(f"not a style memory export: {first}") from exc
    return memory.model_copy(update={"project": project}) if project else memory
