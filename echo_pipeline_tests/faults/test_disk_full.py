"""A real full disk: the artifact root on a 4 MiB tmpfs, filled up to a few images' worth by a
ballast file, so a batch runs out of space (ENOSPC from the kernel) part-way. The command must end
with one line (exit 2), every file left must be whole (no `*.tmp-*`, each PNG decodes, the catalog
reads), and once space is freed the next batch completes with nothing lost or duplicated.

Mounting needs root (CAP_SYS_ADMIN); without it the test is skipped and says why.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.fault

COUNT = 10
FREE_BYTES = 48 * 1024  # room for about two 64x64 images with their thumbnails and the plan files


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path, leave: int) -> Path:
    ballast = mount / "ballast"
    stats = os.statvfs(mount)
    free = stats.f_bavail * stats.f_frsize
    with open(ballast, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return ballast


@pytest.mark.slow(seconds=15)
def test_batch_on_a_full_disk_is_one_line_and_the_next_run_completes(cli, small_disk, monkeypatch):
    from PIL import Image

    from echo_pipeline.artifacts.storage import ArtifactStore

    root = small_disk / "artifacts"
    monkeypatch.setenv("ECHO_ARTIFACT_ROOT", str(root))
    assert cli("plan", "Full Disk", "flow field", "--size", "64x64", "--count", str(COUNT))[0] == 0
    ballast = _fill(small_disk, FREE_BYTES)

    code, _, err = cli("batch", "full-disk", "--json")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "No space left on device" in lines[0], lines[0]

    # Nothing half-written: no temporary file, every PNG whole, the catalog readable.
    project = root / "projects" / "full-disk"
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
    pngs = sorted((project / "images").glob("*.png"))
    assert 0 < len(pngs) < COUNT, "the disk must fill up part-way through the batch"
    for path in pngs:
        with Image.open(path) as image:
            image.load()
    store = ArtifactStore(str(root))
    catalogued = set(store.catalog("full-disk")["artifact_id"])
    assert catalogued <= {p.stem for p in pngs}
    assert not store.catalog_problems()

    ballast.unlink()
    code, out, err = cli("batch", "full-disk", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["batch"] == 0 and summary["new_images"] + summary["already_stored"] + summary["recovered"] >= COUNT
    catalog = ArtifactStore(str(root)).catalog("full-disk")
    assert len(catalog) == COUNT and catalog["artifact_id"].is_unique
    assert {p.stem for p in (project / "images").glob("*.png")} == set(catalog["artifact_id"])
    report = ArtifactStore(str(root)).verify("full-disk")
    assert report.ok, report.summary()
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
    print(f"\nfull after {len(pngs)} of {COUNT} images ({len(catalogued)} catalogued): {lines[0]}")
