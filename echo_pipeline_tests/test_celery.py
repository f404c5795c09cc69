"""The Celery deploy profile on this machine: two workers, a three-project backfill.

configs/deploy/dagster.celery.yaml is the instance (PostgreSQL storage, a fresh database per test),
configs/deploy/celery.yaml the executor and worker config (Redis on 127.0.0.1:6379 as broker and
results backend, a database number of its own per test run), the artifacts go to S3 (moto's server
on loopback). Two workers started with `dagster-celery worker start` stand for two hosts (w1, w2),
each consuming the `dagster` and `gpu` queues with concurrency 1, and the daemon launches the runs.

What the event log must show: every step of every run ran on one of the two workers, both ran
steps, the `gpu`-pool steps went to the `gpu` queue, and no worker ran two `gpu`-pool steps at once.
And every step's log (its stderr) is in the bucket (dagster-aws's S3ComputeLogManager) and reads
back through the instance, as the UI shows it.
Skipped, with the reason, only when Redis or PostgreSQL does not answer.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import psutil
import pytest

from echo_pipeline_tests import test_postgres
from echo_pipeline_tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.s3]

postgres_db = test_postgres.postgres_db  # a fresh database per test, dropped afterwards
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
WORKERS = ("w1", "w2")
BIN = Path(sys.executable).parent
HANG_GUARD_S = 300  # not a speed budget: a run that never ends fails the test instead of holding CI


@pytest.fixture
def redis_url():
    """A Redis database (1-15) of this test's own: held by a key in db 0 while the test runs, so
    parallel runs of the suite never share a broker queue; emptied before and after."""
    import redis

    admin = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3)
    try:
        admin.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"no Redis server on {REDIS_HOST}:{REDIS_PORT}: {exc}")
    token = uuid.uuid4().hex
    for db in range(1, 16):
        lock = f"echo-os-test:celery-db:{db}"
        if admin.set(lock, token, nx=True, ex=HANG_GUARD_S * 3):
            break
    else:
        pytest.fail("Redis databases 1-15 are all held by other test runs (keys echo-os-test:celery-db:*)")
    database = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    database.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        database.flushdb()
        if admin.get(lock) == token.encode():
            admin.delete(lock)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(*procs: subprocess.Popen) -> None:
    """SIGTERM to the processes and everything they started (a worker's pool child, the daemon's
    code server and run processes), SIGKILL to what is left after 20 s."""
    tree = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            tree += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in reversed(tree):
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=20)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    for proc in procs:
        proc.wait(timeout=10)


def _wait_until(check, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
            pytest.fail(f"{what} within {HANG_GUARD_S}s\n{tails}")
        time.sleep(0.5)


@pytest.mark.slow(seconds=80)  # measured 73-96 s on 2 loaded cores: process start-up, not work
def test_backfill_of_three_projects_on_two_celery_workers(cli, postgres_db, redis_url, s3_root, tmp_path,
                                                          monkeypatch, artifact_root):
    import dagster as dg
    from dagster._core.storage.tags import PARTITION_NAME_TAG

    from echo_pipeline.artifacts.storage import ArtifactStore
    from echo_pipeline.defs.assets import PIPELINE_ASSETS
    from echo_pipeline.defs.instance import get_instance
    from echo_pipeline.defs.launch import daemon_running
    from echo_pipeline.defs.pools import GPU_POOL

    bucket = s3_root.removeprefix("s3://").split("/")[0]  # step logs go beside the artifacts
    home = tmp_path / "celery_dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_bytes((REPO_ROOT / "configs" / "deploy" / "dagster.celery.yaml").read_bytes())
    for key, value in {"DAGSTER_HOME": str(home), "ECHO_DAGSTER_EXECUTOR": "celery",
                       "ECHO_DAGSTER_PG_URL": f"postgresql+psycopg2://root@127.0.0.1:5432/{postgres_db}",
                       "ECHO_CELERY_BROKER": redis_url, "ECHO_CELERY_BACKEND": redis_url,
                       "ECHO_ARTIFACT_ROOT": s3_root, "ECHO_LOG_BUCKET": bucket, "OMP_NUM_THREADS": "1",
                       "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}.items():
        monkeypatch.setenv(key, value)
    env = dict(os.environ)  # workers and the daemon (and its runs) see what a deploy's hosts would
    logs = {name: tmp_path / f"{name}.log" for name in (*WORKERS, "daemon")}
    # The worker command of configs/deploy/celery.yaml, one per "host".
    workers = [_start([str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                       "-y", "configs/deploy/celery.yaml", "-q", "dagster,gpu", "-n", name,
                       "-i", "echo_pipeline.definitions", "--", "--concurrency", "1"], env, logs[name])
               for name in WORKERS]
    daemon = _start([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, logs["daemon"])
    try:
        slugs = []
        for name in ("a", "b", "c"):
            code, out, err = cli("plan", f"celery {name}", "cool waves over dunes", "--count", "3", "--size", "64x64")
            assert code == 0, out + err
            slugs.append(f"celery-{name}")
        instance = get_instance()
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"

        def workers_answer() -> bool:
            # Pinged from a child process: a kombu connection pool in this process registers an
            # after-fork hook that blocks every later fork here (the procedural renderer's workers).
            ping = ("import json, sys; from celery import Celery; app = Celery(broker=sys.argv[1]); "
                    "print(json.dumps([n for r in app.control.ping(timeout=1.0) for n in r]))")
            done = subprocess.run([sys.executable, "-c", ping, redis_url], capture_output=True, text=True, timeout=60)
            names = json.loads(done.stdout or "[]") if done.returncode == 0 else []
            return set(WORKERS) <= {name.split("@")[0] for name in names}

        _wait_until(workers_answer, "the two Celery workers did not answer", list(logs.values()))
        _wait_until(lambda: daemon_running(instance), "the Dagster daemon did not start", [logs["daemon"]])

        started = time.monotonic()
        code, out, err = cli("backfill", "--projects", ",".join(slugs), "--wait", "--timeout", str(HANG_GUARD_S),
                             "--json")
        backfill_s = time.monotonic() - started
        assert code == 0, out + err + "".join(log.read_text(errors="replace")[-3000:] for log in logs.values())

        runs = instance.get_runs(filters=dg.RunsFilter(job_name="batch"))
        assert sorted(r.tags[PARTITION_NAME_TAG] for r in runs) == sorted(slugs)
        failures = [str(e.dagster_event.event_specific_data.error.to_string() if e.dagster_event.event_specific_data
                        and getattr(e.dagster_event.event_specific_data, "error", None) else e.message)
                    for r in runs if r.status != dg.DagsterRunStatus.SUCCESS
                    for e in instance.all_logs(r.run_id) if e.dagster_event and e.dagster_event.is_failure]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), failures[:3]

        gpu_steps = {a.op.name for a in PIPELINE_ASSETS if a.op.pool == GPU_POOL}
        assert gpu_steps == {"generated_images", "media"}
        # Per step: the worker that ran it (dagster-celery's engine event), when it began there and
        # when it ended, and the queue it was sent to.
        ran: list[tuple[str, str, str, float, float]] = []  # (run, step, worker, start, end)
        for run in runs:
            ran_on, begun, queue = {}, {}, {}
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event is None or event.step_key is None:
                    continue
                if event.event_type_value == "ENGINE_EVENT":
                    metadata = event.engine_event_data.metadata
                    if "Celery worker" in metadata:
                        ran_on[event.step_key] = metadata["Celery worker"].value
                        begun[event.step_key] = entry.timestamp
                    elif entry.message.startswith("Submitting celery task"):
                        queue[event.step_key] = entry.message.rsplit(" to queue ", 1)[1].strip('".')
                elif event.event_type_value == "STEP_SUCCESS":
                    ran.append((run.run_id, event.step_key, ran_on[event.step_key], begun[event.step_key],
                                entry.timestamp))
            assert {s for s, q in queue.items() if q == GPU_POOL} == gpu_steps, queue
            assert set(queue.values()) == {"dagster", GPU_POOL}
        steps = {a.op.name for a in PIPELINE_ASSETS}  # the media assets are one step
        assert sorted((run_id, step) for run_id, step, *_ in ran) == sorted((r.run_id, s) for r in runs for s in steps)

        by_worker: dict[str, list[tuple[str, str, float, float]]] = defaultdict(list)
        for run_id, step, worker, start, end in ran:
            by_worker[worker].append((run_id, step, start, end))
        assert {w.split("@")[0] for w in by_worker} == set(WORKERS), dict(by_worker)
        for worker, done in by_worker.items():
            model_steps = sorted((start, end, step, run_id) for run_id, step, start, end in done if step in gpu_steps)
            for (_, end, step, run_id), (next_start, _, next_step, next_run) in itertools.pairwise(model_steps):
                assert end <= next_start, (f"{worker} ran {step} of {run_id} and {next_step} of {next_run} "
                                           "at the same time")
        slots = instance.event_log_storage.get_concurrency_info(GPU_POOL)
        assert slots.slot_count == 2 and not slots.claimed_slots  # the profile's limit; all freed

        store = ArtifactStore(s3_root)
        for slug in slugs:
            catalog = store.catalog(slug)
            assert len(catalog) == 3 and all(store.has_image(slug, a) for a in catalog["artifact_id"])
        assert not artifact_root.exists()  # nothing was written locally: the workers wrote to S3
        # Each step's stderr (its Dagster log lines) was uploaded to S3 by the worker that ran it
        # (their local copies are deleted then), and the instance reads it back from there, as the
        # UI does: every step's log names its step.
        manager = instance.compute_log_manager
        assert type(manager).__name__ == "S3ComputeLogManager"
        import boto3

        uploaded = {o["Key"] for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix="echo-os/dagster-logs/storage/") for o in page.get("Contents", [])}
        for run in runs:
            captured = {step: data for entry in instance.all_logs(run.run_id)
                        if entry.dagster_event and entry.dagster_event.event_type_value == "LOGS_CAPTURED"
                        for data in [entry.dagster_event.logs_captured_data] for step in data.step_keys}
            assert set(captured) == steps, sorted(captured)
            for step, data in captured.items():
                key = f"echo-os/dagster-logs/storage/{run.run_id}/compute_logs/{data.file_key}.err"
                assert key in uploaded, (step, key)
                stderr = manager.get_log_data(manager.build_log_key_for_run(run.run_id, data.file_key)).stderr
                assert f'"{step}"'.encode() in (stderr or b""), (step, (stderr or b"")[-300:])
        print(f"backfill of 3 projects on 2 Celery workers: {backfill_s:.1f}s; steps per worker: "
              f"{ {w: len(done) for w, done in by_worker.items()} }")
    finally:
        _stop(daemon, *workers)
