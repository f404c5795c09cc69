"""`echo-os plan | batch | backfill | runs | ui`: the project pipeline, run through Dagster.

Every command uses a persistent DAGSTER_HOME (./.dagster_home unless you set your own), so runs,
materializations and lineage survive and show in the Dagster UI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Annotated, Optional

import typer
from rich.table import Table

from echo_pipeline.cli.common import console, display_path, engine, print_json, shorten
from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.prompt_engine import MAX_COUNT

WORKSPACE = "workspace.yaml"


def _check_count(count: Optional[int]) -> None:
    if count is not None and not 1 <= count <= MAX_COUNT:
        raise InvalidInputError(f"--count must be 1-{MAX_COUNT} (got {count})")


def plan(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Project name, e.g. 'Ruzgar NFT Collection'.")],
    intent: Annotated[str, typer.Argument(help="What to make, e.g. 'warm fractal, no human forms'.")],
    style: Annotated[Optional[str], typer.Option("--style", "-s", help="Default style preset.")] = None,
    count: Annotated[Optional[int], typer.Option("--count", "-n", help=f"Images per batch (1-{MAX_COUNT}).")] = None,
    size: Annotated[Optional[str], typer.Option(help="WIDTHxHEIGHT of the project's images.")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="Image backend.")] = None,
    schedule: Annotated[Optional[bool], typer.Option("--schedule/--no-schedule",
                                                     help="Include in nightly batch generation.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create or update a project, register its partition, and materialize intent and plan."""
    from echo_pipeline.cli.dagster_runs import execute
    from echo_pipeline.render.backends.registry import backend_class
    from echo_pipeline.render.prompt_engine import parse_size
    from echo_pipeline.workflows.visual_planner import plan_project

    eng = engine(ctx)
    _check_count(count)
    if style:
        style = eng.styles.get(style).name
    if backend:
        backend_class(backend)
    width, height = parse_size(size) if size else (None, None)
    spec = eng.projects.create(name, intent, style=style, count=count, width=width, height=height,
                               backend=backend, schedule=schedule)
    result = execute(eng, "plan_project", partition_key=spec.slug, quiet=True)
    project_plan = plan_project(spec)
    rows = project_plan.to_table_rows()
    if as_json:
        print_json({"project": spec.name, "slug": spec.slug, "run_id": result.run_id,
                    "spec": str(eng.projects.path(spec.slug)), "tasks": rows})
        return
    console.print(f"[bold]{spec.name}[/bold] ({spec.slug}): {spec.intent}")
    table = Table(title=f"plan: {len(rows)} task(s)")
    for column in ("id", "type", "count", "size", "depends on", "status", "prompt"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["id"], row["type"], row["count"], row["size"], row["depends_on"], row["status"],
                      shorten(row["prompt"], 50))
    console.print(table)
    console.print(f"spec: {display_path(str(eng.projects.path(spec.slug)))}   run: {result.run_id}")
    console.print(f'next: echo-os batch --project "{spec.name}" --count {spec.count}')


def batch(
    ctx: typer.Context,
    project_arg: Annotated[Optional[str], typer.Argument(metavar="[PROJECT]", help="Project name, slug or prefix.")] = None,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Project name, slug or prefix.")] = None,
    count: Annotated[Optional[int], typer.Option("--count", "-n", help=f"Images in this batch (1-{MAX_COUNT}).")] = None,
    style: Annotated[Optional[str], typer.Option("--style", "-s", help="Style preset for this batch.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Render the next batch of a project and score, learn from and show it (one Dagster run)."""
    from echo_pipeline.cli.dagster_runs import execute, materialization_metadata

    eng = engine(ctx)
    if project_arg and project and project_arg != project:
        raise InvalidInputError(f"two projects given ({project_arg!r} and {project!r}); give one")
    query = project or project_arg
    if not query:
        raise InvalidInputError("which project? pass --project NAME (see `echo-os plan` to create one)")
    spec = eng.projects.resolve(query)
    _check_count(count)
    if style:
        style = eng.styles.get(style).name
    with eng.store.project_lock(spec.slug):
        pass  # fail fast, before starting a run, when another batch holds the project
    config = {k: v for k, v in (("count", count), ("style", style)) if v is not None}
    started = time.perf_counter()
    result = execute(eng, "batch", partition_key=spec.slug,
                     run_config={"ops": {"prompt_set": {"config": config}}} if config else None,
                     progress_label=f"batch {spec.slug}", quiet=as_json)
    seconds = time.perf_counter() - started
    images = materialization_metadata(result, "generated_images")
    scores = materialization_metadata(result, "quality_scores")
    memory = materialization_metadata(result, "style_memory")
    gallery = materialization_metadata(result, "gallery")
    summary = {
        "project": spec.name, "slug": spec.slug, "run_id": result.run_id, "batch": images.get("batch"),
        "new_images": images.get("new_images", 0), "already_stored": images.get("already_stored", 0),
        "render_seconds": images.get("seconds"), "run_seconds": round(seconds, 2),
        "images_per_minute": round(60 * images.get("new_images", 0) / seconds, 1) if seconds else None,
        "mean_quality": scores.get("mean_total"), "mean_style_consistency": scores.get("mean_style_consistency"),
        "style_memory_images": memory.get("count"), "gallery": gallery.get("html"),
    }
    if as_json:
        print_json(summary)
        return
    console.print(f"[bold]{spec.name}[/bold] batch {summary['batch']}: {summary['new_images']} new image(s)"
                  + (f", {summary['already_stored']} already stored" if summary["already_stored"] else "")
                  + f" in {seconds:.1f}s ({summary['images_per_minute']} images/min)")
    console.print(f"mean quality {summary['mean_quality']}, style consistency {summary['mean_style_consistency']} "
                  f"(threshold {scores.get('style_threshold')}), style memory {summary['style_memory_images']} image(s)")
    console.print(f"gallery: {display_path(str(summary['gallery']))}   run: {result.run_id}")


def backfill(
    ctx: typer.Context,
    projects: Annotated[Optional[str], typer.Option("--projects", help="Comma-separated project names/slugs.")] = None,
    all_projects: Annotated[bool, typer.Option("--all", help="Every project in configs/projects/.")] = False,
    job: Annotated[str, typer.Option(help="Job to backfill: batch or plan_project.")] = "batch",
    wait: Annotated[bool, typer.Option("--wait", help="Run a Dagster daemon until the queued runs finish.")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds to wait with --wait.")] = 3600,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Queue one run per project on the instance (the same as `dagster job backfill`)."""
    from echo_pipeline.cli.dagster_runs import export_settings
    from echo_pipeline.defs.instance import ensure_partition, get_instance

    eng = engine(ctx)
    if job not in ("batch", "plan_project"):
        raise InvalidInputError(f"--job {job!r} is not a project job; choose batch or plan_project")
    if bool(projects) == all_projects:
        raise InvalidInputError("pass either --projects a,b or --all")
    specs = eng.projects.list() if all_projects else [eng.projects.resolve(p.strip())
                                                      for p in projects.split(",") if p.strip()]
    if not specs:
        raise InvalidInputError("no projects to backfill; create one with echo-os plan")
    slugs = list(dict.fromkeys(s.slug for s in specs))
    export_settings(eng)
    instance = get_instance()
    for slug in slugs:
        ensure_partition(instance, slug)
    before = {r.run_id for r in instance.get_runs()}
    cmd = [sys.executable, "-m", "dagster", "job", "backfill", "-w", _workspace(), "-j", job,
           "--partitions", ",".join(slugs), "--noprompt"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise InvalidInputError(f"dagster job backfill failed: {last}")
    runs = [r for r in instance.get_runs() if r.run_id not in before]
    if wait:
        runs = _wait_with_daemon(instance, [r.run_id for r in runs], timeout)
    rows = [{"run_id": r.run_id, "project": r.tags.get("dagster/partition"), "status": r.status.value,
             "backfill": r.tags.get("dagster/backfill")} for r in runs]
    if as_json:
        print_json({"job": job, "projects": slugs, "runs": rows})
        return
    _runs_table(rows, title=f"backfill of {job}: {len(rows)} run(s)")
    if not wait:
        console.print("Queued: they start when a Dagster daemon runs (`echo-os ui`, `dagster dev` or "
                      "`dagster-daemon run`), or pass --wait.")


def runs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many recent runs.")] = 20,
    project: Annotated[Optional[str], typer.Option("--project", "-p")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recent Dagster runs and their status."""
    import dagster as dg

    from echo_pipeline.defs.instance import get_instance

    eng = engine(ctx)
    filters = None
    if project:
        filters = dg.RunsFilter(tags={"dagster/partition": eng.projects.resolve(project).slug})
    records = get_instance().get_run_records(filters=filters, limit=limit)
    rows = []
    for rec in records:
        run = rec.dagster_run
        start, end = rec.start_time, rec.end_time
        rows.append({"run_id": run.run_id, "job": run.job_name, "project": run.tags.get("dagster/partition", "-"),
                     "status": run.status.value,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)) if start else "-",
                     "seconds": round(end - start, 1) if start and end else None})
    if as_json:
        print_json(rows)
        return
    _runs_table(rows, title=f"{len(rows)} recent run(s)")


def ui(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Bind address (127.0.0.1 unless told otherwise).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the web UI.")] = 3000,
) -> None:
    """Start the Dagster web UI and daemon (`dagster dev`) on the persistent instance."""
    from echo_pipeline.cli.dagster_runs import export_settings
    from echo_pipeline.defs.instance import ensure_dagster_home

    export_settings(engine(ctx))
    home = ensure_dagster_home()
    console.print(f"DAGSTER_HOME={home}  UI on http://{host}:{port}")
    os.execvpe(sys.executable, [sys.executable, "-m", "dagster", "dev", "-w", _workspace(), "-h", host,
                                "-p", str(port)], os.environ.copy())


def _workspace() -> str:
    from echo_pipeline.settings import PACKAGE_DIR

    path = PACKAGE_DIR.parent / WORKSPACE
    return str(path if path.is_file() else WORKSPACE)


def _runs_table(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    if not rows:
        console.print(f"{title}")
        return
    for column in rows[0]:
        table.add_column(column, no_wrap=column == "run_id")
    for row in rows:
        table.add_row(*[str(v) if v is not None else "-" for v in row.values()])
    console.print(table)


def _wait_with_daemon(instance, run_ids: list[str], timeout: int):
    """Run `dagster-daemon run` until the given runs reach a final status (or the timeout)."""
    daemon = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-w", _workspace()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            current = [instance.get_run_by_id(r) for r in run_ids]
            if all(r is not None and r.is_finished for r in current):
                return current
            time.sleep(1.0)
        raise InvalidInputError(f"runs did not finish within {timeout}s; they stay queued on the instance")
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
