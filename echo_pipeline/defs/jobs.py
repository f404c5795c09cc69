import dagster as dg

from echo_pipeline.defs.assets import PIPELINE_ASSETS, intent, plan, style_presets, work_log

# The whole graph for one project: what `echo-os batch`, the schedule and backfills run.
batch_job = dg.define_asset_job(
    "batch", selection=dg.AssetSelection.assets(*PIPELINE_ASSETS),
    description="Render the next batch of a project and score, learn from and show it.",
)
# Intent and plan only: what `echo-os plan` runs and the sensor requests for a new project file.
plan_job = dg.define_asset_job(
    "plan_project", selection=dg.AssetSelection.assets(intent, plan),
    description="Parse a project's intent and plan its tasks.",
)
# Observe the style presets: what the sensor requests when a style file changes.
observe_styles_job = dg.define_asset_job(
    "observe_styles", selection=dg.AssetSelection.assets(style_presets.key),
    description="Record the current version of the style presets (marks prompt sets stale after an edit).",
)
# One work log entry: what `echo-os commit` runs (the work_log asset alone, never its upstream).
work_log_job = dg.define_asset_job(
    "work_log_job", selection=dg.AssetSelection.assets(work_log),
    description="Record what happened in a project since its last work log entry (echo-os commit).",
)
