"""A sensor that turns project files into partitions.

A new `configs/projects/<slug>.yaml` adds the partition and requests its first batch; an edited one
requests a re-plan, so intent and plan get new data versions and everything downstream shows as stale.
An edited style file requests an observation of `style_presets`, which marks prompt sets stale.
The cursor maps each slug (and STYLES_KEY) to a hash of its file(s).
"""


import hashlib
import json

import dagster as dg

from echo_pipeline.defs.jobs import batch_job, observe_styles_job, plan_job
from echo_pipeline.defs.partitions import projects_partitions
from echo_pipeline.defs.resources import EchoResource
from echo_pipeline.errors import EchoError

STYLES_KEY = "__styles__"


@dg.sensor(jobs=[batch_job, plan_job, observe_styles_job], minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING)
def project_files_sensor(context: dg.SensorEvaluationContext, echo: EchoResource):
    registry = echo.engine().projects
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current: dict[str, str] = {}
    new, changed = [], []
    for slug in registry.slugs():
        digest = hashlib.sha256(registry.path(slug).read_bytes()).hexdigest()[:16]
        current[slug] = digest
        try:
            registry.load(slug)
        except EchoError as exc:  # a broken file is reported, not fatal for the others
            context.log.warning(str(exc))
            continue
        if slug not in seen:
            new.append(slug)
        elif seen[slug] != digest:
            changed.append(slug)
    current[STYLES_KEY] = echo.engine().styles.fingerprint()
    styles_changed = seen.get(STYLES_KEY) != current[STYLES_KEY]
    known = set(context.instance.get_dynamic_partitions(projects_partitions.name))
    to_add = [s for s in new if s not in known]
    if not new and not changed and not styles_changed:
        return dg.SkipReason("no new or changed project or style files")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"new-{s}-{current[s]}", partition_key=s, job_name=batch_job.name) for s in new]
        + [dg.RunRequest(run_key=f"changed-{s}-{current[s]}", partition_key=s, job_name=plan_job.name) for s in changed]
        + ([dg.RunRequest(run_key=f"styles-{current[STYLES_KEY]}", job_name=observe_styles_job.name)]
           if styles_changed else []),
        dynamic_partitions_requests=[projects_partitions.build_add_request(to_add)] if to_add else [],
        cursor=json.dumps(current, sort_keys=True),
    )
