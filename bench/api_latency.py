"""API latency: `GET /api/artifacts` under 20 concurrent clients on loopback, against a real
`echo-os serve` over a store of 10,000 catalog entries, and against a bare FastAPI/uvicorn endpoint
that returns the same JSON bytes (the baseline: HTTP, JSON and uvicorn without our work), measured
in the same run.

    python bench/api_latency.py [--entries 10000] [--parts 100] [--clients 20] [--requests 1500]

Prints p50/p99 latency of each query and its ratio to the baseline (goal: p99 <= 100 ms). The
catalog is written directly (`ArtifactStore.append_catalog`, `--parts` parts, every image scored):
listing reads the catalog and the score table, never the PNGs, so no image is rendered.
`measure` returns the figures as data (bench/run_all.py calls it).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
TOKEN = "bench-token-0123456789"
QUERIES = {
    "newest 50, every project": "/api/artifacts?limit=50",
    "one project, text search, by score": "/api/artifacts?project=bench-api&q=fractal&sort=score&limit=50",
    "one project, page 40 of score range": "/api/artifacts?project=bench-api&min_score=40&max_score=90"
                                           "&limit=50&offset=2000",
}

BASELINE_SERVER = '''
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response

body = Path(sys.argv[1]).read_bytes()
app = FastAPI()


@app.get("/api/artifacts")
def artifacts() -> Response:
    return Response(body, media_type="application/json")


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
'''


def fill_store(root: str, entries: int, parts: int) -> None:
    import pandas as pd

    from echo_pipeline.artifacts.records import ArtifactRecord
    from echo_pipeline.artifacts.storage import ArtifactStore
    from echo_pipeline.render.backends.base import BackendDescription
    from echo_pipeline.render.requests import RenderRequest
    from echo_pipeline.resonance.memory_system import save_scores

    store = ArtifactStore.open(root)
    words = ["warm fractal", "cool waves", "neon city", "noir nebula", "pastel flow field"]
    styles = [None, "digital art", "neon noir"]
    records: dict[str, list[ArtifactRecord]] = {}
    for k in range(entries):
        project = "bench-api" if k % 4 else "bench-other"
        request = RenderRequest(prompt=f"{words[k % len(words)]} {k:05d}", seed=k, width=512, height=512,
                                style=styles[k % len(styles)], project=project)
        records.setdefault(project, []).append(ArtifactRecord(
            artifact_id=request.request_id, project=project, request=request,
            backend=BackendDescription(backend="procedural", model="echo-procedural")))
    for slug, rows in records.items():  # as runs write them: one part per run
        size = max(1, len(rows) * len(records) // parts)
        for first in range(0, len(rows), size):
            store.append_catalog(slug, rows[first: first + size])
    ids = {slug: [r.artifact_id for r in rows] for slug, rows in records.items()}
    for slug, artifact_ids in ids.items():
        save_scores(store, slug, pd.DataFrame({"artifact_id": artifact_ids,
                                               "total": [30 + (i * 37) % 70 for i in range(len(artifact_ids))]}))


def start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"server did not start: {log.read_text()}")


def load(base: str, path: str, clients: int, requests: int) -> list[float]:
    """Latencies (s) of `requests` GETs of `path` from `clients` concurrent keep-alive connections.

    One thread per client on the standard library's http.client: an asyncio httpx client costs so
    much CPU per request on two cores that it, not the server, set the p99 (370 ms against a static
    response; 55-85 ms with this client)."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    where = urlsplit(base)
    latencies: list[float] = []
    remaining = [requests]
    lock = threading.Lock()
    failures: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        try:
            while True:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                started = time.perf_counter()
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                latencies.append(time.perf_counter() - started)
                if response.status != 200:
                    failures.append(f"{response.status}: {body[:200]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} request(s) failed, e.g. {failures[0]}")
    return latencies


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure(entries: int = 10_000, parts: int = 100, clients: int = 20, requests: int = 1500,
            say=lambda line: None) -> dict:
    """p50/p99 (ms) of each query on `echo-os serve` and on the bare endpoint returning the same
    bytes; `say` gets progress lines."""
    import httpx
    from workspace import isolated_workspace  # bench/workspace.py

    figures: dict = {"entries": entries, "parts": parts, "clients": clients, "requests": requests, "queries": {}}
    with isolated_workspace(ECHO_API_TOKEN=TOKEN) as work:
        started = time.perf_counter()
        fill_store(os.environ["ECHO_ARTIFACT_ROOT"], entries, parts)
        say(f"store: {entries} catalog entries in {parts}+ parts, 2 projects, scored "
            f"({time.perf_counter() - started:.1f}s to write)")
        log = work / "serve.log"
        server = start([sys.executable, "-m", "echo_pipeline.cli.app", "serve", "--port", "0"], log)
        baseline = None
        try:
            deadline = time.monotonic() + 60
            while not (found := re.search(r"serving (http://127\.0\.0\.1:\d+)", log.read_text())):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"echo-os serve did not start: {log.read_text()}")
                time.sleep(0.05)
            url = found.group(1)
            wait_for(f"{url}/api/health", server, log)
            figures["load_average"] = os.getloadavg()[0]
            say(f"load average {figures['load_average']:.1f} on {os.cpu_count()} cores (client and servers share them)")
            for label, path in QUERIES.items():
                body = httpx.get(url + path, timeout=60).content  # also fills the server's catalog cache
                (work / "body.json").write_bytes(body)
                port = free_port()
                baseline_log = work / "baseline.log"
                baseline = start([sys.executable, "-c", BASELINE_SERVER, str(work / "body.json"), str(port)],
                                 baseline_log)
                base_url = f"http://127.0.0.1:{port}"
                wait_for(f"{base_url}/api/artifacts", baseline, baseline_log)
                latencies = {}
                for name, target in (("baseline", base_url), ("echo-os", url)):
                    load(target, path, clients, clients * 5)  # warm-up
                    latencies[name] = percentiles(load(target, path, clients, requests))
                baseline.terminate()
                baseline.wait()
                baseline = None
                (b50, b99), (e50, e99) = latencies["baseline"], latencies["echo-os"]
                figures["queries"][label] = {"path": path, "kib": len(body) / 1024, "baseline_p50_ms": b50,
                                             "baseline_p99_ms": b99, "p50_ms": e50, "p99_ms": e99}
        finally:
            for process in (server, baseline):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=60)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--parts", type=int, default=100)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=1500, help="per query and server")
    args = parser.parse_args()

    m = measure(args.entries, args.parts, args.clients, args.requests, say=print)
    print(f"{'query':<38} {'server':>10} {'p50 ms':>8} {'p99 ms':>8} {'ratio p50':>10} {'ratio p99':>10}")
    for label, q in m["queries"].items():
        b50, b99, e50, e99 = q["baseline_p50_ms"], q["baseline_p99_ms"], q["p50_ms"], q["p99_ms"]
        print(f"{label:<38} {'baseline':>10} {b50:8.1f} {b99:8.1f}")
        print(f"{'':<38} {'echo-os':>10} {e50:8.1f} {e99:8.1f} {e50 / b50:9.2f}x {e99 / b99:9.2f}x"
              f"   ({q['kib']:.0f} KiB JSON; goal p99 <= 100 ms: {'met' if e99 <= 100 else 'missed'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
