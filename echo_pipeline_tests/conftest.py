"""Shared fixtures: an isolated config dir (built-in styles copied, user styles empty) and artifact root."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

# One torch thread per test process: the suite runs two xdist workers on two cores, and torch's
# OpenMP threads spin-wait, so 2 x 2 threads make the tiny-model tests several times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from echo_pipeline.settings import REPO_CONFIG_DIR, Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def _dagster_home_template(tmp_path_factory) -> Path:
    """A DAGSTER_HOME as `echo-os` leaves it after its first command (the seeded dagster.yaml, the
    SQLite run, event-log and schedule storages with their schemas), made once per worker: creating
    those schemas costs ~1.8 s of CPU, and most tests would otherwise pay it."""
    from echo_pipeline.defs.instance import ensure_dagster_home, get_instance

    home = tmp_path_factory.mktemp("dagster-home-template")
    before = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        ensure_dagster_home()
        with get_instance() as instance:
            instance.get_runs(limit=1)
            instance.all_instigator_state()
            instance.get_asset_keys()
    finally:
        if before is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = before
    return home


@pytest.fixture(autouse=True)
def _isolated_dagster_home(monkeypatch, tmp_path, _dagster_home_template):
    """Every test gets its own DAGSTER_HOME (a copy of the template): nothing is written into the
    checkout's ./.dagster_home, and no test sees another's runs."""
    home = tmp_path / "dagster_home"
    shutil.copytree(_dagster_home_template, home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """The tiny SD pipeline (echo_pipeline_tests/tiny_models.py), built once per test session and
    shared by the xdist workers (their common base folder, a file lock around the build)."""
    # The libraries the build needs, imported before the lock: importing them is nearly all of the
    # build's ~10 s, and every test of this fixture imports them anyway; inside the lock, the other
    # worker would sit idle through the builder's imports before paying its own.
    import torch  # noqa: F401
    from diffusers import StableDiffusionPipeline  # noqa: F401
    from filelock import FileLock
    from transformers import CLIPTextModel  # noqa: F401

    from echo_pipeline_tests.tiny_models import build_tiny_sd

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this session's folder either way
    with FileLock(str(shared / "tiny-sd.lock")):
        return build_tiny_sd(shared / "tiny-sd")


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A copy of the repo's configs/ without user styles or example projects, so tests start empty
    and never touch the checkout."""
    target = tmp_path / "configs"
    shutil.copytree(REPO_CONFIG_DIR, target, ignore=shutil.ignore_patterns("user.json", "projects"))
    (target / "projects").mkdir()
    return target


@pytest.fixture
def artifact_root(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def settings(config_dir: Path, artifact_root: Path) -> Settings:
    return Settings.load(artifact_root=str(artifact_root), config_dir=config_dir)


@pytest.fixture
def memory_root():
    """A unique memory:// root, removed afterwards (fsspec's memory filesystem is process-global)."""
    import fsspec

    root = f"memory://echo-test-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    path = root.removeprefix("memory://")
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on loopback (echo_pipeline_tests/s3_server.py), one per test process."""
    from echo_pipeline_tests.s3_server import moto_s3_server

    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_root(s3_endpoint, monkeypatch) -> str:
    """An `s3://<new bucket>/echo` artifact root on the local endpoint; this process and the
    processes it starts reach it through the AWS_* environment."""
    import fsspec

    for key, value in s3_endpoint.env.items():
        monkeypatch.setenv(key, value)
    fsspec.filesystem("s3").clear_instance_cache()  # a client made before these variables is stale
    return f"s3://{s3_endpoint.new_bucket()}/echo"


@pytest.fixture
def cli(monkeypatch, capsys, config_dir, artifact_root):
    """Run `echo-os ARGS...` in-process through the real entry point; returns (exit code, stdout, stderr)."""
    from echo_pipeline.cli.app import main

    monkeypatch.setenv("ECHO_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("ECHO_ARTIFACT_ROOT", str(artifact_root))
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["echo-os", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def sigkill_after_images(cmd: list[str], env: dict, images_dir: Path, at_least: int, timeout: float = 120) -> int:
    """Start `cmd`, SIGKILL it once `images_dir` holds `at_least` PNGs; returns how many it left.

    Also asserts that no process of it survives (worker processes must die with their parent).
    """
    import signal
    import subprocess
    import time
    import uuid

    marker = f"ECHO_TEST_MARKER={uuid.uuid4().hex}"
    env = dict(env, ECHO_TEST_MARKER=marker.split("=", 1)[1])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(images_dir.glob("*.png"))) < at_least:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = len(list(images_dir.glob("*.png")))
    deadline = time.time() + 10
    while time.time() < deadline and _processes_with(marker):
        time.sleep(0.1)
    assert not _processes_with(marker), "worker processes outlived the killed command"
    return left


def _processes_with(env_entry: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if env_entry.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


TORCH_IMPORT_S = 10.0  # what a process pays once for the `torch` tests, before their own time
SHORT_TEST_S = 0.1  # a test without a `slow` estimate, on average


def pytest_collection_modifyitems(config, items):
    """The order xdist's worksteal scheduling works on: it hands worker k the k-th contiguous slice
    of this order (equal counts) and later moves tests only from the tail of one worker's queue to
    an idle worker, so the head of each slice stays on its worker.

    Each slice starts with its share of the long tests and ends with short ones: tests marked
    `torch` head the first slice (one worker pays the import, and their module-scoped models are
    built once); tests marked `slow` (`seconds=` estimate, default 15) go, longest first, to the
    slice with the least estimated work, so no worker starts a long test when the others are done;
    the short tests fill the slices in file order (modules stay together) and are what gets stolen.
    """

    def expected_seconds(item) -> float:
        marker = item.get_closest_marker("slow")
        return float(marker.kwargs.get("seconds", 15)) if marker else SHORT_TEST_S

    torch = [item for item in items if item.get_closest_marker("torch")]
    long = sorted((item for item in items if item not in torch and item.get_closest_marker("slow")),
                  key=expected_seconds, reverse=True)
    short = [item for item in items if item not in torch and not item.get_closest_marker("slow")]
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    slices: list[list] = [list(torch)] + [[] for _ in range(workers - 1)]
    load = [TORCH_IMPORT_S + sum(map(expected_seconds, torch)) if torch else 0.0] + [0.0] * (workers - 1)
    for item in long:
        k = load.index(min(load))
        slices[k].append(item)
        load[k] += expected_seconds(item)
    remaining = len(items)
    for k, heads in enumerate(slices):
        size = remaining // (workers - k)  # how xdist sizes the k-th slice
        fill = max(0, size - len(heads)) if k < workers - 1 else len(short)
        heads += short[:fill]
        short = short[fill:]
        remaining -= len(heads)
    items[:] = [item for heads in slices for item in heads]
