"""Damaged inputs the store did not write: a corrupt catalog part under a project that keeps being
batched, and malformed PNG chunks (truncated, bad CRC, huge length, bad zTXt/iTXt compression,
non-UTF-8 text) read through the PNG metadata reader, `verify`, `echo-os artifacts verify` and the
next batch's reconcile. Each is one clear line or one reported problem, never a crash, and the
next run loses nothing."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from echo_pipeline_tests.faults.png_chunks import SIGNATURE, assemble, chunk, chunks

pytestmark = pytest.mark.fault


def _malformed(png: bytes) -> dict[str, bytes]:
    """One damaged copy of a stored PNG per kind of chunk damage."""
    parts = chunks(png)
    kinds = [k for k, _ in parts]
    idat = kinds.index(b"IDAT")
    text_at = next(i for i, k in enumerate(kinds) if k in (b"tEXt", b"iTXt"))
    body = b"".join(chunk(k, p) for k, p in parts)
    at_idat = len(SIGNATURE) + sum(12 + len(p) for _, p in parts[:idat])
    out = {
        "truncated_mid_chunk": png[: at_idat + 8 + len(parts[idat][1]) // 2],
        "truncated_before_iend": png[:-12],
        "bad_crc": SIGNATURE + body[: at_idat - len(SIGNATURE)]
        + chunk(b"IDAT", parts[idat][1], crc=zlib.crc32(b"IDAT" + parts[idat][1]) ^ 1)
        + b"".join(chunk(k, p) for k, p in parts[idat + 1:]),
        "huge_length": png[:at_idat] + struct.pack(">I", 0x7FFFFFF0) + png[at_idat + 4:],
        "bad_ztxt_compression": assemble(parts[:text_at] + [(b"zTXt", b"parameters\0\0" + b"not zlib at all")]
                                         + parts[text_at:]),
        "bad_itxt_compression": assemble(parts[:text_at] + [(b"iTXt", b"echo\0\1\0\0\0" + b"\x78\x9c garbage")]
                                         + parts[text_at:]),
        "non_utf8_itxt": assemble(parts[:text_at] + [(b"iTXt", b"note\0\0\0\0\0" + b"\xff\xfe\xc3\x28 bad")]
                                  + parts[text_at:]),
        "bad_idat_compression": assemble(parts[:idat] + [(b"IDAT", b"\x78\x9c this is not deflate")]
                                         + parts[idat + 1:]),
    }
    return out


def test_malformed_png_chunks_are_one_line_errors_everywhere(cli, artifact_root):
    from echo_pipeline.artifacts.metadata import read_png_metadata
    from echo_pipeline.artifacts.storage import ArtifactStore
    from echo_pipeline.errors import StorageError

    code, out, err = cli("render", "flow field 01-09", "--size", "64x64", "--json")
    assert code == 0, err
    store = ArtifactStore(str(artifact_root))
    ids = sorted(store.catalog("default")["artifact_id"])
    images = artifact_root / "projects" / "default" / "images"
    damaged = _malformed((images / f"{ids[0]}.png").read_bytes())
    assert len(damaged) <= len(ids) - 1

    outcomes: dict[str, str] = {}
    for (name, data), artifact_id in zip(damaged.items(), ids[1:], strict=False):
        try:  # straight through the reader: a StorageError of one line, or the text it could read
            parameters, _ = read_png_metadata(data, f"{name}.png")
            outcomes[name] = "read" if parameters else "read without parameters"
        except StorageError as exc:
            assert "\n" not in str(exc) and f"{name}.png" in str(exc)
            outcomes[name] = str(exc)
        (images / f"{artifact_id}.png").write_bytes(data)  # the stored file damaged the same way
    report = store.verify("default")
    flagged = {p.artifact_id for p in report.problems}
    assert flagged == set(ids[1:1 + len(damaged)]), [p.line() for p in report.problems]
    assert all("\n" not in p.line() for p in report.problems)

    code, out, err = cli("artifacts", "verify", "--project", "default", "--json")
    assert code != 0 and "Traceback" not in err
    assert {p["artifact_id"] for p in json.loads(out)["problems"]} == flagged
    # A damaged PNG no catalog row names is left alone by the next run's reconcile, not adopted.
    (images / "0000orphan0000damaged.png").write_bytes(damaged["bad_crc"])
    code, out, err = cli("render", "flow field 01-09", "--size", "64x64", "--json")
    assert code == 0 and "Traceback" not in err, err
    assert "0000orphan0000damaged" not in set(ArtifactStore(str(artifact_root)).catalog("default")["artifact_id"])
    print("\n" + "\n".join(f"{k}: {v}" for k, v in outcomes.items()))


@pytest.mark.slow(seconds=14)
@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_columns"])
def test_corrupt_catalog_part_mid_project_loses_nothing(cli, artifact_root, damage):
    """A catalog part damaged between two batches: the next batch quarantines it, re-adopts
    its images from their PNGs' own records and goes on; nothing is lost or duplicated."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from echo_pipeline.artifacts.storage import ArtifactStore

    assert cli("plan", "Corrupt Part", "cool waves", "--size", "64x64", "--count", "3")[0] == 0
    assert cli("batch", "corrupt-part", "--json")[0] == 0
    catalog_dir = artifact_root / "projects" / "corrupt-part" / "catalog"
    [part] = sorted(catalog_dir.glob("part-*.parquet"))
    data = part.read_bytes()
    if damage == "garbage":
        part.write_bytes(b"\0garbage" * 64)
    elif damage == "truncated":
        part.write_bytes(data[: len(data) // 2])
    else:
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.table({"something": ["else"]}), buffer)
        part.write_bytes(buffer.getvalue().to_pybytes())

    code, out, err = cli("batch", "corrupt-part", "--json")
    assert code == 0, err
    assert "Traceback" not in err
    assert not part.exists() and len(list((catalog_dir / "quarantine").iterdir())) == 1  # set aside
    summary = json.loads(out)
    assert summary["recovered"] == 3 and summary["new_images"] == 3
    # The user is told the part was set aside, and where.
    [warning] = summary["warnings"]
    assert warning.startswith(f"catalog part {catalog_dir}") and "quarantine" in warning
    store = ArtifactStore(str(artifact_root))
    catalog = store.catalog("corrupt-part")
    assert len(catalog) == 6 and catalog["artifact_id"].is_unique
    images = Path(artifact_root / "projects" / "corrupt-part" / "images")
    assert {p.stem for p in images.glob("*.png")} == set(catalog["artifact_id"])
    problems = store.verify("corrupt-part").problems
    assert [p.kind for p in problems] == ["catalog_part"] and "quarantine" in problems[0].path
    for quarantined in (catalog_dir / "quarantine").iterdir():
        quarantined.unlink()
    assert ArtifactStore(str(artifact_root)).verify("corrupt-part").ok
