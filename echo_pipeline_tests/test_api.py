"""The REST API: the real server (`echo-os serve`) on loopback, driven over HTTP, plus the logic
under it (the catalog listing, the run queue) as plain Python.

One server per module (starting one costs seconds); its runs render 64x64 images, one or two at a
time. Tests that share it name their own projects, so they do not depend on each other's images.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from echo_pipeline.settings import REPO_CONFIG_DIR, Settings

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DONE = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class Server:
    url: str
    settings: Settings
    client: httpx.Client


@pytest.fixture(scope="module")
def server(tmp_path_factory, _dagster_home_template):
    """`echo-os serve --port 0` in its own process, config dir, artifact root and DAGSTER_HOME."""
    work = tmp_path_factory.mktemp("api-server")
    configs = work / "configs"
    shutil.copytree(REPO_CONFIG_DIR, configs, ignore=shutil.ignore_patterns("user.json", "projects"))
    (configs / "projects").mkdir()
    home = work / "dagster_home"
    shutil.copytree(_dagster_home_template, home)
    env = dict(os.environ, ECHO_API_TOKEN=TOKEN, DAGSTER_HOME=str(home), ECHO_CONFIG_DIR=str(configs),
               ECHO_ARTIFACT_ROOT=str(work / "artifacts"), OMP_NUM_THREADS="1")
    log_path = work / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "echo_pipeline.cli.app", "serve", "--port", "0"],
                                   env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = _wait_for_url(process, log_path)
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/api/health").json()["writes"] == "token"
            yield Server(url, Settings.load(artifact_root=str(work / "artifacts"), config_dir=configs), client)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log_path.read_text()
    assert "stopped" in log_path.read_text()


def _wait_for_url(process: subprocess.Popen, log_path: Path, timeout: float = 60) -> str:
    import re

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"serving (http://127\.0\.0\.1:\d+)", log_path.read_text())
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {log_path.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"the server did not start: {log_path.read_text()}")


def _finished(client: httpx.Client, run_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/api/runs/{run_id}")
        assert response.status_code == 200, response.text
        if response.json()["status"] in DONE:
            return response.json()
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish: {response.json()}")


def _project(server: Server, name: str) -> str:
    """A project of 64x64 images, two per batch (its spec only: runs make the rest)."""
    from echo_pipeline.workflows.creative_engine import CreativeEngine

    spec = CreativeEngine(server.settings).projects.create(name, "warm fractal, no human forms", count=2, width=64,
                                                           height=64)
    return spec.slug


def _accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] in {"QUEUED", "STARTING", "STARTED", "SUCCESS"}
    assert response.headers["Location"] == body["links"]["self"] == f"/api/runs/{body['run_id']}"
    return body["run_id"]


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) <= {"code", "message", "field"} and error["message"] and "\n" not in error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


# -- over HTTP ----------------------------------------------------------------------------------------
@pytest.mark.slow(seconds=10)
def test_render_then_refine_over_http_images_are_the_catalogued_ones(server):
    """Render, list, download, refine; then a 3D model and its files (the media endpoints)."""
    client = server.client
    _project(server, "API Render")
    run_id = _accepted(client.post("/api/render", headers=AUTH, json={"prompt": "warm fractal", "project": "api render",
                                                                      "count": 2}))
    run = _finished(client, run_id)
    assert run["status"] == "SUCCESS" and run["job"] == "render_job" and run["kind"] == "render", run
    assert run["project"] == "api-render" and run["progress"] == {"done": 2.0, "total": 2}
    new = run["result"]["new"]
    assert len(new) == 2 and run["result"]["already_stored"] == []

    page = client.get("/api/artifacts", params={"project": "api render"}).json()
    assert {i["artifact_id"] for i in page["items"]} == set(new) and page["total"] == 2 and page["next"] is None
    assert all(i["run_id"] == run_id and (i["width"], i["height"]) == (64, 64) for i in page["items"])
    from echo_pipeline.artifacts.storage import ArtifactStore

    catalog = ArtifactStore(server.settings.artifact_root).catalog("api-render").set_index("artifact_id")
    item = page["items"][0]
    image = client.get(item["links"]["image"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert hashlib.sha256(image.content).hexdigest() == catalog.loc[item["artifact_id"], "sha256"]
    assert image.headers["ETag"] == f'"{catalog.loc[item["artifact_id"], "sha256"]}"'
    assert client.get(item["links"]["image"], headers={"If-None-Match": image.headers["ETag"]}).status_code == 304
    record = client.get(f"/api/artifacts/{item['artifact_id'][:8]}").json()
    assert record["artifact_id"] == item["artifact_id"] and record["request"]["prompt"] == "warm fractal"

    refined = _finished(client, _accepted(client.post("/api/refine", headers=AUTH, json={
        "artifact": item["artifact_id"], "prompt": "add rain effects"})))
    assert refined["status"] == "SUCCESS" and refined["kind"] == "refine", refined
    (child,) = refined["result"]["new"]
    children = client.get("/api/artifacts", params={"parent": item["artifact_id"]}).json()["items"]
    assert [c["artifact_id"] for c in children] == [child]
    assert children[0]["prompt"].startswith("warm fractal, rain effects") and children[0]["strength"] == 0.5
    _a_3d_model_over_http_with_its_files(server)  # on the same server: one start-up for both


def _a_3d_model_over_http_with_its_files(server):
    client = server.client
    run_id = _accepted(client.post("/api/render", headers=AUTH, json={
        "prompt": "sword design", "media_type": "3d_model", "method": "heightfield", "width": 64, "height": 64}))
    run = _finished(client, run_id)
    assert run["status"] == "SUCCESS", run
    records = [client.get(f"/api/artifacts/{i}").json() for i in run["result"]["new"]]
    (model,) = [r for r in records if r["request"]["media_type"] == "3d_model"]
    assert set(model["info"]["inputs"]) == {"concept", "texture"}
    glb = client.get(model["links"]["file:model.glb"])
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    assert glb.content[:4] == b"glTF" and hashlib.sha256(glb.content).hexdigest() == model["info"]["media_files"][
        "model.glb"]["sha256"]
    _error(client.get(f"/api/artifacts/{model['artifact_id']}/files/video.mp4"), 404, "not_found")
    _error(client.post("/api/render", headers=AUTH, json={"prompt": "x", "frames": 12}), 422)


@pytest.mark.slow(seconds=9)
def test_two_concurrent_batches_of_one_project_both_finish_without_duplicates(server):
    _project(server, "API Batch")
    answers: list[httpx.Response] = []
    posts = [threading.Thread(target=lambda: answers.append(
        server.client.post("/api/batch", headers=AUTH, json={"project": "api batch"}))) for _ in range(2)]
    for post in posts:
        post.start()
    for post in posts:
        post.join()
    runs = [_finished(server.client, _accepted(answer), timeout=120) for answer in answers]
    assert all(r["status"] == "SUCCESS" and r["job"] == "batch" for r in runs), runs
    assert sorted(r["result"]["batch"] for r in runs) == [0, 1]  # one after the other, the next batch each
    new = [a for r in runs for a in r["result"]["new"]]
    assert len(new) == len(set(new)) == 4
    assert all(r["result"]["scores"]["mean_total"] is not None for r in runs)
    listed = server.client.get("/api/artifacts", params={"project": "api-batch", "sort": "score"}).json()
    assert listed["total"] == 4 and all(i["score"] is not None for i in listed["items"])
    scores = [i["score"] for i in listed["items"]]
    assert scores == sorted(scores, reverse=True)

    gallery = server.client.get("/api/gallery", params={"project": "api batch", "filter": "top:3"}).json()
    assert gallery["filter"] == "top:3" and [i["id"] for i in gallery["items"]] == [
        i["artifact_id"] for i in listed["items"][:3]]
    assert gallery["items"][0]["links"]["image"].startswith("/api/artifacts/")


def test_writes_need_the_bearer_token_and_reads_do_not(server):
    client = server.client
    bodies = {"/api/render": {"prompt": "x"}, "/api/batch": {"project": "x"}, "/api/refine": {"artifact": "abcd"},
              "/api/style": {"name": "x", "prompt": "y"}}
    for path, body in bodies.items():
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            response = client.post(path, json=body, headers=headers)
            _error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/artifacts").status_code == 200
    assert client.get("/docs").status_code == 200 and "/api/render" in client.get("/openapi.json").json()["paths"]
    docs = client.get("/docs").text  # Swagger UI from the installed bundle: the docs work offline
    assert "cdn." not in docs and "/docs-assets/swagger-ui-bundle.js" in docs
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_styles_are_created_then_replaced_and_builtin_ones_refused(server):
    client = server.client
    created = client.post("/api/style", headers=AUTH, json={"name": "API Glow", "prompt": "{prompt}, glowing"})
    assert created.status_code == 201 and created.json() == {"name": "API Glow", "prompt": "{prompt}, glowing",
                                                             "negative_prompt": "", "source": "user"}
    replaced = client.post("/api/style", headers=AUTH, json={"name": "API Glow", "prompt": "{prompt}, neon glow",
                                                             "negative_prompt": "blur"})
    assert replaced.status_code == 200 and replaced.json()["prompt"] == "{prompt}, neon glow"
    _error(client.post("/api/style", headers=AUTH, json={"name": "digital art", "prompt": "x"}), 409, "builtin_style")
    from echo_pipeline.render.style_manager import StyleLibrary

    assert StyleLibrary(server.settings.styles_dir).get("api glow").negative_prompt == "blur"


def test_an_idempotency_key_returns_the_first_run(server):
    client = server.client
    body = {"prompt": "cool waves", "project": _project(server, "API Idempotent")}
    first = _accepted(client.post("/api/render", headers=AUTH | {"Idempotency-Key": "retry-1"}, json=body))
    again = client.post("/api/render", headers=AUTH | {"Idempotency-Key": "retry-1"}, json=body)
    assert _accepted(again) == first and again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/api/render", headers=AUTH | {"Idempotency-Key": "retry-1"}, json=body | {"seed": 7})
    assert "different request" in _error(other, 422, "idempotency_conflict")["message"]
    assert _finished(client, first)["status"] == "SUCCESS"
    # After the run: the same answer, now from the tags on the Dagster run as well.
    assert _accepted(client.post("/api/render", headers=AUTH | {"Idempotency-Key": "retry-1"}, json=body)) == first
    _error(client.post("/api/render", headers=AUTH | {"Idempotency-Key": "bad key!"}, json=body), 422)


def test_errors_are_one_json_shape_with_the_right_status(server):
    client = server.client
    _error(client.get("/api/nothing-here"), 404, "not_found")
    _error(client.delete("/api/health"), 405, "method_not_allowed")
    assert _error(client.post("/api/render", headers=AUTH, json={"prompt": "x", "count": 0}), 422)["field"] == "body.count"
    assert _error(client.post("/api/render", headers=AUTH, json={"prompt": "x", "bogus": 1}), 422)["field"] == "body.bogus"
    assert _error(client.post("/api/render", headers=AUTH, json={"prompt": "x", "count": 10**12}), 422)["field"] == "body.count"
    assert _error(client.post("/api/render", headers=AUTH, json={"prompt": "x", "width": 99999}), 422)["field"] == "body.width"
    assert _error(client.post("/api/render", headers=AUTH, json={"prompt": "x" * 5000}), 422)["field"] == "body.prompt"
    assert _error(client.post("/api/render", headers=AUTH, json={"prompt": "a\x1b[2Jb"}), 422)["field"] == "body.prompt"
    _error(client.post("/api/render", headers=AUTH | {"content-type": "application/json"}, content=b"{not json"), 422)
    _error(client.post("/api/render", headers=AUTH, json={"prompt": "warm fractal", "style": "no-such-style"}), 404,
           "not_found")
    _error(client.post("/api/batch", headers=AUTH, json={"project": "never made"}), 404, "not_found")
    _error(client.post("/api/render", headers=AUTH, json={"prompt": "x", "strength": 0.5}), 422, "invalid_input")
    _error(client.post("/api/render", headers=AUTH, content=b'{"prompt": "' + b"a" * 70_000 + b'"}'), 413,
           "payload_too_large")
    chunks = (b"a" * 8192 for _ in range(10))  # no Content-Length: streamed
    _error(client.post("/api/render", headers=AUTH, content=chunks), 413, "payload_too_large")

    for traversal in ("..%2F..%2Fetc%2Fpasswd", "..%2F..%2Fetc%2Fpasswd/image", "%2E%2E%2F%2E%2E%2Fetc",
                      "....", "a..b"):
        response = client.get(f"/api/artifacts/{traversal}")
        assert response.status_code in (404, 422) and "root:" not in response.text, response.text
        _error(response, response.status_code)
    _error(client.get("/api/artifacts/ffffffffffff"), 404, "not_found")
    _error(client.get("/api/artifacts/abc"), 422)  # shorter than a usable prefix
    _error(client.get("/api/runs/not-a-run-id"), 422)
    _error(client.get("/api/runs/00000000-0000-4000-8000-000000000000"), 404, "not_found")
    assert _error(client.get("/api/artifacts", params={"limit": 0}), 422)["field"] == "query.limit"
    assert _error(client.get("/api/artifacts", params={"colour": "red"}), 422)["field"] == "query.colour"
    _error(client.get("/api/artifacts", params={"since": "yesterday"}), 422)
    _error(client.get("/api/artifacts", params={"project": "../etc"}), 422)
    _error(client.get("/api/gallery", params={"filter": "top:0"}), 422, "invalid_input")


# -- in process ---------------------------------------------------------------------------------------
def test_serve_refuses_a_public_address_without_a_token_and_a_port_in_use(cli, monkeypatch):
    import socket

    monkeypatch.delenv("ECHO_API_TOKEN", raising=False)
    code, _, err = cli("serve", "--host", "0.0.0.0")
    assert code == 2 and "without an API token" in err and len(err.strip().splitlines()) == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = cli("serve", "--port", str(taken.getsockname()[1]))
    assert code == 2 and "cannot listen on 127.0.0.1" in err


def test_the_serving_line_means_a_client_can_connect(cli, monkeypatch):
    """A client that connects as soon as it reads "serving http://…" is queued until the app has
    started, not refused (a startup race that failed the S3 test now and then under load)."""
    import socket

    import uvicorn

    connected: list[bool] = []

    def starting_slowly(self, sockets):  # the moment before uvicorn starts accepting
        try:
            with socket.create_connection(sockets[0].getsockname(), timeout=5):
                connected.append(True)
        except ConnectionRefusedError:
            connected.append(False)

    monkeypatch.setattr(uvicorn.Server, "run", starting_slowly)
    code, out, err = cli("serve", "--port", "0")
    assert code == 0, err
    assert "serving http://127.0.0.1:" in out + err and connected == [True]


def test_without_a_token_writes_come_from_loopback_only(settings):
    from fastapi.testclient import TestClient

    from echo_pipeline.api.app import create_app

    app = create_app(settings)  # no token; the test client's address is "testclient", not loopback
    with TestClient(app) as client:
        assert client.get("/api/health").json()["writes"] == "loopback"
        assert "loopback only" in _error(client.post("/api/style", json={"name": "a", "prompt": "b"}), 401)["message"]


def test_the_listing_filters_sorts_pages_and_sees_new_catalog_parts(settings):
    from echo_pipeline.api.catalog import ArtifactQuery, CatalogIndex
    from echo_pipeline.artifacts.records import ArtifactRecord
    from echo_pipeline.artifacts.storage import ArtifactStore
    from echo_pipeline.render.backends.base import BackendDescription
    from echo_pipeline.render.requests import RenderRequest
    from echo_pipeline.resonance.memory_system import save_scores

    store = ArtifactStore.open(settings.artifact_root)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def records(prompt: str, style: str | None, first: int, n: int) -> list[ArtifactRecord]:
        out = []
        for k in range(first, first + n):
            request = RenderRequest(prompt=f"{prompt} {k}", seed=k, width=64, height=64, style=style, project="p")
            out.append(ArtifactRecord(artifact_id=request.request_id, project="p", request=request,
                                      backend=BackendDescription(backend="procedural", model="m"),
                                      created=start + timedelta(hours=k)))
        return out

    fractals, waves = records("warm fractal", "digital art", 0, 6), records("cool waves", None, 6, 4)
    store.append_catalog("p", fractals)
    store.append_catalog("p", waves)
    save_scores(store, "p", __import__("pandas").DataFrame(
        {"artifact_id": [r.artifact_id for r in fractals], "total": [50.0 + k for k in range(6)]}))
    index = CatalogIndex(store)
    items, total = index.query(ArtifactQuery(project="p", limit=3))
    assert total == 10 and [i["seed"] for i in items] == [9, 8, 7]  # newest first
    items, total = index.query(ArtifactQuery(style="Digital Art", sort="score", order="desc", limit=2, offset=1))
    assert total == 6 and [i["score"] for i in items] == [54.0, 53.0]
    assert index.query(ArtifactQuery(q="WAVES", min_score=0))[1] == 0  # unscored images have no score
    assert index.query(ArtifactQuery(q="waves"))[1] == 4
    assert index.query(ArtifactQuery(q="fractal"))[1] == 6 and index.query(ArtifactQuery(q="fractal 5"))[1] == 1
    assert index.query(ArtifactQuery(q="warm fractal 0"))[1] == 1 and index.query(ArtifactQuery(q="waves 9"))[1] == 1
    assert index.query(ArtifactQuery(q="5 cool"))[1] == 0  # a match never spans two rows
    assert index.query(ArtifactQuery(since=start + timedelta(hours=8), until=start + timedelta(hours=9)))[1] == 2
    assert index.query(ArtifactQuery(max_score=51.5))[1] == 2
    assert index.table("p") is index.table("p")  # cached while the parts stay the same
    store.append_catalog("p", records("neon city", None, 10, 1))
    items, total = index.query(ArtifactQuery(limit=1))
    assert total == 11 and items[0]["prompt"] == "neon city 10"


def test_the_run_queue_serialises_a_project_bounds_its_size_and_reports_failures(settings):
    from echo_pipeline.api.runs import QueueFullError, RequestKey, RunQueue
    from echo_pipeline.errors import ProjectBusyError

    queue = RunQueue(workers=2, limit=3)
    gate = threading.Event()
    order: list[str] = []

    def work(name: str, fail: bool = False):
        def run(run_id: str, _run) -> dict:
            order.append(f"start {name}")
            gate.wait(10)
            order.append(f"end {name}")
            if fail:
                raise ProjectBusyError(f"project of {name} is busy")
            return {"name": name}
        return run

    try:
        first, _ = queue.submit("render", "a", work("a1"))
        second, _ = queue.submit("render", "a", work("a2", fail=True))
        other, _ = queue.submit("render", "b", work("b1"))
        with pytest.raises(QueueFullError):
            queue.submit("render", "c", work("c1"))
        deadline = time.monotonic() + 10
        while len(order) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(order) == ["start a1", "start b1"]  # a2 waits for a1, though a worker is free
        assert queue.status(second)["status"] == "QUEUED" and queue.counts() == (1, 2)
        gate.set()
        deadline = time.monotonic() + 10
        while not all(queue.get(r).finished for r in (first, second, other)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert order.index("end a1") < order.index("start a2")
        assert queue.status(first)["result"] == {"name": "a1"} and queue.status(first)["status"] == "SUCCESS"
        failed = queue.status(second)
        assert failed["status"] == "FAILURE" and failed["error"] == {"code": "project_busy",
                                                                     "message": "project of a2 is busy"}
        key = RequestKey.of("k", "POST", "/api/render", "{}")
        replayed, again = queue.submit("render", "a", work("a3"), request=key)[0], queue.submit(
            "render", "a", work("a4"), request=key)
        assert again == (replayed, True)
    finally:
        gate.set()
        queue.close()


def test_times_outside_nanosecond_range_select_nothing_or_everything():
    """`since=2263-01-01` (past pandas' nanosecond range) is a date like any other: no overflow (a 500)."""
    from datetime import datetime, timezone

    from echo_pipeline.api.catalog import _utc_ns

    assert _utc_ns(datetime(2263, 1, 1, tzinfo=timezone.utc)) > _utc_ns(datetime(2262, 1, 1, tzinfo=timezone.utc))
    assert _utc_ns(datetime(1, 1, 1)) < _utc_ns(datetime(1700, 1, 1)) < _utc_ns(datetime(2026, 1, 1))
