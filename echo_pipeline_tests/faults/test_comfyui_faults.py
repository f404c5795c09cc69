"""ComfyUI faults through `echo-os render --backend comfyui`: the server killed mid-prompt, too slow,
and answering every error shape /work/shared/PROTOCOLS.md names (each validation error type, the
execution error, an interrupt from another client, a lasting 5xx) in the middle of a batch.

Each fault must end the command with one clear line on stderr (exit 2, no traceback) and leave a
store the next run resumes from: the images made before the fault are stored and catalogued,
`verify` is clean, no temporary file is left, and the next run renders only what is missing.
The protocol details of each shape (the exact line) are test_comfyui.py's; here the faults arrive
mid-batch, through the whole command, one after another on the same store.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from echo_pipeline_tests.comfyui_server import ServerState, running_comfyui_server

pytestmark = pytest.mark.fault

SIZE = "64x64"
STEPS = "4"


def _render_args(url: str, prompt: str) -> list[str]:
    return ["--comfyui-url", url, "render", prompt, "--backend", "comfyui", "--size", SIZE, "--steps", STEPS,
            "--json"]


def _delete(path: tuple[str, ...]) -> Callable[[dict], None]:
    def change(prompt: dict) -> None:
        node, key = path
        del prompt[node]["inputs"][key]
    return change


def _set(node: str, key: str, value: Any) -> Callable[[dict], None]:
    def change(prompt: dict) -> None:
        prompt[node]["inputs"][key] = value
    return change


def _missing_input_image(prompt: dict) -> None:
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "deleted-on-the-server.png"}}
    prompt["9"]["inputs"]["images"] = ["10", 0]


# (name, how the workflow arrives changed, what the one line says). A server updated between two
# prompts of a batch: nodes' limits, inputs or packs changed, a model or an input file removed.
VALIDATION_SHAPES: list[tuple[str, Callable[[dict], None], str]] = [
    ("required_input_missing", _delete(("3", "cfg")), "node 3 (KSampler) input 'cfg': Required input is missing"),
    ("invalid_input_type", _set("3", "steps", "many"),
     "node 3 (KSampler) input 'steps': Failed to convert an input value to a INT value"),
    ("value_bigger_than_max", _set("3", "cfg", 1000.0), "node 3 (KSampler) input 'cfg': Value 1000.0 bigger than max"),
    ("value_smaller_than_min", _set("3", "steps", 0), "node 3 (KSampler) input 'steps': Value 0 smaller than min of 1"),
    ("return_type_mismatch", _set("3", "model", ["6", 0]),
     "node 3 (KSampler) input 'model': Return type mismatch between linked nodes"),
    ("custom_validation_failed", _missing_input_image,
     "node 10 (LoadImage) input 'image': Custom validation failed for node"),
    ("exception_during_inner_validation", lambda p: p["5"].update(inputs=5),
     "node 5 (EmptyLatentImage): Exception when validating inner node"),
    ("invalid_prompt", lambda p: p.update({"12": {"class_type": "NoSuchNode", "inputs": {}}}),
     "Cannot execute because node NoSuchNode does not exist"),
    ("prompt_no_outputs", lambda p: p.pop("9"), "Prompt has no outputs; the workflow needs an output node"),
]


class Faults:
    """Arms one fault at a time on the loopback server: the first prompt of a run passes (its image
    is stored), every later prompt of that run meets the fault."""

    def __init__(self, url: str, state: ServerState):
        self.url, self.state = url, state
        self.fault: Callable[[dict], dict] | None = None
        self.prompts_this_run = 0
        self.stop_interrupting = threading.Event()
        state.on_prompt = self._on_prompt

    def arm(self, fault: Callable[[dict], dict] | None) -> None:
        self.fault, self.prompts_this_run = fault, 0

    def disarm(self) -> None:
        self.stop_interrupting.set()
        state = self.state
        state.fail_node, state.step_delay_s = None, 0.0
        state.fail_first_requests = state.failed_requests  # no more 5xx
        state.checkpoints = ["sd15-test.safetensors", "sdxl-test.safetensors"]
        self.arm(None)

    def _on_prompt(self, body: dict) -> dict:
        self.prompts_this_run += 1
        if self.fault is None or self.prompts_this_run == 1:
            return body
        return self.fault(copy.deepcopy(body))

    # -- the faults ---------------------------------------------------------------------------
    def workflow_changed(self, change: Callable[[dict], None]) -> Callable[[dict], dict]:
        def fault(body: dict) -> dict:
            change(body["prompt"])
            return body
        return fault

    def no_prompt(self, body: dict) -> dict:
        body.pop("prompt")
        return body

    def model_removed(self, body: dict) -> dict:
        self.state.checkpoints = ["another-model.safetensors"]
        return body

    def node_fails(self, body: dict) -> dict:
        self.state.fail_node = "8"
        return body

    def server_errors(self, body: dict) -> dict:
        self.state.fail_first_requests = 10**9  # every HTTP request from now on answers 500
        return body

    def slow(self, body: dict) -> dict:
        self.state.step_delay_s = 2.0  # 4 steps: 8 s against the 3 s comfyui_timeout_s of that run
        return body

    def interrupted(self, body: dict) -> dict:
        """Another client presses Cancel while this prompt samples (slowed so it is still running)."""
        self.state.step_delay_s = 0.25
        self.stop_interrupting = stop = threading.Event()
        prompt_id = body.get("prompt_id")

        def press_cancel() -> None:
            while not stop.is_set() and prompt_id not in self.state.history:
                time.sleep(0.1)
                if prompt_id in self.state.finished:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(self.url + "/interrupt", json={}, timeout=5)

        threading.Thread(target=press_cancel, daemon=True).start()
        return body


def _one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]


def _store_state(artifact_root: Path, project: str = "default") -> tuple[set[str], list[str]]:
    """(catalogued ids, problems): verify's findings, orphan PNGs and temporary files."""
    from echo_pipeline.artifacts.storage import ArtifactStore

    store = ArtifactStore(str(artifact_root))
    catalog = store.catalog(project)
    ids = set(catalog["artifact_id"])
    problems = [p.line() for p in store.verify(project).problems]
    problems += [str(p) for p in artifact_root.rglob("*") if ".tmp-" in p.name]
    pngs = {p.stem for p in (artifact_root / "projects" / project / "images").glob("*.png")}
    problems += [f"{i}.png not catalogued" for i in pngs - ids]
    assert catalog["artifact_id"].is_unique
    return ids, problems


@pytest.mark.slow(seconds=50)
def test_every_error_shape_mid_batch_is_one_line_and_the_next_run_resumes(cli, artifact_root, config_dir):
    with running_comfyui_server() as (url, state):
        faults = Faults(url, state)
        shapes: list[tuple[str, Callable[[dict], dict], str]] = [
            (name, faults.workflow_changed(change), expected) for name, change, expected in VALIDATION_SHAPES
        ]
        shapes += [
            ("value_not_in_list", faults.model_removed,
             "node 4 (CheckpointLoaderSimple) input 'ckpt_name': Value not in list"),
            ("no_prompt", faults.no_prompt, "No prompt provided; the request carried no workflow"),
            ("execution_error", faults.node_fails,
             "ComfyUI failed in node 8 (VAEDecode): RuntimeError: simulated failure"),
            ("execution_interrupted", faults.interrupted, "node 3 (KSampler): Cancel was pressed in ComfyUI"),
            ("http_5xx", faults.server_errors, f"ComfyUI server at {url} is not reachable (HTTP 500 from"),
            ("slow", faults.slow, "did not finish prompt"),
        ]
        total = len(shapes) + 3
        prompt = f"lighthouse at dusk 01-{total:02d}"
        args = _render_args(url, prompt)
        stored: set[str] = set()
        for name, fault, expected in shapes:
            settings_file = config_dir / "settings.yaml"
            if name == "slow":
                settings_file.write_text("backends:\n  comfyui_timeout_s: 3\n")
            faults.arm(fault)
            try:
                code, _, err = cli(*args)
            finally:
                faults.disarm()
                settings_file.unlink(missing_ok=True)
            _one_line_error(code, err, expected)
            ids, problems = _store_state(artifact_root)
            assert not problems, (name, problems)
            # The image made before the fault is stored and catalogued; nothing was lost.
            assert stored < ids and len(ids) == len(stored) + 1, (name, len(stored), len(ids))
            stored = ids

        # The next run (through a dropped websocket, a lost answer and two 5xx) renders only what is missing.
        state.drop_ws_after_steps, state.lose_prompt_answers = 2, 1
        state.fail_first_requests = state.failed_requests + 2
        posted_before = len(state.prompts)
        code, out, err = cli(*args)
        assert code == 0, err
        payload = json.loads(out)
        assert payload["already_stored"] == len(shapes) and payload["new"] == total - len(shapes)
        assert len(state.prompts) - posted_before == total - len(shapes), "a prompt was queued twice"
    ids, problems = _store_state(artifact_root)
    assert len(ids) == total and not problems


@pytest.mark.slow(seconds=12)
def test_server_killed_mid_prompt_then_restarted_resumes(cli, artifact_root, tmp_path):
    """SIGKILL of the ComfyUI process while a prompt samples: one line naming the unreachable
    server; the images before it are kept, and the run against the restarted server (a new port)
    renders only the rest."""
    root = tmp_path / "comfyui"

    def start_server() -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen([sys.executable, "-m", "echo_pipeline_tests.faults.comfyui_process", str(root), "0.1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        return proc, proc.stdout.readline().strip()

    images = artifact_root / "projects" / "default" / "images"
    server, url = start_server()
    killed_at: list[int] = []

    def kill_after_two_images() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(images.glob("*.png"))) < 2:
            time.sleep(0.01)
        time.sleep(0.15)  # into the third prompt's 0.4 s of sampling
        server.send_signal(signal.SIGKILL)
        killed_at.append(len(list(images.glob("*.png"))))

    watcher = threading.Thread(target=kill_after_two_images, daemon=True)
    watcher.start()
    args = _render_args(url, "harbour lights 01-08")
    try:
        code, _, err = cli(*args)
    finally:
        watcher.join(timeout=130)
        server.kill()
        server.wait()
    _one_line_error(code, err, f"ComfyUI server at {url} is not reachable (")
    assert err.strip().endswith("start it or set --comfyui-url / ECHO_COMFYUI_URL"), err
    ids, problems = _store_state(artifact_root)
    assert not problems and len(ids) == killed_at[0] >= 2

    server, url = start_server()
    try:
        code, out, err = cli(*_render_args(url, "harbour lights 01-08"))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    assert code == 0, err
    payload = json.loads(out)
    assert payload["already_stored"] == len(ids) and payload["new"] == 8 - len(ids)
    ids, problems = _store_state(artifact_root)
    assert len(ids) == 8 and not problems
    assert os.environ.get("ECHO_COMFYUI_URL") is None  # the URL came from --comfyui-url only
