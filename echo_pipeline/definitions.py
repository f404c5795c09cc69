"""The single `dg.Definitions` Dagster loads (workspace.yaml and pyproject's [tool.dagster] point here).

Executor: runs execute their steps in one process (`in_process`), queued ones included: a process
per step costs seconds each on a small machine, and the steps of one project run in sequence anyway.
A deployment picks another with ECHO_DAGSTER_EXECUTOR (configs/deploy/ has the profiles):
`multiprocess`; `celery` (dagster-celery: each step a task on the Celery workers), `k8s`
(dagster-k8s: each step a Kubernetes Job) or `docker` (dagster-docker: each step a container),
configured by their file in configs/deploy/ (celery.yaml, k8s_executor.yaml, docker_executor.yaml)
or the one ECHO_EXECUTOR_CONFIG names. The distributed ones are imported only when chosen.
Runs `echo-os` executes itself (render, batch, plan, ...) always run in its own process; the
executor applies to the runs the daemon launches (backfills, the schedule, sensors, the UI).
"""

import functools
import importlib
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

DEPLOY_DIR = PACKAGE_DIR.parent / "configs" / "deploy"
# The distributed executors: (module, attribute, config file in configs/deploy/).
DISTRIBUTED = {
    "celery": ("dagster_celery", "celery_executor", "celery.yaml"),
    "k8s": ("dagster_k8s", "k8s_job_executor", "k8s_executor.yaml"),
    "docker": ("dagster_docker", "docker_executor", "docker_executor.yaml"),
}


def executor_config(name: str) -> dict:
    """The `execution: config:` block of ECHO_EXECUTOR_CONFIG, else of the profile's file in
    configs/deploy/ (for celery the same file `dagster-celery worker start -y` reads)."""
    path = Path(os.environ.get("ECHO_EXECUTOR_CONFIG") or DEPLOY_DIR / DISTRIBUTED[name][2])
    try:
        config = ((yaml.safe_load(path.read_text()) or {}).get("execution") or {}).get("config")
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise ValueError(f"the {name} executor's config {path} cannot be read: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path} has no `execution: config:` block (see configs/deploy/{DISTRIBUTED[name][2]})")
    return config


def _distributed(name: str) -> dg.ExecutorDefinition:
    module, attribute, _ = DISTRIBUTED[name]
    executor: dg.ExecutorDefinition = getattr(importlib.import_module(module), attribute)
    return executor.configured(executor_config(name), name=executor.name)


EXECUTORS: dict[str, Callable[[], dg.ExecutorDefinition]] = {
    "in_process": lambda: dg.in_process_executor, "multiprocess": lambda: dg.multiprocess_executor,
    **{name: functools.partial(_distributed, name) for name in DISTRIBUTED},
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
