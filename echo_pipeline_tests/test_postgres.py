"""The Postgres deployment config (configs/deploy/dagster.postgres.yaml) against the real server.

A fresh database is created for the test and dropped afterwards. Skipped (with the reason) only
when no PostgreSQL server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import shutil
import uuid

import dagster as dg
import psycopg2  # installed with dagster-postgres: a missing driver must fail, not skip
import pytest

from echo_pipeline_tests.conftest import REPO_ROOT

ADMIN_DSN = "host=127.0.0.1 port=5432 user=root dbname=postgres"


@pytest.fixture
def postgres_db():
    try:
        admin = psycopg2.connect(ADMIN_DSN, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server on 127.0.0.1:5432: {exc}")
    admin.autocommit = True
    name = f"echo_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_batch_run_recorded_in_postgres(postgres_db, tmp_path, monkeypatch, config_dir, artifact_root):
    home = tmp_path / "postgres_dagster_home"  # its own instance config, not the SQLite template's
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "configs" / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ECHO_DAGSTER_PG_URL", f"postgresql+psycopg2://root@127.0.0.1:5432/{postgres_db}")
    monkeypatch.setenv("ECHO_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("ECHO_ARTIFACT_ROOT", str(artifact_root))

    from echo_pipeline.definitions import defs
    from echo_pipeline.settings import Settings
    from echo_pipeline.workflows.creative_engine import CreativeEngine

    spec = CreativeEngine(Settings.load()).projects.create("PG Project", "cool waves", count=2, width=64, height=64)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.add_dynamic_partitions("projects", [spec.slug])
        result = defs.resolve_job_def("batch").execute_in_process(instance=instance, partition_key=spec.slug)
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("generated_images"))
        assert event.asset_materialization.partition == spec.slug

    with psycopg2.connect(f"host=127.0.0.1 port=5432 user=root dbname={postgres_db}") as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone() == ("SUCCESS",)
        cur.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'projects'")
        assert (spec.slug,) in cur.fetchall()


def test_the_gpu_pool_row_is_written_once_before_runs_start(postgres_db, tmp_path, monkeypatch):
    """On PostgreSQL, runs that start at once on a fresh instance each insert the `gpu` pool's row,
    and the loser's fallback runs in an aborted transaction (a failed run, seen in the Celery test):
    `ensure_pool_limits`, called by `backfill` before it submits runs, writes the row first."""
    from echo_pipeline.defs.instance import ensure_pool_limits
    from echo_pipeline.defs.pools import GPU_POOL

    home = tmp_path / "postgres_dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "configs" / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ECHO_DAGSTER_PG_URL", f"postgresql+psycopg2://root@127.0.0.1:5432/{postgres_db}")
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert GPU_POOL not in storage.get_concurrency_keys()
        ensure_pool_limits(instance)
        ensure_pool_limits(instance)  # already there: nothing to do
        info = storage.get_concurrency_info(GPU_POOL)
        assert info.slot_count == instance.global_op_concurrency_default_limit >= 1 and not info.claimed_slots
