"""`echo-os artifacts`: browse and verify what is stored.

These commands only read: they open the store without the write probe, so they work on a read-only
or full store. Text from the store (prompts, names) goes through `safe_text`: control characters are
shown as escapes, never sent to the terminal raw.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.text import Text

from echo_pipeline.cli.common import columns, console, engine, err_console, print_json
from echo_pipeline.textsafe import safe_text

if TYPE_CHECKING:
    from echo_pipeline.artifacts.storage import ArtifactStore

app = typer.Typer(help="Browse and verify stored artifacts.", no_args_is_help=True)

WIDE = 110  # from this console width on, `list` also shows the time and the style


def _store(ctx: typer.Context) -> ArtifactStore:
    """The store, opened for reading: no write probe, nothing created (works read-only or full)."""
    from echo_pipeline.artifacts.storage import ArtifactStore

    return ArtifactStore(engine(ctx).settings.artifact_root)


def _slug(ctx: typer.Context, store: ArtifactStore, project: str | None) -> str | None:
    """The project's slug, resolved like every command does (`ProjectRegistry.resolve_ref`); None: all."""
    if project is None:
        return None
    return engine(ctx).projects.resolve_ref(project, stored=store.projects).slug


def _warn(store: ArtifactStore) -> None:
    for warning in store.warnings:
        err_console.print(Text(f"warning: {safe_text(warning)}"), highlight=False, soft_wrap=True)


def _cell(value: Any) -> str:
    """Catalog cells as one-line safe text: missing values (None/NaN/'') show as '-'."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)) or value == "":
        return "-"
    return safe_text(str(value))


@app.command("list")
def list_artifacts(
    ctx: typer.Context,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Only this project.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N (0 = all).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """List artifacts, newest first (ids are never cut; the prompt is shortened to fit the width)."""
    import pandas as pd

    store = _store(ctx)
    catalog = store.catalog(_slug(ctx, store, project))
    _warn(store)
    catalog = catalog.sort_values("created", ascending=False)
    if limit > 0:
        catalog = catalog.head(limit)
    fields = ["artifact_id", "project", "created", "prompt", "seed", "width", "height", "style", "backend", "image_path"]
    if as_json:
        cells = catalog[fields].astype(object)
        print_json(cells.where(cells.notna(), None).to_dict(orient="records"))
        return
    wide = console.width >= WIDE
    show_project = project is None and catalog["project"].nunique() > 1
    rows: list[dict[str, str]] = []
    for row in catalog.to_dict(orient="records"):
        line = {"artifact": str(row["artifact_id"])}
        if show_project:
            line["project"] = _cell(row["project"])
        line["created"] = pd.Timestamp(row["created"]).strftime("%Y-%m-%d %H:%M" if wide else "%Y-%m-%d")
        line["seed"] = str(row["seed"])
        line["size"] = f"{row['width']}x{row['height']}"
        if wide:
            line["style"] = _cell(row["style"])
        line["prompt"] = _cell(row["source_prompt"]) if _cell(row["source_prompt"]) != "-" else _cell(row["prompt"])
        rows.append(line)
    console.print(Text(f"{len(catalog)} artifact(s)"))
    if rows:
        limits = {"project": 24 if wide else 14, "style": 20}
        for text in columns(rows, console.width, shrink="prompt", limits=limits, right={"seed"}):
            console.print(Text(text), soft_wrap=True)


@app.command("show")
def show_artifact(
    ctx: typer.Context,
    artifact_id: Annotated[str, typer.Argument(help="Artifact id or a unique prefix of it (4+ characters).")],
    project: Annotated[Optional[str], typer.Option("--project", "-p")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Show one artifact's lineage record and its embedded A1111 parameters.

    The PNG is verified first: it must decode, have the sha256 the catalog recorded and embed its own
    lineage record; otherwise a one-line error (exit code 2) says what is wrong.
    """
    store = _store(ctx)
    try:
        record = store.find(artifact_id, _slug(ctx, store, project))
    finally:
        _warn(store)
    parameters, _embedded = store.read_verified_png(record)
    path = store.image_path(record.project, record.artifact_id)
    if as_json:
        print_json(record.model_dump(mode="json") | {"path": path, "parameters": parameters, "verified": True})
        return
    req = record.request
    console.print(Text.assemble((safe_text(record.artifact_id), "bold"), f"  project {safe_text(record.project)}"))
    for label, value in (
        ("path", path), ("created", record.created.isoformat(timespec="seconds")),
        ("backend", f"{record.backend.backend} / {record.backend.model} v{record.backend.version}"),
        ("prompt", req.prompt), ("negative", req.negative_prompt or "-"),
        ("seed", req.seed), ("size", f"{req.width}x{req.height}"), ("style", req.style or "-"),
        ("parent", record.parent_id or "-"), ("run", record.run_id or "-"),
        ("sha256", f"{record.sha256} (verified)" if record.sha256 else "- (not recorded; lineage verified)"),
        ("info", ", ".join(f"{k}={v}" for k, v in record.info.items() if k != "params") or "-"),
    ):
        console.print(Text(f"{label:>8}: {safe_text(str(value))}"), soft_wrap=True)
    console.print(Text("parameters", style="bold") + Text(" (A1111 PNG-info):"))
    console.print(Text(safe_text(parameters or "-", newlines=True)), soft_wrap=True)


VERIFY_HELP = "\n\n".join([
    "Check every stored file of a project (or of all projects) against the catalog.",
    "Finds missing PNGs, PNGs whose sha256 is not the catalogued one (another file put in its place), PNGs "
    "that do not decode or do not carry their own lineage record, missing or undecodable thumbnails, PNGs the "
    "catalog does not know, and damaged catalog parts. Only reads (a damaged catalog part is moved to "
    "catalog/quarantine/ when the store is writable).",
    "Exit code: 0 when everything is fine, 1 when problems were found, 2 on bad input.",
])


@app.command("verify", help=VERIFY_HELP)
def verify_artifacts(
    ctx: typer.Context,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Only this project (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """`VERIFY_HELP`: check every stored file against the catalog; exit code 1 when problems were found."""
    store = _store(ctx)
    report = store.verify(_slug(ctx, store, project))
    if as_json:
        print_json(report.to_dict())
    else:
        for problem in report.problems:  # one line each: grep-able, ids and paths never split
            where = f"{problem.project}/{problem.artifact_id}" if problem.artifact_id else problem.project
            console.print(Text.assemble((safe_text(where), "bold"), "  ", (problem.label, "red"),
                                        f": {safe_text(problem.detail)}"), soft_wrap=True)
        console.print(Text(safe_text(report.summary())), soft_wrap=True)
    if not report.ok:
        # SystemExit passes through Click unchanged, standalone or not (typer.Exit would be turned
        # into a return value by `app(standalone_mode=False)`).
        sys.exit(1)
