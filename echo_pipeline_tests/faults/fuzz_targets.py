"""atheris harnesses: the prompt parser, the A1111 infotext writer/reader, the PNG chunk reader.

    python -m echo_pipeline_tests.faults.fuzz_targets TARGET [libFuzzer flags] [CORPUS_DIR]

TARGET is `prompt`, `infotext` or `png`. A crash is an uncaught exception other than the
documented error types (`InvalidInputError`/`NotFoundError` for prompts, `StorageError` for PNG
bytes; the infotext reader takes any text) or, for valid input, an infotext that does not read back
as written. `seeds(TARGET)` gives the seed corpus `test_fuzz.py` writes before a run.

The echo_pipeline and PIL modules are instrumented (atheris coverage feedback, so the PNG harness
finds its way into PIL's chunk parsers); dynamicprompts and pydantic are not, so each run stays cheap.
"""

from __future__ import annotations

import contextlib
import struct
import sys
import zlib

import atheris

with atheris.instrument_imports(include=["echo_pipeline", "PIL"]):
    from echo_pipeline.artifacts.metadata import (
        encode_png,
        format_infotext,
        parse_infotext,
        read_png_metadata,
    )
    from echo_pipeline.artifacts.records import ArtifactRecord
    from echo_pipeline.errors import InvalidInputError, NotFoundError, StorageError
    from echo_pipeline.render.backends.base import BackendDescription
    from echo_pipeline.render.prompt_engine import PromptEngine, PromptSpec, parse_size
    from echo_pipeline.render.requests import RenderRequest
    from echo_pipeline.render.style_manager import StyleLibrary
    from echo_pipeline.settings import REPO_CONFIG_DIR

from PIL import Image
from pydantic import ValidationError

from echo_pipeline_tests.faults.png_chunks import SIGNATURE, chunk, chunks

# -- prompt parser ----------------------------------------------------------------------------------

_ENGINE = PromptEngine(StyleLibrary(REPO_CONFIG_DIR / "styles"), REPO_CONFIG_DIR / "wildcards")
_STYLES = [None, *_ENGINE.styles.names()[:6]]


def fuzz_prompt(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    count = fdp.ConsumeIntInRange(1, 4)
    seed = fdp.ConsumeIntInRange(0, 2**32 + 8) if fdp.ConsumeBool() else None
    style = _STYLES[fdp.ConsumeIntInRange(0, len(_STYLES) - 1)]
    size = fdp.ConsumeUnicodeNoSurrogates(12)
    prompt = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    with contextlib.suppress(InvalidInputError):
        parse_size(size)
    try:
        spec = PromptSpec(prompt=prompt, count=count, seed=seed, style=style, width=64, height=64)
        requests = _ENGINE.build_requests(spec)
    except (InvalidInputError, NotFoundError):
        return
    assert requests, "no requests and no error"
    assert all(r.prompt.strip() for r in requests)
    assert [r.index for r in requests] == list(range(len(requests)))


# -- A1111 infotext ---------------------------------------------------------------------------------


def fuzz_infotext(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:  # any text: the reader never fails
        parsed = parse_infotext(fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes()))
        assert isinstance(parsed, dict) and "Prompt" in parsed and "Negative prompt" in parsed
        return
    style = fdp.ConsumeUnicodeNoSurrogates(24) if fdp.ConsumeBool() else None
    model = fdp.ConsumeUnicodeNoSurrogates(24)
    sampler = fdp.ConsumeBool()
    negative = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200))
    prompt = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    try:
        req = RenderRequest(prompt=prompt, negative_prompt=negative, seed=7, width=64, height=64, style=style,
                            model=model)
    except ValidationError:
        return  # not a valid request: nothing to write
    desc = BackendDescription(backend="procedural", model="echo-procedural", version="1")
    record = ArtifactRecord(artifact_id=req.request_id, project="p", request=req, backend=desc)
    text = format_infotext(record, sampler=sampler)
    parsed = parse_infotext(text)
    assert (parsed["Prompt"], parsed["Negative prompt"]) == (req.prompt, req.negative_prompt), text
    assert parsed["Seed"] == "7" and (parsed["Size-1"], parsed["Size-2"]) == ("64", "64"), text
    assert parsed["Echo artifact"] == record.artifact_id, text
    if style:
        assert parsed.get("Echo style") == style, text


# -- PNG chunk reader -------------------------------------------------------------------------------

def _seed_png() -> bytes:
    req = RenderRequest(prompt="warm fractal, neon", negative_prompt="blurry", seed=1, width=64, height=64)
    record = ArtifactRecord(artifact_id=req.request_id, project="p", request=req,
                            backend=BackendDescription(backend="procedural", model="echo-procedural", version="1"))
    return encode_png(Image.new("RGB", (8, 8), (200, 30, 30)), record, extra_text={"prompt": '{"3": {}}'})


_SEED_CHUNKS = chunks(_seed_png())
_TEXT_KINDS = [b"tEXt", b"zTXt", b"iTXt", b"IHDR", b"IDAT", b"PLTE", b"tRNS", b"IEND", b"eXIf", b"acTL"]


def fuzz_png(data: bytes) -> None:
    """Either the bytes as they are, or a valid PNG with one chunk replaced, added, truncated or
    given a huge length, CRCs fixed so the reader gets past them (bad compression, non-UTF-8 text,
    odd keywords and lengths reach the chunk parsers)."""
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 4)
    if mode == 0:
        png = fdp.ConsumeBytes(fdp.remaining_bytes())
    else:
        parts = list(_SEED_CHUNKS)
        index = fdp.ConsumeIntInRange(0, len(parts) - 1)
        kind = _TEXT_KINDS[fdp.ConsumeIntInRange(0, len(_TEXT_KINDS) - 1)]
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
        if mode == 1:  # a chunk's payload replaced
            parts[index] = (parts[index][0], payload)
        elif mode == 2:  # a chunk of any kind inserted
            parts.insert(index, (kind, payload))
        body = b"".join(chunk(k, p) for k, p in parts)
        if mode == 3:  # truncated anywhere
            body = body[:fdp.ConsumeIntInRange(0, len(body))]
        elif mode == 4:  # one length field made huge (CRC left as it was)
            at = sum(12 + len(p) for _, p in parts[:index])
            body = body[:at] + struct.pack(">I", fdp.ConsumeIntInRange(len(body), 2**31 - 1)) + body[at + 4:]
        png = SIGNATURE + body
    try:
        parameters, record = read_png_metadata(png, "fuzz.png")
    except StorageError as exc:
        assert "\n" not in str(exc), "a StorageError of more than one line"
        return
    assert parameters is None or isinstance(parameters, str)
    assert record is None or isinstance(record, ArtifactRecord)


# -- seeds and entry point --------------------------------------------------------------------------

TARGETS = {"prompt": fuzz_prompt, "infotext": fuzz_infotext, "png": fuzz_png}


def seeds(target: str) -> list[bytes]:
    """A small seed corpus per target (libFuzzer grows it as it finds new coverage)."""
    if target == "prompt":
        texts = ["warm fractal 01-09", "{warm|cool|neon} city, no human forms", "{2::a|b} __palettes__ 3-1",
                 "{2$$a|b|c} sky", "avoid text, without people", "a {b", "0-1000 x", "\ufeff neon \u00e9"]
        return [b"\x01\x00\x00" + b"512x512\x00" + t.encode() for t in texts]
    if target == "infotext":
        return [b"\x00" + b"a\nNegative prompt: b\nSteps: 20, Seed: 1, Size: 512x512",
                b"\x01\x00\x00" + b'x, "y": z\nNegative prompt: lines\n\n',
                b"\x02\x01" + "Negative prompt: first\n  indented \ufeff".encode()]
    png = _seed_png()
    return [png, b"\x00" + png, b"\x01\x03" + b"\x00" * 40, b"\x02\x02\x02" + zlib.compress(b"\xff\xfe text"),
            b"\x03\x01\x01", b"\x04\x04\x04"]


def main(argv: list[str]) -> None:
    target = TARGETS[argv[1]]
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
