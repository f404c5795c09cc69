"""The resonance feedback loop: make a project's weakest images better, and prove it with numbers.

One round: take the current version (the "head") of each image in the weakest set (the lowest
`fraction` of the project by stored total score when the loop starts), render `CANDIDATES` children
of each head (img2img through the backend's `refine`: strengths 0.35 / 0.55 / 0.75, fresh seeds; the
second guided by the head's scores (`guidance_words`: a word for its weakest technical component,
and the memory's best palette when the head is off-style), the third with the style memory's best
learned modifier added), score
every child the way `quality_scores` scores new images (against the project's style centroid and
every other image's perceptual hash), and keep the best child only when it beats its head on the
total score *and* the gain is real:

* not a near-duplicate of another image of the project (pHash distance > `PROJECT_DUPLICATE_DISTANCE`
  to everything but its own lineage), and
* not out of the project's style (style consistency >= the lower of the project's threshold and the
  head's own consistency).

Every child is stored as an artifact whose lineage names its parent, kept or not, and scored into the
project's score table, so the report can be recomputed from the stored scores: improvement % =
100 * (mean total of the final heads - mean total of the weakest set at the start) / the start mean.
The loop stops after `rounds`, when the weakest set's mean reaches `target`, or when a round keeps
no child.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends.base import ImageBackend
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.workflows.batch_processor import BatchProcessor
from echo_pipeline.workflows.creative_engine import CreativeEngine

WEAKEST_FRACTION = 0.2
CANDIDATE_STRENGTHS = (0.35, 0.55, 0.75)
MIN_GAIN = 0.5  # total-score points a child must gain over its head to replace it
REPORT_DIR = "resonance/feedback"

NotifyFn = Callable[[str], None]


@dataclass
class Improvement:
    original: str  # the weak image the loop started from
    head: str  # its current best version (the original itself until a child wins)
    start_total: float
    total: float
    lineage: list[str] = field(default_factory=list)  # the kept children, oldest first


@dataclass
class RoundReport:
    round: int
    tried: int
    kept: int
    rejected_duplicate: int
    rejected_style: int
    mean_total: float  # of the weakest set's heads after the round
    improvement_pct: float


@dataclass
class LoopReport:
    project: str
    backend: str
    start_mean: float
    rounds: list[RoundReport]
    images: list[Improvement]
    stopped: str
    seconds: float
    report_path: str = ""

    @property
    def final_mean(self) -> float:
        return self.rounds[-1].mean_total if self.rounds else self.start_mean

    @property
    def improvement_pct(self) -> float:
        return improvement_pct(self.start_mean, self.final_mean)


def improvement_pct(start: float, end: float) -> float:
    return 100.0 * (end - start) / start if start > 0 else 0.0


#: The weakest technical component -> words that raise it, understood by the procedural renderer
#: (detail, light and saturation axes) and by diffusion models alike.
GUIDING_WORDS = {"sharpness": "intricate", "exposure": "brighter", "colourfulness": "vibrant"}
GUIDE_BELOW = 70.0  # a component under this is worth steering


def guidance_words(row: dict, best_palette: str | None, style_threshold: float) -> list[str]:
    """Words that steer a refinement towards what the head lacks: its weakest technical component
    (when under `GUIDE_BELOW`) and, when it is off-style, the memory's best palette."""
    words = []
    weakest = min(GUIDING_WORDS, key=lambda c: float(row.get(c, 100.0)))
    if float(row.get(weakest, 100.0)) < GUIDE_BELOW:
        words.append(GUIDING_WORDS[weakest])
    if best_palette and float(row.get("style_consistency", 100.0)) < style_threshold:
        words.append(f"{best_palette} palette")
    return words


def check_loop_limits(rounds: int, target: float | None, fraction: float = WEAKEST_FRACTION) -> None:
    """One-line errors for loop settings out of range (checked before a run starts, and in it)."""
    if not 1 <= rounds <= 20:
        raise InvalidInputError(f"--rounds {rounds} is out of range (1-20)")
    if target is not None and not 0 < target <= 100:
        raise InvalidInputError(f"--target {target} is out of range (0-100]")
    if not 0 < fraction <= 1:
        raise InvalidInputError(f"fraction {fraction} is out of range (0-1]")


def run_feedback_loop(engine: CreativeEngine, slug: str, backend: ImageBackend, *, rounds: int = 3,
                      target: float | None = None, fraction: float = WEAKEST_FRACTION,
                      run_id: str | None = None, notify: NotifyFn | None = None) -> LoopReport:
    from echo_pipeline.resonance.memory_system import load_memory, load_scores, save_scores
    from echo_pipeline.resonance.quality_assessor import PROJECT_DUPLICATE_DISTANCE
    from echo_pipeline.workflows.multi_modal import MADE_FROM_SOURCES

    check_loop_limits(rounds, target, fraction)
    started = time.perf_counter()
    store = engine.store
    spec = engine.projects.load(slug)
    scores = load_scores(store, slug)
    scores = scores[np.isfinite(scores["total"].astype(float))]
    # Videos, 3D models and live pieces are made from their sources, not refined by img2img: only
    # images and textures take part (a better concept image makes a better model next batch).
    catalog = store.catalog(slug)
    made = set(catalog.loc[catalog["media_type"].isin(sorted(MADE_FROM_SOURCES)), "artifact_id"].astype(str))
    scores = scores[~scores["artifact_id"].astype(str).isin(made)]
    if len(scores) < 2:
        raise InvalidInputError(f"project {slug!r} has {len(scores)} scored image(s); render and score a batch "
                                f"first: echo-os batch --project {slug}")
    weakest = scores.sort_values(["total", "artifact_id"]).head(max(1, math.ceil(fraction * len(scores))))
    images = [Improvement(original=str(a), head=str(a), start_total=float(t), total=float(t))
              for a, t in zip(weakest["artifact_id"], weakest["total"], strict=True)]
    start_mean = float(np.mean([i.start_total for i in images]))
    memory = load_memory(store, slug)
    centroid = np.asarray(memory.centroid, dtype=np.float32) if memory and memory.count else None
    modifier = next(iter(memory.learned_modifiers), None) if memory else None
    assessor = engine.quality_assessor()
    hashes = {str(a): str(h) for a, h in zip(scores["artifact_id"], scores["phash"], strict=True) if isinstance(h, str)}
    components = {str(r["artifact_id"]): r for r in scores.to_dict("records")}  # each image's scores
    best_palette = memory.best_palette if memory else None
    processor = BatchProcessor(store, backend)
    reports: list[RoundReport] = []
    stopped = f"{rounds} round(s) done"
    for number in range(1, rounds + 1):
        tried = kept = dup = off_style = 0
        # One batch per round (one catalog pass, one pool), then each image's children are judged.
        planned: list[list[RenderRequest]] = []
        for item in images:
            head = store.find(item.head, project=slug)
            guided = guidance_words(components.get(item.head, {}), best_palette, spec.style_threshold)
            words = [None, f"add {', '.join(guided)}" if guided else None, f"add {modifier}" if modifier else None]
            specs = [engine.refine_spec(head, words[k], strength=strength,
                                        seed=(head.request.seed + 7919 * number + 101 * k + 1) % 2**32)
                     for k, strength in enumerate(CANDIDATE_STRENGTHS)]
            planned.append([r for s in specs for r in engine.plan_requests(s)])
        result = processor.run([r for requests in planned for r in requests], run_id=run_id)
        stored = {r.artifact_id: r for r in result.new + result.existing}
        ids = iter([r.request_id for r in result.requests])  # as prepared (the ids), in the order planned
        frames = []
        for item, requests in zip(images, planned, strict=True):
            children: list[ArtifactRecord] = [stored[i] for i in [next(ids) for _ in requests] if i in stored]
            lineage = {item.original, *item.lineage}
            reference = {a: h for a, h in hashes.items() if a not in lineage}
            best: tuple[float, ArtifactRecord] | None = None
            for child in children:
                tried += 1
                frame = assessor.assess([(child.artifact_id, store.load_thumbnail(slug, child.artifact_id))],
                                        centroid=centroid, spread=memory.spread if memory else None,
                                        reference_hashes=reference, prompts=[child.request.prompt])
                frames.append(frame)
                row = frame.iloc[0]
                components[child.artifact_id] = row.to_dict()
                hashes[child.artifact_id] = str(row["phash"])
                # assess compared the child with `reference` already (pHash bits to the closest; NA: none)
                nearest = row["nearest_distance"]
                child_consistency = float(row["style_consistency"])
                if not pd.isna(nearest) and int(nearest) <= PROJECT_DUPLICATE_DISTANCE:
                    dup += 1
                    continue
                head_consistency = float(components.get(item.head, {}).get("style_consistency", spec.style_threshold))
                floor = min(spec.style_threshold, head_consistency)
                if math.isfinite(child_consistency) and child_consistency < floor:
                    off_style += 1
                    continue
                total = float(row["total"])
                if total >= item.total + MIN_GAIN and (best is None or total > best[0]):
                    best = (total, child)
            if best is not None:
                item.total, item.head = best[0], best[1].artifact_id
                item.lineage.append(best[1].artifact_id)
                kept += 1
        if frames:  # every child is stored with its scores, kept or not (the gain can be recomputed)
            save_scores(store, slug, pd.concat(frames, ignore_index=True))
        mean_total = float(np.mean([i.total for i in images]))
        reports.append(RoundReport(number, tried, kept, dup, off_style, mean_total,
                                   improvement_pct(start_mean, mean_total)))
        if notify is not None:
            notify(f"round {number}: kept {kept} of {tried} children; weakest set {start_mean:.1f} -> {mean_total:.1f} "
                   f"({improvement_pct(start_mean, mean_total):+.1f} %)")
        if target is not None and mean_total >= target:
            stopped = f"target {target:g} reached"
            break
        if kept == 0:
            stopped = "no child beat its parent this round"
            break
    report = LoopReport(project=slug, backend=backend.describe().backend, start_mean=start_mean,
                        rounds=reports, images=images, stopped=stopped, seconds=time.perf_counter() - started)
    report.report_path = store.write_project_file(
        slug, f"{REPORT_DIR}/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json",
        json.dumps(asdict(report) | {"improvement_pct": report.improvement_pct}, indent=2).encode())
    return report
