"""Every benchmark figure with a goal, in one run on this machine, each against a baseline measured
in the same run; writes bench/results/latest.json (the figures) and latest.md (the table).

    python bench/run_all.py [--quick] [--only NAME[,NAME]] [--out STEM]

Suites (each runs in a fresh Python process, calling the function of its bench script that returns
the figures as data; nothing is measured here):

    batch      batch images/min at 512x512 with scoring vs a NumPy Julia render + PNG on the same
               cores (goal >= 0.6), and vs the bare batch processor (bench/batch_throughput.py)
    cold       cold `echo-os render "warm fractal 01-09"` vs the bare render of the nine (<= 1.3x)
               (bench/cold_render.py)
    diffusers  `batch` on the tiny diffusers model vs bare diffusers (<= 1.10); ComfyUI client latency
               (bench/backend_overhead.py)
    clip       CLIP scoring vs open_clip called directly (<= 1.10); offline scorers
               (bench/scoring.py)
    memory     peak RSS of a real `echo-os batch` of 1,000 images at 128x128 (< 1 GB)
               (bench/batch_throughput.py)
    gallery    gallery build for 10,000 catalog entries (<= 10 s) (bench/gallery_scale.py)
    api        GET /api/artifacts p50/p99 under 20 concurrent clients (p99 <= 100 ms)
               (bench/api_latency.py)
    scaling    batch time at 1 and 2 workers (bench/batch_throughput.py); catalog reads at 1k, 10k
               and 100k entries (bench/catalog_scale.py)

`--quick` uses smaller sizes (e.g. 100 images instead of 1,000, catalogs up to 10k instead of 100k)
so a developer can check the suite in a few minutes; its results go to bench/results/quick.* (not
committed) and goals that are stated for the full size are not judged. `--only` runs some suites
and keeps the other suites' rows from the existing results file.

On a shared machine the absolute numbers move with the load; the ratios compare each figure with
its baseline from the same run (the load average is recorded with every suite).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
sys.path[:0] = [str(REPO), str(BENCH)]

MB = 1e6


def row(figure: str, value: str, baseline: str = "", ratio: float | None = None, goal: str = "",
        met: bool | None = None, *, ratio_text: str | None = None, **data: Any) -> dict[str, Any]:
    """One line of the table; `data` keeps the numbers behind it for the JSON."""
    return {"figure": figure, "value": value, "baseline": baseline, "ratio": ratio,
            "ratio_text": ratio_text if ratio_text is not None else ("" if ratio is None else f"{ratio:.2f}×"),
            "goal": goal, "met": met, "data": data}


# -- the suites: call the bench scripts' functions, turn their figures into rows ----------------------
def suite_batch(quick: bool) -> tuple[dict, list[dict]]:
    import batch_throughput

    count = 20 if quick else 100
    m = batch_throughput.measure(count, 512)
    limit = batch_throughput.numpy_limit(count, 512)
    ratio = m["batch_per_min"] / limit["per_min"]
    cpu = {k: v / count for k, v in (("batch", m["batch_cpu_s"]), ("bare", m["bare_cpu_s"]), ("numpy", limit["cpu_s"]))}
    numpy = (f"NumPy Julia ({limit['iterations']} iterations, masked grid) + PNG, {limit['processes']} processes: "
             f"{limit['per_min']:.1f} images/min")
    return {"batch": m, "numpy_limit": limit}, [
        row(f"`batch --count {count}` at 512² with scoring, memory, gallery (in process, warm)",
            f"{m['batch_per_min']:.1f} images/min ({m['batch_s']:.1f} s)", numpy, ratio, "≥ 0.6", ratio >= 0.6,
            batch_per_min=m["batch_per_min"], numpy_per_min=limit["per_min"]),
        row("the bare batch processor alone (render + PNG + thumbnail + catalog), same requests",
            f"{m['bare_per_min']:.1f} images/min ({m['bare_s']:.1f} s)", numpy, m["bare_per_min"] / limit["per_min"]),
        row("the batch against the bare batch processor (wall time)", f"{m['batch_s']:.1f} s",
            f"{m['bare_s']:.1f} s", m["batch_s"] / m["bare_s"], batch_s=m["batch_s"], bare_s=m["bare_s"]),
        row("CPU seconds per image (user + system, all processes): batch / bare batch processor",
            f"{cpu['batch']:.3f} / {cpu['bare']:.3f} s", f"NumPy Julia + PNG {cpu['numpy']:.3f} s",
            cpu["numpy"] / cpu["batch"], ratio_text=f"{cpu['numpy'] / cpu['batch']:.2f}× / "
            f"{cpu['numpy'] / cpu['bare']:.2f}× (Julia ÷ ours)", cpu_per_image=cpu),
        row("fixed cost of one tiny `batch` run (intent only)", f"{m['tiny_run_s']:.2f} s",
            f"bare render of the batch {m['bare_s']:.1f} s", m["tiny_run_s"] / m["bare_s"], ratio_text=
            f"{m['tiny_run_s'] / m['bare_s']:.3f}×", tiny_run_s=m["tiny_run_s"]),
    ]


def suite_cold(quick: bool) -> tuple[dict, list[dict]]:
    import cold_render

    m = cold_render.measure(1 if quick else 3, 512)
    ratio = m["cold_s"] / m["bare_s"]
    median = "" if quick else f", median of {m['repeat']}"
    return m, [
        row(f"cold `echo-os render \"warm fractal 01-09\"`, instance exists{median}", f"{m['cold_s']:.2f} s",
            f"bare render of the nine {m['bare_s']:.2f} s", ratio, "≤ 1.3×", ratio <= 1.3),
        row("the same, first command on a new instance", f"{m['first_s']:.2f} s", f"{m['bare_s']:.2f} s",
            m["first_s"] / m["bare_s"]),
        row("`echo-os --help`", f"{m['help_s']:.2f} s"),
        row("CPU seconds of the cold render (all processes, its render processes included)",
            f"{m['cold_cpu_s']:.2f} s", f"bare render {m['bare_cpu_s']:.2f} s", m["cold_cpu_s"] / m["bare_cpu_s"]),
    ]


def suite_diffusers(quick: bool) -> tuple[dict, list[dict]]:
    import backend_overhead

    count, size, steps, comfy = (8, 64, 8, 5) if quick else (32, 128, 20, 20)
    m = backend_overhead.measure(count, size, steps, comfy)
    d, c = m["diffusers"], m["comfyui"]
    return m, [
        row(f"`batch` of {d['images']} tiny-diffusers images, {size}², {steps} steps", f"{d['pipeline_s']:.1f} s",
            f"bare diffusers pipeline {d['bare_s']:.1f} s", d["ratio"], "≤ 1.10×", d["ratio"] <= 1.10,
            ratio_text=f"{d['ratio']:.3f}×"),
        row("CPU seconds of the same (user + system)", f"{d['pipeline_cpu_s']:.1f} s",
            f"bare diffusers pipeline {d['bare_cpu_s']:.1f} s", d["pipeline_cpu_s"] / d["bare_cpu_s"],
            ratio_text=f"{d['pipeline_cpu_s'] / d['bare_cpu_s']:.3f}×"),
        row(f"ComfyUI client, {c['images']} images, loopback server", f"{c['ours_s']:.2f} s",
            f"minimal httpx client {c['minimal_s']:.2f} s", c["ours_s"] / c["minimal_s"],
            ratio_text=f"{c['added_ms_per_image']:+.1f} ms per image"),
    ]


def suite_clip(quick: bool) -> tuple[dict, list[dict]]:
    import scoring

    count, repeats = (16, 2) if quick else (64, 3)
    m = scoring.measure(count, 512, count, repeats)
    c = m["clip"]
    offline = m["offline_s"]["QualityAssessor.assess (all offline)"]
    return m, [
        row(f"CLIP scoring, random-init ViT-B-32, {c['images']} images (best of {repeats})",
            f"{c['pipeline_s']:.2f} s", f"open_clip called directly {c['direct_s']:.2f} s", c["ratio"],
            "≤ 1.10×", c["ratio"] <= 1.10, ratio_text=f"{c['ratio']:.3f}×"),
        row(f"offline scoring (technical, style descriptor, pHash), {m['images']} images 512²",
            f"{m['images'] / offline:.0f} images/s"),
    ]


def suite_memory(quick: bool) -> tuple[dict, list[dict]]:
    import batch_throughput

    count, size = (100, 128) if quick else (1000, 128)
    m = batch_throughput.peak_rss(count, size)
    peak = m["peak_tree_bytes"]
    return m, [
        row(f"peak RSS of `echo-os batch --count {count}` at {size}² (\"{m['intent']}\"; command + render "
            "workers, summed)",
            f"{peak / MB:.0f} MB", f"PSS summed {m['peak_tree_pss_bytes'] / MB:.0f} MB (shared pages once); "
            f"largest process {m['peak_process_bytes'] / MB:.0f} MB "
            f"(ru_maxrss {m['ru_maxrss_bytes'] / MB:.0f} MB); run {m['seconds']:.0f} s"
            + ("" if m["completed"] else " — the run stopped at the blocking uniqueness check (near-duplicates), "
               "so scoring, memory and gallery did not run"
               if "asset check failed" in (m["error"] or "") else f" — the run failed: {m['error']}"), None,
            "< 1,000 MB at 1,000 images", None if quick or not m["completed"] else peak < 1000 * MB),
    ]


def suite_gallery(quick: bool) -> tuple[dict, list[dict]]:
    import gallery_scale

    images = 2_000 if quick else 10_000
    m = gallery_scale.measure(images)
    return m, [
        row(f"gallery build, {m['images']:,} catalog entries ({m['data_mb']:.1f} MB data.js)", f"{m['build_s']:.2f} s",
            f"catalog read + rows as JSON {m['floor_s']:.2f} s", m["build_s"] / m["floor_s"],
            "≤ 10 s at 10,000", None if quick else m["build_s"] <= 10),
    ]


def suite_api(quick: bool) -> tuple[dict, list[dict]]:
    import api_latency

    m = api_latency.measure(10_000, 100, 20, 300 if quick else 1500)
    rows = []
    for label, q in m["queries"].items():
        rows.append(row(f"`GET /api/artifacts` ({label}), {m['entries']:,} entries, {m['clients']} clients, "
                        f"p50 / p99", f"{q['p50_ms']:.1f} / {q['p99_ms']:.1f} ms",
                        f"bare FastAPI endpoint, same bytes: {q['baseline_p50_ms']:.1f} / {q['baseline_p99_ms']:.1f} ms",
                        q["p99_ms"] / q["baseline_p99_ms"], "p99 ≤ 100 ms", q["p99_ms"] <= 100,
                        ratio_text=f"{q['p50_ms'] / q['baseline_p50_ms']:.2f}× / {q['p99_ms'] / q['baseline_p99_ms']:.2f}×"))
    return m, rows


def suite_scaling(quick: bool) -> tuple[dict, list[dict]]:
    import batch_throughput
    import catalog_scale

    each, size = (10, 128) if quick else (50, 256)
    c = batch_throughput.concurrent_batches(each, size)
    p = batch_throughput.render_processes(*((10, 256) if quick else (40, 512)))
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    k = catalog_scale.measure(sizes, 2 if quick else 3)
    rows = [
        row(f"2 workers: two projects' `echo-os batch` ({each} images each, {size}²) at once, one instance",
            f"{c['two_workers_s']:.1f} s", f"1 worker, one after the other: {c['one_worker_s']:.1f} s",
            c["speedup"], ratio_text=f"speedup {c['speedup']:.2f}×"),
        row(f"2 workers: the procedural backend's render processes, bare batch processor, {p['images']} images "
            f"{p['size']}²", f"{p['two_s']:.1f} s", f"1 render process: {p['one_s']:.1f} s", p["speedup"],
            ratio_text=f"speedup {p['speedup']:.2f}×"),
    ]
    for entries, f in k["sizes"].items():
        rows.append(row(f"catalog read, {entries:,} entries, parts merged after each 1,000 as batches do "
                        f"({f['merged_parts']:,} part{'' if f['merged_parts'] == 1 else 's'}): first read / cached",
                        f"{f['merged_cold_s']:.3f} / {f['merged_cached_s']:.3f} s",
                        f"as appended, {f['parts']:,} parts: {f['cold_s']:.3f} / {f['cached_s']:.3f} s",
                        f["merged_cold_s"] / f["cold_s"],
                        ratio_text=f"{f['merged_cold_s'] / f['cold_s']:.3f}× (first read)"))
    last = k["sizes"][max(k["sizes"])]
    rows.append(row("merging a project's small catalog parts after a batch (every 1,000 entries up to the largest "
                    "size): mean / longest", f"{last['merge_mean_s']:.3f} / {last['merge_max_s']:.3f} s"))
    for step, g in k["growth"].items():
        a, b = (int(x) for x in step.split("/")[::-1])
        rows.append(row(f"catalog read growth, {a:,} → {b:,} entries ({b // a}× the entries): first read / cached",
                        f"merged {g['merged_cold']:.1f}× / {g['merged_cached']:.1f}×",
                        f"as appended {g['cold']:.1f}× / {g['cached']:.1f}×"))
    return {"concurrent_batches": c, "render_processes": p, "catalog": k}, rows


SUITES: dict[str, Callable[[bool], tuple[dict, list[dict]]]] = {
    "batch": suite_batch, "cold": suite_cold, "diffusers": suite_diffusers, "clip": suite_clip,
    "memory": suite_memory, "gallery": suite_gallery, "api": suite_api, "scaling": suite_scaling,
}


# -- orchestration ----------------------------------------------------------------------------------
def run_suite(name: str, quick: bool, timeout: float) -> dict[str, Any]:
    """Run one suite in a fresh Python process; its figures and rows, or the error."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="echo-bench-suite-") as tmp:
        out = Path(tmp) / "suite.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--suite", name, "--suite-out", str(out)]
        try:
            done = subprocess.run(command + (["--quick"] if quick else []), cwd=REPO, timeout=timeout,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            error = None if done.returncode == 0 and out.exists() else (
                f"exit {done.returncode}: {done.stdout.strip()[-1500:]}")
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout:.0f} s"
        result = json.loads(out.read_text()) if error is None else {"figures": {}, "rows": []}
    result.update(seconds=time.perf_counter() - started, load_before=load_before, load_after=os.getloadavg()[0],
                  error=error, when=datetime.now(timezone.utc).isoformat(timespec="seconds"), quick=quick,
                  commit=_commit())
    return result


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [f"Figures from `python bench/run_all.py{' --quick' if results['quick'] else ''}` on {machine['cores']} "
             f"CPU cores ({machine['cpu']}), commit {results['commit']}, {results['when'][:10]}; each ratio is "
             "against a baseline measured in the same run.", "",
             "| figure | value | baseline | ratio | goal | met? |", "|---|---|---|---|---|---|"]
    for name in SUITES:
        suite = results["suites"].get(name)
        if suite is None:
            continue
        if suite.get("error"):
            lines.append(f"| {name}: did not finish | {suite['error'].splitlines()[-1][:120]} | | | | |")
            continue
        for r in suite["rows"]:
            unjudged = "" if not r["goal"] else ("n/a (quick)" if suite.get("quick") else "not judged")
            met = {True: "yes", False: "**no**", None: unjudged}[r["met"]]
            cells = [r["figure"], r["value"], r["baseline"], r["ratio_text"], r["goal"], met]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    loads = ", ".join(f"{n} {s['load_before']:.1f}–{s['load_after']:.1f}" for n, s in results["suites"].items())
    lines += ["", f"Load average (1 min) before–after each suite: {loads}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a check in a few minutes")
    parser.add_argument("--only", help=f"comma-separated suites: {', '.join(SUITES)}")
    parser.add_argument("--out", help="results file stem (default bench/results/latest, or quick with --quick)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one suite may take (a hang guard)")
    parser.add_argument("--suite", help=argparse.SUPPRESS)  # internal: run one suite in this process
    parser.add_argument("--suite-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.suite:
        figures, rows = SUITES[args.suite](args.quick)
        Path(args.suite_out).write_text(json.dumps({"figures": figures, "rows": rows}, default=str))
        return 0

    names = list(SUITES) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITES]
    if unknown or not names:
        parser.error(f"unknown suite(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SUITES)}")
    stem = Path(args.out) if args.out else RESULTS / ("quick" if args.quick else "latest")
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    previous = json.loads(json_path.read_text()) if args.only and json_path.exists() else {}
    results: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": _commit(), "quick": args.quick,
        "machine": {"cores": os.cpu_count(), "cpu": _cpu(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "suites": {n: s for n, s in previous.get("suites", {}).items() if n not in names},
    }
    for name in names:
        print(f"[{name}] running (load average {os.getloadavg()[0]:.1f})...", file=sys.stderr, flush=True)
        suite = run_suite(name, args.quick, args.timeout)
        results["suites"][name] = suite
        results["suites"] = {n: results["suites"][n] for n in SUITES if n in results["suites"]}
        json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        md_path.write_text(markdown(results))
        status = f"failed: {suite['error'].splitlines()[-1]}" if suite["error"] else f"{len(suite['rows'])} figures"
        print(f"[{name}] {suite['seconds']:.0f} s, {status}", file=sys.stderr, flush=True)
    print(md_path.read_text())
    print(f"written: {json_path.relative_to(REPO) if json_path.is_relative_to(REPO) else json_path}, "
          f"{md_path.relative_to(REPO) if md_path.is_relative_to(REPO) else md_path}")
    failed = [n for n in names if results["suites"][n]["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
