"""A sensor that turns project files into partitions, and does only what was asked.

- A project file without a partition gets one. If that partition has never been materialized, the
  sensor requests a plan (intent + plan: cheap, no images), so the project shows up planned in the UI.
  It never requests a batch: images are rendered when someone asks (CLI, UI, backfill) or by the
  nightly schedule for specs with `schedule: true`.
- An edited project file (its hash differs from the cursor) requests a re-plan, so intent and plan get
  new data versions and everything downstream shows as stale.
- Edited style files request an observation of `style_presets` (which marks prompt sets stale), but
  only when the styles differ from the last observed version, so a fresh cursor starts nothing.
The cursor maps each slug (and STYLES_KEY) to a hash of its file(s).
"""

import hashlib
import json

import dagster as dg
from dagster._core.definitions.data_version import extract_data_version_from_entry

from echo_pipeline.defs.assets import plan, style_presets
from echo_pipeline.defs.jobs import observe_styles_job, plan_job
from echo_pipeline.defs.partitions import PROJECTS, projects_partitions
from echo_pipeline.defs.resources import EchoResource
from echo_pipeline.errors import EchoError

STYLES_KEY = "__styles__"


def _last_observed_styles(instance: dg.DagsterInstance) -> str | None:
    record = instance.get_latest_data_version_record(style_presets.key, is_source=True)
    if record is None:
        return None
    version = extract_data_version_from_entry(record.event_log_entry)
    return version.value if version else None


@dg.sensor(jobs=[plan_job, observe_styles_job], minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING)
def project_files_sensor(context: dg.SensorEvaluationContext, echo: EchoResource):
    registry = echo.engine().projects
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current: dict[str, str] = {}
    valid: list[str] = []
    for slug in registry.slugs():
        current[slug] = hashlib.sha256(registry.path(slug).read_bytes()).hexdigest()[:16]
        try:
            registry.load(slug)
        except EchoError as exc:  # a broken file is reported, not fatal for the others
            context.log.warning(str(exc))
            continue
        valid.append(slug)
    known = set(context.instance.get_dynamic_partitions(PROJECTS))
    planned = context.instance.get_materialized_partitions(plan.key)
    to_add = [s for s in valid if s not in known]
    never_planned = [s for s in valid if s not in planned and s not in seen]
    edited = [s for s in valid if s in seen and seen[s] != current[s]]
    current[STYLES_KEY] = echo.engine().styles.fingerprint()
    styles_changed = (seen.get(STYLES_KEY) or _last_observed_styles(context.instance)) not in (None, current[STYLES_KEY])
    requests = [dg.RunRequest(run_key=f"plan-{s}-{current[s]}", partition_key=s, job_name=plan_job.name)
                for s in dict.fromkeys(never_planned + edited)]
    if styles_changed:
        requests.append(dg.RunRequest(run_key=f"styles-{current[STYLES_KEY]}", job_name=observe_styles_job.name))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[projects_partitions.build_add_request(to_add)] if to_add else [],
        cursor=json.dumps(current, sort_keys=True),
        skip_reason=None if requests or to_add else "no new or changed project or style files",
    )
