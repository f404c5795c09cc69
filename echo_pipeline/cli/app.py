"""The `echo-os` application: global options, command groups, and one-line errors (exit code 2)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from echo_pipeline import __version__
from echo_pipeline.cli import artifacts, gallery, pipeline, render, style
from echo_pipeline.errors import EchoError

app = typer.Typer(
    name="echo-os",
    help="ECHO.OS v2: Intent -> Plan -> Task -> Visual -> Reflect. Offline by default (procedural backend).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("plan")(pipeline.plan)
app.command("batch")(pipeline.batch)
app.command("render")(render.render)
app.command("gallery")(gallery.gallery)
app.command("backfill")(pipeline.backfill)
app.command("runs")(pipeline.runs)
app.command("ui")(pipeline.ui)
app.add_typer(style.app, name="style")
app.add_typer(artifacts.app, name="artifacts")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"echo-os {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    artifact_root: Annotated[Optional[str], typer.Option(
        "--artifact-root", envvar="ECHO_ARTIFACT_ROOT",
        help="Artifact store: a path or fsspec URL (default ./artifacts).")] = None,
    config_dir: Annotated[Optional[str], typer.Option(
        "--config-dir", envvar="ECHO_CONFIG_DIR", help="Folder with styles/, wildcards/, projects/.")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    ctx.obj = {"artifact_root": artifact_root, "config_dir": config_dir}


def main() -> None:
    from echo_pipeline.cli.common import err_console

    try:
        app()
    except EchoError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        err_console.print("interrupted; stored images are kept and the next run resumes")
        sys.exit(130)


if __name__ == "__main__":
    main()
