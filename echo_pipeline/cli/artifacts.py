"""`echo-os artifacts`: browse what is stored."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from echo_pipeline.cli.common import console, engine, print_json, shorten

app = typer.Typer(help="Browse stored artifacts.", no_args_is_help=True)


@app.command("list")
def list_artifacts(
    ctx: typer.Context,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Only this project.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N (0 = all).")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List artifacts, newest first."""
    from echo_pipeline.naming import project_slug

    eng = engine(ctx)
    catalog = eng.store.catalog(project_slug(project) if project else None)
    catalog = catalog.sort_values("created", ascending=False)
    if limit > 0:
        catalog = catalog.head(limit)
    columns = ["artifact_id", "project", "created", "prompt", "seed", "width", "height", "style", "backend", "image_path"]
    if as_json:
        rows = catalog[columns].astype(object)
        print_json(rows.where(rows.notna(), None).to_dict(orient="records"))
        return
    table = Table(title=f"{len(catalog)} artifact(s)")
    for column in ("artifact", "project", "created", "seed", "size", "style", "prompt"):
        table.add_column(column, no_wrap=column in ("artifact", "seed", "size"))
    for row in catalog.itertuples(index=False):
        table.add_row(row.artifact_id, row.project, row.created.strftime("%Y-%m-%d %H:%M"), str(row.seed), f"{row.width}x{row.height}",
                      _text(row.style), shorten(_text(row.source_prompt) if _text(row.source_prompt) != "-" else row.prompt, 50))
    console.print(table)


def _text(value) -> str:
    """Catalog cells as text: missing values (None/NaN) show as '-'."""
    import pandas as pd

    return "-" if value is None or (not isinstance(value, str) and pd.isna(value)) or value == "" else str(value)


@app.command("show")
def show_artifact(
    ctx: typer.Context,
    artifact_id: Annotated[str, typer.Argument(help="Artifact id or a unique prefix of it (4+ characters).")],
    project: Annotated[Optional[str], typer.Option("--project", "-p")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one artifact's lineage record and its embedded A1111 parameters (the PNG is verified)."""
    from echo_pipeline.naming import project_slug

    eng = engine(ctx)
    record = eng.store.find(artifact_id, project_slug(project) if project else None)
    parameters, _embedded = eng.store.read_png(record.project, record.artifact_id)
    path = eng.store.image_path(record.project, record.artifact_id)
    if as_json:
        print_json(record.model_dump(mode="json") | {"path": path, "parameters": parameters})
        return
    req = record.request
    console.print(f"[bold]{record.artifact_id}[/bold]  project {record.project}")
    for label, value in (
        ("path", path), ("created", record.created.isoformat(timespec="seconds")),
        ("backend", f"{record.backend.backend} / {record.backend.model} v{record.backend.version}"),
        ("seed", req.seed), ("size", f"{req.width}x{req.height}"), ("style", req.style or "-"),
        ("parent", record.parent_id or "-"), ("run", record.run_id or "-"), ("sha256", record.sha256),
        ("info", ", ".join(f"{k}={v}" for k, v in record.info.items() if k != "params") or "-"),
    ):
        console.print(f"{label:>8}: {value}", highlight=False)
    console.print("[bold]parameters[/bold] (A1111 PNG-info):")
    console.print(parameters or "-", highlight=False, markup=False)
