"""A loopback ComfyUI server for tests and benchmarks: the HTTP + websocket protocol of ComfyUI's
server.py as /work/shared/PROTOCOLS.md describes it, with a tiny "executor" that draws deterministic
images instead of running models.

    with running_comfyui_server(step_delay_s=0.0) as (url, state):
        ...  # point the comfyui backend at `url`; `state` records what clients did

Routes (each also under /api): POST /prompt (validation with ComfyUI's error shapes, a
client-chosen prompt_id honoured), GET /ws?clientId= (events only to the socket whose clientId
matches the prompt's client_id; binary preview frames during sampling), GET /history[/{id}],
GET /view, POST /upload/image, GET/POST /queue, POST /interrupt, GET /object_info[/{class}],
GET /system_stats. Known nodes: CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage,
LoadImage, VAEEncode, KSampler, VAEDecode, SaveImage, PreviewImage, EmptyImage.

Event order per prompt, as the real server: execution_start, execution_cached, per node
executing / progress (KSampler, one per step) / executed (output nodes), then execution_success,
*then* the history entry is written, then executing {node: null}. Interrupts are honoured at node
boundaries and between sampler steps.

Behaviour switches (keyword arguments of `running_comfyui_server`, fields of `ServerState`):
`checkpoints`, `combo_format` ("new" | "old"), `step_delay_s`, `fail_node` (node id that raises),
`drop_ws_after_steps` (close the client's socket after that many progress events),
`fail_first_requests` (HTTP 500 for the first k HTTP requests), `lose_prompt_answers` (queue a
prompt but answer 500, k times), `ignore_client_id` (treat every
prompt as posted without client_id: no events), `preview_frames`, `on_prompt` (called with each
POST /prompt body before validation; returns the body the server goes on with: a server whose
nodes or models changed between two prompts, or a switch flipped for one prompt).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import socket
import struct
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from PIL import Image, PngImagePlugin

SAMPLER_NAMES = ["euler", "euler_cfg_pp", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
                 "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm",
                 "lcm", "ipndm", "deis", "ddim", "uni_pc"]
SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"]


def _int(lo: int, hi: int, default: int = 0) -> tuple[str, dict[str, Any]]:
    return "INT", {"default": default, "min": lo, "max": hi}


def _float(lo: float, hi: float, default: float = 0.0) -> tuple[str, dict[str, Any]]:
    return "FLOAT", {"default": default, "min": lo, "max": hi}


# class_type -> (required inputs: name -> (type, options), output types, is output node)
# "COMBO" options name a list: "checkpoints", "inputs" (files in input/), or a literal list.
NODES: dict[str, tuple[dict[str, tuple[str, Any]], tuple[str, ...], bool]] = {
    "CheckpointLoaderSimple": ({"ckpt_name": ("COMBO", "checkpoints")}, ("MODEL", "CLIP", "VAE"), False),
    "CLIPTextEncode": ({"text": ("STRING", {"multiline": True}), "clip": ("CLIP", None)}, ("CONDITIONING",), False),
    "EmptyLatentImage": ({"width": _int(16, 16384, 512), "height": _int(16, 16384, 512),
                          "batch_size": _int(1, 4096, 1)}, ("LATENT",), False),
    "LoadImage": ({"image": ("COMBO", "inputs")}, ("IMAGE", "MASK"), False),
    "VAEEncode": ({"pixels": ("IMAGE", None), "vae": ("VAE", None)}, ("LATENT",), False),
    "KSampler": ({"model": ("MODEL", None), "seed": _int(0, 2**64 - 1), "steps": _int(1, 10000, 20),
                  "cfg": _float(0.0, 100.0, 8.0), "sampler_name": ("COMBO", SAMPLER_NAMES),
                  "scheduler": ("COMBO", SCHEDULERS), "positive": ("CONDITIONING", None),
                  "negative": ("CONDITIONING", None), "latent_image": ("LATENT", None),
                  "denoise": _float(0.0, 1.0, 1.0)}, ("LATENT",), False),
    "VAEDecode": ({"samples": ("LATENT", None), "vae": ("VAE", None)}, ("IMAGE",), False),
    "SaveImage": ({"images": ("IMAGE", None), "filename_prefix": ("STRING", {"default": "ComfyUI"})}, (), True),
    "PreviewImage": ({"images": ("IMAGE", None)}, (), True),
    "EmptyImage": ({"width": _int(1, 16384, 512), "height": _int(1, 16384, 512), "batch_size": _int(1, 4096, 1),
                    "color": _int(0, 0xFFFFFF)}, ("IMAGE",), False),
}
_PRIMITIVES = {"INT", "FLOAT", "STRING", "COMBO"}


@dataclass
class ServerState:
    """Switches (set before or during a test) and what clients did (read after)."""

    root: Path
    checkpoints: list[str] = field(default_factory=lambda: ["sd15-test.safetensors", "sdxl-test.safetensors"])
    combo_format: str = "new"
    step_delay_s: float = 0.0
    fail_node: str | None = None
    fail_message: str = "simulated failure"
    drop_ws_after_steps: int | None = None
    fail_first_requests: int = 0
    lose_prompt_answers: int = 0  # queue the prompt, then answer 500 (a response lost on the way back)
    ignore_client_id: bool = False
    preview_frames: bool = True
    on_prompt: Any = None  # Callable[[dict], Any] | None: see the module docstring
    # records
    url: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every HTTP request
    failed_requests: int = 0
    prompts: dict[str, dict[str, Any]] = field(default_factory=dict)  # prompt_id -> POST /prompt body
    interrupts: list[dict[str, Any]] = field(default_factory=list)
    queue_deletes: list[str] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    sent: list[tuple[str, str, str | None]] = field(default_factory=list)  # (client_id, type, prompt_id)
    ws_connects: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # prompt ids whose client socket was closed mid-run
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)

    def events(self, prompt_id: str) -> list[str]:
        """Types of the websocket events sent for `prompt_id`."""
        return [kind for _, kind, pid in self.sent if pid == prompt_id]


class _Interrupt(Exception):
    def __init__(self, node_id: str, node_type: str):
        self.node_id, self.node_type = node_id, node_type


class _NodeFailure(Exception):
    pass


def _options(spec: tuple[str, Any], state: ServerState) -> list[str]:
    kind, options = spec
    if options == "checkpoints":
        return list(state.checkpoints)
    if options == "inputs":
        return sorted(p.name for p in (state.root / "input").iterdir() if p.is_file())
    return list(options)


def _object_info(state: ServerState, class_type: str) -> dict[str, Any]:
    required, outputs, output_node = NODES[class_type]
    spec: dict[str, Any] = {}
    for name, (kind, options) in required.items():
        if kind == "COMBO":
            values = _options((kind, options), state)
            spec[name] = [values, {}] if state.combo_format == "old" else ["COMBO", {"options": values}]
        else:
            spec[name] = [kind, options] if isinstance(options, dict) else [kind]
    return {"input": {"required": spec}, "input_order": {"required": list(required)}, "output": list(outputs),
            "output_is_list": [False] * len(outputs), "output_name": list(outputs), "name": class_type,
            "display_name": class_type, "description": "", "category": "test", "output_node": output_node}


def _validate(prompt: dict[str, Any], state: ServerState) -> tuple[bool, dict[str, Any] | None, list[str],
                                                                   dict[str, Any]]:
    """ComfyUI's validate_prompt: (ok, error, good output ids, node_errors)."""
    for node_id, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if class_type is None:
            return False, {"type": "invalid_prompt", "message": "Cannot execute because a node is missing the "
                           "class_type property.", "details": f"Node ID '#{node_id}'", "extra_info": {}}, [], {}
        if class_type not in NODES:
            return False, {"type": "invalid_prompt", "message": f"Cannot execute because node {class_type} does not "
                           "exist.", "details": f"Node ID '#{node_id}'", "extra_info": {}}, [], {}
    outputs = [nid for nid, node in prompt.items() if NODES[node["class_type"]][2]]
    if not outputs:
        return False, {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                       "extra_info": {}}, [], {}
    node_errors: dict[str, Any] = {}
    checked: dict[str, bool] = {}

    def check_node(node_id: str) -> bool:
        if node_id in checked:
            return checked[node_id]
        checked[node_id] = True  # cycles are not this server's business
        node = prompt[node_id]
        required, _, _ = NODES[node["class_type"]]
        inputs = node.get("inputs") or {}
        errors: list[dict[str, Any]] = []
        ok = True
        for name, (kind, options) in required.items():
            info = {"input_name": name, "input_config": [kind, options]}
            if name not in inputs:
                errors.append({"type": "required_input_missing", "message": "Required input is missing",
                               "details": name, "extra_info": {"input_name": name}})
                continue
            value = inputs[name]
            if isinstance(value, list):
                if len(value) != 2 or str(value[0]) not in prompt:
                    errors.append({"type": "bad_linked_input", "message": "Bad linked input, must be a length-2 list "
                                   "of [node_id, slot_index]", "details": name, "extra_info": info})
                    continue
                source = prompt[str(value[0])]
                source_outputs = NODES[source["class_type"]][1]
                received = source_outputs[value[1]] if isinstance(value[1], int) and value[1] < len(source_outputs) \
                    else None
                if kind not in _PRIMITIVES and received != kind:
                    errors.append({"type": "return_type_mismatch", "message": "Return type mismatch between linked "
                                   "nodes", "details": f"{name}, received_type({received}) mismatch input_type({kind})",
                                   "extra_info": info})
                    continue
                ok = check(str(value[0])) and ok
                continue
            if kind in ("INT", "FLOAT"):
                try:
                    number = int(value) if kind == "INT" else float(value)
                except (TypeError, ValueError) as exc:
                    errors.append({"type": "invalid_input_type", "message": f"Failed to convert an input value to a "
                                   f"{kind} value", "details": f"{name}, {value}, {exc}", "extra_info": info})
                    continue
                if number < options["min"]:
                    errors.append({"type": "value_smaller_than_min", "message": f"Value {number} smaller than min of "
                                   f"{options['min']}", "details": name, "extra_info": {**info, "received_value": value}})
                elif number > options["max"]:
                    errors.append({"type": "value_bigger_than_max", "message": f"Value {number} bigger than max of "
                                   f"{options['max']}", "details": name, "extra_info": {**info, "received_value": value}})
            elif kind == "COMBO":
                choices = _options((kind, options), state)
                if options == "inputs":  # LoadImage validates its file itself (VALIDATE_INPUTS)
                    if value not in choices:
                        errors.append({"type": "custom_validation_failed", "message": "Custom validation failed for "
                                       "node", "details": f"{name} - Invalid image file: {value}", "extra_info": info})
                elif value not in choices:
                    errors.append({"type": "value_not_in_list", "message": "Value not in list",
                                   "details": f"{name}: '{value}' not in {choices}",
                                   "extra_info": {**info, "received_value": value}})
        if errors:
            node_errors[node_id] = {"errors": errors, "dependent_outputs": [], "class_type": node["class_type"]}
            ok = False
        checked[node_id] = ok
        return ok

    def check(node_id: str) -> bool:
        """ComfyUI reports an exception raised while validating a node as that node's error."""
        try:
            return check_node(node_id)
        except Exception as exc:
            checked[node_id] = False
            node = prompt[node_id]
            node_errors.setdefault(node_id, {"errors": [], "dependent_outputs": [], "class_type": node["class_type"]})
            node_errors[node_id]["errors"].append({
                "type": "exception_during_inner_validation", "message": "Exception when validating inner node",
                "details": f"{type(exc).__name__}: {exc}", "extra_info": {"exception_type": type(exc).__name__}})
            return False

    good = []
    for output in outputs:
        before = set(node_errors)
        if check(output):
            good.append(output)
        else:
            for failed in set(node_errors) - before or set(node_errors):
                node_errors[failed]["dependent_outputs"].append(output)
    if not good:
        return False, {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                       "details": "", "extra_info": {}}, [], node_errors
    return True, None, good, node_errors


def _draw(width: int, height: int, seed: int, text: str) -> np.ndarray:
    """A deterministic RGB float image in [0, 1] from seed and prompt text."""
    rng = np.random.default_rng([seed % 2**63, zlib.crc32(text.encode("utf-8"))])
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(width, height)
    c = rng.random((3, 3)).astype(np.float32)
    planes = [np.sin(x * (4 + 12 * c[i, 0]) + y * (4 + 12 * c[i, 1]) + 6 * c[i, 2]) * 0.5 + 0.5 for i in range(3)]
    image = np.stack(planes, axis=-1) + rng.normal(0.0, 0.03, (height, width, 3)).astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def _png(pixels: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8), "RGB").save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


_PREVIEW = struct.pack(">II", 1, 2) + _png(np.zeros((8, 8, 3), np.float32))  # event 1 = preview, format 2 = PNG


def create_app(state: ServerState) -> Any:
    sockets: dict[str, WebSocket] = {}
    pending: list[list[Any]] = []  # [number, prompt_id, prompt, extra_data, outputs, client_id]
    running: list[list[Any]] = []
    wake = asyncio.Event()
    interrupt = {"flag": False}
    counter = {"number": 0, "file": 0}

    def queue_remaining() -> int:
        return len(pending) + len(running)

    async def send(client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        if client_id is None:  # execution events of a prompt posted without client_id go nowhere
            return
        ws = sockets.get(client_id)
        if ws is None:
            return
        state.sent.append((client_id, kind, data.get("prompt_id")))
        with contextlib.suppress(Exception):
            await ws.send_text(json.dumps({"type": kind, "data": data}))

    async def broadcast_status() -> None:
        for client_id, ws in list(sockets.items()):
            state.sent.append((client_id, "status", None))
            with contextlib.suppress(Exception):
                await ws.send_text(json.dumps({"type": "status", "data": {
                    "status": {"exec_info": {"queue_remaining": queue_remaining()}}, "sid": client_id}}))

    async def execute(item: list[Any]) -> None:
        number, prompt_id, prompt, extra_data, good, client_id = item
        messages: list[list[Any]] = []

        async def event(kind: str, data: dict[str, Any], keep: bool = True) -> None:
            data = {**data, "prompt_id": prompt_id}
            if keep:
                messages.append([kind, {**data, "timestamp": int(time.time() * 1000)}])
            await send(client_id, kind, data)

        await event("execution_start", {})
        await event("execution_cached", {"nodes": []})
        order: list[str] = []

        def visit(node_id: str) -> None:
            if node_id in order:
                return
            for value in (prompt[node_id].get("inputs") or {}).values():
                if isinstance(value, list) and len(value) == 2:
                    visit(str(value[0]))
            order.append(node_id)

        for output in good:
            visit(output)
        results: dict[str, tuple[Any, ...]] = {}
        outputs: dict[str, Any] = {}
        executed: list[str] = []
        status = "success"
        progress_sent = 0
        try:
            for node_id in order:
                node = prompt[node_id]
                class_type = node["class_type"]
                if interrupt["flag"]:
                    raise _Interrupt(node_id, class_type)
                await event("executing", {"node": node_id, "display_node": node_id}, keep=False)
                if state.fail_node == node_id:
                    raise _NodeFailure(node_id)
                args = {k: (results[str(v[0])][v[1]] if isinstance(v, list) else v)
                        for k, v in (node.get("inputs") or {}).items()}
                if class_type == "KSampler":
                    steps = int(args["steps"])
                    for step in range(1, steps + 1):
                        if state.step_delay_s:
                            await asyncio.sleep(state.step_delay_s)
                        if interrupt["flag"]:
                            raise _Interrupt(node_id, class_type)
                        await event("progress", {"node": node_id, "value": step, "max": steps}, keep=False)
                        progress_sent += 1
                        ws = sockets.get(client_id) if client_id else None
                        if ws is not None and state.preview_frames:
                            with contextlib.suppress(Exception):
                                await ws.send_bytes(_PREVIEW)
                        if ws is not None and state.drop_ws_after_steps == progress_sent:
                            state.dropped.append(prompt_id)
                            sockets.pop(client_id, None)
                            with contextlib.suppress(Exception):
                                await ws.close(code=1011)
                        await asyncio.sleep(0)  # let interrupts and other requests in
                results[node_id] = _run_node(class_type, args, prompt, extra_data, state, counter)
                executed.append(node_id)
                ui = results[node_id][-1] if NODES[class_type][2] else None
                if ui:
                    outputs[node_id] = ui
                    await event("executed", {"node": node_id, "display_node": node_id, "output": ui})
        except _Interrupt as exc:
            status = "error"
            await event("execution_interrupted", {"node_id": exc.node_id, "node_type": exc.node_type,
                                                  "executed": executed})
        except _NodeFailure:
            status = "error"
            node = prompt[state.fail_node or ""]
            await event("execution_error", {
                "node_id": state.fail_node, "node_type": node["class_type"], "executed": executed,
                "exception_message": state.fail_message, "exception_type": "RuntimeError",
                "traceback": ["Traceback (most recent call last):\n", "RuntimeError: " + state.fail_message],
                "current_inputs": {}, "current_outputs": {}})
        else:
            await event("execution_success", {})
        finally:
            interrupt["flag"] = False
        # as ComfyUI: history is written after execution_success, before `executing: null`
        state.history[prompt_id] = {
            "prompt": [number, prompt_id, prompt, extra_data, good], "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages}, "meta": {},
        }
        state.finished.append(prompt_id)
        await event("executing", {"node": None}, keep=False)

    async def worker() -> None:
        while True:
            while not pending:
                wake.clear()
                await wake.wait()
            pending.sort(key=lambda it: it[0])
            item = pending.pop(0)
            running.append(item)
            try:
                await execute(item)
            finally:
                running.clear()
            await broadcast_status()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        task = asyncio.create_task(worker())
        yield
        task.cancel()

    app = FastAPI(lifespan=lifespan)
    router = APIRouter()

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        state.requests.append((request.method, request.url.path))
        if state.failed_requests < state.fail_first_requests:
            state.failed_requests += 1
            return JSONResponse({"error": "simulated outage"}, status_code=500)
        return await call_next(request)

    @router.websocket("/ws")
    async def ws_route(websocket: WebSocket) -> None:
        client_id = websocket.query_params.get("clientId") or uuid.uuid4().hex
        await websocket.accept()
        sockets[client_id] = websocket
        state.ws_connects.append(client_id)
        await websocket.send_text(json.dumps({"type": "status", "data": {
            "status": {"exec_info": {"queue_remaining": queue_remaining()}}, "sid": client_id}}))
        try:
            while True:
                await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if sockets.get(client_id) is websocket:
                sockets.pop(client_id, None)

    @router.post("/prompt")
    async def post_prompt(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        if state.on_prompt is not None and isinstance(body, dict):
            body = state.on_prompt(body)
        if not isinstance(body, dict) or "prompt" not in body:
            return JSONResponse({"error": {"type": "no_prompt", "message": "No prompt provided",
                                           "details": "No prompt provided", "extra_info": {}}, "node_errors": {}},
                                status_code=400)
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            return JSONResponse({"error": {"type": "invalid_prompt", "message": "Prompt is not a dict",
                                           "details": "", "extra_info": {}}, "node_errors": {}}, status_code=400)
        ok, error, good, node_errors = _validate(prompt, state)
        if not ok:
            return JSONResponse({"error": error, "node_errors": node_errors}, status_code=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        counter["number"] += 1
        number = -counter["number"] if body.get("front") else counter["number"]
        client_id = None if state.ignore_client_id else body.get("client_id")
        extra_data = dict(body.get("extra_data") or {})
        if client_id:
            extra_data["client_id"] = client_id
        state.prompts[prompt_id] = body
        pending.append([number, prompt_id, prompt, extra_data, good, client_id])
        wake.set()
        await broadcast_status()
        if state.lose_prompt_answers > 0:
            state.lose_prompt_answers -= 1
            return JSONResponse({"error": "answer lost"}, status_code=500)
        return {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}

    @router.get("/history")
    async def get_history_all() -> Any:
        return state.history

    @router.get("/history/{prompt_id}")
    async def get_history(prompt_id: str) -> Any:
        return {prompt_id: state.history[prompt_id]} if prompt_id in state.history else {}

    @router.get("/view")
    async def view(filename: str = "", subfolder: str = "", type: str = "output") -> Any:  # noqa: A002
        if not filename or filename.startswith("/") or ".." in filename or ".." in subfolder:
            return Response(status_code=400)
        if type not in ("output", "input", "temp"):
            return Response(status_code=400)
        path = state.root / type / subfolder / filename
        if not path.is_file():
            return Response(status_code=404)
        return Response(path.read_bytes(), media_type="image/png")

    @router.post("/upload/image")
    async def upload(request: Request) -> Any:
        form = await request.form()
        image = form.get("image")
        if image is None or isinstance(image, str):
            return Response(status_code=400)
        kind = str(form.get("type") or "input")
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")
        if ".." in subfolder or kind not in ("input", "temp", "output"):
            return Response(status_code=400)
        data = await image.read()
        folder = state.root / kind / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        name = os.path.basename(image.filename or "image.png")
        stem, ext = os.path.splitext(name)
        index = 1
        while (folder / name).exists() and not overwrite:
            if (folder / name).read_bytes() == data:
                break  # the same file again keeps its name
            name = f"{stem} ({index}){ext}"
            index += 1
        (folder / name).write_bytes(data)
        record = {"name": name, "subfolder": subfolder, "type": kind}
        state.uploads.append({**record, "sent_name": image.filename, "sha": hashlib.sha256(data).hexdigest()})
        return record

    @router.get("/queue")
    async def get_queue() -> Any:
        def row(item: list[Any]) -> list[Any]:
            return item[:5]
        return {"queue_running": [row(i) for i in running], "queue_pending": [row(i) for i in pending]}

    @router.post("/queue")
    async def post_queue(request: Request) -> Any:
        body = await request.json()
        if body.get("clear"):
            pending.clear()
        for prompt_id in body.get("delete") or []:
            state.queue_deletes.append(prompt_id)
            pending[:] = [item for item in pending if item[1] != prompt_id]
        return Response(status_code=200)

    @router.post("/interrupt")
    async def post_interrupt(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        state.interrupts.append(body)
        target = body.get("prompt_id")
        if running and (target is None or running[0][1] == target):
            interrupt["flag"] = True
        return Response(status_code=200)

    @router.get("/object_info")
    async def object_info_all() -> Any:
        return {name: _object_info(state, name) for name in NODES}

    @router.get("/object_info/{node_class}")
    async def object_info(node_class: str) -> Any:
        return {node_class: _object_info(state, node_class)} if node_class in NODES else {}

    @router.get("/system_stats")
    async def system_stats() -> Any:
        return {"system": {"os": os.name, "python_version": "3", "comfyui_version": "test-loopback",
                           "embedded_python": False, "ram_total": 0, "ram_free": 0},
                "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0}]}

    app.include_router(router)
    app.include_router(router, prefix="/api")
    return app


def _run_node(class_type: str, args: dict[str, Any], prompt: dict[str, Any], extra_data: dict[str, Any],
              state: ServerState, counter: dict[str, int]) -> tuple[Any, ...]:
    """One node's outputs; an output node's last element is its UI output ({"images": [...]})."""
    if class_type == "CheckpointLoaderSimple":
        name = args["ckpt_name"]
        return ("model", name), ("clip", name), ("vae", name)
    if class_type == "CLIPTextEncode":
        return (str(args["text"]),)
    if class_type == "EmptyLatentImage":
        return ({"width": int(args["width"]), "height": int(args["height"]), "pixels": None},)
    if class_type == "EmptyImage":
        color = int(args["color"])
        rgb = np.array([(color >> 16) & 255, (color >> 8) & 255, color & 255], np.float32) / 255
        return (np.broadcast_to(rgb, (int(args["height"]), int(args["width"]), 3)).copy(),)
    if class_type == "LoadImage":
        with Image.open(state.root / "input" / args["image"]) as image:
            pixels = np.asarray(image.convert("RGB"), np.float32) / 255
        return pixels, np.zeros(pixels.shape[:2], np.float32)
    if class_type == "VAEEncode":
        pixels = args["pixels"]
        return ({"width": pixels.shape[1], "height": pixels.shape[0], "pixels": pixels},)
    if class_type == "KSampler":
        latent = args["latent_image"]
        drawn = _draw(latent["width"], latent["height"], int(args["seed"]),
                      f"{args['positive']}|{args['negative']}|{args['model'][1]}|{args['sampler_name']}")
        if latent["pixels"] is not None:
            denoise = float(args["denoise"])
            drawn = latent["pixels"] * (1 - denoise) + drawn * denoise
        return ({**latent, "pixels": drawn},)
    if class_type == "VAEDecode":
        return (args["samples"]["pixels"],)
    if class_type in ("SaveImage", "PreviewImage"):
        kind = "output" if class_type == "SaveImage" else "temp"
        text = {"prompt": json.dumps(prompt)}
        for key, value in (extra_data.get("extra_pnginfo") or {}).items():
            text[key] = json.dumps(value)
        counter["file"] += 1
        prefix = str(args.get("filename_prefix") or "ComfyUI") if kind == "output" else "ComfyUI_temp"
        filename = f"{prefix}_{counter['file']:05d}_.png"
        folder = state.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_bytes(_png(args["images"], text))
        return ({"images": [{"filename": filename, "subfolder": "", "type": kind}]},)
    raise AssertionError(class_type)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def running_comfyui_server(root: str | Path | None = None, **behaviour: Any) -> Iterator[tuple[str, ServerState]]:
    """Serve the loopback ComfyUI on 127.0.0.1 (a free port) in a background thread; yields
    (url, state). `behaviour`: the switches of `ServerState` (none = no artificial delay, for
    benchmarks). `root` holds input/, output/, temp/ (a temporary folder when None)."""
    import uvicorn

    with contextlib.ExitStack() as stack:
        folder = Path(root) if root is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for sub in ("input", "output", "temp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        state = ServerState(root=folder, **behaviour)
        sock = _free_socket()
        stack.callback(sock.close)
        state.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(state), log_level="error", lifespan="on", timeout_graceful_shutdown=2,
                                ws_ping_interval=None)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="comfyui-loopback", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("loopback ComfyUI server did not start")
            time.sleep(0.01)
        try:
            yield state.url, state
        finally:
            server.should_exit = True
            thread.join(timeout=15)
