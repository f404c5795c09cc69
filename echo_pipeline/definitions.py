"""The single `dg.Definitions` Dagster loads (workspace.yaml and pyproject's [tool.dagster] point here).

Executor: runs execute their steps in one process (`in_process`), queued ones included: a process
per step costs seconds each on a small machine, and the steps of one project run in sequence anyway.
A deployment picks another with ECHO_DAGSTER_EXECUTOR (configs/deploy/ has the profiles):
`multiprocess`; `celery` (dagster-celery: each step a task on the Celery workers, configured by
configs/deploy/celery.yaml or the file ECHO_CELERY_CONFIG names, the file the workers read too);
`k8s` (dagster-k8s: each step a Kubernetes Job, settings from the K8sRunLauncher); `docker`
(dagster-docker: each step a container). The distributed ones are imported only when chosen.
Runs `echo-os` executes itself (render, batch, plan, ...) always run in its own process; the
executor applies to the runs the daemon launches (backfills, the schedule, sensors, the UI).
"""

import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import yaml

from echo_pipeline.defs.assets import PIPELINE_ASSETS, style_presets, work_log
from echo_pipeline.defs.jobs import batch_job, observe_styles_job, plan_job, work_log_job
from echo_pipeline.defs.render_job import render_job
from echo_pipeline.defs.resonance_job import resonance_job
from echo_pipeline.defs.resources import EchoResource, ImageBackendResource
from echo_pipeline.defs.schedules import nightly_batch
from echo_pipeline.defs.sensors import project_files_sensor
from echo_pipeline.settings import PACKAGE_DIR
from echo_pipeline.workflows.project_pipeline import RunObserver

CELERY_CONFIG = PACKAGE_DIR.parent / "configs" / "deploy" / "celery.yaml"


def celery_config() -> dict:
    """The celery executor's config: `execution.config` of ECHO_CELERY_CONFIG (default
    configs/deploy/celery.yaml), the file `dagster-celery worker start -y` reads."""
    path = Path(os.environ.get("ECHO_CELERY_CONFIG") or CELERY_CONFIG)
    try:
        config = (yaml.safe_load(path.read_text()) or {}).get("execution", {}).get("config")
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"ECHO_CELERY_CONFIG: cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path} has no `execution: config:` block (see configs/deploy/celery.yaml)")
    return config


def _celery() -> dg.ExecutorDefinition:
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_config(), name="celery")


def _k8s() -> dg.ExecutorDefinition:
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


def _docker() -> dg.ExecutorDefinition:
    from dagster_docker import docker_executor

    return docker_executor


EXECUTORS: dict[str, Callable[[], dg.ExecutorDefinition]] = {
    "in_process": lambda: dg.in_process_executor, "multiprocess": lambda: dg.multiprocess_executor,
    "celery": _celery, "k8s": _k8s, "docker": _docker,
}


def _executor() -> dg.ExecutorDefinition:
    name = os.environ.get("ECHO_DAGSTER_EXECUTOR", "in_process")
    if name not in EXECUTORS:
        raise ValueError(f"ECHO_DAGSTER_EXECUTOR={name!r}; choose one of: {', '.join(EXECUTORS)}")
    return EXECUTORS[name]()


defs = dg.Definitions(
    assets=[style_presets, *PIPELINE_ASSETS, work_log],
    jobs=[batch_job, plan_job, observe_styles_job, render_job, resonance_job, work_log_job],
    schedules=[nightly_batch],
    sensors=[project_files_sensor],
    executor=_executor(),
    resources={
        # Unset fields fall back to ECHO_ARTIFACT_ROOT / ECHO_CONFIG_DIR, read when a run starts;
        # `echo-os` passes its settings as these resources' run config.
        "echo": EchoResource(),
        "image_backend": ImageBackendResource(),
        # Runs executed from the CLI or the API get an observer of their own (progress, typed results).
        "observer": RunObserver(),
    },
)
