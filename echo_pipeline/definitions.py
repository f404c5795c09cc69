"""The single `dg.Definitions` Dagster loads (workspace.yaml and pyproject's [tool.dagster] point here).

Executor: runs execute their steps in one process (`in_process`), queued ones included: a process
per step costs seconds each on a small machine, and the steps of one project run in sequence anyway.
A deployment picks another with ECHO_DAGSTER_EXECUTOR=multiprocess (or a distributed executor).
"""

import os

import dagster as dg

from echo_pipeline.defs.assets import PIPELINE_ASSETS, style_presets, work_log
from echo_pipeline.defs.jobs import batch_job, observe_styles_job, plan_job, work_log_job
from echo_pipeline.defs.render_job import render_job
from echo_pipeline.defs.resonance_job import resonance_job
from echo_pipeline.defs.resources import EchoResource, ImageBackendResource
from echo_pipeline.defs.schedules import nightly_batch
from echo_pipeline.defs.sensors import project_files_sensor
from echo_pipeline.workflows.project_pipeline import RunObserver

EXECUTORS = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}


def _executor() -> dg.ExecutorDefinition:
    name = os.environ.get("ECHO_DAGSTER_EXECUTOR", "in_process")
    if name not in EXECUTORS:
        raise ValueError(f"ECHO_DAGSTER_EXECUTOR={name!r}; choose one of: {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


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
