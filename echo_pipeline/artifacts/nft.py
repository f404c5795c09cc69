"""NFT collection files: ERC-721 / OpenSea token metadata, a HashLips-style folder, a provenance hash.

`write_collection` writes the tokens the caller chose (`workflows/nft_export.py` picks them from
scores, near-duplicates and the style memory; this module takes their scores as plain numbers and
imports nothing from `resonance`), in the order given, numbered from `start` (1, as HashLips and
most ERC-721 contracts count; 0 for contracts whose first token is 0)::

    DIR/images/<n>.png      the stored PNG, byte for byte: its A1111 `parameters` and `echo` lineage
                            chunks stay, and anyone can recompute its sha256 from the store
    DIR/metadata/<n>.json   token n's metadata
    DIR/_metadata.json      every token's metadata as one JSON array, in token order (HashLips' file)
    DIR/provenance.json     the provenance hash, how it is computed, the token order and count, and
                            each token's file sha256 and dna

images/ and metadata/ hold nothing else, so each can be uploaded as it is (the token URI is then
`<metadata base URI><n>.json`).

Token metadata (EIP-721's name/description/image, OpenSea's attributes and background_color, and
HashLips' edition/dna/date/compiler): `name` "<collection> #<n>", `description`, `image`
`<base_uri><n>.png`, `edition` n, `dna`, `date` (when the artifact was made, ms since the epoch),
`attributes` (`[{"trait_type", "value"}]`: style, backend, model, and the palette, motif, variant and
effects the procedural renderer records in the artifact's info, the seed (as text); every score as
`display_type` "number" with `max_value` 100), `background_color` (the mean colour of the image's
darkest tenth of pixels, 6 hex digits without '#', so a marketplace's frame blends with it) and
`compiler`.

* **dna** = sha256 of the decoded pixels (mode, size and raw bytes), not of the file: two files that
  differ only in their metadata chunks have the same dna, so unique dnas mean no two tokens show the
  same picture. `write_collection` refuses a repeated one.
* **Image URIs**: marketplaces resolve `image` as an absolute URI (ipfs://, ar://, https://); a path
  relative to the metadata file is not resolved by them. The default base URI is HashLips'
  placeholder `ipfs://NewUriToReplace/`: upload images/, then export again with
  `--base-uri ipfs://<CID>/` (the images and the provenance hash stay the same, only the metadata
  changes). `provenance.json` says when the placeholder is in use.
* **Provenance** (PROTOCOLS.md; the scheme the Bored Ape Yacht Club published): the sha256 of each
  image file as 64 lowercase hex digits, concatenated in token order into one string, and the sha256
  of that string's ASCII bytes. It covers image bytes and order, not file names, so it can be
  published before a reveal and checked by anyone holding the images.

Nothing is left half-written: the collection is written into a temporary folder beside DIR
(`<DIR>.tmp-<uuid>`, every file through `write_atomic`) and renamed to DIR when complete, so a crash
leaves at most that temporary folder. An empty DIR is used; a non-empty one is replaced only with
`overwrite=True` and only when it is an earlier export (its `provenance.json` says so), so a mistyped
`--out` never deletes someone's folder. DIR is a local folder (upload it wherever the tokens live).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any

import numpy as np

from echo_pipeline import __version__
from echo_pipeline.artifacts.metadata import decode_png, sha256_hex
from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.atomic import TMP_MARKER, write_atomic
from echo_pipeline.errors import InvalidInputError, StorageError

DEFAULT_BASE_URI = "ipfs://NewUriToReplace/"  # HashLips' placeholder: replaced by the real CID later
BASE_URI_SCHEMES = ("ipfs", "ar", "https", "http")
MAX_TOKENS = 10_000
STARTS = (0, 1)
MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000
EXPORT_FORMAT = "echo-os-nft/1"  # provenance.json's `format`: how an earlier export is recognised
PROVENANCE_ALGORITHM = ("sha256 of the concatenation, in token order, of each image file's sha256 as 64 "
                        "lowercase hex digits (ASCII)")
SCORE_MAX = 100
# Score columns (0-100) shown as numeric traits, in this order; missing or NaN ones are left out.
SCORE_TRAITS: tuple[tuple[str, str], ...] = (
    ("total", "Score"), ("technical", "Technical"), ("style_consistency", "Style consistency"),
    ("uniqueness", "Uniqueness"), ("alignment", "Prompt alignment"), ("aesthetic", "Aesthetic"),
)
DARK_SHARE = 0.10  # background_color: the mean of this share of the darkest pixels...
BACKGROUND_SIDE = 128  # ...of a copy at most this many pixels on a side
_BASE_URI = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>[^\s?#]+)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

__all__ = [
    "DEFAULT_BASE_URI", "MAX_TOKENS", "SCORE_TRAITS", "ImageFacts", "NftCollection", "TokenSource",
    "check_base_uri", "check_out_dir", "check_start", "image_facts", "is_export", "provenance_hash",
    "token_metadata", "write_collection",
]


@dataclass(frozen=True)
class ImageFacts:
    """What a token needs from its PNG: the file's sha256, the pixels' dna, a background colour."""

    sha256: str
    dna: str
    background_color: str
    width: int
    height: int


@dataclass(frozen=True)
class TokenSource:
    """One token to write: the stored artifact, the facts of its PNG, its scores (0-100 by column)."""

    record: ArtifactRecord
    facts: ImageFacts
    scores: Mapping[str, float] = field(default_factory=dict)


@dataclass
class NftCollection:
    """What `write_collection` wrote."""

    out_dir: str
    provenance_hash: str
    base_uri: str
    start: int
    tokens: list[dict[str, Any]]  # provenance.json's per-token entries, in token order

    @property
    def placeholder(self) -> bool:
        return self.base_uri == DEFAULT_BASE_URI

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.out_dir, "_metadata.json")

    @property
    def provenance_path(self) -> str:
        return os.path.join(self.out_dir, "provenance.json")


# --------------------------------------------------------------------------------------------------
# Checks


def check_base_uri(uri: str | None) -> str:
    """The base URI token images live under: `ipfs://CID/`, `ar://ID/`, `https://host/path/`
    (or http), ending with '/'; None gives the placeholder. Anything else is a one-line error."""
    if uri is None:
        return DEFAULT_BASE_URI
    text = str(uri).strip()
    match = _BASE_URI.match(text)
    if not match or _CONTROL.search(text):
        raise InvalidInputError(f"--base-uri {uri!r} is not a URI: give one such as ipfs://<CID>/ or "
                                "https://example.com/nft/images/")
    if match["scheme"] not in BASE_URI_SCHEMES:
        raise InvalidInputError(f"--base-uri {uri!r} uses {match['scheme']}://; marketplaces resolve "
                                f"{', '.join(s + '://' for s in BASE_URI_SCHEMES)} (e.g. ipfs://<CID>/)")
    if not text.endswith("/"):
        raise InvalidInputError(f"--base-uri {uri!r} must end with '/' (the token's file name is appended: "
                                f"{text}/1.png)")
    if match["rest"].startswith("/"):
        raise InvalidInputError(f"--base-uri {uri!r} has no CID or host after {match['scheme']}://")
    return text


def check_start(start: int) -> int:
    if start not in STARTS:
        raise InvalidInputError(f"--start must be 0 or 1 (the first token id), not {start}")
    return start


def _check_text(label: str, value: str, limit: int) -> str:
    text = " ".join(str(value).split())
    if not text:
        raise InvalidInputError(f"the collection {label} is empty")
    if len(text) > limit:
        raise InvalidInputError(f"the collection {label} is {len(text)} characters long; the limit is {limit}")
    if _CONTROL.search(text):
        raise InvalidInputError(f"the collection {label} contains control characters")
    return text


def is_export(folder: Path) -> bool:
    """Whether `folder` holds an earlier export (a `provenance.json` written by `write_collection`)."""
    try:
        payload = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and payload.get("format") == EXPORT_FORMAT


def check_out_dir(out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """The absolute local folder to export into, after checking it can be used (module docstring)."""
    text = os.fspath(out_dir).strip() if isinstance(out_dir, (str, os.PathLike)) else ""
    if not text:
        raise InvalidInputError("--out is empty: give the folder to export into")
    if "://" in text:
        raise InvalidInputError(f"--out {text!r} must be a local folder (upload it to IPFS or S3 afterwards)")
    path = Path(text).expanduser().resolve()  # a symlinked folder: its target is what gets replaced
    if TMP_MARKER in path.name:
        raise InvalidInputError(f"--out {text!r}: '{TMP_MARKER}' is reserved for temporary folders")
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"--out {text!r} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise InvalidInputError(f"--out {text!r} is not empty: give a new or empty folder, or --overwrite "
                                    "to replace an earlier export")
        if not is_export(path):
            raise InvalidInputError(f"--out {text!r} is not empty and not an earlier NFT export (no echo-os "
                                    "provenance.json); refusing to replace it")
    return path


# --------------------------------------------------------------------------------------------------
# One token


def image_facts(data: bytes, source: str = "<bytes>") -> ImageFacts:
    """sha256 of the PNG bytes, dna of its pixels and its background colour; `StorageError` when the
    bytes are not a readable PNG."""
    image = decode_png(data, source)
    try:
        if image.mode not in ("RGB", "RGBA"):
            converted = image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB")
        else:
            converted = image
        dna = hashlib.sha256(f"{converted.mode} {converted.width}x{converted.height}\n".encode("ascii")
                             + converted.tobytes()).hexdigest()
        small = converted.convert("RGB")
        small.thumbnail((BACKGROUND_SIDE, BACKGROUND_SIDE))  # a colour, not detail: a small copy will do
        width, height = image.size
    finally:
        image.close()
    flat = np.asarray(small, dtype=np.float64).reshape(-1, 3)
    luma = flat @ np.array([0.299, 0.587, 0.114])
    darkest = np.argsort(luma, kind="stable")[: max(1, int(len(luma) * DARK_SHARE))]
    r, g, b = np.clip(np.rint(flat[darkest].mean(axis=0)), 0, 255).astype(int)
    return ImageFacts(sha256=sha256_hex(data), dna=dna, background_color=f"{r:02x}{g:02x}{b:02x}",
                      width=width, height=height)


def _attributes(source: TokenSource) -> list[dict[str, Any]]:
    record = source.record
    info = record.info if isinstance(record.info, dict) else {}
    traits: list[tuple[str, Any]] = [
        ("Style", record.request.style),
        ("Backend", record.backend.backend or record.request.backend),
        ("Model", record.request.model or record.backend.model),
        ("Palette", info.get("palette")),
        ("Motif", info.get("motif")),
        ("Motif variant", info.get("kind")),
        ("Effects", ", ".join(str(e) for e in info["effects"]) if isinstance(info.get("effects"), list) else None),
    ]
    out: list[dict[str, Any]] = [{"trait_type": name, "value": str(value)}
                                 for name, value in traits if isinstance(value, str) and value.strip()]
    # Text, so marketplaces list it as a property rather than rank tokens by it.
    out.append({"trait_type": "Seed", "value": str(record.request.seed)})
    for column, name in SCORE_TRAITS:
        value = source.scores.get(column)
        if value is not None and math.isfinite(float(value)):
            out.append({"trait_type": name, "value": round(min(max(float(value), 0.0), SCORE_MAX), 2),
                        "display_type": "number", "max_value": SCORE_MAX})
    return out


def token_metadata(token_id: int, source: TokenSource, *, collection: str, description: str,
                   base_uri: str) -> dict[str, Any]:
    """Token `token_id`'s metadata (see the module docstring), keys in a fixed order."""
    created = source.record.created
    if created.tzinfo is None:  # the store reads naive times as UTC
        created = created.replace(tzinfo=timezone.utc)
    return {
        "name": f"{collection} #{token_id}",
        "description": description,
        "image": f"{base_uri}{token_id}.png",
        "edition": token_id,
        "dna": source.facts.dna,
        "date": int(created.timestamp() * 1000),
        "attributes": _attributes(source),
        "background_color": source.facts.background_color,
        "compiler": f"echo-os {__version__}",
    }


def provenance_hash(sha256_digests: Sequence[str]) -> str:
    """The collection's provenance hash from its images' sha256 hex digests in token order."""
    return hashlib.sha256("".join(d.lower() for d in sha256_digests).encode("ascii")).hexdigest()


# --------------------------------------------------------------------------------------------------
# The collection


def _dump(payload: Any) -> str:
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


def write_collection(
    store: ArtifactStore,
    tokens: Sequence[TokenSource],
    out_dir: str | os.PathLike[str],
    *,
    collection: str,
    description: str,
    base_uri: str | None = None,
    start: int = 1,
    overwrite: bool = False,
    order: str,
    provenance_extra: Mapping[str, Any] | None = None,
) -> NftCollection:
    """Write the collection of `tokens` (in token order) into `out_dir` (module docstring).

    `order` says how the tokens were ordered (recorded in provenance.json), `provenance_extra` adds
    the caller's fields there (e.g. the selection's filters and what it skipped). Each image is read
    from the store again and must still have the sha256 in its `ImageFacts` (`StorageError` if not).
    """
    tokens = list(tokens)
    base_uri = check_base_uri(base_uri)
    start = check_start(start)
    collection = _check_text("name", collection, MAX_NAME_CHARS)
    description = _check_text("description", description, MAX_DESCRIPTION_CHARS)
    if not tokens:
        raise InvalidInputError("no tokens to export")
    if len(tokens) > MAX_TOKENS:
        raise InvalidInputError(f"{len(tokens)} tokens; a collection holds at most {MAX_TOKENS}")
    seen: dict[str, str] = {}
    for token in tokens:
        other = seen.setdefault(token.facts.dna, token.record.artifact_id)
        if other != token.record.artifact_id:
            raise InvalidInputError(f"artifacts {other} and {token.record.artifact_id} have identical pixels "
                                    "(the same dna); a collection cannot hold both")
    target = check_out_dir(out_dir, overwrite=overwrite)
    staging = Path(f"{target}{TMP_MARKER}{uuid.uuid4().hex}")
    try:
        entries, documents = _write_files(store, tokens, staging, collection=collection, description=description,
                                          base_uri=base_uri, start=start)
        digest = provenance_hash([e["sha256"] for e in entries])
        provenance = {
            "format": EXPORT_FORMAT, "standard": "ERC-721 metadata (EIP-721, OpenSea metadata standards)",
            "collection": collection, "provenance_hash": digest, "algorithm": PROVENANCE_ALGORITHM,
            "token_count": len(entries), "start": start, "order": order, "base_uri": base_uri,
            "base_uri_is_placeholder": base_uri == DEFAULT_BASE_URI, **dict(provenance_extra or {}),
            "tokens": entries,
        }
        write_atomic(staging / "_metadata.json", _dump(documents))
        write_atomic(staging / "provenance.json", _dump(provenance))
        _move_into_place(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"cannot write the collection into {target}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return NftCollection(out_dir=str(target), provenance_hash=digest, base_uri=base_uri, start=start,
                         tokens=entries)


def _write_files(store: ArtifactStore, tokens: list[TokenSource], staging: Path, *, collection: str,
                 description: str, base_uri: str, start: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Copy the images and write the per-token files into `staging`; (provenance entries, metadata)."""
    (staging / "images").mkdir(parents=True)
    (staging / "metadata").mkdir()
    entries: list[dict[str, Any]] = []
    documents: list[dict[str, Any]] = []
    for token_id, token in enumerate(tokens, start=start):
        record = token.record
        data = store.read_bytes(record.project, record.artifact_id)
        if sha256_hex(data) != token.facts.sha256:
            raise StorageError(f"image {store.image_path(record.project, record.artifact_id)} changed while "
                               "exporting; export again")
        metadata = token_metadata(token_id, token, collection=collection, description=description,
                                  base_uri=base_uri)
        write_atomic(staging / "images" / f"{token_id}.png", data)
        write_atomic(staging / "metadata" / f"{token_id}.json", _dump(metadata))
        documents.append(metadata)
        entries.append({"token_id": token_id, "image": f"images/{token_id}.png",
                        "metadata": f"metadata/{token_id}.json", "sha256": token.facts.sha256,
                        "dna": token.facts.dna, "artifact_id": record.artifact_id,
                        "total": _shown_total(token)})
    return entries, documents


def _shown_total(token: TokenSource) -> float | None:
    """The token's total score as its metadata shows it (rounded), None when it has none."""
    value = token.scores.get("total")
    return round(float(value), 2) if value is not None and math.isfinite(float(value)) else None


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the finished `staging` folder to `target`; an earlier export there is replaced."""
    if target.is_dir() and any(target.iterdir()):
        old = Path(f"{target}{TMP_MARKER}old-{uuid.uuid4().hex}")
        target.rename(old)
        try:
            staging.rename(target)
        except BaseException:
            old.rename(target)  # put the earlier export back
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    if target.is_dir():
        target.rmdir()  # empty: renaming onto it is not portable
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
