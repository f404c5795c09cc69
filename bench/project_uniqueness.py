"""Project-wide uniqueness at scale: a 500-image Ruzgar NFT collection through ProjectPipeline.

    python bench/project_uniqueness.py [--batches 25] [--count 20] [--size 64]

Renders `--batches` batches of `--count` warm fractals ("warm fractal, no human forms", style
"digital art") exactly as the asset graph does (prompt_set, generate with the project-wide
`unique_images` check against every earlier image, score), then prints

* whether every batch's check passed, and the closest pHash pair over the whole project against the
  near-duplicate distance (`PROJECT_DUPLICATE_DISTANCE`);
* the cost of the check: the seconds the project-wide comparison takes in the last batch against
  the seconds that batch took to render (a ratio from the same run).

This was a test until issue 9 (58 s of the suite); the suite keeps the 120-image acceptance run
(`echo_pipeline_tests/test_resonance_acceptance.py`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=25)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    import numpy as np

    from echo_pipeline.render.backends.procedural import ProceduralBackend
    from echo_pipeline.resonance.quality_assessor import (
        PROJECT_DUPLICATE_DISTANCE,
        hash_ints,
        popcount,
        project_hashes,
        project_near_duplicates,
    )
    from echo_pipeline.settings import REPO_CONFIG_DIR, Settings
    from echo_pipeline.workflows.creative_engine import CreativeEngine
    from echo_pipeline.workflows.project_pipeline import ProjectPipeline

    work = Path(tempfile.mkdtemp(prefix="echo-uniqueness-"))
    try:
        config = work / "configs"
        shutil.copytree(REPO_CONFIG_DIR, config, ignore=shutil.ignore_patterns("user.json", "projects"))
        (config / "projects").mkdir()
        engine = CreativeEngine(Settings.load(artifact_root=str(work / "artifacts"), config_dir=config))
        spec = engine.projects.create("Ruzgar NFT Collection", "warm fractal, no human forms", style="digital art",
                                      count=args.count, width=args.size, height=args.size)
        pipeline = ProjectPipeline(engine, spec.slug)
        pipeline.intent()
        pipeline.plan()
        backend = ProceduralBackend()
        failed = 0
        render_seconds = 0.0
        for _ in range(args.batches):
            pipeline.prompt_set(backend)
            step = pipeline.generate(backend)
            failed += not step.check["passed"]
            render_seconds = float(step.summary["seconds"])
            pipeline.score()
        hashes = project_hashes(engine.store, spec.slug)
        started = time.perf_counter()
        last = dict(list(hashes.items())[-args.count:])
        project_near_duplicates(last, {k: v for k, v in hashes.items() if k not in last})
        check_seconds = time.perf_counter() - started
        values = hash_ints(list(hashes.values()))
        distance = popcount(values[:, None] ^ values[None, :])
        np.fill_diagonal(distance, 64)
        closest = int(distance.min())
        print(f"{len(hashes)} images in {args.batches} batches of {args.count} at {args.size}px; "
              f"checks failed: {failed}")
        print(f"closest pair: pHash distance {closest} (near-duplicate at <= {PROJECT_DUPLICATE_DISTANCE}): "
              f"{'PASS' if closest > PROJECT_DUPLICATE_DISTANCE and not failed else 'FAIL'}")
        print(f"project-wide check of the last batch: {1000 * check_seconds:.1f} ms, "
              f"{check_seconds / max(render_seconds, 1e-9):.4f}x its render time ({render_seconds:.2f} s)")
        return 0 if closest > PROJECT_DUPLICATE_DISTANCE and not failed else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
