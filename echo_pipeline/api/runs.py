"""The API's run queue: long work runs in a small pool of threads, never inside a request.

A POST that starts work is validated first (bad input is a 4xx at once), then `RunQueue.submit`
records it under the Dagster run id the entry point will use, and a worker executes the entry point
of `defs/launch.py` with that `run_id`, so the run shows in the Dagster UI under the id the client
got. The queue is bounded (`QueueFullError`: 429 with Retry-After) and runs of one project never
overlap here: a project's runs wait in submission order while one of them is executing (a run
started elsewhere, e.g. by the CLI, is the entry point's business: `batch` waits for it, `render`
reports the project busy).

Idempotency: a POST with an `Idempotency-Key` is recorded as (key, method, path, body digest). The
same key and request return the first run (even while it is still queued); the same key with
another request is refused. The map lives here for the runs of this process and, once a run has
finished, as tags on its Dagster run (`echo/idempotency-key`, `echo/idempotency-request`), so a
retry after a restart finds it too; a run that never finished here (the server stopped or died
first) is not found then, and the retry starts the work anew.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from echo_pipeline.errors import EchoError, InvalidInputError

if TYPE_CHECKING:
    import dagster as dg

log = logging.getLogger(__name__)

IDEMPOTENCY_TAG = "echo/idempotency-key"
IDEMPOTENCY_REQUEST_TAG = "echo/idempotency-request"
DEFAULT_WORKERS = 2
DEFAULT_LIMIT = 16
KEEP_FINISHED = 1000  # finished runs whose results stay in memory (their Dagster status stays anyway)
RETRY_AFTER_S = 5

# Our own states; once Dagster has the run, its status is the one reported (see `RunQueue.status`).
QUEUED, RUNNING, SUCCESS, FAILURE, CANCELED = "QUEUED", "RUNNING", "SUCCESS", "FAILURE", "CANCELED"
_DAGSTER_FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


class QueueFullError(EchoError):
    """The run queue holds its limit of unfinished runs (HTTP 429)."""

    def __init__(self, limit: int):
        super().__init__(f"the run queue is full ({limit} runs queued or running); retry in {RETRY_AFTER_S}s")
        self.retry_after = RETRY_AFTER_S


class IdempotencyConflictError(InvalidInputError):
    """An Idempotency-Key already used for another request (HTTP 422)."""


@dataclass(frozen=True)
class RequestKey:
    """A POST as the idempotency map knows it: the client's key and a digest of the request."""

    key: str
    digest: str

    @classmethod
    def of(cls, key: str, method: str, path: str, body: str) -> RequestKey:
        digest = hashlib.sha256("\0".join((method.upper(), path, body)).encode("utf-8")).hexdigest()
        return cls(key=key, digest=digest)


Work = Callable[[str, "QueuedRun"], dict[str, Any]]  # (run id, run) -> the run's JSON-able result


@dataclass
class QueuedRun:
    run_id: str
    kind: str
    project: str
    work: Work = field(repr=False)
    request: RequestKey | None = None
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    state: str = QUEUED
    progress: tuple[float, int] | None = None
    note: str | None = None
    result: dict[str, Any] | None = None
    error: tuple[str, str] | None = None  # (code, one-line message)

    @property
    def finished(self) -> bool:
        return self.state in (SUCCESS, FAILURE, CANCELED)

    def report_progress(self, done: float, total: int, _record: Any = None) -> None:
        self.progress = (done, total)

    def notify(self, text: str) -> None:
        self.note = " ".join(text.split())


def error_code(exc: BaseException) -> str:
    """The code an API error body or a failed run carries for `exc` (the class name, snake_case)."""
    from echo_pipeline.errors import Interrupted

    if isinstance(exc, Interrupted):
        return "interrupted"
    if not isinstance(exc, EchoError):
        return "internal_error"
    name = type(exc).__name__.removesuffix("Error")
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


class RunQueue:
    """Bounded, per-project serialised execution of queued work (see the module docstring)."""

    def __init__(self, *, workers: int = DEFAULT_WORKERS, limit: int = DEFAULT_LIMIT):
        if workers < 1 or limit < 1:
            raise InvalidInputError(f"the run queue needs at least 1 worker and a limit of 1 (got {workers}, {limit})")
        self.workers, self.limit = workers, limit
        self._instance: dg.DagsterInstance | None = None
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="echo-api-run")
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, QueuedRun] = OrderedDict()
        self._keys: dict[str, str] = {}  # idempotency key -> run id (this process's runs)
        self._busy: set[str] = set()  # projects with a run executing or handed to the executor
        self._waiting: dict[str, deque[QueuedRun]] = {}
        self._closed = False

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, kind: str, project: str, work: Work, *, request: RequestKey | None = None) -> tuple[str, bool]:
        """(run id, replayed): a new queued run, or the first run of the same idempotent request."""
        if request is not None:
            first = self.replay(request)
            if first is not None:
                return first, True
        with self._lock:
            if request is not None and request.key in self._keys:  # the same request, submitted meanwhile
                return self._keys[request.key], True
            if self._closed:
                raise QueueFullError(0)
            if sum(1 for r in self._runs.values() if not r.finished) >= self.limit:
                raise QueueFullError(self.limit)
            run = QueuedRun(run_id=_new_run_id(), kind=kind, project=project, work=work, request=request)
            self._runs[run.run_id] = run
            if request is not None:
                self._keys[request.key] = run.run_id
            if project in self._busy:
                self._waiting.setdefault(project, deque()).append(run)
            else:
                self._busy.add(project)
                self._executor.submit(self._execute, run)
            self._forget_old()
        return run.run_id, False

    def replay(self, request: RequestKey) -> str | None:
        """The run id of the first run of `request` (of this process, or one Dagster has from before
        a restart); None when the key is new; `IdempotencyConflictError` when it named another request."""
        with self._lock:
            run_id = self._keys.get(request.key)
            if run_id is not None:
                run = self._runs[run_id]
                if run.request is not None and run.request.digest != request.digest:
                    raise _conflict(request.key)
                return run_id
        import dagster as dg

        records = self.instance().get_run_records(filters=dg.RunsFilter(tags={IDEMPOTENCY_TAG: request.key}), limit=1)
        if not records:
            return None
        tags = records[0].dagster_run.tags
        if tags.get(IDEMPOTENCY_REQUEST_TAG) != request.digest:
            raise _conflict(request.key)
        return records[0].dagster_run.run_id

    # -- executing -------------------------------------------------------------------------------
    def _execute(self, run: QueuedRun) -> None:
        with self._lock:
            if run.state == CANCELED:
                self._next_of(run.project)
                return
            run.state = RUNNING
        try:
            result = run.work(run.run_id, run)
        except BaseException as exc:  # a worker thread must never die: the run records why it failed
            if not isinstance(exc, EchoError):
                log.exception("run %s (%s of %s) failed", run.run_id, run.kind, run.project)
            run.error = (error_code(exc), " ".join(str(exc).split()) or type(exc).__name__)
            run.state = FAILURE
        else:
            run.result, run.state = result, SUCCESS
        self._tag(run)
        with self._lock:
            self._next_of(run.project)

    def _next_of(self, project: str) -> None:
        """Hand the project's next waiting run to the executor (the lock is held)."""
        waiting = self._waiting.get(project)
        while waiting:
            run = waiting.popleft()
            if run.state == CANCELED:
                continue
            if not self._closed:
                self._executor.submit(self._execute, run)
                return
        self._waiting.pop(project, None)
        self._busy.discard(project)

    def _tag(self, run: QueuedRun) -> None:
        """Record the idempotency key on the Dagster run (when the run got that far)."""
        if run.request is None:
            return
        try:
            instance = self.instance()
            if instance.has_run(run.run_id):
                instance.add_run_tags(run.run_id, {IDEMPOTENCY_TAG: run.request.key,
                                                   IDEMPOTENCY_REQUEST_TAG: run.request.digest})
        except Exception:  # the run itself is done; only a retry after a restart would miss it
            log.exception("could not tag run %s with its idempotency key", run.run_id)

    def _forget_old(self) -> None:
        """Keep at most KEEP_FINISHED finished runs in memory, the oldest forgotten first (lock held)."""
        finished = [r for r in self._runs.values() if r.finished]
        for run in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._runs[run.run_id]
            if run.request is not None and self._keys.get(run.request.key) == run.run_id:
                del self._keys[run.request.key]

    # -- reading ---------------------------------------------------------------------------------
    def instance(self) -> dg.DagsterInstance:
        """The Dagster instance this queue reads run statuses from, opened once (opening one costs
        more than a status request); the runs themselves open their own (`launch._execute`)."""
        with self._lock:
            if self._instance is None:
                from echo_pipeline.defs.instance import get_instance

                self._instance = get_instance()
            return self._instance

    def get(self, run_id: str) -> QueuedRun | None:
        with self._lock:
            return self._runs.get(run_id)

    def counts(self) -> tuple[int, int]:
        """(queued, running) runs of this queue."""
        with self._lock:
            states = [r.state for r in self._runs.values()]
        return states.count(QUEUED), states.count(RUNNING)

    def status(self, run_id: str) -> dict[str, Any] | None:
        """The run's status (see `RunStatus`), or None when neither this queue nor Dagster knows it."""
        from echo_pipeline.defs.instance import PARTITION_TAG, PROJECT_TAG

        run = self.get(run_id)
        record = self.instance().get_run_record_by_id(run_id)
        if run is None and record is None:
            return None
        out: dict[str, Any] = {"run_id": run_id, "links": {"self": f"/api/runs/{run_id}"}}
        dagster_status = None
        if record is not None:
            dagster_run, start, end = record.dagster_run, record.start_time, record.end_time
            dagster_status = dagster_run.status.value
            out |= {"status": dagster_status, "job": dagster_run.job_name, "created": record.create_timestamp,
                    "project": dagster_run.tags.get(PARTITION_TAG) or dagster_run.tags.get(PROJECT_TAG),
                    "started": datetime.fromtimestamp(start, timezone.utc) if start else None,
                    "seconds": round(end - start, 3) if start and end else None}
        if run is not None:
            out |= {"kind": run.kind, "project": run.project, "created": run.created, "note": run.note,
                    "progress": {"done": run.progress[0], "total": run.progress[1]} if run.progress else None,
                    "result": run.result,
                    "error": {"code": run.error[0], "message": run.error[1]} if run.error else None}
            if dagster_status is None:  # Dagster does not have it (yet, or it failed before it started)
                out["status"] = QUEUED if run.state in (QUEUED, RUNNING) else run.state
            elif not run.finished and dagster_status in _DAGSTER_FINISHED:
                out["status"] = "STARTED"  # the entry point is still collecting the result
        return out

    # -- stopping --------------------------------------------------------------------------------
    def close(self, *, wait: bool = True) -> None:
        """Accept nothing more, cancel the runs still waiting, and (with `wait`) wait for the running ones."""
        with self._lock:
            self._closed = True
            for run in self._runs.values():
                if run.state == QUEUED:
                    run.state = CANCELED
                    run.error = ("canceled", "the server stopped before the run started")
        self._executor.shutdown(wait=wait, cancel_futures=True)
        if wait and self._instance is not None:
            self._instance.dispose()


def _conflict(key: str) -> IdempotencyConflictError:
    return IdempotencyConflictError(f"Idempotency-Key {key!r} was already used for a different request; "
                                    "use a new key for a new request")


def _new_run_id() -> str:
    from echo_pipeline.defs.launch import _new_run_id as new_run_id

    return new_run_id()

