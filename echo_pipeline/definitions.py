"""The single `dg.Definitions` Dagster loads (workspace.yaml and pyproject's [tool.dagster] point here)."""

import dagster as dg

from echo_pipeline.defs.assets import PIPELINE_ASSETS, style_presets
from echo_pipeline.defs.jobs import batch_job, observe_styles_job, plan_job
from echo_pipeline.defs.render_job import render_job
from echo_pipeline.defs.resources import EchoResource, ImageBackendResource
from echo_pipeline.defs.schedules import nightly_batch
from echo_pipeline.defs.sensors import project_files_sensor

defs = dg.Definitions(
    assets=[style_presets, *PIPELINE_ASSETS],
    jobs=[batch_job, plan_job, observe_styles_job, render_job],
    schedules=[nightly_batch],
    sensors=[project_files_sensor],
    resources={
        # Unset fields fall back to ECHO_ARTIFACT_ROOT / ECHO_CONFIG_DIR, read when a run starts.
        "echo": EchoResource(),
        "image_backend": ImageBackendResource(),
    },
)
