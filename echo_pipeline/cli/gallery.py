"""`echo-os gallery`: build and show a project's HTML gallery and contact sheet."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from echo_pipeline.cli.common import console, display_path, engine, print_json


def gallery(
    ctx: typer.Context,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Project name, slug or prefix.")] = None,
    filter: Annotated[str, typer.Option("--filter", help="all (newest first), best (top 25% by score) or recent.")] = "all",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Write the project's gallery page (gallery/index.html, best.html or recent.html) and contact sheet."""
    from echo_pipeline.artifacts.gallery import build_gallery

    eng = engine(ctx)
    if project is None:
        _list_projects(eng, as_json)
        return
    slug, title = _resolve_stored_project(eng, project)
    result = build_gallery(eng.store, slug, title=title, filter=filter)
    payload = {"project": slug, "filter": result.filter, "images_shown": result.count,
               "images_in_project": result.total_images, "mean_score": result.mean_total,
               "html": result.html_path, "contact_sheet": result.contact_sheet_path, "note": result.note}
    if as_json:
        print_json(payload)
        return
    mean = f", mean score {result.mean_total:.1f}" if result.mean_total is not None else ""
    console.print(f"[bold]{title}[/bold]: {result.count} of {result.total_images} image(s) ({result.filter}{mean})")
    console.print(f"gallery:       {display_path(result.html_path)}")
    console.print(f"contact sheet: {display_path(result.contact_sheet_path)}")
    if result.note:
        console.print(result.note)


def _resolve_stored_project(eng, text: str) -> tuple[str, str]:
    """A project with a spec (name, slug or prefix), or one that only exists in the store (`default`)."""
    from echo_pipeline.errors import NotFoundError
    from echo_pipeline.naming import slugify

    try:
        spec = eng.projects.resolve(text)
        return spec.slug, spec.name
    except NotFoundError:
        if slugify(text) in eng.store.projects():
            return slugify(text), slugify(text)
        raise


def _list_projects(eng, as_json: bool) -> None:
    names = {s.slug: s.name for s in eng.projects.scan()[0]}
    rows = []
    for slug in sorted(set(eng.store.projects()) | set(names)):
        rows.append({"project": slug, "name": names.get(slug, slug), "images": len(eng.store.catalog(slug))})
    if as_json:
        print_json(rows)
        return
    table = Table(title="projects (pick one with --project)")
    for column in ("project", "name", "images"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["project"], row["name"], str(row["images"]))
    console.print(table)
