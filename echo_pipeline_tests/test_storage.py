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
from echo_pipeline.artifacts.storage import CATALOG_COLUMNS, COMPACT_AT_PARTS
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
    records = [r.model_copy(update={"artifact_id": f"abcd{i:016d}"}) for i, r in enumerate(records)]
    store.append_catalog("p", records)
    with pytest.raises(InvalidInputError) as err:
        store.find("abcd")
    assert str(err.value).count("/abcd") == 5 and "and 14 more" in str(err.value)


def test_full_id_in_two_projects_lists_both(store):
    """The same request in two projects is one artifact id twice: say so, name both projects."""
    first = make_record(seed=1)
    store.append_catalog("p", [first])
    store.append_catalog("q", [make_record(seed=1, project="q")])
    with pytest.raises(InvalidInputError) as err:
        store.find(first.artifact_id)
    message = str(err.value)
    assert f"artifact {first.artifact_id} is stored in 2 projects: p, q" in message and "\n" not in message
    assert "--project p" in message
    assert store.find(first.artifact_id, project="q").project == "q"
    assert store.find(f"q/{first.artifact_id}").project == "q"


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


@pytest.mark.parametrize("garbage", [b"PAR1 this is not parquet", os.urandom(512)], ids=["bad-parquet", "random"])
def test_corrupted_catalog_part_is_skipped_reported_and_quarantined(store, garbage):
    """One garbage part must not take the catalog down: the rest is served, the part is reported
    and moved to catalog/quarantine/ (the store is writable here)."""
    good = saved(store, 2)
    saved(store, 1, project="q")
    bad = store.save(make_record(seed=50), gradient(shift=50))
    store.append_catalog("p", [bad])  # its own part, damaged below
    part = store._part_entries("p")[-1]["name"]
    store.catalog("p")  # cached parts must not hide a damaged file
    store.fs.pipe_file(part, garbage)
    frame = store.catalog("p")
    assert set(frame["artifact_id"]) == {r.artifact_id for r in good}
    assert len(store.catalog()) == 3  # every project still lists
    [warning] = store.warnings
    name = part.rsplit("/", 1)[1]
    assert name in warning and "corrupted" in warning and "quarantine" in warning and "\n" not in warning
    assert not store.fs.exists(part)
    assert store.fs.exists(f"{store._catalog_dir('p')}/quarantine/{name}")
    assert store.find(good[0].artifact_id[:8], project="p").artifact_id == good[0].artifact_id
    [problem] = store.verify("p").problems[:1]
    assert problem.kind == "catalog_part"
    # The damaged part's image is now an orphan: the next batch's reconcile adopts it again.
    store.reconcile("p")
    assert bad.artifact_id in set(store.catalog("p")["artifact_id"])


def test_corrupted_catalog_part_on_read_only_store_is_skipped_in_place(store):
    good = saved(store, 1)
    store.append_catalog("p", [store.save(make_record(seed=50), gradient(shift=50))])
    part = store._part_entries("p")[-1]["name"]
    store.fs.pipe_file(part, b"garbage")
    reader = ArtifactStore(store.url, read_only=True)
    before = all_files(store)
    assert list(reader.catalog("p")["artifact_id"]) == [good[0].artifact_id]
    assert "left in place" in reader.warnings[0]
    assert all_files(store) == before


def _parts(store: ArtifactStore, project: str, count: int, start: int = 0) -> list[ArtifactRecord]:
    """`count` catalog parts of one row each (records only: the catalog does not need the PNGs)."""
    records = [make_record(seed=start + k, project=project) for k in range(count)]
    for record in records:
        store.append_catalog(project, [record])
    return records


def test_compaction_merges_small_parts_and_the_catalog_reads_the_same(store):
    records = _parts(store, "p", COMPACT_AT_PARTS + 8)
    _parts(store, "q", 3)
    before = store.catalog("p")
    assert store.compact_catalog("p", at_parts=COMPACT_AT_PARTS + 9).merged == 0  # not enough parts yet

    result = store.compact_catalog("p")
    assert (result.merged, result.removed) == (len(records), len(records))
    assert store.catalog_parts("p") == [result.merged_into]
    fresh = ArtifactStore(store.url)  # a new reader sees the same rows
    pd.testing.assert_frame_equal(fresh.catalog("p"), before)
    assert len(fresh.catalog_parts("q")) == 3  # other projects are left alone
    assert store.compact_catalog("p").merged == 0  # one part: nothing to merge

    # The merged part is still small: later appends merge with it, until a part is large.
    more = _parts(store, "p", COMPACT_AT_PARTS - 1, start=1000)
    assert store.compact_catalog("p").merged == COMPACT_AT_PARTS
    assert len(store.catalog_parts("p")) == 1
    assert set(ArtifactStore(store.url).catalog("p")["artifact_id"]) == {r.artifact_id for r in records + more}


def test_the_merge_threshold_comes_from_the_environment(store, monkeypatch):
    _parts(store, "p", 3)
    monkeypatch.setenv("ECHO_CATALOG_COMPACT_AT", "4")
    assert store.compact_catalog("p").merged == 0
    monkeypatch.setenv("ECHO_CATALOG_COMPACT_AT", "3")
    assert store.compact_catalog("p").merged == 3
    monkeypatch.setenv("ECHO_CATALOG_COMPACT_AT", "often")
    with pytest.raises(InvalidInputError, match="ECHO_CATALOG_COMPACT_AT must be a whole number"):
        store.compact_catalog("p")


def test_large_parts_are_not_merged_again(store, monkeypatch):
    monkeypatch.setattr("echo_pipeline.artifacts.storage.LARGE_PART_ROWS", 2)
    store.append_catalog("p", [make_record(seed=1), make_record(seed=2)])  # large (2 rows)
    _parts(store, "p", 3, start=10)
    result = store.compact_catalog("p", at_parts=3)
    assert result.merged == 3 and len(store.catalog_parts("p")) == 2
    assert len(store.catalog("p")) == 5


def test_compaction_killed_before_deleting_the_old_parts_serves_each_row_once(store, monkeypatch):
    records = _parts(store, "p", COMPACT_AT_PARTS)
    before = store.catalog("p")

    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(store.fs, "rm", killed)  # dies right after the merged part is in place
    with pytest.raises(Killed):
        store.compact_catalog("p")
    monkeypatch.undo()
    assert len(store.catalog_parts("p")) == COMPACT_AT_PARTS + 1  # the old parts are all still there
    reader = ArtifactStore(store.url)
    pd.testing.assert_frame_equal(reader.catalog("p"), before)
    raw = pd.concat([t.to_pandas() for t in reader._project_tables("p")])
    assert len(raw) == len(records) and raw["artifact_id"].is_unique  # the replaced parts are not served

    result = reader.compact_catalog("p")  # the next compaction deletes the leftovers
    assert (result.merged, result.removed) == (0, COMPACT_AT_PARTS)
    assert len(reader.catalog_parts("p")) == 1
    pd.testing.assert_frame_equal(ArtifactStore(store.url).catalog("p"), before)


def test_catalog_part_that_cannot_be_read_still_raises(store, monkeypatch):
    """An I/O error is not garbage: nothing is quarantined, the caller hears about it."""
    saved(store)
    real = store.fs.cat_file
    monkeypatch.setattr(store.fs, "cat_file",
                        lambda path, *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
                        if "/catalog/" in path else real(path, *a, **k))
    with pytest.raises(StorageError) as err:
        store.catalog("p")
    assert "cannot be read" in str(err.value) and "Permission denied" in str(err.value)
    monkeypatch.undo()
    assert len(store.catalog("p")) == 1 and not store.warnings


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


def test_reconcile_removes_temp_files_of_every_step(store):
    # A kill can land in any step's write, not only in rendering (the fault suite's kill points
    # found a plan.json.tmp-* left behind); the files beside them stay.
    saved(store)
    project_dir = store._project_dir("p")
    leftovers = [f"{project_dir}/{sub}.tmp-0123abcd" for sub in
                 ("pipeline/plan.json", "resonance/scores.parquet", "gallery/index.html", "media/a/clip.mp4")]
    for path in leftovers:
        store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        store.fs.pipe_file(path, b"partial")
    store.fs.pipe_file(f"{project_dir}/pipeline/intent.json", b"{}")

    report = store.reconcile_report("p")
    assert sorted(report.tmp_removed) == sorted(store.url_for(p) for p in leftovers)
    assert _no_tmp(store)
    assert store.fs.cat_file(f"{project_dir}/pipeline/intent.json") == b"{}"
    # A young temp file is a live writer's: an age limit keeps it.
    store.fs.pipe_file(leftovers[0], b"in flight")
    assert store.reconcile_report("p", min_tmp_age_s=3600).tmp_removed == []


def test_stale_temp_files_of_the_top_level_gallery_are_removed(store, monkeypatch):
    # The all-projects gallery lives beside projects/, where no project's reconcile looks.
    import echo_pipeline.artifacts.storage as storage

    old = f"{store.root}/gallery/index.html.tmp-0123abcd"
    store.fs.makedirs(f"{store.root}/gallery", exist_ok=True)
    store.fs.pipe_file(old, b"partial")
    assert store.remove_stale_root_tmp("gallery") == []  # young: maybe a build in flight
    monkeypatch.setattr(storage, "_entry_time", lambda entry: 0.0)  # written in 1970
    assert store.remove_stale_root_tmp("gallery") == [store.url_for(old)]
    assert _no_tmp(store)


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


# --------------------------------------------------------------------------------------------------
# Verification: the files are the ones catalogued


def _kinds(report) -> list[tuple[str, str | None]]:
    return sorted((p.kind, p.artifact_id) for p in report.problems)


def test_verify_clean_store(store):
    saved(store, 2)
    saved(store, 1, project="q")
    report = store.verify()
    assert report.ok and report.projects == ["p", "q"]
    assert (report.images_checked, report.thumbs_checked) == (3, 3)
    assert report.summary().endswith("all fine")
    assert store.check_files("p").ok


def test_another_artifacts_png_copied_over_is_a_hash_mismatch(store):
    """Decoding alone passes a valid PNG of another artifact: the hash and the lineage must not."""
    a, b = saved(store, 2)
    store.fs.pipe_file(store._image_key("p", a.artifact_id), store.read_bytes("p", b.artifact_id))
    store.load_image(a)  # it decodes fine: that is the trap
    report = store.verify("p")
    [problem] = report.problems
    assert (problem.kind, problem.artifact_id) == ("hash_mismatch", a.artifact_id)
    assert f"p/{b.artifact_id}" in problem.detail and "\n" not in problem.line()
    with pytest.raises(StorageError) as err:
        store.read_verified_png(a)
    assert "hash mismatch" in str(err.value) and b.artifact_id in str(err.value)
    params, embedded = store.read_verified_png(b)
    assert embedded == b.model_copy(update={"sha256": ""}) and params == format_infotext(embedded)
    assert store.check_files("p", hashes=True).problems[0].kind == "hash_mismatch"
    assert store.check_files("p").ok  # the listing alone cannot see it


def test_verify_finds_every_kind_of_damage(store):
    records = saved(store, 6)
    key = store._image_key
    store.fs.rm(key("p", records[0].artifact_id))  # missing
    data = store.fs.cat_file(key("p", records[1].artifact_id))
    store.fs.pipe_file(key("p", records[1].artifact_id), data[: len(data) // 2])  # truncated
    store.fs.pipe_file(key("p", records[2].artifact_id), b"")  # empty
    store.fs.rm(store._thumb_key("p", records[3].artifact_id))  # thumbnail missing
    store.fs.pipe_file(store._thumb_key("p", records[4].artifact_id), b"\xff\xd8 not a jpeg")
    orphan = store.save(make_record(seed=77), gradient(shift=77))  # written, never catalogued
    report = store.verify("p")
    assert _kinds(report) == sorted([
        ("missing", records[0].artifact_id), ("undecodable", records[1].artifact_id),
        ("undecodable", records[2].artifact_id), ("thumb_missing", records[3].artifact_id),
        ("thumb_undecodable", records[4].artifact_id), ("not_in_catalog", orphan.artifact_id),
    ])
    assert not report.ok and "6 problem(s)" in report.summary()
    assert report.to_dict()["counts"] == {"missing": 1, "undecodable": 2, "thumb_missing": 1,
                                          "thumb_undecodable": 1, "not_in_catalog": 1}
    cheap = store.check_files("p")  # listings only: no decoding, so the truncated PNG and bad JPEG pass
    assert _kinds(cheap) == sorted([
        ("missing", records[0].artifact_id), ("undecodable", records[2].artifact_id),
        ("thumb_missing", records[3].artifact_id), ("not_in_catalog", orphan.artifact_id),
    ])


def test_verify_lineage_without_recorded_hash(store):
    """Rows without a sha256 (older stores) are checked by their embedded lineage record."""
    a, b = [store.save(make_record(seed=s), gradient(shift=s)) for s in (1, 2)]
    store.append_catalog("p", [r.model_copy(update={"sha256": ""}) for r in (a, b)])
    store.fs.pipe_file(store._image_key("p", a.artifact_id), store.read_bytes("p", b.artifact_id))
    [problem] = store.verify("p").problems
    assert problem.kind == "lineage_mismatch" and b.artifact_id in problem.detail


def test_verify_never_writes(store):
    records = saved(store, 2)
    store.fs.rm(store._thumb_key("p", records[0].artifact_id))
    before = all_files(store)
    assert not store.verify().ok
    assert all_files(store) == before


# --------------------------------------------------------------------------------------------------
# Read-only and full stores (root ignores chmod, so both are simulated)


def test_read_only_store_reads_and_refuses_writes(store):
    records = saved(store, 2)
    store.fs.rm(store._thumb_key("p", records[0].artifact_id))
    before = all_files(store)
    reader = ArtifactStore.open(store.url, read_only=True)
    assert reader.read_only and len(reader.catalog("p")) == 2
    assert reader.find(records[1].artifact_id[:6]) == records[1]
    assert reader.read_verified_png(records[1])[1] is not None
    assert reader.load_thumbnail("p", records[0].artifact_id).size == (64, 64)  # made, not stored
    assert [p.kind for p in reader.verify().problems] == ["thumb_missing"]
    for write in (lambda: reader.save(make_record(seed=9), gradient()),
                  lambda: reader.append_catalog("p", records),
                  lambda: reader.write_project_file("p", "gallery/index.html", b"x"),
                  lambda: reader.reconcile("p"), reader.check_writable):
        with pytest.raises(StorageError, match="read-only"):
            write()
    assert all_files(store) == before


def _full_disk(monkeypatch, fs, errno_code: int = 28):
    """Every write, rename, mkdir and delete on `fs` fails like a full (28) or read-only (30) disk."""
    def fail(*args, **kwargs):
        raise OSError(errno_code, os.strerror(errno_code))

    real_open = fs.open

    def open_(path, mode="rb", *args, **kwargs):
        if any(m in mode for m in "wax+"):
            fail()
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(fs, "open", open_)
    for name in ("mv", "makedirs", "mkdir", "rm", "rm_file", "pipe_file", "touch"):
        monkeypatch.setattr(fs, name, fail)


@pytest.mark.parametrize("errno_code", [28, 30], ids=["ENOSPC", "EROFS"])
def test_full_or_read_only_disk(store, monkeypatch, errno_code):
    """Reading keeps working; a write fails with one line naming the file and the reason; a damaged
    catalog part is skipped and reported even though it cannot be moved."""
    records = saved(store, 2)
    part = store._part_entries("p")[0]["name"]
    store.append_catalog("p", [store.save(make_record(seed=60), gradient(shift=60))])
    store.fs.pipe_file(store._part_entries("p")[-1]["name"], b"garbage")
    reader = ArtifactStore(store.url)  # writable in principle, no probe: how reading commands open it
    _full_disk(monkeypatch, reader.fs, errno_code)
    assert list(reader.catalog("p")["artifact_id"]) == [r.artifact_id for r in records]
    assert "could not be moved to quarantine" in reader.warnings[0] and os.strerror(errno_code) in reader.warnings[0]
    assert reader.read_verified_png(records[0])[1] is not None
    assert [p.kind for p in reader.verify("p").problems] == ["catalog_part", "not_in_catalog"]
    with pytest.raises(StorageError) as err:
        reader.save(make_record(seed=9), gradient())
    message = str(err.value)
    assert message.startswith("cannot write ") and os.strerror(errno_code) in message and "\n" not in message
    monkeypatch.undo()
    assert store.fs.exists(part)


def test_store_files_honour_the_umask(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "a"))
    old = os.umask(0o022)
    try:
        record = saved(store, 1)[0]
        store.write_project_meta("p", {"a": 1})
    finally:
        os.umask(old)
    for path in (store.image_path("p", record.artifact_id), store.thumb_path("p", record.artifact_id),
                 store.catalog_parts("p")[0], store._meta_key("p")):
        assert os.stat(path).st_mode & 0o777 == 0o644, path
