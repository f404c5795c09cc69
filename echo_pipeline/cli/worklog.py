"""`echo-os commit | log`: the project's work log (what happened since the last entry, and the entries).

`commit` records one entry as a Dagster run (the `work_log` asset's materialization, on the UI's
timeline) through `defs/launch.py`; `log` only reads the entries from the artifact store.
"""

from __future__ import annotations

from datetime import timezone
from typing import Annotated, Optional

import typer

from echo_pipeline.cli.common import console, engine, print_json, say, settings, warn
from echo_pipeline.textsafe import safe_text


def commit(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(help="What you did, e.g. 'integrate 3D assets'.")],
    minutes: Annotated[int, typer.Option("--minutes", "-m", help="Minutes you spent on it (0-10000).")] = 0,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Project name, slug or prefix "
                                                   "(default: the default project).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="If the project is busy, wait for its run to end.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Record what happened since the last commit: runs, new artifacts, style memory, scores, time spent."""
    from echo_pipeline.defs import launch

    outcome = launch.commit(settings(ctx), message, minutes, project, wait=wait, notify=warn)
    entry = outcome.entry
    if entry is None:
        if as_json:
            print_json({"project": outcome.project, "committed": False, "message": outcome.pending.nothing_message(),
                        "last_entry": outcome.pending.last.id if outcome.pending.last else None})
        else:
            say(safe_text(outcome.pending.nothing_message()))
        return
    if as_json:
        print_json(_entry_json(entry) | {"committed": True, "run_id": outcome.run_id})
        return
    artifacts = ", ".join(f"{n} {kind}" for kind, n in entry.new_artifacts.items() if n)
    say(f"[{entry.id}] {safe_text(entry.project)}: {safe_text(entry.message)} ({entry.minutes} min)")
    say(f"  {entry.artifact_count} new artifact(s)" + (f" ({artifacts})" if artifacts else "")
        + f", {len(entry.runs)} run(s)")
    if entry.style_memory_version is not None:
        say(f"  style memory v{entry.previous_style_memory_version or 0} -> v{entry.style_memory_version}")
    if entry.mean_score_after is not None:
        delta = entry.score_delta
        before = "-" if entry.mean_score_before is None else f"{entry.mean_score_before:.1f}"
        say(f"  mean score {before} -> {entry.mean_score_after:.1f}" + (f" ({delta:+.1f})" if delta is not None else ""))
    say(f"run: {outcome.run_id}")


def log(
    ctx: typer.Context,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Project name, slug or prefix "
                                                   "(default: the default project).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many entries, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """The project's work log, newest first."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from echo_pipeline.workflows.work_log import WorkLog

    eng = engine(ctx)
    slug = eng.resolve_project(project).slug
    entries = WorkLog(eng.store).entries(slug)[:limit]
    if as_json:
        print_json([_entry_json(e) for e in entries])
        return
    if not entries:
        say(f'{slug}: no work log entries yet; record one with: echo-os commit "<message>" --minutes N')
        return
    table = Table(title=f"{safe_text(slug)}: {len(entries)} work log entr{'y' if len(entries) == 1 else 'ies'}",
                  title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    numbers = {"min", "runs", "score Δ"}
    for name in ("entry", "when (UTC)", "message", "min", "artifacts", "runs", "score Δ"):
        # The message wraps (at least 16 columns wide); every other cell stays on one line.
        table.add_column(name, justify="right" if name in numbers else "left", no_wrap=name != "message",
                         min_width=16 if name == "message" else None,
                         overflow="fold" if name == "message" else "ellipsis")
    for e in entries:
        delta = e.score_delta
        cells = (e.id, f"{e.created.astimezone(timezone.utc):%Y-%m-%d %H:%M}", safe_text(e.message), str(e.minutes),
                 ", ".join(f"{n} {k}" for k, n in e.new_artifacts.items() if n) or "-", str(len(e.runs)),
                 "-" if delta is None else f"{delta:+.1f}")
        table.add_row(*(Text(c) for c in cells))  # Text, not markup: a message like "[bold]" prints as typed
    console.print(table, highlight=False)


def _entry_json(entry) -> dict:
    return entry.model_dump(mode="json") | {"artifact_count": entry.artifact_count, "score_delta": entry.score_delta,
                                            "run_seconds": entry.run_seconds}
