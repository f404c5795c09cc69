"""The comfyui backend against the loopback ComfyUI server (`comfyui_server.py`): the protocol
(own prompt_id, websocket events for our client only, /history fallback, /view, /upload/image,
/interrupt + /queue delete), every error shape as one clear line, and workflow handling."""

from __future__ import annotations

import io
import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from echo_pipeline.errors import BackendUnavailableError, Interrupted, InvalidInputError, NotFoundError
from echo_pipeline.render.backends.base import ParentImage
from echo_pipeline.render.backends.comfyui import ComfyUIBackend, Workflow, comfy_sampler, fill
from echo_pipeline.render.backends.comfyui_client import (
    ComfyUIClient,
    ComfyUIExecutionError,
    ComfyUIInterruptedError,
    ComfyUITimeoutError,
    ComfyUIWorkflowError,
    format_validation_error,
    parse_combo,
)
from echo_pipeline.render.backends.registry import create_backend
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.settings import REPO_CONFIG_DIR, BackendConfig
from echo_pipeline_tests.comfyui_server import running_comfyui_server

# tiny backoff and polling so retry / fallback paths are quick; the behaviour is the same
FAST: dict[str, Any] = {"tries": 3, "backoff_s": 0.01, "poll_interval_s": 0.05, "poll_max_s": 0.2}


@pytest.fixture(scope="module")
def server():
    with running_comfyui_server() as (url, state):
        yield url, state


def backend(url: str, **config) -> ComfyUIBackend:
    made = create_backend("comfyui", BackendConfig(comfyui_url=url, **config), **FAST)
    assert isinstance(made, ComfyUIBackend)
    return made


def request(seed: int = 1, **fields) -> RenderRequest:
    base = {"prompt": "a lighthouse at dusk", "seed": seed, "width": 64, "height": 64, "steps": 4,
            "sampler": "DPM++ 2M Karras", "backend": "comfyui"}
    return RenderRequest(**{**base, **fields})


def render(b: ComfyUIBackend, requests: list[RenderRequest], progress=None):
    return list(b.render([b.prepare(r) for r in requests], progress))


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def template(kind: str = "txt2img") -> dict:
    return json.loads((REPO_CONFIG_DIR / "comfyui" / f"{kind}.json").read_text())


def write(tmp_path: Path, graph: dict, name: str = "flow.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(graph))
    return str(path)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


# -- txt2img -----------------------------------------------------------------------------------


def test_txt2img_end_to_end(server):
    url, state = server
    b = backend(url)
    try:
        assert b.check_usable() is None
        assert b.describe().model == "sd15-test.safetensors"  # the first checkpoint the server lists
        assert re.fullmatch(r"comfyui-api-1\+[0-9a-f]{10}", b.describe().version)
        seen: list[tuple[int, int]] = []
        images = render(b, [request(1), request(2, steps=6)], lambda done, total: seen.append((done, total)))
    finally:
        b.close()
    assert [im.image.size for im in images] == [(64, 64), (64, 64)]
    first = images[0]
    prompt_id = first.info["comfyui_prompt_id"]
    body = state.prompts[prompt_id]
    assert body["prompt_id"] == prompt_id and body["client_id"]  # our own id, our client
    graph = body["prompt"]
    ksampler = graph["3"]["inputs"]
    assert (ksampler["seed"], ksampler["steps"], ksampler["cfg"]) == (1, 4, 7.0)  # typed, not "{{seed}}"
    assert (ksampler["sampler_name"], ksampler["scheduler"]) == ("dpmpp_2m", "karras")
    assert graph["6"]["inputs"]["text"] == "a lighthouse at dusk"
    assert graph["4"]["inputs"]["ckpt_name"] == "sd15-test.safetensors"
    # ComfyUI's own PNG text kept verbatim, never the store's keys
    assert json.loads(first.png_text["prompt"]) == graph
    assert not {"parameters", "echo"} & set(first.png_text)
    assert first.info["checkpoint"] == "sd15-test.safetensors"
    assert first.info["workflow"] == "txt2img.json"
    assert first.info["node_outputs"] == {"9": [first.info["image"]["filename"]]}
    assert (first.info["sampler_name"], first.info["scheduler"]) == ("dpmpp_2m", "karras")
    # progress in sampler steps over the whole call: monotone, ends at the total
    dones = [d for d, _ in seen]
    assert dones == sorted(set(dones)) and seen[-1] == (10, 10) and {t for _, t in seen} == {10}
    # the websocket saw the prompt's events (and the server sent binary previews, ignored)
    assert {"execution_start", "progress", "executed", "execution_success"} <= set(state.events(prompt_id))


def test_same_request_same_pixels_and_api_prefix(server):
    url, _ = server
    b1, b2 = backend(url), backend(url + "/api")  # every route (and /ws) also answers under /api
    try:
        one = render(b1, [request(7)])[0]
        two = render(b2, [request(7)])[0]
    finally:
        b1.close()
        b2.close()
    assert one.image.tobytes() == two.image.tobytes()
    assert one.info["comfyui_prompt_id"] != two.info["comfyui_prompt_id"]


def test_sampler_mapping_and_check_requests():
    assert comfy_sampler("Euler a") == ("euler_ancestral", "normal")
    assert comfy_sampler("DDIM") == ("ddim", "ddim_uniform")
    assert comfy_sampler("DPM++ SDE Karras") == ("dpmpp_sde", "karras")
    assert comfy_sampler("dpm++ 2m sde") == ("dpmpp_2m_sde", "normal")
    assert comfy_sampler("UniPC") == ("uni_pc", "normal")
    assert comfy_sampler("DPM2 a") == ("dpm_2_ancestral", "normal")
    assert comfy_sampler("euler_ancestral") == ("euler_ancestral", "normal")  # ComfyUI's own name
    with pytest.raises(InvalidInputError, match="'Nonsense' has no ComfyUI equivalent"):
        ComfyUIBackend.check_requests([request(sampler="Nonsense")])  # before any backend or network
    with pytest.raises(InvalidInputError, match="multiple of 8"):
        ComfyUIBackend.check_requests([request(width=100)])
    with pytest.raises(InvalidInputError, match="tiling"):
        ComfyUIBackend.check_requests([request(tiling=True)])


def test_placeholders_typed_whole_and_text_inside_strings():
    workflow = Workflow(name="w", graph={"1": {"class_type": "X", "inputs": {
        "seed": "{{seed}}", "cfg": "{{ cfg }}", "text": "photo of {{prompt}}, seed {{seed}}", "link": ["2", 0]}}},
        placeholders={"seed", "cfg", "prompt"})
    graph = fill(workflow, {"seed": 5, "cfg": 6.5, "prompt": "a cat"})
    assert graph["1"]["inputs"] == {"seed": 5, "cfg": 6.5, "text": "photo of a cat, seed 5", "link": ["2", 0]}
    assert workflow.graph["1"]["inputs"]["seed"] == "{{seed}}"  # the template is not changed


def test_templates_come_from_config_dir(server, tmp_path):
    url, state = server
    folder = tmp_path / "configs" / "comfyui"
    folder.mkdir(parents=True)
    graph = template()
    graph["9"]["inputs"]["filename_prefix"] = "from-config-dir"
    (folder / "txt2img.json").write_text(json.dumps(graph))
    b = backend(url, config_dir=str(tmp_path / "configs"))
    try:
        image = render(b, [request()])[0]
    finally:
        b.close()
    assert image.info["image"]["filename"].startswith("from-config-dir")


# -- websocket, history ------------------------------------------------------------------------


def test_events_only_reach_the_prompts_client(server):
    """Server side: a prompt posted without client_id gets no websocket events; with one, only
    that client's socket gets them (binary previews included)."""
    from websockets.sync.client import connect

    url, state = server
    graph = template()
    for key, value in {"ckpt_name": "sd15-test.safetensors"}.items():
        graph["4"]["inputs"][key] = value
    graph["6"]["inputs"]["text"] = graph["7"]["inputs"]["text"] = "x"
    graph["5"]["inputs"].update(width=64, height=64)
    graph["3"]["inputs"].update(seed=1, steps=2, cfg=7.0, sampler_name="euler", scheduler="normal")
    with connect(url.replace("http", "ws") + "/ws?clientId=listener") as ws, httpx.Client(base_url=url) as http:
        quiet = http.post("/prompt", json={"prompt": graph}).json()["prompt_id"]
        loud = http.post("/prompt", json={"prompt": graph, "client_id": "listener"}).json()["prompt_id"]
        frames = []
        while True:
            frame = ws.recv(timeout=30)
            frames.append(frame)
            if isinstance(frame, str):
                message = json.loads(frame)
                if message["type"] == "executing" and message["data"]["node"] is None \
                        and message["data"]["prompt_id"] == loud:
                    break
        assert http.get(f"/history/{quiet}").json()[quiet]["status"]["status_str"] == "success"
    assert state.events(quiet) == []
    assert any(isinstance(f, bytes) and f[:4] == b"\x00\x00\x00\x01" for f in frames)  # a preview
    texts = [json.loads(f) for f in frames if isinstance(f, str)]
    assert all(m["data"].get("prompt_id") in (None, loud) for m in texts)
    assert [m["type"] for m in texts if m["data"].get("prompt_id") == loud][-2:] == ["execution_success", "executing"]


def test_client_without_events_finishes_through_history():
    """Client side: the websocket never hears of the prompt (as if posted without client_id); the
    backend still finishes by polling /history."""
    with running_comfyui_server(ignore_client_id=True) as (url, state):
        b = backend(url)
        try:
            seen: list[tuple[int, int]] = []
            image = render(b, [request(steps=3)], lambda d, t: seen.append((d, t)))[0]
        finally:
            b.close()
        assert state.events(image.info["comfyui_prompt_id"]) == []
        assert state.ws_connects  # it did listen
    assert image.image.size == (64, 64) and "prompt" in image.png_text
    assert seen == [(3, 3)]  # no step events, but the image still counts its steps


def test_websocket_dropped_mid_prompt_finishes_through_history():
    with running_comfyui_server(drop_ws_after_steps=2, step_delay_s=0.01) as (url, state):
        b = backend(url)
        try:
            seen: list[tuple[int, int]] = []
            images = render(b, [request(steps=6), request(2, steps=6)], lambda d, t: seen.append((d, t)))
        finally:
            b.close()
        first = images[0].info["comfyui_prompt_id"]
        assert state.dropped[0] == first
    assert len(images) == 2 and seen[-1] == (12, 12)
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})


def test_workflow_chunk_from_extra_pnginfo_is_kept(server):
    url, _ = server
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1,
                                                          "color": 0xFF0000}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "plain"}}}
    client = ComfyUIClient(url, **FAST)
    try:
        result = client.run(graph, extra_pnginfo={"workflow": {"nodes": [], "links": []}})
        data = client.view(result.images("2")[0])
    finally:
        client.close()
    png = Image.open(io.BytesIO(data))
    assert json.loads(png.info["workflow"]) == {"nodes": [], "links": []}
    assert png.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("combo_format", ["old", "new"])
def test_checkpoint_combo_formats(combo_format):
    with running_comfyui_server(combo_format=combo_format, checkpoints=["b.ckpt", "a.safetensors"]) as (url, _):
        client = ComfyUIClient(url, **FAST)
        try:
            assert client.checkpoints() == ["b.ckpt", "a.safetensors"]
        finally:
            client.close()
    assert parse_combo([["x", "y"], {}]) == parse_combo(["COMBO", {"options": ["x", "y"]}]) == ["x", "y"]
    assert parse_combo(["INT", {"min": 0}]) == []


# -- img2img -----------------------------------------------------------------------------------


def test_refine_uploads_parent_and_uses_the_returned_name(server):
    url, state = server
    parent_image = Image.new("RGB", (64, 64), (200, 30, 30))
    # a different file already holds the name the backend uploads under: the server renames it
    Image.new("RGB", (8, 8)).save(state.root / "input" / "echo-parent1.png")
    b = backend(url)
    try:
        parent = ParentImage(artifact_id="parent1", image=parent_image, request=request())
        seen: list[tuple[int, int]] = []
        refined = b.refine(parent, b.prepare(request(3, parent_id="parent1", strength=0.25)),
                           lambda d, t: seen.append((d, t)))
        untouched = b.refine(parent, b.prepare(request(3, parent_id="parent1", strength=0.0)))
    finally:
        b.close()
    assert refined.info["comfyui_input_image"] == "echo-parent1 (1).png"
    graph = state.prompts[refined.info["comfyui_prompt_id"]]["prompt"]
    assert graph["10"]["inputs"]["image"] == "echo-parent1 (1).png"
    assert graph["3"]["inputs"]["denoise"] == 0.25
    assert refined.info["parent_artifact_id"] == "parent1" and refined.info["workflow"] == "img2img.json"
    assert untouched.info["comfyui_input_image"] == "echo-parent1 (1).png"  # the same bytes keep their name
    assert untouched.image.getpixel((10, 10)) == (200, 30, 30)  # denoise 0 keeps the input
    assert refined.image.getpixel((10, 10)) != (200, 30, 30)
    assert seen[-1] == (4, 4)


# -- errors ------------------------------------------------------------------------------------


def _flow(changes: dict | None = None) -> dict:
    graph = template()
    for (node, key), value in (changes or {}).items():
        graph[node]["inputs"][key] = value
    return graph


@pytest.mark.parametrize(("graph", "model", "expected"), [
    (_flow({("3", "steps"): 0}), None,
     "ComfyUI rejected the workflow: node 3 (KSampler) input 'steps': Value 0 smaller than min of 1"),
    (_flow(), "missing.safetensors",
     "node 4 (CheckpointLoaderSimple) input 'ckpt_name': Value not in list (ckpt_name: 'missing.safetensors' not in"),
    ({k: v if k != "3" else {**v, "inputs": {i: x for i, x in v["inputs"].items() if i != "cfg"}}
      for k, v in template().items()}, None,
     "node 3 (KSampler) input 'cfg': Required input is missing"),
    ({**template(), "12": {"class_type": "NoSuchNode", "inputs": {}}}, None,
     "ComfyUI rejected the workflow: Cannot execute because node NoSuchNode does not exist. (Node ID '#12'); "
     "is that node's custom node pack installed"),
    ({k: v for k, v in template().items() if k != "9"}, None,
     "ComfyUI rejected the workflow: Prompt has no outputs; the workflow needs an output node such as SaveImage"),
], ids=["smaller_than_min", "not_in_list", "required_missing", "invalid_prompt", "no_outputs"])
def test_validation_errors_are_one_clear_line(server, tmp_path, graph, model, expected):
    url, _ = server
    b = backend(url, comfyui_workflow=write(tmp_path, graph), model=model)
    try:
        with pytest.raises(ComfyUIWorkflowError) as caught:
            render(b, [request()])
    finally:
        b.close()
    assert isinstance(caught.value, InvalidInputError)
    assert expected in one_line(caught.value)


def test_no_prompt_error_shape(server):
    url, _ = server
    with httpx.Client(base_url=url) as http:
        response = http.post("/prompt", json={"client_id": "x"})
    assert response.status_code == 400
    assert format_validation_error(response.json()) == (
        "ComfyUI rejected the workflow: No prompt provided; the request carried no workflow")


def test_execution_error_names_the_node():
    with running_comfyui_server(fail_node="8") as (url, _):
        b = backend(url)
        try:
            with pytest.raises(ComfyUIExecutionError) as caught:
                render(b, [request()])
        finally:
            b.close()
    assert one_line(caught.value) == "ComfyUI failed in node 8 (VAEDecode): RuntimeError: simulated failure"


def test_interrupted_on_the_server_is_a_clear_error():
    with running_comfyui_server(step_delay_s=0.05) as (url, state):
        b = backend(url)

        def someone_presses_cancel(done: int, total: int) -> None:
            if done == 1:
                httpx.post(url + "/interrupt", json={})

        try:
            with pytest.raises(ComfyUIInterruptedError) as caught:
                render(b, [request(steps=200)], someone_presses_cancel)
        finally:
            b.close()
    assert "interrupted prompt" in one_line(caught.value) and "node 3 (KSampler)" in str(caught.value)


def test_ui_format_workflow_is_rejected_before_any_network(tmp_path):
    ui = {"last_node_id": 9, "last_link_id": 9, "nodes": [{"id": 3, "type": "KSampler"}], "links": [[1, 4, 0, 3, 0]],
          "version": 0.4}
    b = backend(closed_port_url(), comfyui_workflow=write(tmp_path, ui))
    with pytest.raises(InvalidInputError) as caught:
        b.render([request()])
    text = one_line(caught.value)
    assert "UI format" in text and "Export (API)" in text and "Save (API Format)" in text
    assert b.check_usable() == text


def test_user_workflow_with_node_map(server, tmp_path):
    url, state = server
    graph = _flow({("4", "ckpt_name"): "sdxl-test.safetensors", ("6", "text"): "old", ("7", "text"): "",
                     ("5", "width"): 64, ("5", "height"): 64, ("3", "seed"): 0, ("3", "steps"): 3,
                     ("3", "cfg"): 5.0, ("3", "sampler_name"): "euler", ("3", "scheduler"): "normal"})
    graph["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    nodes = {"prompt": "6", "negative": "7", "seed": "3", "output": "9"}
    b = backend(url, comfyui_workflow=write(tmp_path, graph, "mine.json"), comfyui_nodes=nodes)
    try:
        assert b.describe().model.endswith("mine.json")  # no {{checkpoint}}: the workflow names the model
        image = render(b, [request(42, negative_prompt="blurry")])[0]
    finally:
        b.close()
    sent = state.prompts[image.info["comfyui_prompt_id"]]["prompt"]
    assert sent["6"]["inputs"]["text"] == "a lighthouse at dusk" and sent["7"]["inputs"]["text"] == "blurry"
    assert sent["3"]["inputs"]["seed"] == 42 and sent["3"]["inputs"]["steps"] == 3
    assert image.info["image"]["type"] == "output"  # node 9, not the preview node 12
    assert set(image.info["node_outputs"]) == {"9", "12"}


@pytest.mark.parametrize(("nodes", "expected"), [
    ({"prompt": "99"}, "comfyui_nodes maps prompt to node '99', which is not in workflow"),
    ({"prompt": "6", "style": "3"}, "comfyui_nodes has unknown role 'style'"),
    ({"prompt": "6", "seed": "8"}, "comfyui_nodes maps seed to node 8 (VAEDecode), which has no 'seed' or "
                                   "'noise_seed' input"),
    ({}, "has no {{prompt}} placeholder and comfyui_nodes names no prompt node"),
])
def test_bad_node_map_is_a_clear_error(tmp_path, nodes, expected):
    graph = _flow({("6", "text"): "fixed", ("7", "text"): "", ("3", "seed"): 1})
    for node in graph.values():  # no placeholders at all
        node["inputs"] = {k: v for k, v in node["inputs"].items() if not (isinstance(v, str) and "{{" in v)}
    b = backend(closed_port_url(), comfyui_workflow=write(tmp_path, graph), comfyui_nodes=nodes)
    with pytest.raises(InvalidInputError) as caught:
        b.render([request()])
    assert expected in one_line(caught.value)


def test_img2img_only_workflow_refines_but_does_not_render(server, tmp_path):
    url, _ = server
    b = backend(url, comfyui_workflow=write(tmp_path, template("img2img"), "refine-only.json"))
    try:
        assert b.describe().model == "sd15-test.safetensors"
        with pytest.raises(InvalidInputError, match="takes an input image, so it cannot render txt2img"):
            b.render([request()])
        parent = ParentImage(artifact_id="p2", image=Image.new("RGB", (32, 32), "white"), request=request())
        refined = b.refine(parent, b.prepare(request(parent_id="p2", strength=0.5)))
    finally:
        b.close()
    assert refined.image.size == (64, 64)  # the parent was resized to the request's size before upload
    assert refined.info["workflow"].endswith("refine-only.json")


def test_missing_workflow_file(tmp_path):
    b = backend(closed_port_url(), comfyui_workflow=str(tmp_path / "nope.json"))
    with pytest.raises(NotFoundError, match="does not exist"):
        b.describe()


# -- availability, retries, timeouts, interrupts -----------------------------------------------


def test_server_down_is_unavailable_after_retries():
    url = closed_port_url()
    b = backend(url)
    reason = b.check_usable()
    assert reason is not None and f"ComfyUI server at {url} is not reachable" in reason
    with pytest.raises(BackendUnavailableError) as caught:
        b.describe()  # needs the server's checkpoint list
    text = one_line(caught.value)
    assert text.startswith(f"ComfyUI server at {url} is not reachable (")
    assert text.endswith("); start it or set --comfyui-url / ECHO_COMFYUI_URL")
    b2 = backend(url, model="given.safetensors")  # no checkpoint lookup: fails at the prompt instead
    with pytest.raises(BackendUnavailableError, match="not reachable"):
        render(b2, [request()])


def test_5xx_is_retried_then_succeeds():
    with running_comfyui_server(fail_first_requests=2) as (url, state):
        b = backend(url)
        try:
            images = render(b, [request()])
        finally:
            b.close()
        assert state.failed_requests == 2
        assert state.requests[:3] == [("GET", "/object_info/CheckpointLoaderSimple")] * 3
    assert len(images) == 1


def test_retried_prompt_is_not_queued_twice():
    """The server queued the prompt but its answer was lost (500): the retry finds our prompt_id in
    the queue or history and does not post it again."""
    with running_comfyui_server(lose_prompt_answers=1) as (url, state):
        b = backend(url, model="sd15-test.safetensors")
        try:
            images = render(b, [request()])
        finally:
            b.close()
        assert state.requests.count(("POST", "/prompt")) == 1
        assert list(state.prompts) == [images[0].info["comfyui_prompt_id"]]


def test_5xx_that_persists_is_unavailable():
    with running_comfyui_server(fail_first_requests=100) as (url, state):
        b = backend(url)
        with pytest.raises(BackendUnavailableError, match=r"not reachable \(HTTP 500 from GET /object_info"):
            b.describe()
        b.close()
        assert state.failed_requests == 3  # FAST["tries"]


def test_slow_prompt_times_out_and_is_interrupted():
    # 100 steps x 0.2 s can never finish inside the 0.5 s timeout
    with running_comfyui_server(step_delay_s=0.2) as (url, state):
        b = backend(url, comfyui_timeout_s=0.5)
        try:
            with pytest.raises(ComfyUITimeoutError) as caught:
                render(b, [request(steps=100)])
        finally:
            b.close()
        (prompt_id,) = state.prompts
        assert {"prompt_id": prompt_id} in state.interrupts and prompt_id in state.queue_deletes
    assert f"did not finish prompt {prompt_id} within 0.5 s" in one_line(caught.value)


def _dagster_interrupt() -> type[BaseException]:
    # What a Dagster step sees when its run is terminated or the CLI gets Ctrl-C/SIGTERM.
    from dagster._core.errors import DagsterExecutionInterruptedError

    return DagsterExecutionInterruptedError


@pytest.mark.parametrize("stop", [KeyboardInterrupt, Interrupted, _dagster_interrupt()])
def test_interrupt_while_waiting_cancels_on_the_server(stop):
    with running_comfyui_server(step_delay_s=0.05) as (url, state):
        b = backend(url)

        def ctrl_c(done: int, total: int) -> None:
            raise stop()

        try:
            with pytest.raises(stop):
                render(b, [request(steps=200)], ctrl_c)
        finally:
            b.close()
        (prompt_id,) = state.prompts
        assert state.interrupts == [{"prompt_id": prompt_id}]
        assert state.queue_deletes == [prompt_id]



def test_server_view_and_upload_rules(server):
    url, state = server
    with httpx.Client(base_url=url) as http:
        assert http.get("/view", params={"filename": "../secret.png"}).status_code == 400
        assert http.get("/view", params={"filename": "missing.png"}).status_code == 404
        assert http.get("/api/system_stats").status_code == 200
        names = []
        for color in ("red", "red", "blue"):
            buffer = io.BytesIO()
            Image.new("RGB", (4, 4), color).save(buffer, "PNG")
            names.append(http.post("/upload/image", files={"image": ("same.png", buffer.getvalue(), "image/png")},
                                   data={"type": "input"}).json()["name"])
    assert names == ["same.png", "same.png", "same (1).png"]


def test_editing_a_workflow_changes_the_request_id(tmp_path):
    template = json.loads((REPO_CONFIG_DIR / "comfyui" / "txt2img.json").read_text())
    first = write(tmp_path, template, "mine.json")
    edited = json.loads(json.dumps(template))
    sampler = next(n for n, spec in edited.items() if spec["class_type"] == "KSampler")
    edited[sampler]["inputs"]["denoise"] = 0.5
    second = write(tmp_path, edited, "edited.json")
    ids = []
    for path in (first, first, second):
        b = ComfyUIBackend(BackendConfig(comfyui_workflow=path, model="sd15-test.safetensors"))
        ids.append(b.prepare(request(1)).request_id)
    assert ids[0] == ids[1] != ids[2]
