"""atheris fuzzing of the prompt parser, the A1111 infotext writer/reader round trip and the PNG
chunk reader (harnesses in fuzz_targets.py), each in a subprocess of its own from a seed corpus,
with a fixed libFuzzer seed so a run is repeatable. The short form (ECHO_FAULT_SHORT=1) runs each
harness 3,000 times, the full form 50,000 times."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from echo_pipeline_tests.conftest import REPO_ROOT
from echo_pipeline_tests.faults import short_form

pytestmark = pytest.mark.fault

SHORT_RUNS = 3_000
FULL_RUNS = 50_000


@pytest.mark.slow(seconds=8)  # short form; the full form ~60-300 s each
@pytest.mark.parametrize("target", ["prompt", "infotext", "png"])
def test_fuzz_harness_finds_no_crash(target: str, tmp_path: Path) -> None:
    from echo_pipeline_tests.faults.fuzz_targets import seeds

    runs = SHORT_RUNS if short_form() else FULL_RUNS
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, data in enumerate(seeds(target)):
        (corpus / f"seed-{i}").write_bytes(data)
    found = tmp_path / "found"
    found.mkdir()
    cmd = [sys.executable, "-m", "echo_pipeline_tests.faults.fuzz_targets", target, f"-runs={runs}", "-seed=1",
           "-max_len=8192", "-len_control=0", "-rss_limit_mb=2048", "-timeout=60", "-print_final_stats=1",
           f"-artifact_prefix={found}/", str(corpus)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, timeout=1200)
    log = proc.stderr.decode("utf-8", errors="replace") + proc.stdout.decode("utf-8", errors="replace")
    crash = log[log.find("=== Uncaught Python exception"):][:3000] if "Uncaught" in log else log[-3000:]
    assert proc.returncode == 0, f"{target}: {crash}\ninputs kept in {found}: {sorted(p.name for p in found.iterdir())}"
    done = re.search(r"Done (\d+) runs", log)
    assert done is not None and int(done.group(1)) == runs, log[-2000:]
    assert not list(found.iterdir())
    print(f"\n{target}: {runs} runs, {len(list(corpus.iterdir()))} corpus inputs")
