"""PostgreSQL restarted under a running batch whose Dagster instance lives there (dagster-postgres,
configs/deploy/dagster.postgres.yaml on a fresh database): the run either finishes or fails with
one clear line, and the next run completes with nothing lost or duplicated.

The restart is the real server's (`pg_ctlcluster ... restart`), bounded, and the server is started
again in a `finally` whatever happens; tests outside the fault suite never run beside this one.
Skipped (with the reason) when no local cluster can be restarted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import dagster as dg
import psycopg2
import pytest

from echo_pipeline_tests.conftest import REPO_ROOT
from echo_pipeline_tests.test_postgres import ADMIN_DSN

pytestmark = pytest.mark.fault

COUNT = 12


def _cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.skip("no local PostgreSQL cluster to restart (pg_ctlcluster, /etc/postgresql)")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main"]


@pytest.fixture
def restartable_db():
    """A fresh database, dropped afterwards over a new connection (test_postgres.py's fixture keeps
    its admin connection open across the test, and the restart closes it)."""
    import uuid

    try:
        admin = psycopg2.connect(ADMIN_DSN, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server on 127.0.0.1:5432: {exc}")
    name = f"echo_fault_{uuid.uuid4().hex[:10]}"
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    try:
        yield name
    finally:
        _ready()
        admin = psycopg2.connect(ADMIN_DSN, connect_timeout=10)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _ready(timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode == 0:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow(seconds=35)
def test_postgres_restarted_during_a_batch(restartable_db, tmp_path, monkeypatch, cli, artifact_root):
    cluster = _cluster()
    home = tmp_path / "postgres_dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "configs" / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ECHO_DAGSTER_PG_URL", f"postgresql+psycopg2://root@127.0.0.1:5432/{restartable_db}")
    assert cli("plan", "PG Restart", "flow field", "--size", "160x160", "--count", str(COUNT))[0] == 0

    images = artifact_root / "projects" / "pg-restart" / "images"
    batch = subprocess.Popen([sys.executable, "-m", "echo_pipeline.cli.app", "batch", "pg-restart", "--json"],
                             env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    restarted = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and batch.poll() is None and len(list(images.glob("*.png"))) < 2:
            time.sleep(0.02)
        assert batch.poll() is None, "the batch ended before the restart"
        restarted = subprocess.run([*cluster, "restart"], capture_output=True, text=True, timeout=120)
        out, err = batch.communicate(timeout=300)
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.wait()
        if not _ready(5):
            subprocess.run([*cluster, "start"], check=False, timeout=120)
        assert _ready(), "PostgreSQL did not come back"
    assert restarted is not None and restarted.returncode == 0, restarted.stderr
    lines = err.strip().splitlines()
    if batch.returncode == 0:
        assert json.loads(out)["batch"] == 0
    else:  # failed: one clear line, no traceback
        assert batch.returncode in (1, 2) and len(lines) == 1 and "Traceback" not in err, err

    code, out, err = cli("batch", "pg-restart", "--json")
    assert code == 0, err
    summary = json.loads(out)
    from echo_pipeline.artifacts.storage import ArtifactStore

    store = ArtifactStore(str(artifact_root))
    catalog = store.catalog("pg-restart")
    if batch.returncode != 0:
        assert summary["batch"] == 0 and summary["new_images"] + summary["already_stored"] == COUNT
    assert len(catalog) == (COUNT if batch.returncode != 0 else 2 * COUNT) and catalog["artifact_id"].is_unique
    assert store.verify("pg-restart").ok
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "pg-restart"}, job_name="batch"))
        assert runs[0].status == dg.DagsterRunStatus.SUCCESS
        assert all(r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) for r in runs)
    print(f"\nbatch during the restart: exit {batch.returncode}, {lines[-1] if lines else 'no stderr'}")
