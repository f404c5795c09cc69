"""Scheduled batch generation: one run per project whose spec has `schedule: true`.

The stock partitioned-schedule builder rejects dynamic partitions, so this schedule fans out a
RunRequest per project itself (and registers partitions for project files it has not seen).
"""


import dagster as dg

from echo_pipeline.defs.jobs import batch_job
from echo_pipeline.defs.partitions import PROJECTS, projects_partitions
from echo_pipeline.defs.resources import EchoResource


@dg.schedule(cron_schedule="0 3 * * *", job=batch_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def nightly_batch(context: dg.ScheduleEvaluationContext, echo: EchoResource):
    """Every night at 03:00 UTC, render the next batch of each scheduled project."""
    specs = [s for s in echo.engine().projects.list() if s.schedule]
    if not specs:
        return dg.SkipReason("no project has `schedule: true` in configs/projects/")
    known = set(context.instance.get_dynamic_partitions(PROJECTS))
    missing = [s.slug for s in specs if s.slug not in known]
    stamp = context.scheduled_execution_time.strftime("%Y%m%d")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"{s.slug}-{stamp}", partition_key=s.slug)
            for s in specs
        ],
        dynamic_partitions_requests=[projects_partitions.build_add_request(missing)] if missing else [],
    )
