"""Fixed cost of a run: a cold `echo-os render "warm fractal 01-09" --style "digital art"` (a new
process, a new DAGSTER_HOME and artifact root each time) against the bare render of the same nine
images (the procedural backend rendering them and encoding the PNGs, in one warm process), measured
in the same run.

    python bench/cold_render.py [--repeat 3] [--size 512]

Prints the median wall times and their ratio (goal: <= 1.3x), plus `echo-os --help` for scale.
`measure` returns the figures as data (bench/run_all.py calls it).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from workspace import cpu_seconds  # noqa: E402  (bench/workspace.py)

PROMPT = "warm fractal 01-09"
STYLE = "digital art"


def bare_render(size: int) -> tuple[float, float]:
    """Seconds to render and PNG-encode the nine images with the backend alone (imports excluded),
    and the CPU seconds that took (the render processes' included)."""
    from echo_pipeline.render.backends.registry import create_backend
    from echo_pipeline.render.prompt_engine import PromptEngine, PromptSpec
    from echo_pipeline.render.style_manager import StyleLibrary

    configs = REPO / "configs"
    requests = PromptEngine(StyleLibrary(configs / "styles"), configs / "wildcards").build_requests(
        PromptSpec(prompt=PROMPT, style=STYLE, width=size, height=size))
    backend = create_backend("procedural")
    requests = [backend.prepare(r) for r in requests]
    started, cpu = time.perf_counter(), cpu_seconds()
    for rendered in backend.render(requests):
        rendered.image.save(io.BytesIO(), format="PNG")
    seconds = time.perf_counter() - started
    backend.close()
    return seconds, cpu_seconds() - cpu


def cold_cli(args: list[str], *, existing_home: bool = False) -> tuple[float, float]:
    """Wall time and CPU seconds (its render processes' included) of `echo-os ARGS` in a new
    process and folder. With `existing_home`, a first run
    creates ./.dagster_home (not timed) and the artifacts are deleted, so the timed run renders the
    same images on an instance that exists, as every command after a user's first one does."""
    work = Path(tempfile.mkdtemp(prefix="echo-bench-"))
    try:
        shutil.copytree(REPO / "configs", work / "configs", ignore=shutil.ignore_patterns("user.json", "projects"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "DAGSTER_"))}
        env.update(ECHO_CONFIG_DIR=str(work / "configs"))
        command = [sys.executable, "-m", "echo_pipeline.cli.app", *args]
        if existing_home:
            subprocess.run(command, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            shutil.rmtree(work / "artifacts")
        started, cpu = time.perf_counter(), cpu_seconds()
        subprocess.run(command, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started, cpu_seconds() - cpu
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(repeat: int = 3, size: int = 512) -> dict[str, float]:
    """Median seconds of each case over `repeat` interleaved runs: the bare render, the cold render on an
    existing instance, the first command on a new instance, and `echo-os --help`; `*_s` wall time,
    `*_cpu_s` CPU time."""
    render = ["render", PROMPT, "--style", STYLE, "--size", f"{size}x{size}"]
    times: dict[str, list[tuple[float, float]]] = {"bare": [], "cold": [], "first": [], "help": []}
    for _ in range(repeat):  # interleaved, so drift in the machine's load hits every case alike
        times["bare"].append(bare_render(size))
        times["first"].append(cold_cli(render))
        times["cold"].append(cold_cli(render, existing_home=True))
        times["help"].append(cold_cli(["--help"]))
    figures: dict[str, float] = {"size": size, "repeat": repeat}
    for case, pairs in times.items():
        figures[f"{case}_s"] = statistics.median(wall for wall, _ in pairs)
        figures[f"{case}_cpu_s"] = statistics.median(cpu for _, cpu in pairs)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    m = measure(args.repeat, args.size)
    size, bare, cold, first = f"{args.size}x{args.size}", m["bare_s"], m["cold_s"], m["first_s"]
    print(f"bare render of the 9 images at {size}:          {bare:6.2f} s")
    print(f"cold `echo-os render`, instance exists:          {cold:6.2f} s   ratio {cold / bare:.2f}x (goal <= 1.3x)")
    print(f"cold `echo-os render`, first ever (new instance): {first:6.2f} s   ratio {first / bare:.2f}x")
    print(f"fixed cost of a run on an existing instance:      {cold - bare:6.2f} s")
    print(f"`echo-os --help`:                                 {m['help_s']:6.2f} s")
    print(f"CPU seconds (all processes): bare {m['bare_cpu_s']:.2f}, cold render {m['cold_cpu_s']:.2f}, first "
          f"{m['first_cpu_s']:.2f}, --help {m['help_cpu_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
