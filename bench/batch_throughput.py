"""Batch throughput: `echo-os batch --count N` at 512x512 (with scoring, style memory and gallery)
against the bare render of the same requests and against the practical limit of a 512x512 picture
in Python (a plain NumPy Julia render + PNG encode on the same cores), measured in the same run.

    python bench/batch_throughput.py [--count 100] [--size 512] [--rss] [--scaling]

Prints images/min for the full Dagster batch, the bare render rate (BatchProcessor alone: render +
PNG + thumbnail + catalog), Dagster's overhead as a ratio to the bare render time, and the NumPy
Julia limit (goal: the batch at >= 0.6 of it). With `--rss`, also the peak RSS of a real
`echo-os batch` of 1,000 images at 128x128 in a subprocess (goal: < 1 GB); with `--scaling`, batch
time at 1 and 2 workers (two projects' `echo-os batch` one after the other, then at once; and the
procedural backend's render processes, 1 then 2). Everything happens in temporary folders.

`measure`, `numpy_limit`, `peak_rss`, `concurrent_batches` and `render_processes` return the
figures as data (bench/run_all.py calls them).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from workspace import cpu_seconds  # noqa: E402  (bench/workspace.py)

JULIA_ITERATIONS = 100


def measure(count: int = 100, size: int = 512) -> dict[str, Any]:
    """The Dagster `batch` job (7 assets, in process, warm imports) against `BatchProcessor` alone
    on the same requests, and the fixed cost of a run that does (almost) nothing."""
    from workspace import isolated_workspace  # bench/workspace.py

    with isolated_workspace() as work:
        import dagster as dg

        from echo_pipeline.artifacts.storage import ArtifactStore
        from echo_pipeline.definitions import defs
        from echo_pipeline.render.backends.registry import create_backend
        from echo_pipeline.settings import Settings
        from echo_pipeline.workflows.batch_processor import BatchProcessor
        from echo_pipeline.workflows.creative_engine import CreativeEngine
        from echo_pipeline.workflows.visual_planner import plan_project, task_prompt_specs

        engine = CreativeEngine(Settings.load())
        spec = engine.projects.create("Bench Collection", "warm fractal, no human forms", style="digital art",
                                      count=count, width=size, height=size)

        # Baseline: the same requests through the bare batch processor, into a separate store.
        requests = [r for ps in task_prompt_specs(plan_project(spec), spec, batch=0) for r in engine.plan_requests(ps)]
        bare_store = ArtifactStore.open(str(work / "bare"))
        started, cpu = time.perf_counter(), cpu_seconds()
        bare = BatchProcessor(bare_store, create_backend("procedural")).run(requests)
        bare_seconds, bare_cpu = time.perf_counter() - started, cpu_seconds() - cpu
        assert len(bare.new) == count

        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("projects", [spec.slug])
            job = defs.resolve_job_def("batch")
            quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
            started, cpu = time.perf_counter(), cpu_seconds()
            result = job.execute_in_process(instance=instance, partition_key=spec.slug, run_config=quiet)
            batch_seconds, batch_cpu = time.perf_counter() - started, cpu_seconds() - cpu
            assert result.success
            new = result.asset_materializations_for_node("generated_images")[0].metadata["new_images"].value
            assert new == count
            # Per-run fixed cost: a run whose steps do (almost) nothing new.
            started = time.perf_counter()
            job.execute_in_process(instance=instance, partition_key=spec.slug, run_config=quiet,
                                   asset_selection=[dg.AssetKey("intent")])
            tiny_seconds = time.perf_counter() - started
    return {"images": count, "size": size, "cores": os.cpu_count(), "bare_s": bare_seconds, "batch_s": batch_seconds,
            "tiny_run_s": tiny_seconds, "bare_cpu_s": bare_cpu, "batch_cpu_s": batch_cpu,
            "bare_per_min": 60 * count / bare_seconds,
            "batch_per_min": 60 * count / batch_seconds}


# -- the practical limit: a plain NumPy Julia render + PNG encode ------------------------------------
def _julia_png(task: tuple[int, int]) -> int:
    """One textbook vectorised escape-time Julia set (`JULIA_ITERATIONS` steps of z = z^2 + c on the
    points not yet escaped, a boolean mask over the whole grid), coloured through a 256-entry
    colour map and PNG-encoded by Pillow; returns the PNG's size."""
    import numpy as np
    from PIL import Image

    index, size = task
    angle = 0.05 * index  # a different set per image, all near the classic c = -0.8 + 0.156i
    c = complex(-0.8 + 0.02 * np.cos(angle), 0.156 + 0.02 * np.sin(angle))
    y, x = np.mgrid[-1.2:1.2:size * 1j, -1.6:1.6:size * 1j]
    z = x + 1j * y
    counts = np.zeros(z.shape, dtype=np.int32)
    for _ in range(JULIA_ITERATIONS):
        inside = np.abs(z) <= 2.0
        z[inside] = z[inside] ** 2 + c
        counts += inside
    t = np.linspace(0.0, 1.0, 256)
    colours = (255 * np.stack([t ** 0.5, t ** 1.5, 0.5 + 0.5 * np.sin(6.283 * t)], axis=-1)).astype(np.uint8)
    image = Image.fromarray(colours[counts * 255 // JULIA_ITERATIONS], "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.tell()


def numpy_limit(count: int = 100, size: int = 512, processes: int | None = None) -> dict[str, Any]:
    """Images/min of `_julia_png` for `count` images in `processes` worker processes (default: as
    many as the procedural backend uses, one per core up to 4): the practical limit of a
    Python/NumPy pipeline that renders and encodes a `size`-square picture, on the same cores."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from echo_pipeline.render.backends.procedural import ProceduralBackend

    processes = processes or ProceduralBackend().workers
    cpu = cpu_seconds()
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_julia_png, [(0, 64)] * processes))  # the workers exist and have imported NumPy
        started = time.perf_counter()
        list(pool.map(_julia_png, [(k, size) for k in range(count)]))
        seconds = time.perf_counter() - started
    return {"images": count, "size": size, "processes": processes, "iterations": JULIA_ITERATIONS,
            "seconds": seconds, "per_min": 60 * count / seconds, "cpu_s": cpu_seconds() - cpu}


# -- echo-os in subprocesses ---------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "echo_pipeline.cli.app", *args]


class _TreeSampler:
    """Samples the summed RSS and PSS of a process and all its descendants every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import psutil

        self.process, self.interval = psutil.Process(pid), interval
        self.peak_sum = self.peak_one = self.peak_pss = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._done.is_set():
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                sizes, shares = [], []
                for p in tree:
                    with contextlib.suppress(psutil.Error):
                        full = p.memory_full_info()  # PSS: pages shared by the forked workers counted once
                        sizes.append(full.rss)
                        shares.append(full.pss)
                self.peak_sum = max(self.peak_sum, sum(sizes))
                self.peak_pss = max(self.peak_pss, sum(shares))
                self.peak_one = max(self.peak_one, max(sizes, default=0))
            except psutil.Error:
                return
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _plan(work: Path, name: str, count: int, size: int, intent: str = "warm fractal, no human forms") -> None:
    subprocess.run(_cli("plan", name, intent, "--count", str(count),
                        "--size", f"{size}x{size}", "--json"),
                   cwd=work, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _start_batch(work: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(_cli("batch", "--project", name, "--json"), cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> dict[str, Any]:
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"echo-os batch failed ({process.returncode}): {err.strip()[-2000:]}")
    return json.loads(out)


# One motif repeats itself at this count: 1,000 "warm fractal" (or "varied abstract art") images at
# 128x128 fail the batch's blocking uniqueness check, and the steps after the render never run. The
# wildcards (configs/wildcards/) draw a motif and a palette per image, as a varied collection would.
RSS_INTENT = "__motifs__, __palettes__ palette, no human forms"


def peak_rss(count: int = 1000, size: int = 128, intent: str = RSS_INTENT) -> dict[str, Any]:
    """Peak memory of a real `echo-os batch` of `count` images at `size` square in a new process (a
    run that fails, e.g. at the blocking uniqueness check, reports its peak so far and the error):
    the summed RSS of the command and its render workers (sampled every 100 ms; pages the forked
    workers share with it count twice, so this is an upper bound), their summed PSS (shared pages
    split between the processes: the tree's real footprint), the largest single process, and
    the kernel's peak for the largest one (`getrusage(RUSAGE_CHILDREN).ru_maxrss`)."""
    import resource

    from workspace import isolated_workspace  # bench/workspace.py

    with isolated_workspace() as work:
        _plan(work, "RSS Bench", count, size, intent)
        started = time.perf_counter()
        process = _start_batch(work, "RSS Bench")
        sampler = _TreeSampler(process.pid)
        try:
            summary, error = _finish(process), None
        except RuntimeError as exc:  # e.g. the blocking uniqueness check: the peak so far still counts
            summary, error = {}, str(exc).splitlines()[0][:300]
        sampler.stop()
        seconds = time.perf_counter() - started
        kernel_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    assert error or summary["new_images"] == count, summary
    return {"images": count, "size": size, "intent": intent, "seconds": seconds, "peak_tree_bytes": sampler.peak_sum,
            "peak_tree_pss_bytes": sampler.peak_pss, "peak_process_bytes": sampler.peak_one,
            "ru_maxrss_bytes": kernel_peak, "completed": error is None, "error": error}


def concurrent_batches(count: int = 50, size: int = 256) -> dict[str, Any]:
    """Two projects of `count` images each, each batch a real `echo-os batch` process on one
    instance: one after the other (1 worker) against both at once (2 workers; their render steps
    take turns in the `gpu` pool, the rest overlaps)."""
    from workspace import isolated_workspace  # bench/workspace.py

    with isolated_workspace() as work:
        names = ["Scale A", "Scale B", "Scale C", "Scale D"]
        for name in names:
            _plan(work, name, count, size)
        started = time.perf_counter()
        for name in names[:2]:
            _finish(_start_batch(work, name))
        one = time.perf_counter() - started
        started = time.perf_counter()
        processes = [_start_batch(work, name) for name in names[2:]]
        summaries = [_finish(p) for p in processes]
        two = time.perf_counter() - started
    assert all(s["new_images"] == count for s in summaries), summaries
    return {"projects": 2, "images_each": count, "size": size, "one_worker_s": one, "two_workers_s": two,
            "speedup": one / two}


def render_processes(count: int = 40, size: int = 512) -> dict[str, Any]:
    """The bare batch processor (render + PNG + thumbnail + catalog) with the procedural backend's
    render processes set to 1, then 2, on the same requests (separate stores)."""
    from workspace import isolated_workspace  # bench/workspace.py

    with isolated_workspace() as work:
        from echo_pipeline.artifacts.storage import ArtifactStore
        from echo_pipeline.render.backends.procedural import ProceduralBackend
        from echo_pipeline.settings import Settings
        from echo_pipeline.workflows.batch_processor import BatchProcessor
        from echo_pipeline.workflows.creative_engine import CreativeEngine
        from echo_pipeline.workflows.visual_planner import plan_project, task_prompt_specs

        engine = CreativeEngine(Settings.load())
        spec = engine.projects.create("Bench Workers", "warm fractal, no human forms", count=count, width=size,
                                      height=size)
        requests = [r for ps in task_prompt_specs(plan_project(spec), spec, batch=0) for r in engine.plan_requests(ps)]
        seconds = {}
        for workers in (1, 2):
            store = ArtifactStore.open(str(work / f"w{workers}"))
            started = time.perf_counter()
            result = BatchProcessor(store, ProceduralBackend(workers=workers)).run(requests)
            seconds[workers] = time.perf_counter() - started
            assert len(result.new) == count
    return {"images": count, "size": size, "one_s": seconds[1], "two_s": seconds[2], "speedup": seconds[1] / seconds[2]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rss", action="store_true", help="also the peak RSS of a 1,000-image batch at 128x128")
    parser.add_argument("--scaling", action="store_true", help="also batch time at 1 and 2 workers")
    args = parser.parse_args()

    m = measure(args.count, args.size)
    limit = numpy_limit(args.count, args.size)
    print(f"images: {m['images']} at {m['size']}x{m['size']}, procedural backend, {m['cores']} CPU cores")
    print(f"bare render (BatchProcessor)   {m['bare_s']:7.2f} s   {m['bare_per_min']:7.1f} images/min   (baseline)")
    print(f"dagster batch (7 assets)       {m['batch_s']:7.2f} s   {m['batch_per_min']:7.1f} images/min   "
          f"ratio to baseline {m['batch_s'] / m['bare_s']:.2f}")
    print(f"dagster overhead incl. scoring {m['batch_s'] - m['bare_s']:7.2f} s   "
          f"= {(m['batch_s'] - m['bare_s']) / m['bare_s']:.2f} x bare render time")
    print(f"fixed cost of one tiny run     {m['tiny_run_s']:7.2f} s   = {m['tiny_run_s'] / m['bare_s']:.3f} x bare render time")
    print(f"NumPy Julia + PNG, {limit['processes']} procs   {limit['seconds']:7.2f} s   {limit['per_min']:7.1f} images/min   "
          f"batch at {m['batch_per_min'] / limit['per_min']:.2f} of it (goal >= 0.6)")
    n = m["images"]
    print(f"CPU seconds per image: batch {m['batch_cpu_s'] / n:.3f}, bare render {m['bare_cpu_s'] / n:.3f}, "
          f"NumPy Julia {limit['cpu_s'] / n:.3f}")
    if args.rss:
        r = peak_rss()
        print(f"echo-os batch of {r['images']} at {r['size']}x{r['size']}: {r['seconds']:.1f} s, peak RSS "
              f"{r['peak_tree_bytes'] / 2**20:.0f} MiB summed over its processes (PSS "
              f"{r['peak_tree_pss_bytes'] / 2**20:.0f} MiB), largest process "
              f"{r['peak_process_bytes'] / 2**20:.0f} MiB (ru_maxrss {r['ru_maxrss_bytes'] / 2**20:.0f} MiB); goal < 1 GB"
              + ("" if r["completed"] else f"; the run did not complete: {r['error']}"))
    if args.scaling:
        c = concurrent_batches()
        print(f"two projects x {c['images_each']} images at {c['size']}x{c['size']}: one after the other "
              f"{c['one_worker_s']:.1f} s, at once {c['two_workers_s']:.1f} s (speedup {c['speedup']:.2f})")
        p = render_processes()
        print(f"bare batch processor, {p['images']} at {p['size']}x{p['size']}: 1 render process {p['one_s']:.1f} s, "
              f"2 {p['two_s']:.1f} s (speedup {p['speedup']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
