"""The vision's use case 1 through `echo-os plan | batch | runs | backfill`, and their bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from echo_pipeline_tests.conftest import sigkill_after_images


def test_use_case_1_plan_then_batch_by_name_prefix(cli, artifact_root, config_dir):
    code, out, err = cli("plan", "Ruzgar NFT Collection", "warm fractal, no human forms", "--size", "96x96", "--json")
    assert code == 0, err
    planned = json.loads(out)
    assert planned["slug"] == "ruzgar-nft-collection"
    assert (config_dir / "projects" / "ruzgar-nft-collection.yaml").is_file()
    assert [t["type"] for t in planned["tasks"]] == ["image"]

    code, out, err = cli("batch", "--project=Ruzgar NFT", "--count=4", "--style=digital art", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["slug"] == "ruzgar-nft-collection" and summary["new_images"] == 4
    assert summary["mean_quality"] > 0 and summary["mean_style_consistency"] > 0
    assert Path(summary["gallery"]).is_file()
    images = list((artifact_root / "projects" / "ruzgar-nft-collection" / "images").glob("*.png"))
    assert len(images) == 4

    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(summary["run_id"])
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["dagster/partition"] == "ruzgar-nft-collection"
        materialized = {
            key.to_user_string()
            for key in ("intent", "plan", "prompt_set", "generated_images", "quality_scores", "style_memory", "gallery")
            for key in [dg.AssetKey(key)]
            if instance.get_latest_materialization_event(key) is not None
        }
        assert len(materialized) == 7

    # The vision's positional form; the next batch renders new images.
    code, out, err = cli("batch", "ruzgar", "--count=2", "--json")
    assert code == 0, err
    assert json.loads(out)["new_images"] == 2 and json.loads(out)["batch"] == 1

    code, out, _ = cli("runs", "--project", "Ruzgar", "--json")
    assert code == 0 and [r["job"] for r in json.loads(out)] == ["batch", "batch", "plan_project"]


def test_render_is_recorded_as_a_dagster_run(cli):
    code, out, err = cli("render", "cool waves", "--size", "64", "--json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    code, out, _ = cli("runs", "--json")
    assert [(r["run_id"], r["job"], r["status"]) for r in json.loads(out)] == [(run_id, "render_job", "SUCCESS")]


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ([], ["batch", "--project", "Nope"], "no projects yet"),
        ([["plan", "Alpha One", "cool waves"]], ["batch", "--project", "Alpah One"], "did you mean"),
        ([["plan", "Alpha One", "cool waves"], ["plan", "Alpha Two", "warm waves"]], ["batch", "alpha"], "ambiguous"),
        ([["plan", "Alpha One", "cool waves"]], ["batch", "alpha", "--count", "0"], "--count"),
        ([["plan", "Alpha One", "cool waves"]], ["batch", "alpha", "--style", "nope"], "unknown style"),
        ([], ["batch"], "which project"),
        ([], ["plan", "a/b", "x"], "'/'"),
        ([], ["plan", "Fine", "x", "--style", "nope"], "unknown style"),
        ([], ["backfill"], "--projects"),
    ],
)
def test_bad_input_exit_2(cli, setup, args, message):
    for step in setup:
        assert cli(*step)[0] == 0
    code, _, err = cli(*args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err.strip(), err


def test_broken_spec_file_names_the_field(cli, config_dir):
    (config_dir / "projects").mkdir(exist_ok=True)
    (config_dir / "projects" / "broken.yaml").write_text("name: Broken\nintent: cool waves\ncount: 0\n")
    code, _, err = cli("batch", "--project", "broken")
    assert code == 2 and "broken.yaml" in err and "count" in err


@pytest.mark.slow(seconds=14)
def test_busy_project_is_refused_and_sigterm_ends_cleanly(cli, artifact_root):
    """A second batch of a project being rendered says who is busy (never hangs, never merges), and
    SIGTERM ends the first like Ctrl-C: one line, exit 130, images kept, the run not left STARTED."""
    import signal
    import time

    # 20 images: 18 still to render (~3 s) when the busy check (~0.3 s) and SIGTERM come.
    assert cli("plan", "Busy Project", "flow field", "--size", "192x192", "--count", "20")[0] == 0
    images = artifact_root / "projects" / "busy-project" / "images"
    first = subprocess.Popen([sys.executable, "-m", "echo_pipeline.cli.app", "batch", "busy", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(images.glob("*.png"))) < 2:
            time.sleep(0.05)
        code, _, err = cli("batch", "busy")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "busy" in err and "--wait" in err
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 130, first_err
    assert first_err.strip().splitlines()[-1].startswith("interrupted; stored images are kept")
    assert "Traceback" not in first_err
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "busy-project"}, job_name="batch"))
        assert run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    # The interrupted batch resumes: same batch number, nothing rendered twice.
    code, out, err = cli("batch", "busy", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["batch"] == 0 and summary["new_images"] + summary["already_stored"] == 20


@pytest.mark.slow(seconds=14)
def test_sigkill_mid_batch_then_rerun_loses_and_duplicates_nothing(cli, artifact_root, config_dir, tmp_path):
    """On the instance config users get (seeded dagster.yaml: gpu pool limit 1, one run per project),
    a batch killed while it holds the pool slot must wedge neither its own re-run nor another project."""
    # 16 images: killed at 5, with 11 (~3 s of rendering) left against the 20 ms poll that kills it.
    assert cli("plan", "Kill Test", "flow field", "--size", "192x192", "--count", "16")[0] == 0
    assert cli("plan", "Bystander", "cool waves", "--size", "64", "--count", "2")[0] == 0
    home = Path(os.environ["DAGSTER_HOME"])
    assert "pools" in (home / "dagster.yaml").read_text()
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "echo_pipeline.cli.app", "batch", "kill-test", "--json"]
    images = artifact_root / "projects" / "kill-test" / "images"
    killed_with = sigkill_after_images(cmd, env, images, at_least=5)
    assert 5 <= killed_with < 16
    with dg.DagsterInstance.get() as instance:
        [dead] = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "kill-test"}, job_name="batch"))
        assert dead.status == dg.DagsterRunStatus.STARTED  # what SIGKILL leaves behind
        assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots  # ...with the gpu slot

    # Another project first: it needs the gpu slot the dead run still claims. (The killed process
    # is the one that must be real; the commands after it run in-process, through the same entry
    # point, and save two interpreter starts.)
    code, out, err = cli("batch", "bystander", "--json")
    assert code == 0, err
    assert json.loads(out)["new_images"] == 2
    code, out, err = cli("batch", "kill-test", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["batch"] == 0, "the killed batch is resumed, not skipped"
    assert summary["new_images"] + summary["already_stored"] == 16
    from echo_pipeline.artifacts.storage import ArtifactStore

    catalog = ArtifactStore.open(str(artifact_root)).catalog("kill-test")
    assert len(catalog) == 16 and catalog.artifact_id.is_unique
    assert sorted(p.stem for p in images.glob("*.png")) == sorted(catalog.artifact_id)
    assert not list(artifact_root.rglob("*.tmp-*"))
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots


@pytest.mark.slow(seconds=22)
def test_backfill_over_two_projects_runs_both(cli, artifact_root):
    """`backfill --wait` with no daemon running starts one, the runs finish, and it stops it."""
    assert cli("plan", "Back One", "warm fractal", "--size", "64", "--count", "2")[0] == 0
    assert cli("plan", "Back Two", "neon city", "--size", "64", "--count", "2")[0] == 0
    code, out, err = cli("backfill", "--projects", "Back One,back-two", "--wait", "--json")
    assert code == 0, err
    payload = json.loads(out)
    code, out, err = cli("runs")  # the table: whole run ids, one line per run
    assert code == 0 and all(r["run_id"] in out for r in payload["runs"]), err
    assert sorted(r["project"] for r in payload["runs"]) == ["back-one", "back-two"]
    assert {r["status"] for r in payload["runs"]} == {"SUCCESS"}
    assert len({r["backfill"] for r in payload["runs"]}) == 1
    # Exactly the requested work: the daemon's sensor starts no batch of its own for planned projects.
    for slug in ("back-one", "back-two"):
        assert len(list((artifact_root / "projects" / slug / "images").glob("*.png"))) == 2
    with dg.DagsterInstance.get() as instance:
        jobs = sorted(r.job_name for r in instance.get_runs())
        assert jobs == ["batch", "batch", "plan_project", "plan_project"]
        # The settings travel in the run config, not through the daemon's environment.
        run = instance.get_run_by_id(payload["runs"][0]["run_id"])
        assert run.run_config["resources"]["echo"]["config"]["artifact_root"] == str(artifact_root)
        assert not instance.get_daemon_heartbeats()  # the daemon it started is gone, and so is its heartbeat


def test_waiting_for_runs_uses_a_running_daemon_and_stops_only_its_own(monkeypatch):
    """`backfill --wait` (launch._wait_for_runs): with a daemon alive it starts none; with none it
    starts one, once, and stops it (and forgets its heartbeat) when the runs are done. The real
    daemon start is what test_backfill_over_two_projects_runs_both runs end to end."""
    from types import SimpleNamespace

    from echo_pipeline.defs import launch

    class Instance:
        def __init__(self, polls_until_done: int):
            self.polls, self.wiped = polls_until_done, 0

        def get_run_by_id(self, run_id):
            self.polls -= 1
            return SimpleNamespace(is_finished=self.polls < 0)

        def wipe_daemon_heartbeats(self):
            self.wiped += 1

    started = []

    class Daemon:
        def __init__(self):
            self.terminated = False
            started.append(self)

        def terminate(self):
            self.terminated = True

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(launch.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(launch, "_start_daemon", Daemon)
    monkeypatch.setattr(launch, "daemon_running", lambda instance: True)
    alive = Instance(polls_until_done=6)
    launch._wait_for_runs(alive, ["a", "b"], timeout=60)
    assert started == [] and alive.wiped == 0  # the user's daemon did the work and keeps running

    monkeypatch.setattr(launch, "daemon_running", lambda instance: False)
    alone = Instance(polls_until_done=6)
    launch._wait_for_runs(alone, ["a", "b"], timeout=60)
    assert len(started) == 1 and started[0].terminated and alone.wiped == 1


def test_gallery_command_best_filter_and_errors(cli, artifact_root):
    assert cli("plan", "Ruzgar NFT Collection", "warm fractal, no human forms", "--size", "64", "--count", "4")[0] == 0
    assert cli("batch", "--project=Ruzgar NFT")[0] == 0
    code, out, err = cli("gallery", "--project=Ruzgar NFT", "--filter=best", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["project"] == "ruzgar-nft-collection" and payload["images_in_project"] == 4
    assert 1 <= payload["images_shown"] < 4 and payload["mean_score"] > 0
    data = Path(payload["data"]).read_text()
    assert data.count("warm fractal") >= payload["images_shown"]
    accepted = json.loads(cli("gallery", "--project=Ruzgar NFT", "--filter=accepted", "--json")[1])
    assert 1 <= accepted["images_shown"] <= 4  # what the batch's style memory accepted
    code, _, err = cli("gallery", "--project=Ruzgar NFT", "--filter=worst")
    assert code == 2 and "filter" in err and len(err.strip().splitlines()) == 1
    # Projects made by `render` alone (no spec file) have galleries too.
    assert cli("render", "cool waves", "--size", "64")[0] == 0
    code, out, _ = cli("gallery", "--project", "default", "--json")
    assert code == 0 and json.loads(out)["images_in_project"] == 1
    # No project: one gallery of every project, at the store's top level.
    code, out, _ = cli("gallery", "--json", "--filter", "top:2")
    payload = json.loads(out)
    assert set(payload["projects"]) == {"default", "ruzgar-nft-collection"} and payload["images_in_project"] == 5
    assert payload["images_shown"] == 2 and payload["html"] == str(artifact_root / "gallery" / "top-2.html")


def test_errors_inside_a_run_are_one_line(cli, config_dir, monkeypatch):
    """A user error raised inside a run prints its own one-line message (no Dagster traceback), and
    a full disk says so in one line; both exit 2."""
    assert cli("style", "create", "mine", "{prompt}, teal glow")[0] == 0
    assert cli("plan", "Inside Run", "cool waves", "--style", "mine", "--size", "64", "--count", "2")[0] == 0
    (config_dir / "styles" / "user.json").unlink()  # the project's style vanishes after planning
    code, out, err = cli("batch", "inside")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "mine" in err, err
    assert "Traceback" not in out + err

    assert cli("style", "create", "mine", "{prompt}, teal glow")[0] == 0
    from echo_pipeline.artifacts.storage import ArtifactStore

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ArtifactStore, "save", full_disk)
    code, out, err = cli("batch", "inside")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "No space left on device" in err, err


@pytest.mark.slow(seconds=11)
def test_batch_behind_another_projects_run_waits_quietly_and_stops_on_sigterm(cli, artifact_root):
    """With the gpu pool held by a live run of another project, a batch says what it waits for,
    does not spin, and SIGTERM (or Ctrl-C) ends it at once: one line, exit 130, no run left behind."""
    import contextlib
    import signal
    import time

    import psutil

    # Enough work that the holder is still rendering when the waiter is checked (it is killed then).
    assert cli("plan", "Pool Holder", "flow field", "--size", "192x192", "--count", "400")[0] == 0
    assert cli("plan", "Pool Waiter", "cool waves", "--size", "64", "--count", "1")[0] == 0
    images = artifact_root / "projects" / "pool-holder" / "images"
    holder = subprocess.Popen([sys.executable, "-m", "echo_pipeline.cli.app", "batch", "pool-holder", "--json"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    waiter = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(images.glob("*.png")):
            time.sleep(0.05)
        # The holder now holds the pool slot; at the lowest priority it keeps rendering on idle CPU
        # only, instead of taking both cores from the waiter starting up (and from the other tests).
        for process in (psutil.Process(holder.pid), *psutil.Process(holder.pid).children(recursive=True)):
            with contextlib.suppress(psutil.NoSuchProcess):  # a worker may just have ended
                process.nice(19)
        waiter = subprocess.Popen([sys.executable, "-m", "echo_pipeline.cli.app", "batch", "pool-waiter"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _stderr_so_far(waiter):
            time.sleep(0.1)
        assert holder.poll() is None, "the holder finished too early for this test"
        cpu = psutil.Process(waiter.pid).cpu_percent(interval=1.0)
        assert cpu < 30, f"waiting for the pool costs {cpu}% CPU"
        early = _stderr_so_far(waiter)
        waiter.send_signal(signal.SIGTERM)
        _, rest = waiter.communicate(timeout=30)
        err = early + rest
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert waiter.returncode == 130, err
    assert "waiting for the gpu pool" in err and "pool-holder" in err
    assert err.strip().splitlines()[-1].startswith("interrupted; stored images are kept")
    with dg.DagsterInstance.get() as instance:
        assert not instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "pool-waiter"}, job_name="batch"))


def _stderr_so_far(proc: subprocess.Popen) -> str:
    """What a running process wrote to stderr so far (non-blocking)."""
    import os
    import select

    fd = proc.stderr.fileno()
    os.set_blocking(fd, False)
    chunks = []
    while select.select([fd], [], [], 0)[0]:
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append(data.decode())
    text = "".join(chunks)
    proc._echo_stderr = getattr(proc, "_echo_stderr", "") + text  # type: ignore[attr-defined]  # kept for asserts
    return proc._echo_stderr  # type: ignore[attr-defined]


def test_an_interrupt_dagster_only_recorded_ends_the_run_as_canceled(tmp_path):
    """The last resort for Ctrl-C while Dagster waits outside any step: the run ends CANCELED, its
    slots are freed, and the process exits 130 with the interrupted line."""
    script = tmp_path / "stuck.py"
    script.write_text(
        "import time\n"
        "import dagster as dg\n"
        "from dagster._utils import interrupts\n"
        "from echo_pipeline.defs import launch\n"
        "from echo_pipeline.defs.instance import get_instance\n"
        "instance = get_instance()\n"
        "run = instance.add_run(dg.DagsterRun(job_name='batch', run_id='stuck-run', status=dg.DagsterRunStatus.STARTED))\n"
        "with launch._interrupt_watchdog(instance, 'stuck-run', grace_s=0.5):\n"
        "    interrupts._received_interrupt['received'] = True  # what Dagster's handler does, and no more\n"
        "    time.sleep(30)\n"
        "print('not reached')\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and "not reached" not in done.stdout, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("interrupted; stored images are kept")
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id("stuck-run").status == dg.DagsterRunStatus.CANCELED
