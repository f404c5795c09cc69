"""ArtifactStore on fsspec: run on an in-memory filesystem and on a local temp directory."""

from __future__ import annotations

import io
import os
import uuid
from datetime import datetime, timedelta, timezone

import fsspec
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from echo_pipeline.artifacts import ArtifactRecord, ArtifactStore, format_infotext
from echo_pipeline.artifacts.storage import CATALOG_COLUMNS
from echo_pipeline.errors import InvalidInputError, NotFoundError, StorageError
from echo_pipeline.render.backends.base import BackendDescription
from echo_pipeline.render.requests import RenderRequest

DESC = BackendDescription(backend="procedural", model="echo-procedural", version="1")


def make_record(prompt: str = "warm fractal", seed: int = 1, project: str = "p", **fields) -> ArtifactRecord:
    req = RenderRequest(prompt=prompt, seed=seed, width=64, height=64, project=project, **fields)
    return ArtifactRecord(artifact_id=req.request_id, project=project, request=req, backend=DESC)


def gradient(width: int = 64, height: int = 64, shift: int = 0) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint16)
    y = np.linspace(0, 255, height, dtype=np.uint16)
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[..., 0] = ((x[None, :] + shift) % 256).astype(np.uint8)
    arr[..., 1] = y[:, None].astype(np.uint8)
    arr[..., 2] = 90
    return Image.fromarray(arr, "RGB")


@pytest.fixture(params=["memory", "local"])
def store(request, tmp_path):
    if request.param == "memory":
        root = f"memory://echo-test-{uuid.uuid4().hex}"
        yield ArtifactStore.open(root)
        fs, path = fsspec.core.url_to_fs(root)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    else:
        yield ArtifactStore.open(str(tmp_path / "artifacts"))


def all_files(store: ArtifactStore) -> dict[str, bytes]:
    return {path: store.fs.cat_file(path) for path in store.fs.find(store.root)}


def saved(store: ArtifactStore, n: int = 1, project: str = "p") -> list[ArtifactRecord]:
    records = [store.save(make_record(seed=i + 1, project=project), gradient(shift=i)) for i in range(n)]
    store.append_catalog(project, records)
    return records


# --------------------------------------------------------------------------------------------------


def test_save_has_image_and_paths(store):
    record = make_record()
    assert not store.has_image("p", record.artifact_id)
    out = store.save(record, gradient(64, 48))
    assert store.has_image("p", record.artifact_id)
    assert (out.width, out.height) == (64, 48)
    assert len(out.sha256) == 64
    data = store.fs.cat_file(store._image_key("p", record.artifact_id))
    assert out.sha256 == __import__("hashlib").sha256(data).hexdigest()

    path = store.image_path("p", record.artifact_id)
    assert path.endswith(f"/projects/p/images/{record.artifact_id}.png")
    assert store.thumb_path("p", record.artifact_id).endswith(f"/projects/p/thumbs/{record.artifact_id}.jpg")
    if store.url.startswith("memory://"):
        assert path.startswith("memory://")
    else:
        assert os.path.isabs(path) and os.path.exists(path)
    with fsspec.open(path, "rb") as fh:
        assert fh.read() == data

    # Embedded metadata and thumbnail.
    params, embedded = store.read_png("p", record.artifact_id)
    assert params == format_infotext(out)
    assert embedded == out.model_copy(update={"sha256": ""})
    with fsspec.open(store.thumb_path("p", record.artifact_id), "rb") as fh:
        thumb = Image.open(io.BytesIO(fh.read()))
        assert thumb.format == "JPEG" and max(thumb.size) <= 256
    assert store.catalog("p").empty  # save does not touch the catalog


def test_thumbnail_max_side(store):
    record = store.save(make_record(), gradient(1024, 512))
    with fsspec.open(store.thumb_path("p", record.artifact_id), "rb") as fh:
        assert Image.open(io.BytesIO(fh.read())).size == (256, 128)


def test_catalog_round_trip(store):
    records = saved(store, 3)
    frame = store.catalog("p")
    assert list(frame.columns) == list(CATALOG_COLUMNS)
    assert len(frame) == 3
    assert list(frame["artifact_id"]) == [r.artifact_id for r in records]
    assert frame["seed"].dtype == "int64"
    assert isinstance(frame["created"].dtype, pd.DatetimeTZDtype) and str(frame["created"].dt.tz) == "UTC"
    row = frame.iloc[0]
    assert row["prompt"] == "warm fractal" and row["backend"] == "procedural" and row["model"] == "echo-procedural"
    assert row["sha256"] == records[0].sha256
    assert row["image_path"] == store.image_path("p", records[0].artifact_id)
    assert store.record("p", records[1].artifact_id) == records[1]
    assert ArtifactRecord.model_validate_json(row["record_json"]) == records[0]


def test_append_catalog_empty_and_wrong_project(store):
    assert store.append_catalog("p", []) is None
    assert store.catalog().empty
    with pytest.raises(InvalidInputError):
        store.append_catalog("other", [make_record()])


def test_empty_catalog_has_columns(store):
    frame = store.catalog()
    assert frame.empty and list(frame.columns) == list(CATALOG_COLUMNS)
    assert store.catalog("nothing-here").empty
    assert store.projects() == []


def test_catalog_dedup_keeps_earliest_and_sorts(store):
    t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
    late = store.save(make_record(seed=1).model_copy(update={"created": t0 + timedelta(hours=1)}), gradient())
    early = store.save(make_record(seed=2).model_copy(update={"created": t0}), gradient())
    store.append_catalog("p", [late])
    store.append_catalog("p", [early])
    again = late.model_copy(update={"created": t0 + timedelta(hours=5), "run_id": "second"})
    store.append_catalog("p", [again])
    frame = store.catalog("p")
    assert list(frame["artifact_id"]) == [early.artifact_id, late.artifact_id]
    assert store.record("p", late.artifact_id).run_id is None


def test_catalog_across_projects_and_projects_list(store):
    a = saved(store, 2, project="alpha")
    b = saved(store, 1, project="beta")
    store.write_project_meta("gamma", {"name": "Gamma"})
    assert store.projects() == ["alpha", "beta", "gamma"]
    frame = store.catalog()
    assert len(frame) == 3 and set(frame["project"]) == {"alpha", "beta"}
    # Same request in two projects -> same artifact id, two rows.
    assert a[0].artifact_id == b[0].artifact_id


def test_find(store):
    records = saved(store, 3)
    target = records[1]
    assert store.find(target.artifact_id) == target
    assert store.find(target.artifact_id[:8]) == target
    assert store.find(target.artifact_id[:8], project="p") == target
    assert store.find(f"p/{target.artifact_id[:8]}") == target
    with pytest.raises(NotFoundError):
        store.find("zzzzzzzz")
    with pytest.raises(NotFoundError):
        store.find(target.artifact_id, project="other")
    with pytest.raises(InvalidInputError):
        store.find(target.artifact_id[:3])


def test_find_ambiguous_prefix(store):
    pair = [make_record(seed=s).model_copy(update={"artifact_id": f"abcd{s}0000"}) for s in (1, 2)]
    store.append_catalog("p", pair)
    with pytest.raises(InvalidInputError) as err:
        store.find(pair[0].artifact_id[:4])
    message = str(err.value)
    assert f"p/{pair[0].artifact_id}" in message and f"p/{pair[1].artifact_id}" in message
    assert "\n" not in message
    # Same id in two projects is ambiguous without a project.
    other = make_record(seed=1, project="q").model_copy(update={"artifact_id": pair[0].artifact_id})
    store.append_catalog("q", [other])
    with pytest.raises(InvalidInputError):
        store.find(pair[0].artifact_id)
    assert store.find(pair[0].artifact_id, project="q") == other


def test_find_lists_at_most_five_candidates(store):
    records = [make_record(seed=s) for s in range(1, 20)]
    store.append_catalog("p", records)
    store.append_catalog("q", [make_record(seed=s, project="q") for s in range(1, 20)])
    first = records[0].artifact_id
    with pytest.raises(InvalidInputError) as err:
        store.find(first)
    assert str(err.value).count("/") == 2  # p/<id> and q/<id>


def test_load_image(store):
    record = saved(store)[0]
    image = store.load_image(record)
    assert image.mode == "RGB" and image.size == (64, 64)
    assert np.array_equal(np.asarray(image), np.asarray(gradient()))
    assert np.array_equal(np.asarray(store.load_image("p", record.artifact_id)), np.asarray(image))


def test_load_image_missing(store):
    with pytest.raises(StorageError) as err:
        store.load_image("p", "0123456789abcdef0123")
    assert "missing" in str(err.value)


def test_corrupted_png(store):
    record = saved(store)[0]
    key = store._image_key("p", record.artifact_id)
    data = store.fs.cat_file(key)
    store.fs.pipe_file(key, data[: len(data) // 2])
    before = all_files(store)
    with pytest.raises(StorageError) as err:
        store.load_image(record)
    message = str(err.value)
    assert store.image_path("p", record.artifact_id) in message and "corrupted" in message
    assert "\n" not in message
    with pytest.raises(StorageError):
        store.read_png("p", record.artifact_id)
    assert all_files(store) == before  # nothing else changed
    assert store.find(record.artifact_id) == record


def test_corrupted_catalog_part(store):
    saved(store)
    part = store._part_entries("p")[0]["name"]
    store.catalog("p")  # cached parts must not hide a damaged file
    store.fs.pipe_file(part, b"PAR1 this is not parquet")
    with pytest.raises(StorageError) as err:
        store.catalog("p")
    assert part.rsplit("/", 1)[1] in str(err.value) and "corrupted" in str(err.value)
    with pytest.raises(StorageError):
        store.catalog()


def test_project_meta(store):
    assert store.read_project_meta("p") == {}
    store.write_project_meta("p", {"name": "Rüzgar NFT", "created": datetime(2030, 1, 1), "n": 3})
    meta = store.read_project_meta("p")
    assert meta["name"] == "Rüzgar NFT" and meta["n"] == 3
    store.fs.pipe_file(store._meta_key("p"), b"{broken")
    with pytest.raises(StorageError):
        store.read_project_meta("p")


def test_invalid_names(store):
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(InvalidInputError):
            store.image_path(bad, "abcd")
        with pytest.raises(InvalidInputError):
            store.image_path("p", bad)


# --------------------------------------------------------------------------------------------------
# Atomic writes


def _no_tmp(store: ArtifactStore) -> bool:
    return not [p for p in store.fs.find(store.root) if ".tmp-" in p]


def test_atomic_write_failing_half_way(store, monkeypatch):
    existing = saved(store)
    catalog_before = store.catalog("p")
    record = make_record(seed=99)
    real_open = store.fs.open

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()
            return False

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError("disk full")

    monkeypatch.setattr(store.fs, "open", lambda path, mode="rb", **kw: HalfWriter(real_open(path, mode, **kw)))
    with pytest.raises(OSError, match="disk full"):
        store.save(record, gradient())
    with pytest.raises(OSError, match="disk full"):
        store.append_catalog("p", [record])
    monkeypatch.undo()

    assert not store.has_image("p", record.artifact_id)
    assert not store.fs.exists(store._thumb_key("p", record.artifact_id))
    assert _no_tmp(store)
    pd.testing.assert_frame_equal(store.catalog("p"), catalog_before)
    assert store.load_image(existing[0]).size == (64, 64)


def test_atomic_write_failing_at_rename(store, monkeypatch):
    record = make_record()
    files_before = all_files(store)

    def broken_mv(*args, **kwargs):
        raise OSError("rename failed")

    monkeypatch.setattr(store.fs, "mv", broken_mv)
    with pytest.raises(OSError):
        store.save(record, gradient())
    with pytest.raises(OSError):
        store.append_catalog("p", [record])
    with pytest.raises(OSError):
        store.write_project_meta("p", {"a": 1})
    monkeypatch.undo()
    assert not store.has_image("p", record.artifact_id)
    assert _no_tmp(store)
    assert {k: v for k, v in all_files(store).items()} == files_before
    assert store.catalog("p").empty


def test_overwrite_is_atomic_replacement(store):
    record = make_record()
    store.save(record, gradient(shift=0))
    store.save(record, gradient(shift=50))
    assert np.array_equal(np.asarray(store.load_image(record)), np.asarray(gradient(shift=50)))
    assert _no_tmp(store)


# --------------------------------------------------------------------------------------------------
# Crash recovery


def test_reconcile_recovers_orphan_and_is_idempotent(store):
    catalogued = saved(store)[0]
    orphan = store.save(make_record(seed=7), gradient(shift=7))  # crash before append_catalog
    # A crash mid-write leaves a temp file; a lost thumbnail gets regenerated.
    store.fs.pipe_file(store._image_key("p", "deadbeef") + ".tmp-0123abcd", b"partial")
    store.fs.rm(store._thumb_key("p", catalogued.artifact_id))

    assert store.reconcile("p") == 1
    assert store.find(orphan.artifact_id) == orphan  # sha256 recomputed, same record
    assert store.record("p", orphan.artifact_id).sha256 == orphan.sha256
    assert _no_tmp(store)
    assert store.has_thumb("p", catalogued.artifact_id)

    files = all_files(store)
    assert store.reconcile("p") == 0
    assert all_files(store) == files
    assert len(store.catalog("p")) == 2


def test_reconcile_leaves_corrupted_orphans(store):
    orphan = store.save(make_record(seed=7), gradient())
    key = store._image_key("p", orphan.artifact_id)
    damaged = store.fs.cat_file(key)[:100]
    store.fs.pipe_file(key, damaged)
    foreign = io.BytesIO()
    gradient().save(foreign, format="PNG")
    store.fs.pipe_file(store._image_key("p", "f0f0f0f0"), foreign.getvalue())

    report = store.reconcile_report("p")
    assert report.recovered == []
    assert len(report.unrecoverable) == 2
    assert store.fs.cat_file(key) == damaged
    assert store.fs.exists(store._image_key("p", "f0f0f0f0"))
    assert store.catalog("p").empty


def test_reconcile_missing_thumb_of_orphan(store):
    orphan = store.save(make_record(seed=3), gradient())
    store.fs.rm(store._thumb_key("p", orphan.artifact_id))
    report = store.reconcile_report("p")
    assert report.recovered == [orphan.artifact_id]
    assert report.thumbs_regenerated == [orphan.artifact_id]
    assert store.has_thumb("p", orphan.artifact_id)


# --------------------------------------------------------------------------------------------------
# Opening roots


def test_unknown_protocol():
    with pytest.raises(StorageError) as err:
        ArtifactStore.open("foo://x")
    message = str(err.value)
    assert message.startswith("unknown artifact root protocol 'foo' in 'foo://x'")
    assert "\n" not in message


def test_missing_optional_dependency(monkeypatch):
    from fsspec.registry import known_implementations

    monkeypatch.setitem(
        known_implementations, "echotestfs", {"class": "echo_no_such_pkg.FS", "err": "Install echo-no-such-pkg"}
    )
    with pytest.raises(StorageError) as err:
        ArtifactStore.open("echotestfs://bucket/prefix")
    assert "Install echo-no-such-pkg" in str(err.value)
    assert "\n" not in str(err.value)


def test_parent_is_a_file(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    root = blocker / "artifacts"
    with pytest.raises(StorageError) as err:
        ArtifactStore.open(str(root))
    message = str(err.value)
    assert str(root) in message and "\n" not in message
    with pytest.raises(StorageError):
        ArtifactStore.open(str(blocker))  # the root itself is a file


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions")
def test_permission_denied(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StorageError) as err:
            ArtifactStore.open(str(locked / "artifacts"))
        assert "ermission" in str(err.value)
    finally:
        locked.chmod(0o700)


def test_open_leaves_no_probe(tmp_path):
    root = tmp_path / "fresh" / "artifacts"
    store = ArtifactStore.open(str(root))
    assert root.is_dir() and list(root.iterdir()) == []
    assert store.image_path("p", "abcd") == str(root / "projects" / "p" / "images" / "abcd.png")


def test_relative_root_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore.open("./artifacts")
    assert store.image_path("p", "abcd") == str(tmp_path / "artifacts" / "projects" / "p" / "images" / "abcd.png")


def test_project_files_round_trip_and_reject_escapes(tmp_path):
    from echo_pipeline.artifacts.storage import ArtifactStore as _Store
    from echo_pipeline.errors import InvalidInputError as _Invalid

    store = _Store.open(str(tmp_path / "root"))
    assert store.read_project_file("p", "resonance/scores.parquet") is None
    url = store.write_project_file("p", "resonance/scores.parquet", b"abc")
    assert store.read_project_file("p", "resonance/scores.parquet") == b"abc"
    assert url == store.project_file_path("p", "resonance/scores.parquet")
    for bad in ("../x", "a/../../b", "", "gallery/x.tmp-1"):
        with pytest.raises(_Invalid):
            store.write_project_file("p", bad, b"x")
