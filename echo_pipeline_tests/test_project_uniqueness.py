"""Project-wide uniqueness: new images against every image already in the project.

The unique_images check used to compare a batch with itself only; after 16 batches of the Ruzgar
NFT collection, pairs from different batches sat at pHash distance 6-10 and looked identical.
A 500-image collection is `bench/project_uniqueness.py`; the suite renders 120 in
test_resonance_acceptance.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends.base import BackendCapabilities, BackendDescription, ImageBackend, RenderedImage
from echo_pipeline.render.backends.procedural import ProceduralBackend
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.resonance import quality_assessor as qa
from echo_pipeline.resonance.quality_assessor import (
    PROJECT_DUPLICATE_DISTANCE,
    hash_ints,
    project_hashes,
    project_near_duplicates,
)
from echo_pipeline.settings import Settings
from echo_pipeline.workflows.batch_processor import PLANNED_KEY
from echo_pipeline.workflows.creative_engine import CreativeEngine
from echo_pipeline.workflows.project_pipeline import ProjectPipeline
from echo_pipeline.workflows.rerolls import REROLL_TRIES, reroll_seed


def _hex(value: int) -> str:
    return f"{value:016x}"


def _flip(value: int, bits: int, offset: int = 0) -> int:
    """`value` with `bits` low bits (from `offset`) inverted: Hamming distance exactly `bits`."""
    return value ^ (((1 << bits) - 1) << offset)


# ------------------------------------------------------------------------------------- the check
def test_new_against_existing_and_against_each_other():
    base = 0x0123456789ABCDEF
    existing = {"old-1": _hex(base), "old-2": _hex(_flip(base, 24, 40)), "old-3": _hex(_flip(base, 20, 30))}
    new = {"new-1": _hex(_flip(base, PROJECT_DUPLICATE_DISTANCE)),  # at the threshold: flagged
           "new-2": _hex(_flip(base, 30, 2)),
           "new-3": _hex(_flip(_flip(base, 30, 2), 3, 40))}  # 3 bits from new-2
    pairs = project_near_duplicates(new, existing)
    assert pairs == [("new-2", "new-3", 3), ("new-1", "old-1", PROJECT_DUPLICATE_DISTANCE)]
    assert project_near_duplicates(new, existing, max_distance=2) == []
    # one past the threshold passes
    assert project_near_duplicates({"n": _hex(_flip(base, PROJECT_DUPLICATE_DISTANCE + 1))}, {"o": _hex(base)}) == []


def test_threshold_catches_the_distances_that_looked_identical():
    assert PROJECT_DUPLICATE_DISTANCE >= 10  # the identical-looking pairs sat at 6-10
    assert PROJECT_DUPLICATE_DISTANCE < 12  # merely related framings (same subject) sit at 12-16


def test_an_id_in_both_maps_is_new_and_empty_inputs():
    h = _hex(0xFFFF0000FFFF0000)
    assert project_near_duplicates({"a": h}, {"a": h}) == []  # not a duplicate of itself
    assert project_near_duplicates({}, {"a": h}) == []
    assert project_near_duplicates({"a": h}, {}) == []
    assert project_near_duplicates({"a": h, "b": h}, {}) == [("a", "b", 0)]


def test_popcount_fallback_matches_and_bad_hashes_raise(monkeypatch):
    rng = np.random.default_rng(1)
    values = rng.integers(0, 2**63, 200, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 200, dtype=np.uint64)
    expected = np.array([bin(int(v)).count("1") for v in values])
    assert (qa.popcount(values) == expected).all()
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert (qa.popcount(values) == expected).all()
    assert (qa.popcount(values[:, None] ^ values[None, :5]) >= 0).all()  # 2-D input works too
    with pytest.raises(InvalidInputError, match="perceptual hash"):
        hash_ints(["not-hex"])


def test_vectorised_and_fast():
    """100 new images against 100,000 stored ones: well under a second (no Python pair loop)."""
    rng = np.random.default_rng(7)
    old = {f"o{i}": _hex(int(v)) for i, v in enumerate(rng.integers(0, 2**63, 100_000, dtype=np.uint64))}
    new = {f"n{i}": _hex(int(v)) for i, v in enumerate(rng.integers(0, 2**63, 100, dtype=np.uint64))}
    new["dup"] = _hex(_flip(int(old["o123"], 16), 5))
    start = time.perf_counter()
    pairs = project_near_duplicates(new, old)
    elapsed = time.perf_counter() - start
    assert ("dup", "o123", 5) in pairs
    assert elapsed < 2.0, elapsed


# ------------------------------------------------------------------------------------ a project
@pytest.fixture
def engine(config_dir, artifact_root) -> CreativeEngine:
    return CreativeEngine(Settings.load(artifact_root=str(artifact_root), config_dir=config_dir))


def _ruzgar(engine: CreativeEngine, count: int) -> ProjectPipeline:
    """The example project of the issue (warm fractal, no human forms, digital art) at 64 x 64."""
    spec = engine.projects.create("Ruzgar NFT Collection", "warm fractal, no human forms", style="digital art",
                                  count=count, width=64, height=64)
    pipeline = ProjectPipeline(engine, spec.slug)
    pipeline.intent()
    pipeline.plan()
    return pipeline


def test_project_hashes_come_from_scores_or_thumbnails(engine):
    pipeline = _ruzgar(engine, 3)
    backend = ProceduralBackend(workers=1)
    pipeline.prompt_set(backend)
    first = pipeline.generate(backend)
    ids = [row["artifact_id"] for row in first.rows]
    from_thumbs = project_hashes(engine.store, pipeline.slug)
    assert sorted(from_thumbs) == sorted(ids)
    pipeline.score()  # now the score table has them (the same thumbnails: the same hashes)
    assert project_hashes(engine.store, pipeline.slug) == from_thumbs
    assert project_hashes(engine.store, pipeline.slug, exclude=ids[:1]).keys() == set(ids[1:])
    # the next batch is compared with these three
    pipeline.prompt_set(backend)
    second = pipeline.generate(backend)
    assert second.check["compared_with"] == 3 and second.check["passed"]


def test_a_repeated_framing_from_another_batch_fails_the_check(engine):
    """The same images stored again under other ids (as a repeated framing would be) are caught."""
    pipeline = _ruzgar(engine, 2)
    backend = ProceduralBackend(workers=1)
    pipeline.prompt_set(backend)
    pipeline.generate(backend)
    stored = project_hashes(engine.store, pipeline.slug)
    fake_new = {f"copy-of-{k}": v for k, v in stored.items()}
    pairs = project_near_duplicates(fake_new, stored)
    assert {(f"copy-of-{k}", k, 0) for k in stored} <= set(pairs)


# ------------------------------------------------------------------------------------ re-rolls
class TwinBackend(ImageBackend):
    """Noise images seeded by the request's seed, except that the seeds in `twins` draw the image of
    another seed (a planned near-duplicate), and with `flat` every image is the same grey."""

    name = "twin"
    capabilities = BackendCapabilities()

    def __init__(self, twins: dict[int, int] | None = None, flat: bool = False):
        super().__init__()
        self.twins = twins or {}
        self.flat = flat
        self.rendered: list[RenderRequest] = []

    def describe(self) -> BackendDescription:
        return BackendDescription(backend="twin", model="noise", version="1")

    def render(self, requests, progress=None):
        self.check_requests(requests)
        for request in requests:
            self.rendered.append(request)
            rng = np.random.default_rng(self.twins.get(request.seed, request.seed))
            pixels = (np.full((request.height, request.width, 3), 128, dtype=np.uint8) if self.flat else
                      rng.integers(0, 256, (request.height, request.width, 3), dtype=np.uint8))
            yield RenderedImage(request, Image.fromarray(pixels), {})


def _twin_project(engine: CreativeEngine, backend: TwinBackend, count: int) -> tuple[ProjectPipeline, list[RenderRequest]]:
    spec = engine.projects.create("Twin Test", "noise", count=count, width=64, height=64, seed=1000)
    pipeline = ProjectPipeline(engine, spec.slug)
    pipeline.intent()
    pipeline.plan()
    planned = pipeline.prompt_set(backend).data
    return pipeline, planned


def test_a_near_duplicate_is_rerolled_stored_once_and_the_batch_completes(engine):
    probe = TwinBackend()
    _, planned = _twin_project(engine, probe, 3)
    first, second = planned[0].seed, planned[1].seed
    backend = TwinBackend(twins={second: first})  # the second planned image is the first one again
    pipeline, planned = _twin_project(engine, backend, 3)
    step = pipeline.generate(backend)

    replacement = planned[1].model_copy(update={"seed": reroll_seed(planned[1], 1)})
    assert [r.request_id for r in backend.rendered] == [r.request_id for r in planned] + [replacement.request_id]
    assert step.check["passed"], step.check
    assert "1 near-duplicate(s) re-rolled" in step.check["message"]
    assert step.summary["rerolled"] == 1 and step.summary["replaced"] == 1 and step.summary["new_images"] == 3
    catalog = engine.store.catalog(pipeline.slug)
    assert sorted(catalog.artifact_id) == sorted([planned[0].request_id, replacement.request_id, planned[2].request_id])
    record = engine.store.find(replacement.request_id, project=pipeline.slug)
    assert record.info[PLANNED_KEY] == planned[1].request_id and record.info["rerolls"] == 1
    assert pipeline.batches_completed == 1  # the replacement counts as its planned request

    # A re-run of the same prompt set renders nothing and finds the replacement stored.
    backend.rendered.clear()
    again = pipeline.generate(backend)
    assert backend.rendered == []
    assert again.summary["new_images"] == 0 and again.summary["already_stored"] == 3
    assert again.summary["rerolled"] == 0 and again.summary["replaced"] == 1 and again.check["passed"]
    assert pipeline.batches_completed == 1


def test_a_rerun_after_a_kill_derives_the_same_replacement(engine):
    """The replacement's PNG is gone (as if the run died while writing it): the planned request is
    rendered again, re-rolled to the same seed, and the catalogued row is kept, not doubled."""
    probe = TwinBackend()
    _, planned = _twin_project(engine, probe, 2)
    backend = TwinBackend(twins={planned[1].seed: planned[0].seed})
    pipeline, planned = _twin_project(engine, backend, 2)
    pipeline.generate(backend)
    replacement = planned[1].model_copy(update={"seed": reroll_seed(planned[1], 1)})
    engine.store.fs.rm(engine.store.image_path(pipeline.slug, replacement.request_id))
    backend.rendered.clear()
    step = pipeline.generate(backend)
    assert [r.request_id for r in backend.rendered] == [planned[1].request_id, replacement.request_id]
    assert step.check["passed"] and step.summary["new_images"] == 1 and step.summary["rerolled"] == 1
    assert sorted(engine.store.catalog(pipeline.slug).artifact_id) == sorted([planned[0].request_id,
                                                                              replacement.request_id])


def test_when_every_reroll_is_a_duplicate_the_check_still_fails(engine):
    backend = TwinBackend(flat=True)  # every seed: the same grey
    pipeline, planned = _twin_project(engine, backend, 2)
    step = pipeline.generate(backend)
    assert not step.check["passed"]
    assert step.summary["rerolled"] == REROLL_TRIES and len(backend.rendered) == 2 + REROLL_TRIES
    last = planned[1].model_copy(update={"seed": reroll_seed(planned[1], REROLL_TRIES)})
    assert step.check["survivors"] == [last.request_id]
    assert [({a, b}, d) for a, b, d in step.check["near_duplicates"]] == [({last.request_id, planned[0].request_id}, 0)]
    assert f"1 image(s) still near-duplicates after {REROLL_TRIES} re-roll(s) each ({last.request_id})" \
        in step.check["message"]
    assert engine.store.find(last.request_id, project=pipeline.slug).info[PLANNED_KEY] == planned[1].request_id
    assert pipeline.batches_completed == 1  # every planned request has its image; the check stops what follows
