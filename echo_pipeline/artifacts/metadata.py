"""PNG metadata: the AUTOMATIC1111 `parameters` infotext and the `echo` lineage chunk.

Every stored PNG carries two text chunks:

* `parameters`: the AUTOMATIC1111 infotext (see PROTOCOLS.md), so PNG-Info readers, Civitai and
  ComfyUI users see prompt, seed, sampler and model::

      warm fractal, neon
      Negative prompt: blurry
      Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: echo-procedural, ...

* `echo`: the full `ArtifactRecord` as JSON (lineage: request, backend, parent, run).

`parse_infotext` reads the `parameters` text of PNGs from any A1111-compatible tool.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError
from pydantic import ValidationError

from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.errors import StorageError

log = logging.getLogger(__name__)

PARAMETERS_KEY = "parameters"
ECHO_KEY = "echo"
PNG_COMPRESS_LEVEL = 4  # ~4x faster than zlib's default 6 at 512x512 for a few % more bytes
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The same expressions A1111 uses (modules/infotext_utils.py).
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")
NEGATIVE_PREFIX = "Negative prompt:"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------
# Infotext


def _quote(value: Any) -> str:
    """A1111's `quote`: JSON-quote values with a comma, colon or newline.

    Also quotes values A1111's reader would otherwise mangle (a leading '"', surrounding whitespace,
    a carriage return, an empty string); A1111's reader unquotes all of those correctly.
    """
    text = str(value)
    if (
        not text
        or any(ch in text for ch in ",:\n\r")
        or text[0] == '"'
        or text != text.strip()
    ):
        return json.dumps(text, ensure_ascii=False)
    return text


def _number(value: float | int) -> str:
    """7.0 -> '7', 7.5 -> '7.5' (how A1111 infotexts usually show CFG scale / strength)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def infotext_params(record: ArtifactRecord) -> dict[str, str]:
    """The ordered `Key: value` pairs of the infotext's last line (values not yet quoted)."""
    req = record.request
    params: dict[str, str] = {
        "Steps": str(req.steps),
        "Sampler": req.sampler,
        "CFG scale": _number(req.cfg_scale),
        "Seed": str(req.seed),
        "Size": f"{req.width}x{req.height}",
    }
    if record.backend.model_hash:
        params["Model hash"] = record.backend.model_hash
    model = req.model or record.backend.model
    if model:
        params["Model"] = model
    if req.strength is not None:
        params["Denoising strength"] = _number(req.strength)
    if req.tiling:
        params["Tiling"] = "True"
    params["Echo artifact"] = record.artifact_id
    params["Echo project"] = record.project
    if req.style:
        params["Echo style"] = req.style
    parent = record.parent_id or req.parent_id
    if parent:
        params["Echo parent"] = parent
    params["Echo backend"] = record.backend.backend or req.backend
    params["Version"] = f"echo-os {record.code_version}"
    return params


def format_infotext(record: ArtifactRecord) -> str:
    """The AUTOMATIC1111 `parameters` text for a record (like A1111's `create_infotext`)."""
    req = record.request
    lines = [req.prompt]
    if req.negative_prompt:
        lines.append(f"{NEGATIVE_PREFIX} {req.negative_prompt}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in infotext_params(record).items()))
    return "\n".join(lines).strip()


def _unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def parse_infotext(text: str) -> dict[str, str]:
    """Read an A1111 `parameters` text: "Prompt", "Negative prompt" and every `Key: value`.

    Follows A1111's `parse_generation_parameters`: the last line holds the parameters when it has at
    least 3 `key: value` pairs, JSON-quoted values are unquoted, `WxH` values split into `Key-1` and
    `Key-2` (e.g. "Size-1"/"Size-2"). Unlike A1111, empty values are kept (as "") and webui-only
    defaults (Clip skip, Hires ..., RNG ...) are not filled in.
    """
    text = str(text).replace("\r\n", "\n").replace("\r", "\n")
    *lines, lastline = text.strip().split("\n")
    if len(RE_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    prompt: list[str] = []
    negative: list[str] = []
    done_with_prompt = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX):
            done_with_prompt = True
            line = line[len(NEGATIVE_PREFIX):].strip()
        (negative if done_with_prompt else prompt).append(line)

    result: dict[str, str] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in RE_PARAM.findall(lastline):
        if value[:1] == '"' and value[-1:] == '"':
            value = _unquote(value)
        match = RE_IMAGESIZE.match(value)
        if match is not None:
            result[f"{key}-1"] = match.group(1)
            result[f"{key}-2"] = match.group(2)
        else:
            result[key] = value
    return result


# --------------------------------------------------------------------------------------------------
# PNG


def encode_png(image: Image.Image, record: ArtifactRecord, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """PNG bytes with the `parameters` (A1111 infotext) and `echo` (record JSON) text chunks."""
    info = PngImagePlugin.PngInfo()
    # Like A1111: tEXt when the text is Latin-1, iTXt (UTF-8) otherwise.
    info.add_text(PARAMETERS_KEY, format_infotext(record))
    info.add_itxt(ECHO_KEY, record.model_dump_json())
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1", "I", "I;16"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def decode_png(data: bytes, source: str = "<bytes>") -> Image.Image:
    """Open PNG bytes, check every chunk's CRC and decode the pixels; `StorageError` when damaged.

    Returns the fully loaded image (its `.text` holds all text chunks).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StorageError(f"{source}: expected PNG bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(PNG_SIGNATURE):
        if not data:
            raise StorageError(f"{source} is corrupted: the file is empty")
        raise StorageError(f"{source} is corrupted: not a PNG file (bad signature)")
    try:
        # verify() reads every chunk up to IEND checking CRCs (catches truncation regardless of
        # ImageFile.LOAD_TRUNCATED_IMAGES); load() then decompresses the pixel data.
        with Image.open(io.BytesIO(data), formats=["PNG"]) as probe:
            probe.verify()
        image = Image.open(io.BytesIO(data), formats=["PNG"])
        image.load()
    except UnidentifiedImageError:
        raise StorageError(f"{source} is corrupted: not a readable PNG file") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib/struct errors...
        raise StorageError(f"{source} is corrupted or truncated: {_first_line(exc)}") from exc
    return image


def _png_text(image: Image.Image) -> dict[str, str]:
    text = getattr(image, "text", None) or {}
    return {str(k): (v if isinstance(v, str) else str(v)) for k, v in text.items()}


def record_from_png_text(text: dict[str, str], source: str = "<bytes>") -> ArtifactRecord | None:
    raw = text.get(ECHO_KEY)
    if raw is None:
        return None
    try:
        return ArtifactRecord.model_validate_json(raw)
    except (ValidationError, ValueError) as exc:
        log.warning("%s: ignoring unreadable 'echo' chunk: %s", source, _first_line(exc))
        return None


def read_png_metadata(data: bytes, source: str = "<bytes>") -> tuple[str | None, ArtifactRecord | None]:
    """(A1111 `parameters` text, echo `ArtifactRecord`) of a PNG; either is None when absent.

    Raises `StorageError` naming `source` when the bytes are not a complete, valid PNG.
    """
    image = decode_png(data, source)
    try:
        text = _png_text(image)
    finally:
        image.close()
    return text.get(PARAMETERS_KEY), record_from_png_text(text, source)
