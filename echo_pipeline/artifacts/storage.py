"""The artifact store: PNGs, thumbnails, an append-only parquet catalog and project metadata on fsspec.

Layout under the root (any fsspec URL or a local path)::

    projects/<slug>/images/<artifact_id>.png      PNG with `parameters` + `echo` text chunks
    projects/<slug>/thumbs/<artifact_id>.jpg      JPEG, longest side 256
    projects/<slug>/catalog/part-<UTC stamp>-<uuid8>.parquet   one part per append (no locks needed)
    projects/<slug>/project.json                  project metadata
    projects/<slug>/media/<artifact_id>/<file>    a media artifact's files (texture maps, MP4/GIF, GLB/OBJ,
                                                  HTML); its PNG is the albedo, poster, preview or snapshot

Every file is written to `<path>.tmp-<uuid>` and then moved into place (`echo_pipeline.atomic`), so
a crash leaves at most `*.tmp-*` files behind, never a half-written image or catalog part; on S3 it
is one PUT to the final key, which S3 shows only once complete (no temporary keys there).
`reconcile` repairs what a crash between writing an image and appending its catalog row leaves behind.

Catalog parts are small (a batch appends one per 16 images), and a first read costs per part, so
`compact_catalog` merges a project's small parts into one once there are `COMPACT_AT_PARTS` of
them (`ECHO_CATALOG_COMPACT_AT` overrides that; the batch processor calls it after each batch). The
merged part names the parts it replaces in its parquet metadata; readers ignore a replaced part that
is still there, so a crash between writing the merged part and deleting the old ones leaves every
row exactly once, and the next compaction deletes the leftovers.

The store defends itself against damage it did not cause:

* a catalog part that cannot be read as a catalog (garbage bytes, wrong columns) is skipped with a
  warning in `ArtifactStore.warnings` and moved to `catalog/quarantine/` when the store is writable;
  the other parts keep being served (the next batch's `reconcile` re-adopts the part's images from
  their embedded `echo` records);
* `verify` checks every file of a project against its catalog row: the PNG's sha256, that it decodes
  and carries its own lineage record, the thumbnail, and PNGs the catalog does not know;
  `check_files` is the cheap variant (directory listings only) for commands that report as they go;
* `ArtifactStore(root, read_only=True)` never writes (every write raises `StorageError`), and
  `ArtifactStore(root)` opens without the write probe of `ArtifactStore.open`: reading commands use
  it so they work on a read-only or full store.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import split_protocol, url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import known_implementations
from PIL import Image

from echo_pipeline.artifacts.metadata import (
    ECHO_KEY,
    decode_png,
    encode_png,
    read_png_metadata,
    record_from_png_text,
    sha256_hex,
)
from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.atomic import TMP_MARKER, write_atomic
from echo_pipeline.errors import InvalidInputError, NotFoundError, ProjectBusyError, StorageError
from echo_pipeline.naming import check_slug

log = logging.getLogger(__name__)

THUMB_MAX_SIDE = 256
THUMB_QUALITY = 85
MIN_PREFIX = 4
MAX_CANDIDATES = 5
QUARANTINE_DIR = "quarantine"
MEDIA_DIR = "media"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PART = re.compile(r"^part-.+\.parquet$")
STALE_TMP_AGE_S = 600.0  # a temporary file this old is a dead writer's (a write takes well under a second)
COMPACT_AT_PARTS = 32  # small parts that make a project's catalog worth merging
LARGE_PART_ROWS = 20_000  # a part this big is left alone (merging it again would only copy it)
_REPLACES_KEY = b"echo.replaces"  # parquet metadata of a merged part: JSON list of the part names it replaces

CATALOG_SCHEMA = pa.schema(
    [
        ("artifact_id", pa.string()),
        ("project", pa.string()),
        ("request_id", pa.string()),
        ("prompt", pa.string()),
        ("source_prompt", pa.string()),
        ("negative_prompt", pa.string()),
        ("seed", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("steps", pa.int64()),
        ("cfg_scale", pa.float64()),
        ("sampler", pa.string()),
        ("style", pa.string()),
        ("backend", pa.string()),
        ("model", pa.string()),
        ("model_hash", pa.string()),
        ("backend_version", pa.string()),
        ("tiling", pa.bool_()),
        ("parent_id", pa.string()),
        ("strength", pa.float64()),
        ("media_type", pa.string()),
        ("created", pa.timestamp("us", tz="UTC")),
        ("code_version", pa.string()),
        ("run_id", pa.string()),
        ("sha256", pa.string()),
        ("image_path", pa.string()),
        ("record_json", pa.string()),
    ]
)
CATALOG_COLUMNS = tuple(CATALOG_SCHEMA.names)


@dataclass
class ReconcileReport:
    """What `reconcile` found and did in one project."""

    project: str
    recovered: list[str] = field(default_factory=list)  # orphan PNG ids added to the catalog
    unrecoverable: list[str] = field(default_factory=list)  # "path: reason" left alone
    thumbs_regenerated: list[str] = field(default_factory=list)
    tmp_removed: list[str] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)  # catalogued ids without a PNG


ProblemKind = Literal[
    "missing",  # catalogued, but the PNG is not there
    "unreadable",  # the PNG is there but cannot be read (I/O error)
    "undecodable",  # the PNG does not decode (truncated, garbage, bad CRC)
    "hash_mismatch",  # it decodes, but its sha256 is not the catalog's: another file was put there
    "lineage_mismatch",  # its embedded `echo` record is missing or names another artifact
    "thumb_missing",
    "thumb_undecodable",
    "not_in_catalog",  # a PNG under images/ that no catalog row names
    "catalog_part",  # a catalog part that cannot be read (skipped, quarantined when writable)
    "media_missing",  # a file a media artifact's record names (GLB, MP4, a map...) is not there
    "media_mismatch",  # it is there, but its sha256 is not the one the record names
]

PROBLEM_LABELS: dict[str, str] = {
    "missing": "PNG missing",
    "unreadable": "PNG unreadable",
    "undecodable": "PNG undecodable",
    "hash_mismatch": "hash mismatch",
    "lineage_mismatch": "lineage mismatch",
    "thumb_missing": "thumbnail missing",
    "thumb_undecodable": "thumbnail undecodable",
    "not_in_catalog": "not in catalog",
    "catalog_part": "catalog part damaged",
    "media_missing": "media file missing",
    "media_mismatch": "media file mismatch",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a stored file."""

    project: str
    kind: ProblemKind
    path: str
    detail: str
    artifact_id: str | None = None

    @property
    def label(self) -> str:
        return PROBLEM_LABELS[self.kind]

    def line(self) -> str:
        """One line for people: `project/id: label: detail`."""
        what = f"{self.project}/{self.artifact_id}" if self.artifact_id else self.project
        return f"{what}: {self.label}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "artifact_id": self.artifact_id, "kind": self.kind,
                "path": self.path, "detail": self.detail}


@dataclass
class VerifyReport:
    """What `verify` (or the cheaper `check_files`) found; `ok` when nothing is wrong."""

    projects: list[str] = field(default_factory=list)
    images_checked: int = 0
    thumbs_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    thorough: bool = True  # False for `check_files`: listings (and maybe hashes), nothing decoded

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Problems per kind, in `PROBLEM_LABELS` order."""
        out: dict[str, int] = {}
        for kind in PROBLEM_LABELS:
            n = sum(1 for p in self.problems if p.kind == kind)
            if n:
                out[kind] = n
        return out

    def summary(self) -> str:
        """One line: what was checked and how many problems of each kind."""
        scope = f"{len(self.projects)} project{'s' if len(self.projects) != 1 else ''}"
        checked = f"{self.images_checked} image(s) and {self.thumbs_checked} thumbnail(s) in {scope}"
        if self.ok:
            return f"checked {checked}: all fine"
        found = ", ".join(f"{n} {PROBLEM_LABELS[k]}" for k, n in self.counts().items())
        return f"checked {checked}: {len(self.problems)} problem(s): {found}"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "projects": list(self.projects), "images_checked": self.images_checked,
                "thumbnails_checked": self.thumbs_checked, "thorough": self.thorough,
                "counts": self.counts(), "problems": [p.to_dict() for p in self.problems]}


_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-f]+>")


def _one_line(exc: BaseException) -> str:
    """The first line of an error, without the `<_io.BytesIO object at 0x...>` Pillow adds."""
    text = _OBJECT_REPR.sub("", str(exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _one_line(exc)


def compact_at_parts() -> int:
    """How many small parts make a catalog worth merging: `ECHO_CATALOG_COMPACT_AT`, else `COMPACT_AT_PARTS`."""
    raw = os.environ.get("ECHO_CATALOG_COMPACT_AT", "").strip()
    if not raw:
        return COMPACT_AT_PARTS
    if not raw.isdigit() or int(raw) < 2:
        raise InvalidInputError(f"ECHO_CATALOG_COMPACT_AT must be a whole number >= 2, not {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class _Part:
    """A catalog part as read: its rows and the names of the parts it replaces (a merged part)."""

    name: str
    table: pa.Table
    replaces: frozenset[str]


@dataclass
class CompactResult:
    """What `compact_catalog` did: how many parts it merged into `merged_into` (None when it merged
    nothing) and how many replaced parts it deleted (those, and leftovers of an earlier merge)."""

    merged: int = 0
    merged_into: str | None = None
    removed: int = 0


class _DamagedPart(Exception):
    """A catalog part whose bytes are not a catalog (the message says why)."""


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value or TMP_MARKER in value:
        raise InvalidInputError(f"invalid {kind} {value!r}: use letters, digits, '-', '_' or '.'")
    return value


class ArtifactStore:
    """Images, thumbnails, catalog and project metadata under one fsspec root."""

    def __init__(self, root: str, *, fsync: bool = True, read_only: bool = False):
        """A store on `root`, not checked: nothing is created or written until a write is asked for.

        `read_only=True` refuses every write with `StorageError` (the catalog's damaged parts are
        then skipped but left where they are). See `open` for a store whose root is checked.
        """
        if not isinstance(root, (str, os.PathLike)) or not str(root).strip():
            raise StorageError("artifact root is empty")
        root = os.fspath(root).strip()
        if split_protocol(root)[0] is None:
            root = os.path.expanduser(root)
        self.url = root
        self.fs, self.root = _make_fs(root)
        self.root = self.root.rstrip("/") or "/"
        self._local = isinstance(self.fs, LocalFileSystem)
        if self._local:
            self.root = posixpath.normpath(self.root)
        self._fsync = fsync and self._local
        self.read_only = read_only
        self._known_dirs: set[str] = set()
        self._part_cache: dict[tuple, _Part] = {}
        self._bad_parts: dict[str, Problem] = {}  # catalog part path -> why it was skipped

    @classmethod
    def open(cls, root: str, *, read_only: bool = False, **kwargs: Any) -> ArtifactStore:
        """A store whose root is checked: known protocol, dependency installed, writable.

        With `read_only=True` only the protocol and dependency are checked (nothing is written).
        """
        store = cls(root, read_only=read_only, **kwargs)
        if not read_only:
            store.check_writable()
        return store

    @property
    def warnings(self) -> list[str]:
        """One line per damaged catalog part skipped so far (see `catalog`), for the caller to show."""
        return [f"catalog part {p.path} is {p.detail}" for p in self._bad_parts.values()]

    def catalog_problems(self, project: str | None = None) -> list[Problem]:
        """The damaged catalog parts skipped so far (of one project or all)."""
        return [p for p in self._bad_parts.values() if project is None or p.project == project]

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # ----------------------------------------------------------------------------------------------
    # Paths

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def _project_dir(self, project: str) -> str:
        return self._join("projects", check_slug(project))

    def _image_key(self, project: str, artifact_id: str) -> str:
        return posixpath.join(self._project_dir(project), "images", f"{_check_name('artifact id', artifact_id)}.png")

    def _thumb_key(self, project: str, artifact_id: str) -> str:
        return posixpath.join(self._project_dir(project), "thumbs", f"{_check_name('artifact id', artifact_id)}.jpg")

    def _catalog_dir(self, project: str) -> str:
        return posixpath.join(self._project_dir(project), "catalog")

    def _meta_key(self, project: str) -> str:
        return posixpath.join(self._project_dir(project), "project.json")

    def url_for(self, path: str) -> str:
        """A filesystem path of this store as a full URL (an absolute path for local roots)."""
        return path if self._local else self.fs.unstrip_protocol(path)

    def image_path(self, project: str, artifact_id: str) -> str:
        return self.url_for(self._image_key(project, artifact_id))

    def thumb_path(self, project: str, artifact_id: str) -> str:
        return self.url_for(self._thumb_key(project, artifact_id))

    def project_path(self, project: str) -> str:
        return self.url_for(self._project_dir(project))

    # ----------------------------------------------------------------------------------------------
    # Writing

    def _ensure_dir(self, directory: str) -> None:
        if directory in self._known_dirs:
            return
        self.fs.makedirs(directory, exist_ok=True)
        self._known_dirs.add(directory)

    def _check_writable_mode(self) -> None:
        if self.read_only:
            raise StorageError(f"artifact root {self.url!r} is opened read-only; nothing can be written there")

    def _write_atomic(self, path: str, data: bytes) -> None:
        """Write `data` atomically (`echo_pipeline.atomic.write_atomic`); never leaves a partial file."""
        self._check_writable_mode()
        directory = posixpath.dirname(path)
        try:
            self._ensure_dir(directory)
            try:
                write_atomic(path, data, fs=self.fs, fsync=self._fsync, make_dirs=False)
            except FileNotFoundError:  # the folder was removed behind our back: make it again
                self._known_dirs.discard(directory)
                self._ensure_dir(directory)
                write_atomic(path, data, fs=self.fs, fsync=self._fsync, make_dirs=False)
        except StorageError:
            raise
        except OSError as exc:  # full disk, read-only filesystem, permissions: one line that names the file
            raise StorageError(f"cannot write {self.url_for(path)}: {_reason(exc)}") from exc

    def check_writable(self) -> None:
        """Create the root if needed and write, read back and remove a probe file."""
        self._check_writable_mode()
        probe = self._join(f".echo-probe{TMP_MARKER}{uuid.uuid4().hex}")
        try:
            self._ensure_dir(self.root)
            self._write_atomic(probe, b"echo")
            if self.fs.cat_file(probe) != b"echo":
                raise OSError("the probe file read back differently")
            self.fs.rm(probe)
        except StorageError:
            raise
        except Exception as exc:
            self._known_dirs.discard(self.root)
            where = self.url_for(self.root)
            where = "" if where == self.url else f" ({where})"
            raise StorageError(f"artifact root {self.url!r}{where} cannot be created or written: {_reason(exc)}") from exc

    def save(self, record: ArtifactRecord, image: Image.Image, extra_text: dict[str, str] | None = None) -> ArtifactRecord:
        """Write the PNG (with metadata, plus `extra_text` chunks such as ComfyUI's) and its
        thumbnail; return the record with sha256 and size.

        Does not touch the catalog (see `append_catalog`).
        """
        width, height = image.size
        record = record.model_copy(update={"width": width, "height": height, "sha256": ""})
        png_key = self._image_key(record.project, record.artifact_id)
        thumb_key = self._thumb_key(record.project, record.artifact_id)
        data = encode_png(image, record, extra_text=extra_text)
        record = record.model_copy(update={"sha256": sha256_hex(data)})
        self._write_atomic(png_key, data)
        self._write_atomic(thumb_key, make_thumbnail(image))
        return record

    def write_media_files(self, project: str, artifact_id: str, files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
        """Atomically write a media artifact's files (before its PNG: a stored PNG means its files
        are there); returns {name: {"sha256", "bytes"}} for the record's `info["media_files"]`."""
        written: dict[str, dict[str, Any]] = {}
        for name, data in files.items():
            self.write_project_file(project, f"{MEDIA_DIR}/{artifact_id}/{name}", data)
            written[name] = {"sha256": sha256_hex(data), "bytes": len(data)}
        return written

    def has_media_files(self, record: ArtifactRecord) -> bool:
        """Whether every file a media artifact's record names is stored (True for plain images)."""
        names = record.info.get("media_files") or {}
        return all(self.fs.exists(self._project_file_key(record.project, f"{MEDIA_DIR}/{record.artifact_id}/{n}"))
                   for n in names)

    def media_file_path(self, project: str, artifact_id: str, name: str) -> str:
        return self.project_file_path(project, f"{MEDIA_DIR}/{artifact_id}/{name}")

    def read_media_file(self, project: str, artifact_id: str, name: str) -> bytes:
        data = self.read_project_file(project, f"{MEDIA_DIR}/{artifact_id}/{name}")
        if data is None:
            raise NotFoundError(f"{artifact_id} has no media file {name!r}")
        return data

    def write_thumbnail(self, project: str, artifact_id: str, image: Image.Image | None = None) -> str:
        """(Re)write the thumbnail from `image` or from the stored PNG; returns its path."""
        if image is None:
            image = self.load_image(project, artifact_id)
        key = self._thumb_key(project, artifact_id)
        self._write_atomic(key, make_thumbnail(image))
        return self.url_for(key)

    def _row(self, record: ArtifactRecord) -> dict[str, Any]:
        req = record.request
        created = record.created
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        return {
            "artifact_id": record.artifact_id,
            "project": record.project,
            "request_id": req.request_id,
            "prompt": req.prompt,
            "source_prompt": req.source_prompt,
            "negative_prompt": req.negative_prompt,
            "seed": req.seed,
            "width": record.width or req.width,
            "height": record.height or req.height,
            "steps": req.steps,
            "cfg_scale": float(req.cfg_scale),
            "sampler": req.sampler,
            "style": req.style,
            "backend": record.backend.backend or req.backend,
            "model": req.model or record.backend.model,
            "model_hash": record.backend.model_hash,
            "backend_version": req.backend_version or record.backend.version,
            "tiling": req.tiling,
            "parent_id": record.parent_id or req.parent_id,
            "strength": req.strength,
            "media_type": req.media_type,
            "created": created.astimezone(timezone.utc),
            "code_version": record.code_version,
            "run_id": record.run_id,
            "sha256": record.sha256,
            "image_path": self.image_path(record.project, record.artifact_id),
            "record_json": record.model_dump_json(),
        }

    def append_catalog(self, project: str, records: Sequence[ArtifactRecord]) -> str | None:
        """Write one catalog part with a row per record; returns its path (None when no records)."""
        _check_name("project", project)
        records = list(records)
        if not records:
            return None
        for record in records:
            if record.project != project:
                raise InvalidInputError(
                    f"artifact {record.artifact_id} belongs to project {record.project!r}, not {project!r}"
                )
        return self._write_part(project, pa.Table.from_pylist([self._row(r) for r in records], schema=CATALOG_SCHEMA))

    def _write_part(self, project: str, table: pa.Table) -> str:
        """Write `table` as a new catalog part of the project (a name no other part has); its URL."""
        buf = io.BytesIO()
        pq.write_table(table, buf)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        key = posixpath.join(self._catalog_dir(project), f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet")
        self._write_atomic(key, buf.getvalue())
        return self.url_for(key)

    def write_project_meta(self, project: str, meta: dict[str, Any]) -> None:
        if not isinstance(meta, dict):
            raise InvalidInputError(f"project metadata must be a dict, not {type(meta).__name__}")
        data = json.dumps(meta, ensure_ascii=False, indent=2, sort_keys=True, default=str) + "\n"
        self._write_atomic(self._meta_key(project), data.encode("utf-8"))

    def _derived_key(self, directory: str, relpath: str, what: str = "project file") -> str:
        parts = [p for p in str(relpath).split("/") if p]
        if not parts or any(p in (".", "..") or TMP_MARKER in p or not _NAME.match(p) for p in parts):
            raise InvalidInputError(f"invalid {what} path {relpath!r}")
        return posixpath.join(directory, *parts)

    def _project_file_key(self, project: str, relpath: str) -> str:
        return self._derived_key(self._project_dir(project), relpath)

    def write_root_file(self, relpath: str, data: bytes) -> str:
        """Atomically write a derived file that spans projects (the all-projects gallery) under the
        root, beside `projects/`; returns its URL."""
        key = self._derived_key(self.root, relpath, "store file")
        if str(relpath).strip("/").split("/")[0] == "projects":
            raise InvalidInputError(f"invalid store file path {relpath!r}: projects/ holds only project files")
        self._write_atomic(key, data)
        return self.url_for(key)

    def root_path(self) -> str:
        return self.url_for(self.root)

    def write_project_file(self, project: str, relpath: str, data: bytes) -> str:
        """Atomically write a derived file (scores, style memory, gallery) under the project; returns its URL."""
        key = self._project_file_key(project, relpath)
        self._write_atomic(key, data)
        return self.url_for(key)

    def read_project_file(self, project: str, relpath: str) -> bytes | None:
        """A file written by `write_project_file`, or None when there is none."""
        try:
            return self.fs.cat_file(self._project_file_key(project, relpath))
        except FileNotFoundError:
            return None

    def project_file_path(self, project: str, relpath: str) -> str:
        return self.url_for(self._project_file_key(project, relpath))

    def list_project_files(self, project: str, reldir: str) -> list[str]:
        """Names of the files `write_project_file` wrote directly in `reldir` of the project, sorted
        (temporary files of an interrupted write excluded)."""
        entries = self._list(self._project_file_key(project, reldir))
        names = [posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "file"]
        return sorted(n for n in names if TMP_MARKER not in n)

    @contextmanager
    def project_lock(self, project: str) -> Iterator[None]:
        """Exclusive write access to one project on this machine (two batches never interleave).

        Local roots use an OS file lock that dies with its process (a SIGKILLed run never leaves a
        stale lock). Remote roots rely on Dagster's run queue (one run per project tag).
        """
        self._check_writable_mode()
        if not self._local:
            yield
            return
        from filelock import FileLock, Timeout

        directory = self._project_dir(project)
        self._ensure_dir(directory)
        lock = FileLock(posixpath.join(directory, ".write.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ProjectBusyError(
                f"project {project!r} is being written by another run; try again when it has finished"
            ) from None
        try:
            yield
        finally:
            lock.release()

    # ----------------------------------------------------------------------------------------------
    # Reading

    def read_project_meta(self, project: str) -> dict[str, Any]:
        """The project's metadata; {} when it has none yet."""
        key = self._meta_key(project)
        try:
            data = self.fs.cat_file(key)
        except FileNotFoundError:
            return {}
        try:
            meta = json.loads(data.decode("utf-8"))
        except ValueError as exc:
            raise StorageError(f"project metadata {self.url_for(key)} is corrupted: {_one_line(exc)}") from exc
        if not isinstance(meta, dict):
            raise StorageError(f"project metadata {self.url_for(key)} is corrupted: not a JSON object")
        return meta

    def has_image(self, project: str, artifact_id: str) -> bool:
        return self.fs.exists(self._image_key(project, artifact_id))

    def has_thumb(self, project: str, artifact_id: str) -> bool:
        return self.fs.exists(self._thumb_key(project, artifact_id))

    def _list(self, directory: str) -> list[dict[str, Any]]:
        try:
            return self.fs.ls(directory, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _remove_tmp_files(self, files: list[dict[str, Any]], min_age_s: float) -> list[str]:
        """Delete the `*.tmp-*` files among `files` (`_find_files` entries) older than `min_age_s`
        seconds (when the filesystem reports times; 0: all of them); their URLs."""
        removed = []
        now = datetime.now(timezone.utc).timestamp()
        for entry in files:
            name = entry["name"]
            if TMP_MARKER not in posixpath.basename(name):
                continue
            if min_age_s > 0:
                stamp = _entry_time(entry)
                if stamp is not None and now - stamp < min_age_s:
                    continue
            with suppress(FileNotFoundError):
                self.fs.rm(name)
                removed.append(self.url_for(name))
        return removed

    def remove_stale_root_tmp(self, folder: str, min_age_s: float = STALE_TMP_AGE_S) -> list[str]:
        """Delete temporary files older than `min_age_s` under a top-level folder of the root (the
        all-projects gallery's `gallery/`, which no project's `reconcile` covers); their URLs.
        The age keeps another process's write in flight safe; a read-only store is left alone."""
        if self.read_only:
            return []
        return self._remove_tmp_files(self._find_files(self._derived_key(self.root, folder, "store folder")), min_age_s)

    def _find_files(self, directory: str) -> list[dict[str, Any]]:
        """Every file under `directory`, recursively, with its details; [] when it does not exist."""
        try:
            found = self.fs.find(directory, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [dict(info, name=name) for name, info in found.items() if info.get("type") == "file"]

    def projects(self) -> list[str]:
        """Slugs of the projects that have a folder, sorted."""
        out = []
        for entry in self._list(self._join("projects")):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if entry.get("type") == "directory" and _NAME.match(name) and TMP_MARKER not in name:
                out.append(name)
        return sorted(set(out))

    def catalog_parts(self, project: str) -> list[str]:
        """Paths of the project's catalog parts, oldest first."""
        return [self.url_for(e["name"]) for e in self._part_entries(project)]

    def _part_entries(self, project: str) -> list[dict[str, Any]]:
        entries = [
            e
            for e in self._list(self._catalog_dir(project))
            if e.get("type") == "file" and _PART.match(posixpath.basename(e["name"]))
        ]
        return sorted(entries, key=lambda e: posixpath.basename(e["name"]))

    def _read_part(self, entry: dict[str, Any]) -> _Part:
        """One catalog part: its table of `CATALOG_SCHEMA` and the parts it replaces.

        Raises `_DamagedPart` when the bytes are not a catalog part (garbage, wrong columns),
        `FileNotFoundError` when it disappeared, `StorageError` when it cannot be read at all.
        """
        path = entry["name"]
        stamp = entry.get("mtime") or entry.get("created") or entry.get("LastModified") or entry.get("ETag")
        cache_key = (path, entry.get("size"), str(stamp))
        cached = self._part_cache.get(cache_key)
        if cached is not None:
            return cached
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"catalog part {self.url_for(path)} cannot be read: {_reason(exc)}") from exc
        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as exc:  # ArrowInvalid, OSError...
            raise _DamagedPart(_one_line(exc)) from exc
        missing = [c for c in CATALOG_COLUMNS if c not in table.column_names]
        if missing:
            raise _DamagedPart(f"missing columns {', '.join(missing)}")
        try:
            replaces = frozenset(json.loads((table.schema.metadata or {}).get(_REPLACES_KEY, b"[]")))
            table = table.select(list(CATALOG_COLUMNS)).cast(CATALOG_SCHEMA)
        except Exception as exc:
            raise _DamagedPart(_one_line(exc)) from exc
        part = _Part(posixpath.basename(path), table, replaces)
        self._part_cache[cache_key] = part
        return part

    def _skip_damaged_part(self, project: str, path: str, reason: str) -> None:
        """Record a damaged part and move it to `catalog/quarantine/` (when the store is writable)."""
        shown = self.url_for(path)
        where = "it was left in place (read-only store)"
        if not self.read_only:
            target = posixpath.join(self._catalog_dir(project), QUARANTINE_DIR, posixpath.basename(path))
            try:
                self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
                if self.fs.exists(target):
                    target = f"{target}.{uuid.uuid4().hex[:8]}"
                self.fs.mv(path, target)
                where = f"moved to {self.url_for(target)}"
            except FileNotFoundError:
                where = "it has gone meanwhile (another reader moved it?)"
            except Exception as exc:  # read-only filesystem, permissions, full disk, remote errors...
                where = f"it could not be moved to quarantine ({_reason(exc)}) and was left in place"
        reason = reason.split(". ")[0].rstrip(".")
        detail = f"corrupted ({reason}); skipped, {where}; the other parts are still served"
        if path not in self._bad_parts:
            log.warning("catalog part %s is %s", shown, detail)
        self._bad_parts[path] = Problem(project=project, kind="catalog_part", path=shown, detail=detail)

    def _project_parts(self, project: str) -> tuple[list[tuple[dict[str, Any], _Part]], list[dict[str, Any]]]:
        """The project's readable parts, oldest first, as (listing entry, part), and the entries of
        parts a merged part replaces (leftovers of an interrupted compaction: not served)."""
        read: list[tuple[dict[str, Any], _Part]] = []
        for entry in self._part_entries(project):
            try:
                read.append((entry, self._read_part(entry)))
            except FileNotFoundError:
                continue  # moved or removed since the listing (e.g. quarantined by another reader)
            except _DamagedPart as exc:
                self._skip_damaged_part(project, entry["name"], str(exc))
        replaced = set().union(*(part.replaces for _, part in read))
        return ([(e, p) for e, p in read if p.name not in replaced],
                [e for e, p in read if p.name in replaced])

    def _project_tables(self, project: str) -> list[pa.Table]:
        return [part.table for _, part in self._project_parts(project)[0]]

    def compact_catalog(self, project: str, at_parts: int | None = None) -> CompactResult:
        """Merge the project's small catalog parts into one when there are `at_parts` (default
        `compact_at_parts()`) or more of them (fewer than `LARGE_PART_ROWS` rows each), and
        delete parts an earlier merge replaced. Rows are kept as they are (the catalog's view of
        them does not change). Safe beside appenders: only parts it read are replaced."""
        self._check_writable_mode()
        result = CompactResult()
        live, leftovers = self._project_parts(project)
        small = [(e, p) for e, p in live if p.table.num_rows < LARGE_PART_ROWS]
        if len(small) >= max(2, compact_at_parts() if at_parts is None else at_parts):
            names = sorted(p.name for _, p in small)
            table = pa.concat_tables([p.table for _, p in small])
            table = table.replace_schema_metadata({_REPLACES_KEY: json.dumps(names).encode("utf-8")})
            result.merged_into = self._write_part(project, table)  # from here on, readers skip the small parts
            result.merged = len(small)
            leftovers += [e for e, _ in small]
        for entry in leftovers:
            with suppress(FileNotFoundError):  # another compaction removed it first
                self.fs.rm(entry["name"])
            result.removed += 1
        if leftovers:
            gone = {e["name"] for e in leftovers}
            self._part_cache = {k: v for k, v in self._part_cache.items() if k[0] not in gone}
        if result.merged:
            log.info("catalog of %s: merged %d parts into one", project, result.merged)
        return result

    def catalog(self, project: str | None = None) -> pd.DataFrame:
        """All catalog rows (of one project or all), one per (project, artifact_id), sorted by created.

        A re-appended artifact keeps its earliest row. A damaged part is skipped, reported in
        `warnings` and quarantined (see the module docstring); a part that cannot be read at all
        (I/O error) raises `StorageError`.
        """
        projects = [_check_name("project", project)] if project is not None else self.projects()
        tables = [t for p in projects for t in self._project_tables(p)]
        if not tables:
            return empty_catalog()
        frame = pa.concat_tables(tables).to_pandas()
        frame = frame.sort_values("created", kind="stable")
        frame = frame.drop_duplicates(subset=["project", "artifact_id"], keep="first")
        return frame.reset_index(drop=True)

    def record(self, project: str, artifact_id: str) -> ArtifactRecord:
        _check_name("artifact id", artifact_id)
        frame = self.catalog(project)
        rows = frame[frame["artifact_id"] == artifact_id]
        if rows.empty:
            raise NotFoundError(f"artifact {artifact_id!r} not found in project {project!r}")
        return self._record_from_row(rows.iloc[0])

    def _record_from_row(self, row: pd.Series) -> ArtifactRecord:
        try:
            return ArtifactRecord.model_validate_json(row["record_json"])
        except Exception as exc:
            raise StorageError(
                f"catalog record {row['project']}/{row['artifact_id']} is corrupted: {_one_line(exc)}"
            ) from exc

    def find(self, id_or_prefix: str, project: str | None = None) -> ArtifactRecord:
        """The artifact with this id or unique id prefix (>= 4 characters); `project/id` also works."""
        query = str(id_or_prefix or "").strip()
        if "/" in query and project is None:
            project, query = query.rsplit("/", 1)
        if len(query) < MIN_PREFIX:
            raise InvalidInputError(
                f"artifact id {query!r} is too short: give at least {MIN_PREFIX} characters of the id"
            )
        frame = self.catalog(project)
        if frame.empty:
            where = f" in project {project!r}" if project else ""
            raise NotFoundError(f"no artifact matches {query!r}{where}")
        ids = frame["artifact_id"]
        matches = frame[ids == query]
        if matches.empty:
            matches = frame[ids.str.startswith(query)]
        if matches.empty:
            where = f" in project {project!r}" if project else ""
            raise NotFoundError(f"no artifact matches {query!r}{where}")
        if len(matches) > 1 and (matches["artifact_id"] == query).all():
            projects = sorted(set(matches["project"]))
            more = f" and {len(projects) - MAX_CANDIDATES} more" if len(projects) > MAX_CANDIDATES else ""
            raise InvalidInputError(
                f"artifact {query} is stored in {len(projects)} projects: {', '.join(projects[:MAX_CANDIDATES])}"
                f"{more}; name the project (--project {projects[0]} or {projects[0]}/{query})"
            )
        if len(matches) > 1:
            names = [f"{p}/{a}" for p, a in zip(matches["project"], matches["artifact_id"], strict=True)]
            more = f" and {len(names) - MAX_CANDIDATES} more" if len(names) > MAX_CANDIDATES else ""
            raise InvalidInputError(
                f"artifact id {query!r} is ambiguous ({len(names)} matches): "
                f"{', '.join(names[:MAX_CANDIDATES])}{more}; give more characters or the project"
            )
        return self._record_from_row(matches.iloc[0])

    def _resolve(self, record_or_project: ArtifactRecord | str, artifact_id: str | None) -> tuple[str, str]:
        if isinstance(record_or_project, ArtifactRecord):
            return record_or_project.project, record_or_project.artifact_id
        if artifact_id is None:
            raise InvalidInputError("load_image needs an ArtifactRecord or a project and an artifact id")
        return record_or_project, artifact_id

    def read_bytes(self, project: str, artifact_id: str) -> bytes:
        """The stored PNG bytes; `StorageError` when the file is missing or unreadable."""
        key = self._image_key(project, artifact_id)
        try:
            return self.fs.cat_file(key)
        except FileNotFoundError:
            raise StorageError(f"image {self.url_for(key)} is missing") from None
        except OSError as exc:
            raise StorageError(f"image {self.url_for(key)} cannot be read: {_reason(exc)}") from exc

    def load_image(self, record_or_project: ArtifactRecord | str, artifact_id: str | None = None) -> Image.Image:
        """The stored image, fully loaded, as RGB. `StorageError` when missing or corrupted."""
        project, artifact_id = self._resolve(record_or_project, artifact_id)
        data = self.read_bytes(project, artifact_id)
        image = decode_png(data, self.image_path(project, artifact_id))
        if image.mode == "RGB":
            return image
        rgb = image.convert("RGB")
        image.close()
        return rgb

    def load_thumbnail(self, project: str, artifact_id: str) -> Image.Image:
        """The stored thumbnail as RGB, made from the PNG when it is missing or unreadable.

        A made thumbnail is also stored, when the store can be written (best effort: a read-only or
        full store still returns it).
        """
        key = self._thumb_key(project, artifact_id)
        try:
            with Image.open(io.BytesIO(self.fs.cat_file(key))) as thumb:
                return thumb.convert("RGB")
        except (FileNotFoundError, OSError, SyntaxError):
            image = self.load_image(project, artifact_id)
            if not self.read_only:
                try:
                    self.write_thumbnail(project, artifact_id, image)
                except OSError as exc:  # StorageError is an OSError too
                    log.warning("could not store the thumbnail of %s/%s: %s", project, artifact_id, _reason(exc))
            image.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE), Image.Resampling.LANCZOS)
            return image

    def read_png(self, project: str, artifact_id: str) -> tuple[str | None, ArtifactRecord | None]:
        """(A1111 `parameters` text, embedded echo record) of a stored PNG."""
        return read_png_metadata(self.read_bytes(project, artifact_id), self.image_path(project, artifact_id))

    # ----------------------------------------------------------------------------------------------
    # Verification

    def read_verified_png(self, record: ArtifactRecord) -> tuple[str | None, ArtifactRecord | None]:
        """Like `read_png`, after checking the file is the one catalogued for `record`.

        Raises `StorageError` (one line) when the PNG is missing, does not decode, has another sha256
        than the catalog row, or embeds another artifact's lineage record.
        """
        data = self.read_bytes(record.project, record.artifact_id)
        problem, text = self._check_png(record.project, record.artifact_id, record.sha256, data, decode=True)
        if problem is not None:
            raise StorageError(f"{problem.path}: {problem.label}: {problem.detail}")
        assert text is not None
        return text.get("parameters"), record_from_png_text(text, self.image_path(record.project, record.artifact_id))

    def _check_png(
        self, project: str, artifact_id: str, expected_sha: str, data: bytes, *, decode: bool
    ) -> tuple[Problem | None, dict[str, str] | None]:
        """(problem or None, PNG text chunks when decoded) for the bytes stored under `artifact_id`.

        With a catalogued sha256 that matches, the bytes are the ones written, so `decode=False`
        skips decoding them; any other case decodes to say what the file holds instead.
        """
        path = self.image_path(project, artifact_id)
        digest = sha256_hex(data)
        if expected_sha and digest == expected_sha and not decode:
            return None, None
        try:
            image = decode_png(data, path)
        except StorageError as exc:
            return Problem(project, "undecodable", path, _strip_source(str(exc), path), artifact_id), None
        text = {str(k): str(v) for k, v in (getattr(image, "text", None) or {}).items()}
        image.close()
        embedded = record_from_png_text(text, path) if ECHO_KEY in text else None
        other = ""
        if embedded is not None and (embedded.artifact_id, embedded.project) != (artifact_id, project):
            other = f"; the file holds artifact {embedded.project}/{embedded.artifact_id}"
        if expected_sha and digest != expected_sha:
            detail = (f"sha256 {digest[:12]}… is not the catalogued {expected_sha[:12]}…{other}: "
                      f"the file was replaced or modified")
            return Problem(project, "hash_mismatch", path, detail, artifact_id), text
        if embedded is None:
            detail = "it has no readable 'echo' lineage record, so it cannot be told apart from another image"
            return Problem(project, "lineage_mismatch", path, detail, artifact_id), text
        if other:
            return Problem(project, "lineage_mismatch", path, f"its 'echo' record is for another artifact{other}",
                           artifact_id), text
        return None, text

    def _listing(self, directory: str, suffix: str) -> dict[str, dict[str, Any]]:
        """{artifact id: listing entry} of the `*<suffix>` files of a folder (temporary files left out)."""
        out = {}
        for entry in self._list(directory):
            name = posixpath.basename(entry["name"])
            if entry.get("type") != "file" or not name.endswith(suffix) or TMP_MARKER in name:
                continue
            artifact_id = name[: -len(suffix)]
            if _NAME.match(artifact_id):
                out[artifact_id] = entry
        return out

    def _projects_for(self, project: str | None) -> list[str]:
        return [_check_name("project", project)] if project is not None else self.projects()

    def check_files(self, project: str, *, hashes: bool = False) -> VerifyReport:
        """The cheap check, for commands that report as they go (batch, gallery): from directory
        listings only, catalogued PNGs and thumbnails that are missing or empty, PNGs the catalog
        does not know, damaged catalog parts. `hashes=True` also reads every PNG and compares its
        sha256 with the catalog (no decoding unless it differs). `verify` checks everything.
        """
        return self._verify([_check_name("project", project)], read_pngs=hashes, decode_thumbs=False)

    def verify(self, project: str | None = None) -> VerifyReport:
        """Check every file of a project (or of all projects) against the catalog.

        Per catalogued artifact: the PNG exists and reads, its sha256 is the catalogued one (when
        that differs, or no hash was catalogued, the file is decoded to say what it is), it embeds
        its own `echo` lineage record, and its thumbnail exists and decodes. Per project: PNGs under
        images/ without a catalog row, and damaged catalog parts. Reads only; never writes (a damaged
        catalog part is quarantined as `catalog` does, unless the store is read-only).
        """
        return self._verify(self._projects_for(project), read_pngs=True, decode_thumbs=True)

    def _verify(self, projects: list[str], *, read_pngs: bool, decode_thumbs: bool) -> VerifyReport:
        report = VerifyReport(projects=list(projects), thorough=read_pngs and decode_thumbs)
        for project in projects:
            frame = self.catalog(project)
            report.problems.extend(self.catalog_problems(project))
            reported = {p.path for p in report.problems} | {p.detail for p in report.problems}
            quarantined = [] if not read_pngs else self._list(posixpath.join(self._catalog_dir(project), QUARANTINE_DIR))
            for entry in quarantined:  # parts set aside by earlier runs (the cheap check leaves them to verify)
                path = self.url_for(entry["name"])
                if entry.get("type") == "file" and not any(path in r for r in reported):
                    detail = ("a damaged catalog part set aside earlier; its rows are not served (reconcile "
                              "re-adopts their images from the PNGs); delete it once nothing is missing")
                    report.problems.append(Problem(project, "catalog_part", path, detail))
            project_dir = self._project_dir(project)
            images = self._listing(posixpath.join(project_dir, "images"), ".png")
            thumbs = self._listing(posixpath.join(project_dir, "thumbs"), ".jpg")
            catalogued = {str(a): str(h or "") for a, h in zip(frame["artifact_id"], frame["sha256"], strict=True)}
            for artifact_id, expected_sha in catalogued.items():
                report.images_checked += 1
                report.problems.extend(
                    self._verify_one(project, artifact_id, expected_sha, images, thumbs, read_pngs, decode_thumbs)
                )
                if artifact_id in thumbs:
                    report.thumbs_checked += 1
            if read_pngs and "media_type" in frame:
                media = frame[frame["media_type"].fillna("image") != "image"]
                for artifact_id, record_json in zip(media["artifact_id"], media["record_json"], strict=True):
                    report.problems.extend(self._verify_media(project, str(artifact_id), str(record_json)))
            for artifact_id in sorted(set(images) - set(catalogued)):
                path = self.image_path(project, artifact_id)
                detail = ("a PNG no catalog row names (a run that died before cataloguing it, or a copied "
                          "file); the next batch adopts it when it carries its own 'echo' record")
                report.problems.append(Problem(project, "not_in_catalog", path, detail, artifact_id))
        return report

    def _verify_media(self, project: str, artifact_id: str, record_json: str) -> list[Problem]:
        """A media artifact's files against the sha256 its record names."""
        try:
            files = (json.loads(record_json).get("info") or {}).get("media_files") or {}
        except ValueError:
            return []  # an unreadable record is the PNG check's finding
        problems = []
        for name, facts in sorted(files.items()):
            key = self._project_file_key(project, f"{MEDIA_DIR}/{artifact_id}/{name}")
            try:
                data = self.fs.cat_file(key)
            except FileNotFoundError:
                problems.append(Problem(project, "media_missing", self.url_for(key),
                                        f"{name} is not there (render the artifact again to remake it)", artifact_id))
                continue
            except OSError as exc:
                problems.append(Problem(project, "media_missing", self.url_for(key), _reason(exc), artifact_id))
                continue
            if sha256_hex(data) != facts.get("sha256"):
                problems.append(Problem(project, "media_mismatch", self.url_for(key),
                                        f"{name} is not the file its record names (sha256 differs)", artifact_id))
        return problems

    def _verify_one(
        self, project: str, artifact_id: str, expected_sha: str, images: dict[str, dict[str, Any]],
        thumbs: dict[str, dict[str, Any]], read_png: bool, decode_thumb: bool,
    ) -> list[Problem]:
        problems: list[Problem] = []
        path = self.image_path(project, artifact_id)
        thumb_path = self.thumb_path(project, artifact_id)
        entry = images.get(artifact_id)
        if entry is None:
            problems.append(Problem(project, "missing", path, "the catalogued PNG is not there", artifact_id))
        elif entry.get("size") == 0:
            problems.append(Problem(project, "undecodable", path, "the file is empty", artifact_id))
        elif read_png:
            try:
                data = self.fs.cat_file(self._image_key(project, artifact_id))
            except FileNotFoundError:
                problems.append(Problem(project, "missing", path, "the PNG disappeared while checking", artifact_id))
            except OSError as exc:
                problems.append(Problem(project, "unreadable", path, _reason(exc), artifact_id))
            else:
                problem, _ = self._check_png(project, artifact_id, expected_sha, data, decode=False)
                if problem is not None:
                    problems.append(problem)
        thumb = thumbs.get(artifact_id)
        if thumb is None:
            problems.append(Problem(project, "thumb_missing", thumb_path,
                                    "no thumbnail (the next batch's reconcile makes it again)", artifact_id))
        elif thumb.get("size") == 0:
            problems.append(Problem(project, "thumb_undecodable", thumb_path, "the file is empty", artifact_id))
        elif decode_thumb:
            reason = self._thumb_problem(project, artifact_id)
            if reason:
                problems.append(Problem(project, "thumb_undecodable", thumb_path, reason, artifact_id))
        return problems

    def _thumb_problem(self, project: str, artifact_id: str) -> str | None:
        """Why the stored thumbnail does not decode, or None when it does."""
        try:
            data = self.fs.cat_file(self._thumb_key(project, artifact_id))
            with Image.open(io.BytesIO(data)) as thumb:
                thumb.load()
        except FileNotFoundError:
            return "the thumbnail disappeared while checking"
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError...
            return _one_line(exc)
        return None

    # ----------------------------------------------------------------------------------------------
    # Crash recovery

    def reconcile(self, project: str, min_tmp_age_s: float = 0.0) -> int:
        """Repair a project after a crash; returns how many orphan PNGs were added to the catalog.

        See `reconcile_report` for everything it does.
        """
        return len(self.reconcile_report(project, min_tmp_age_s=min_tmp_age_s).recovered)

    def reconcile_report(self, project: str, min_tmp_age_s: float = 0.0) -> ReconcileReport:
        """Crash recovery for one project.

        * PNGs under images/ missing from the catalog are added from their `echo` chunk (sha256
          recomputed); corrupted ones, or ones without a usable record, are left alone and reported.
        * Leftover `*.tmp-*` files anywhere under the project are deleted (only those older than
          `min_tmp_age_s` seconds, when the filesystem reports times; 0 deletes all: do not run it
          while writers are active. The batch processor runs it under `project_lock`, and the
          run queue runs one run per project, so a project's step writes never overlap it).
        * Missing thumbnails are regenerated.
        """
        self._check_writable_mode()
        report = ReconcileReport(project=project)
        project_dir = self._project_dir(project)
        images_dir = posixpath.join(project_dir, "images")
        thumbs_dir = posixpath.join(project_dir, "thumbs")

        # One listing of the whole project serves every step below.
        files = self._find_files(project_dir)

        def stems(directory: str, suffix: str) -> set[str]:
            return {posixpath.basename(e["name"])[: -len(suffix)] for e in files
                    if posixpath.dirname(e["name"]) == directory and e["name"].endswith(suffix)}

        # 1. Temporary files of interrupted writes, anywhere in the project: a kill can land in any
        # step's write (pipeline/plan.json, resonance/, gallery/, media/), not only in rendering.
        report.tmp_removed = self._remove_tmp_files(files, min_tmp_age_s)

        # 2. Orphan images.
        frame = self.catalog(project)
        catalogued = set(frame["artifact_id"])
        image_ids = sorted(i for i in stems(images_dir, ".png") if _NAME.match(i) and TMP_MARKER not in i)
        recovered: list[ArtifactRecord] = []
        broken: set[str] = set()
        for artifact_id in image_ids:
            if artifact_id in catalogued:
                continue
            path = self.image_path(project, artifact_id)
            try:
                data = self.read_bytes(project, artifact_id)
                image = decode_png(data, path)
            except StorageError as exc:
                broken.add(artifact_id)
                report.unrecoverable.append(f"{path}: {exc}")
                log.warning("reconcile: leaving %s", exc)
                continue
            record = record_from_png_text(getattr(image, "text", {}) or {}, path)
            problem = None
            if record is None:
                problem = "it has no readable 'echo' record"
            elif record.artifact_id != artifact_id or record.project != project:
                problem = f"its 'echo' record is for {record.project}/{record.artifact_id}"
            if problem:
                image.close()
                report.unrecoverable.append(f"{path}: {problem}")
                log.warning("reconcile: cannot recover %s: %s", path, problem)
                continue
            assert record is not None  # `problem` is set otherwise
            recovered.append(
                record.model_copy(update={"sha256": sha256_hex(data), "width": image.width, "height": image.height})
            )
            if not self.has_thumb(project, artifact_id):
                self._write_atomic(self._thumb_key(project, artifact_id), make_thumbnail(image))
                report.thumbs_regenerated.append(artifact_id)
            image.close()
        if recovered:
            self.append_catalog(project, recovered)
            report.recovered = [r.artifact_id for r in recovered]
            log.info("reconcile: added %d orphan image(s) of %s to the catalog", len(recovered), project)

        # 3. Missing thumbnails of the other images.
        thumbs = stems(thumbs_dir, ".jpg")
        for artifact_id in image_ids:
            if artifact_id in thumbs or artifact_id in broken or artifact_id in report.thumbs_regenerated:
                continue
            if artifact_id not in catalogued and artifact_id not in report.recovered:
                continue  # unrecoverable orphan: leave it alone
            try:
                self.write_thumbnail(project, artifact_id)
                report.thumbs_regenerated.append(artifact_id)
            except StorageError as exc:
                report.unrecoverable.append(f"{self.image_path(project, artifact_id)}: {exc}")
                log.warning("reconcile: cannot make a thumbnail: %s", exc)

        # 4. Catalogued artifacts whose PNG is gone (reported only).
        present = set(image_ids)
        report.missing_images = sorted(i for i in catalogued if i not in present)
        for artifact_id in report.missing_images:
            log.warning("reconcile: catalogued image %s is missing", self.image_path(project, artifact_id))
        return report


# --------------------------------------------------------------------------------------------------
# Helpers


def _make_fs(root: str):
    """(filesystem, path) of `root`; a remote filesystem without its directory-listing cache.

    s3fs (like gcsfs and adlfs) keeps every listing it made for the life of the filesystem instance,
    and `exists`/`info` answer from it: a long-lived process (the API server, a Dagster daemon)
    would never see the catalog parts, images or scores another process adds (measured on a real S3
    endpoint: the API kept listing 4 artifacts after a batch in another process stored 8). Listing
    again costs one request per listing, which the store does a few times per command.
    """
    protocol, _ = split_protocol(root)
    try:
        fs, path = url_to_fs(root)
        in_process = isinstance(fs, (LocalFileSystem, MemoryFileSystem))  # these never read the cache
        if not in_process and getattr(getattr(fs, "dircache", None), "use_listings_cache", False):
            fs, path = url_to_fs(root, use_listings_cache=False)
        return fs, path
    except ImportError as exc:
        name = (protocol or "").split("::")[0]
        hint = known_implementations.get(name, {}).get("err") or _one_line(exc)
        raise StorageError(f"artifact root {root!r} needs an optional package: {hint}") from exc
    except ValueError as exc:
        if "protocol not known" in str(exc).lower() or (
            protocol and any(p not in fsspec.available_protocols() for p in protocol.split("::"))
        ):
            unknown = next((p for p in (protocol or "").split("::") if p not in fsspec.available_protocols()), protocol)
            raise StorageError(
                f"unknown artifact root protocol {unknown!r} in {root!r}: use a local path or an fsspec URL "
                f"such as memory://, file://, s3://, gs://, az://"
            ) from exc
        raise StorageError(f"artifact root {root!r} cannot be used: {_one_line(exc)}") from exc
    except Exception as exc:
        raise StorageError(f"artifact root {root!r} cannot be used: {_one_line(exc)}") from exc


# Errors that mean the store's server could not be reached or dropped the connection, by class name
# (so nothing here imports botocore or aiohttp): botocore's HTTPClientError family (what s3fs raises
# once its retries are spent: EndpointConnectionError, ConnectionClosedError, ReadTimeoutError...)
# and aiohttp's ClientConnectionError family. Dagster's run failures carry only the class name.
UNREACHABLE_ERRORS = frozenset({
    "HTTPClientError", "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
    "ConnectTimeoutError", "ProxyConnectionError", "ClientConnectionError", "ClientConnectorError",
    "ClientOSError", "ServerDisconnectedError", "ServerTimeoutError",
})


def unreachable_message(detail: str) -> str:
    """The one line for an artifact store that cannot be reached (`detail`: the client's words)."""
    return f"the artifact store cannot be reached ({detail.strip().splitlines()[0] if detail.strip() else 'no answer'})"


def store_unreachable(exc: BaseException) -> StorageError | None:
    """A one-line `StorageError` when `exc` (or what caused it) says the store's server could not
    be reached (an S3 endpoint down, a connection cut mid-request); None for any other error."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if any(cls.__name__ in UNREACHABLE_ERRORS for cls in type(seen).__mro__):
            return StorageError(unreachable_message(_one_line(seen)))
        seen = seen.__cause__ or seen.__context__
    return None


def _strip_source(message: str, source: str) -> str:
    """`decode_png`'s message without the leading path (the caller shows the path itself)."""
    return message[len(source):].lstrip(" :") if message.startswith(source) else message


def _entry_time(entry: dict[str, Any]) -> float | None:
    for key in ("mtime", "created", "LastModified", "last_modified", "updated"):
        value = entry.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return None


def make_thumbnail(image: Image.Image) -> bytes:
    """JPEG bytes, longest side at most 256 px."""
    thumb = image.copy()
    if thumb.mode != "RGB":
        if "A" in thumb.getbands() or thumb.mode == "P":
            rgba = thumb.convert("RGBA")
            thumb = Image.new("RGB", rgba.size, (255, 255, 255))
            thumb.paste(rgba, mask=rgba.getchannel("A"))
        else:
            thumb = thumb.convert("RGB")
    thumb.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=THUMB_QUALITY)
    return buf.getvalue()


def empty_catalog() -> pd.DataFrame:
    """A catalog DataFrame with no rows and the usual columns and dtypes."""
    return CATALOG_SCHEMA.empty_table().to_pandas()
