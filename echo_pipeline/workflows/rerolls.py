"""Re-rolling near-duplicates in a project batch, before they are stored.

With about 500,000 pairs in a 1,000-image batch, a few pairs at pHash distance <= 10
(`PROJECT_DUPLICATE_DISTANCE`) are expected by chance; the blocking `unique_images` check would stop
every such batch. As generative-collection tools do (HashLips re-rolls a token whose DNA exists),
`DuplicateScreen` hashes each new image from the thumbnail the store will keep, compares it with the
project's images (read once per batch) and the batch's images stored before it, and answers a near-
duplicate with a `Reroll`: the same request with another seed (`reroll_seed`, derived from the
planned request and the attempt, so a re-run derives the same replacement). The stored replacement's
record names its planned request (`info[PLANNED_KEY]`, with `rerolls`); after `tries` re-rolls the
last image is stored anyway, is listed in `survivors`, and the check fails on it.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image

from echo_pipeline.artifacts.storage import ArtifactStore, make_thumbnail
from echo_pipeline.render.backends.base import RenderedImage
from echo_pipeline.render.prompt_engine import stable_seed
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.resonance.quality_assessor import (
    PROJECT_DUPLICATE_DISTANCE,
    hash_ints,
    phash_hex,
    popcount,
    project_hashes,
)
from echo_pipeline.workflows.batch_processor import PLANNED_KEY, Reroll

REROLL_TRIES = 3  # other seeds a near-duplicate gets before it is stored anyway (and the check fails)


def reroll_seed(planned: RenderRequest, attempt: int) -> int:
    """The seed of re-roll `attempt` (1, 2, ...) of `planned`: the same on every run and machine."""
    return stable_seed(f"reroll|{planned.request_id}|{attempt}")


def thumbnail_phash(image: Image.Image) -> str:
    """The pHash of `image` as the uniqueness check will compute it: from the stored thumbnail."""
    with Image.open(io.BytesIO(make_thumbnail(image))) as thumb:
        return phash_hex(thumb.convert("RGB"))


class DuplicateScreen:
    """The batch processor's `screen` for a project batch (see the module docstring)."""

    def __init__(self, store: ArtifactStore, project: str, *, tries: int = REROLL_TRIES,
                 max_distance: int = PROJECT_DUPLICATE_DISTANCE):
        self.store = store
        self.project = project
        self.tries = tries
        self.max_distance = max_distance
        self.project_hashes: dict[str, str] | None = None  # read at the first image: after the processor's reconcile
        self.hashes: dict[str, str] = {}  # artifact id -> pHash of each image let through
        self.rerolled = 0
        self.survivors: list[str] = []  # stored although still near-duplicates after every try
        self._planned: dict[str, tuple[RenderRequest, int]] = {}  # replacement id -> (planned request, attempt)
        self._ids: list[str] = []  # the project's images, then the batch's: ids and their hashes
        self._index: dict[str, int] = {}
        self._values = np.zeros(0, dtype=np.uint64)

    def _reference(self) -> None:
        if self.project_hashes is None:
            # An image whose files vanished is being made again: it is left out, not an error.
            self.project_hashes = project_hashes(self.store, self.project, unreadable={})
            self._ids = list(self.project_hashes)
            self._index = {a: i for i, a in enumerate(self._ids)}
            self._values = hash_ints(list(self.project_hashes.values()))

    def nearest(self, artifact_id: str, digest: str) -> tuple[str, int] | None:
        """The closest image (not `artifact_id` itself) within `max_distance` bits, if any."""
        self._reference()
        if not self._ids:
            return None
        distances = popcount(self._values ^ hash_ints([digest])[0]).astype(np.int32)
        own = self._index.get(artifact_id)  # an image made again: not a duplicate of its old self
        if own is not None:
            distances[own] = 1 << 10
        j = int(distances.argmin())
        return (self._ids[j], int(distances[j])) if distances[j] <= self.max_distance else None

    def __call__(self, rendered: RenderedImage) -> RenderedImage | Reroll:
        request = rendered.request
        planned, attempt = self._planned.get(request.request_id, (request, 0))
        digest = thumbnail_phash(rendered.image)
        if self.nearest(request.request_id, digest) is not None:
            if attempt < self.tries:
                replacement = planned.model_copy(update={"seed": reroll_seed(planned, attempt + 1)})
                self._planned[replacement.request_id] = (planned, attempt + 1)
                self.rerolled += 1
                return Reroll(replacement)
            self.survivors.append(request.request_id)
        self.hashes[request.request_id] = digest
        own = self._index.get(request.request_id)
        if own is not None:
            self._values[own] = hash_ints([digest])[0]
        else:
            self._index[request.request_id] = len(self._ids)
            self._ids.append(request.request_id)
            self._values = np.append(self._values, hash_ints([digest]))
        if attempt:
            rendered = replace(rendered, info={**rendered.info, PLANNED_KEY: planned.request_id, "rerolls": attempt})
        return rendered
