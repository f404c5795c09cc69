"""The per-project pipeline behind the Dagster asset graph, as plain Python.

intent -> plan -> prompt_set -> generated_images -> quality_scores -> style_memory -> gallery

Each step reads what the previous one stored under `projects/<slug>/pipeline/` in the artifact
store, does its work idempotently (skipping what is already done and saying so), writes its own
output atomically and returns a `StepResult`: a summary for materialization metadata and a content
hash for `data_version`. Dagster assets (echo_pipeline.defs.assets) are thin wrappers around these.

Batches: the prompt set of batch k is deterministic (see visual_planner.task_prompt_specs), and k
only advances once batch k's images are all stored. So a killed batch re-runs the same requests
(resuming, no duplicates) and the next batch renders new images.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends.base import ImageBackend
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.workflows.batch_processor import (
    PLANNED_KEY,
    BatchProcessor,
    BatchResult,
    ProgressCallback,
    stand_ins,
)
from echo_pipeline.workflows.creative_engine import CreativeEngine

if TYPE_CHECKING:
    from echo_pipeline.workflows.rerolls import DuplicateScreen

INTENT_FILE = "pipeline/intent.json"
PLAN_FILE = "pipeline/plan.json"
PROMPT_SET_FILE = "pipeline/prompt_set.json"
BATCH_KEY = "batches_completed"
BATCH_CONSISTENCY_KEY = "last_batch_consistency"  # project meta: the mean consistency of the last scored batch


def content_hash(payload: Any) -> str:
    data = payload if isinstance(payload, bytes) else json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class StepResult:
    summary: dict[str, Any]
    data_version: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # a table for the UI
    images: list[Any] = field(default_factory=list)  # PIL thumbnails for a preview grid
    check: dict[str, Any] | None = None
    data: Any = None  # the step's typed result (ProjectSpec, Plan, requests, GenerateOutcome, ScoreSummary, ...)
    markdown: dict[str, str] = field(default_factory=dict)  # more markdown metadata (e.g. a Mermaid graph)


@dataclass
class GenerateOutcome:
    """What `generate` did: which batch, and the batch processor's result."""

    batch: int
    result: BatchResult


@dataclass
class ScoreSummary:
    scored_now: int
    images: int
    mean_total: float | None
    mean_style_consistency: float | None
    style_threshold: float
    consistent_pct: float | None = None  # the project's consistency: % of its images at or above the threshold
    batch_consistency: float | None = None  # mean style consistency of the images scored now (the new batch)
    previous_batch_consistency: float | None = None  # ... and of the batch scored before it
    style_target: float = 80.0  # % of a batch that must be on-style (the style_consistency check)
    batch_consistent_pct: float | None = None  # the batch's share of on-style images (what the check judges)


class RunObserver:
    """Someone watching a run from the same process (the CLI, the API): rendering progress and each
    step's typed result. The default observes nothing, which is what queued runs get."""

    def progress(self, done: float, total: int, record: ArtifactRecord | None) -> None:
        """Called with (0, total, None) before rendering, then after each stored image."""

    def step_finished(self, step: str, result: Any) -> None:
        """Called with a step's name and its typed result (StepResult.data, or a BatchResult)."""


class ProjectPipeline:
    def __init__(self, engine: CreativeEngine, slug: str):
        self.engine = engine
        self.slug = slug
        self.store = engine.store
        self.spec = engine.projects.load(slug)

    # -- helpers ---------------------------------------------------------------------------------
    def _write_json(self, relpath: str, payload: Any) -> str:
        data = json.dumps(payload, indent=2, sort_keys=True, default=str, ensure_ascii=False).encode()
        self.store.write_project_file(self.slug, relpath, data)
        return content_hash(data)

    def _read_json(self, relpath: str, step: str) -> Any:
        data = self.store.read_project_file(self.slug, relpath)
        if data is None:
            raise InvalidInputError(f"project {self.slug!r} has no {step} yet; materialize {step} first")
        return json.loads(data)

    @property
    def batches_completed(self) -> int:
        return int(self.store.read_project_meta(self.slug).get(BATCH_KEY, 0))

    # -- steps -----------------------------------------------------------------------------------
    def intent(self) -> StepResult:
        from echo_pipeline.workflows.intent import parse_intent

        intent = parse_intent(self.spec.name, self.spec.intent, self.spec.constraints)
        payload = {"spec": self.spec.model_dump(mode="json"), "intent": intent.model_dump(mode="json")}
        version = self._write_json(INTENT_FILE, payload)
        meta = self.store.read_project_meta(self.slug)
        self.store.write_project_meta(self.slug, meta | {"name": self.spec.name, "slug": self.slug})
        return StepResult(
            summary={"project": self.spec.name, "slug": self.slug, "intent": self.spec.intent,
                     "subject": intent.subject, "constraints": ", ".join(intent.constraints) or "-",
                     "media_types": ", ".join(intent.media_types)},
            data_version=version,
            data=self.spec,
        )

    def plan(self) -> StepResult:
        """Typed tasks with dependencies; the spec's references are stored, imported and learned from
        first (`visual_planner.prepare_references`), and the image tasks start from them."""
        from echo_pipeline.workflows.visual_planner import plan_project, prepare_references

        references, reference_style = prepare_references(self.engine, self.spec)
        plan = plan_project(self.spec, references, reference_style)
        version = self._write_json(PLAN_FILE, plan.model_dump(mode="json"))
        return StepResult(
            summary={"tasks": len(plan.tasks), "renderable_tasks": len(plan.renderable_tasks()),
                     "references": len(references),
                     "reference_style": (f"{reference_style}" + (f" (the project's style {self.spec.style!r} is used)"
                                                                  if self.spec.style else "")) if references else None},
            data_version=version,
            data=plan,
            rows=[{"id": t.id, "type": t.media_type, "title": t.title, "count": t.count,
                   "depends_on": ", ".join(t.depends_on) or "-", "renderable": t.renderable,
                   "init": ", ".join(t.init) or "-"} for t in plan.ordered()],
            markdown={"dependency_graph": f"```mermaid\n{plan.mermaid()}\n```"},
            images=[self.store.load_thumbnail(self.slug, r.artifact_id) for r in references[:8]],
        )

    def prompt_set(self, backend: ImageBackend, *, count: int | None = None, style: str | None = None) -> StepResult:
        from echo_pipeline.resonance.style_learning import prompt_names_palette
        from echo_pipeline.workflows.multi_modal import link_plan_sources
        from echo_pipeline.workflows.visual_planner import Plan, plan_project, task_prompt_specs

        plan = Plan.model_validate(self._read_json(PLAN_FILE, "plan"))
        spec = self.spec
        if count is not None or style is not None:
            spec = spec.model_copy(update={k: v for k, v in (("count", count), ("style", style)) if v is not None})
            plan = plan_project(spec, plan.references, plan.reference_style)
        batch = self.batches_completed
        modifiers, palette = self._memory_guidance() if spec.use_memory else ([], None)
        by_task: dict[str, list[RenderRequest]] = {}
        palette_prompts = 0
        tasks = plan.renderable_tasks()
        for task, prompt_spec in zip(tasks, task_prompt_specs(plan, spec, batch=batch), strict=True):
            # What the memory learned goes with accepted images: fed back into the prompts. Its
            # palette only where the prompt (and the style) asks for none: the user's choice wins.
            words = set(prompt_spec.prompt.lower().replace(",", " ").split())
            extra = [m for m in modifiers if m not in words]
            styled = (self.engine.styles.get(prompt_spec.style).apply(prompt_spec.prompt)[0] if prompt_spec.style
                      else prompt_spec.prompt)
            with_palette = bool(palette) and not prompt_names_palette(styled)
            if with_palette:
                extra.append(f"{palette} palette")
            if extra:
                prompt_spec = prompt_spec.model_copy(update={"prompt": ", ".join([prompt_spec.prompt, *extra])})
            planned = self.engine.plan_requests(prompt_spec, media_sources=False)
            palette_prompts += len(planned) if with_palette else 0
            by_task[task.id] = [backend.prepare(r) for r in planned]
        # Videos, 3D models and interactive pieces are made from this batch's own requests of the
        # tasks they depend on (concept -> texture -> 3d_model, keyframes -> video), not new ones.
        by_task = link_plan_sources(by_task, {t.id: list(t.depends_on) for t in tasks},
                                    {t.id: t.media_type for t in tasks})
        requests = [r.model_copy(update={"index": i})
                    for i, r in enumerate(r for t in tasks for r in by_task[t.id])]
        backend.check_requests(requests)
        payload = {"batch": batch, "backend": backend.describe().model_dump(), "memory_modifiers": modifiers,
                   "memory_palette": palette if palette_prompts else None,
                   "requests": [r.model_dump(mode="json") for r in requests]}
        version = self._write_json(PROMPT_SET_FILE, payload)
        return StepResult(
            summary={"batch": batch, "requests": len(requests), "style": spec.style or "-", "backend": backend.name,
                     "use_memory": spec.use_memory, "memory_modifiers": ", ".join(modifiers) or "-",
                     # the memory's best palette, and in how many requests (those whose prompt names none)
                     "memory_palette": f"{palette} ({palette_prompts} request(s))" if palette else "-"},
            data_version=version,
            data=requests,
            rows=[{"request_id": r.request_id, "prompt": r.prompt, "seed": r.seed, "size": f"{r.width}x{r.height}"}
                  for r in requests[:50]],
        )

    def _memory_guidance(self, limit: int = 2) -> tuple[list[str], str | None]:
        """The memory's best learned modifiers (words that go with accepted images, best first) and
        the palette whose images scored highest (None until it has enough accepted images)."""
        from echo_pipeline.resonance.memory_system import load_memory

        memory = load_memory(self.store, self.slug)
        return (list(memory.learned_modifiers[:limit]), memory.best_palette) if memory else ([], None)

    def load_prompt_set(self) -> tuple[int, list[RenderRequest]]:
        payload = self._read_json(PROMPT_SET_FILE, "prompt_set")
        return payload["batch"], [RenderRequest.model_validate(r) for r in payload["requests"]]

    def generate(self, backend: ImageBackend, *, run_id: str | None = None,
                 progress: ProgressCallback | None = None) -> StepResult:
        from echo_pipeline.resonance.quality_assessor import (
            PROJECT_DUPLICATE_DISTANCE,
            phash_hex,
            project_hashes,
            project_near_duplicates,
        )
        from echo_pipeline.workflows.rerolls import DuplicateScreen

        batch, planned = self.load_prompt_set()
        requests = [r for r in planned if r.media_type == "image"]
        # A new image that is a near-duplicate of one stored before it is re-rolled (another seed
        # derived from the planned one) before it is stored; see workflows/rerolls.py.
        screen = DuplicateScreen(self.store, self.slug)
        result = BatchProcessor(self.store, backend).run(requests, run_id=run_id, progress=progress, screen=screen)
        self._advance_if_complete(batch, planned)
        records = [r for r in result.new + result.existing if r.request.media_type == "image"]
        new_ids = {r.artifact_id for r in result.new}
        replaced = {r.artifact_id: str(r.info[PLANNED_KEY]) for r in records if r.info.get(PLANNED_KEY)}
        # Uniqueness across the project, not just this batch: each image of the batch against every
        # image stored before it and against the rest of the batch (pHash distance <= 10, see
        # PROJECT_DUPLICATE_DISTANCE). Only hashes are needed here; full scoring is quality_scores.
        # New images were hashed by the screen from the same thumbnails the store wrote.
        hashes = {r.artifact_id: screen.hashes.get(r.artifact_id)
                  or phash_hex(self.store.load_thumbnail(r.project, r.artifact_id)) for r in records}
        existing = project_hashes(self.store, self.slug, exclude=hashes)
        duplicates = project_near_duplicates(hashes, existing)
        check = {"near_duplicates": duplicates, "passed": not duplicates, "compared_with": len(existing),
                 "max_distance": PROJECT_DUPLICATE_DISTANCE, "rerolled": result.rerolled,
                 "survivors": list(screen.survivors), "message": self._uniqueness_message(duplicates, screen)}
        return StepResult(
            summary={"batch": batch, "new_images": len(result.new), "already_stored": len(result.existing),
                     # near-duplicates turned down in this run, each rendered again with another seed
                     "rerolled": result.rerolled,
                     # images of the batch that stand for a planned request whose own image was a near-duplicate
                     "replaced": len(replaced),
                     "recovered_from_interrupted_run": result.recovered,
                     # small catalog parts merged into one after the batch (fast reads of big projects)
                     "catalog_parts_merged": result.compacted, "seconds": round(result.seconds, 2),
                     "images_per_minute": round(result.images_per_minute, 1)},
            data_version=content_hash(sorted(r.artifact_id for r in records)),
            rows=[{"artifact_id": r.artifact_id, "prompt": r.request.prompt, "seed": r.request.seed,
                   "status": "new" if r.artifact_id in new_ids else "stored",
                   "replaces": replaced.get(r.artifact_id, "-")} for r in records[:50]],
            images=[self.store.load_thumbnail(r.project, r.artifact_id) for r in records[:16]],
            data=GenerateOutcome(batch=batch, result=result),
            check=check,
        )

    @staticmethod
    def _uniqueness_message(duplicates: list[tuple[str, str, int]], screen: DuplicateScreen) -> str:
        """The unique_images check's one-line verdict."""
        rerolled = f"{screen.rerolled} near-duplicate(s) re-rolled with another seed"
        if not duplicates:
            return f"no near-duplicates (pHash distance <= {screen.max_distance}); {rerolled}"
        closest = ", ".join(f"{a} ~ {b} ({d} bits)" for a, b, d in duplicates[:3])
        if screen.survivors:
            return (f"{len(screen.survivors)} image(s) still near-duplicates after {screen.tries} re-roll(s) each "
                    f"({', '.join(screen.survivors[:3])}); {len(duplicates)} pair(s) at pHash distance <= "
                    f"{screen.max_distance}: {closest}")
        return (f"{len(duplicates)} near-duplicate pair(s) at pHash distance <= {screen.max_distance} among images "
                f"stored before this run: {closest}; {rerolled}")

    def _advance_if_complete(self, batch: int, planned: list[RenderRequest]) -> None:
        """Batch k is done once every request of its prompt set is stored (images, textures and the
        media made from them, whichever step stores the last one; a re-rolled image counts as its
        planned request): only then does the next prompt set get new seeds, so a batch killed in
        any step resumes with the same requests."""
        meta = self.store.read_project_meta(self.slug)
        if int(meta.get(BATCH_KEY, 0)) > batch:
            return
        stored: set[str] = set()
        if planned:
            catalog = self.store.catalog(self.slug)
            stored = set(catalog["artifact_id"].astype(str))
            # the planned requests that re-rolled images stand for (their record's info names them)
            stored |= set(stand_ins(ArtifactRecord.model_validate_json(str(j)) for j in catalog["record_json"]
                                    if PLANNED_KEY in str(j)))
        if all(r.request_id in stored for r in planned):
            self.store.write_project_meta(self.slug, meta | {BATCH_KEY: batch + 1})

    def make_media(self, media_type: str, backend: ImageBackend, *, run_id: str | None = None,
                   progress: ProgressCallback | None = None) -> StepResult:
        """The prompt set's requests of one media type (texture, 3d_model, video, interactive) not
        already stored, with the files each one has (maps, GLB/OBJ, MP4/GIF, HTML) and its sources'
        lineage; a step with none planned says so."""
        batch, planned = self.load_prompt_set()
        requests = [r for r in planned if r.media_type == media_type]
        if not requests:
            self._advance_if_complete(batch, planned)
            return StepResult(summary={"batch": batch, "planned": 0, "note": f"no {media_type} task in the plan"},
                              data_version=content_hash([]), data=GenerateOutcome(batch=batch, result=BatchResult([])))
        result = BatchProcessor(self.store, backend).run(requests, run_id=run_id, progress=progress)
        self._advance_if_complete(batch, planned)
        records = [r for r in result.new + result.existing if r.request.media_type == media_type]
        new_ids = {r.artifact_id for r in result.new}
        rows = [{"artifact_id": r.artifact_id, "status": "new" if r.artifact_id in new_ids else "stored",
                 **media_summary(r)} for r in records[:50]]
        return StepResult(
            summary={"batch": batch, "planned": len(requests), f"new_{media_type}": len(new_ids & {r.artifact_id for r in records}),
                     "already_stored": len(result.existing), "sources_rendered": len(new_ids - {r.artifact_id for r in records}),
                     "seconds": round(result.seconds, 2)},
            data_version=content_hash(sorted(r.artifact_id for r in records)),
            rows=rows,
            images=[self.store.load_thumbnail(r.project, r.artifact_id) for r in records[:16]],
            data=GenerateOutcome(batch=batch, result=result),
        )

    def score(self) -> StepResult:
        from echo_pipeline.resonance.memory_system import load_memory, load_scores, save_scores
        from echo_pipeline.resonance.quality_assessor import SCORER_VERSION

        catalog = self.store.catalog(self.slug)
        previous = load_scores(self.store, self.slug)
        # Images scored by an older scorer are scored again (their totals would not compare).
        current = previous[previous["scorer_version"] == SCORER_VERSION] if "scorer_version" in previous else previous.iloc[0:0]
        done = set(current["artifact_id"])
        todo = catalog[~catalog.artifact_id.isin(done)]
        memory = load_memory(self.store, self.slug)
        if len(todo):
            # Thumbnails, like style_memory and the uniqueness check: the style centroid and the
            # embeddings compared with it come from the same input (scores work at <= 256 px anyway).
            items = [(aid, self.store.load_thumbnail(self.slug, aid)) for aid in todo.artifact_id]
            rescored = set(todo.artifact_id)  # an image scored again must not be compared with itself
            reference = {a: h for a, h in zip(previous.artifact_id, previous.phash, strict=True)
                         if a not in rescored} or None
            centroid = np.asarray(memory.centroid, dtype=np.float32) if memory and memory.count else None
            prompts = [str(p) for p in todo["prompt"]]  # CLIP alignment is against the prompt as rendered
            fresh = self.engine.quality_assessor().assess(
                items, centroid=centroid, spread=memory.spread if memory else None, reference_hashes=reference,
                prompts=prompts)
            save_scores(self.store, self.slug, fresh)
        scores = load_scores(self.store, self.slug)
        batch_scores = scores[scores.artifact_id.isin(todo.artifact_id)] if len(todo) else scores.iloc[0:0]
        consistency = float(scores.style_consistency.mean()) if len(scores) else float("nan")
        threshold = self.spec.style_threshold
        rated = scores.style_consistency.dropna()
        meta = self.store.read_project_meta(self.slug)
        batch_consistency = (float(batch_scores.style_consistency.mean())
                             if len(batch_scores) and batch_scores.style_consistency.notna().any() else None)
        previous_batch = meta.get(BATCH_CONSISTENCY_KEY)
        if batch_consistency is not None:  # this batch's figure becomes "the one before" for the next
            self.store.write_project_meta(self.slug, meta | {BATCH_CONSISTENCY_KEY: round(batch_consistency, 2)})
        # The check judges the batch scored now (all images when nothing new was scored): the share of
        # its images at or above the per-image threshold against the project's target share.
        judged = (batch_scores if len(batch_scores) else scores).style_consistency.dropna()
        judged_pct = round(100.0 * float((judged >= threshold).mean()), 1) if len(judged) else None
        summary = ScoreSummary(scored_now=len(todo), images=len(scores),
                               mean_total=round(float(scores.total.mean()), 1) if len(scores) else None,
                               mean_style_consistency=None if np.isnan(consistency) else round(consistency, 1),
                               style_threshold=threshold,
                               consistent_pct=round(100.0 * float((rated >= threshold).mean()), 1) if len(rated) else None,
                               batch_consistency=None if batch_consistency is None else round(batch_consistency, 1),
                               previous_batch_consistency=previous_batch if batch_consistency is not None else None,
                               style_target=self.spec.style_target, batch_consistent_pct=judged_pct)
        return StepResult(
            summary={"scored_now": summary.scored_now, "already_scored": len(done), "images": summary.images,
                     "mean_total": summary.mean_total,
                     # the score distribution: min, quartiles, max of the total over every scored image
                     "total_distribution": " / ".join(f"{v:.1f}" for v in scores.total.astype(float).quantile(
                         [0, 0.25, 0.5, 0.75, 1]).tolist()) if len(scores) else "-",
                     "mean_technical": round(float(scores.technical.mean()), 1) if len(scores) else None,
                     "mean_style_consistency": summary.mean_style_consistency, "style_threshold": threshold,
                     "consistent_pct": summary.consistent_pct, "batch_consistent_pct": judged_pct,
                     "style_target": self.spec.style_target},
            data_version=content_hash(scores.round(4).to_json(orient="records").encode()) if len(scores) else "empty",
            rows=cast(list[dict[str, Any]], batch_scores.sort_values("total", ascending=False).head(50)[
                ["artifact_id", "total", "technical", "style_consistency", "uniqueness"]].round(1).to_dict("records")),
            # the four best, then the four weakest images of the project (the preview grid's two rows)
            images=[self.store.load_thumbnail(self.slug, a) for a in
                    _best_and_worst(scores.dropna(subset=["total"]).sort_values("total", ascending=False), 4)
                    if self.store.has_thumb(self.slug, a)],
            check={"passed": judged_pct is None or judged_pct >= self.spec.style_target,
                   "consistent_pct": judged_pct, "target": self.spec.style_target, "threshold": threshold,
                   "judged_images": len(judged), "batch": bool(len(batch_scores)),
                   "mean_style_consistency": consistency},
            data=summary,
        )

    def suggestions(self, memory: Any = None) -> list[Any]:
        """Concrete next steps for the project from its scores and memory (resonance/suggestions.py)."""
        from echo_pipeline.resonance.memory_system import load_memory, load_scores
        from echo_pipeline.resonance.quality_assessor import PROJECT_DUPLICATE_DISTANCE
        from echo_pipeline.resonance.suggestions import suggest

        catalog = self.store.catalog(self.slug)
        groups = []
        for row in catalog.itertuples(index=False):
            record = ArtifactRecord.model_validate_json(str(row.record_json))
            palette = _declared_palette(record)
            groups.append({"artifact_id": record.artifact_id,
                           "prompt": record.request.source_prompt or record.request.prompt,
                           "group": f"{palette} palette" if palette else
                           (f"style {record.request.style}" if record.request.style else None),
                           "child": record.parent_id is not None})
        lineage = pd.DataFrame(groups, columns=["artifact_id", "prompt", "group", "child"])
        return suggest(self.slug, load_scores(self.store, self.slug),
                       memory if memory is not None else load_memory(self.store, self.slug), lineage,
                       style_threshold=self.spec.style_threshold, duplicate_distance=PROJECT_DUPLICATE_DISTANCE)

    def learn(self) -> StepResult:
        from echo_pipeline.resonance.embedders import get_embedder
        from echo_pipeline.resonance.memory_system import (
            colour_histogram,
            learn_style,
            load_memory,
            load_scores,
            save_memory,
        )
        from echo_pipeline.resonance.style_learning import nearest_palette

        scores = load_scores(self.store, self.slug)
        memory = load_memory(self.store, self.slug)
        learned = set(getattr(memory, "learned_ids", []) or []) if memory else set()
        todo = scores[~scores.artifact_id.isin(learned)] if len(scores) else scores
        if len(todo):
            catalog = self.store.catalog(self.slug).set_index("artifact_id")
            # A 3D model's PNG is a render of a mesh on a studio backdrop, not a picture in the
            # project's style: the style is learned from its concept and texture instead.
            previews = set(catalog.index[catalog["media_type"] == "3d_model"].astype(str))
            todo = todo[~todo.artifact_id.astype(str).isin(previews)]
        if len(todo):
            embedder = get_embedder()
            images = [self.store.load_thumbnail(self.slug, aid) for aid in todo.artifact_id]
            # An image's palette: the one its backend says it drew with, else the nearest named one.
            declared = [_declared_palette(ArtifactRecord.model_validate_json(str(catalog.loc[a, "record_json"])))
                        if a in catalog.index else None for a in todo.artifact_id]
            palettes = [p or nearest_palette(image) for p, image in zip(declared, images, strict=True)]
            memory = learn_style(memory, self.slug, embedder.embed(images), list(todo.artifact_id),
                                 [catalog.loc[a, "prompt"] if a in catalog.index else "" for a in todo.artifact_id],
                                 list(todo.total), embedder=embedder.name, palettes=palettes,
                                 colours=[colour_histogram(image) for image in images])
            save_memory(self.store, memory)
        if memory is None:
            return StepResult(summary={"learned_now": 0, "count": 0}, data_version="empty")
        return StepResult(
            summary={"learned_now": len(todo), "count": memory.count, "stable": memory.stable,
                     "version": memory.version,
                     "spread": round(memory.spread, 4), "exemplars": ", ".join(memory.exemplars) or "-",
                     "learned_modifiers": ", ".join(memory.learned_modifiers) or "-",
                     "best_palette": memory.best_palette or "-",
                     "palettes": "\n".join(f"{r.palette}: {r.images} image(s), {r.accepted} accepted, mean "
                                           f"{r.mean_total:.1f}" for r in memory.palette_table().itertuples()) or "-",
                     "dominant_colours": ", ".join(f"{c} {100 * w:.0f} %" for c, w in memory.dominant_colours()) or "-",
                     "history_entries": len(memory.history),
                     "suggestions": "\n".join(f"- {s.text}" for s in self.suggestions(memory)) or "-"},
            data_version=content_hash({"c": [round(x, 5) for x in memory.centroid], "n": memory.count}),
            images=[self.store.load_thumbnail(self.slug, a) for a in memory.exemplars[:8]],
            data=memory,
        )

    def gallery(self) -> StepResult:
        from echo_pipeline.workflows.galleries import project_gallery

        result = project_gallery(self.store, self.slug, self.spec.name, technical_fallback=False)
        return StepResult(
            summary={"images": result.count, "html": result.html_path, "contact_sheet": result.contact_sheet_path,
                     "pages": ", ".join(sorted(result.pages)), "file_problems": len(result.problems)},
            data_version=result.content_hash,
            data=result,
        )


def media_summary(record: ArtifactRecord) -> dict[str, Any]:
    """The few numbers that say what a media artifact is (a table row per artifact in the UI)."""
    info = record.info
    sources = ", ".join(f"{role}: {' '.join(ids)}" for role, ids in (info.get("inputs") or {}).items())
    row: dict[str, Any] = {"prompt": record.request.source_prompt or record.request.prompt}
    if record.request.media_type == "texture":
        seam = info.get("seam") or {}
        row.update(seam_ratio=seam.get("seam_ratio"), maps=", ".join((info.get("maps") or {}).get("files", [])))
    elif record.request.media_type == "3d_model":
        mesh = info.get("mesh") or {}
        row.update(method=mesh.get("method"), triangles=mesh.get("triangles"), watertight=mesh.get("watertight"))
    elif record.request.media_type == "video":
        video = info.get("video") or {}
        row.update(frames=video.get("frames"), fps=video.get("fps"), loop=video.get("loop"), audio=bool(video.get("audio")))
    if sources:
        row["made_from"] = sources
    return row


def _declared_palette(record: ArtifactRecord) -> str | None:
    """The named palette the record's backend says it drew with (the procedural one does), if any."""
    palette = record.info.get("palette") if isinstance(record.info, dict) else None
    return palette if isinstance(palette, str) and palette else None


def _best_and_worst(ranked: pd.DataFrame, n: int) -> list[str]:
    """Artifact ids of the `n` best and the `n` worst rows of a frame sorted best first (no repeats)."""
    ids = [str(a) for a in ranked["artifact_id"]]
    return ids[:n] + [a for a in ids[-n:] if a not in ids[:n]]
