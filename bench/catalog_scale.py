"""Catalog reads as the catalog grows: `ArtifactStore.catalog(project)` at 1,000, 10,000 and 100,000
entries, first read by a new store object (every part read and parsed) and again on the same
object (parts cached), with the growth from one size to the next.

    python bench/catalog_scale.py [--sizes 1000,10000,100000] [--repeats 3]

Each catalog is written with the store's own writer (`ArtifactStore.append_catalog`) in parts of
`CATALOG_FLUSH_EVERY` rows, the part size a batch writes, so 100,000 entries are 6,250 parts.
Nothing is rendered: the catalog holds records, not pixels. `measure` returns the figures as data
(bench/run_all.py calls it).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def fill_catalog(root: str, project: str, entries: int, start: int = 0) -> None:
    """Append `entries` records (numbered from `start`) to `project`'s catalog in batch-sized parts."""
    from echo_pipeline.artifacts.records import ArtifactRecord
    from echo_pipeline.artifacts.storage import ArtifactStore
    from echo_pipeline.render.backends.base import BackendDescription
    from echo_pipeline.render.requests import RenderRequest
    from echo_pipeline.workflows.batch_processor import CATALOG_FLUSH_EVERY

    store = ArtifactStore(root, fsync=False)
    words = ["warm fractal", "cool waves", "neon city", "noir nebula", "pastel flow field"]
    styles = [None, "digital art", "neon noir"]
    description = BackendDescription(backend="procedural", model="echo-procedural")
    part: list[ArtifactRecord] = []
    for k in range(start, start + entries):
        request = RenderRequest(prompt=f"{words[k % len(words)]} {k:06d}", seed=k, width=512, height=512,
                                style=styles[k % len(styles)], project=project)
        part.append(ArtifactRecord(artifact_id=request.request_id, project=project, request=request,
                                   backend=description))
        if len(part) == CATALOG_FLUSH_EVERY:
            store.append_catalog(project, part)
            part = []
    if part:
        store.append_catalog(project, part)


def measure(sizes: tuple[int, ...] = (1_000, 10_000, 100_000), repeats: int = 3) -> dict:
    """Median seconds of a first read (new store object) and a cached read at each size; the
    catalog grows in place from one size to the next."""
    from echo_pipeline.artifacts.storage import ArtifactStore

    work = Path(tempfile.mkdtemp(prefix="echo-catalog-bench-"))
    figures: dict = {"sizes": {}}
    try:
        root, written = str(work / "artifacts"), 0
        for size in sorted(sizes):
            started = time.perf_counter()
            fill_catalog(root, "big", size - written, start=written)
            fill_s = time.perf_counter() - started
            written = size
            cold, cached = [], []
            for _ in range(repeats):
                store = ArtifactStore(root)
                started = time.perf_counter()
                frame = store.catalog("big")
                cold.append(time.perf_counter() - started)
                assert len(frame) == size, (len(frame), size)
                started = time.perf_counter()
                store.catalog("big")
                cached.append(time.perf_counter() - started)
            figures["sizes"][size] = {"parts": len(store.catalog_parts("big")), "fill_s": fill_s,
                                      "cold_s": statistics.median(cold), "cached_s": statistics.median(cached)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ordered = sorted(figures["sizes"])
    figures["growth"] = {f"{b}/{a}": {"cold": figures["sizes"][b]["cold_s"] / figures["sizes"][a]["cold_s"],
                                      "cached": figures["sizes"][b]["cached_s"] / figures["sizes"][a]["cached_s"]}
                         for a, b in zip(ordered, ordered[1:], strict=False)}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated entry counts")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    m = measure(tuple(int(s) for s in args.sizes.split(",")), args.repeats)
    print(f"{'entries':>8} {'parts':>6} {'first read s':>13} {'cached s':>9}")
    for size, f in m["sizes"].items():
        print(f"{size:>8} {f['parts']:>6} {f['cold_s']:>13.3f} {f['cached_s']:>9.3f}")
    for step, g in m["growth"].items():
        print(f"growth {step}: first read x{g['cold']:.1f}, cached x{g['cached']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
