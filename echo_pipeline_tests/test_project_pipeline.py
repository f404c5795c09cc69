"""The steps behind the asset graph as plain Python (no Dagster): what each step stores, that each
is idempotent and says so, and that batches advance only when complete."""

from __future__ import annotations

import pytest

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends.procedural import ProceduralBackend
from echo_pipeline.settings import Settings
from echo_pipeline.workflows.creative_engine import CreativeEngine
from echo_pipeline.workflows.project_pipeline import GenerateOutcome, ProjectPipeline, RunObserver, ScoreSummary


@pytest.fixture
def pipeline(config_dir, artifact_root) -> ProjectPipeline:
    engine = CreativeEngine(Settings.load(str(artifact_root), config_dir))
    spec = engine.projects.create("Pipeline Test", "warm fractal, no human forms", count=3, width=64, height=64)
    return ProjectPipeline(engine, spec.slug)


def test_steps_in_order_store_their_outputs_and_are_idempotent(pipeline):
    backend = ProceduralBackend(workers=1)
    with pytest.raises(InvalidInputError, match="materialize plan first"):
        pipeline.prompt_set(backend)
    intent = pipeline.intent()
    assert intent.summary["slug"] == "pipeline-test" and "human forms" in intent.summary["constraints"]
    plan = pipeline.plan()
    assert plan.data.tasks and plan.data_version == pipeline.plan().data_version  # deterministic

    prompts = pipeline.prompt_set(backend)
    assert len(prompts.data) == 3 and prompts.summary["batch"] == 0
    assert all("human" in r.negative_prompt for r in prompts.data)

    seen: list[tuple[int, int]] = []

    class Progress(RunObserver):
        def progress(self, done, total, record):
            seen.append((done, total))

    first = pipeline.generate(backend, run_id="run-1", progress=Progress().progress)
    assert isinstance(first.data, GenerateOutcome) and first.data.batch == 0
    assert len(first.data.result.new) == 3 and first.check["passed"]
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    # The same prompt set again: nothing new, reported as already stored; batch 0 is complete.
    again = pipeline.generate(backend)
    assert len(again.data.result.new) == 0 and len(again.data.result.existing) == 3
    assert pipeline.batches_completed == 1

    scores = pipeline.score()
    assert isinstance(scores.data, ScoreSummary) and scores.data.scored_now == 3 and scores.data.mean_total > 0
    low, _, median, _, high = map(float, scores.summary["total_distribution"].split(" / "))
    assert low <= median <= high and len(scores.images) == 3  # best 4 + worst 4 of three images: each once
    assert pipeline.score().data.scored_now == 0  # idempotent: only new images are scored
    memory = pipeline.learn()
    assert memory.data.count == 3 and pipeline.learn().summary["learned_now"] == 0
    gallery = pipeline.gallery()
    assert gallery.data.count == 3 and gallery.data_version == pipeline.gallery().data_version

    # The next prompt set is batch 1: new requests, no overlap with batch 0.
    next_prompts = pipeline.prompt_set(backend)
    assert next_prompts.summary["batch"] == 1
    assert not {r.request_id for r in next_prompts.data} & {r.request_id for r in prompts.data}



def test_scores_of_an_older_scorer_are_computed_again(pipeline):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from echo_pipeline.resonance.memory_system import SCORES_FILE, load_scores
    from echo_pipeline.resonance.quality_assessor import SCORER_VERSION

    pipeline.intent()
    pipeline.plan()
    pipeline.prompt_set(ProceduralBackend(workers=1))
    pipeline.generate(ProceduralBackend(workers=1))
    first = pipeline.score()
    scores = load_scores(pipeline.store, pipeline.slug)
    assert first.data.scored_now == 3 and set(scores["scorer_version"]) == {SCORER_VERSION}
    old = scores.drop(columns=["scorer_version", "noise"])  # as a table written before the noise score
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(old, preserve_index=False), buffer)
    pipeline.store.write_project_file(pipeline.slug, SCORES_FILE, buffer.getvalue())
    again = pipeline.score()
    rescored = load_scores(pipeline.store, pipeline.slug)
    assert again.data.scored_now == 3 and set(rescored["scorer_version"]) == {SCORER_VERSION}
    assert rescored["noise"].notna().all() and (rescored["uniqueness"] > 0).all()  # never compared with itself
    assert pipeline.score().data.scored_now == 0
