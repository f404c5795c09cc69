"""What every benchmark starts from: a throw-away folder with a copy of the repo's configs (no user
styles, no example projects), its own artifact root and a DAGSTER_HOME with the repo's dagster.yaml,
all set in this process's environment; removed afterwards."""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def isolated_workspace(**environment: str) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="echo-bench-"))
    try:
        shutil.copytree(REPO / "configs", work / "configs", ignore=shutil.ignore_patterns("user.json", "projects"))
        (work / "dagster_home").mkdir()
        shutil.copyfile(REPO / "dagster.yaml", work / "dagster_home" / "dagster.yaml")
        os.environ.update(ECHO_CONFIG_DIR=str(work / "configs"), ECHO_ARTIFACT_ROOT=str(work / "artifacts"),
                          DAGSTER_HOME=str(work / "dagster_home"), **environment)
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its ended children (and theirs) so far: on a
    shared machine it moves far less with the load than wall time does."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))
