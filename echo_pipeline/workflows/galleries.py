"""Galleries from what the pipeline knows: the one place that gathers a project's gallery input
(stored scores, else technical scores of the thumbnails; the style memory's accepted ids) and builds
one project's gallery or the gallery of every project. The `gallery` asset, `echo-os gallery` and
the API's `GET /api/gallery` all come here."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from echo_pipeline.artifacts.gallery import (
    GalleryFilter,
    GalleryResult,
    GallerySource,
    build_collection_gallery,
    build_gallery,
    gallery_entries,
    parse_filter,
    select_entries,
)
from echo_pipeline.artifacts.storage import ArtifactStore

TECHNICAL_NOTE = ("No score table yet: 'best' is ranked by the technical score computed from the thumbnails. "
                  "Score the project (quality_scores) for full rankings.")


def gallery_source(store: ArtifactStore, slug: str, title: str | None = None, *,
                   technical_fallback: bool = True) -> GallerySource:
    """The project's gallery input. Without a score table, `technical_fallback` ranks the images by
    the technical score of their thumbnails (computed, never written) and says so in the note."""
    from echo_pipeline.resonance.memory_system import load_memory, load_scores

    scores: pd.DataFrame | None = load_scores(store, slug)
    note = None
    if scores is None or not len(scores):
        scores, note = (_technical_scores(store, slug) if technical_fallback else None), None
        if scores is not None:
            note = TECHNICAL_NOTE
    memory = load_memory(store, slug)
    accepted = set(memory.learned_ids) if memory is not None else None
    return GallerySource(project=slug, title=title, scores=scores, accepted=accepted, scores_note=note)


def _technical_scores(store: ArtifactStore, slug: str) -> pd.DataFrame | None:
    from echo_pipeline.artifacts.gallery import load_gallery_thumbnail
    from echo_pipeline.resonance.quality_assessor import technical_scores

    ids = [str(a) for a in store.catalog(slug)["artifact_id"]]
    if not ids:
        return None
    rows = []
    for artifact_id in ids:
        image, _problem = load_gallery_thumbnail(store, slug, artifact_id)  # the gallery reports problems
        components = technical_scores(image)
        rows.append({"artifact_id": artifact_id, **components, "total": components["technical"]})
    return pd.DataFrame(rows)


def project_gallery(store: ArtifactStore, slug: str, title: str | None = None, *,
                    filter: str | GalleryFilter = "all", out_dir: str | os.PathLike[str] | None = None,
                    check_hashes: bool = False, technical_fallback: bool = True) -> GalleryResult:
    """Write one project's gallery (its `gallery/` folder, or `out_dir`)."""
    flt = parse_filter(filter)  # bad input fails before anything is read
    source = gallery_source(store, slug, title, technical_fallback=technical_fallback)
    return build_gallery(store, slug, title=title, scores=source.scores, accepted=source.accepted, filter=flt,
                         out_dir=out_dir, scores_note=source.scores_note, check_hashes=check_hashes)


def collection_gallery(store: ArtifactStore, projects: Sequence[tuple[str, str]], *,
                       filter: str | GalleryFilter = "all", out_dir: str | os.PathLike[str] | None = None,
                       check_hashes: bool = False) -> GalleryResult:
    """Write the gallery of several projects, `(slug, display name)` pairs (the store's top-level
    `gallery/`, or `out_dir`)."""
    flt = parse_filter(filter)
    sources = [gallery_source(store, slug, title) for slug, title in projects]
    return build_collection_gallery(store, sources, filter=flt, out_dir=out_dir, check_hashes=check_hashes)


def gallery_listing(store: ArtifactStore, projects: Sequence[tuple[str, str]], *,
                    filter: str | GalleryFilter = "all") -> list[dict[str, Any]]:
    """The entries a gallery filter selects over the projects, without file URLs (for the API)."""
    flt = parse_filter(filter)
    entries: list[dict[str, Any]] = []
    for slug, title in projects:
        entries += gallery_entries(store, gallery_source(store, slug, title), base=None)
    if len(projects) > 1:
        entries.sort(key=lambda e: e.get("t") or 0.0, reverse=True)
    return select_entries(entries, flt)


__all__ = ["TECHNICAL_NOTE", "collection_gallery", "gallery_listing", "gallery_source", "project_gallery"]
