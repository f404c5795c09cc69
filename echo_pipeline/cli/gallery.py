"""`echo-os gallery`: build and show a project's HTML gallery and contact sheet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from echo_pipeline.cli.common import console, display_path, engine, err_console, print_json
from echo_pipeline.textsafe import safe_text

if TYPE_CHECKING:
    import pandas as pd

    from echo_pipeline.artifacts.storage import ArtifactStore

TECHNICAL_NOTE = ("No score table yet: 'best' is ranked by the technical score computed from the thumbnails. "
                  "Score the project (quality_scores) for full rankings.")


def gallery(
    ctx: typer.Context,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Project name, slug or prefix.")] = None,
    filter: Annotated[str, typer.Option(
        "--filter", help="The page to report: all (newest first), best (top 25% by score) or recent. "
                         "Every page is rewritten either way.")] = "all",
    out: Annotated[Optional[str], typer.Option(
        "--out", help="Write the pages into this folder instead of the project's gallery/ (the store is "
                      "only read, so it may be read-only or full).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Write the project's gallery pages (gallery/index.html, best.html, recent.html) and contact sheets.

    Missing or damaged stored files are reported on stderr (and in --json), not hidden.
    """
    from echo_pipeline.artifacts.gallery import build_gallery
    from echo_pipeline.artifacts.storage import ArtifactStore

    eng = engine(ctx)
    # Reading needs no write probe; writing into the store does (ArtifactStore.open).
    store = ArtifactStore(eng.settings.artifact_root, read_only=True) if out or project is None else eng.store
    if project is None:
        _list_projects(eng, store, as_json)
        return
    slug, title = _resolve_stored_project(eng, store, project)
    scores, note = gallery_scores(store, slug)
    result = build_gallery(store, slug, title=title, filter=filter, scores=scores, scores_note=note, out_dir=out,
                           check_hashes=True)
    for warning in store.warnings:
        err_console.print(Text(f"warning: {safe_text(warning)}"), highlight=False, soft_wrap=True)
    for problem in result.problems:
        err_console.print(Text(f"warning: {safe_text(problem.line())}"), highlight=False, soft_wrap=True)
    payload = {"project": slug, "filter": result.filter, "images_shown": result.count,
               "images_in_project": result.total_images, "mean_score": result.mean_total,
               "html": result.html_path, "contact_sheet": result.contact_sheet_path, "note": result.note,
               "pages": result.pages, "problems": [p.to_dict() for p in result.problems]}
    if as_json:
        print_json(payload)
        return
    mean = f", mean score {result.mean_total:.1f}" if result.mean_total is not None else ""
    console.print(Text.assemble((safe_text(title), "bold"),
                                f": {result.count} of {result.total_images} image(s) ({result.filter}{mean})"))
    console.print(Text(f"gallery:       {safe_text(display_path(result.html_path))}"), soft_wrap=True)
    console.print(Text(f"contact sheet: {safe_text(display_path(result.contact_sheet_path))}"), soft_wrap=True)
    others = [display_path(p) for f, p in result.pages.items() if f != result.filter]
    console.print(Text(f"also written:  {safe_text(', '.join(others))}"), soft_wrap=True)
    if result.note:
        console.print(Text(safe_text(result.note)))
    if result.problems:
        console.print(Text(f"{len(result.problems)} stored file problem(s) (see above); "
                           f"`echo-os artifacts verify --project {slug}` checks every file"), soft_wrap=True)


def gallery_scores(store: ArtifactStore, slug: str) -> tuple[pd.DataFrame | None, str | None]:
    """(scores for `build_gallery`, note): the stored score table, else technical scores computed from
    the thumbnails (nothing is written), else (None, None) for an empty project."""
    import pandas as pd

    from echo_pipeline.artifacts.gallery import load_gallery_thumbnail
    from echo_pipeline.resonance.memory_system import load_scores
    from echo_pipeline.resonance.quality_assessor import technical_scores

    scores = load_scores(store, slug)
    if len(scores):
        return scores, None
    ids = [str(a) for a in store.catalog(slug)["artifact_id"]]
    if not ids:
        return None, None
    rows = []
    for artifact_id in ids:
        image, _problem = load_gallery_thumbnail(store, slug, artifact_id)  # build_gallery reports problems
        components = technical_scores(image)
        rows.append({"artifact_id": artifact_id, **components, "total": components["technical"]})
    return pd.DataFrame(rows), TECHNICAL_NOTE


def _resolve_stored_project(eng, store: ArtifactStore, text: str) -> tuple[str, str]:
    """(slug, display name) of the project `text` names, resolved like every command does."""
    ref = eng.projects.resolve_ref(text, stored=store.projects)
    return ref.slug, ref.name


def _list_projects(eng, store: ArtifactStore, as_json: bool) -> None:
    names = {s.slug: s.name for s in eng.projects.scan()[0]}
    rows = []
    for slug in sorted(set(store.projects()) | set(names)):
        rows.append({"project": slug, "name": names.get(slug, slug), "images": len(store.catalog(slug))})
    for warning in store.warnings:
        err_console.print(Text(f"warning: {safe_text(warning)}"), highlight=False, soft_wrap=True)
    if as_json:
        print_json(rows)
        return
    table = Table(title="projects (pick one with --project)")
    for column in ("project", "name", "images"):
        table.add_column(column, no_wrap=column != "name", overflow="fold" if column == "name" else "ellipsis")
    for row in rows:
        table.add_row(Text(safe_text(row["project"])), Text(safe_text(row["name"])), str(row["images"]))
    console.print(table)
