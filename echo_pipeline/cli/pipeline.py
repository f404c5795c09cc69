"""`echo-os plan | batch | backfill | runs | ui`: the project pipeline, run through Dagster.

Commands parse and print; `echo_pipeline.defs.launch` does the work. Every command uses a persistent
DAGSTER_HOME (./.dagster_home unless you set your own), so runs, materializations and lineage
survive and show in the Dagster UI.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated, Optional

import typer

from echo_pipeline.cli.common import (
    columns,
    console,
    display_path,
    engine,
    print_json,
    progress_bar,
    say,
    settings,
    shorten,
    warn,
)
from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.prompt_engine import MAX_COUNT
from echo_pipeline.textsafe import safe_text


def plan(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Project name, e.g. 'Ruzgar NFT Collection'.")],
    intent: Annotated[str, typer.Argument(help="What to make, e.g. 'warm fractal, no human forms'.")],
    style: Annotated[Optional[str], typer.Option("--style", "-s", help="Default style preset.")] = None,
    count: Annotated[Optional[int], typer.Option("--count", "-n", help=f"Images per batch (1-{MAX_COUNT}).")] = None,
    size: Annotated[Optional[str], typer.Option(help="WIDTHxHEIGHT of the project's images.")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="Image backend: procedural, diffusers, "
                                                   "comfyui, openai; or backend:model.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="The backend's model (see `echo-os models`).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, max=500, help="Sampler steps (model backends).")] = None,
    cfg_scale: Annotated[Optional[float], typer.Option("--cfg", min=0.0, max=50.0, help="CFG scale (model backends).")] = None,
    sampler: Annotated[Optional[str], typer.Option("--sampler", help="A1111 sampler name (model backends).")] = None,
    schedule: Annotated[Optional[bool], typer.Option("--schedule/--no-schedule",
                                                     help="Include in nightly batch generation.")] = None,
    ref: Annotated[Optional[list[str]], typer.Option(
        "--ref", help="A reference image (PNG/JPEG/WebP; repeat for more): the plan learns a style from the "
        "references and starts its image tasks from them (img2img). Replaces the project's references.")] = None,
    media: Annotated[Optional[list[str]], typer.Option(
        "--media", help="Media types to make besides those the intent implies: image, texture, 3d_model, video, "
        "interactive (repeat, or comma-separated).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Create or update a project, register its partition, and materialize intent and plan."""
    from echo_pipeline.defs import launch
    from echo_pipeline.render.prompt_engine import parse_size

    width, height = parse_size(size) if size else (None, None)
    outcome = launch.plan(settings(ctx), name, intent, style=style, count=count, width=width, height=height,
                          backend=backend, model=model, steps=steps, cfg_scale=cfg_scale, sampler=sampler,
                          schedule=schedule, references=ref,
                          media_types=[m.strip() for item in media for m in item.split(",") if m.strip()] if media
                          else None)
    spec, rows = outcome.spec, outcome.plan.to_table_rows()
    references = [r.model_dump() for r in outcome.plan.references]
    if as_json:
        print_json({"project": spec.name, "slug": spec.slug, "run_id": outcome.run_id,
                    "spec": str(outcome.spec_path), "tasks": rows, "references": references,
                    "reference_style": outcome.plan.reference_style})
        return
    say(f"{safe_text(spec.name)} ({spec.slug}): {safe_text(spec.intent)}")
    say(f"plan: {len(rows)} task(s)")
    cells = [{"id": r["id"], "type": r["type"], "count": r["count"], "size": r["size"],
              "depends on": r["depends_on"], "status": r["status"]} for r in rows]
    header, *lines = columns(cells, console.width, shrink="depends on", right={"count"})
    say(header)
    for line, row in zip(lines, rows, strict=True):  # each task's prompt on its own line, cut to the width
        say(line)
        say("    " + shorten(row["prompt"], max(20, console.width - 4)))
        if row["init"] != "-":
            say("    " + shorten(f"img2img from: {row['init']}", max(20, console.width - 4)))
    if outcome.plan.references:
        say(f"references: {len(references)} stored, style learned: {outcome.plan.reference_style}"
            + (f" (the project's style {spec.style!r} is used)" if spec.style else ""))
    say(f"spec:      {display_path(str(outcome.spec_path))}")
    say(f"artifacts: {display_path(settings(ctx).artifact_root)}")
    say(f"run:       {outcome.run_id}")
    say(f'next: echo-os batch --project "{safe_text(spec.name)}" --count {spec.count}')


def _by_type(records) -> dict[str, int]:
    """How many of `records` are of each media type, in the plan's order."""
    from echo_pipeline.workflows.multi_modal import MEDIA_ORDER

    counts = {kind: sum(1 for r in records if r.request.media_type == kind) for kind in MEDIA_ORDER}
    return {kind: n for kind, n in counts.items() if n}


def batch(
    ctx: typer.Context,
    project_arg: Annotated[Optional[str], typer.Argument(metavar="[PROJECT]", help="Project name, slug or prefix.")] = None,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Project name, slug or prefix.")] = None,
    count: Annotated[Optional[int], typer.Option("--count", "-n", help=f"Images in this batch (1-{MAX_COUNT}).")] = None,
    style: Annotated[Optional[str], typer.Option("--style", "-s", help="Style preset for this batch.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="If the project is busy, wait for its run to end.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Render the next batch of a project and score, learn from and show it (one Dagster run)."""
    from echo_pipeline.defs import launch

    if project_arg and project and project_arg != project:
        raise InvalidInputError(f"two projects given ({project_arg!r} and {project!r}); give one")
    query = project or project_arg
    if not query:
        raise InvalidInputError("which project? pass --project NAME (see `echo-os plan` to create one)")
    with progress_bar(f"batch {query}", enabled=not as_json) as progress:
        outcome = launch.batch(settings(ctx), query, count=count, style=style, progress=progress, wait=wait,
                               notify=warn)
    result, scores, gallery = outcome.result, outcome.scores, outcome.gallery
    summary = {
        "project": outcome.spec.name, "slug": outcome.spec.slug, "run_id": outcome.run_id, "batch": outcome.batch,
        "new_images": len(result.new), "already_stored": len(result.existing), "recovered": result.recovered,
        "rerolled": result.rerolled,
        "new_by_type": _by_type(result.new),
        "render_seconds": round(result.seconds, 2), "run_seconds": round(outcome.run_seconds, 2),
        "images_per_minute": outcome.images_per_minute,
        "mean_quality": scores.mean_total if scores else None,
        "mean_style_consistency": scores.mean_style_consistency if scores else None,
        "style_threshold": scores.style_threshold if scores else None,
        "consistent_pct": scores.consistent_pct if scores else None,
        "batch_consistent_pct": scores.batch_consistent_pct if scores else None,
        "style_target": scores.style_target if scores else None,
        "batch_consistency": scores.batch_consistency if scores else None,
        "previous_batch_consistency": scores.previous_batch_consistency if scores else None,
        "style_memory_images": outcome.style_memory_images,
        "gallery": gallery.html_path if gallery else None,
        "file_problems": outcome.file_problems,
        "warnings": result.warnings,
    }
    if as_json:
        print_json(summary)
        return
    kinds = _by_type(result.new)
    made = "" if set(kinds) <= {"image"} else " (" + ", ".join(f"{n} {kind}" for kind, n in kinds.items()) + ")"
    say(f"{safe_text(outcome.spec.name)} batch {outcome.batch}: {len(result.new)} new artifact(s){made}"
        + (f", {len(result.existing)} already stored" if result.existing else "")
        + f" in {outcome.run_seconds:.1f}s ({outcome.images_per_minute} images/min)")
    if scores:
        share = "" if scores.consistent_pct is None else f", {scores.consistent_pct} % of images at or above it"
        say(f"mean quality {scores.mean_total}, style consistency {scores.mean_style_consistency} "
            f"(threshold {scores.style_threshold}{share}), style memory {outcome.style_memory_images} image(s)")
        if scores.batch_consistency is not None:
            before = ("" if scores.previous_batch_consistency is None
                      else f" (the batch before: {scores.previous_batch_consistency:.1f})")
            on_style = ("" if scores.batch_consistent_pct is None else
                        f"; {scores.batch_consistent_pct} % of it on-style, target {scores.style_target:g} %"
                        + ("" if scores.batch_consistent_pct >= scores.style_target else " (check failed)"))
            say(f"this batch's style consistency {scores.batch_consistency:.1f}{before}{on_style}")
    if result.recovered:
        say(f"recovered {result.recovered} image(s) left uncatalogued by an interrupted run")
    if result.rerolled:
        say(f"re-rolled {result.rerolled} near-duplicate image(s) with other seeds (not stored)")
    for warning in result.warnings:
        warn(warning)
    if gallery:
        say(f"gallery: {display_path(gallery.html_path)}")
    say(f"run:     {outcome.run_id}")
    for problem in outcome.file_problems:
        warn(problem)
    if outcome.file_problems:
        warn("see `echo-os artifacts verify --project` for details")


def backfill(
    ctx: typer.Context,
    projects: Annotated[Optional[str], typer.Option("--projects", help="Comma-separated project names/slugs.")] = None,
    all_projects: Annotated[bool, typer.Option("--all", help="Every project in configs/projects/.")] = False,
    job: Annotated[str, typer.Option(help="Job to backfill: batch or plan_project.")] = "batch",
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the runs finish (using the running Dagster "
                                       "daemon, or one started for the wait).")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds to wait with --wait.")] = 3600,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Queue one run per project on the instance (a Dagster backfill, like `dagster job backfill`)."""
    from echo_pipeline.defs import launch

    if bool(projects) == all_projects:
        raise InvalidInputError("pass either --projects a,b or --all")
    names = None if all_projects else [p.strip() for p in (projects or "").split(",") if p.strip()]
    outcome = launch.backfill(settings(ctx), names, job=job, wait=wait, timeout=timeout)
    rows = [{"run_id": r.run_id, "status": r.status, "project": r.project} for r in outcome.runs]
    if as_json:
        print_json({"job": outcome.job, "projects": outcome.projects, "backfill": outcome.backfill_id,
                    "runs": [row | {"backfill": outcome.backfill_id} for row in rows]})
        return
    _runs_table(rows, title=f"backfill {outcome.backfill_id} of {outcome.job}: {len(rows)} run(s)")
    if not wait:
        say("Queued: they start when a Dagster daemon runs (`echo-os ui`, `dagster dev` or "
            "`dagster-daemon run`), or pass --wait.")


def runs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many recent runs.")] = 20,
    project: Annotated[Optional[str], typer.Option("--project", "-p")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Recent Dagster runs and their status."""
    from echo_pipeline.defs import launch

    infos = launch.runs(settings(ctx), project=project, limit=limit)
    if as_json:
        print_json([{"run_id": r.run_id, "status": r.status, "job": r.job, "project": r.project or "-",
                     "started": r.started.strftime("%Y-%m-%d %H:%M:%S") if r.started else "-", "seconds": r.seconds}
                    for r in infos])
        return
    # The table: minutes are enough, and they keep it within 80 columns.
    rows = [{"run_id": r.run_id, "status": r.status, "project": r.project or "-", "job": r.job,
             "started": r.started.strftime("%m-%d %H:%M") if r.started else "-", "secs": r.seconds} for r in infos]
    _runs_table(rows, title=f"{len(rows)} recent run(s)")


def ui(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Bind address (127.0.0.1 unless told otherwise).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the web UI.")] = 3000,
) -> None:
    """Start the Dagster web UI and daemon (`dagster dev`) on the persistent instance."""
    from echo_pipeline.defs.instance import ensure_dagster_home
    from echo_pipeline.defs.launch import WORKSPACE_FILE

    config = settings(ctx)
    home = ensure_dagster_home()
    if home.seeded:
        warn(f"seeded {home.path / 'dagster.yaml'} (run queue, per-project limit and gpu pool)")
    say(f"DAGSTER_HOME={home.path}")
    say(f"artifacts:   {config.artifact_root}")
    say(f"UI:          http://{host}:{port}")
    # The UI's runs (launchpad, sensor, schedule) read the settings from this environment.
    env = dict(os.environ, ECHO_ARTIFACT_ROOT=config.artifact_root, ECHO_CONFIG_DIR=str(config.config_dir))
    # `dagster dev` must stop on Ctrl-C/SIGTERM even when started in the background by a script (which
    # leaves SIGINT ignored, and an ignored signal stays ignored across exec).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execvpe(sys.executable, [sys.executable, "-m", "dagster", "dev", "-w", str(WORKSPACE_FILE), "-h", host,
                                "-p", str(port)], env)


def _runs_table(rows: list[dict], title: str) -> None:
    """Plain aligned columns: run ids whole (never cut or wrapped), the project column shortened."""
    say(title)
    if not rows:
        return
    cells = [{k: safe_text(v) if v is not None else "-" for k, v in row.items()} for row in rows]
    for text in columns(cells, console.width, shrink="job", limits={"project": 24}, right={"secs"}):
        say(text)


def resonance(
    ctx: typer.Context,
    project: Annotated[str, typer.Option("--project", "-p", help="Project name, slug or unique prefix.")],
    rounds: Annotated[int, typer.Option("--rounds", min=1, max=20, help="Refinement rounds at most.")] = 3,
    target: Annotated[Optional[float], typer.Option("--target", help="Stop when the weakest images' mean total "
                                                    "score reaches this (0-100).")] = None,
    suggest: Annotated[bool, typer.Option("--suggest", help="Only print concrete next steps from the project's "
                                          "scores and style memory.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="If the project is busy, wait for its run.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """The feedback loop: refine the weakest 20 % of a project, keep children that really score better."""
    import dataclasses

    from echo_pipeline.defs import launch

    if suggest:
        from echo_pipeline.workflows.project_pipeline import ProjectPipeline

        slug = launch.resolve_project_slug(settings(ctx), project)
        found = ProjectPipeline(engine(ctx), slug).suggestions()
        if as_json:
            print_json([dataclasses.asdict(s) for s in found])
            return
        say(f"{slug}: {len(found)} suggestion(s)")
        for item in found:
            say(f"- {item.text}")
        return

    report = launch.resonance(settings(ctx), project, rounds=rounds, target=target, wait=wait,
                              notify=None if as_json else say)
    if as_json:
        print_json(dataclasses.asdict(report) | {"improvement_pct": report.improvement_pct,
                                                 "final_mean": report.final_mean})
        return
    say(f"{report.project}: weakest {len(report.images)} image(s), mean total {report.start_mean:.1f} -> "
        f"{report.final_mean:.1f} ({report.improvement_pct:+.1f} %) in {len(report.rounds)} round(s); "
        f"{report.stopped}")
    rows = [{"round": str(r.round), "tried": str(r.tried), "kept": str(r.kept), "near-dup": str(r.rejected_duplicate),
             "off-style": str(r.rejected_style), "mean": f"{r.mean_total:.1f}", "gain %": f"{r.improvement_pct:+.1f}"}
            for r in report.rounds]
    for line in columns(rows, 100, shrink="round", right=set(rows[0]) if rows else set()):
        say(line)
    say(f"report: {display_path(report.report_path)}")
