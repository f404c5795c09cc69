"""The loopback ComfyUI server (`echo_pipeline_tests/comfyui_server.py`) as a process of its own, so a
test can SIGKILL it mid-prompt: `python -m echo_pipeline_tests.faults.comfyui_process ROOT
[STEP_DELAY_S]` prints its URL on one line and serves until it is killed or its stdin closes."""

from __future__ import annotations

import sys

from echo_pipeline_tests.comfyui_server import running_comfyui_server


def main(argv: list[str]) -> None:
    root = argv[0]
    delay = float(argv[1]) if len(argv) > 1 else 0.0
    with running_comfyui_server(root, step_delay_s=delay) as (url, _):
        print(url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or kills us)


if __name__ == "__main__":
    main(sys.argv[1:])
