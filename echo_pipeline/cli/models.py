"""`echo-os models` and `echo-os compare`: which backends and models can render now, and which
renders a project best."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from echo_pipeline.cli.common import console, display_path, print_json, progress_bar, say, settings, warn


def models(ctx: typer.Context,
           as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False) -> None:
    """List the image backends and their models, and whether each can render right now."""
    from echo_pipeline.workflows.model_comparison import list_models

    rows = list_models(settings(ctx))
    if as_json:
        print_json([{"backend": r.backend, "model": r.model, "spec": r.spec, "usable": r.usable,
                     "reason": r.reason, "configured": r.configured} for r in rows])
        return
    table = Table(title="image backends and models")
    for column in ("backend", "model", "usable", "why not / how to use"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r.backend, r.model or "-", "yes" if r.usable else "no",
                      r.reason or f"--backend {r.spec}")
    console.print(table)


def compare(
    ctx: typer.Context,
    project: Annotated[str, typer.Option("--project", "-p", help="Project whose prompt set is rendered.")],
    backends: Annotated[str, typer.Option("--backends", help="Comma-separated backends, each name or name:model, "
                                          "e.g. procedural,diffusers:./tiny-sd,comfyui.")],
    count: Annotated[int, typer.Option("--count", "-n", help="Images per backend (1-16).")] = 4,
    size: Annotated[Optional[str], typer.Option("--size", help="WIDTHxHEIGHT for every backend (default: the "
                                                "project's size).")] = None,
    select: Annotated[Optional[str], typer.Option("--select", help="'best': make the best-scoring backend and model "
                                                  "the project's own (written to its spec).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Render the same prompts on several backends, score them side by side, write a contact sheet."""
    from echo_pipeline.defs import launch
    from echo_pipeline.render.prompt_engine import parse_size
    from echo_pipeline.workflows.model_comparison import parse_backends

    specs = parse_backends(backends)
    with progress_bar("comparing", enabled=not as_json) as progress:
        result = launch.compare(settings(ctx), project, specs, count=count, size=parse_size(size) if size else None,
                                select=select, progress=progress, notify=None if as_json else say)
    best = result.best
    if as_json:
        print_json({
            "project": result.project, "prompt": result.prompt, "sheet": result.sheet_path,
            "best": best.backend if best else None, "selected": result.selected.backend if result.selected else None,
            "backends": [{"backend": r.backend, "model": r.model, "images": len(r.records), "error": r.error or None,
                          "mean_total": r.mean_total, "mean_technical": r.mean_technical,
                          "mean_consistency": r.mean_consistency, "mean_uniqueness": r.mean_uniqueness,
                          "seconds_per_image": r.seconds_per_image,
                          "artifact_ids": [a.artifact_id for a in r.records]} for r in result.rows],
        })
        return
    table = Table(title=f"{result.project}: {result.prompt}", caption="total, tech(nical), style consistency and "
                  "uniqueness are 0-100 means over each backend's images")
    # Short headers: the table fits 80 columns with a long diffusers:<path> backend.
    for column in ("backend", "images", "total", "tech", "style", "unique", "s/img", "note"):
        table.add_column(column, overflow="fold", no_wrap=column != "backend",
                         justify="right" if column not in ("backend", "note") else "left")

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    for r in result.rows:
        note = "failed (below)" if r.error else ("best" if best is r else "")
        table.add_row(r.backend, str(len(r.records)), cell(r.mean_total), cell(r.mean_technical),
                      cell(r.mean_consistency), cell(r.mean_uniqueness),
                      "-" if r.seconds_per_image is None else f"{r.seconds_per_image:.2f}", note)
    console.print(table)
    for r in result.rows:
        if r.error:
            say(f"{r.backend}: {r.error}")
    say(f"contact sheet: {display_path(result.sheet_path)}")
    if result.selected is not None:
        say(f"project {result.project} now renders with {result.selected.backend}")
    elif select == "best":
        warn("no backend rendered anything scorable; the project's backend is unchanged")
