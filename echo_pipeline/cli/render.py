"""`echo-os render`: prompts in, stored artifacts out."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from echo_pipeline.cli.common import console, display_path, engine, err_console, print_json, shorten
from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.prompt_engine import MAX_COUNT

MEDIA_TYPES = ("image", "texture")


def render(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="What to make. Ranges ('warm fractal 01-09'), variants ('{warm|cool}'), "
                                          "wildcards ('__palettes__') and 'no X' constraints are understood.")],
    style: Annotated[Optional[str], typer.Option("--style", "-s", help="Style preset (see `echo-os style list`).")] = None,
    project: Annotated[str, typer.Option("--project", "-p", help="Project the images belong to.")] = "default",
    count: Annotated[int, typer.Option("--count", "-n", help=f"Images per prompt (1-{MAX_COUNT} in total).")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Base seed; image k uses seed+k. Default: derived from the prompt.")] = None,
    size: Annotated[Optional[str], typer.Option(help="WIDTHxHEIGHT, each side 64-2048 (default 512x512).")] = None,
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt: what to avoid.")] = "",
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="Image backend (default: procedural, offline).")] = None,
    media_type: Annotated[str, typer.Option("--type", help="image, or texture (seamlessly tileable).")] = "image",
    tiling: Annotated[bool, typer.Option("--tiling", help="Make the image seamlessly tileable.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Render images from a prompt into the artifact store (already stored requests are skipped)."""
    from echo_pipeline.render.prompt_engine import PromptSpec, parse_size

    eng = engine(ctx)
    if media_type not in MEDIA_TYPES:
        raise InvalidInputError(f"--type {media_type!r} is not available; choose one of: {', '.join(MEDIA_TYPES)}")
    width, height = parse_size(size) if size else (eng.settings.default_width, eng.settings.default_height)
    spec = PromptSpec(
        prompt=prompt, style=style, project=project, count=count, seed=seed, width=width, height=height,
        negative_prompt=negative, media_type=media_type, tiling=tiling or media_type == "texture",
    )
    result = _render_as_dagster_run(eng, spec, backend, show_progress=not as_json)
    rows = [(r, "new") for r in result.new] + [(r, "stored") for r in result.existing]
    rows.sort(key=lambda item: item[0].request.index)
    if as_json:
        print_json({
            "project": result.requests[0].project,
            "run_id": result.run_id,
            "backend": result.requests[0].backend,
            "new": len(result.new),
            "already_stored": len(result.existing),
            "recovered": result.recovered,
            "seconds": round(result.seconds, 3),
            "artifacts": [
                {"artifact_id": r.artifact_id, "status": status, "prompt": r.request.prompt, "seed": r.request.seed,
                 "width": r.request.width, "height": r.request.height, "style": r.request.style,
                 "path": eng.store.image_path(r.project, r.artifact_id)}
                for r, status in rows
            ],
        })
        return
    table = Table(title=f"project {result.requests[0].project}", show_lines=False)
    for column in ("#", "artifact", "status", "seed", "prompt", "path"):
        table.add_column(column, overflow="fold", no_wrap=column in ("#", "artifact", "status", "seed"))
    for r, status in rows:
        table.add_row(str(r.request.index + 1), r.artifact_id, status, str(r.request.seed),
                      shorten(r.request.source_prompt or r.request.prompt, 30),
                      display_path(eng.store.image_path(r.project, r.artifact_id)))
    console.print(table)
    if result.new:
        console.print(f"{len(result.new)} new image(s) in {result.seconds:.2f}s"
                      + (f", {len(result.existing)} already stored" if result.existing else ""))
    else:
        console.print(f"Nothing new: all {len(result.existing)} image(s) were already stored.")
    if result.recovered:
        console.print(f"Recovered {result.recovered} image(s) left uncatalogued by an interrupted run.")


def _render_as_dagster_run(eng, spec, backend: str | None, *, show_progress: bool):
    """Validate everything here (bad input never becomes a failed run), then render as a Dagster run."""
    from echo_pipeline.artifacts.records import ArtifactRecord
    from echo_pipeline.cli.dagster_runs import execute
    from echo_pipeline.render.backends.registry import create_backend
    from echo_pipeline.render.batch_processor import BatchResult

    requests = eng.plan_requests(spec)
    probe = create_backend(backend or eng.settings.default_backend)
    try:
        probe.check_requests([probe.prepare(r) for r in requests])
    finally:
        probe.close()
    eng.store.check_writable()
    config = spec.model_dump(mode="json") | {"backend": backend}
    run = execute(eng, "render_job", run_config={"ops": {"render_prompt": {"config": config}}},
                  progress_label="rendering" if show_progress else None)
    output = run.output_for_node("render_prompt")
    project = requests[0].project
    catalog = eng.store.catalog(project).set_index("artifact_id")
    records = {aid: ArtifactRecord.model_validate_json(catalog.at[aid, "record_json"])
               for aid in output["new"] + output["existing"]}
    result = BatchResult(requests=[records[a].request for a in output["new"] + output["existing"]],
                         new=[records[a] for a in output["new"]], existing=[records[a] for a in output["existing"]],
                         recovered=output["recovered"], seconds=output["seconds"], run_id=run.run_id)
    return result
