"""The `echo-os` application: global options, command groups, and one-line errors.

Every failure a user can cause or fix ends as one `error: ...` line and exit code 2 (`--verbose`
adds the traceback); Ctrl-C and SIGTERM end with "interrupted; ..." and exit code 130; anything
else is a bug and exits 1 with its traceback.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
from typing import Annotated, Optional

import typer
from typer._click import exceptions as click_errors  # typer vendors click: its own exception classes

from echo_pipeline import __version__
from echo_pipeline.cli import artifacts, export, gallery, memory, models, pipeline, render, serve, style, worklog
from echo_pipeline.errors import EchoError, Interrupted, InvalidInputError

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
app.command("refine")(render.refine)
app.command("gallery")(gallery.gallery)
app.command("backfill")(pipeline.backfill)
app.command("runs")(pipeline.runs)
app.command("ui")(pipeline.ui)
app.command("memory")(memory.memory)
app.command("resonance")(pipeline.resonance)
app.command("models")(models.models)
app.command("compare")(models.compare)
app.command("serve")(serve.serve)
app.command("commit")(worklog.commit)
app.command("log")(worklog.log)
app.add_typer(style.app, name="style")
app.add_typer(artifacts.app, name="artifacts")
app.add_typer(export.app, name="export")

INTERRUPTED = "interrupted; stored images are kept and the next run resumes"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"echo-os {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    # No typer envvar=: Settings.load reads ECHO_* itself, so it can tell a flag from the environment.
    artifact_root: Annotated[Optional[str], typer.Option(
        "--artifact-root", help="Artifact store: a path or fsspec URL (default: $ECHO_ARTIFACT_ROOT, "
        "else ./artifacts).")] = None,
    config_dir: Annotated[Optional[str], typer.Option(
        "--config-dir", help="Folder with styles/, wildcards/, projects/ (default: $ECHO_CONFIG_DIR, "
        "else ./configs, else the checkout's configs/).")] = None,
    comfyui_url: Annotated[Optional[str], typer.Option(
        "--comfyui-url", help="ComfyUI server for --backend comfyui (default: $ECHO_COMFYUI_URL, else "
        "settings.yaml, else http://127.0.0.1:8188).")] = None,
    comfyui_workflow: Annotated[Optional[str], typer.Option(
        "--comfyui-workflow", help="Your own ComfyUI workflow (API format: 'Save (API Format)' in ComfyUI) instead "
        "of configs/comfyui/ templates.")] = None,
    comfyui_node: Annotated[Optional[list[str]], typer.Option(
        "--comfyui-node", help="ROLE=NODE_ID for a workflow without {{placeholders}}: which node takes the "
        "prompt, negative, seed, image or gives the output (repeat, e.g. --comfyui-node prompt=6).")] = None,
    device: Annotated[Optional[str], typer.Option(
        "--device", help="Device for the diffusers backend: cuda, cuda:1, mps or cpu (default: best available).")] = None,
    dtype: Annotated[Optional[str], typer.Option(
        "--dtype", help="Weights dtype for the diffusers backend: float16, bfloat16, float32 "
        "(default: float16 on cuda, else float32).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show tracebacks of errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    nodes = {}
    for item in comfyui_node or []:
        role, sep, node = item.partition("=")
        if not sep or not role.strip() or not node.strip():
            raise InvalidInputError(f"--comfyui-node {item!r} is not ROLE=NODE_ID (e.g. prompt=6)")
        nodes[role.strip().lower()] = node.strip()
    ctx.obj = {"artifact_root": artifact_root, "config_dir": config_dir,
               "backend_options": {"comfyui_url": comfyui_url, "comfyui_workflow": comfyui_workflow,
                                   "comfyui_nodes": nodes or None, "device": device, "dtype": dtype}}


def _error(message: str, code: int) -> None:
    from rich.text import Text

    from echo_pipeline.cli.common import err_console
    from echo_pipeline.textsafe import safe_text

    # Text, not markup: a name like "[bold]" in the message is printed as it is.
    err_console.print(Text.assemble(("error:", "bold red"), " ", safe_text(" ".join(message.split()))),
                      highlight=False, soft_wrap=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in args
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends a command like Ctrl-C
    logging.getLogger("asyncio").addFilter(_quiet_dropped_connections)
    try:
        rc = app(args=args, prog_name="echo-os", standalone_mode=False)
        _seeded_home_notice()
        if rc == 130:  # Typer returns Ctrl-C (and SIGTERM, see defs/launch.py) as exit code 130
            _interrupted()
        if isinstance(rc, int) and rc:  # without standalone mode, click returns typer.Exit(n)'s code
            sys.exit(rc)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except click_errors.NoArgsIsHelpError as exc:
        typer.echo(exc.format_message())
        sys.exit(exc.exit_code)
    except click_errors.ClickException as exc:  # Typer's own parse errors: one line, not a box
        command = getattr(getattr(exc, "ctx", None), "command_path", "echo-os")
        _error(f"{exc.format_message()} (see {command} --help)", 2)
    except (typer.Abort, KeyboardInterrupt, Interrupted):
        _interrupted()
    except EchoError as exc:
        if verbose:
            details = getattr(exc, "details", "")  # a failed run's step traceback
            if details:
                sys.stderr.write(details + "\n")
            raise
        _error(str(exc), getattr(exc, "exit_code", 2))
    except OSError as exc:
        unreachable = None if verbose else _store_unreachable(exc)
        if unreachable is not None:
            _error(str(unreachable), 2)
        if verbose or exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            raise
        _error(f"{exc.strerror}: {exc.filename or ''}".rstrip(": "), 2)
    except Exception as exc:  # an S3 endpoint down while a command reads: one line, not a traceback
        unreachable = None if verbose else _store_unreachable(exc)
        if unreachable is None:
            raise
        _error(str(unreachable), 2)


def _quiet_dropped_connections(record: logging.LogRecord) -> bool:
    """Drop asyncio's "Task exception was never retrieved" tracebacks of s3fs's HTTP client when an
    S3 endpoint cut its connections: the command already says in one line that the store is down."""
    exc = record.exc_info[1] if record.exc_info else None
    return exc is None or _store_unreachable(exc) is None


def _store_unreachable(exc: BaseException) -> Exception | None:
    from echo_pipeline.artifacts.storage import store_unreachable

    return store_unreachable(exc)


def _seeded_home_notice() -> None:
    """A DAGSTER_HOME that had no dagster.yaml got ours (pools and run limits on): say so."""
    instance_module = sys.modules.get("echo_pipeline.defs.instance")
    home = getattr(instance_module, "seeded_home", None)
    if home is not None and home.name != ".dagster_home":
        from echo_pipeline.cli.common import warn

        warn(f"DAGSTER_HOME {home} had no dagster.yaml: seeded it with echo-os defaults "
             "(run queue, one run per project, gpu pool)")


def _interrupted() -> None:
    from echo_pipeline.cli.common import err_console

    err_console.print(INTERRUPTED, highlight=False)
    sys.exit(130)


if __name__ == "__main__":
    main()
