"""Fixed cost of a run: a cold `echo-os render "warm fractal 01-09" --style "digital art"` (a new
process, a new DAGSTER_HOME and artifact root each time) against the bare render of the same nine
images (the procedural backend rendering them and encoding the PNGs, in one warm process), measured
in the same run.

    python bench/cold_render.py [--repeat 3] [--size 512]

Prints the median wall times and their ratio (goal: <= 1.3x), plus `echo-os --help` for scale.
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
PROMPT = "warm fractal 01-09"
STYLE = "digital art"


def bare_render(size: int) -> float:
    """Seconds to render and PNG-encode the nine images with the backend alone (imports excluded)."""
    from echo_pipeline.render.backends.registry import create_backend
    from echo_pipeline.render.prompt_engine import PromptEngine, PromptSpec
    from echo_pipeline.render.style_manager import StyleLibrary

    configs = REPO / "configs"
    requests = PromptEngine(StyleLibrary(configs / "styles"), configs / "wildcards").build_requests(
        PromptSpec(prompt=PROMPT, style=STYLE, width=size, height=size))
    backend = create_backend("procedural")
    requests = [backend.prepare(r) for r in requests]
    started = time.perf_counter()
    for rendered in backend.render(requests):
        rendered.image.save(io.BytesIO(), format="PNG")
    seconds = time.perf_counter() - started
    backend.close()
    return seconds


def cold_cli(args: list[str], *, existing_home: bool = False) -> float:
    """Wall time of `echo-os ARGS` in a new process and folder. With `existing_home`, a first run
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
        started = time.perf_counter()
        subprocess.run(command, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    size = f"{args.size}x{args.size}"

    render = ["render", PROMPT, "--style", STYLE, "--size", size]
    bare = statistics.median(bare_render(args.size) for _ in range(args.repeat))
    first = statistics.median(cold_cli(render) for _ in range(args.repeat))
    cold = statistics.median(cold_cli(render, existing_home=True) for _ in range(args.repeat))
    helps = statistics.median(cold_cli(["--help"]) for _ in range(args.repeat))
    print(f"bare render of the 9 images at {size}:          {bare:6.2f} s")
    print(f"cold `echo-os render`, instance exists:          {cold:6.2f} s   ratio {cold / bare:.2f}x (goal <= 1.3x)")
    print(f"cold `echo-os render`, first ever (new instance): {first:6.2f} s   ratio {first / bare:.2f}x")
    print(f"fixed cost of a run on an existing instance:      {cold - bare:6.2f} s")
    print(f"`echo-os --help`:                                 {helps:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
