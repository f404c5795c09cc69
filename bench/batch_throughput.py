"""Batch throughput: `echo-os batch --count N` at 512x512 (with scoring, style memory and gallery)
against the bare render of the same requests, measured in the same run.

    python bench/batch_throughput.py [--count 100] [--size 512]

Prints images/min for the full Dagster batch (goal: >= 60 on this 2-core machine; the vision asks
for 10), the bare render rate (BatchProcessor alone: render + PNG + thumbnail + catalog), and
Dagster's overhead as a ratio to the bare render time. Everything happens in temporary folders.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

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
                                      count=args.count, width=args.size, height=args.size)

        # Baseline: the same requests through the bare batch processor, into a separate store.
        requests = [r for ps in task_prompt_specs(plan_project(spec), spec, batch=0) for r in engine.plan_requests(ps)]
        bare_store = ArtifactStore.open(str(work / "bare"))
        started = time.perf_counter()
        bare = BatchProcessor(bare_store, create_backend("procedural")).run(requests)
        bare_seconds = time.perf_counter() - started
        assert len(bare.new) == args.count

        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("projects", [spec.slug])
            job = defs.resolve_job_def("batch")
            quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
            started = time.perf_counter()
            result = job.execute_in_process(instance=instance, partition_key=spec.slug, run_config=quiet)
            batch_seconds = time.perf_counter() - started
            assert result.success
            new = result.asset_materializations_for_node("generated_images")[0].metadata["new_images"].value
            assert new == args.count
            # Per-run fixed cost: a run whose steps do (almost) nothing new.
            started = time.perf_counter()
            job.execute_in_process(instance=instance, partition_key=spec.slug, run_config=quiet,
                                   asset_selection=[dg.AssetKey("intent")])
            tiny_seconds = time.perf_counter() - started

        batch_rate = 60 * args.count / batch_seconds
        bare_rate = 60 * args.count / bare_seconds
        print(f"images: {args.count} at {args.size}x{args.size}, procedural backend, {os.cpu_count()} CPU cores")
        print(f"bare render (BatchProcessor)   {bare_seconds:7.2f} s   {bare_rate:7.1f} images/min   (baseline)")
        print(f"dagster batch (7 assets)       {batch_seconds:7.2f} s   {batch_rate:7.1f} images/min   "
              f"ratio to baseline {batch_seconds / bare_seconds:.2f}")
        print(f"dagster overhead incl. scoring {batch_seconds - bare_seconds:7.2f} s   "
              f"= {(batch_seconds - bare_seconds) / bare_seconds:.2f} x bare render time")
        print(f"fixed cost of one tiny run     {tiny_seconds:7.2f} s   = {tiny_seconds / bare_seconds:.3f} x bare render time")
        print(f"goal >= 60 images/min: {'met' if batch_rate >= 60 else 'NOT met'}; vision's 10 images/min: "
              f"{'met' if batch_rate >= 10 else 'NOT met'}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
