"""`echo-os artifacts list|show|verify` and `echo-os gallery` on damaged, read-only and full stores.

The store is filled through `ArtifactStore` directly (fast, no Dagster run); the commands run through
the real entry point (`cli` fixture).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

from echo_pipeline.artifacts import ArtifactRecord, ArtifactStore
from echo_pipeline.render.backends.base import BackendDescription
from echo_pipeline.render.requests import RenderRequest

DESC = BackendDescription(backend="procedural", model="echo-procedural", version="1")
EVIL = "warm \x1b[2J\x1b]0;pwned\x07 fractal \x9b31m \u202eevil"


def picture(i: int) -> Image.Image:
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[..., 0] = (np.arange(64)[None, :] * (i + 2)) % 256
    arr[..., 1] = 40 * i % 256
    return Image.fromarray(arr, "RGB")


def fill(root: Path, project: str = "default", n: int = 2, prompt: str = "warm fractal", **fields) -> list[ArtifactRecord]:
    store = ArtifactStore.open(str(root))
    records = []
    for i in range(n):
        req = RenderRequest(prompt=f"{prompt} {i:02d}", seed=3_000_000_000 + i, width=64, height=64, project=project,
                            **fields)
        record = ArtifactRecord(artifact_id=req.request_id, project=project, request=req, backend=DESC)
        records.append(store.save(record, picture(i)))
    store.append_catalog(project, records)
    return records


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def png(root: Path, record: ArtifactRecord) -> Path:
    return root / "projects" / record.project / "images" / f"{record.artifact_id}.png"


# --------------------------------------------------------------------------------------------------
# verify / show: the file must be the one catalogued


def test_verify_exit_codes_and_copied_png(cli, artifact_root):
    a, b = fill(artifact_root)
    code, out, err = cli("artifacts", "verify")
    assert code == 0 and "all fine" in out, err
    shutil.copyfile(png(artifact_root, b), png(artifact_root, a))  # a valid PNG, the wrong one
    code, out, _ = cli("artifacts", "verify", "--project", "default")
    assert code == 1
    assert f"default/{a.artifact_id}" in out and "hash mismatch" in out and b.artifact_id in out
    assert "1 problem(s): 1 hash mismatch" in out
    code, out, _ = cli("artifacts", "verify", "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"] and report["counts"] == {"hash_mismatch": 1}
    assert report["problems"][0]["artifact_id"] == a.artifact_id
    code, _, err = cli("artifacts", "show", a.artifact_id)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "hash mismatch" in lines[0]
    code, out, _ = cli("artifacts", "show", b.artifact_id[:8])
    assert code == 0 and "(verified)" in out
    code, out, _ = cli("artifacts", "verify", "--help")
    assert code == 0 and "Exit code: 0" in out and "1 when problems were found" in out


def test_verify_missing_thumbnail_and_uncatalogued_png(cli, artifact_root):
    a, b = fill(artifact_root)
    (artifact_root / "projects" / "default" / "thumbs" / f"{a.artifact_id}.jpg").unlink()
    shutil.copyfile(png(artifact_root, b), artifact_root / "projects" / "default" / "images" / "stray.png")
    code, out, _ = cli("artifacts", "verify")
    assert code == 1 and "thumbnail missing" in out and "default/stray" in out and "not in catalog" in out


def test_show_full_id_in_two_projects(cli, artifact_root):
    [a] = fill(artifact_root, "default", 1)
    fill(artifact_root, "other", 1)  # the same request, so the same id, in another project
    code, _, err = cli("artifacts", "show", a.artifact_id)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "stored in 2 projects: default, other" in lines[0] and a.artifact_id in lines[0]
    code, out, _ = cli("artifacts", "show", a.artifact_id, "--project", "other")
    assert code == 0 and "project other" in out
    code, out, _ = cli("artifacts", "show", f"other/{a.artifact_id}", "--json")
    assert code == 0 and json.loads(out)["project"] == "other"


# --------------------------------------------------------------------------------------------------
# list: readable at 80 columns and piped; control characters never raw


@pytest.mark.parametrize("columns", ["80", "200"])
def test_list_fits_and_never_splits_ids(cli, artifact_root, monkeypatch, columns):
    records = fill(artifact_root, "default", 2, prompt="a very long prompt " * 8)
    records += fill(artifact_root, "a-rather-long-project-name-for-tables", 1, prompt="nebula " * 20)
    monkeypatch.setenv("COLUMNS", columns)
    code, out, err = cli("artifacts", "list")
    assert code == 0, err
    lines = out.rstrip("\n").splitlines()
    assert all(len(line) <= int(columns) for line in lines), lines
    for record in records:
        [line] = [x for x in lines if record.artifact_id in x]  # one line per artifact, id whole
        assert line.startswith(record.artifact_id)
    assert "…" in out  # the prompt column is cut, not wrapped


def test_control_characters_are_escaped(cli, artifact_root):
    [record] = fill(artifact_root, "default", 1, prompt=EVIL, negative_prompt="neg \x1b[31m", style="s\x07")
    for args in (["artifacts", "list"], ["artifacts", "show", record.artifact_id], ["artifacts", "verify"],
                 ["gallery", "--project", "default"]):
        code, out, err = cli(*args)
        assert code == 0, err
        for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw not in out and raw not in err, (args, raw)
    code, out, _ = cli("artifacts", "show", record.artifact_id)
    assert "\\x1b[2J" in out and "\\x07" in out and "\\x9b31m" in out and "\\u202e" in out


# --------------------------------------------------------------------------------------------------
# A damaged catalog part, a read-only store, a full disk


def test_garbage_catalog_part_is_reported_and_the_rest_served(cli, artifact_root):
    a, _ = fill(artifact_root, "default", 2)
    [other] = fill(artifact_root, "other", 1, prompt="cool waves")
    catalog = artifact_root / "projects" / "default" / "catalog"
    (catalog / "part-garbage.parquet").write_bytes(os.urandom(256))
    code, out, err = cli("artifacts", "list")
    assert code == 0 and other.artifact_id in out and a.artifact_id in out
    assert "warning:" in err and "part-garbage.parquet" in err and "quarantine" in err
    assert (catalog / "quarantine" / "part-garbage.parquet").is_file()
    code, out, _ = cli("artifacts", "show", other.artifact_id[:8])
    assert code == 0
    code, out, _ = cli("artifacts", "verify")
    assert code == 1 and "catalog part damaged" in out  # set aside, still reported until deleted


def _fail_writes_under(monkeypatch, root: Path, code: int) -> None:
    """Every local write, rename, mkdir or delete under `root` fails with `code` (ENOSPC, EROFS):
    a full or read-only disk, which chmod cannot simulate for root."""
    prefix = str(root)

    def guard(name):
        real = getattr(LocalFileSystem, name)

        def wrapper(self, path, *args, **kwargs):
            mode = args[0] if args else kwargs.get("mode", "rb")
            writes = name != "_open" or any(m in str(mode) for m in "wax+")
            if writes and str(self._strip_protocol(path)).startswith(prefix):
                raise OSError(code, os.strerror(code), str(path))
            return real(self, path, *args, **kwargs)

        monkeypatch.setattr(LocalFileSystem, name, wrapper)

    for name in ("_open", "mv", "makedirs", "mkdir", "rm", "rm_file", "touch"):
        guard(name)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["full", "read-only"])
def test_reading_commands_on_a_full_or_read_only_store(cli, artifact_root, tmp_path, monkeypatch, code):
    a, b = fill(artifact_root, "default", 2)
    (artifact_root / "projects" / "default" / "catalog" / "part-garbage.parquet").write_bytes(b"junk")
    before = snapshot(artifact_root)
    _fail_writes_under(monkeypatch, artifact_root, code)
    code_, out, err = cli("artifacts", "list")
    assert code_ == 0 and a.artifact_id in out and "left in place" in err
    code_, out, err = cli("artifacts", "show", a.artifact_id)
    assert code_ == 0 and "(verified)" in out, err
    code_, out, _ = cli("artifacts", "verify")
    assert code_ == 1 and "catalog part damaged" in out and "hash mismatch" not in out
    site = tmp_path / "site"
    code_, out, err = cli("gallery", "--project", "default", "--out", str(site), "--json")
    assert code_ == 0, err
    payload = json.loads(out)
    assert payload["html"] == str(site / "index.html")
    assert set(payload["pages"]) == {"all", "best", "recent", "accepted"}
    assert payload["images_shown"] == 2 and (site / "best.html").is_file()
    assert f"thumbs/{b.artifact_id}.jpg" in (site / "data.js").read_text()
    code_, _, err = cli("gallery", "--project", "default")  # into the store itself: one line, exit 2
    assert code_ == 2 and len(err.strip().splitlines()) == 1 and os.strerror(code) in err
    monkeypatch.undo()
    assert snapshot(artifact_root) == before


def test_gallery_reports_missing_files_and_rewrites_every_page(cli, artifact_root):
    a, b = fill(artifact_root, "default", 2)
    png(artifact_root, a).unlink()
    code, out, err = cli("gallery", "--project", "default", "--filter", "recent")
    assert code == 0, err
    assert f"default/{a.artifact_id}: PNG missing" in err
    gallery = artifact_root / "projects" / "default" / "gallery"
    assert {p.name for p in gallery.glob("*.html")} == {"index.html", "best.html", "recent.html", "accepted.html"}
    assert "technical score" in (gallery / "data.js").read_text()  # no score table: ranked from thumbnails
    code, out, _ = cli("gallery", "--project", "default", "--json")
    assert [p["kind"] for p in json.loads(out)["problems"]] == ["missing"]
