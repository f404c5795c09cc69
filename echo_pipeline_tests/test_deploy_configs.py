"""The deploy profiles in configs/deploy/, checked by Dagster's own config machinery (no cluster, no
Docker daemon, no network needed).

- Each instance file (dagster.*.yaml) passes `dagster_instance_config`, the loader a DagsterInstance
  uses (the instance schema, the storage/concurrency rules); its storage and run launcher config pass
  the config schema of their class (`DagsterPostgresStorage`, `K8sRunLauncher`, `DockerRunLauncher`),
  the check Dagster makes when it creates them.
- Each executor file (celery.yaml, k8s_executor.yaml, docker_executor.yaml) is read the way
  echo_pipeline/definitions.py reads it and passes its executor's config schema; celery.yaml also
  passes the worker CLI's own check (`dagster-celery worker start -y`).
- helm-values.yaml: the chart's values schema is not shipped with dagster-k8s (nor available
  offline), so the values themselves are not schema-checked. What maps onto Dagster config is:
  the `concurrency` block and the K8sRunLauncher settings, written in Dagster's field names, pass
  the instance schema and K8sRunLauncher's schema and equal dagster.k8s.yaml's; the code location
  serves the workspace's module and attribute; the S3 compute log settings equal dagster.k8s.yaml's.
- Every multi-host profile (Celery, Kubernetes, Docker) keeps step logs on S3 (dagster-aws's
  S3ComputeLogManager, its schema checked).
"""

from __future__ import annotations

import re

import pytest
import yaml

from echo_pipeline_tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "configs" / "deploy"
ENV = {"ECHO_DAGSTER_PG_URL": "postgresql+psycopg2://dagster:secret@db.internal:5432/dagster",
       "ECHO_CELERY_BROKER": "redis://redis.internal:6379/0", "ECHO_CELERY_BACKEND": "redis://redis.internal:6379/1",
       "ECHO_DOCKER_IMAGE": "registry.example.com/studio/echo-os:2.0.0", "ECHO_LOG_BUCKET": "studio-bucket"}


@pytest.fixture(autouse=True)
def _deploy_env(monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _process(config_type, value) -> dict:
    from dagster._config import process_config

    result = process_config(config_type, value)
    assert result.success, [error.message for error in result.errors or []]
    return result.value


def _instance(name: str) -> dict:
    from dagster._core.instance.config import dagster_instance_config

    config, custom_class = dagster_instance_config(str(DEPLOY), name)
    assert custom_class is None
    return config


def _gpu_steps() -> set[str]:
    from echo_pipeline.defs.assets import PIPELINE_ASSETS
    from echo_pipeline.defs.pools import GPU_POOL

    return {asset.op.name for asset in PIPELINE_ASSETS if asset.op.pool == GPU_POOL}


# -- instance files -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dagster.postgres.yaml", "dagster.celery.yaml", "dagster.k8s.yaml",
                                  "dagster.docker.yaml"])
def test_instance_file_passes_dagsters_instance_schema(name):
    from dagster_postgres import DagsterPostgresStorage

    config = _instance(name)
    storage = _process(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert storage["postgres_url"] == ENV["ECHO_DAGSTER_PG_URL"]  # read from the environment
    # One run per project at a time in every profile; the `gpu` pool has a limit.
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert config["concurrency"]["pools"]["default_limit"] >= 1


@pytest.mark.parametrize(("name", "launcher"), [
    ("dagster.celery.yaml", "dagster._core.launcher.DefaultRunLauncher"),
    ("dagster.k8s.yaml", "dagster_k8s.K8sRunLauncher"),
    ("dagster.docker.yaml", "dagster_docker.DockerRunLauncher"),
])
def test_run_launcher_config_passes_the_launchers_schema(name, launcher):
    import importlib

    config = _instance(name)["run_launcher"]
    assert f"{config['module']}.{config['class']}" == launcher
    cls = getattr(importlib.import_module(config["module"]), config["class"])
    processed = _process(cls.config_type(), config.get("config") or {})
    if name == "dagster.docker.yaml":
        assert processed["image"] == ENV["ECHO_DOCKER_IMAGE"]
        assert {"ECHO_DAGSTER_PG_URL", "ECHO_ARTIFACT_ROOT"} <= set(processed["env_vars"])


@pytest.mark.parametrize("name", ["dagster.celery.yaml", "dagster.k8s.yaml", "dagster.docker.yaml"])
def test_step_logs_go_to_s3_in_every_multi_host_profile(name):
    """A step's stdout/stderr stays on the host (or in the container) that ran it unless the compute
    log manager uploads it; every profile whose steps leave the webserver's host uses S3."""
    import importlib

    config = _instance(name)["compute_logs"]
    assert f"{config['module']}.{config['class']}" == "dagster_aws.s3.compute_log_manager.S3ComputeLogManager"
    cls = getattr(importlib.import_module(config["module"]), config["class"])
    processed = _process(cls.config_type(), config["config"])
    assert processed["bucket"] == ENV["ECHO_LOG_BUCKET"] and processed["prefix"] == "echo-os/dagster-logs"


def test_instance_schema_rejects_a_broken_profile(tmp_path):
    """The check above is a real one: a misspelt launcher field or a bad pool limit fails it."""
    from dagster._config import process_config
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster_k8s import K8sRunLauncher

    config = _load("dagster.k8s.yaml")
    wrong = dict(config["run_launcher"]["config"], job_namespacee="echo-os")
    assert not process_config(K8sRunLauncher.config_type(), wrong).success
    config["concurrency"]["pools"]["default_limit"] = -1
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    from dagster._core.instance.config import dagster_instance_config

    with pytest.raises(DagsterInvalidConfigError, match="default_limit"):
        dagster_instance_config(str(tmp_path), "dagster.yaml")


# -- executor files -----------------------------------------------------------------------------
@pytest.mark.parametrize(("executor", "module", "attribute"), [
    ("celery", "dagster_celery", "celery_executor"),
    ("k8s", "dagster_k8s", "k8s_job_executor"),
    ("docker", "dagster_docker", "docker_executor"),
])
def test_executor_file_passes_the_executors_schema(executor, module, attribute, monkeypatch):
    import importlib

    from echo_pipeline import definitions

    definition = getattr(importlib.import_module(module), attribute)
    config = _process(definition.config_schema.config_type, definitions.executor_config(executor))
    monkeypatch.setenv("ECHO_DAGSTER_EXECUTOR", executor)
    assert definitions._executor().name == definition.name  # what a run with this profile gets
    if executor == "celery":
        assert (config["broker"], config["backend"]) == (ENV["ECHO_CELERY_BROKER"], ENV["ECHO_CELERY_BACKEND"])
    if executor == "k8s":  # a GPU for each model step, and only for those
        assert set(config["per_step_k8s_config"]) == _gpu_steps()


def test_celery_file_passes_the_worker_clis_check():
    from dagster_celery.cli import get_validated_config

    config = get_validated_config(str(DEPLOY / "celery.yaml"))
    assert config["broker"] == ENV["ECHO_CELERY_BROKER"]


def test_gpu_steps_go_to_the_gpu_queue():
    from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

    from echo_pipeline.defs.assets import PIPELINE_ASSETS
    from echo_pipeline.defs.pools import GPU_POOL
    from echo_pipeline.defs.render_job import render_prompt
    from echo_pipeline.defs.resonance_job import refine_weakest

    ops = [asset.op for asset in PIPELINE_ASSETS] + [render_prompt, refine_weakest]
    assert {op.name for op in ops if op.tags.get(DAGSTER_CELERY_QUEUE_TAG) == GPU_POOL} == \
        {op.name for op in ops if op.pool == GPU_POOL} == _gpu_steps() | {"render_prompt", "refine_weakest"}


def test_executor_choice_errors_are_one_line(monkeypatch, tmp_path):
    from echo_pipeline import definitions

    monkeypatch.setenv("ECHO_DAGSTER_EXECUTOR", "spark")
    with pytest.raises(ValueError, match="choose one of: in_process, multiprocess, celery, k8s, docker"):
        definitions._executor()
    monkeypatch.setenv("ECHO_DAGSTER_EXECUTOR", "celery")
    (tmp_path / "celery.yaml").write_text("broker: redis://x\n")
    monkeypatch.setenv("ECHO_EXECUTOR_CONFIG", str(tmp_path / "celery.yaml"))
    with pytest.raises(ValueError, match="has no `execution: config:` block"):
        definitions._executor()


# -- Helm values ----------------------------------------------------------------------------------
def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def test_helm_values_match_the_k8s_instance_file():
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config_schema, validate_concurrency_config
    from dagster_k8s import K8sRunLauncher

    values = _load("helm-values.yaml")
    instance = _instance("dagster.k8s.yaml")

    # The concurrency block: the chart writes it into dagster.yaml with Dagster's names.
    concurrency = values["concurrency"]
    assert concurrency.pop("enabled") is True
    as_dagster = {"runs": {_snake(k): v for k, v in concurrency["runs"].items()},
                  "pools": {_snake(k): v for k, v in concurrency["pools"].items()}}
    validate_concurrency_config({"concurrency": as_dagster})
    result = validate_config(dagster_instance_config_schema(), {"concurrency": as_dagster})
    assert result.success, [e.message for e in result.errors or []]
    assert as_dagster == instance["concurrency"]

    # The run launcher: the chart fills in the home, instance ConfigMap and service account itself.
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    as_dagster = {_snake(k): v for k, v in launcher.items()}
    as_dagster["env_secrets"] = [s["name"] for s in launcher["envSecrets"]]
    as_dagster["run_k8s_config"] = {_snake(k): v for k, v in launcher["runK8sConfig"].items()}
    chart_filled = {"dagster_home": "/opt/dagster/dagster_home", "instance_config_map": "echo-os-dagster-instance",
                    "service_account_name": "echo-os"}
    _process(K8sRunLauncher.config_type(), {**as_dagster, **chart_filled})
    file_launcher = instance["run_launcher"]["config"]
    assert {k: file_launcher[k] for k in as_dagster} == as_dagster

    # Step logs: the chart's S3ComputeLogManager settings are dagster.k8s.yaml's.
    logs = values["computeLogManager"]
    assert logs["type"] == "S3ComputeLogManager"
    assert {_snake(k): v for k, v in logs["config"]["s3ComputeLogManager"].items()} == instance["compute_logs"]["config"]

    # The code location serves what workspace.yaml loads, with the k8s executor chosen.
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", workspace["module_name"],
                                                "--attribute", workspace["attribute"]]
    assert {"name": "ECHO_DAGSTER_EXECUTOR", "value": "k8s"} in deployment["env"]
