"""PNG metadata: the AUTOMATIC1111 `parameters` infotext and the `echo` lineage chunk.

Every stored PNG carries two text chunks:

* `parameters`: the AUTOMATIC1111 infotext (the format A1111's `parse_generation_parameters` reads), so PNG-Info readers, Civitai and
  ComfyUI users see prompt, seed, sampler and model::

      warm fractal, neon
      Negative prompt: blurry
      Seed: 1, Size: 512x512, Model: echo-procedural, Echo artifact: ..., Version: echo-os ...

  Only what is true is written: `Steps`, `Sampler`, `CFG scale` and `Denoising strength` only for
  backends that run a sampler (`BackendCapabilities.sampler`); the procedural renderer has none.

  A1111 writes prompts as they are, and its reader strips every prompt line and takes the first line
  starting with "Negative prompt:" as the start of the negative prompt: a prompt line that starts
  with those words, indentation, trailing spaces and leading empty lines of a negative prompt do not
  survive A1111's own round trip. We write such a line wrapped in U+FEFF (zero width no-break space):
  A1111's reader keeps it as it is (U+FEFF is not whitespace to `str.strip`) and in the right prompt,
  CLIP tokenizers drop U+FEFF (ftfy), so the model input A1111 rebuilds is the same, and
  `parse_infotext` removes the wrapping, giving back the exact prompts.

* `echo`: the full `ArtifactRecord` as JSON (lineage: request, backend, parent, run).

`parse_infotext` reads the `parameters` text of PNGs from any A1111-compatible tool.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from pathlib import PurePath
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
LINE_GUARD = "\ufeff"  # wraps a prompt line A1111's reader would otherwise change (module docstring)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------
# Infotext


def _quote(value: Any, *, size: bool = False) -> str:
    """A1111's `quote`: JSON-quote values with a comma, colon or newline.

    Also quotes values A1111's reader would otherwise mangle (a leading '"', surrounding whitespace,
    a carriage return, an empty string); A1111's reader unquotes all of those correctly. A value
    that looks like `WxH` is quoted unless it is a size (`size=True`): readers split `WxH` values
    into `Key-1`/`Key-2`, and `parse_infotext` keeps a quoted one whole (a style named "16x9").
    """
    text = str(value)
    if (
        not text
        or any(ch in text for ch in ",:\n\r")
        or text[0] == '"'
        or text != text.strip()
        or (not size and RE_IMAGESIZE.match(text))
    ):
        return json.dumps(text, ensure_ascii=False)
    return text


def _number(value: float | int) -> str:
    """7.0 -> '7', 7.5 -> '7.5' (how A1111 infotexts usually show CFG scale / strength)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def backend_has_sampler(backend: str) -> bool:
    """Whether the named backend runs a sampler (steps, CFG scale...), from its declared capabilities.

    Unknown or unloadable backends count as having one (the A1111 default).
    """
    from echo_pipeline.errors import EchoError
    from echo_pipeline.render.backends.registry import backend_class

    try:
        capabilities = backend_class(backend).capabilities
    except (EchoError, ImportError, AttributeError):
        return True
    return bool(getattr(capabilities, "sampler", True))


def infotext_params(record: ArtifactRecord, *, sampler: bool | None = None) -> dict[str, str]:
    """The ordered `Key: value` pairs of the infotext's last line (values not yet quoted).

    `sampler`: whether the backend that made the image ran a sampler; None looks it up from the
    backend named in the record (`backend_has_sampler`). Without one, the sampler settings of the
    request (steps, sampler, CFG scale, denoising strength) are left out: nothing used them.
    """
    req = record.request
    backend = record.backend.backend or req.backend
    if sampler is None:
        sampler = backend_has_sampler(backend)
    params: dict[str, str] = {}
    if sampler:
        params |= {"Steps": str(req.steps), "Sampler": req.sampler, "CFG scale": _number(req.cfg_scale)}
    if record.info.get("seed_honoured") is not False:  # an API without seeds (OpenAI) must not claim one
        params["Seed"] = str(req.seed)
    params["Size"] = f"{req.width}x{req.height}"
    if record.backend.model_hash:
        params["Model hash"] = record.backend.model_hash
    model = req.model or record.backend.model
    if model:
        # Like A1111, a local checkpoint or folder is named by its file name; hub ids stay whole.
        params["Model"] = PurePath(model).stem if PurePath(model).is_absolute() else model
    if req.strength is not None:
        params["Denoising strength" if sampler else "Echo strength"] = _number(req.strength)
    if req.tiling:
        params["Tiling"] = "True"
    params["Echo artifact"] = record.artifact_id
    params["Echo project"] = record.project
    if req.style:
        params["Echo style"] = req.style
    parent = record.parent_id or req.parent_id
    if parent:
        params["Echo parent"] = parent
    params["Echo backend"] = backend
    params["Version"] = f"echo-os {record.code_version}"
    return params


def _guard(line: str) -> str:
    return f"{LINE_GUARD}{line}{LINE_GUARD}"


def _unguard(line: str) -> str:
    if len(line) >= 2 and line[0] == LINE_GUARD and line[-1] == LINE_GUARD:
        return line[1:-1]
    return line


def _needs_guard(line: str) -> bool:
    """Whether A1111's reader would change this prompt line (or ours would misread it)."""
    return (
        line != line.strip()
        or line.startswith(NEGATIVE_PREFIX)
        or line.startswith(LINE_GUARD)
        or line.endswith(LINE_GUARD)
    )


def _prompt_lines(text: str, *, negative: bool) -> list[str]:
    """The lines of a prompt as written: each line A1111 would change wrapped in `LINE_GUARD`.

    In the negative prompt, empty lines before the first non-empty one are guarded too: A1111's
    reader drops them.
    """
    out = []
    leading = negative
    for line in text.split("\n"):
        if _needs_guard(line) or (leading and line == ""):
            line = _guard(line)
        leading = leading and line == ""
        out.append(line)
    return out


def format_infotext(record: ArtifactRecord, *, sampler: bool | None = None) -> str:
    """The AUTOMATIC1111 `parameters` text for a record (like A1111's `create_infotext`).

    Prompt lines A1111's reader would change are wrapped in U+FEFF (see the module docstring), so
    `parse_infotext` gives back the exact prompt and negative prompt. `sampler`: see `infotext_params`.
    """
    req = record.request
    lines = _prompt_lines(req.prompt, negative=False)
    if req.negative_prompt:
        first, *rest = _prompt_lines(req.negative_prompt, negative=True)
        lines += [f"{NEGATIVE_PREFIX} {first}", *rest]
    params = infotext_params(record, sampler=sampler)
    lines.append(", ".join(f"{key}: {_quote(value, size=key == 'Size')}" for key, value in params.items()))
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
    least 3 `key: value` pairs, prompt lines are stripped and the first one starting with "Negative
    prompt:" starts the negative prompt, JSON-quoted values are unquoted, `WxH` values split into
    `Key-1` and `Key-2` (e.g. "Size-1"/"Size-2"). Unlike A1111: a prompt line wrapped in U+FEFF (how
    `format_infotext` protects lines A1111 would change) is unwrapped, a JSON-quoted `WxH` value is
    kept whole (how `format_infotext` writes one that is not a size), empty values are kept (as "")
    and webui-only defaults (Clip skip, Hires ..., RNG ...) are not filled in.
    """
    *lines, lastline = str(text).strip().split("\n")
    if len(RE_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    # A1111 joins a line to what came before with "\n" only once something non-empty came before;
    # that test looks at the lines as written (a guarded empty line counts as non-empty).
    raw = {"prompt": "", "negative": ""}
    parts = {"prompt": "", "negative": ""}
    section = "prompt"
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX):
            section = "negative"
            line = line[len(NEGATIVE_PREFIX):].strip()
        separator = "" if raw[section] == "" else "\n"
        raw[section] += separator + line
        parts[section] += separator + _unguard(line)

    result: dict[str, str] = {"Prompt": parts["prompt"], "Negative prompt": parts["negative"]}
    for key, value in RE_PARAM.findall(lastline):
        quoted = value[:1] == '"' and value[-1:] == '"'
        if quoted:
            value = _unquote(value)
        match = None if quoted else RE_IMAGESIZE.match(value)
        if match is not None:
            result[f"{key}-1"] = match.group(1)
            result[f"{key}-2"] = match.group(2)
        else:
            result[key] = value
    return result


# --------------------------------------------------------------------------------------------------
# PNG


def encode_png(image: Image.Image, record: ArtifactRecord, compress_level: int = PNG_COMPRESS_LEVEL,
               extra_text: dict[str, str] | None = None) -> bytes:
    """PNG bytes with the `parameters` (A1111 infotext) and `echo` (record JSON) text chunks, plus
    `extra_text` chunks kept as they came (ComfyUI's `prompt` and `workflow`, so ComfyUI can load the
    graph from the stored file); ours win over an extra chunk of the same name."""
    info = PngImagePlugin.PngInfo()
    # Like A1111: tEXt when the text is Latin-1, iTXt (UTF-8) otherwise.
    info.add_text(PARAMETERS_KEY, format_infotext(record))
    info.add_itxt(ECHO_KEY, record.model_dump_json())
    for key, value in (extra_text or {}).items():
        if key not in (PARAMETERS_KEY, ECHO_KEY) and key.isprintable() and 0 < len(key) < 80:
            info.add_itxt(key, str(value))
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
