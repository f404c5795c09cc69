"""Batch processor: render a prompt set into the artifact store, idempotently and resumably.

Orchestration, so it lives in workflows/, above both render/ (backends) and artifacts/ (the store).

One request -> one artifact whose id is the request id, so a request that is already stored is
skipped (and reported as such). Images are written one at a time as the backend streams them and
the catalog is appended every few images, so a crash loses at most the images in flight; the
store's `reconcile` adopts PNGs that were written but not yet catalogued before the next batch.
After the batch, the project's small catalog parts are merged (`ArtifactStore.compact_catalog`), so
reads of a big project stay fast.

Media requests (`RenderRequest.media`: videos, 3D models, interactive pieces) come after the plain
ones: their source requests are found in the store or rendered first (stored as artifacts of their
own), then `workflows/media_production.py` makes the media's files, written before its PNG (the
poster, preview or snapshot), so a stored PNG always means its files are complete. Textures get
their derived maps the same way.

Re-rolls: a `screen` given to `run` sees each plain image before it is stored and may answer
`Reroll(request)`: the image is dropped and `request` (the same one with another seed) is rendered
in its place after the others, until the screen lets an image through. The stored replacement's
record names the planned request in `info[PLANNED_KEY]`, and a planned request whose stand-in is
stored counts as stored (`_split`, `stand_ins`), so a re-run renders neither again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from PIL import Image

from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.artifacts.storage import ArtifactStore, compact_at_parts
from echo_pipeline.errors import NotFoundError, StorageError
from echo_pipeline.render.backends.base import ImageBackend, ParentImage, RenderedImage
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.workflows.media_production import MediaProducer
from echo_pipeline.workflows.multi_modal import sources_of

log = logging.getLogger(__name__)

CATALOG_FLUSH_EVERY = 16  # images per catalog part: fewer small files, little loss on a crash
PLANNED_KEY = "planned_request_id"  # record info: the planned request a re-rolled image stands for

# (done, total, record just stored); `done` may be fractional between stored images (record None).
ProgressCallback = Callable[[float, int, ArtifactRecord | None], None]


@dataclass
class Reroll:
    """A screen's answer: do not store this image, render `request` in its place."""

    request: RenderRequest


# Sees each plain image before it is stored: the image to store (its info may say more) or a Reroll.
# It must let an image through after a bounded number of re-rolls (the processor trusts it to).
Screen = Callable[[RenderedImage], RenderedImage | Reroll]


def stand_ins(records: Iterable[ArtifactRecord]) -> dict[str, ArtifactRecord]:
    """Planned request id -> the stored record that stands for it (a re-rolled image, whose
    `info[PLANNED_KEY]` names the request it replaces)."""
    return {str(r.info[PLANNED_KEY]): r for r in records
            if isinstance(r.info, dict) and r.info.get(PLANNED_KEY)}


@dataclass
class BatchResult:
    requests: list[RenderRequest]
    new: list[ArtifactRecord] = field(default_factory=list)
    existing: list[ArtifactRecord] = field(default_factory=list)
    recovered: int = 0  # PNGs from an interrupted earlier run adopted into the catalog
    warnings: list[str] = field(default_factory=list)  # damaged catalog parts set aside (store.warnings)
    rerolled: int = 0  # images a screen turned down (rendered, not stored; another seed rendered instead)
    compacted: int = 0  # small catalog parts merged into one after the batch
    seconds: float = 0.0
    run_id: str | None = None  # the Dagster run, when there was one

    @property
    def images_per_minute(self) -> float:
        return 60.0 * len(self.new) / self.seconds if self.seconds > 0 and self.new else 0.0


class BatchProcessor:
    def __init__(self, store: ArtifactStore, backend: ImageBackend):
        self.store = store
        self.backend = backend
        self._remade: dict[tuple[str, str], ArtifactRecord] = {}  # catalogued, rendered again (see `_save`)
        self._seen_catalog: dict[str, dict[str, ArtifactRecord]] = {}  # the records the last `_split` read

    def prepare(self, requests: Sequence[RenderRequest]) -> list[RenderRequest]:
        """Stamp the backend identity on each request (it is part of the request id) and validate."""
        prepared = [self.backend.prepare(r) for r in requests]
        self.backend.check_requests(prepared)
        return prepared

    def run(
        self,
        requests: Sequence[RenderRequest],
        *,
        run_id: str | None = None,
        progress: ProgressCallback | None = None,
        screen: Screen | None = None,
    ) -> BatchResult:
        """Render and store the requests not stored yet; `screen` (see the module docstring) may
        turn plain images down and have others rendered in their place."""
        started = time.perf_counter()
        prepared = self.prepare(requests)
        compact_at_parts()  # a bad ECHO_CATALOG_COMPACT_AT is refused before any work, not after it
        with ExitStack() as locks:
            for project in sorted({r.project for r in prepared}):
                locks.enter_context(self.store.project_lock(project))
            return self._run_locked(prepared, started, run_id, progress, screen)

    def _run_locked(self, prepared: list[RenderRequest], started: float, run_id: str | None,
                    progress: ProgressCallback | None, screen: Screen | None) -> BatchResult:
        result = BatchResult(requests=prepared, run_id=run_id)
        for project in sorted({r.project for r in prepared}):
            result.recovered += self.store.reconcile(project)

        result.existing, todo = self._split(prepared)
        result.warnings = list(self.store.warnings)  # reading the catalog quarantines a damaged part
        total, done = len(todo), 0
        if progress is not None:
            progress(0, total, None)
        pending: list[ArtifactRecord] = []
        description = self.backend.describe()
        reported = [0.0]

        def step_progress(fraction: float) -> None:
            # The backend's finer steps (a fraction of all images to render), never past an image
            # not yet stored: a batch of four moves the bar to just below the next whole image.
            if progress is None:
                return
            value = round(min(total * fraction, done + 0.99), 3)
            if value > reported[0] + 1e-3:
                reported[0] = value
                progress(value, total, None)

        plain = [r for r in todo if r.media is None]
        made = [r for r in todo if r.media is not None]
        producer = MediaProducer(self.store, self.backend)

        def store(rendered: RenderedImage) -> ArtifactRecord:
            request = rendered.request
            info, files = rendered.info, dict[str, bytes]()
            if request.media_type == "texture":
                info, files = producer.texture(rendered)
            record = ArtifactRecord(
                artifact_id=request.request_id, project=request.project, request=request,
                backend=description, info=info, parent_id=request.parent_id, run_id=run_id,
            )
            return self._save(record, rendered.image, rendered.png_text, files, result, pending)

        try:
            queue, queue_progress = plain, (lambda f: step_progress(f * len(plain) / total))
            while queue:
                rerolls: list[RenderRequest] = []
                for rendered in self._rendered(queue, queue_progress):
                    verdict = screen(rendered) if screen is not None else rendered
                    if isinstance(verdict, Reroll):
                        rerolls.append(verdict.request)
                        result.rerolled += 1
                        continue
                    stored = store(verdict)
                    done += 1
                    reported[0] = float(done)
                    if progress is not None:
                        progress(done, total, stored)
                # The replacements, after the rest (so the batch's order decides which image of a
                # pair is kept, run after run); the bar moves on stored images only.
                queue, queue_progress = self.prepare(rerolls), (lambda _f: None)
            for request in made:
                base = done

                def media_progress(d: float, t: int, base: int = base) -> None:
                    step_progress((base + (d / t if t else 0.0)) / total)

                sources = self._sources(request, store, result)
                output = producer.produce(request, sources, media_progress)
                record = ArtifactRecord(
                    artifact_id=request.request_id, project=request.project, request=request, backend=description,
                    info=output.info, parent_id=None, run_id=run_id,
                )
                stored = self._save(record, output.image, {}, output.files, result, pending)
                done += 1
                reported[0] = float(done)
                if progress is not None:
                    progress(done, total, stored)
        finally:
            # Also on Ctrl-C or a backend error: whatever was stored gets catalogued.
            self._flush(pending)
        for project in sorted({r.project for r in prepared}):
            result.compacted += self._compact(project)
        result.seconds = time.perf_counter() - started
        return result

    def _compact(self, project: str) -> int:
        """Merge the project's small catalog parts (`ArtifactStore.compact_catalog`); how many it
        merged. Only an optimisation of later reads: a failure is logged, the batch stands."""
        try:
            return self.store.compact_catalog(project).merged
        except (OSError, StorageError) as exc:
            log.warning("could not merge the catalog parts of %s: %s", project, exc)
            return 0

    def _save(self, record: ArtifactRecord, image: Image.Image, png_text: dict[str, str], files: dict[str, bytes],
              result: BatchResult, pending: list[ArtifactRecord]) -> ArtifactRecord:
        previous = self._remade.pop((record.project, record.artifact_id), None)
        if previous is not None:
            # Made again (a file vanished): with the catalogued row's time and run, the same pixels
            # and files give the same PNG bytes, so the row the catalog keeps stays true.
            record = record.model_copy(update={"created": previous.created, "run_id": previous.run_id})
        if files:
            written = self.store.write_media_files(record.project, record.artifact_id, files)
            record = record.model_copy(update={"info": {**record.info, "media_files": written}})
        stored = self.store.save(record, image, extra_text=png_text)
        result.new.append(stored)
        pending.append(stored)
        if len(pending) >= CATALOG_FLUSH_EVERY:
            self._flush(pending)
        return stored

    def _sources(self, request: RenderRequest, store: Callable[[RenderedImage], ArtifactRecord],
                 result: BatchResult) -> dict[str, list[ArtifactRecord]]:
        """The stored artifacts a media request is made from, rendering (and storing) those that
        are not stored yet; the batch's own earlier requests are found, not rendered twice."""
        wanted = {role: self.prepare(reqs) for role, reqs in sources_of(request).items()}
        flat = [r for reqs in wanted.values() for r in reqs]
        # The catalog as the batch read it (what this batch stored since is in `result.new`).
        existing, todo = self._split(flat, self._seen_catalog)
        found = {r.artifact_id: r for r in existing}
        found.update({r.artifact_id: r for r in result.new})
        fresh = [r for r in todo if r.request_id not in found]
        for rendered in self._rendered(fresh, lambda _f: None):
            stored = store(rendered)
            found[stored.artifact_id] = stored
        return {role: [found[r.request_id] for r in reqs] for role, reqs in wanted.items()}

    def _rendered(self, todo: list[RenderRequest], step_progress: Callable[[float], None]) -> Iterator[RenderedImage]:
        """txt2img requests through `render` (streamed, batched by the backend), then img2img ones
        through `refine` with their parent read from the store. Progress units are normalised to
        the whole list (`step_progress` takes the fraction of `todo` done) so the bar never runs
        backwards between the two."""
        fresh = [r for r in todo if r.parent_id is None]
        children = [r for r in todo if r.parent_id is not None]
        if fresh:
            share = len(fresh) / len(todo)
            yield from self.backend.render(fresh, lambda d, t: step_progress(share * d / t if t else 0.0))
        parents: dict[str, ParentImage] = {}  # `render --init x --count 4`: one parent, read once
        for k, request in enumerate(children):
            assert request.parent_id is not None
            if request.parent_id not in parents:
                parents[request.parent_id] = self._parent(request)
            parent = parents[request.parent_id]
            base = len(fresh) + k

            def child_progress(d: int, t: int, base: int = base) -> None:
                step_progress((base + (d / t if t else 0.0)) / len(todo))

            yield self.backend.refine(parent, request, child_progress)

    def _parent(self, request: RenderRequest) -> ParentImage:
        assert request.parent_id is not None
        try:
            record = self.store.find(request.parent_id, project=request.project)
        except NotFoundError:
            record = self.store.find(request.parent_id)  # a parent in another project
        return ParentImage(artifact_id=record.artifact_id, image=self.store.load_image(record),
                           request=record.request, info=record.info)

    def pending(self, requests: Sequence[RenderRequest]) -> list[RenderRequest]:
        """The requests a `run` would render now (not stored yet), in order; reads only."""
        return self._split(self.prepare(requests))[1]

    def _split(self, prepared: list[RenderRequest], catalogued: dict[str, dict[str, ArtifactRecord]] | None = None,
               ) -> tuple[list[ArtifactRecord], list[RenderRequest]]:
        """(records already stored, requests to render), duplicates dropped; `catalogued`: the
        projects' records when the caller has read them already."""
        catalogued = dict(catalogued or {})
        for project in sorted({r.project for r in prepared} - set(catalogued)):
            catalogued[project] = self._catalogued(project)
        self._seen_catalog = catalogued
        standing = {project: stand_ins(records.values()) for project, records in catalogued.items()}
        existing: list[ArtifactRecord] = []
        todo: list[RenderRequest] = []
        seen: set[tuple[str, str]] = set()
        for request in prepared:
            key = (request.project, request.request_id)
            if key in seen:
                continue
            seen.add(key)
            # Stored as itself, or through the re-rolled image that stands for it.
            record = (catalogued[request.project].get(request.request_id)
                      or standing[request.project].get(request.request_id))
            # A catalogued record whose PNG (or media file) vanished, or a PNG that could not be
            # catalogued (corrupted), is rendered again; the atomic write replaces the bad file.
            if (record is not None and self.store.has_image(request.project, record.artifact_id)
                    and self.store.has_media_files(record)):
                existing.append(record)
            else:
                todo.append(request)
                if record is not None:
                    self._remade[(request.project, record.artifact_id)] = record
        return existing, todo

    def _catalogued(self, project: str) -> dict[str, ArtifactRecord]:
        catalog = self.store.catalog(project)
        return {str(row.artifact_id): ArtifactRecord.model_validate_json(str(row.record_json))
                for row in catalog.itertuples(index=False)}

    def _flush(self, pending: list[ArtifactRecord]) -> None:
        by_project: dict[str, list[ArtifactRecord]] = {}
        for record in pending:
            by_project.setdefault(record.project, []).append(record)
        for project, records in by_project.items():
            self.store.append_catalog(project, records)
        pending.clear()
