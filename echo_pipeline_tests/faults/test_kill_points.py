"""SIGKILL at seeded random points of `echo-os batch`, each kill followed by a re-run (which may be
killed in turn); after the last, clean run: 0 requests lost, 0 duplicated, the catalog equals the
files, and nothing left behind blocks the next run.

The points are drawn from a seeded generator over every phase of a batch: process start-up and
run creation (a time after start), each pipeline step's write (intent, plan, prompt set, scores,
style memory, gallery, a catalog part or the merge of the parts that follows every batch here: the
kill lands within one 20 ms poll of the file appearing) and the middle of rendering (after k new PNGs). A point the run never reaches (it
finished first) is drawn again, so the suite always lands its full number of kills.

The instance is the one `echo-os` seeds (dagster.yaml with the run queue, one run per project and
the `gpu` pool, as the test's DAGSTER_HOME copies it): a killed run keeps its pool slot until the
next command reaps it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from echo_pipeline_tests.conftest import _processes_with
from echo_pipeline_tests.faults import short_form

pytestmark = pytest.mark.fault

SEED = 20_250_612
FULL_KILLS = 20
SHORT_KILLS = 5
COUNT = 6  # images per batch (64x64: rendering is a small part of a run)
SLUG = "kill-points"
STEP_FILES = ["pipeline/intent.json", "pipeline/plan.json", "pipeline/prompt_set.json",
              "resonance/scores.parquet", "resonance/style_memory.json", "gallery/index.html"]


@dataclass
class Point:
    kind: str  # "time" (seconds after start), "file" (a step's file written), "images" (k new PNGs)
    value: float | str

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


def draw_point(rng: random.Random) -> Point:
    kind = rng.choice(["time", "file", "file", "images", "images", "catalog"])
    if kind == "time":
        return Point("time", round(rng.uniform(0.2, 9.0), 2))
    if kind == "file":
        return Point("file", rng.choice(STEP_FILES))
    if kind == "catalog":
        return Point("file", "catalog/")
    return Point("images", rng.randint(1, COUNT - 1))


def _signature(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _listing(folder: Path, pattern: str) -> set[str]:
    return {p.name for p in folder.glob(pattern)} if folder.is_dir() else set()


def condition_for(point: Point, project_dir: Path, started: float) -> Callable[[], bool]:
    """A check that becomes true once the run has reached `point` (evaluated every 20 ms)."""
    if point.kind == "time":
        return lambda: time.monotonic() - started >= float(point.value)
    if point.kind == "images":
        before = _listing(project_dir / "images", "*.png")
        return lambda: len(_listing(project_dir / "images", "*.png") - before) >= int(point.value)
    if point.value == "catalog/":
        parts = _listing(project_dir / "catalog", "part-*.parquet")
        return lambda: bool(_listing(project_dir / "catalog", "part-*.parquet") - parts)
    path = project_dir / str(point.value)
    signature = _signature(path)
    return lambda: _signature(path) not in (None, signature)


def sigkill_when(cmd: list[str], env: dict[str, str], point: Point, project_dir: Path,
                 timeout: float = 180) -> tuple[bool, int, float]:
    """Start `cmd` and SIGKILL it once `point` is reached; (killed, return code, seconds).

    Like conftest's `sigkill_after_images`, asserts that no process of the command outlives it."""
    marker = uuid.uuid4().hex
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=dict(env, ECHO_TEST_MARKER=marker), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    reached = condition_for(point, project_dir, started)
    killed = False
    try:
        while proc.poll() is None:
            if reached():
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            assert time.monotonic() - started < timeout, f"the batch hung (kill point {point})"
            time.sleep(0.02)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = killed and proc.returncode == -signal.SIGKILL
    if not killed:
        assert proc.returncode == 0, f"a re-run after a kill failed: {err.decode(errors='replace')[-2000:]}"
    deadline = time.monotonic() + 10
    entry = f"ECHO_TEST_MARKER={marker}"
    while time.monotonic() < deadline and _processes_with(entry):
        time.sleep(0.1)
    assert not _processes_with(entry), "worker processes outlived the killed command"
    return killed, proc.returncode, time.monotonic() - started


def _prompt_set(project_dir: Path) -> tuple[int, list[str]] | None:
    path = project_dir / "pipeline" / "prompt_set.json"
    if not path.is_file():
        return None
    from echo_pipeline.render.requests import RenderRequest

    payload = json.loads(path.read_text())
    return int(payload["batch"]), [RenderRequest.model_validate(r).request_id for r in payload["requests"]]


@pytest.mark.slow(seconds=60)  # short form; the full form takes ~230 s
def test_sigkill_at_seeded_points_loses_and_duplicates_nothing(cli, artifact_root, monkeypatch):
    from echo_pipeline.artifacts.storage import ArtifactStore
    from echo_pipeline.resonance.memory_system import load_memory, load_scores
    from echo_pipeline.workflows.project_pipeline import BATCH_KEY

    kills_wanted = SHORT_KILLS if short_form() else FULL_KILLS
    # Every batch merges the catalog's parts (its own and the last merge), so kills land in merges too.
    monkeypatch.setenv("ECHO_CATALOG_COMPACT_AT", "2")
    assert cli("plan", "Kill Points", "flow field", "--size", "64x64", "--count", str(COUNT))[0] == 0
    home = Path(os.environ["DAGSTER_HOME"])
    assert "pools" in (home / "dagster.yaml").read_text()  # the instance config `echo-os` seeds
    project_dir = artifact_root / "projects" / SLUG
    cmd = [sys.executable, "-m", "echo_pipeline.cli.app", "batch", SLUG, "--json"]
    env = dict(os.environ)  # the cli fixture's config dir and artifact root, the test's DAGSTER_HOME

    rng = random.Random(SEED)
    planned: dict[int, set[str]] = {}
    landed: list[str] = []
    completed = 0
    while len(landed) < kills_wanted:
        assert len(landed) + completed < 3 * kills_wanted, f"only {len(landed)} kills landed: {landed}"
        point = draw_point(rng)
        killed, _, seconds = sigkill_when(cmd, env, point, project_dir)
        if killed:
            landed.append(f"{point} ({seconds:.1f} s)")
        else:
            completed += 1
        observed = _prompt_set(project_dir)
        if observed is not None:
            planned.setdefault(observed[0], set()).update(observed[1])

    # The next run is not blocked: it reaps the dead runs, frees the gpu slot and resumes.
    code, out, err = cli("batch", SLUG, "--json")
    assert code == 0, err
    summary = json.loads(out)
    batch, requests = _prompt_set(project_dir) or (None, [])
    assert summary["batch"] == batch
    planned.setdefault(batch, set()).update(requests)

    store = ArtifactStore.open(str(artifact_root))
    catalog = store.catalog(SLUG)
    # 0 lost: every request of every prompt set any run planned is stored; batches advanced only
    # over complete prompt sets.
    wanted = set().union(*planned.values())
    stored = set(catalog["request_id"])
    assert wanted - stored == set(), f"lost {len(wanted - stored)} of {len(wanted)} requests"
    assert stored - wanted == set(), "images stored for requests no prompt set planned"
    assert store.read_project_meta(SLUG)[BATCH_KEY] == max(planned) + 1
    assert all(len(ids) == COUNT for ids in planned.values()), "a batch's prompt set changed between runs"
    # 0 duplicated: one raw catalog row per request over every part, one PNG per artifact.
    raw = pa.concat_tables(store._project_tables(SLUG)).to_pandas()
    assert raw["request_id"].is_unique and raw["artifact_id"].is_unique, "a request was catalogued twice"
    assert (catalog["artifact_id"] == catalog["request_id"]).all()
    # The catalog equals the files: verify finds nothing, no orphan PNG, no temporary file left.
    report = store.verify(SLUG)
    assert report.ok, report.summary()
    assert {p.stem for p in (project_dir / "images").glob("*.png")} == stored
    assert not [p for p in artifact_root.rglob("*") if ".tmp-" in p.name]
    assert not (project_dir / "catalog" / "quarantine").exists()
    # The steps after rendering caught up too: every image scored, the style memory learned them.
    assert set(load_scores(store, SLUG)["artifact_id"]) == stored
    memory = load_memory(store, SLUG)
    assert memory is not None and set(memory.seen_ids) == stored

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": SLUG}, job_name="batch"))
        statuses = [r.status for r in runs]
        assert statuses.count(dg.DagsterRunStatus.SUCCESS) >= 1 + completed
        assert set(statuses) <= {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE}, statuses
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
    print(f"\n{len(landed)} kills landed over {len(landed) + completed + 1} runs "
          f"({completed} finished before their point), {len(wanted)} requests in {len(planned)} batches: "
          + "; ".join(landed))
