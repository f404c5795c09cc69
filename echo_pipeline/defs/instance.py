"""The Dagster instance `echo-os` uses, and the liveness of the runs on it.

Home: with DAGSTER_HOME unset Dagster would use a temporary home deleted at exit (runs and lineage
lost), so `echo-os` defaults to `./.dagster_home`. Any home without a `dagster.yaml` (ours or the
user's own) is seeded with the project's one, so the run queue's per-project limit and the `gpu` pool
are always on; an existing `dagster.yaml` is never overwritten.

Liveness: a run executed in a process that was killed stays STARTED forever and keeps its `gpu`
pool slot, so every later run would wait for it. Each run records the process executing it (host,
pid and the pid's start time, so a reused pid is not mistaken for it); `reap_dead_runs` marks the
runs of dead processes on this host failed and frees their slots before a new run starts.
Runs launched by the daemon also get Dagster's run monitoring (see dagster.yaml).
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from echo_pipeline.settings import PACKAGE_DIR

if TYPE_CHECKING:  # imported when needed: `echo-os render` sets its backend going first
    import dagster as dg

DEFAULT_HOME = ".dagster_home"
INSTANCE_TEMPLATE = PACKAGE_DIR.parent / "dagster.yaml"

HOST_TAG = "echo/host"
PID_TAG = "echo/pid"
PID_STARTED_TAG = "echo/pid_started"
PARTITION_TAG = "dagster/partition"
PROJECT_TAG = "echo/project"  # on unpartitioned runs that write a project (`render`)


def _active_statuses() -> list[dg.DagsterRunStatus]:
    import dagster as dg

    return [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
            dg.DagsterRunStatus.CANCELING]


# The home this process seeded, if any: the CLI says so once its command has succeeded.
seeded_home: Path | None = None


@dataclass(frozen=True)
class DagsterHome:
    path: Path
    seeded: bool  # True when this call wrote dagster.yaml into it


def ensure_dagster_home() -> DagsterHome:
    """The persistent home (DAGSTER_HOME, else ./.dagster_home), seeded with dagster.yaml when it has none."""
    configured = os.environ.get("DAGSTER_HOME")
    home = Path(configured).expanduser().resolve() if configured else (Path.cwd() / DEFAULT_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    seeded = False
    if not (home / "dagster.yaml").exists() and INSTANCE_TEMPLATE.is_file():
        shutil.copyfile(INSTANCE_TEMPLATE, home / "dagster.yaml")
        seeded = True
        global seeded_home
        seeded_home = home
    # Dagster reads the home from the environment; every `echo-os` command uses this one.
    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterHome(home, seeded)


def get_instance() -> dg.DagsterInstance:
    import dagster as dg

    ensure_dagster_home()
    return dg.DagsterInstance.get()


def ensure_partition(instance: dg.DagsterInstance, slug: str) -> bool:
    """Register the project's partition; True when it was new."""
    from echo_pipeline.defs.partitions import PROJECTS

    if instance.has_dynamic_partition(PROJECTS, slug):
        return False
    instance.add_dynamic_partitions(PROJECTS, [slug])
    return True


def ensure_pool_limits(instance: dg.DagsterInstance) -> None:
    """Write the `gpu` pool's limit row (from the instance's default pool limit) before runs start.

    Otherwise the first runs write it themselves when they claim a slot, and on PostgreSQL two runs
    starting at once both insert it: dagster 1.13's fallback update then runs in the aborted
    transaction and the run fails (InFailedSqlTransaction). One process doing it first avoids that.
    """
    from echo_pipeline.defs.pools import GPU_POOL

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or instance.global_op_concurrency_default_limit is None:
        return
    if GPU_POOL not in storage.get_concurrency_keys():
        storage.initialize_concurrency_limit_to_default(GPU_POOL)


# -- which process runs a run ---------------------------------------------------------------------
def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def process_tags() -> dict[str, str]:
    """Tags naming this process as the one executing a run."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_STARTED_TAG: f"{_process_started(pid) or 0:.2f}"}


def tag_run_process(instance: dg.DagsterInstance, run_id: str) -> None:
    """Record the executing process on a run that lacks it (runs launched by the daemon)."""
    run = instance.get_run_by_id(run_id)
    if run is not None and PID_TAG not in run.tags:
        instance.add_run_tags(run_id, process_tags())


def run_process_alive(run: dg.DagsterRun) -> bool | None:
    """True/False for a run executed on this host; None when that cannot be told (other host, no tags)."""
    if run.tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in run.tags:
        return None
    started = _process_started(int(run.tags[PID_TAG]))
    if started is None:
        return False
    recorded = float(run.tags.get(PID_STARTED_TAG) or 0)
    return not recorded or abs(started - recorded) < 1.0  # a different start time: the pid was reused


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark the active runs whose process on this host is gone as failed and free their pool slots."""
    import dagster as dg

    reaped = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_active_statuses())):
        if run_process_alive(run) is False:
            instance.report_run_failed(run, f"process {run.tags[PID_TAG]} on {run.tags[HOST_TAG]} died "
                                            "while executing this run; its stored images are kept")
            reaped.append(run.run_id)
    for run_id in reaped:
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return reaped


@dataclass(frozen=True)
class ActiveRun:
    run_id: str
    job: str
    started: datetime | None


def active_project_run(instance: dg.DagsterInstance, slug: str) -> ActiveRun | None:
    """A run of this project that is executing now (dead ones are reaped first by the caller)."""
    import dagster as dg

    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=_active_statuses(), tags={PARTITION_TAG: slug}), limit=1)
    if not records:
        return None
    record = records[0]
    started = datetime.fromtimestamp(record.start_time) if record.start_time else record.create_timestamp
    return ActiveRun(record.dagster_run.run_id, record.dagster_run.job_name, started)
