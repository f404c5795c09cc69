"""What every command shares: the engine from global options, consoles, JSON output."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def engine(ctx: typer.Context):
    """The CreativeEngine configured by the global options (built once per invocation)."""
    from echo_pipeline.settings import Settings
    from echo_pipeline.workflows.creative_engine import CreativeEngine

    root = ctx.find_root()
    if not isinstance(root.obj, CreativeEngine):
        options = root.obj or {}
        root.obj = CreativeEngine(Settings.load(options.get("artifact_root"), options.get("config_dir")))
    return root.obj


def print_json(payload: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


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
