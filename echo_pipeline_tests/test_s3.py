"""Artifacts on `s3://` for real: s3fs against moto's S3 server on loopback (echo_pipeline_tests/s3_server.py).

Main suite (marked `s3`): one small batch through the real CLI while a second client reads every
object that appears (none is ever half-written, no temporary key ever shows), then the reading
commands (artifacts list/show/verify, gallery, export nft) and the REST API against the same
bucket, each seeing what the other process wrote; and an upload cut in the middle leaves nothing
under its key. Fault suite (marked `fault` too): SIGKILL mid-batch, and the endpoint down
mid-batch then back (a pausable TCP proxy in front of moto, which keeps its objects in memory).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from echo_pipeline_tests.conftest import _processes_with
from echo_pipeline_tests.s3_server import stop

pytestmark = pytest.mark.s3

FINAL_SUFFIXES = (".png", ".jpg", ".parquet", ".json")


def _client(url: str):
    import boto3

    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def _bucket(root: str) -> tuple[str, str]:
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    return bucket, prefix


def _keys(client, root: str, under: str = "") -> dict[str, int]:
    """{key: size} of every object under the root (or `under` below it), through every page."""
    bucket, prefix = _bucket(root)
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/{under}"):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out


def _whole(key: str, data: bytes) -> str | None:
    """Why the bytes under `key` are not a whole file of its kind (None when they are)."""
    from PIL import Image

    try:
        if key.endswith((".png", ".jpg")):
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        elif key.endswith(".parquet"):
            import pyarrow.parquet as pq

            pq.read_table(io.BytesIO(data))
        elif key.endswith(".json"):
            json.loads(data)
    except Exception as exc:
        return f"{key}: {exc}"
    return None


class Reader(threading.Thread):
    """A second S3 client that lists the store over and over while a batch writes, and reads every
    new object under a final name (PNG, JPEG, parquet, JSON) right away: each must be whole."""

    def __init__(self, url: str, root: str):
        super().__init__(daemon=True)
        self.client, self.root = _client(url), root
        self.stop = threading.Event()
        self.checked: dict[str, str] = {}  # key -> ETag read
        self.broken: list[str] = []
        self.tmp_keys: set[str] = set()
        self.listings = 0

    def run(self) -> None:
        bucket, _ = _bucket(self.root)
        while not self.stop.wait(0.02):  # a listing every 20 ms: the batch keeps most of the 2 cores
            self.sweep(bucket)
        self.sweep(bucket)  # and once more after the batch

    def sweep(self, bucket: str) -> None:
        listing = _keys(self.client, self.root)
        self.listings += 1
        for key in listing:
            if ".tmp-" in key:
                self.tmp_keys.add(key)
                continue
            if not key.endswith(FINAL_SUFFIXES) or key in self.checked:
                continue
            got = self.client.get_object(Bucket=bucket, Key=key)
            problem = _whole(key, got["Body"].read())
            if problem:
                self.broken.append(problem)
            self.checked[key] = got["ETag"]


def _store_state(root: str, project: str) -> tuple[list[str], list[str]]:
    """(the catalogued ids, the ids of the PNGs stored) of a project, as a fresh reader sees them."""
    from echo_pipeline.artifacts.storage import ArtifactStore

    store = ArtifactStore(root, read_only=True)
    images = store.fs.ls(f"{store.root}/projects/{project}/images", detail=False)
    return list(store.catalog(project)["artifact_id"]), sorted(Path(p).stem for p in images if p.endswith(".png"))


# -- main suite ---------------------------------------------------------------------------------------
@pytest.mark.slow(seconds=30)
def test_batch_commands_and_api_on_s3(cli, s3_root, s3_endpoint, monkeypatch, tmp_path, config_dir,
                                      _dagster_home_template):
    """A batch through the CLI with a concurrent reader, then every reading command and the API (a
    server started before the batch, so it must see another process's writes) on the bucket."""
    from echo_pipeline.artifacts.storage import ArtifactStore
    from echo_pipeline_tests.test_api import AUTH, TOKEN, _accepted, _finished, _wait_for_url

    monkeypatch.setenv("ECHO_ARTIFACT_ROOT", s3_root)
    client = _client(s3_endpoint.url)
    assert cli("plan", "S3 Batch", "warm fractal", "--size", "64", "--count", "4")[0] == 0

    # The API server first: it lists the empty store, so a cached listing would hide the batch.
    home = tmp_path / "server_home"
    import shutil

    shutil.copytree(_dagster_home_template, home)
    env = dict(os.environ, ECHO_API_TOKEN=TOKEN, DAGSTER_HOME=str(home), ECHO_CONFIG_DIR=str(config_dir),
               ECHO_ARTIFACT_ROOT=s3_root, OMP_NUM_THREADS="1")
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "echo_pipeline.cli.app", "serve", "--port", "0"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        import httpx

        api = httpx.Client(base_url=_wait_for_url(server, log_path), timeout=30)
        assert api.get("/api/artifacts", params={"project": "s3-batch"}).json()["total"] == 0

        reader = Reader(s3_endpoint.url, s3_root)
        reader.start()
        code, out, err = cli("batch", "s3-batch", "--json")
        reader.stop.set()
        reader.join(60)
        assert code == 0, err
        summary = json.loads(out)
        assert summary["new_images"] == 4 and summary["gallery"].startswith(s3_root) and not summary["file_problems"]
        # Every object a second client saw under a final name was whole, and no temporary key showed.
        images = [k for k in reader.checked if k.endswith(".png") and "/images/" in k]
        assert len(images) == 4 and any(k.endswith(".parquet") for k in reader.checked), sorted(reader.checked)
        # (The one temporary name there is the store's write probe, written and removed on opening.)
        assert [k for k in reader.tmp_keys if not k.startswith(f"{_bucket(s3_root)[1]}/.echo-probe.tmp-")] == []
        assert reader.broken == [] and reader.listings >= 2
        keys = _keys(client, s3_root)
        assert not [k for k in keys if ".tmp-" in k]

        # The server, started before the batch, sees it: its listing and image bytes are the catalog's.
        catalog = ArtifactStore(s3_root).catalog("s3-batch").set_index("artifact_id")
        page = api.get("/api/artifacts", params={"project": "s3-batch"}).json()
        assert page["total"] == 4 and {i["artifact_id"] for i in page["items"]} == set(catalog.index)
        image = api.get(page["items"][0]["links"]["image"])
        assert image.status_code == 200
        assert hashlib.sha256(image.content).hexdigest() == catalog.loc[page["items"][0]["artifact_id"], "sha256"]
        # ...and a batch it runs is seen by the CLI (another process) and by its own listing.
        run = _finished(api, _accepted(api.post("/api/batch", headers=AUTH, json={"project": "s3-batch"})),
                        timeout=120)
        assert run["status"] == "SUCCESS" and run["result"]["batch"] == 1, run
        assert api.get("/api/artifacts", params={"project": "s3-batch"}).json()["total"] == 8
        gallery = api.get("/api/gallery", params={"project": "s3-batch", "filter": "top:3"}).json()
        assert len(gallery["items"]) == 3
    finally:
        stop(server, grace=60)
    assert server.returncode == 0, log_path.read_text()

    code, out, err = cli("artifacts", "list", "-p", "s3-batch", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert len(listed) == 8 and all(r["image_path"].startswith(f"{s3_root}/projects/s3-batch/images/") for r in listed)
    code, out, err = cli("artifacts", "show", listed[0]["artifact_id"][:8], "--json")
    assert code == 0 and json.loads(out)["artifact_id"] == listed[0]["artifact_id"], err
    code, out, err = cli("artifacts", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] and json.loads(out)["images_checked"] == 8, out

    # The gallery is written into the bucket; --open cannot open an s3:// page and says so up front.
    code, out, err = cli("gallery", "-p", "s3-batch", "--json")
    assert code == 0, err
    html = json.loads(out)["html"]
    assert html == f"{s3_root}/projects/s3-batch/gallery/index.html"
    bucket, _ = _bucket(s3_root)
    page_html = client.get_object(Bucket=bucket, Key=html.removeprefix(f"s3://{bucket}/"))["Body"].read().decode()
    assert "data.js" in page_html
    code, out, err = cli("gallery", "-p", "s3-batch", "--open")
    assert code == 2 and "--open needs a page on this machine" in err and "--out DIR" in err
    assert len(err.strip().splitlines()) == 1
    # --out DIR: a browser cannot load s3:// links, so the page links to copies of what it shows.
    local_gallery = tmp_path / "gallery"
    code, out, err = cli("gallery", "-p", "s3-batch", "--out", str(local_gallery), "--json")
    assert code == 0, err
    data = json.loads((local_gallery / "data.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    assert len(data["entries"]) == 8
    for entry in data["entries"]:
        image = local_gallery / entry["image"]
        assert entry["image"].startswith("files/s3-batch/images/") and image.is_file()
        assert hashlib.sha256(image.read_bytes()).hexdigest() == entry["sha256"]
        assert (local_gallery / entry["thumb"]).is_file()

    # export nft reads the bucket and writes a local folder.
    code, out, err = cli("export", "nft", "-p", "s3-batch", "--out", str(tmp_path / "nft"), "--json")
    assert code == 0, err
    exported = json.loads(out)
    assert exported["token_count"] >= 1 and exported["images_in_project"] == 8
    pngs = sorted((tmp_path / "nft" / "images").glob("*.png"))
    assert len(pngs) == exported["token_count"] and all(p.stat().st_size > 0 for p in pngs)

    # reconcile removes a temporary key another writer left behind (a client of the old tmp+move).
    leftover = f"{_bucket(s3_root)[1]}/projects/s3-batch/images/{listed[0]['artifact_id']}.png.tmp-{uuid.uuid4().hex}"
    client.put_object(Bucket=bucket, Key=leftover, Body=b"half")
    report = ArtifactStore.open(s3_root).reconcile_report("s3-batch")
    assert report.tmp_removed == [f"s3://{bucket}/{leftover}"] and report.recovered == []
    assert leftover not in _keys(client, s3_root)


def test_an_upload_cut_in_the_middle_leaves_nothing_under_its_key(s3_endpoint, s3_root, monkeypatch):
    """`write_atomic` on S3 is one PUT to the final key: cut the connection halfway through the
    body (the endpoint "goes down") and the key holds nothing, nor any temporary key; the previous
    version of an object stays whole."""
    from echo_pipeline.artifacts.storage import ArtifactStore, store_unreachable
    from echo_pipeline.atomic import write_atomic
    from echo_pipeline_tests.s3_server import PausableProxy

    port = int(s3_endpoint.url.rsplit(":", 1)[1])
    with PausableProxy(port, chunk_delay=0.01) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries off: fail in ~2 s, not ~45 s
        import fsspec

        fsspec.filesystem("s3").clear_instance_cache()
        store = ArtifactStore(s3_root)
        old = b"old version " * 1000
        write_atomic(f"{store.root}/cut/object.bin", old, fs=store.fs)
        new = os.urandom(4 * 2**20)  # 64 chunks of 64 KiB, 10 ms each through the proxy
        failures: list[BaseException] = []

        def upload(key: str) -> None:
            try:
                write_atomic(f"{store.root}/cut/{key}", new, fs=store.fs)
            except Exception as exc:
                failures.append(exc)

        writers = [threading.Thread(target=upload, args=(k,)) for k in ("object.bin", "fresh.bin")]
        start = proxy.bytes_up
        for writer in writers:
            writer.start()
        deadline = time.monotonic() + 30
        while proxy.bytes_up - start < 2**20 and time.monotonic() < deadline:
            time.sleep(0.005)
        sent = proxy.bytes_up - start
        proxy.pause()
        for writer in writers:
            writer.join(60)
        assert 2**20 <= sent < 2 * len(new), sent  # cut after some of the bodies, before the end
        assert len(failures) == 2 and all(store_unreachable(f) is not None for f in failures), failures
    client = _client(s3_endpoint.url)  # straight to moto
    keys = _keys(client, s3_root, "cut/")
    bucket, prefix = _bucket(s3_root)
    assert set(keys) == {f"{prefix}/cut/object.bin"}, keys
    assert client.get_object(Bucket=bucket, Key=f"{prefix}/cut/object.bin")["Body"].read() == old


# -- fault suite ----------------------------------------------------------------------------------------
def _sigkill_after_s3_images(cmd: list[str], env: dict, client, root: str, project: str, at_least: int,
                             timeout: float = 180) -> int:
    """`conftest.sigkill_after_images` for a bucket: SIGKILL `cmd` once the project's images/ holds
    `at_least` PNGs (listed straight from the endpoint); returns how many it left."""
    marker = uuid.uuid4().hex
    env = dict(env, ECHO_TEST_MARKER=marker)

    def count() -> int:
        return sum(k.endswith(".png") for k in _keys(client, root, f"projects/{project}/images/"))

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and count() < at_least:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _processes_with(f"ECHO_TEST_MARKER={marker}"):
        time.sleep(0.1)
    assert not _processes_with(f"ECHO_TEST_MARKER={marker}"), "worker processes outlived the killed command"
    return count()


def _every_object_whole(client, root: str) -> None:
    bucket, _ = _bucket(root)
    keys = _keys(client, root)
    assert not [k for k in keys if ".tmp-" in k], "a temporary key was left"
    broken = [p for k in keys if k.endswith(FINAL_SUFFIXES)
              for p in [_whole(k, client.get_object(Bucket=bucket, Key=k)["Body"].read())] if p]
    assert broken == []


def _resumed_completely(cli, root: str, slug: str, count: int) -> None:
    """The next batch resumes batch 0 and completes it: `count` images, none lost or duplicated."""
    code, out, err = cli("batch", slug, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["batch"] == 0, "the interrupted batch is resumed, not skipped"
    assert summary["new_images"] + summary["already_stored"] == count
    catalogued, stored = _store_state(root, slug)
    assert len(catalogued) == count and len(set(catalogued)) == count
    assert sorted(catalogued) == stored
    code, out, err = cli("artifacts", "verify", "-p", slug, "--json")
    assert code == 0 and json.loads(out)["ok"], out


@pytest.mark.fault
@pytest.mark.slow(seconds=30)
def test_sigkill_mid_batch_on_s3_then_the_next_run_completes(cli, s3_root, s3_endpoint, monkeypatch):
    monkeypatch.setenv("ECHO_ARTIFACT_ROOT", s3_root)
    assert cli("plan", "S3 Kill", "flow field", "--size", "192x192", "--count", "16")[0] == 0
    client = _client(s3_endpoint.url)
    cmd = [sys.executable, "-m", "echo_pipeline.cli.app", "batch", "s3-kill", "--json"]
    left = _sigkill_after_s3_images(cmd, dict(os.environ), client, s3_root, "s3-kill", at_least=5)
    assert 5 <= left < 16
    # What the kill left is consistent: whole objects only, no temporary keys, every catalogued
    # image stored (the rest are stored PNGs the next run adopts).
    _every_object_whole(client, s3_root)
    catalogued, stored = _store_state(s3_root, "s3-kill")
    assert set(catalogued) <= set(stored) and len(stored) == left
    _resumed_completely(cli, s3_root, "s3-kill", 16)
    _every_object_whole(client, s3_root)


@pytest.mark.fault
@pytest.mark.slow(seconds=35)
def test_s3_endpoint_down_mid_batch_fails_in_one_line_then_the_next_run_completes(
        cli, s3_root, s3_endpoint, monkeypatch, tmp_path):
    from echo_pipeline_tests.s3_server import PausableProxy

    monkeypatch.setenv("ECHO_ARTIFACT_ROOT", s3_root)
    assert cli("plan", "S3 Down", "flow field", "--size", "192x192", "--count", "16")[0] == 0
    client = _client(s3_endpoint.url)  # the test's own view, straight to moto
    port = int(s3_endpoint.url.rsplit(":", 1)[1])
    with PausableProxy(port) as proxy:
        # botocore's own retries off (s3fs still retries ~2 s): with them, the failure comes ~45 s later.
        env = dict(os.environ, AWS_ENDPOINT_URL=proxy.url, AWS_MAX_ATTEMPTS="1")
        err_path = tmp_path / "batch.err"
        with open(err_path, "w") as err_file:
            proc = subprocess.Popen([sys.executable, "-m", "echo_pipeline.cli.app", "batch", "s3-down"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=err_file)
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and sum(
                k.endswith(".png") for k in _keys(client, s3_root, "projects/s3-down/images/")) < 4:
            time.sleep(0.02)
        proxy.pause()
        try:
            rc = proc.wait(180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        lines = [line for line in err_path.read_text().splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1, lines
        assert lines[0].startswith("error: the artifact store cannot be reached (") and "run it again" in lines[0]
        # Down: nothing half-written under a final key, no temporary keys.
        _every_object_whole(client, s3_root)
        assert proxy.refused > 0
        # Back: the next run (through the same proxy) resumes the batch and completes it.
        proxy.resume()
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        import fsspec

        fsspec.filesystem("s3").clear_instance_cache()
        _resumed_completely(cli, s3_root, "s3-down", 16)
    _every_object_whole(client, s3_root)
