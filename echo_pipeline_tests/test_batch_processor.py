"""Batch processing: streaming writes, idempotence, and resuming after a crash or a SIGKILL."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from PIL import Image

from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.render.backends.base import BackendCapabilities, BackendDescription, ImageBackend, RenderedImage
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.workflows.batch_processor import BatchProcessor
from echo_pipeline_tests.conftest import sigkill_after_images


class GradientBackend(ImageBackend):
    """A tiny deterministic backend that can be told to fail after N images."""

    name = "gradient"
    capabilities = BackendCapabilities()

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after

    def describe(self) -> BackendDescription:
        return BackendDescription(backend="gradient", model="test-gradient", version="1")

    def render(self, requests: Sequence[RenderRequest], progress=None) -> Iterator[RenderedImage]:
        self.check_requests(requests)
        for i, request in enumerate(requests):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("backend crashed")
            ramp = np.linspace(0, 255, request.width, dtype=np.uint8)
            pixels = np.stack([np.tile(ramp, (request.height, 1))] * 3, axis=-1)
            pixels[..., 2] = request.seed % 256
            yield RenderedImage(request, Image.fromarray(pixels), {"seed_colour": request.seed % 256})


def _requests(n: int, project: str = "p") -> list[RenderRequest]:
    return [RenderRequest(prompt="gradient", seed=i, width=64, height=64, project=project, index=i) for i in range(n)]


@pytest.fixture(params=["memory", "local"])
def store(request, memory_root, tmp_path):
    return ArtifactStore.open(memory_root if request.param == "memory" else str(tmp_path / "store"))


def test_run_is_idempotent(store):
    processor = BatchProcessor(store, GradientBackend())
    first = processor.run(_requests(5), run_id="run-1")
    assert len(first.new) == 5 and not first.existing
    assert {r.run_id for r in first.new} == {"run-1"}
    second = processor.run(_requests(7))
    assert len(second.new) == 2 and len(second.existing) == 5
    catalog = store.catalog("p")
    assert len(catalog) == 7 and catalog.artifact_id.is_unique


def test_a_batch_merges_the_projects_small_catalog_parts(store, monkeypatch):
    monkeypatch.setattr("echo_pipeline.workflows.batch_processor.CATALOG_FLUSH_EVERY", 1)
    monkeypatch.setattr("echo_pipeline.artifacts.storage.COMPACT_AT_PARTS", 4)
    processor = BatchProcessor(store, GradientBackend())
    assert processor.run(_requests(3)).compacted == 0  # 3 parts: fewer than the threshold
    result = processor.run(_requests(6))
    assert result.compacted == 6 and len(result.new) == 3  # the 3 earlier parts and 3 new ones
    assert len(store.catalog_parts("p")) == 1
    catalog = ArtifactStore(store.url).catalog("p")
    assert sorted(catalog.artifact_id) == sorted(r.request_id for r in processor.prepare(_requests(6)))


def test_backend_crash_keeps_what_was_stored_and_next_run_resumes(store):
    with pytest.raises(RuntimeError, match="backend crashed"):
        BatchProcessor(store, GradientBackend(fail_after=3)).run(_requests(8))
    assert len(store.catalog("p")) == 3, "images stored before the crash are catalogued"
    resumed = BatchProcessor(store, GradientBackend()).run(_requests(8))
    assert len(resumed.new) == 5 and len(resumed.existing) == 3
    assert len(store.catalog("p")) == 8 and store.catalog("p").artifact_id.is_unique


def test_uncatalogued_png_from_a_killed_run_is_adopted(store):
    processor = BatchProcessor(store, GradientBackend())
    processor.run(_requests(2))
    # Simulate a SIGKILL between writing a PNG and appending it to the catalog.
    request = processor.prepare(_requests(3))[2]
    rendered = next(GradientBackend().render([request]))
    from echo_pipeline.artifacts.records import ArtifactRecord

    store.save(ArtifactRecord(artifact_id=request.request_id, project="p", request=request,
                              backend=GradientBackend().describe(), info=rendered.info), rendered.image)
    result = processor.run(_requests(3))
    assert result.recovered == 1 and not result.new and len(result.existing) == 3
    assert len(store.catalog("p")) == 3


@pytest.mark.slow(seconds=12)
def test_sigkill_mid_render_then_rerun_loses_and_duplicates_nothing(cli, artifact_root):
    root = artifact_root
    env = dict(os.environ)  # the cli fixture's config dir and artifact root, the test's own DAGSTER_HOME
    args = ["render", "flow field 01-24", "--size", "160x160", "--json"]
    images = root / "projects" / "default" / "images"
    # Killed at 6 of 24: 18 images (~3 s of rendering) left against the 20 ms poll that kills it.
    killed_with = sigkill_after_images([sys.executable, "-m", "echo_pipeline.cli.app", *args], env, images,
                                       at_least=6, timeout=60)
    assert 6 <= killed_with < 24, "the kill must land mid-batch"

    # The re-run in-process, through the same entry point (the killed process is the real one).
    code, out, err = cli(*args)
    assert code == 0, err
    import json

    payload = json.loads(out)
    assert payload["new"] + payload["already_stored"] == 24
    assert payload["already_stored"] >= killed_with - 1  # at most the image in flight is redone
    store = ArtifactStore.open(str(root))
    catalog = store.catalog("default")
    assert len(catalog) == 24 and catalog.artifact_id.is_unique
    assert sorted(p.stem for p in images.glob("*.png")) == sorted(catalog.artifact_id)
    assert not list(root.rglob("*.tmp-*")), "no temporary files left behind"
    for path in images.glob("*.png"):
        Image.open(path).load()
