"""`echo_pipeline.textsafe` (terminal-safe text) and `echo_pipeline.atomic` (the one atomic writer)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import fsspec
import pytest

from echo_pipeline.atomic import TMP_MARKER, write_atomic
from echo_pipeline.textsafe import safe_json, safe_text

# --------------------------------------------------------------------------------------------------
# safe_text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J clear", "\\x1b[2J clear"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
        ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),
        ("\u202eevil\u2066x\u2069", "\\u202eevil\\u2066x\\u2069"),
        ("line\u2028sep", "line\\u2028sep"),
        ("rüzgar ışık 👨\u200d👩\u200d👧 ☀", "rüzgar ışık 👨\u200d👩\u200d👧 ☀"),  # letters, emoji kept
        ("plain, text: (1.2)", "plain, text: (1.2)"),
    ],
)
def test_safe_text(raw, shown):
    assert safe_text(raw) == shown


def test_safe_text_keeps_newlines_when_asked_and_converts_non_strings():
    assert safe_text("a\nb\x1b", newlines=True) == "a\nb\\x1b"
    assert safe_text(12) == "12"
    every_control = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))
    assert all(c.isprintable() for c in safe_text(every_control))


def test_safe_json_is_still_the_same_json():
    payload = {"p": "a\x1b\x7f\x9b\u202e\u2028b", "n": 1}
    text = safe_json(json.dumps(payload, ensure_ascii=False))
    assert json.loads(text) == payload
    assert not any(c in text for c in "\x1b\x7f\x9b\u202e\u2028")


# --------------------------------------------------------------------------------------------------
# write_atomic: one implementation, umask permissions


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_write_atomic_local_replaces_and_honours_umask(tmp_path, umask_022):
    target = tmp_path / "sub" / "file.txt"
    write_atomic(target, "one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]
    os.umask(0o077)
    write_atomic(target, "three")
    assert target.stat().st_mode & 0o777 == 0o600


def test_write_atomic_failure_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "file.txt"
    write_atomic(target, "old")
    fs = fsspec.filesystem("file")

    def broken_mv(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fs, "mv", broken_mv)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, "new", fs=fs)
    assert target.read_text() == "old" and not [p for p in tmp_path.iterdir() if TMP_MARKER in p.name]


def test_write_atomic_on_fsspec(memory_root):
    fs, root = fsspec.core.url_to_fs(memory_root)
    write_atomic(f"{root}/a/b.bin", b"x", fs=fs)
    assert fs.cat_file(f"{root}/a/b.bin") == b"x"


def test_project_specs_and_user_styles_get_umask_permissions(config_dir, umask_022):
    """They used to be written with mode 0600 (tempfile.mkstemp)."""
    from echo_pipeline.render.style_manager import StyleLibrary
    from echo_pipeline.workflows.projects import ProjectRegistry

    registry = ProjectRegistry(config_dir / "projects")
    spec = registry.create("Umask Test", "warm fractal")
    spec_file = Path(registry.path(spec.slug))
    assert spec_file.stat().st_mode & 0o777 == 0o644
    library = StyleLibrary(config_dir / "styles")
    library.create("umask style", "{prompt}, warm glow")
    assert library.user_file.stat().st_mode & 0o777 == 0o644
    leftovers = [p for d in (spec_file.parent, library.user_file.parent) for p in d.iterdir() if ".tmp" in p.name]
    assert not leftovers
