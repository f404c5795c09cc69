"""The Dagster layer: definitions load, the batch job materializes every asset of the graph per project,
successive batches render new images, and the sensor and schedule fan out per project."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pytest
from dagster._core.definitions.data_version import StaleStatus
from PIL import Image

from echo_pipeline.render.backends.base import BackendCapabilities, BackendDescription, ImageBackend, RenderedImage
from echo_pipeline.settings import Settings
from echo_pipeline.workflows.creative_engine import CreativeEngine

PIPELINE = ["intent", "plan", "prompt_set", "generated_images", "textures", "models_3d", "videos", "interactive_pieces",
            "quality_scores", "style_memory", "gallery"]


@pytest.fixture
def env(monkeypatch, config_dir, artifact_root):
    monkeypatch.setenv("ECHO_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("ECHO_ARTIFACT_ROOT", str(artifact_root))
    engine = CreativeEngine(Settings.load())
    from echo_pipeline.defs.resources import EchoResource, ImageBackendResource

    resources = {"echo": EchoResource(artifact_root=str(artifact_root), config_dir=str(config_dir)),
                 "image_backend": ImageBackendResource()}
    return engine, resources


def _job(name: str):
    from echo_pipeline.definitions import defs

    return defs.resolve_job_def(name)


def test_definitions_validate():
    from echo_pipeline.definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} >= set(PIPELINE)


def test_batch_job_materializes_the_graph_and_next_batch_is_new(env):
    engine, _resources = env
    spec = engine.projects.create("Ruzgar NFT Collection", "warm fractal, no human forms", count=3, width=96, height=96)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("projects", [spec.slug])
    result = _job("batch").execute_in_process(instance=instance, partition_key=spec.slug)
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == set(PIPELINE)
    meta = result.asset_materializations_for_node("generated_images")[0].metadata
    assert meta["new_images"].value == 3 and "data:image/jpeg;base64," in meta["preview"].value
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"unique_images": True, "style_consistency": True}
    # Check results belong to the project's partition (the UI shows each project its own).
    assert {e.partition for e in result.get_asset_check_evaluations()} == {spec.slug}
    catalog = engine.store.catalog(spec.slug)
    assert len(catalog) == 3 and set(catalog.run_id) == {result.run_id}
    assert "human forms" in catalog.negative_prompt.iloc[0]

    again = _job("batch").execute_in_process(instance=instance, partition_key=spec.slug)
    assert again.asset_materializations_for_node("generated_images")[0].metadata["new_images"].value == 3
    assert len(engine.store.catalog(spec.slug)) == 6 and engine.store.catalog(spec.slug).artifact_id.is_unique
    scores = again.asset_materializations_for_node("quality_scores")[0].metadata
    assert scores["scored_now"].value == 3 and scores["already_scored"].value == 3

    # The consistency check judges each new batch: no image reaches a threshold of 100, so a batch
    # fails a 50 % target (a WARN check: the run itself succeeds and the gallery is still built).
    engine.projects.create(spec.name, None, style_threshold=100.0, style_target=50.0)
    strict = _job("batch").execute_in_process(instance=instance, partition_key=spec.slug)
    assert strict.success
    [evaluation] = [e for e in strict.get_asset_check_evaluations() if e.asset_check_key.name == "style_consistency"]
    assert not evaluation.passed
    assert evaluation.metadata["consistent_pct"].value == 0.0 and evaluation.metadata["judged_images"].value == 3
    assert evaluation.metadata["target_pct"].value == 50.0


def test_sensor_adds_partitions_and_requests_only_what_was_asked(env):
    engine, resources = env
    from echo_pipeline.defs.sensors import project_files_sensor

    engine.projects.create("Alpha Project", "cool waves", width=64, height=64, count=1)
    engine.projects.create("Beta Project", "warm waves", width=64, height=64, count=1)
    instance = dg.DagsterInstance.ephemeral()
    # Beta was planned before (e.g. by `echo-os plan`): a sensor with an empty cursor leaves it alone.
    instance.add_dynamic_partitions("projects", ["beta-project"])
    assert _job("plan_project").execute_in_process(instance=instance, partition_key="beta-project").success

    def evaluate(cursor=None):
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
            return project_files_sensor(ctx)

    result = evaluate()
    # A never-materialized project gets a plan (cheap, no images); nothing asks for a batch.
    assert [(r.partition_key, r.job_name) for r in result.run_requests] == [("alpha-project", "plan_project")]
    assert result.dynamic_partitions_requests[0].partition_keys == ["alpha-project"]
    cursor = result.cursor
    assert not evaluate(cursor).run_requests
    engine.projects.create("Alpha Project", "cool waves, intricate")
    changed = evaluate(cursor)
    assert [(r.partition_key, r.job_name) for r in changed.run_requests] == [("alpha-project", "plan_project")]
    assert json.loads(changed.cursor).keys() == {"alpha-project", "beta-project", "__styles__"}
    styles = engine.styles
    styles.create("sensor style", "{prompt}, teal")
    restyled = evaluate(changed.cursor)
    assert [r.job_name for r in restyled.run_requests] == ["observe_styles"]


def test_style_edit_makes_prompt_set_stale(env):
    engine, _ = env
    spec = engine.projects.create("Stale Test", "cool waves", count=1, width=64, height=64)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("projects", [spec.slug])
        _job("observe_styles").execute_in_process(instance=instance)
        assert _job("batch").execute_in_process(instance=instance, partition_key=spec.slug).success
        from echo_pipeline.definitions import defs

        def status():
            # The same resolver the UI's "stale" badges come from (dagster's own test helper builds it).
            from dagster._utils.test.data_versions import get_stale_status_resolver

            assets = [a for a in defs.assets if isinstance(a, (dg.AssetsDefinition, dg.SourceAsset))]
            return get_stale_status_resolver(instance, assets).get_status(dg.AssetKey("prompt_set"), spec.slug)

        assert status() == StaleStatus.FRESH
        engine.styles.create("new look", "{prompt}, teal glow")
        _job("observe_styles").execute_in_process(instance=instance)
        assert status() == StaleStatus.STALE


def test_schedule_fans_out_one_run_per_scheduled_project(env):
    engine, resources = env
    from echo_pipeline.defs.schedules import nightly_batch

    engine.projects.create("Night One", "warm fractal", schedule=True)
    engine.projects.create("Night Two", "neon city", schedule=True)
    engine.projects.create("Manual", "cool waves", schedule=False)
    with dg.instance_for_test() as instance, \
            dg.build_schedule_context(instance=instance, resources=resources,
                                      scheduled_execution_time=datetime(2026, 11, 25, 3, tzinfo=timezone.utc)) as ctx:
        result = nightly_batch(ctx)
    assert sorted(r.partition_key for r in result.run_requests) == ["night-one", "night-two"]
    assert {r.run_key for r in result.run_requests} == {"night-one-20261125", "night-two-20261125"}


def test_cli_dagster_home_is_persistent_by_default_and_honours_the_users(monkeypatch, tmp_path):
    from echo_pipeline.defs.instance import ensure_dagster_home

    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.chdir(tmp_path)
    home = ensure_dagster_home()
    assert home.path == tmp_path / ".dagster_home" and (home.path / "dagster.yaml").is_file() and home.seeded
    assert os.environ["DAGSTER_HOME"] == str(home.path)
    # A user's own home without dagster.yaml is seeded too (pools and run limits on), and says so...
    own = tmp_path / "mine"
    monkeypatch.setenv("DAGSTER_HOME", str(own))
    assert ensure_dagster_home() == type(home)(own, seeded=True)
    assert "pools" in (own / "dagster.yaml").read_text()
    # ...but an existing dagster.yaml is never overwritten.
    (own / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert not ensure_dagster_home().seeded
    assert (own / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


class FlatBackend(ImageBackend):
    """Every image the same grey: the uniqueness check must fail and block what follows."""

    name = "flat"
    capabilities = BackendCapabilities()

    def describe(self):
        return BackendDescription(backend="flat", model="flat-grey", version="1")

    def render(self, requests, progress=None):
        self.check_requests(requests)
        for request in requests:
            pixels = np.full((request.height, request.width, 3), 128, dtype=np.uint8)
            yield RenderedImage(request, Image.fromarray(pixels), {})


def test_near_duplicate_batch_fails_the_blocking_uniqueness_check(env, monkeypatch):
    engine, _ = env
    from echo_pipeline.render.backends import registry

    monkeypatch.setitem(registry._BACKENDS, "flat", "echo_pipeline_tests.test_dagster:FlatBackend")
    spec = engine.projects.create("Flat Test", "grey", count=3, width=64, height=64, backend="flat")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("projects", [spec.slug])
    result = _job("batch").execute_in_process(instance=instance, partition_key=spec.slug, raise_on_error=False)
    assert not result.success
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"unique_images": False}
    (evaluation,) = result.get_asset_check_evaluations()
    assert "still near-duplicates after 3 re-roll(s) each" in evaluation.description
    assert evaluation.metadata["rerolled"].value == 6  # two of the three images, three other seeds each
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "generated_images" in materialized and "quality_scores" not in materialized
