"""The work log: `WorkLog.pending/commit` on a store, and `echo-os commit | log` end to end."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from PIL import Image

from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends.base import BackendDescription
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.resonance.memory_system import save_scores
from echo_pipeline.workflows.work_log import WORKLOG_DIR, NothingToCommitError, RunRef, WorkLog

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def _add(store: ArtifactStore, seed: int, created: datetime, media_type: str = "image") -> str:
    request = RenderRequest(prompt="warm fractal", seed=seed, width=64, height=64, project="p", media_type=media_type)
    record = ArtifactRecord(artifact_id=request.request_id, project="p", request=request, created=created,
                            backend=BackendDescription(backend="procedural", model="procedural"))
    stored = store.save(record, Image.new("RGB", (64, 64), (seed * 40 % 255, 80, 120)))
    store.append_catalog("p", [stored])
    return stored.artifact_id


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore.open(str(tmp_path / "artifacts"))


def test_pending_counts_new_artifacts_per_type_runs_and_scores(store):
    a, b = _add(store, 1, T0), _add(store, 2, T0 + timedelta(seconds=1), "texture")
    save_scores(store, "p", pd.DataFrame({"artifact_id": [a, b], "total": [50.0, 70.0]}))
    runs = [RunRef(run_id="r1", job="batch", status="SUCCESS")]
    pending = WorkLog(store).pending("p", runs)
    assert not pending.empty and pending.last is None
    assert pending.new_artifacts == {"image": 1, "texture": 1, "3d_model": 0, "video": 0, "interactive": 0}
    assert sorted(pending.artifact_ids) == sorted([a, b])
    assert pending.watermark == T0 + timedelta(seconds=1)
    assert [r.run_id for r in pending.runs] == ["r1"]
    assert pending.mean_score_after == 60.0 and pending.style_memory_version is None


def test_commit_stores_an_entry_and_the_next_one_counts_only_what_is_new(store):
    log = WorkLog(store)
    first_id = _add(store, 1, T0)
    save_scores(store, "p", pd.DataFrame({"artifact_id": [first_id], "total": [40.0]}))
    first = log.commit("p", "  first   pass ", 30, runs=[RunRef(run_id="r1", job="render_job", status="SUCCESS")],
                       now=T0 + timedelta(minutes=1))
    assert first.message == "first pass" and first.minutes == 30 and first.artifact_count == 1
    assert first.mean_score_before is None and first.mean_score_after == 40.0 and first.score_delta is None
    [name] = store.list_project_files("p", WORKLOG_DIR)
    assert name == f"20250301T120100000000Z-{first.id}.json"

    second_id = _add(store, 2, T0 + timedelta(minutes=2))
    save_scores(store, "p", pd.DataFrame({"artifact_id": [second_id], "total": [60.0]}))
    runs = [RunRef(run_id="r1", job="render_job", status="SUCCESS"), RunRef(run_id="r2", job="batch", status="SUCCESS")]
    second = log.commit("p", "integrate 3D assets", 120, runs=runs, now=T0 + timedelta(minutes=3))
    assert second.artifact_ids == [second_id] and [r.run_id for r in second.runs] == ["r2"]  # r1 was committed
    assert (second.mean_score_before, second.mean_score_after, second.score_delta) == (40.0, 50.0, 10.0)
    assert second.previous_entry == first.id and second.since == first.watermark
    assert [e.id for e in log.entries("p")] == [second.id, first.id]  # newest first
    assert "integrate 3D assets" in second.summary_markdown() and "+10.00" in second.summary_markdown()


def test_nothing_new_is_nothing_to_commit_whatever_the_minutes(store):
    log = WorkLog(store)
    with pytest.raises(NothingToCommitError, match="since project p began"):
        log.commit("p", "nothing yet", 60)
    _add(store, 1, T0)
    entry = log.commit("p", "one image", 5, now=T0 + timedelta(minutes=1))
    with pytest.raises(NothingToCommitError, match=f'since {entry.id} "one image"'):
        log.commit("p", "twice", 120, runs=[RunRef(run_id=r.run_id, job=r.job, status=r.status) for r in entry.runs])
    assert len(log.entries("p")) == 1 and log.pending("p").empty


@pytest.mark.parametrize(("message", "minutes", "match"), [
    ("", 10, "empty"), ("   ", 10, "empty"), ("ok", -1, "0-10000"), ("ok", 10_001, "0-10000"),
    ("ok", 1.5, "whole number"), ("bad\x1b[2J", 1, "control"), ("x" * 501, 1, "limit is 500"),
])
def test_bad_message_or_minutes(store, message, minutes, match):
    _add(store, 1, T0)
    with pytest.raises(InvalidInputError, match=match):
        WorkLog(store).commit("p", message, minutes)
    assert store.list_project_files("p", WORKLOG_DIR) == []


def test_cli_commit_log_and_the_work_log_materialization(cli):
    import dagster as dg

    code, out, err = cli("render", "warm fractal", "--size", "64", "--count", "2", "--json")
    assert code == 0, err
    render_run = json.loads(out)["run_id"]

    code, out, err = cli("commit", "integrate 3D assets", "--minutes=120")
    assert code == 0, err
    assert "integrate 3D assets (120 min)" in out and "2 new artifact(s) (2 image), 1 run(s)" in out

    code, out, err = cli("commit", "again", "--minutes=120")
    assert code == 0, err
    assert out.startswith("Nothing to commit: no new runs or artifacts since ") and '"integrate 3D assets"' in out

    code, out, err = cli("log", "--json")
    assert code == 0, err
    [entry] = json.loads(out)
    assert (entry["project"], entry["message"], entry["minutes"], entry["artifact_count"]) == (
        "default", "integrate 3D assets", 120, 2)
    assert [r["run_id"] for r in entry["runs"]] == [render_run]
    code, out, _ = cli("log")
    assert code == 0 and entry["id"] in out and "integrate 3D assets" in out

    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("work_log"))
        assert event is not None
        materialization = event.asset_materialization
        assert materialization.partition == "default"
        meta = materialization.metadata
        assert meta["message"].value == "integrate 3D assets" and meta["minutes"].value == 120
        assert meta["new_image"].value == 2 and meta["new_artifacts"].value == 2 and meta["run_count"].value == 1
        assert [r.data["run_id"] for r in meta["runs"].records] == [render_run]
        assert "integrate 3D assets" in meta["summary"].value
        run = instance.get_run_by_id(event.run_id)
        assert run.job_name == "work_log_job" and run.tags["dagster/partition"] == "default"

    code, _, err = cli("commit", "", "--minutes=5")
    assert code == 2 and "empty" in err
