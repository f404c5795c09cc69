"""Atomic file writes: the one implementation every writer uses (artifact store, project specs, styles).

`write_atomic` writes the data to `<path>.tmp-<random>` in the same folder, flushes it to disk
(local files), then renames it onto `path`: readers see the old file or the new one, never half of
one, and a crash leaves at most a `*.tmp-*` file behind (the artifact store's `reconcile` removes
those). It works on any fsspec filesystem; local paths need no filesystem argument.

New local files get the usual permissions, `0666` minus the process umask (`0644` under umask
022), like any file a program creates with `open()`; `tempfile.mkstemp` would make them `0600`.
"""

from __future__ import annotations

import logging
import os
import posixpath
import uuid
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)

TMP_MARKER = ".tmp-"

__all__ = ["TMP_MARKER", "tmp_name", "write_atomic"]


def tmp_name(path: str) -> str:
    """The temporary name `write_atomic` uses for `path` (unique per call)."""
    return f"{path}{TMP_MARKER}{uuid.uuid4().hex}"


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    fs: AbstractFileSystem | None = None,
    fsync: bool = True,
    make_dirs: bool = True,
) -> None:
    """Replace `path` with `data` (str is written as UTF-8) atomically; see the module docstring.

    `fs`: the fsspec filesystem `path` belongs to (default: the local one). `fsync`: flush the file
    to stable storage before the rename (local filesystems only). `make_dirs`: create the parent
    folder first. On any error the temporary file is removed and the error is raised; `path` is
    left as it was.
    """
    filesystem: Any = fs if fs is not None else LocalFileSystem()
    target = os.fspath(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    local = isinstance(filesystem, LocalFileSystem)
    if make_dirs:
        parent = os.path.dirname(target) if local else posixpath.dirname(target)
        if parent:
            filesystem.makedirs(parent, exist_ok=True)
    tmp = tmp_name(target)
    try:
        # fsspec's local files are opened with open(): mode 0666 & ~umask, like any new file.
        with filesystem.open(tmp, "wb") as handle:
            handle.write(payload)
            if fsync and local:
                handle.flush()
                os.fsync(handle.fileno())
        filesystem.mv(tmp, target)
    except BaseException:
        try:
            if filesystem.exists(tmp):
                filesystem.rm(tmp)
        except Exception as cleanup:  # pragma: no cover - best effort; reconcile removes it later
            log.warning("could not remove temporary file %s: %s", tmp, cleanup)
        raise
