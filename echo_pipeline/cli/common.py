"""What every command shares: settings and the engine from global options, consoles, safe output.

Everything a user typed or a file holds is printed through `safe_text`/`safe_json`: control
characters (ESC sequences that clear the screen or retitle the terminal) are shown, never run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from echo_pipeline.textsafe import safe_json, safe_text

if TYPE_CHECKING:
    from echo_pipeline.settings import Settings
    from echo_pipeline.workflows.creative_engine import CreativeEngine

console = Console()
err_console = Console(stderr=True)


def engine(ctx: typer.Context) -> CreativeEngine:
    """The CreativeEngine configured by the global options (built once per invocation)."""
    from echo_pipeline.workflows.creative_engine import CreativeEngine

    root = ctx.find_root()
    if not isinstance(root.obj, CreativeEngine):
        root.obj = CreativeEngine(settings_from_options(root.obj or {}))
    return root.obj


def settings(ctx: typer.Context) -> Settings:
    return engine(ctx).settings


def settings_from_options(options: dict[str, Any]) -> Settings:
    from echo_pipeline.settings import Settings

    return Settings.load(options.get("artifact_root"), options.get("config_dir"), options.get("backend_options"))


def say(text: str = "", *, err: bool = False) -> None:
    """One line of plain output; never wrapped (paths and run ids stay whole), never markup."""
    (err_console if err else console).print(text, markup=False, highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    from rich.text import Text

    err_console.print(Text.assemble(("warning:", "yellow"), " ", safe_text(text)), highlight=False, soft_wrap=True)


def print_json(payload: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    typer.echo(safe_json(json.dumps(payload, indent=2, ensure_ascii=False, default=str)))


def fit(text: str, width: int) -> str:
    """`text` cut to `width` characters, with an ellipsis when cut."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def shorten(text: str, width: int = 60) -> str:
    """User text made safe for the terminal, then fitted to `width`."""
    return fit(safe_text(text), width)


def columns(rows: list[dict[str, str]], width: int, *, shrink: str, limits: dict[str, int] | None = None,
            right: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Plain aligned columns (a header line, then one line per row), at most `width` characters when
    possible: every column keeps its full width (ids are never cut or split) except the `limits`
    columns (cut at their limit) and `shrink`, which gets what is left (at least 8 characters)."""
    names = list(rows[0])
    widths = {n: max(len(n), *(len(r[n]) for r in rows)) for n in names}
    for name, limit in (limits or {}).items():
        if name in widths:
            widths[name] = min(widths[name], max(limit, len(name)))
    fixed = sum(w for n, w in widths.items() if n != shrink) + 2 * (len(names) - 1)
    if shrink in widths:
        widths[shrink] = max(8, min(widths[shrink], width - fixed))

    def line(cells: dict[str, str]) -> str:
        parts = []
        for n in names:
            text = fit(cells[n], widths[n])
            parts.append(text.rjust(widths[n]) if n in right else text.ljust(widths[n]))
        return "  ".join(parts).rstrip()

    return [line({n: n for n in names}), *(line(r) for r in rows)]


def display_path(path: str) -> str:
    """Local paths relative to the working directory when that is shorter (tables stay readable)."""
    import os

    if "://" in path:
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return relative if len(relative) < len(path) else path


@contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[Callable[[float, int, Any], None] | None]:
    """A progress bar on stderr for (done, total, record) callbacks; None when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(safe_text(label)), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: float, total: int, _record: Any = None) -> None:
            bar.update(task, completed=done, total=total)

        yield update
