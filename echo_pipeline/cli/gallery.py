"""`echo-os gallery`: build the HTML gallery and contact sheets of one project or of every project."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from echo_pipeline.cli.common import console, display_path, engine, err_console, print_json
from echo_pipeline.textsafe import safe_text


def gallery(
    ctx: typer.Context,
    project: Annotated[Optional[str], typer.Option(
        "--project", "-p", help="Project name, slug or prefix (default: one gallery of every project).")] = None,
    filter: Annotated[str, typer.Option(
        "--filter", help="The page to report and open: all (newest first), best (top 25% by score), recent "
                         "(newest 50), accepted (by the style memory), top:N or style:S. Every preset page is "
                         "rewritten either way; the page filters further in the browser.")] = "all",
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in the web browser.")] = False,
    out: Annotated[Optional[str], typer.Option(
        "--out", help="Write the gallery into this folder instead of the store (the store is then only read, "
                      "so it may be read-only or full).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Write the gallery: one page per filter (index.html, best.html, recent.html, accepted.html), its
    data, and contact-sheet PNGs, into the project's gallery/ folder (all projects: the store's gallery/).

    Missing or damaged stored files are reported on stderr (and in --json), not hidden.
    """
    from echo_pipeline.artifacts.gallery import parse_filter
    from echo_pipeline.artifacts.storage import ArtifactStore
    from echo_pipeline.errors import InvalidInputError, NotFoundError
    from echo_pipeline.workflows.galleries import collection_gallery, project_gallery

    flt = parse_filter(filter)
    eng = engine(ctx)
    # Reading needs no write probe; writing into the store does (ArtifactStore.open).
    store = ArtifactStore(eng.settings.artifact_root, read_only=True) if out else eng.store
    if open_page and out is None and "://" in store.root_path():
        raise InvalidInputError(f"--open needs a page on this machine, but the gallery is written to "
                                f"{store.root_path()}; add --out DIR to write a local copy and open that")
    if project is None:
        names = {s.slug: s.name for s in eng.projects.scan()[0]}
        slugs = sorted(set(store.projects()) | set(names))
        if not slugs:
            raise NotFoundError("no projects yet; create one with `echo-os plan NAME INTENT` or `echo-os render`")
        result = collection_gallery(store, [(s, names.get(s, s)) for s in slugs], filter=flt, out_dir=out,
                                    check_hashes=True)
        title = "all projects"
    else:
        ref = eng.projects.resolve_ref(project, stored=store.projects)
        result = project_gallery(store, ref.slug, ref.name, filter=flt, out_dir=out, check_hashes=True)
        title = ref.name
    for warning in store.warnings:
        err_console.print(Text(f"warning: {safe_text(warning)}"), highlight=False, soft_wrap=True)
    for problem in result.problems:
        err_console.print(Text(f"warning: {safe_text(problem.line())}"), highlight=False, soft_wrap=True)
    if open_page:
        _open(result.html_path)
    if as_json:
        print_json({"project": project and result.projects[0], "projects": result.projects, "filter": result.filter,
                    "images_shown": result.count, "images_in_project": result.total_images,
                    "mean_score": result.mean_total, "html": result.html_path,
                    "contact_sheet": result.contact_sheet_path, "data": result.data_path, "note": result.note,
                    "pages": result.pages, "problems": [p.to_dict() for p in result.problems]})
        return
    mean = f", mean score {result.mean_total:.1f}" if result.mean_total is not None else ""
    console.print(Text.assemble((safe_text(title), "bold"),
                                f": {result.count} of {result.total_images} image(s) ({result.filter}{mean})"))
    console.print(Text(f"gallery:       {safe_text(display_path(result.html_path))}"), soft_wrap=True)
    console.print(Text(f"contact sheet: {safe_text(display_path(result.contact_sheet_path))}"), soft_wrap=True)
    others = [Path(p).name for f, p in result.pages.items() if f != result.filter]
    console.print(Text(f"also written:  {safe_text(', '.join(others))} (same folder)"), soft_wrap=True)
    if result.note:
        console.print(Text(safe_text(result.note)))
    if result.problems:
        verify = "echo-os artifacts verify" + (f" --project {result.projects[0]}" if project else "")
        console.print(Text(f"{len(result.problems)} stored file problem(s) (see above); `{verify}` checks every file"),
                      soft_wrap=True)


def _open(path: str) -> None:
    """Open a written page in the browser; a remote store's page (s3://...) cannot be opened here."""
    from echo_pipeline.cli.common import warn

    if "://" in path and not path.startswith("file://"):
        warn(f"--open: {path} is not on this machine; use --out DIR for a local copy")
        return
    if not webbrowser.open(Path(path).resolve().as_uri()):
        warn(f"--open: no web browser found; open {path} yourself")
