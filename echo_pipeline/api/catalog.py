"""`GET /api/artifacts`: the catalog as one cached table per project, filtered, sorted and paged.

Reading a project's catalog means listing and decoding its parquet parts and its score table; with
10,000 entries that is tens of milliseconds a request. Parts are append-only and immutable (a run
adds one; a damaged one is moved away), so a project's table is cached under a stamp of its
catalog folder and of its score table, and rebuilt only when one of them changes. The stamp of a
local catalog folder is its modification time (adding or moving a part changes it: one `stat`);
elsewhere (S3...) it is the listing of the parts. A cached table holds every row once as the JSON
the API answers with, plus numpy columns to filter and sort on, so a request costs the stamp, a few
vector comparisons and the page's rows.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from echo_pipeline.artifacts.storage import ArtifactStore

LISTED = ("artifact_id", "project", "created", "prompt", "source_prompt", "negative_prompt", "seed", "width",
          "height", "style", "backend", "model", "parent_id", "strength", "media_type", "run_id", "sha256")
SortKey = Literal["created", "score"]
SortOrder = Literal["asc", "desc"]


@dataclass(frozen=True)
class CatalogTable:
    """Rows (JSON-able dicts), oldest first, and the columns queries filter and sort on."""

    items: list[dict[str, Any]]
    json: list[bytes]  # each item as the JSON the listing answers with, encoded once
    created: np.ndarray  # int64 ns since the epoch, UTC
    score: np.ndarray  # float64, NaN when unscored
    style: np.ndarray  # object: lowercase style name, '' when none
    backend: np.ndarray  # object
    parent: np.ndarray  # object: parent id, '' when none
    text: list[str]  # lowercase prompt and source prompt, for `q`
    ids: dict[str, int]  # artifact id -> row

    @cached_property
    def _text_blob(self) -> tuple[str, np.ndarray]:
        """Every row's text in one string (rows apart by NUL) and where each row starts in it."""
        lengths = np.fromiter((len(t) + 1 for t in self.text), dtype=np.int64, count=len(self.text))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else np.empty(0, np.int64)
        return "\0".join(self.text), starts

    def text_contains(self, words: str) -> np.ndarray:
        """Rows whose text contains `words` (lowercase; no NUL), as a mask: one C-speed scan of the
        joined text instead of a Python loop over the rows (10x faster at 10,000 rows)."""
        blob, starts = self._text_blob
        mask = np.zeros(len(self.text), dtype=bool)
        if not words or "\0" in words:
            return mask
        hits = np.fromiter((m.start() for m in re.finditer(re.escape(words), blob)), dtype=np.int64)
        if len(hits):
            mask[np.searchsorted(starts, hits, side="right") - 1] = True
        return mask

    @classmethod
    def concat(cls, tables: list[CatalogTable]) -> CatalogTable:
        """Several projects' tables as one, oldest first (a stable merge of theirs)."""
        if not tables:
            none = np.empty(0, dtype=object)
            return cls(items=[], json=[], created=np.empty(0, np.int64), score=np.empty(0), style=none, backend=none,
                       parent=none, text=[], ids={})
        order = np.argsort(np.concatenate([t.created for t in tables]), kind="stable")

        def merged(name: str) -> np.ndarray:
            return np.concatenate([getattr(t, name) for t in tables])[order]

        items = [i for t in tables for i in t.items]
        encoded = [j for t in tables for j in t.json]
        text = [x for t in tables for x in t.text]
        rows = [items[i] for i in order]
        return cls(items=rows, json=[encoded[i] for i in order], created=merged("created"), score=merged("score"), style=merged("style"),
                   backend=merged("backend"), parent=merged("parent"), text=[text[i] for i in order],
                   ids={r["artifact_id"]: k for k, r in enumerate(rows)})


@dataclass(frozen=True)
class ArtifactQuery:
    """The filters and page of one listing (every filter optional; see `CatalogIndex.query`)."""

    project: str | None = None
    style: str | None = None
    backend: str | None = None
    parent: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    sort: SortKey = "created"
    order: SortOrder = "desc"
    limit: int = 50
    offset: int = 0


class CatalogIndex:
    """The catalog rows of each project with their total score, cached (see the module docstring)."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self._lock = threading.Lock()
        self._tables: dict[str, tuple[tuple, CatalogTable]] = {}  # slug -> (stamp, table)
        self._combined: tuple[tuple, CatalogTable] | None = None

    def table(self, project: str | None = None) -> CatalogTable:
        """One project's rows (or every project's), oldest first."""
        if project is not None:
            return self._project_table(project)
        stamps = tuple((slug, self._stamp(slug)) for slug in self.store.projects())
        combined = self._combined
        if combined is not None and combined[0] == stamps:
            return combined[1]
        table = CatalogTable.concat([self._project_table(slug, stamp) for slug, stamp in stamps])
        self._combined = (stamps, table)
        return table

    def score(self, project: str, artifact_id: str) -> float | None:
        table = self._project_table(project)
        row = table.ids.get(artifact_id)
        return None if row is None else table.items[row]["score"]

    def query(self, query: ArtifactQuery) -> tuple[list[dict[str, Any]], int]:
        """(the page's rows as JSON-able dicts, how many rows match in all)."""
        table, rows, total = self._select(query)
        return [table.items[i] for i in rows], total

    def query_json(self, query: ArtifactQuery) -> tuple[list[bytes], int]:
        """Like `query`, each row already encoded as JSON (the listing's hot path: nothing is
        converted or validated per request)."""
        table, rows, total = self._select(query)
        return [table.json[i] for i in rows], total

    def _select(self, query: ArtifactQuery) -> tuple[CatalogTable, np.ndarray, int]:
        """(the table, the page's row numbers, how many rows match in all)."""
        table = self.table(query.project)
        mask = np.ones(len(table.items), dtype=bool)
        if query.style is not None:
            mask &= table.style == query.style.strip().lower()
        if query.backend is not None:
            mask &= table.backend == query.backend.strip()
        if query.parent is not None:
            mask &= table.parent == query.parent.strip()
        with np.errstate(invalid="ignore"):  # NaN (unscored) never matches a score range
            if query.min_score is not None:
                mask &= table.score >= query.min_score
            if query.max_score is not None:
                mask &= table.score <= query.max_score
        if query.since is not None:
            mask &= table.created >= _utc_ns(query.since)
        if query.until is not None:
            mask &= table.created <= _utc_ns(query.until)
        if query.q:
            words = query.q.strip().lower()
            mask &= table.text_contains(words)
        rows = np.flatnonzero(mask)
        if query.sort == "score":
            scores = table.score[rows]
            # Best (or worst) first, unscored last; ties newest first either way.
            key = np.where(np.isnan(scores), np.inf, -scores if query.order == "desc" else scores)
            rows = rows[np.lexsort((-table.created[rows], key))]
        elif query.order == "desc":
            rows = rows[::-1]
        return table, rows[query.offset: query.offset + query.limit], len(rows)

    # -- the cache -------------------------------------------------------------------------------
    def _stamp(self, slug: str) -> tuple:
        from echo_pipeline.resonance.memory_system import SCORES_FILE

        try:
            info = self.store.fs.info(self.store.project_file_path(slug, SCORES_FILE))
            scores = (info.get("size"), str(info.get("mtime") or info.get("LastModified") or info.get("created")
                                            or info.get("ETag")))
        except FileNotFoundError:
            scores = None
        if isinstance(self.store.fs, LocalFileSystem):  # the folder's time changes with every part added or moved
            try:
                return os.stat(os.path.join(self.store.project_path(slug), "catalog")).st_mtime_ns, scores
            except FileNotFoundError:
                return None, scores
        return tuple(self.store.catalog_parts(slug)), scores

    def _project_table(self, slug: str, stamp: tuple | None = None) -> CatalogTable:
        stamp = stamp if stamp is not None else self._stamp(slug)  # taken before reading: a later part re-stamps
        cached = self._tables.get(slug)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        with self._lock:  # one rebuild per change, however many requests arrive meanwhile
            cached = self._tables.get(slug)
            if cached is None or cached[0] != stamp:
                cached = (stamp, self._build(slug))
                self._tables[slug] = cached
        return cached[1]

    def _build(self, slug: str) -> CatalogTable:
        from echo_pipeline.resonance.memory_system import load_scores

        frame = self.store.catalog(slug)[list(LISTED)]
        frame = frame.sort_values(["created", "artifact_id"], kind="stable").reset_index(drop=True)
        scores = load_scores(self.store, slug) if len(frame) else None
        if scores is not None and len(scores):
            totals = scores.drop_duplicates("artifact_id", keep="last").set_index("artifact_id")["total"]
            score = pd.to_numeric(frame["artifact_id"].map(totals), errors="coerce").to_numpy(dtype=float)
        else:
            score = np.full(len(frame), np.nan)
        items = [_item(row) for row in frame.astype(object).to_dict(orient="records")]
        for item, value in zip(items, score, strict=True):
            item["score"] = None if np.isnan(value) else float(value)
        created = pd.to_datetime(frame["created"], utc=True).to_numpy(dtype="datetime64[ns]").astype(np.int64)
        return CatalogTable(
            items=items, json=[json.dumps(i, ensure_ascii=False, separators=(",", ":")).encode() for i in items],
            created=created, score=score,
            style=np.array([(i["style"] or "").lower() for i in items], dtype=object),
            backend=np.array([i["backend"] or "" for i in items], dtype=object),
            parent=np.array([i["parent_id"] or "" for i in items], dtype=object),
            text=[f"{i['prompt'] or ''}\n{i['source_prompt'] or ''}".lower() for i in items],
            ids={i["artifact_id"]: k for k, i in enumerate(items)})


def _utc_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch (what the index compares), clamped to int64 nanoseconds' range
    (years 1677-2262): a `since` of 9999-01-01 selects nothing instead of overflowing."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    if aware >= NS_LATEST:
        return int(np.iinfo(np.int64).max)
    if aware <= NS_EARLIEST:
        return int(np.iinfo(np.int64).min)
    return int(pd.Timestamp(aware).tz_convert("UTC").value)


NS_LATEST = datetime(2262, 4, 11, tzinfo=timezone.utc)  # inside pandas' nanosecond range, by a day
NS_EARLIEST = datetime(1677, 9, 22, tzinfo=timezone.utc)


def _item(row: dict[Any, Any]) -> dict[str, Any]:
    """A catalog row as JSON: missing values None, times ISO 8601, numpy numbers plain ones."""
    out: dict[str, Any] = {str(k): (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in row.items()}
    out["created"] = pd.Timestamp(row["created"]).isoformat()
    for name in ("seed", "width", "height"):
        out[name] = int(row[name])
    out["strength"] = None if out["strength"] is None else float(out["strength"])
    out["links"] = artifact_links(str(row["project"]), str(row["artifact_id"]))
    return out


def artifact_links(project: str, artifact_id: str) -> dict[str, str]:
    where = f"?project={quote(project)}"
    return {"self": f"/api/artifacts/{quote(artifact_id)}{where}",
            "image": f"/api/artifacts/{quote(artifact_id)}/image{where}"}
