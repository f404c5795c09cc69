"""PNG chunk surgery for the fault suite: split a PNG into chunks, build chunks with or without a
valid CRC, and put them back together (the corrupt-input tests and the PNG fuzz harness)."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, payload: bytes, *, crc: int | None = None) -> bytes:
    """One chunk: length, type, payload, CRC (the right one unless `crc` is given)."""
    value = zlib.crc32(kind + payload) if crc is None else crc
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", value & 0xFFFFFFFF)


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of each chunk of a well-formed PNG."""
    out, at = [], len(SIGNATURE)
    while at + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        out.append((kind, png[at + 8:at + 8 + length]))
        at += 12 + length
    return out


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    return SIGNATURE + b"".join(chunk(kind, payload) for kind, payload in parts)
