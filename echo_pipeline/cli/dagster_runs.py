"""Running the Dagster jobs from the CLI: in-process execution on the persistent instance,
with a progress bar, and failures turned into one-line errors."""

from __future__ import annotations

import os
from typing import Any

from echo_pipeline.errors import EchoError


class RunFailedError(EchoError):
    """A Dagster run failed. exit_code 2 when the cause was the user's input or situation."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


# Causes that mean "your input or situation" (exit code 2), not a bug.
_USER_ERRORS = {"InvalidInputError", "NotFoundError", "StorageError", "BackendUnavailableError", "ProjectBusyError"}


def export_settings(engine) -> None:
    """Hand the CLI's settings to the Dagster definitions (they read ECHO_* at import)."""
    root = engine.settings.artifact_root
    if "://" not in root:
        root = os.path.abspath(os.path.expanduser(root))
    os.environ["ECHO_ARTIFACT_ROOT"] = root
    os.environ["ECHO_CONFIG_DIR"] = str(engine.settings.config_dir)


def execute(engine, job_name: str, *, partition_key: str | None = None, run_config: dict | None = None,
            progress_label: str | None = None, quiet: bool = False):
    """Execute a job in this process on the persistent instance; returns the ExecuteInProcessResult."""
    export_settings(engine)
    import warnings

    from dagster import BetaWarning

    from echo_pipeline.defs.instance import ensure_partition, get_instance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)  # observable_source_asset is beta; not the user's concern
        from echo_pipeline.definitions import defs

    instance = get_instance()
    if partition_key is not None:
        ensure_partition(instance, partition_key)
    job = defs.resolve_job_def(job_name)
    # The CLI shows its own progress and summary; Dagster's console log only for warnings and errors.
    config = {**(run_config or {}), "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    kwargs: dict[str, Any] = {"instance": instance, "partition_key": partition_key, "run_config": config,
                              "raise_on_error": False}
    if quiet or progress_label is None:
        result = job.execute_in_process(**kwargs)
    else:
        result = _with_progress(job.execute_in_process, progress_label, **kwargs)
    if not result.success:
        raise _failure(result)
    return result


def _with_progress(fn, label: str, **kwargs):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from echo_pipeline.cli.common import err_console
    from echo_pipeline.render.batch_processor import progress_listener

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def on_progress(done: int, total: int, _record) -> None:
            bar.update(task, completed=done, total=total)

        with progress_listener(on_progress):
            return fn(**kwargs)


def _failure(result) -> RunFailedError:
    """The first step failure as a one-line error; a user error keeps its own message (exit code 2)."""
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        cause = error
        while cause is not None:
            if cause.cls_name in _USER_ERRORS:
                first_line = cause.message.strip().splitlines()[0]
                return RunFailedError(first_line.split(": ", 1)[-1], exit_code=2)
            cause = cause.cause
        first_line = error.message.strip().splitlines()[0] if error.message.strip() else error.cls_name
        return RunFailedError(f"run {result.run_id} failed in step {event.step_key}: {first_line}")
    return RunFailedError(f"run {result.run_id} failed")


def materialization_metadata(result, asset: str) -> dict[str, Any]:
    events = result.asset_materializations_for_node(asset)
    if not events:
        return {}
    return {k: v.value for k, v in events[-1].metadata.items()}
