"""`echo-os serve`: the REST API (FastAPI on uvicorn) over the same settings as every command."""

from __future__ import annotations

from typing import Annotated

import typer

from echo_pipeline.cli.common import say, settings
from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.prompt_engine import MAX_COUNT
from echo_pipeline.render.requests import MAX_SIDE, MIN_SIDE


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Bind address. Anything but loopback needs an API token "
                                      "(ECHO_API_TOKEN or settings.yaml api_token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one; the URL is printed).")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Runs executed at once (of different projects; "
                                         "the gpu pool still lets one render at a time).")] = 2,
    queue: Annotated[int, typer.Option("--queue", min=1, max=1000, help="Runs queued or running at most; more "
                                       "are answered 429.")] = 16,
    max_images: Annotated[int, typer.Option(min=1, max=MAX_COUNT, help="Images one request may ask for.")] = MAX_COUNT,
    max_side: Annotated[int, typer.Option(min=MIN_SIDE, max=MAX_SIDE, help="Longest image side a request may ask "
                                          "for.")] = MAX_SIDE,
) -> None:
    """Serve the REST API (OpenAPI docs at /docs). Reads are public; writes need the bearer token."""
    import socket

    import uvicorn

    from echo_pipeline.api.app import ApiLimits, configured_token, create_app, is_loopback

    config = settings(ctx)
    token = configured_token(config)
    if token is None and not is_loopback(host):
        raise InvalidInputError(f"refusing to serve on {host} without an API token: set ECHO_API_TOKEN (or api_token "
                                "in settings.yaml), or serve on 127.0.0.1")
    # Bound here, not by uvicorn: a port in use is one line (exit 2), and port 0 tells its number.
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        # Listening before "serving" is printed: a client that connects while the app still starts
        # waits in the backlog instead of being refused (uvicorn accepts from this socket later).
        listener.listen(2048)
    except OSError as exc:
        raise InvalidInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    app = create_app(config, token=token, limits=ApiLimits(max_images=max_images, max_side=max_side),
                     workers=workers, queue_limit=queue)
    bound = listener.getsockname()
    shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
    say(f"serving http://{shown}:{bound[1]}  (API docs: /docs)")
    say(f"artifacts: {config.artifact_root}")
    say("writes: need the bearer token" if token else "writes: from loopback only (no API token configured)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    try:
        server.run(sockets=[listener])  # Ctrl-C / SIGTERM: graceful stop (queued runs dropped, running ones finish)
    except KeyboardInterrupt:  # uvicorn raises the signal it stopped for again once it has stopped
        pass
    finally:
        listener.close()
    say("stopped")
