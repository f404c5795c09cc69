"""Choosing a project's NFT collection and exporting it (`echo-os export nft`).

`select_tokens` picks the tokens from the store's catalog, the score table and the style memory;
`export_nft` resolves the project, checks every option before any work, selects and writes the
collection with `artifacts/nft.py` (which says what the files hold).

Token order: total score descending, then creation time, then artifact id: deterministic, and
`limit` keeps the best. Candidates are walked in that order and each is skipped, with its reason,
when:

* `low_score`: its total is below `min_score` (default 50, the style memory's acceptance threshold;
  0 turns the threshold off and also admits images not scored yet); `not_scored`: it has no total;
* `not_accepted` (with `only_accepted`): the style memory did not accept it. Accepted is the memory's
  own definition (`resonance/memory_system.py`): total >= its `accept_threshold` when it learned, the
  ids it keeps in `learned_ids`; an image scored since the memory last learned is not accepted yet;
* `near_duplicate`: its perceptual hash is within `PROJECT_DUPLICATE_DISTANCE` (10 of 64 bits, the
  project's uniqueness threshold, see `resonance/quality_assessor.py`) of a token already chosen,
  which scored at least as high: of a near-duplicate pair the higher-scoring one is kept. pHashes come
  from the score table, else from the thumbnails (`project_hashes`). `allow_duplicates` keeps them;
* `identical`: its pixels are those of a token already chosen (the same dna); always, because a
  token's dna must be unique;
* `damaged`: its stored PNG is missing or does not decode (`echo-os artifacts verify` says more).

The walk stops at `limit` tokens; the candidates after it are counted, not examined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from echo_pipeline.artifacts.nft import (
    MAX_TOKENS,
    SCORE_TRAITS,
    NftCollection,
    TokenSource,
    check_base_uri,
    check_out_dir,
    check_start,
    image_facts,
    write_collection,
)
from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.errors import InvalidInputError, StorageError
from echo_pipeline.resonance.memory_system import load_memory, load_scores
from echo_pipeline.resonance.quality_assessor import (
    PROJECT_DUPLICATE_DISTANCE,
    project_hashes,
    project_near_duplicates,
)
from echo_pipeline.workflows.creative_engine import CreativeEngine

DEFAULT_MIN_SCORE = 50.0  # = learn_style's default accept_threshold: what the style memory accepts
TOKEN_ORDER = "total score descending, then creation time, then artifact id"
SCORE_KEYS = tuple(column for column, _ in SCORE_TRAITS)  # the score columns a token's metadata shows
SKIP_REASONS = ("low_score", "not_scored", "not_accepted", "near_duplicate", "identical", "damaged")


@dataclass(frozen=True)
class SkippedImage:
    """A project image left out of the collection, and why (`reason` is one of SKIP_REASONS)."""

    artifact_id: str
    reason: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"artifact_id": self.artifact_id, "reason": self.reason, "detail": self.detail}


@dataclass
class NftSelection:
    """The tokens `select_tokens` chose, in token order, and what it left out."""

    project: str
    tokens: list[TokenSource]
    skipped: list[SkippedImage]
    images: int  # in the project
    not_examined: int = 0  # candidates after the limit was reached
    filters: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Skipped images per reason, in SKIP_REASONS order (reasons with none left out)."""
        out = {r: sum(1 for s in self.skipped if s.reason == r) for r in SKIP_REASONS}
        return {r: n for r, n in out.items() if n}


@dataclass
class NftExport:
    """What `export_nft` did."""

    project: str
    collection_name: str
    collection: NftCollection
    selection: NftSelection

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project, "collection": self.collection_name, "out": self.collection.out_dir,
            "token_count": len(self.collection.tokens), "start": self.collection.start,
            "provenance_hash": self.collection.provenance_hash, "base_uri": self.collection.base_uri,
            "base_uri_is_placeholder": self.collection.placeholder, "order": TOKEN_ORDER,
            "metadata": self.collection.metadata_path, "provenance": self.collection.provenance_path,
            "images_in_project": self.selection.images, "filters": self.selection.filters,
            "skipped_counts": self.selection.counts(), "not_examined": self.selection.not_examined,
            "skipped": [s.to_dict() for s in self.selection.skipped],
            "tokens": self.collection.tokens,
        }


def check_limit(limit: int | None) -> int | None:
    if limit is not None and not 1 <= limit <= MAX_TOKENS:
        raise InvalidInputError(f"--limit must be between 1 and {MAX_TOKENS}, not {limit}")
    return limit


def check_min_score(min_score: float) -> float:
    if not (isinstance(min_score, (int, float)) and math.isfinite(min_score) and 0 <= min_score <= 100):
        raise InvalidInputError(f"--min-score must be between 0 and 100, not {min_score}")
    return float(min_score)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def select_tokens(
    store: ArtifactStore,
    project: str,
    *,
    min_score: float = DEFAULT_MIN_SCORE,
    only_accepted: bool = False,
    allow_duplicates: bool = False,
    limit: int | None = None,
    duplicate_distance: int = PROJECT_DUPLICATE_DISTANCE,
) -> NftSelection:
    """The project's tokens in token order and the images skipped (module docstring)."""
    min_score = check_min_score(min_score)
    limit = check_limit(limit)
    catalog = store.catalog(project)
    if catalog.empty:
        raise InvalidInputError(f"project {project!r} has no images yet; render some first: "
                                f"echo-os batch --project {project}")
    scores = load_scores(store, project).drop_duplicates("artifact_id", keep="last").set_index("artifact_id")
    memory = load_memory(store, project) if only_accepted else None
    if only_accepted and memory is None:
        raise InvalidInputError(f"project {project!r} has no style memory yet, so it has no accepted images; "
                                "run a batch (its style_memory step) first, or leave out --only-accepted")
    accepted = set(memory.learned_ids) if memory is not None else set()
    filters = {"min_score": min_score, "only_accepted": only_accepted, "allow_duplicates": allow_duplicates,
               "duplicate_distance": duplicate_distance, "limit": limit}
    if memory is not None:
        filters["accept_threshold"] = memory.accept_threshold

    values_of: dict[str, dict[str, float]] = {}
    for found in scores.reset_index().to_dict(orient="records"):
        numbers = {c: _finite(found.get(c)) for c in SCORE_KEYS}
        values_of[str(found["artifact_id"])] = {c: v for c, v in numbers.items() if v is not None}
    rows = [(str(row.artifact_id), row, values_of.get(str(row.artifact_id), {}))
            for row in catalog.itertuples(index=False)]
    # Token order: best total first (unscored last), then oldest (the catalog is sorted by creation
    # time, so its position says that), then id.
    position = {artifact_id: i for i, (artifact_id, _, _) in enumerate(rows)}
    rows.sort(key=lambda r: (-r[2].get("total", -math.inf), position[r[0]], r[0]))

    skipped: list[SkippedImage] = []
    candidates = []
    for artifact_id, row, values in rows:
        total = values.get("total")
        if total is None and min_score > 0:
            skipped.append(SkippedImage(artifact_id, "not_scored", "no total score yet (run a batch to score it; "
                                        "--min-score 0 admits unscored images)"))
        elif total is not None and total < min_score:
            skipped.append(SkippedImage(artifact_id, "low_score", f"total {total:.1f} is below --min-score "
                                        f"{min_score:g}"))
        elif memory is not None and artifact_id not in accepted:
            threshold = memory.accept_threshold
            why = (f"scored {total:.1f} but not learned by the style memory yet (run a batch)"
                   if total is not None and total >= threshold else
                   f"not accepted by the style memory (it accepts a total >= {threshold:g})")
            skipped.append(SkippedImage(artifact_id, "not_accepted", why))
        else:
            candidates.append((artifact_id, row, values))

    neighbours: dict[str, list[tuple[str, int]]] = {}
    unreadable: dict[str, str] = {}  # no thumbnail and no PNG to hash: skipped as damaged below
    if not allow_duplicates and len(candidates) > 1:
        wanted = {c[0] for c in candidates}
        others = set(catalog["artifact_id"].astype(str)) - wanted
        hashes = project_hashes(store, project, exclude=others, unreadable=unreadable)
        for a, b, distance in project_near_duplicates(hashes, {}, max_distance=duplicate_distance):
            neighbours.setdefault(a, []).append((b, distance))
            neighbours.setdefault(b, []).append((a, distance))

    tokens: list[TokenSource] = []
    chosen: dict[str, int] = {}  # artifact id -> position in `tokens`
    dnas: dict[str, str] = {}
    not_examined = 0
    for index, (artifact_id, row, values) in enumerate(candidates):
        if limit is not None and len(tokens) >= limit:
            not_examined = len(candidates) - index
            break
        if artifact_id in unreadable:
            skipped.append(SkippedImage(artifact_id, "damaged", unreadable[artifact_id]))
            continue
        near = sorted((d, b) for b, d in neighbours.get(artifact_id, []) if b in chosen)
        if near:
            distance, other = near[0]
            skipped.append(SkippedImage(artifact_id, "near_duplicate", f"pHash distance {distance} (<= "
                                        f"{duplicate_distance} of 64 bits) to {other}, chosen first with a "
                                        "higher or equal score (--allow-duplicates keeps both)"))
            continue
        try:
            record = ArtifactRecord.model_validate_json(str(row.record_json))
            facts = image_facts(store.read_bytes(project, artifact_id), store.image_path(project, artifact_id))
        except StorageError as exc:
            skipped.append(SkippedImage(artifact_id, "damaged", str(exc)))
            continue
        except ValueError as exc:  # a catalog row whose record does not parse
            skipped.append(SkippedImage(artifact_id, "damaged", f"its catalog record is corrupted: "
                                        f"{str(exc).splitlines()[0]}"))
            continue
        if facts.dna in dnas:
            skipped.append(SkippedImage(artifact_id, "identical", f"the same pixels as {dnas[facts.dna]} (the same "
                                        "dna), chosen first"))
            continue
        dnas[facts.dna] = artifact_id
        chosen[artifact_id] = len(tokens)
        tokens.append(TokenSource(record=record, facts=facts, scores=values))
    return NftSelection(project=project, tokens=tokens, skipped=skipped, images=len(catalog),
                        not_examined=not_examined, filters=filters)


def _nothing_left(selection: NftSelection) -> InvalidInputError:
    counts = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in selection.counts().items())
    hint = []
    if selection.counts().get("low_score") or selection.counts().get("not_scored"):
        hint.append("lower --min-score")
    if selection.counts().get("near_duplicate"):
        hint.append("pass --allow-duplicates")
    if selection.counts().get("not_accepted"):
        hint.append("leave out --only-accepted")
    more = f"; {' or '.join(hint)}" if hint else ""
    return InvalidInputError(f"nothing to export from project {selection.project!r}: all {selection.images} "
                             f"image(s) were skipped ({counts}){more}")


def export_nft(
    engine: CreativeEngine,
    project: str,
    out_dir: str,
    *,
    base_uri: str | None = None,
    limit: int | None = None,
    start: int = 1,
    only_accepted: bool = False,
    min_score: float | None = None,
    allow_duplicates: bool = False,
    overwrite: bool = False,
    name: str | None = None,
    description: str | None = None,
) -> NftExport:
    """Export the project `project` names (name, slug or unique prefix) as an NFT collection in
    `out_dir`. The store is only read. Every option is checked before any work; nothing passing the
    filters is a one-line `InvalidInputError` (and nothing is written). `min_score` None means
    `DEFAULT_MIN_SCORE`."""
    base_uri = check_base_uri(base_uri)
    check_start(start)
    check_limit(limit)
    min_score = check_min_score(DEFAULT_MIN_SCORE if min_score is None else min_score)
    check_out_dir(out_dir, overwrite=overwrite)
    store = ArtifactStore(engine.settings.artifact_root, read_only=True)
    ref = engine.projects.resolve_ref(project, stored=store.projects)
    collection_name = name if name is not None else ref.name
    if description is None:
        description = f"{ref.name}: {ref.spec.intent}" if ref.spec is not None else ref.name
    selection = select_tokens(store, ref.slug, min_score=min_score, only_accepted=only_accepted,
                              allow_duplicates=allow_duplicates, limit=limit)
    if not selection.tokens:
        raise _nothing_left(selection)
    provenance_extra = {"project": ref.slug, "selection": {
        "filters": selection.filters, "images_in_project": selection.images,
        "not_examined": selection.not_examined, "skipped": [s.to_dict() for s in selection.skipped]}}
    collection = write_collection(store, selection.tokens, out_dir, collection=collection_name,
                                  description=description, base_uri=base_uri, start=start, overwrite=overwrite,
                                  order=TOKEN_ORDER, provenance_extra=provenance_extra)
    return NftExport(project=ref.slug, collection_name=collection_name, collection=collection, selection=selection)
