"""Catalog reads as the catalog grows: `ArtifactStore.catalog(project)` at 1,000, 10,000 and 100,000
entries, first read by a new store object (every part read and parsed) and again on the same
object (parts cached), with the growth from one size to the next.

    python bench/catalog_scale.py [--sizes 1000,10000,100000] [--repeats 3]

Each catalog is written with the store's own writer (`ArtifactStore.append_catalog`) in parts of
`CATALOG_FLUSH_EVERY` rows, the part size a batch writes, into two stores side by side: "as
appended" keeps every part (100,000 entries are 6,250 parts: how a catalog read before parts were
merged); "merged" runs `compact_catalog` after every 1,000 entries, as the batch processor does after
each batch, and also reports what those merges cost. Nothing is rendered: the catalog holds records,
not pixels. `measure` returns the figures as data (bench/run_all.py calls it).
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


BATCH = 1_000  # entries per "batch": the merged store is compacted after each


def fill_catalog(root: str, project: str, entries: int, start: int = 0, compact_every: int | None = None) -> list[float]:
    """Append `entries` records (numbered from `start`) to `project`'s catalog in batch-sized parts;
    with `compact_every`, run `compact_catalog` after every that many entries. The merges' seconds."""
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
    merges: list[float] = []
    for k in range(start, start + entries):
        request = RenderRequest(prompt=f"{words[k % len(words)]} {k:06d}", seed=k, width=512, height=512,
                                style=styles[k % len(styles)], project=project)
        part.append(ArtifactRecord(artifact_id=request.request_id, project=project, request=request,
                                   backend=description))
        if len(part) == CATALOG_FLUSH_EVERY or k == start + entries - 1:
            store.append_catalog(project, part)
            part = []
        if compact_every and (k + 1) % compact_every == 0:
            started = time.perf_counter()
            store.compact_catalog(project)
            merges.append(time.perf_counter() - started)
    return merges


def _reads(root: str, size: int, repeats: int) -> dict[str, float]:
    """Median first and cached read of the catalog at `root`, and its part count."""
    from echo_pipeline.artifacts.storage import ArtifactStore

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
    return {"parts": len(store.catalog_parts("big")), "cold_s": statistics.median(cold),
            "cached_s": statistics.median(cached)}


def measure(sizes: tuple[int, ...] = (1_000, 10_000, 100_000), repeats: int = 3) -> dict:
    """At each size: reads of the catalog as appended (`cold_s`, `cached_s`, `parts`) and as batches
    leave it (`merged_*`), and the merges' mean and longest seconds so far; the catalogs grow in
    place from one size to the next."""
    work = Path(tempfile.mkdtemp(prefix="echo-catalog-bench-"))
    figures: dict = {"sizes": {}}
    try:
        appended, merged, written, merges = str(work / "appended"), str(work / "merged"), 0, []
        for size in sorted(sizes):
            started = time.perf_counter()
            fill_catalog(appended, "big", size - written, start=written)
            fill_s = time.perf_counter() - started
            merges += fill_catalog(merged, "big", size - written, start=written, compact_every=BATCH)
            written = size
            plain, compacted = _reads(appended, size, repeats), _reads(merged, size, repeats)
            figures["sizes"][size] = {**plain, "fill_s": fill_s, **{f"merged_{k}": v for k, v in compacted.items()},
                                      "merge_mean_s": statistics.mean(merges) if merges else 0.0,
                                      "merge_max_s": max(merges, default=0.0)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ordered = sorted(figures["sizes"])
    figures["growth"] = {
        f"{b}/{a}": {key: figures["sizes"][b][f"{prefix}_s"] / figures["sizes"][a][f"{prefix}_s"]
                     for key, prefix in (("cold", "cold"), ("cached", "cached"), ("merged_cold", "merged_cold"),
                                         ("merged_cached", "merged_cached"))}
        for a, b in zip(ordered, ordered[1:], strict=False)}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated entry counts")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    m = measure(tuple(int(s) for s in args.sizes.split(",")), args.repeats)
    print(f"{'entries':>8} | as appended: {'parts':>6} {'first s':>8} {'cached s':>8} | merged: {'parts':>5} "
          f"{'first s':>8} {'cached s':>8} | merge mean / max s")
    for size, f in m["sizes"].items():
        print(f"{size:>8} | {f['parts']:>19} {f['cold_s']:>8.3f} {f['cached_s']:>8.3f} | {f['merged_parts']:>13} "
              f"{f['merged_cold_s']:>8.3f} {f['merged_cached_s']:>8.3f} | {f['merge_mean_s']:.3f} / {f['merge_max_s']:.3f}")
    for step, g in m["growth"].items():
        print(f"growth {step}: as appended first read x{g['cold']:.1f}, cached x{g['cached']:.1f}; "
              f"merged first read x{g['merged_cold']:.1f}, cached x{g['merged_cached']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
