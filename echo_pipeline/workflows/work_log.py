"""The work log: `echo-os commit "<message>"` records what happened in a project since the last entry.

An entry is what a person did in a session, told in the pipeline's own terms: the runs since the
last entry (ids and status, read from the Dagster instance by the caller: this module never imports
Dagster), the artifacts catalogued since (counted per media type), the style memory's version then
and now, the project's mean total score then and now, the minutes the person says they spent, and
their message. The Dagster layer records each entry as a `work_log` asset materialization, so the
entries also show on the UI's asset timeline.

Storage: one JSON file per entry, `worklog/<stamp>-<id>.json` under the project in the artifact
store (atomic writes; the UTC stamp makes the file names sort oldest first). Each entry keeps a
watermark, the newest catalog `created` time it covered: the next entry counts only artifacts
created after it, and only runs no earlier entry named, so nothing is committed twice. With no new
run and no new artifact there is nothing to commit (`NothingToCommitError`), whatever the minutes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field, ValidationError

from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.errors import EchoError, InvalidInputError, StorageError
from echo_pipeline.workflows.multi_modal import MEDIA_ORDER

WORKLOG_DIR = "worklog"
MAX_MINUTES = 10_000
MAX_MESSAGE_CHARS = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class NothingToCommitError(EchoError):
    """Nothing new since the last entry: not a failure (`echo-os commit` says so and exits 0)."""

    exit_code = 0


class RunRef(BaseModel):
    """One run of the project, as the Dagster layer read it from the instance."""

    run_id: str
    job: str
    status: str
    started: datetime | None = None
    seconds: float | None = None


class WorkLogEntry(BaseModel):
    """One commit of the work log."""

    id: str = Field(description="short content hash, unique within the project")
    project: str
    message: str
    minutes: int = Field(ge=0, le=MAX_MINUTES)
    created: datetime = Field(description="when the entry was committed (UTC)")
    since: datetime | None = Field(default=None, description="the previous entry's watermark (None: the first)")
    watermark: datetime | None = Field(default=None, description="newest catalog `created` time covered")
    previous_entry: str | None = None
    new_artifacts: dict[str, int] = Field(default_factory=dict, description="artifacts catalogued since, per media type")
    artifact_ids: list[str] = Field(default_factory=list)
    runs: list[RunRef] = Field(default_factory=list)
    style_memory_version: int | None = None
    previous_style_memory_version: int | None = None
    mean_score_before: float | None = None
    mean_score_after: float | None = None
    scored_images: int = 0

    @property
    def artifact_count(self) -> int:
        return sum(self.new_artifacts.values())

    @property
    def score_delta(self) -> float | None:
        if self.mean_score_before is None or self.mean_score_after is None:
            return None
        return round(self.mean_score_after - self.mean_score_before, 2)

    @property
    def run_seconds(self) -> float:
        return round(sum(r.seconds or 0.0 for r in self.runs), 1)

    @property
    def file_name(self) -> str:
        return f"{self.created.astimezone(timezone.utc):%Y%m%dT%H%M%S%fZ}-{self.id}.json"

    def label(self) -> str:
        """How a person refers to the entry: `3f2a9c1d "integrate 3D assets" (2025-01-02 14:05 UTC)`."""
        return f'{self.id} "{self.message}" ({self.created.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC)'

    def summary_markdown(self) -> str:
        """A short markdown account of the entry (the materialization's summary)."""
        artifacts = ", ".join(f"{n} {kind}" for kind, n in self.new_artifacts.items() if n) or "none"
        memory = ("-" if self.style_memory_version is None else
                  f"v{self.previous_style_memory_version or 0} -> v{self.style_memory_version}")
        delta = self.score_delta
        score = (f"{_fmt(self.mean_score_before)} -> {_fmt(self.mean_score_after)}"
                 + (f" ({delta:+.2f})" if delta is not None else ""))
        lines = [f"**{self.message}**", "",
                 f"- time spent: {self.minutes} min (runs: {self.run_seconds:g} s)",
                 f"- new artifacts: {artifacts}",
                 f"- runs: {len(self.runs)}" + (" (" + ", ".join(f"{r.job} {r.status.lower()}" for r in self.runs[:8])
                                                + (", ..." if len(self.runs) > 8 else "") + ")" if self.runs else ""),
                 f"- style memory: {memory}",
                 f"- mean score: {score}"]
        return "\n".join(lines)


class Pending(BaseModel):
    """What a commit would record now (`WorkLog.pending`)."""

    project: str
    last: WorkLogEntry | None = None
    new_artifacts: dict[str, int] = Field(default_factory=dict)
    artifact_ids: list[str] = Field(default_factory=list)
    watermark: datetime | None = None
    runs: list[RunRef] = Field(default_factory=list)
    style_memory_version: int | None = None
    mean_score_after: float | None = None
    scored_images: int = 0

    @property
    def empty(self) -> bool:
        return not self.artifact_ids and not self.runs

    def nothing_message(self) -> str:
        since = self.last.label() if self.last else f"project {self.project} began (no entries yet)"
        return f"Nothing to commit: no new runs or artifacts since {since}"


def check_message(message: str) -> str:
    """The message as stored: one line, non-empty, at most MAX_MESSAGE_CHARS, no control characters."""
    text = " ".join(str(message or "").split())
    if not text:
        raise InvalidInputError('the commit message is empty: say what you did, e.g. echo-os commit "integrate 3D assets"')
    if _CONTROL.search(text):
        raise InvalidInputError("the commit message contains control characters")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InvalidInputError(f"the commit message is {len(text)} characters long; the limit is {MAX_MESSAGE_CHARS}")
    return text


def check_minutes(minutes: Any) -> int:
    """Minutes spent: a whole number 0..MAX_MINUTES."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 0 <= minutes <= MAX_MINUTES:
        raise InvalidInputError(f"--minutes must be a whole number 0-{MAX_MINUTES} (got {minutes!r})")
    return minutes


class WorkLog:
    """The work log entries of the projects of one artifact store."""

    def __init__(self, store: ArtifactStore):
        self.store = store

    def entries(self, project: str) -> list[WorkLogEntry]:
        """The project's entries, newest first."""
        found = []
        for name in reversed(self.store.list_project_files(project, WORKLOG_DIR)):
            if not name.endswith(".json"):
                continue
            data = self.store.read_project_file(project, f"{WORKLOG_DIR}/{name}")
            if data is None:
                continue
            try:
                found.append(WorkLogEntry.model_validate_json(data))
            except ValidationError as exc:
                where = self.store.project_file_path(project, f"{WORKLOG_DIR}/{name}")
                raise StorageError(f"work log entry {where} is damaged: {exc.errors()[0]['msg']}") from exc
        return found

    def last(self, project: str) -> WorkLogEntry | None:
        entries = self.entries(project)
        return entries[0] if entries else None

    def pending(self, project: str, runs: Sequence[RunRef] = ()) -> Pending:
        """What is new since the last entry: catalogued artifacts created after its watermark, the
        `runs` (the project's runs, from the caller) no entry named yet, the style memory's version
        and the mean total score now."""
        from echo_pipeline.resonance.memory_system import load_memory, load_scores

        entries = self.entries(project)
        last = entries[0] if entries else None
        catalog = self.store.catalog(project)
        watermark = last.watermark if last else None
        new = catalog
        if watermark is not None and len(catalog):
            new = catalog[pd.to_datetime(catalog["created"], utc=True) > pd.Timestamp(watermark)]
        if last is not None and len(new):  # the same artifact never counts twice
            new = new[~new["artifact_id"].isin(set(last.artifact_ids))]
        counts = new["media_type"].fillna("image").value_counts().to_dict() if len(new) else {}
        per_type = {kind: int(counts.get(kind, 0)) for kind in MEDIA_ORDER}
        per_type |= {str(kind): int(n) for kind, n in counts.items() if kind not in per_type}
        if len(new):
            newest = pd.to_datetime(new["created"], utc=True).max().to_pydatetime()
            watermark = max(watermark, newest) if watermark is not None else newest
        committed = {r.run_id for entry in entries for r in entry.runs}
        fresh_runs = [r for r in runs if r.run_id not in committed]
        memory = load_memory(self.store, project)
        scores = load_scores(self.store, project)
        totals = scores["total"].dropna() if len(scores) else scores.get("total", pd.Series(dtype=float))
        return Pending(
            project=project, last=last, new_artifacts=per_type, artifact_ids=[str(a) for a in new["artifact_id"]],
            watermark=watermark, runs=fresh_runs,
            style_memory_version=memory.version if memory is not None else None,
            mean_score_after=round(float(totals.mean()), 2) if len(totals) else None, scored_images=len(totals),
        )

    def commit(self, project: str, message: str, minutes: int = 0, *, runs: Sequence[RunRef] = (),
               now: datetime | None = None) -> WorkLogEntry:
        """Record what `pending` finds as a new entry; `NothingToCommitError` when it finds nothing."""
        message, minutes = check_message(message), check_minutes(minutes)
        pending = self.pending(project, runs)
        if pending.empty:
            raise NothingToCommitError(pending.nothing_message())
        last = pending.last
        created = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        if last is not None and created <= last.created:  # file names must keep sorting oldest first
            raise InvalidInputError(f"the clock is behind the last entry ({last.created.isoformat()}); try again")
        body = {"project": project, "message": message, "minutes": minutes, "created": created.isoformat(),
                "artifacts": pending.artifact_ids, "runs": [r.run_id for r in pending.runs],
                "previous": last.id if last else None}
        entry = WorkLogEntry(
            id=hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8],
            project=project, message=message, minutes=minutes, created=created,
            since=last.watermark if last else None, watermark=pending.watermark,
            previous_entry=last.id if last else None, new_artifacts=pending.new_artifacts,
            artifact_ids=pending.artifact_ids, runs=pending.runs,
            style_memory_version=pending.style_memory_version,
            previous_style_memory_version=last.style_memory_version if last else None,
            mean_score_before=last.mean_score_after if last else None,
            mean_score_after=pending.mean_score_after, scored_images=pending.scored_images,
        )
        data = entry.model_dump_json(indent=2).encode("utf-8")
        self.store.write_project_file(project, f"{WORKLOG_DIR}/{entry.file_name}", data)
        return entry


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


__all__ = ["MAX_MESSAGE_CHARS", "MAX_MINUTES", "WORKLOG_DIR", "NothingToCommitError", "Pending", "RunRef", "WorkLog",
           "WorkLogEntry", "check_message", "check_minutes"]
