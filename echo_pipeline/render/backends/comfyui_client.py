"""A client of a running ComfyUI server (github Comfy-Org/ComfyUI, server.py), used by the `comfyui` backend.

Protocol handling:

- One `client_id` per client. The websocket `ws(s)://host/ws?clientId=<id>` is opened *before* a
  prompt is posted so no event is missed; ComfyUI sends execution events only to the socket whose
  clientId matches the prompt's `client_id`. Binary frames (previews) are ignored; of the text
  frames `{"type", "data"}` only those whose `data.prompt_id` is ours count: `progress {value, max}`
  drives the progress callback, `executed` records outputs, `executing` with `node: null` ends the prompt
  (`execution_success` comes before the history entry is written), `execution_error` / `execution_interrupted` fail it.
- POST /prompt carries `client_id` and a `prompt_id` we generate (uuid4), so the id is known before
  the answer arrives and a retried POST can first check whether the server already queued it.
- The websocket is a convenience, never the only source of truth: whenever it is silent for a while,
  dropped, or cannot be opened, GET /history/{prompt_id} (`{}` until finished) is polled with
  growing intervals, and the finished entry's `outputs` name the images, fetched with GET /view.
- HTTP: httpx with connect/read timeouts; connection errors and 5xx are retried with exponential
  backoff (`tries`, `backoff_s`). A server that stays down raises `BackendUnavailableError`
  ("ComfyUI server at <url> is not reachable (<reason>); start it or set --comfyui-url /
  ECHO_COMFYUI_URL").

Errors (each one line):

- HTTP 400 from /prompt (validation: `prompt_outputs_failed_validation` with `node_errors`,
  `invalid_prompt`, `prompt_no_outputs`, `no_prompt`...) -> `ComfyUIWorkflowError` (an
  `InvalidInputError`: the workflow is wrong), e.g. "ComfyUI rejected the workflow: node 3
  (KSampler) input 'steps': Value 0 smaller than min of 1".
- `execution_error` -> `ComfyUIExecutionError` "ComfyUI failed in node 7 (VAEDecode): <type>: <message>".
- `execution_interrupted` (someone else pressed Cancel) -> `ComfyUIInterruptedError`.
- A prompt running longer than the timeout is interrupted on the server, then `ComfyUITimeoutError`.
- Interrupted while waiting (KeyboardInterrupt, `echo_pipeline.errors.Interrupted`, or any other
  BaseException such as Dagster's run-termination interrupt): POST /interrupt `{"prompt_id"}` and
  POST /queue `{"delete": [id]}` are sent, then the exception is re-raised.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from echo_pipeline.errors import BackendUnavailableError, EchoError, Interrupted, InvalidInputError

# (node id, value, max) of one ComfyUI `progress` event for our prompt.
ProgressEvent = Callable[[str, int, int], None]

_DETAIL_CHARS = 240  # a value_not_in_list detail lists every option; keep the line readable


class ComfyUIWorkflowError(InvalidInputError):
    """ComfyUI rejected the workflow (HTTP 400 from /prompt): a node, input or value is wrong."""


class ComfyUIExecutionError(EchoError, RuntimeError):
    """A node failed while ComfyUI ran the prompt (`execution_error`), or ComfyUI answered nonsense."""


class ComfyUIInterruptedError(ComfyUIExecutionError):
    """The prompt was interrupted on the server (Cancel in ComfyUI, or another client)."""


class ComfyUITimeoutError(ComfyUIExecutionError, TimeoutError):
    """The prompt ran longer than the configured timeout; it was interrupted on the server."""


@dataclass
class PromptResult:
    """A finished prompt: its id, `outputs` (node id -> {"images": [{filename, subfolder, type}], ...})
    and how it was followed ("websocket" or "history")."""

    prompt_id: str
    outputs: dict[str, Any]
    node_errors: dict[str, Any] = field(default_factory=dict)
    via: str = "websocket"

    def images(self, node: str | None = None) -> list[dict[str, Any]]:
        """Image refs of `node`, or of every output node (type "output" first) when None."""
        nodes = [node] if node is not None else sorted(self.outputs, key=_node_sort_key)
        found = [img for n in nodes for img in (self.outputs.get(n) or {}).get("images") or [] if isinstance(img, dict)]
        return sorted(found, key=lambda img: img.get("type") != "output")


def _node_sort_key(node: str) -> tuple[int, str]:
    return (0, f"{int(node):012d}") if node.isdigit() else (1, node)


def _short(text: Any, limit: int = _DETAIL_CHARS) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def format_validation_error(body: Any) -> str:
    """The one line for a /prompt 400 body `{"error": {...}, "node_errors": {id: {errors, class_type}}}`."""
    if not isinstance(body, dict):
        return f"ComfyUI rejected the workflow: {_short(body)}"
    parts: list[str] = []
    node_errors = body.get("node_errors") or {}
    if isinstance(node_errors, dict):
        for node_id in sorted(node_errors, key=lambda n: _node_sort_key(str(n))):
            entry = node_errors[node_id] if isinstance(node_errors[node_id], dict) else {}
            class_type = entry.get("class_type") or "?"
            for err in entry.get("errors") or [{}]:
                err = err if isinstance(err, dict) else {"message": str(err)}
                extra = err.get("extra_info")
                extra = extra if isinstance(extra, dict) else {}
                input_name = extra.get("input_name")
                where = f"node {node_id} ({class_type})" + (f" input {input_name!r}" if input_name else "")
                message = str(err.get("message") or err.get("type") or "invalid")
                details = str(err.get("details") or "")
                # `details` often just repeats the input name; add it only when it says more
                if details and details != input_name and details not in message:
                    message = f"{message} ({_short(details)})"
                parts.append(f"{where}: {message}")
    error = body.get("error")
    if not parts:
        if isinstance(error, dict):
            kind = error.get("type")
            message = str(error.get("message") or kind or "invalid prompt")
            details = str(error.get("details") or "")
            if details and details not in message:
                message = f"{message} ({_short(details)})"
            hints = {
                "invalid_prompt": "; is that node's custom node pack installed on the server?",
                "missing_node_type": "; is that node's custom node pack installed on the server?",
                "prompt_no_outputs": "; the workflow needs an output node such as SaveImage",
                "no_prompt": "; the request carried no workflow",
            }
            parts.append(message.rstrip() + hints.get(str(kind), ""))
        else:
            parts.append(_short(error if error else body))
    return "ComfyUI rejected the workflow: " + "; ".join(parts)


def format_execution_error(data: dict[str, Any]) -> str:
    node_id = data.get("node_id", "?")
    node_type = data.get("node_type") or "?"
    kind = data.get("exception_type") or "error"
    return f"ComfyUI failed in node {node_id} ({node_type}): {kind}: {_short(data.get('exception_message') or '', 400)}"


class ComfyUIClient:
    """One connection (HTTP client plus a reusable websocket) to a ComfyUI server.

    `tries` / `backoff_s` control retries of connection errors and 5xx (backoff doubles per try);
    `poll_interval_s` .. `poll_max_s` the /history polling when the websocket is silent or gone.
    Not thread-safe: one caller at a time."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        tries: int = 3,
        backoff_s: float = 0.5,
        poll_interval_s: float = 0.25,
        poll_max_s: float = 2.0,
        client_id: str | None = None,
        use_websocket: bool = True,
    ) -> None:
        self.url = url.strip().rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(f"ComfyUI URL {url!r} is not an http(s) URL such as http://127.0.0.1:8188")
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.tries = max(1, int(tries))
        self.backoff_s = max(0.0, float(backoff_s))
        self.poll_interval_s = max(0.001, float(poll_interval_s))
        self.poll_max_s = max(self.poll_interval_s, float(poll_max_s))
        self.client_id = client_id or uuid.uuid4().hex
        self.use_websocket = use_websocket
        self._http: httpx.Client | None = None
        self._ws: Any = None  # websockets.sync.client.ClientConnection
        self._ws_stack: contextlib.ExitStack | None = None

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.url, timeout=httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)
            )
        return self._http

    def unreachable(self, reason: str) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"ComfyUI server at {self.url} is not reachable ({_short(reason, 200)}); "
            "start it or set --comfyui-url / ECHO_COMFYUI_URL"
        )

    def request(self, method: str, path: str, *, retry: bool = True, before_retry: Callable[[], bool] | None = None,
                **kwargs: Any) -> httpx.Response:
        """One HTTP call with retries of connection errors and 5xx. `before_retry` returning True
        means "already done on the server, do not repeat" (the POST /prompt idempotency check)."""
        tries = self.tries if retry else 1
        reason = ""
        for attempt in range(tries):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
                if before_retry is not None and before_retry():
                    return httpx.Response(200, json={}, request=httpx.Request(method, self.url + path))
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if response.status_code >= 500:
                reason = f"HTTP {response.status_code} from {method} {path}"
                continue
            return response
        raise self.unreachable(reason)

    def _json(self, response: httpx.Response, what: str) -> Any:
        if response.status_code >= 400:
            raise ComfyUIExecutionError(
                f"ComfyUI at {self.url} answered HTTP {response.status_code} to {what}: {_short(response.text, 200)}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ComfyUIExecutionError(f"ComfyUI at {self.url} answered {what} with non-JSON: "
                                        f"{_short(response.text, 120)}") from exc

    # -- simple endpoints -----------------------------------------------------------------------

    def probe(self, timeout_s: float = 3.0) -> str | None:
        """None when GET /system_stats answers, else the one-line reason (no retries)."""
        try:
            response = self.http.get("/system_stats", timeout=timeout_s)
        except httpx.TransportError as exc:
            return self.unreachable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__).message
        if response.status_code != 200:
            return self.unreachable(f"HTTP {response.status_code} from GET /system_stats").message
        return None

    def system_stats(self) -> dict[str, Any]:
        return self._json(self.request("GET", "/system_stats"), "GET /system_stats")

    def object_info(self, node_class: str) -> dict[str, Any]:
        data = self._json(self.request("GET", f"/object_info/{node_class}"), f"GET /object_info/{node_class}")
        return data.get(node_class, {}) if isinstance(data, dict) else {}

    def combo_options(self, node_class: str, input_name: str) -> list[str]:
        """The choices of a combo input, from either format: `[["a", "b"], {...}]` (old) or
        `["COMBO", {"options": ["a", "b"]}]` (new)."""
        info = self.object_info(node_class)
        inputs = info.get("input", {}) if isinstance(info, dict) else {}
        spec = None
        for group in ("required", "optional"):
            if isinstance(inputs.get(group), dict) and input_name in inputs[group]:
                spec = inputs[group][input_name]
                break
        return parse_combo(spec)

    def checkpoints(self) -> list[str]:
        return self.combo_options("CheckpointLoaderSimple", "ckpt_name")

    def history(self, prompt_id: str) -> dict[str, Any]:
        data = self._json(self.request("GET", f"/history/{prompt_id}"), "GET /history")
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) else {}

    def view(self, image: dict[str, Any]) -> bytes:
        params = {"filename": image.get("filename", ""), "subfolder": image.get("subfolder", ""),
                  "type": image.get("type", "output")}
        response = self.request("GET", "/view", params=params)
        if response.status_code != 200:
            raise ComfyUIExecutionError(f"ComfyUI at {self.url} answered HTTP {response.status_code} to GET /view "
                                        f"of {params['filename']!r}")
        return response.content

    def upload_image(self, data: bytes, filename: str, *, overwrite: bool = False, subfolder: str = "") -> str:
        """Upload an input image; returns the name to use in LoadImage (ComfyUI may rename it to
        `x (1).png` when a different file already has that name, so always use this)."""
        fields = {"type": "input", "overwrite": "true" if overwrite else "false", "subfolder": subfolder}
        response = self.request("POST", "/upload/image", files={"image": (filename, data, "image/png")}, data=fields)
        body = self._json(response, "POST /upload/image")
        name = body.get("name") if isinstance(body, dict) else None
        if not name:
            raise ComfyUIExecutionError(f"ComfyUI at {self.url} answered POST /upload/image without a name")
        sub = body.get("subfolder") or ""
        return f"{sub}/{name}" if sub else str(name)

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt (only `prompt_id` when given); best effort, no retries."""
        with contextlib.suppress(httpx.HTTPError):
            self.http.post("/interrupt", json={"prompt_id": prompt_id} if prompt_id else {}, timeout=5.0)

    def delete_queued(self, prompt_ids: list[str]) -> None:
        """POST /queue {"delete": ids}: drop them if still pending; best effort, no retries."""
        with contextlib.suppress(httpx.HTTPError):
            self.http.post("/queue", json={"delete": prompt_ids}, timeout=5.0)

    def cancel(self, prompt_id: str) -> None:
        self.interrupt(prompt_id)
        self.delete_queued([prompt_id])

    def _known(self, prompt_id: str) -> bool:
        """Whether the server already queued, runs or finished `prompt_id` (a retried POST /prompt
        must not queue it twice)."""
        try:
            response = self.http.get("/queue", timeout=5.0)
            if response.status_code != 200:
                return False  # unknown: post again
            queue = response.json()
            for item in (queue.get("queue_running") or []) + (queue.get("queue_pending") or []):
                if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                    return True
            response = self.http.get(f"/history/{prompt_id}", timeout=5.0)
            return response.status_code == 200 and bool(response.json())
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    # -- prompts --------------------------------------------------------------------------------

    def queue_prompt(self, workflow: dict[str, Any], *, prompt_id: str | None = None,
                     extra_pnginfo: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """POST /prompt; returns (prompt_id, node_errors). node_errors is non-empty when some output
        nodes failed validation but others run."""
        pid: str = prompt_id or str(uuid.uuid4())
        body: dict[str, Any] = {"prompt": workflow, "client_id": self.client_id, "prompt_id": pid}
        if extra_pnginfo:
            body["extra_data"] = {"extra_pnginfo": extra_pnginfo}
        response = self.request("POST", "/prompt", json=body, before_retry=lambda: self._known(pid))
        if response.status_code == 400:
            try:
                detail: Any = response.json()
            except ValueError:
                detail = response.text
            raise ComfyUIWorkflowError(format_validation_error(detail))
        data = self._json(response, "POST /prompt")
        if isinstance(data, dict) and data.get("prompt_id") not in (None, pid):
            # an older server ignoring our id: follow the one it assigned
            pid = str(data["prompt_id"])
        node_errors = data.get("node_errors") if isinstance(data, dict) else None
        return pid, node_errors if isinstance(node_errors, dict) else {}

    def run(self, workflow: dict[str, Any], *, on_progress: ProgressEvent | None = None,
            extra_pnginfo: dict[str, Any] | None = None, timeout_s: float | None = None) -> PromptResult:
        """Queue `workflow` and wait until it finished; see the module docstring for errors."""
        self._connect_ws()  # before posting, so the first events are not lost
        prompt_id = str(uuid.uuid4())
        try:
            prompt_id, node_errors = self.queue_prompt(workflow, prompt_id=prompt_id, extra_pnginfo=extra_pnginfo)
        except BaseException as exc:
            if _interrupt(exc):
                self.cancel(prompt_id)  # the server may have queued it before the answer came back
            raise
        result = self.wait(prompt_id, on_progress=on_progress, timeout_s=timeout_s)
        result.node_errors = node_errors
        return result

    def wait(self, prompt_id: str, *, on_progress: ProgressEvent | None = None,
             timeout_s: float | None = None) -> PromptResult:
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        deadline = time.monotonic() + timeout
        try:
            return self._wait(prompt_id, on_progress, deadline, timeout)
        except BaseException as exc:
            if _interrupt(exc):  # stop the prompt on the server too
                self.cancel(prompt_id)
            raise

    def _wait(self, prompt_id: str, on_progress: ProgressEvent | None, deadline: float,
              timeout: float) -> PromptResult:
        outputs: dict[str, Any] = {}
        interval = self.poll_interval_s
        via = "websocket"
        while True:
            now = time.monotonic()
            if now >= deadline:
                self.cancel(prompt_id)
                raise ComfyUITimeoutError(f"ComfyUI did not finish prompt {prompt_id} within {timeout:g} s "
                                          "(comfyui_timeout_s); it was interrupted on the server")
            wait_s = min(interval, deadline - now)
            event = self._next_event(wait_s) if self._ws is not None else None
            if event is None:
                if self._ws is None:
                    via = "history"
                    time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
                entry = self.history(prompt_id)
                if entry:
                    return self._from_history(prompt_id, entry, outputs, via)
                interval = min(interval * 1.5, self.poll_max_s)
                continue
            kind, data = event
            if data.get("prompt_id") != prompt_id:
                continue  # status broadcasts and other clients' prompts
            interval = self.poll_interval_s
            if kind == "progress" and on_progress is not None:
                on_progress(str(data.get("node")), int(data.get("value") or 0), int(data.get("max") or 0))
            elif kind == "executed" and isinstance(data.get("output"), dict):
                outputs[str(data.get("node"))] = data["output"]
            elif kind == "execution_error":
                raise ComfyUIExecutionError(format_execution_error(data))
            elif kind == "execution_interrupted":
                raise ComfyUIInterruptedError(
                    f"ComfyUI interrupted prompt {prompt_id} in node {data.get('node_id', '?')} "
                    f"({data.get('node_type') or '?'}): Cancel was pressed in ComfyUI or another client interrupted it"
                )
            elif kind == "executing" and data.get("node") is None:
                # the end of a prompt (execution_success comes first but before history is written)
                entry = self.history(prompt_id)
                if not entry:  # history is written right after the event; give it a moment
                    entry = self._poll_history(prompt_id, deadline)
                return self._from_history(prompt_id, entry, outputs, via)

    def _poll_history(self, prompt_id: str, deadline: float) -> dict[str, Any]:
        interval = self.poll_interval_s
        while time.monotonic() < deadline:
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            entry = self.history(prompt_id)
            if entry:
                return entry
            interval = min(interval * 1.5, self.poll_max_s)
        return {}

    def _from_history(self, prompt_id: str, entry: dict[str, Any], outputs: dict[str, Any], via: str) -> PromptResult:
        status = entry.get("status")
        status = status if isinstance(status, dict) else {}
        messages = status.get("messages") or []
        for message in messages:
            if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
                continue
            if message[0] == "execution_error":
                raise ComfyUIExecutionError(format_execution_error(message[1]))
            if message[0] == "execution_interrupted":
                data = message[1]
                raise ComfyUIInterruptedError(
                    f"ComfyUI interrupted prompt {prompt_id} in node {data.get('node_id', '?')} "
                    f"({data.get('node_type') or '?'}): Cancel was pressed in ComfyUI or another client interrupted it"
                )
        if status.get("status_str") == "error":
            raise ComfyUIExecutionError(f"ComfyUI reports prompt {prompt_id} failed (no error details in its history)")
        merged = dict(outputs)
        if isinstance(entry.get("outputs"), dict):
            merged.update(entry["outputs"])
        return PromptResult(prompt_id=prompt_id, outputs=merged, via=via)

    # -- websocket ------------------------------------------------------------------------------

    def ws_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}/ws?clientId={self.client_id}"

    def _connect_ws(self) -> None:
        """(Re)open the websocket; on failure fall back to /history polling for this prompt."""
        if not self.use_websocket or self._ws is not None:
            return
        from websockets.sync.client import connect

        stack = contextlib.ExitStack()
        try:
            # entered as a context manager (websockets' supported form); previews can be large:
            # max_size=None accepts them (they are discarded)
            self._ws = stack.enter_context(connect(self.ws_url(), open_timeout=self.connect_timeout_s,
                                                   max_size=None, close_timeout=1.0))
            self._ws_stack = stack
        except Exception:  # noqa: BLE001 - any failure means "poll history instead"
            self._ws = None

    def _next_event(self, wait_s: float) -> tuple[str, dict[str, Any]] | None:
        """The next text event, or None after `wait_s` of silence or when the socket dropped."""
        from websockets.exceptions import ConnectionClosed

        end = time.monotonic() + wait_s
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            try:
                frame = self._ws.recv(timeout=remaining)
            except TimeoutError:
                return None
            except (ConnectionClosed, OSError, RuntimeError):
                self._close_ws()
                return None
            if not isinstance(frame, str):
                continue  # binary preview frame
            try:
                message = json.loads(frame)
            except ValueError:
                continue
            if isinstance(message, dict) and isinstance(message.get("type"), str):
                data = message.get("data")
                return message["type"], data if isinstance(data, dict) else {}

    def _close_ws(self) -> None:
        self._ws = None
        stack, self._ws_stack = self._ws_stack, None
        if stack is not None:
            with contextlib.suppress(Exception):  # closing a broken socket may fail in any way
                stack.close()

    def close(self) -> None:
        self._close_ws()
        if self._http is not None:
            self._http.close()
            self._http = None


def _interrupt(exc: BaseException) -> bool:
    """Whether `exc` stops the caller (Ctrl-C, SIGTERM as `Interrupted`, or an orchestrator's own
    interrupt such as Dagster's, which derives from BaseException), not a failure to report."""
    return isinstance(exc, Interrupted) or not isinstance(exc, Exception)


def parse_combo(spec: Any) -> list[str]:
    """Options of an object_info input spec in the old (`[["a", "b"], {...}]`) or new
    (`["COMBO", {"options": [...]}]`) format; [] for anything else."""
    if not isinstance(spec, (list, tuple)) or not spec:
        return []
    head = spec[0]
    if isinstance(head, (list, tuple)):
        return [str(v) for v in head]
    if head == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return [str(v) for v in spec[1].get("options") or []]
    return []
