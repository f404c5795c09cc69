"""The REST API (`echo-os serve`): a thin client of the same services and entry points as the CLI.

`create_app(settings)` builds the FastAPI app (OpenAPI at /docs and /openapi.json). Reads are public;
every POST needs `Authorization: Bearer <token>` (`ECHO_API_TOKEN` or settings' `api_token`); without
a configured token, writes are taken from loopback clients only (and `serve` refuses to bind
anything but loopback). Work that renders is validated at once, then queued (`api/runs.py`) and
answered 202 with the Dagster run id; `GET /api/runs/{id}` follows it.

Errors are one JSON shape, `{"error": {"code", "message", "field"?}}`:
`InvalidInputError` and request validation 422, `NotFoundError` and unknown routes 404,
`ProjectBusyError` and a built-in style 409, a full queue 429 (Retry-After), an oversize body 413,
a missing or wrong token 401 (WWW-Authenticate: Bearer), `StorageError` and
`BackendUnavailableError` 503 (the server's store or backend cannot serve now; nothing the request
could change), anything else 500 without internals.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from echo_pipeline import __version__
from echo_pipeline.api.catalog import ArtifactQuery, CatalogIndex, artifact_links
from echo_pipeline.api.models import (
    ARTIFACT_ID_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_BODY_BYTES,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MIN_ID_CHARS,
    RUN_ID_PATTERN,
    ArtifactPage,
    BatchBody,
    ErrorBody,
    GalleryPage,
    Health,
    RefineBody,
    RenderBody,
    RunAccepted,
    RunStatus,
    StyleBody,
    StyleOut,
    Text,
)
from echo_pipeline.api.runs import DEFAULT_LIMIT, DEFAULT_WORKERS, QueuedRun, QueueFullError, RequestKey, RunQueue
from echo_pipeline.errors import (
    BackendUnavailableError,
    EchoError,
    InvalidInputError,
    NotFoundError,
    ProjectBusyError,
    StorageError,
)
from echo_pipeline.naming import MAX_PROJECT_NAME
from echo_pipeline.render.prompt_engine import MAX_COUNT
from echo_pipeline.render.requests import MAX_SIDE
from echo_pipeline.settings import Settings

log = logging.getLogger(__name__)

SLUG_CACHE_S = 5.0
READ_THREADS = 2
LOOPBACK_CLIENTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_OFFSET = 10_000_000


class ApiError(EchoError):
    """An error that is the API's own (auth, conflicts): its HTTP status and code travel with it."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


@dataclass(frozen=True)
class ApiLimits:
    """What one request may ask for (the product's limits by default; a public server may lower them)."""

    max_images: int = MAX_COUNT
    max_side: int = MAX_SIDE

    def check(self, images: int, sides: tuple[int, int]) -> None:
        if images > self.max_images:
            raise InvalidInputError(f"{images} images; this server renders at most {self.max_images} per request")
        if max(sides) > self.max_side:
            raise InvalidInputError(f"size {sides[0]}x{sides[1]}; this server renders sides up to {self.max_side}")


def configured_token(settings: Settings) -> str | None:
    """The bearer token writes need (ECHO_API_TOKEN or settings' api_token), or None."""
    value = settings.api_token.get_secret_value().strip() if settings.api_token is not None else ""
    return value or None


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- the app ------------------------------------------------------------------------------------------
class _Api:
    """What the routes share: settings, the run queue, the store and its cached catalog."""

    def __init__(self, settings: Settings, token: str | None, limits: ApiLimits, queue: RunQueue):
        from echo_pipeline.artifacts.storage import ArtifactStore

        self.settings, self.token, self.limits, self.queue = settings, token, limits, queue
        self.store = ArtifactStore(settings.artifact_root)  # reads only: no write probe, nothing created
        self.catalog = CatalogIndex(self.store)
        self.style_lock = threading.Lock()  # user.json is rewritten whole: one writer at a time
        self._slugs: dict[str, tuple[float, str]] = {}  # project name -> (when resolved, slug)
        self._read_limiter: Any = None

    def engine(self):
        from echo_pipeline.workflows.creative_engine import CreativeEngine

        return CreativeEngine(self.settings)

    @property
    def read_limiter(self) -> Any:
        """The threads listing queries run in (made on first use, inside the server's event loop)."""
        if self._read_limiter is None:
            import anyio

            self._read_limiter = anyio.CapacityLimiter(READ_THREADS)
        return self._read_limiter

    def project_slug(self, text: str | None) -> str | None:
        """The stored or specified project `text` names (like the CLI resolves it); None: every project.

        Resolving reads every project spec (~5 ms), so a name's slug is kept for a few seconds:
        enough for a client paging through a listing, short enough that a new project is seen."""
        if text is None:
            return None
        now = time.monotonic()
        cached = self._slugs.get(text)
        if cached is not None and now - cached[0] < SLUG_CACHE_S:
            return cached[1]
        slug = self.engine().projects.resolve_ref(text, stored=self.store.projects).slug
        if len(self._slugs) > 1024:
            self._slugs.clear()
        self._slugs[text] = (now, slug)
        return slug

    def accept(self, kind: str, project: str, work: Callable[[str, QueuedRun], dict[str, Any]],
               request: RequestKey | None) -> JSONResponse:
        run_id, replayed = self.queue.submit(kind, project, work, request=request)
        return self.accepted(run_id, replayed=replayed)

    def accepted(self, run_id: str, *, replayed: bool) -> JSONResponse:
        status = self.queue.status(run_id) or {}
        body = {"run_id": run_id, "status": status.get("status", "QUEUED"), "links": {"self": f"/api/runs/{run_id}"}}
        headers = {"Location": f"/api/runs/{run_id}"} | ({"Idempotent-Replayed": "true"} if replayed else {})
        return JSONResponse(body, status_code=202, headers=headers)


def create_app(settings: Settings, *, token: str | None = None, limits: ApiLimits | None = None,
               workers: int = DEFAULT_WORKERS, queue_limit: int = DEFAULT_LIMIT) -> FastAPI:
    """The API over `settings`; `token` (default: `configured_token(settings)`) guards the writes."""
    api = _Api(settings, token or configured_token(settings), limits or ApiLimits(),
               RunQueue(workers=workers, limit=queue_limit))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        import anyio.to_thread

        # Queued runs are dropped; running ones finish (their images are stored either way).
        await anyio.to_thread.run_sync(api.queue.close)

    app = FastAPI(title="ECHO.OS API", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Intent -> Plan -> Task -> Visual -> Reflect over HTTP. Reads are public; POSTs need "
                              "`Authorization: Bearer <token>`. Long work answers 202 with a Dagster run id.")
    app.state.api = api
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    _add_error_handlers(app)
    _add_docs(app)
    _add_routes(app, api)
    return app


def _add_docs(app: FastAPI) -> None:
    """/docs with Swagger UI served from the installed swagger-ui-bundle, not FastAPI's default CDN:
    the docs work on a machine with no internet, like everything else here."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} docs",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


# -- errors -------------------------------------------------------------------------------------------
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "invalid_input", 429: "too_many_requests"}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    detail: dict[str, Any] = {"code": code, "message": " ".join(message.split())}
    if field is not None:
        detail["field"] = field
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


def _echo_status(exc: EchoError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, QueueFullError):
        return 429
    if isinstance(exc, ProjectBusyError):
        return 409
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, (StorageError, BackendUnavailableError)):
        return 503
    return 422


def _add_error_handlers(app: FastAPI) -> None:
    from echo_pipeline.api.runs import error_code

    @app.exception_handler(EchoError)
    async def echo_error(_request: Request, exc: EchoError) -> JSONResponse:
        status = _echo_status(exc)
        headers = dict(getattr(exc, "headers", {}))
        if isinstance(exc, QueueFullError):
            headers["Retry-After"] = str(exc.retry_after)
        code = exc.code if isinstance(exc, ApiError) else error_code(exc)
        return error_response(status, code, str(exc), getattr(exc, "field", None), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        loc = [str(p) for p in first.get("loc", ())]
        field = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            message = "the body is not valid JSON"
        elif first.get("type") == "extra_forbidden":
            message = f"{field}: unknown field (see /docs for the fields this endpoint takes)"
        else:
            message = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid request"))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return error_response(422, "validation_error", message + more, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no endpoint {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), message,
                              headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        from echo_pipeline.artifacts.storage import store_unreachable

        unreachable = store_unreachable(exc)  # the S3 endpoint down: the store's fault, not ours
        if unreachable is not None:
            return error_response(503, "storage_error", str(unreachable))
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal error; the server's log has the details")


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413, declared (Content-Length) or streamed (chunked).

    The body is read here (it is small by then) and handed on as it came."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = error_response(413, "payload_too_large", f"the request body is over {self.max_bytes} bytes")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await error_response(400, "bad_request", "Content-Length is not a number")(scope, receive, send)
                return
            if declared > self.max_bytes:
                await too_large(scope, receive, send)
                return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


# -- routes -------------------------------------------------------------------------------------------
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (404, 422, 503)}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = ERRORS | {
    status: {"model": ErrorBody} for status in (401, 409, 413, 429)}

bearer = HTTPBearer(auto_error=False, description="The server's API token (ECHO_API_TOKEN)")
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_PATTERN,
                                              description="Retrying with the same key returns the first run.")]
MEDIA_FILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MEDIA_FILE_TYPES = {"png": "image/png", "mp4": "video/mp4", "gif": "image/gif", "glb": "model/gltf-binary",
                    "obj": "text/plain", "mtl": "text/plain", "html": "text/html; charset=utf-8"}
ArtifactId = Annotated[str, Path(min_length=MIN_ID_CHARS, max_length=MAX_ID_CHARS, pattern=ARTIFACT_ID_PATTERN,
                                 description="Artifact id or a unique prefix (4+ characters).")]


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ProjectQuery(_Query):
    project: Text | None = Field(default=None, max_length=MAX_PROJECT_NAME, description="Project name, slug or prefix.")


class ArtifactListQuery(ProjectQuery):
    style: Text | None = Field(default=None, max_length=MAX_NAME_CHARS)
    backend: Text | None = Field(default=None, max_length=MAX_NAME_CHARS)
    parent: Text | None = Field(default=None, max_length=MAX_ID_CHARS, description="Children of this artifact id.")
    min_score: float | None = Field(default=None, ge=0, le=100)
    max_score: float | None = Field(default=None, ge=0, le=100)
    since: datetime | None = Field(default=None, description="Created at or after (ISO date or time; UTC if naive).")
    until: datetime | None = Field(default=None, description="Created at or before.")
    q: Text | None = Field(default=None, max_length=200, description="Text in the prompt (case-insensitive).")
    sort: Literal["created", "score"] = "created"
    order: Literal["asc", "desc"] = "desc"
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class GalleryQuery(ProjectQuery):
    filter: Text = Field(default="all", max_length=120, description="all, best, recent, accepted, top:N or style:S.")
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


def _add_routes(app: FastAPI, api: _Api) -> None:
    from echo_pipeline.defs import launch

    def writer(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        """Writes need the token; with none configured, they come from loopback only."""
        if api.token is None:
            client = request.client.host if request.client else ""
            if client not in LOOPBACK_CLIENTS and not is_loopback(client):
                raise ApiError(401, "unauthorized", "this server has no API token: writes are accepted from "
                               "loopback only", headers={"WWW-Authenticate": "Bearer"})
            return
        if credentials is None:
            raise ApiError(401, "unauthorized", "writes need 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(credentials.credentials.encode("utf-8"), api.token.encode("utf-8")):
            raise ApiError(401, "unauthorized", "the bearer token is not this server's",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    Writer = Depends(writer)

    def request_key(request: Request, key: str | None, body: BaseModel) -> RequestKey | None:
        return None if key is None else RequestKey.of(key, request.method, request.url.path, body.model_dump_json())

    def replayed(key: RequestKey | None) -> JSONResponse | None:
        """The first run's answer for a retried request (checked before the request is validated
        again: a retry must not fail because the state moved on, e.g. its own run made the project busy)."""
        run_id = api.queue.replay(key) if key is not None else None
        return api.accepted(run_id, replayed=True) if run_id is not None else None

    @app.get("/api/health", response_model=Health, tags=["server"])
    def health() -> dict[str, Any]:
        """Liveness and the queue's load."""
        queued, running = api.queue.counts()
        return {"status": "ok", "version": __version__, "writes": "token" if api.token else "loopback",
                "queued": queued, "running": running, "queue_limit": api.queue.limit}

    @app.post("/api/render", status_code=202, response_model=RunAccepted, responses=WRITE_ERRORS, tags=["work"],
              dependencies=[Writer])
    def render(body: RenderBody, request: Request, idempotency_key: IdempotencyKey = None) -> Response:
        """Render a prompt into a project (`echo-os render`): validated now, rendered by a queued run."""
        key = request_key(request, idempotency_key, body)
        if (first := replayed(key)) is not None:
            return first
        if body.strength is not None and body.init is None:
            raise InvalidInputError("strength needs init (the artifact to start from)")
        parent = api.engine().store.find(body.init) if body.init is not None else None
        spec, backend, model = launch.prompt_spec(
            api.settings, body.prompt, project=body.project, parent=parent, size=body.size, backend=body.backend,
            model=body.model, steps=body.steps, cfg_scale=body.cfg_scale, sampler=body.sampler, strength=body.strength,
            style=body.style, count=body.count, seed=body.seed, negative_prompt=body.negative_prompt,
            media_type=body.media_type, tiling=body.tiling or body.media_type == "texture", media=body.media_options)
        checked = launch.check_render(api.settings, spec, backend=backend, model=model)
        api.limits.check(len(checked.requests), (spec.width, spec.height))

        def work(run_id: str, run: QueuedRun) -> dict[str, Any]:
            return _render_result(launch.render(api.settings, spec, backend=backend, model=model, run_id=run_id,
                                                progress=run.report_progress, notify=run.notify))

        return api.accept("render", checked.project, work, key)

    @app.post("/api/batch", status_code=202, response_model=RunAccepted, responses=WRITE_ERRORS, tags=["work"],
              dependencies=[Writer])
    def batch(body: BatchBody, request: Request, idempotency_key: IdempotencyKey = None) -> Response:
        """The project's next batch, scored and learned from (`echo-os batch`), as a queued run."""
        key = request_key(request, idempotency_key, body)
        if (first := replayed(key)) is not None:
            return first
        checked = launch.check_batch(api.settings, body.project, count=body.count, style=body.style)
        spec = checked.spec
        api.limits.check(checked.count or spec.count, (spec.width, spec.height))

        def work(run_id: str, run: QueuedRun) -> dict[str, Any]:
            # wait=True: a run of the project started elsewhere (the CLI, the daemon) is waited for.
            outcome = launch.batch(api.settings, spec.slug, count=checked.count, style=checked.style, wait=True,
                                   run_id=run_id, progress=run.report_progress, notify=run.notify)
            return _batch_result(outcome)

        return api.accept("batch", spec.slug, work, key)

    @app.post("/api/refine", status_code=202, response_model=RunAccepted, responses=WRITE_ERRORS, tags=["work"],
              dependencies=[Writer])
    def refine(body: RefineBody, request: Request, idempotency_key: IdempotencyKey = None) -> Response:
        """img2img of a stored image (`echo-os refine`); the child names it as its parent."""
        key = request_key(request, idempotency_key, body)
        if (first := replayed(key)) is not None:
            return first
        spec, backend, model = launch.refine_spec(api.settings, body.artifact, body.prompt, strength=body.strength,
                                                  seed=body.seed, backend=body.backend, model=body.model)
        checked = launch.check_render(api.settings, spec, backend=backend, model=model)
        api.limits.check(len(checked.requests), (spec.width, spec.height))

        def work(run_id: str, run: QueuedRun) -> dict[str, Any]:
            return _render_result(launch.refine(api.settings, body.artifact, body.prompt, strength=body.strength,
                                                seed=body.seed, backend=body.backend, model=body.model, run_id=run_id,
                                                progress=run.report_progress, notify=run.notify))

        return api.accept("refine", checked.project, work, key)

    @app.get("/api/runs/{run_id}", response_model=RunStatus, responses=ERRORS, tags=["work"])
    def run_status(run_id: Annotated[str, Path(pattern=RUN_ID_PATTERN, description="A Dagster run id.")]) -> dict:
        """A run's status: QUEUED until Dagster has it, then Dagster's; the result or error when done."""
        status = api.queue.status(run_id)
        if status is None:
            raise NotFoundError(f"no run {run_id} on this server's Dagster instance")
        return status

    @app.post("/api/style", response_model=StyleOut, status_code=201, responses=WRITE_ERRORS, tags=["styles"],
              dependencies=[Writer])
    def style(body: StyleBody, response: Response) -> dict[str, Any]:
        """Create (201) or replace (200) one of your own styles; built-in styles cannot be changed (409)."""
        with api.style_lock:
            library = api.engine().styles
            try:
                existing = library.get(body.name)
            except (NotFoundError, InvalidInputError):  # unknown, or a stored one breaking the limits
                existing = None
            if existing is not None and existing.source == "builtin":
                raise ApiError(409, "builtin_style", f"style {existing.name!r} is built in; choose another name")
            created = library.create(body.name, body.prompt, body.negative_prompt, replace=True)
        if existing is not None:
            response.status_code = 200
        return created.model_dump()

    @app.get("/api/artifacts", response_model=ArtifactPage, responses=ERRORS, tags=["artifacts"])
    async def artifacts(request: Request, query: Annotated[ArtifactListQuery, Query()]) -> Response:
        """Stored artifacts, filtered and paged (newest first by default), with their total score."""
        import anyio.to_thread

        def select() -> tuple[list[bytes], int]:
            slug = api.project_slug(query.project)
            return api.catalog.query_json(ArtifactQuery(**(query.model_dump() | {"project": slug})))

        # A few threads, not the 40 of the default pool: a query is CPU work of about a millisecond,
        # and 20 clients' queries in 20 threads fighting over the GIL made the slowest wait 8x longer.
        items, total = await anyio.to_thread.run_sync(select, limiter=api.read_limiter)
        # The rows are JSON already (encoded once per catalog change): the page is put together as bytes.
        rest = json.dumps({"total": total, "limit": query.limit, "offset": query.offset,
                           "next": _next_page(request, query.offset, query.limit, total)}, ensure_ascii=False)
        return Response(b'{"items":[' + b",".join(items) + b"]," + rest[1:].encode(), media_type="application/json")

    @app.get("/api/artifacts/{artifact_id}", responses=ERRORS, tags=["artifacts"])
    def artifact(artifact_id: ArtifactId, query: Annotated[ProjectQuery, Query()]) -> dict[str, Any]:
        """One artifact's lineage record (what made it, its parent, run and sha256) and its score."""
        record = _find(api, artifact_id, query.project)
        return record.model_dump(mode="json") | {
            "score": api.catalog.score(record.project, record.artifact_id),
            "links": artifact_links(record.project, record.artifact_id) | {
                f"file:{name}": f"/api/artifacts/{quote(record.artifact_id)}/files/{quote(name)}"
                                f"?project={quote(record.project)}"
                for name in sorted(record.info.get("media_files") or {})}}

    @app.get("/api/artifacts/{artifact_id}/image", responses=ERRORS | {200: {"content": {"image/png": {}}}},
             response_class=Response, tags=["artifacts"])
    def artifact_image(artifact_id: ArtifactId, query: Annotated[ProjectQuery, Query()],
                       if_none_match: Annotated[str | None, Header(max_length=200)] = None) -> Response:
        """The stored PNG (generation parameters embedded), ETag = its catalogued sha256."""
        from echo_pipeline.artifacts.metadata import sha256_hex

        record = _find(api, artifact_id, query.project)
        etag = f'"{record.sha256}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if record.sha256 and if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
            return Response(status_code=304, headers=headers)
        data = api.store.read_bytes(record.project, record.artifact_id)
        if record.sha256 and sha256_hex(data) != record.sha256:
            raise StorageError(f"the stored image of {record.project}/{record.artifact_id} is not the catalogued "
                               "one (its sha256 differs); `echo-os artifacts verify` says more")
        headers["Content-Disposition"] = f'inline; filename="{record.artifact_id}.png"'
        return Response(data, media_type="image/png", headers=headers)

    @app.get("/api/artifacts/{artifact_id}/files/{name}", responses=ERRORS | {200: {"content": {"*/*": {}}}},
             response_class=Response, tags=["artifacts"])
    def artifact_file(artifact_id: ArtifactId,
                      name: Annotated[str, Path(max_length=64, pattern=MEDIA_FILE_PATTERN,
                                                description="A file the record names: model.glb, video.mp4, "
                                                            "normal.png, index.html ...")],
                      query: Annotated[ProjectQuery, Query()]) -> Response:
        """A media artifact's file (texture maps, MP4/GIF, GLB/OBJ/MTL, the live HTML page), checked
        against the sha256 its record holds; ETag = that hash."""
        from echo_pipeline.artifacts.metadata import sha256_hex

        record = _find(api, artifact_id, query.project)
        files = record.info.get("media_files") or {}
        if name not in files:
            raise NotFoundError(f"{record.artifact_id} has no file {name!r}"
                                + (f" (it has: {', '.join(sorted(files))})" if files else " (it is a plain image)"))
        data = api.store.read_media_file(record.project, record.artifact_id, name)
        if sha256_hex(data) != files[name].get("sha256"):
            raise StorageError(f"the stored {name} of {record.project}/{record.artifact_id} is not the one its "
                               "record names (its sha256 differs)")
        kind = MEDIA_FILE_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")
        return Response(data, media_type=kind, headers={"ETag": f'"{files[name]["sha256"]}"',
                                                        "Content-Disposition": f'inline; filename="{name}"'})


    @app.get("/api/gallery", response_model=GalleryPage, responses=ERRORS, tags=["artifacts"])
    def gallery(request: Request, query: Annotated[GalleryQuery, Query()]) -> dict[str, Any]:
        """What a gallery page shows (`echo-os gallery --filter`), as data: each image's parameters,
        scores, lineage and links; one project or every stored one."""
        from echo_pipeline.artifacts.gallery import parse_filter
        from echo_pipeline.workflows.galleries import gallery_listing

        flt = parse_filter(query.filter)  # bad input first, before anything is read
        if query.project is not None:
            ref = api.engine().projects.resolve_ref(query.project, stored=api.store.projects)
            projects = [(ref.slug, ref.name)]
        else:
            names = {spec.slug: spec.name for spec in api.engine().projects.scan()[0]}
            projects = [(slug, names.get(slug, slug)) for slug in api.store.projects()]
        entries = gallery_listing(api.store, projects, filter=flt)
        items = [e | {"links": artifact_links(e["project"], e["id"])}
                 for e in entries[query.offset: query.offset + query.limit]]
        return {"filter": flt.key, "items": items, "total": len(entries), "limit": query.limit,
                "offset": query.offset, "next": _next_page(request, query.offset, query.limit, len(entries))}


def _next_page(request: Request, offset: int, limit: int, total: int) -> str | None:
    """The next page's path and query (None on the last page)."""
    if offset + limit >= total:
        return None
    url = str(request.url.include_query_params(offset=offset + limit))
    return url[url.index("/api/"):]


def _find(api: _Api, artifact_id: str, project: str | None):
    if ".." in artifact_id:
        raise InvalidInputError(f"invalid artifact id {artifact_id!r}")
    return api.store.find(artifact_id, api.project_slug(project))


def _render_result(outcome: Any) -> dict[str, Any]:
    result = outcome.result
    return {"project": outcome.project, "backend": outcome.backend,
            "new": [r.artifact_id for r in result.new], "already_stored": [r.artifact_id for r in result.existing],
            "recovered": result.recovered, "seconds": round(result.seconds, 3)}


def _batch_result(outcome: Any) -> dict[str, Any]:
    result, scores = outcome.result, outcome.scores
    return {"project": outcome.spec.slug, "batch": outcome.batch,
            "new": [r.artifact_id for r in result.new], "already_stored": [r.artifact_id for r in result.existing],
            "recovered": result.recovered, "seconds": round(outcome.run_seconds, 3),
            "scores": None if scores is None else {
                "mean_total": scores.mean_total, "mean_style_consistency": scores.mean_style_consistency,
                "consistent_pct": scores.consistent_pct, "batch_consistency": scores.batch_consistency},
            "style_memory_images": outcome.style_memory_images, "file_problems": outcome.file_problems}
