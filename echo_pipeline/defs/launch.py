"""The one way the CLI and the API start work: typed entry points over the Dagster instance.

Each entry point takes `Settings` (and, for long work, a progress callback and a `notify` callback
for one-line news such as "waiting for the gpu pool"), validates its input up front (bad input never
becomes a failed run), then runs a job of `echo_pipeline.definitions` on the persistent instance and
returns a typed result; the run's steps report to it through the `observer` resource:

- `render`   one `render_job` run, executed in this process (`refine`: img2img of a stored image)
- `batch`    one `batch` run of a project's whole asset graph, executed in this process
- `plan`     create/update the project spec, then one `plan_project` run
- `backfill` one queued `batch` (or `plan_project`) run per project, for the daemon
- `runs`     recent runs
- `compare`  one `render_job` run per backend on the same prompts, then scores and a contact sheet
- `resonance` one `resonance_job` run: the feedback loop over a project's weakest images

Settings travel as the resources' run config (never through this process's environment). Before a
run starts, runs of dead processes are marked failed and their pool slots freed (see instance.py),
and a project already being written by a live run is reported busy (or, with `wait`, waited for).
SIGTERM is handled like Ctrl-C: the run stops, stored images are kept, `Interrupted` is raised.

The up-front checks are their own functions (`check_render`, `check_batch`, `refine_spec`), so the
API can answer bad input at once and queue the run with a `run_id` it has already handed out.

`render` keeps the fixed cost of a run small: once its input is validated it creates the backend and
lets it start on the images to render (`ImageBackend.prefetch`) before importing Dagster and setting
up the run, which then uses that same backend through `ImageBackendResource` (`prepared`).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from echo_pipeline.artifacts.gallery import GalleryResult
from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.artifacts.storage import UNREACHABLE_ERRORS, unreachable_message
from echo_pipeline.defs.pools import GPU_POOL
from echo_pipeline.errors import EchoError, Interrupted, InvalidInputError, ProjectBusyError, StorageError
from echo_pipeline.render.backends.registry import backend_class
from echo_pipeline.render.prompt_engine import MAX_COUNT, PromptSpec
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.settings import PACKAGE_DIR, Settings
from echo_pipeline.workflows.batch_processor import BatchResult, ProgressCallback
from echo_pipeline.workflows.creative_engine import CreativeEngine
from echo_pipeline.workflows.project_pipeline import GenerateOutcome, RunObserver, ScoreSummary
from echo_pipeline.workflows.projects import ProjectSpec
from echo_pipeline.workflows.visual_planner import Plan

if TYPE_CHECKING:  # Dagster is imported when a run starts, after `render` has set its backend going
    import dagster as dg
    from dagster._utils.error import SerializableErrorInfo

    from echo_pipeline.workflows.feedback_loop import LoopReport
    from echo_pipeline.workflows.model_comparison import Comparison
    from echo_pipeline.workflows.work_log import Pending, RunRef, WorkLogEntry

WORKSPACE_FILE = PACKAGE_DIR.parent / "workspace.yaml"
PROJECT_JOBS = ("batch", "plan_project")
# Jobs with a step in the `gpu` pool (defs/pools.py): one at a time per instance.
GPU_JOBS = ("batch", "render_job", "resonance_job")


class RunFailedError(EchoError):
    """A run failed for a reason that is not the user's (a bug): exit code 1, the run id to look at,
    and the step's traceback in `details` (shown with --verbose)."""

    exit_code = 1

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


# -- typed checks and results -----------------------------------------------------------------------
@dataclass(frozen=True)
class RenderCheck:
    """What `check_render` validated: the engine, the backend (`name` or `name:model`) and the requests."""

    engine: CreativeEngine
    backend_name: str
    model: str | None
    requests: list[RenderRequest]

    @property
    def backend_key(self) -> str:
        return f"{self.backend_name}:{self.model}" if self.model else self.backend_name

    @property
    def project(self) -> str:
        return self.requests[0].project


@dataclass(frozen=True)
class BatchCheck:
    """What `check_batch` validated: the project's spec and the batch's overrides."""

    engine: CreativeEngine
    spec: ProjectSpec
    count: int | None
    style: str | None


@dataclass
class RenderOutcome:
    run_id: str
    project: str
    backend: str
    result: BatchResult


@dataclass
class BatchOutcome:
    spec: ProjectSpec
    run_id: str
    batch: int
    result: BatchResult
    scores: ScoreSummary | None
    style_memory_images: int | None
    gallery: GalleryResult | None
    run_seconds: float
    file_problems: list[str]  # missing or damaged files of the project, reported, never hidden

    @property
    def images_per_minute(self) -> float | None:
        return round(60 * len(self.result.new) / self.run_seconds, 1) if self.run_seconds else None


@dataclass
class PlanOutcome:
    spec: ProjectSpec
    plan: Plan
    run_id: str
    spec_path: Path


@dataclass
class RunInfo:
    run_id: str
    job: str
    project: str | None
    status: str
    started: datetime | None = None
    seconds: float | None = None
    backfill: str | None = None


@dataclass
class BackfillOutcome:
    job: str
    projects: list[str]
    runs: list[RunInfo]
    backfill_id: str


NotifyFn = Callable[[str], None]  # one line for the user, e.g. what a run is waiting for


class _Collector(RunObserver):
    """Receives what the run's steps report in this process."""

    def __init__(self, progress: ProgressCallback | None):
        self._progress = progress
        self.results: dict[str, Any] = {}

    def progress(self, done: float, total: int, record: ArtifactRecord | None) -> None:
        if self._progress is not None:
            self._progress(done, total, record)

    def step_finished(self, step: str, result: Any) -> None:
        self.results[step] = result


# -- entry points -----------------------------------------------------------------------------------
def prompt_spec(settings: Settings, prompt: str, *, project: str | None = None, parent: ArtifactRecord | None = None,
                size: tuple[int, int] | None = None, backend: str | None = None, model: str | None = None,
                steps: int | None = None, cfg_scale: float | None = None, sampler: str | None = None,
                strength: float | None = None, **fields: Any) -> tuple[PromptSpec, str | None, str | None]:
    """(spec, backend, model) for `render` from what a user asked: the project's spec supplies what
    the request leaves out (backend and model, size, sampler settings); img2img of `parent` keeps
    its size unless `size` is given (strength 0.6 by default). `fields`: other `PromptSpec` fields."""
    ref = CreativeEngine(settings).resolve_project(project)
    project_spec = ref.spec
    if project_spec is not None:
        if backend is None:
            backend, model = project_spec.backend, model or project_spec.model
        steps = project_spec.steps if steps is None else steps
        cfg_scale = project_spec.cfg_scale if cfg_scale is None else cfg_scale
        sampler = sampler or project_spec.sampler
    width, height = (size if size else (project_spec.width, project_spec.height) if project_spec
                     else (settings.default_width, settings.default_height))
    if parent is not None and not size:
        width, height = parent.request.width, parent.request.height
    sampler_settings = {k: v for k, v in (("steps", steps), ("cfg_scale", cfg_scale), ("sampler", sampler))
                        if v is not None}
    spec = PromptSpec(prompt=prompt, project=ref.slug, width=width, height=height, **sampler_settings, **fields,
                      parent_id=parent.artifact_id if parent else None,
                      strength=(0.6 if strength is None else strength) if parent else None)
    return spec, backend, model


def check_render(settings: Settings, spec: PromptSpec, *, backend: str | None = None,
                 model: str | None = None) -> RenderCheck:
    """`render`'s checks before any work (prompt, style, size, count, seeds, project name, the
    backend's limits, the parent, a writable store); a one-line `EchoError` when one fails."""
    from echo_pipeline.render.backends.registry import split_backend_spec

    engine = CreativeEngine(settings)
    backend_name, spec_model = split_backend_spec(backend or settings.default_backend)
    model = spec_model or model
    if model and backend_name == "procedural":
        raise InvalidInputError(f"the procedural renderer has no models ({model!r}); pick a model backend: "
                                "--backend diffusers|comfyui|openai")
    requests = engine.plan_requests(spec)
    backend_class(backend_name).check_requests(requests)
    if spec.parent_id is not None:
        engine.store.find(spec.parent_id, project=requests[0].project)  # the parent exists: one line if not
    engine.store.check_writable()
    return RenderCheck(engine=engine, backend_name=backend_name, model=model, requests=requests)


def render(settings: Settings, spec: PromptSpec, *, backend: str | None = None, model: str | None = None,
           progress: ProgressCallback | None = None, notify: NotifyFn | None = None,
           run_id: str | None = None) -> RenderOutcome:
    """Render `spec` into its project (already stored requests are skipped) as one `render_job` run
    (with `run_id` when given, else a new one).

    `backend` is a name or `name:model`; `model` (or the settings' default for that backend) is
    used when the spec names none. A `spec.parent_id` makes every image img2img of that artifact."""
    from echo_pipeline.render.backends.registry import create_backend
    from echo_pipeline.workflows.batch_processor import BatchProcessor

    checked = check_render(settings, spec, backend=backend, model=model)
    engine, requests, backend_key = checked.engine, checked.requests, checked.backend_key
    # The run's backend: cheap to create (models load lazily, once); its own checks see the model.
    image_backend = create_backend(checked.backend_name, settings.backend_config(checked.backend_name, checked.model))
    try:
        image_backend.check_requests([image_backend.prepare(r) for r in requests])

        def start_rendering() -> dict[str, Any]:
            # Inside the project guard: nothing starts for a busy project.
            # Plain images only: media requests are made after them, from their sources.
            image_backend.prefetch([r for r in BatchProcessor(engine.store, image_backend).pending(requests)
                                    if r.media is None])
            from echo_pipeline.defs.resources import ImageBackendResource, PreparedBackends

            return {"image_backend": ImageBackendResource(**ImageBackendResource.config_for(settings),
                                                          prepared=PreparedBackends({backend_key: image_backend}))}

        collector = _Collector(progress)
        run_config = {"ops": {"render_prompt": {"config": spec.model_dump(mode="json") | {"backend": backend_key}}}}
        result = _execute(settings, "render_job", run_config=run_config, observer=collector,
                          project=requests[0].project, before_run=start_rendering, notify=notify, run_id=run_id)
    finally:
        image_backend.close()
    return RenderOutcome(run_id=result.run_id, project=requests[0].project, backend=backend_key,
                         result=collector.results["render"])


def refine_spec(settings: Settings, artifact: str, prompt: str | None = None, *, strength: float | None = None,
                seed: int | None = None, backend: str | None = None,
                model: str | None = None) -> tuple[PromptSpec, str | None, str | None]:
    """(spec, backend, model) that refine the stored `artifact` (an id, unique prefix or project/id):
    `CreativeEngine.refine_spec` on the backend that made it (with its model) unless told otherwise."""
    from echo_pipeline.render.backends.registry import split_backend_spec

    engine = CreativeEngine(settings)
    parent = engine.store.find(artifact)
    made_by = parent.backend.backend or parent.request.backend
    if backend is None and made_by != "import":  # an imported image has no backend of its own
        backend = made_by
    # On the backend that made the parent, the parent's model is the default (the procedural one has none).
    if backend is not None and split_backend_spec(backend)[0] == made_by != "procedural":
        model = model or split_backend_spec(backend)[1] or parent.request.model or None
    return engine.refine_spec(parent, prompt, strength=strength, seed=seed), backend, model


def refine(settings: Settings, artifact: str, prompt: str | None = None, *, strength: float | None = None,
           seed: int | None = None, backend: str | None = None, model: str | None = None,
           progress: ProgressCallback | None = None, notify: NotifyFn | None = None,
           run_id: str | None = None) -> RenderOutcome:
    """Refine a stored image (img2img; see `refine_spec`) as one `render_job` run: its child names it
    as the parent."""
    spec, backend, model = refine_spec(settings, artifact, prompt, strength=strength, seed=seed, backend=backend,
                                       model=model)
    return render(settings, spec, backend=backend, model=model, progress=progress, notify=notify, run_id=run_id)


def check_batch(settings: Settings, project: str, *, count: int | None = None, style: str | None = None) -> BatchCheck:
    """`batch`'s checks before any work (the project has a spec, the count, the style, a writable store)."""
    engine = CreativeEngine(settings)
    spec = _project_spec(engine, project)
    check_count(count)
    style = engine.styles.get(style).name if style else None
    engine.store.check_writable()
    return BatchCheck(engine=engine, spec=spec, count=count, style=style)


def batch(settings: Settings, project: str, *, count: int | None = None, style: str | None = None,
          progress: ProgressCallback | None = None, wait: bool = False, notify: NotifyFn | None = None,
          run_id: str | None = None) -> BatchOutcome:
    """Render the project's next batch and score, learn from and show it: one `batch` run (with
    `run_id` when given, else a new one)."""
    checked = check_batch(settings, project, count=count, style=style)
    engine, spec = checked.engine, checked.spec
    overrides = {k: v for k, v in (("count", checked.count), ("style", checked.style)) if v is not None}
    started = time.perf_counter()
    collector = _Collector(progress)
    result = _execute(settings, "batch", partition_key=spec.slug, observer=collector, wait=wait, notify=notify,
                      run_config={"ops": {"prompt_set": {"config": overrides}}} if overrides else None,
                      run_id=run_id)
    generated: GenerateOutcome = collector.results["generated_images"]
    from echo_pipeline.defs.assets import MEDIA_KINDS  # Dagster is loaded by now: the run has happened

    combined = generated.result
    for name, _, _ in MEDIA_KINDS:
        made: GenerateOutcome | None = collector.results.get(name)
        if made is not None and made.result.requests:  # the media of the batch count as its artifacts
            combined = dataclasses.replace(
                combined, requests=combined.requests + made.result.requests, new=combined.new + made.result.new,
                existing=combined.existing + made.result.existing, recovered=combined.recovered + made.result.recovered,
                warnings=combined.warnings + [w for w in made.result.warnings if w not in combined.warnings],
                seconds=combined.seconds + made.result.seconds)
    memory = collector.results.get("style_memory")
    return BatchOutcome(spec=spec, run_id=result.run_id, batch=generated.batch, result=combined,
                        scores=collector.results.get("quality_scores"),
                        style_memory_images=memory.count if memory is not None else None,
                        gallery=collector.results.get("gallery"), run_seconds=time.perf_counter() - started,
                        file_problems=[p.line() for p in engine.store.check_files(spec.slug).problems])


def plan(settings: Settings, name: str, intent: str, **fields: Any) -> PlanOutcome:
    """Create or update a project (spec file, partition) and materialize its intent and plan."""
    engine = CreativeEngine(settings)
    check_count(fields.get("count"))
    if fields.get("style"):
        fields["style"] = engine.styles.get(fields["style"]).name
    if fields.get("backend"):
        backend_class(fields["backend"])
    ref = engine.resolve_project(name, create=True)
    spec = engine.projects.create(ref.name, intent, slug=ref.slug, **fields)
    collector = _Collector(None)
    result = _execute(settings, "plan_project", partition_key=spec.slug, observer=collector)
    return PlanOutcome(spec=spec, plan=collector.results["plan"], run_id=result.run_id,
                       spec_path=engine.projects.path(spec.slug))


def resolve_project_slug(settings: Settings, text: str | None) -> str:
    """The project a user's words name (None = `default`), resolved like every other command does."""
    return CreativeEngine(settings).resolve_project(text).slug


def compare(settings: Settings, project: str, backends: list[str], *, count: int = 4,
            size: tuple[int, int] | None = None, select: str | None = None,
            progress: ProgressCallback | None = None, notify: NotifyFn | None = None) -> Comparison:
    """Render the project's prompt set on each backend (one `render_job` run each, so every image
    has the usual lineage), score each backend's images, write a comparison contact sheet, and with
    `select='best'` make the best-scoring backend and model the project's own.

    A backend that cannot render (no weights, server down, a size it does not offer) gets its
    one-line reason in the table; the others still run."""
    from echo_pipeline.render.backends.registry import split_backend_spec
    from echo_pipeline.workflows.model_comparison import (
        Comparison,
        ComparisonRow,
        comparison_specs,
        save_comparison_sheet,
        score_row,
    )

    if select not in (None, "best"):
        raise InvalidInputError(f"--select {select!r} is not known; use --select best")
    engine = CreativeEngine(settings)
    spec = _project_spec(engine, project)
    specs = comparison_specs(spec, count)
    if size is not None:
        specs = [s.model_copy(update={"width": size[0], "height": size[1]}) for s in specs]
    engine.store.check_writable()
    rows = []
    for backend in backends:
        name, model = split_backend_spec(backend)
        row = ComparisonRow(backend=backend, model=model or settings.backend_config(name).model or "")
        if notify is not None:
            notify(f"rendering on {backend}")
        try:
            for prompt_spec in specs:
                outcome = render(settings, prompt_spec, backend=backend, progress=progress, notify=notify)
                row.records += sorted(outcome.result.new + outcome.result.existing, key=lambda r: r.request.index)
                row.seconds += outcome.result.seconds
        except (Interrupted, ProjectBusyError):
            raise
        except EchoError as exc:
            row.error = " ".join(str(exc).split())
        score_row(engine.store, row, engine.quality_assessor())
        rows.append(row)
    comparison = Comparison(project=spec.slug, prompt=specs[0].prompt, rows=rows)
    save_comparison_sheet(engine.store, comparison)
    if select == "best" and comparison.best is not None:
        best = comparison.best
        from echo_pipeline.workflows.projects import local_model_path

        name, model = split_backend_spec(best.backend)
        model = local_model_path(model, Path.cwd()) if model else None  # as `plan` stores a typed path
        engine.projects.save(spec.model_copy(update={"backend": name, "model": model}))
        comparison.selected = best
    return comparison


def resonance(settings: Settings, project: str, *, rounds: int = 3, target: float | None = None,
              wait: bool = False, notify: NotifyFn | None = None) -> LoopReport:
    """Refine the project's weakest images for up to `rounds` rounds (the feedback loop) as one
    `resonance_job` run on the project's own backend and model."""
    engine = CreativeEngine(settings)
    spec = _project_spec(engine, project)
    from echo_pipeline.workflows.feedback_loop import check_loop_limits

    check_loop_limits(rounds, target)
    engine.store.check_writable()
    collector = _Collector(None)
    config = {"project": spec.slug, "rounds": rounds, "target": target}
    _execute(settings, "resonance_job", run_config={"ops": {"refine_weakest": {"config": config}}},
             observer=collector, project=spec.slug, wait=wait, notify=notify)
    return collector.results["resonance"]


def _project_spec(engine: CreativeEngine, text: str) -> ProjectSpec:
    return engine.resolve_project(text).require_spec()


def ignored_words_hint(backend: str, words: list[str]) -> str:
    """What to tell a user whose prompt had words the backend does not understand (and what it knows)."""
    hint = f"the {backend} renderer did not use these words of your prompt: {', '.join(words)}"
    if backend != "procedural":
        return hint
    from echo_pipeline.render.backends.procedural import vocabulary

    known = vocabulary()
    return hint + "; it draws " + "; ".join(f"{kind}: {', '.join(known[kind])}"
                                           for kind in ("motifs", "materials", "palettes", "effects"))


def check_count(count: int | None) -> None:
    if count is not None and not 1 <= count <= MAX_COUNT:
        raise InvalidInputError(f"--count must be 1-{MAX_COUNT} (got {count})")


def runs(settings: Settings, *, project: str | None = None, limit: int = 20) -> list[RunInfo]:
    """Recent runs on the instance, newest first."""
    import dagster as dg

    from echo_pipeline.defs.instance import PARTITION_TAG, PROJECT_TAG, get_instance, reap_dead_runs

    instance = get_instance()
    reap_dead_runs(instance)
    if not project:
        return [_run_info(record) for record in instance.get_run_records(limit=limit)]
    # Project jobs carry the partition; `render` runs (unpartitioned) carry PROJECT_TAG.
    slug = resolve_project_slug(settings, project)
    records = {r.dagster_run.run_id: r for tag in (PARTITION_TAG, PROJECT_TAG)
               for r in instance.get_run_records(filters=dg.RunsFilter(tags={tag: slug}), limit=limit)}
    newest = sorted(records.values(), key=lambda r: r.create_timestamp, reverse=True)[:limit]
    return [_run_info(record) for record in newest]


def backfill(settings: Settings, projects: list[str] | None, *, job: str = "batch", wait: bool = False,
             timeout: float = 3600) -> BackfillOutcome:
    """Queue one `job` run per project (None = every project) as one Dagster backfill.

    The runs carry the settings in their run config and are executed by the daemon (in its own
    process: `echo-os ui`, `dagster dev`, `dagster-daemon run`). With `wait`, wait until they finish,
    using a running daemon or, when none runs, one started for the duration.
    """
    from echo_pipeline.defs.instance import ensure_partition, ensure_pool_limits, get_instance, reap_dead_runs

    engine = CreativeEngine(settings)
    if job not in PROJECT_JOBS:
        raise InvalidInputError(f"--job {job!r} is not a project job; choose one of: {', '.join(PROJECT_JOBS)}")
    specs = engine.projects.list() if projects is None else [_project_spec(engine, p) for p in projects]
    if not specs:
        raise InvalidInputError("no projects to backfill; create one with `echo-os plan NAME INTENT`")
    slugs = list(dict.fromkeys(s.slug for s in specs))
    instance = get_instance()
    reap_dead_runs(instance)
    ensure_pool_limits(instance)  # several runs start at once: the pool's row must exist first
    for slug in slugs:
        ensure_partition(instance, slug)
    backfill_id, run_ids = _submit_backfill(instance, settings, job, slugs)
    if wait:
        _wait_for_runs(instance, run_ids, timeout)
    infos = [_run_info(instance.get_run_record_by_id(r)) for r in run_ids]
    return BackfillOutcome(job=job, projects=slugs, runs=infos, backfill_id=backfill_id)


def resource_config(settings: Settings) -> dict[str, Any]:
    """The run config that hands `settings` to the definitions' resources."""
    from echo_pipeline.defs.resources import EchoResource, ImageBackendResource

    return {"echo": {"config": EchoResource.config_for(settings)},
            "image_backend": {"config": ImageBackendResource.config_for(settings)}}


# -- execution --------------------------------------------------------------------------------------
def _definitions() -> dg.Definitions:
    from echo_pipeline.definitions import defs

    return defs


def _execute(settings: Settings, job_name: str, *, observer: RunObserver, partition_key: str | None = None,
             project: str | None = None, run_config: dict | None = None, wait: bool = False,
             before_run: Callable[[], dict[str, Any]] | None = None, notify: NotifyFn | None = None,
             run_id: str | None = None) -> dg.ExecuteInProcessResult:
    """Execute a job in this process on the persistent instance (as run `run_id`, else a new one);
    user errors raise as themselves.

    `before_run` runs once the project is known not to be busy and returns extra resources."""
    with _project_guard(partition_key or project, wait=wait):
        resources: dict[str, Any] = {"observer": observer, **(before_run() if before_run else {})}
        from echo_pipeline.defs.instance import (
            PROJECT_TAG,
            ensure_partition,
            get_instance,
            process_tags,
            reap_dead_runs,
        )

        instance = get_instance()
        reap_dead_runs(instance)
        _check_not_busy(instance, partition_key or project, wait=wait)
        if partition_key is not None:
            ensure_partition(instance, partition_key)
        job = _definitions().resolve_job_def(job_name)
        config = {**(run_config or {}), "resources": resource_config(settings),
                  # The caller presents progress and results; Dagster's console log would only repeat them.
                  "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        with _sigterm_as_interrupt():
            if job_name in GPU_JOBS:
                _wait_for_pool(instance, GPU_POOL, notify)
            run_id = run_id or _new_run_id()
            with _interrupt_watchdog(instance, run_id):
                result = job.execute_in_process(run_config=config, instance=instance, partition_key=partition_key,
                                                tags=process_tags() | ({PROJECT_TAG: project} if project else {}),
                                                resources=resources, raise_on_error=False,
                                                run_id=run_id)
    if not result.success:
        raise _failure(result)
    return result


@contextmanager
def _project_guard(slug: str | None, *, wait: bool) -> Iterator[None]:
    """One writer per project on this instance, part 1: a file lock in DAGSTER_HOME serialises the
    commands of this machine (the OS drops it when a process dies, so a kill never wedges it)."""
    from echo_pipeline.defs.instance import ensure_dagster_home

    if slug is None:
        yield
        return
    locks = ensure_dagster_home().path / "locks"
    locks.mkdir(exist_ok=True)
    lock = FileLock(str(locks / f"{slug}.lock"))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        from echo_pipeline.defs.instance import get_instance

        raise _busy(get_instance(), slug) from None
    try:
        yield
    finally:
        lock.release()


def _check_not_busy(instance: dg.DagsterInstance, slug: str | None, *, wait: bool) -> None:
    """Part 2: a live run of the project started elsewhere (the daemon) makes it busy (or wait)."""
    from echo_pipeline.defs.instance import active_project_run

    while slug is not None and active_project_run(instance, slug) is not None:
        if not wait:
            raise _busy(instance, slug)
        time.sleep(2.0)


def _busy(instance: dg.DagsterInstance, slug: str) -> ProjectBusyError:
    from echo_pipeline.defs.instance import active_project_run

    active = active_project_run(instance, slug)
    what = (f"run {active.run_id} ({active.job}) since {active.started:%Y-%m-%d %H:%M:%S}" if active and active.started
            else "another echo-os command")
    return ProjectBusyError(f"project {slug!r} is busy: {what}; pass --wait to wait for it")


def _new_run_id() -> str:
    from dagster._core.utils import make_new_run_id

    return make_new_run_id()


def _wait_for_pool(instance: dg.DagsterInstance, pool: str, notify: NotifyFn | None) -> None:
    """Wait here, interruptibly and without spinning, until `pool` has a free slot.

    Dagster's own wait for a pool slot happens where Ctrl-C and SIGTERM are only recorded, not acted
    on (and it polls busily), so a run started behind a long one is let in only once the slot is free.
    """
    from echo_pipeline.defs.instance import PARTITION_TAG, PROJECT_TAG

    told = False
    while True:
        info = instance.event_log_storage.get_concurrency_info(pool)
        if not info.claimed_slots or len(info.claimed_slots) < info.slot_count:
            return
        if notify is not None and not told:
            holder = info.claimed_slots[0].run_id
            record = instance.get_run_record_by_id(holder)
            tags = record.dagster_run.tags if record else {}
            project = tags.get(PARTITION_TAG) or tags.get(PROJECT_TAG) or "-"
            notify(f"waiting for the {pool} pool: run {holder} (project {project}) is using it; Ctrl-C stops")
            told = True
        time.sleep(1.0)


@contextmanager
def _interrupt_watchdog(instance: dg.DagsterInstance, run_id: str, grace_s: float = 5.0) -> Iterator[None]:
    """Ctrl-C or SIGTERM while Dagster waits outside our code (e.g. for a pool slot another run took
    first) is only recorded by Dagster; if nothing acts on it within `grace_s`, end the run as canceled
    (nothing of ours is running then, so nothing is half-written) and exit like an interrupt does."""
    import threading

    from dagster._utils.interrupts import check_captured_interrupt

    done = threading.Event()

    def watch() -> None:
        pending_since: float | None = None
        while not done.wait(0.5):
            if not check_captured_interrupt():
                pending_since = None
                continue
            pending_since = pending_since or time.monotonic()
            if time.monotonic() - pending_since >= grace_s:
                run = instance.get_run_by_id(run_id)
                if run is not None and not run.is_finished:
                    instance.report_run_canceled(run, "interrupted while waiting to run a step")
                    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
                sys.stderr.write("interrupted; stored images are kept and the next run resumes\n")
                sys.stderr.flush()
                os._exit(130)

    thread = threading.Thread(target=watch, name="echo-interrupt-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run like Ctrl-C does (Dagster turns both into an interrupted step)."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread (e.g. inside a server): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_INTERRUPTS = {"KeyboardInterrupt", "DagsterExecutionInterruptedError"}


def _user_error_names() -> set[str]:
    names, todo = set(), [EchoError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names - {RunFailedError.__name__}


def _failure(result: dg.ExecuteInProcessResult) -> Exception:
    """The run's failure as the user should see it: the user error itself (one line, exit 2),
    Interrupted, a full disk as a StorageError, or a RunFailedError naming the run and step."""
    user_errors = _user_error_names()
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        if error is None:
            continue
        cause: SerializableErrorInfo | None = error
        while cause is not None:
            if cause.cls_name in _INTERRUPTS:
                return Interrupted()
            if cause.cls_name in user_errors:
                message = cause.message.strip().splitlines()[0]
                return InvalidInputError(message.split(": ", 1)[-1])
            if cause.cls_name in UNREACHABLE_ERRORS:
                first = (cause.message or "").strip().splitlines()
                detail = first[0].split(": ", 1)[-1] if first else cause.cls_name
                return StorageError(f"{unreachable_message(detail)}; run {result.run_id} stopped, what it stored "
                                    "is kept: run it again when the store answers")
            if "No space left on device" in (cause.message or ""):
                return StorageError(f"the artifact store is full (No space left on device); run {result.run_id} "
                                    "stopped, stored images are kept")
            cause = cause.cause
        first_line = error.message.strip().splitlines()[0] if error.message.strip() else error.cls_name
        return RunFailedError(f"run {result.run_id} failed in step {event.step_key}: {first_line} "
                              "(details: echo-os --verbose, or the run in the Dagster UI)", details=error.to_string())
    if any(e.event_type_value == "PIPELINE_CANCELED" for e in result.all_events):
        return Interrupted()
    return RunFailedError(f"run {result.run_id} failed")


# -- backfills --------------------------------------------------------------------------------------
def _submit_backfill(instance: dg.DagsterInstance, settings: Settings, job_name: str,
                     slugs: list[str]) -> tuple[str, list[str]]:
    """What `dagster job backfill` does, with the settings added to each run's config."""
    from dagster._cli.workspace.cli_target import (
        get_code_location_from_workspace,
        get_remote_job_from_remote_repo,
        get_remote_repository_from_code_location,
        get_workspace_from_cli_opts,
    )
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.execution.job_backfill import create_backfill_run
    from dagster._core.remote_representation.external_data import PartitionSetExecutionParamSnap
    from dagster._core.utils import make_new_backfill_id
    from dagster._time import get_current_timestamp
    from dagster.version import __version__ as dagster_version
    from dagster_shared.cli import WorkspaceOpts

    with get_workspace_from_cli_opts(instance, version=dagster_version, log_level="WARNING",
                                     workspace_opts=WorkspaceOpts(workspace=(str(WORKSPACE_FILE),))) as workspace:
        location = get_code_location_from_workspace(workspace, None)
        repo = get_remote_repository_from_code_location(location, None)
        remote_job = get_remote_job_from_remote_repo(repo, job_name)
        partition_set = next(p for p in repo.get_partition_sets() if p.job_name == job_name)
        backfill_id = make_new_backfill_id()
        backfill_job = PartitionBackfill(
            backfill_id=backfill_id, partition_set_origin=partition_set.get_remote_origin(),
            status=BulkActionStatus.REQUESTED, partition_names=slugs, from_failure=False,
            reexecution_steps=None, tags={}, backfill_timestamp=get_current_timestamp())
        params = location.get_partition_set_execution_params(
            repository_handle=repo.handle, partition_set_name=partition_set.name, partition_names=slugs,
            instance=instance)
        assert isinstance(params, PartitionSetExecutionParamSnap)
        run_ids = []
        for data in params.partition_data:
            run_config = {**(data.run_config or {}), "resources": resource_config(settings)}
            run = create_backfill_run(workspace, instance, location, remote_job, partition_set, backfill_job,
                                      data.name, data.tags, run_config)
            if run is not None:
                instance.submit_run(run.run_id, workspace)
                run_ids.append(run.run_id)
        instance.add_backfill(backfill_job.with_status(BulkActionStatus.COMPLETED)
                              .with_end_timestamp(get_current_timestamp()))
    return backfill_id, run_ids


# A live daemon heartbeats every 30 s; Dagster's own "live" test tolerates 30 minutes of silence,
# which would take a daemon stopped a minute ago for a running one.
DAEMON_SILENCE_S = 75


def daemon_running(instance: dg.DagsterInstance) -> bool:
    from dagster._daemon.controller import all_daemons_live

    return bool(instance.get_daemon_heartbeats()) and all_daemons_live(
        instance, heartbeat_tolerance_seconds=DAEMON_SILENCE_S)


def _start_daemon() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-w", str(WORKSPACE_FILE)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_runs(instance: dg.DagsterInstance, run_ids: list[str], timeout: float) -> None:
    """Wait for the runs to finish, with the running daemon or, while none runs, one of our own."""
    daemon = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            current = [instance.get_run_by_id(r) for r in run_ids]
            if all(r is not None and r.is_finished for r in current):
                return
            if daemon is None and not daemon_running(instance):
                daemon = _start_daemon()
            time.sleep(0.25)  # one small read per run a poll: cheap, and the wait ends soon after the runs
        raise InvalidInputError(f"runs did not finish within {timeout:.0f}s; they stay queued on the instance")
    finally:
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
            instance.wipe_daemon_heartbeats()  # ours is gone: the next wait must not count on it


def _run_info(record: Any) -> RunInfo:
    from echo_pipeline.defs.instance import PARTITION_TAG, PROJECT_TAG

    run = record.dagster_run
    start, end = record.start_time, record.end_time
    return RunInfo(run_id=run.run_id, job=run.job_name, project=run.tags.get(PARTITION_TAG) or run.tags.get(PROJECT_TAG),
                   status=run.status.value,
                   started=datetime.fromtimestamp(start) if start else None,
                   seconds=round(end - start, 1) if start and end else None,
                   backfill=run.tags.get("dagster/backfill"))



# -- the work log -----------------------------------------------------------------------------------
WORK_LOG_JOB = "work_log_job"


@dataclass
class CommitOutcome:
    """What `commit` did: the new entry (None when there was nothing to commit), what it found, the run."""

    project: str
    entry: WorkLogEntry | None
    pending: Pending
    run_id: str | None


def project_runs(instance: dg.DagsterInstance, slug: str, *, limit: int = 500) -> list[RunRef]:
    """The project's runs on the instance for its work log, oldest first: partitioned runs and
    `render` runs (PROJECT_TAG); work log runs themselves are not work to log."""
    import dagster as dg

    from echo_pipeline.defs.instance import PARTITION_TAG, PROJECT_TAG
    from echo_pipeline.workflows.work_log import RunRef

    records = {r.dagster_run.run_id: r for tag in (PARTITION_TAG, PROJECT_TAG)
               for r in instance.get_run_records(filters=dg.RunsFilter(tags={tag: slug}), limit=limit)}
    ordered = sorted(records.values(), key=lambda r: r.create_timestamp)
    return [RunRef(run_id=info.run_id, job=info.job, status=info.status, seconds=info.seconds,
                   started=info.started.astimezone() if info.started else None)  # local time, with its zone
            for info in map(_run_info, ordered) if info.job != WORK_LOG_JOB]


def commit(settings: Settings, message: str, minutes: int = 0, project: str | None = None, *, wait: bool = False,
           notify: NotifyFn | None = None, run_id: str | None = None) -> CommitOutcome:
    """Record what happened in the project (None = `default`) since its last work log entry as one
    `work_log_job` run (the `work_log` materialization carries the entry as metadata). With no new
    run or artifact nothing runs: the outcome's entry is None and `pending.nothing_message()` says why."""
    from echo_pipeline.defs.instance import get_instance, reap_dead_runs
    from echo_pipeline.workflows.work_log import WorkLog, check_message, check_minutes

    message, minutes = check_message(message), check_minutes(minutes)
    engine = CreativeEngine(settings)
    slug = engine.resolve_project(project).slug
    engine.store.check_writable()
    instance = get_instance()
    reap_dead_runs(instance)
    pending = WorkLog(engine.store).pending(slug, project_runs(instance, slug))
    if pending.empty:
        return CommitOutcome(project=slug, entry=None, pending=pending, run_id=None)
    collector = _Collector(None)
    result = _execute(settings, WORK_LOG_JOB, partition_key=slug, observer=collector, wait=wait, notify=notify,
                      run_config={"ops": {"work_log": {"config": {"message": message, "minutes": minutes}}}},
                      run_id=run_id)
    return CommitOutcome(project=slug, entry=collector.results["work_log"], pending=pending, run_id=result.run_id)

__all__ = ["BackfillOutcome", "BatchCheck", "BatchOutcome", "Interrupted", "PlanOutcome", "RenderCheck",
           "RenderOutcome", "RunFailedError", "RunInfo", "backfill", "batch", "check_batch", "check_render",
           "daemon_running", "plan", "prompt_spec", "refine", "refine_spec", "render", "resource_config", "runs"]
__all__ += ["CommitOutcome", "commit", "project_runs"]
