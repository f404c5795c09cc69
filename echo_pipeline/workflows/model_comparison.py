"""Model selection and comparison: which backends and models can render now, and which renders a
project's prompt set best.

`list_models` asks every registered backend whether it is usable right now (weights present,
server reachable, API key set) without loading a model. A comparison renders the same prompt set
on each backend (the caller runs the renders, see `defs/launch.py`'s `compare`), scores each
backend's images with the project's quality assessor and writes a contact sheet with one labelled
row per backend. The best backend is the one with the highest mean total score; a backend that
could not render is kept in the table with its reason, never silently dropped.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from echo_pipeline.artifacts.gallery import contact_sheet
from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.errors import EchoError, InvalidInputError
from echo_pipeline.render.backends.registry import available_backends, create_backend, split_backend_spec
from echo_pipeline.render.prompt_engine import PromptSpec
from echo_pipeline.resonance.quality_assessor import QualityAssessor
from echo_pipeline.settings import Settings
from echo_pipeline.workflows.projects import ProjectSpec

COMPARISON_CELL = 160
MAX_BACKENDS = 8
LABEL_HEIGHT = 22


@dataclass
class ModelRow:
    backend: str
    model: str
    usable: bool
    reason: str = ""
    configured: bool = False  # the settings' default model for this backend (or the only one)

    @property
    def spec(self) -> str:
        return f"{self.backend}:{self.model}" if self.model and self.backend != "procedural" else self.backend


def list_models(settings: Settings) -> list[ModelRow]:
    """One row per backend and model it offers: the configured default first, then the models it
    finds (cached hub pipelines, a server's checkpoints, an API's models). Cheap: nothing loads."""
    rows: list[ModelRow] = []
    for name in available_backends():
        try:
            backend = create_backend(name, settings.backend_config(name))
            try:
                configured = backend.describe().model
            except EchoError:  # e.g. diffusers with no model configured: check_usable says so
                configured = ""
            reason = backend.check_usable()
            rows.append(ModelRow(name, configured, reason is None, reason or "", configured=True))
            for model in backend.available_models():
                if model != configured:
                    why = create_backend(name, settings.backend_config(name, model)).check_usable()
                    rows.append(ModelRow(name, model, why is None, why or ""))
            backend.close()
        except EchoError as exc:
            rows.append(ModelRow(name, "", False, str(exc)))
    return rows


def comparison_specs(spec: ProjectSpec, count: int) -> list[PromptSpec]:
    """The project's first batch of image prompts, `count` images: the same on every backend."""
    from echo_pipeline.workflows.visual_planner import plan_project, task_prompt_specs

    if not 1 <= count <= 16:
        raise InvalidInputError(f"--count {count} is out of range for a comparison (1-16 images per backend)")
    specs = [s for s in task_prompt_specs(plan_project(spec), spec, batch=0) if s.media_type == "image"]
    if not specs:
        raise InvalidInputError(f"project {spec.slug!r} plans no image task to compare backends on")
    return [specs[0].model_copy(update={"count": count})]


def parse_backends(text: str) -> list[str]:
    """'procedural,diffusers:./tiny,comfyui' -> the backend specs, checked and without repeats."""
    specs = list(dict.fromkeys(part.strip() for part in (text or "").split(",") if part.strip()))
    if len(specs) < 2:
        raise InvalidInputError("--backends needs at least two backends to compare, e.g. procedural,diffusers:<model>")
    if len(specs) > MAX_BACKENDS:
        raise InvalidInputError(f"--backends names {len(specs)} backends; compare at most {MAX_BACKENDS} at once")
    for spec in specs:
        split_backend_spec(spec)
    return specs


@dataclass
class ComparisonRow:
    backend: str  # the spec as given: name or name:model
    model: str = ""
    records: list[ArtifactRecord] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""  # why this backend rendered nothing
    mean_total: float | None = None
    mean_technical: float | None = None
    mean_consistency: float | None = None  # within this backend's images
    mean_uniqueness: float | None = None

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.records)

    @property
    def seconds_per_image(self) -> float | None:
        return round(self.seconds / len(self.records), 3) if self.records and self.seconds else None


@dataclass
class Comparison:
    project: str
    prompt: str
    rows: list[ComparisonRow]
    sheet_path: str = ""
    selected: ComparisonRow | None = None

    @property
    def best(self) -> ComparisonRow | None:
        scored = [r for r in self.rows if r.ok and r.mean_total is not None and not math.isnan(r.mean_total)]
        return max(scored, key=lambda r: r.mean_total or 0.0) if scored else None


def score_row(store: ArtifactStore, row: ComparisonRow, assessor: QualityAssessor) -> None:
    """Fill the row's mean scores from its images (the thumbnails, like the project's own scoring)."""
    if not row.records:
        return
    items = [(r.artifact_id, store.load_thumbnail(r.project, r.artifact_id)) for r in row.records]
    frame = assessor.assess(items)

    def mean(column: str) -> float | None:
        value = float(frame[column].mean()) if column in frame and len(frame) else float("nan")
        return None if math.isnan(value) else round(value, 1)

    row.mean_total, row.mean_technical = mean("total"), mean("technical")
    row.mean_consistency, row.mean_uniqueness = mean("style_consistency"), mean("uniqueness")


def comparison_sheet(store: ArtifactStore, comparison: Comparison, cell: int = COMPARISON_CELL) -> Image.Image:
    """One labelled row per backend ('procedural  total 62.1'), its images side by side."""
    columns = max([len(r.records) for r in comparison.rows] + [1])
    strips = []
    for row in comparison.rows:
        blank = Image.new("RGB", (cell, cell), (40, 40, 40))
        images = [store.load_image(r) for r in row.records]
        grid = contact_sheet(images + [blank] * (columns - len(images)), columns=columns, cell=cell)
        label = Image.new("RGB", (grid.width, LABEL_HEIGHT), (20, 20, 24))
        text = row.backend + (f"   total {row.mean_total}" if row.mean_total is not None else f"   {row.error[:80]}")
        ImageDraw.Draw(label).text((6, 5), text, fill=(235, 235, 235))
        strips += [label, grid]
    width = max(s.width for s in strips)
    sheet = Image.new("RGB", (width, sum(s.height for s in strips)), (20, 20, 24))
    y = 0
    for strip in strips:
        sheet.paste(strip, (0, y))
        y += strip.height
    return sheet


def save_comparison_sheet(store: ArtifactStore, comparison: Comparison) -> str:
    """Write the sheet into the project's folder (`comparisons/<UTC time>.png`); returns its path."""
    buf = io.BytesIO()
    comparison_sheet(store, comparison).save(buf, format="PNG")
    relpath = f"comparisons/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.png"
    store.write_project_file(comparison.project, relpath, buf.getvalue())
    comparison.sheet_path = store.project_file_path(comparison.project, relpath)
    return comparison.sheet_path
