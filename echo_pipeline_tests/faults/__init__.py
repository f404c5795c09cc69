"""The fault suite (`pytest -m fault`): SIGKILL at seeded points of a batch, a ComfyUI server that
dies, stalls or answers every error shape, PostgreSQL restarted under a run, a full disk, damaged
catalog parts and PNG chunks, and atheris fuzzing of the prompt parser, the A1111 infotext and the
PNG chunk reader. Each fault must end in a clear one-line error and a store the next run resumes
from, with nothing lost or duplicated.

`ECHO_FAULT_SHORT=1` (what .ci/run sets) picks the short form: fewer kill points and fuzz runs.
"""

from __future__ import annotations

import os


def short_form() -> bool:
    """Whether the short form was asked for (ECHO_FAULT_SHORT=1)."""
    return os.environ.get("ECHO_FAULT_SHORT", "").strip() not in ("", "0")
