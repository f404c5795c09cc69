"""A local fake of the OpenAI Images API for the backend tests (127.0.0.1 only, no network).

`running_openai_server(**behaviour)` starts FastAPI + uvicorn in a background thread on a free port
and yields `(base_url, state)`; `base_url` ends in `/v1` like the real one (what the `openai` client
takes as `base_url`). It implements, with the real request and response shapes:

- `POST /v1/images/generations` (JSON): bearer key, model, size, n, quality and response_format are
  validated per model as the real API does (gpt-image-1 rejects `response_format`); the answer is
  `{"created": ts, "data": [{"b64_json" | "url", "revised_prompt"}]}`, `revised_prompt` only for
  dall-e-3.
- `POST /v1/images/edits` (multipart): gpt-image-1 and dall-e-2; the answer is derived from the
  uploaded image (inverted), so a test can tell the parent was used.
- `GET /files/{name}`: images handed out as URLs (`return_url=True`).

Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}` with 400/401/429/500.
Behaviour switches (also settable on `state` while running): `api_key`, `fail_first` (that many
calls answer `fail_status`, 500 or 429), `content_policy` (every call is a safety rejection),
`return_url`, `retry_after_ms` (sent with 429/5xx so the client's backoff stays short in tests).
Every call is recorded in `state.requests` (path, auth header, JSON body or form fields) before it
is judged, so a test can assert that nothing was sent.
"""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# Module level: FastAPI resolves the handlers' (string) annotations in this module's globals.
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

SIZES = {
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image-1": ("1024x1024", "1536x1024", "1024x1536"),
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
}
QUALITIES = {"dall-e-3": ("standard", "hd"), "gpt-image-1": ("low", "medium", "high", "auto"), "dall-e-2": ("standard",)}
EDIT_MODELS = ("dall-e-2", "gpt-image-1")
CONTENT_POLICY_MESSAGE = ("Your request was rejected as a result of our safety system. Your prompt may contain text "
                          "that is not allowed by our safety system.")


@dataclass
class ServerState:
    api_key: str = "sk-test-fake"
    fail_first: int = 0
    fail_status: int = 500
    content_policy: bool = False
    return_url: bool = False
    retry_after_ms: int | None = 5
    created: int = 1_700_000_000
    requests: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    failures_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def bodies(self, path: str = "/v1/images/generations") -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"] == path]


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def _picture(width: int, height: int, seed_text: str) -> Any:
    """A deterministic picture from the prompt: two colours from its hash in a diagonal gradient."""
    from PIL import Image

    digest = hashlib.sha256(seed_text.encode()).digest()
    a, b = digest[:3], digest[3:6]
    gradient = Image.linear_gradient("L").resize((width, height))
    return Image.composite(Image.new("RGB", (width, height), tuple(a)), Image.new("RGB", (width, height), tuple(b)),
                           gradient)


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_app(state: ServerState) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {}
        if exc.status in (429, 500) and state.retry_after_ms is not None:
            headers["retry-after-ms"] = str(state.retry_after_ms)
        return JSONResponse(status_code=exc.status, headers=headers, content={
            "error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}})

    def judge(request: Request, body: dict[str, Any]) -> None:
        """Record the call, then fail it as configured or as the real API would."""
        with state.lock:
            state.requests.append({"path": request.url.path, "authorization": request.headers.get("authorization"),
                                   "body": body})
            if state.failures_sent < state.fail_first:
                state.failures_sent += 1
                if state.fail_status == 429:
                    raise ApiError(429, "Rate limit reached for images per minute. Please try again later.",
                                   "requests", code="rate_limit_exceeded")
                raise ApiError(state.fail_status, "The server had an error while processing your request. "
                               "Sorry about that!", "server_error")
        if request.headers.get("authorization") != f"Bearer {state.api_key}":
            raise ApiError(401, "Incorrect API key provided. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    def check_common(body: dict[str, Any], models: tuple[str, ...]) -> tuple[str, int, int]:
        model = body.get("model") or "dall-e-2"
        if model not in models:
            raise ApiError(400, f"Invalid value: '{model}'. Supported values are: {', '.join(models)}.",
                           param="model", code="invalid_value")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
        size = body.get("size") or "1024x1024"
        if size not in SIZES[model]:
            raise ApiError(400, f"Invalid value: '{size}'. Supported values are: {', '.join(SIZES[model])}.",
                           param="size", code="invalid_value")
        n = int(body.get("n") or 1)
        if model == "dall-e-3" and n != 1:
            raise ApiError(400, "Invalid 'n': dall-e-3 supports only n=1.", param="n", code="invalid_value")
        if not 1 <= n <= 10:
            raise ApiError(400, f"Invalid 'n': {n}; expected 1 to 10.", param="n", code="integer_out_of_range")
        quality = body.get("quality")
        if quality is not None and quality not in QUALITIES[model]:
            raise ApiError(400, f"Invalid value: '{quality}'. Supported values are: {', '.join(QUALITIES[model])}.",
                           param="quality", code="invalid_value")
        response_format = body.get("response_format")
        if response_format is not None:
            if model == "gpt-image-1":
                raise ApiError(400, "Unknown parameter: 'response_format'.", param="response_format",
                               code="unknown_parameter")
            if response_format not in ("url", "b64_json"):
                raise ApiError(400, f"Invalid value: '{response_format}'.", param="response_format",
                               code="invalid_value")
        if state.content_policy:
            raise ApiError(400, CONTENT_POLICY_MESSAGE, code="content_policy_violation")
        width, height = (int(side) for side in size.split("x"))
        return model, width, height

    def answer(request: Request, model: str, images: list[Any], prompt: str, response_format: str | None) -> dict:
        data = []
        for image in images:
            png = _png(image)
            url_wanted = model != "gpt-image-1" and (response_format == "url" or state.return_url)
            if url_wanted:
                name = f"{hashlib.sha256(png).hexdigest()[:16]}.png"
                state.files[name] = png
                item: dict[str, Any] = {"url": f"{str(request.base_url).rstrip('/')}/files/{name}"}
            else:
                item = {"b64_json": base64.b64encode(png).decode("ascii")}
            if model == "dall-e-3":
                item["revised_prompt"] = f"A richly detailed rendering of {prompt}"
            data.append(item)
        return {"created": state.created, "data": data}

    @app.post("/v1/images/generations")
    async def generations(request: Request) -> dict:
        body = await request.json()
        judge(request, body)
        model, width, height = check_common(body, tuple(SIZES))
        prompt = body["prompt"]
        images = [_picture(width, height, f"{prompt}#{i}") for i in range(int(body.get("n") or 1))]
        return answer(request, model, images, prompt, body.get("response_format"))

    @app.post("/v1/images/edits")
    async def edits(request: Request) -> dict:
        from PIL import Image, ImageOps

        form = await request.form()
        uploads = [value for key, value in form.multi_items() if key in ("image", "image[]") and hasattr(value, "read")]
        body: dict[str, Any] = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        images_in = [await upload.read() for upload in uploads]
        body["image_sizes"] = []
        judge(request, body)
        if not images_in:
            raise ApiError(400, "Missing required parameter: 'image'.", param="image", code="missing_required_parameter")
        model, width, height = check_common(body, EDIT_MODELS)
        try:
            source = Image.open(io.BytesIO(images_in[0]))
            source.load()
        except OSError as exc:
            raise ApiError(400, "Invalid image file or mode for image 1.", param="image",
                           code="invalid_image_format") from exc
        body["image_sizes"].append(list(source.size))
        result = ImageOps.invert(source.convert("RGB")).resize((width, height))
        return answer(request, model, [result] * int(body.get("n") or 1), body["prompt"], body.get("response_format"))

    @app.get("/files/{name}")
    async def files(name: str) -> Response:
        if name not in state.files:
            return JSONResponse(status_code=404, content={"error": {"message": "not found", "type": "invalid_request_error",
                                                                    "param": None, "code": None}})
        return Response(content=state.files[name], media_type="image/png")

    return app


@contextmanager
def running_openai_server(**behaviour: Any) -> Iterator[tuple[str, ServerState]]:
    """Serve the fake API on 127.0.0.1 (a free port) until the block ends; yields (base_url, state)."""
    import uvicorn

    state = ServerState(**behaviour)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(state), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        # Poll (no time budget: a stuck start is caught by pytest-timeout) until uvicorn accepts.
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}/v1", state
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
