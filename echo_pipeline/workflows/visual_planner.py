"""The visual planner: a project spec -> a plan of typed tasks with dependencies -> prompt specs.

Planning is deterministic: the same spec gives an identical plan (same task ids, prompts, counts),
and `Plan.created_from` is a hash of exactly the spec fields that decide the plan, so a stored plan
can be checked for staleness (`plan_is_current`).

How a project's `count` (n images per batch) is split across renderable tasks, by what the intent
(plus the spec's media_types) implies:

- 3D / game assets: t1-concept (image, ceil(n/2)), t2-texture (texture, floor(n/2), <- t1),
  t3-model (3d_model, <- t1, t2);
- textures only (the text itself names textures/materials/patterns): t1-texture (texture, n);
- images and textures: t1-images (image, ceil(n/2)), t2-texture (texture, floor(n/2), <- t1);
- a collection (NFT, collection, series): t1-collection (image, n), one coherent series;
- anything else: t1-images (image, n);
- with video, the image task is t1-keyframes (unless it is a concept/collection task) and a last
  task tN-video (video, 1 clip, <- t1) is added;
- with interactive, a last task tN-interactive (1 live HTML piece, <- t1) is added.

3d_model and video tasks are made from the batch's own images of the tasks they depend on (see
`multi_modal.link_plan_sources`): concept -> texture -> 3d_model, keyframes -> video. Texture, concept and 3d_model prompts carry the material the subject implies when it
names none ("medieval fantasy weapons" -> "forged steel": `multi_modal.material_hint`). When `count` is too small to give every renderable task an image (count 1 with
concept + texture), the task left without images is kept in the plan, not renderable, with a note.

Seeds (`task_prompt_specs`): batch b of a task starts at
    base = spec.seed if set, else stable_seed("<slug>|<task id>|<task prompt>")
    seed = (base + b * BATCH_SEED_STRIDE) mod 2**32,   BATCH_SEED_STRIDE = 100_003
and image k of the batch gets seed + k (prompt_engine). The stride is a prime above MAX_COUNT (1000),
so batches never share seeds (until the 32-bit wrap after ~42,900 batches); the same batch number
always yields the same requests (a killed batch resumes without duplicates) and the next batch
number yields new images.

References (`spec.references`, `echo-os plan ... --ref a.png --ref b.jpg`): at plan time
`prepare_references` copies each file into the project's store (`references/<sha256[:16]>.<ext>`),
imports it as an artifact (the img2img parent, as `render --init FILE` does) and learns a style
preset from all of them (`style_learning.learn_from_images`, as `memory --learn-from` does), named
`references-<slug>`. The plan then gives its image tasks (images, collection, keyframes, concept)
those artifacts as `init`: batch b of such a task is img2img of reference b mod n at strength
`REFERENCE_STRENGTH`, so successive batches start from each reference in turn; tasks without a
style of the spec's own use the learned one (a style the spec names wins). Textures, 3D models and
videos are made from those images as before.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, model_validator

from echo_pipeline.errors import EchoError, InvalidInputError
from echo_pipeline.render.prompt_engine import _RANGE, PromptSpec, stable_seed
from echo_pipeline.render.requests import MAX_SEED, MAX_SIDE, MIN_SIDE, MediaType
from echo_pipeline.workflows.intent import Intent, parse_intent
from echo_pipeline.workflows.multi_modal import (
    TEXTURE_WORDS,
    media_defaults,
    media_prompt,
    not_renderable_reason,
    order_media_types,
)
from echo_pipeline.workflows.projects import ProjectSpec, check_references

if TYPE_CHECKING:
    from echo_pipeline.workflows.creative_engine import CreativeEngine

#: Bump when a planner change alters plans (task ids, prompts, splits): it is part of `created_from`.
PLANNER_VERSION = "2"
#: Seed distance between successive batches of the same task (prime, > MAX_COUNT images per batch).
BATCH_SEED_STRIDE = 100_003
#: Spec fields that decide the plan (seed, backend, schedule, style_threshold and style_target do not).
PLAN_FIELDS = ("name", "slug", "intent", "constraints", "style", "width", "height", "count", "media_types")
#: img2img strength of the images made from a reference: far enough that they are new pictures (not
#: near-duplicates of the reference), close enough that its composition and colours carry over.
REFERENCE_STRENGTH = 0.75
#: Image roles that start from the references (img2img); textures and media are made from them.
REFERENCE_ROLES = ("images", "collection", "keyframes", "concept")
REFERENCES_DIR = "references"



class Task(BaseModel):
    id: str = Field(description="stable id, e.g. 't1-concept'")
    media_type: MediaType
    title: str
    prompt: str = Field(description="engineered prompt (style and negative terms are applied when rendering)")
    count: int = Field(ge=0, description="images (or planned outputs) per batch")
    style: str | None = None
    width: int = Field(ge=MIN_SIDE, le=MAX_SIDE)
    height: int = Field(ge=MIN_SIDE, le=MAX_SIDE)
    tiling: bool = False
    depends_on: list[str] = Field(default_factory=list)
    renderable: bool = True
    notes: str = ""
    init: list[str] = Field(default_factory=list, description="img2img: reference artifacts; batch b starts "
                            "from init[b % len(init)]")
    strength: float | None = Field(default=None, ge=0.0, le=1.0, description="img2img strength when init is set")


class PlanReference(BaseModel):
    """A reference image of the project, as `prepare_references` stored it."""

    source: str = Field(description="the file the spec names")
    file: str = Field(description="its copy among the project files, e.g. references/1f2e3d4c5b6a7980.png")
    sha256: str = Field(description="sha256 of the file's bytes (first 16 hex digits)")
    artifact_id: str = Field(description="the imported artifact: the img2img parent")
    width: int
    height: int
    prompt: str | None = Field(default=None, description="the prompt in the file's PNG metadata, if any")


class Plan(BaseModel):
    project: str = Field(description="project slug")
    intent: Intent
    tasks: list[Task]
    references: list[PlanReference] = Field(default_factory=list)
    reference_style: str | None = Field(default=None, description="the style preset learned from the references")
    created_from: str = Field(description="hash of the spec fields that decide the plan (PLAN_FIELDS + planner version)")

    @model_validator(mode="after")
    def _check_graph(self) -> Plan:
        ids = [t.id for t in self.tasks]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate task id {dupes[0]!r}")
        known = set(ids)
        for task in self.tasks:
            for dep in task.depends_on:
                if dep not in known:
                    raise ValueError(f"task {task.id!r} depends on unknown task {dep!r}")
                if dep == task.id:
                    raise ValueError(f"task {task.id!r} depends on itself")
        self.ordered()  # raises on cycles
        return self

    def get(self, task_id: str) -> Task:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise InvalidInputError(f"plan of {self.project!r} has no task {task_id!r} (tasks: {', '.join(t.id for t in self.tasks)})")

    def ordered(self) -> list[Task]:
        """Tasks in dependency order (Kahn's algorithm; ties keep plan order)."""
        remaining = {t.id: set(t.depends_on) for t in self.tasks}
        done: set[str] = set()
        order: list[Task] = []
        while remaining:
            ready = [t for t in self.tasks if t.id in remaining and remaining[t.id] <= done]
            if not ready:
                raise ValueError(f"plan of {self.project!r} has a dependency cycle among {', '.join(sorted(remaining))}")
            for task in ready:
                order.append(task)
                done.add(task.id)
                del remaining[task.id]
        return order

    def renderable_tasks(self) -> list[Task]:
        """Tasks rendered in a batch, in dependency order."""
        return [t for t in self.ordered() if t.renderable and t.count > 0]

    @property
    def image_count(self) -> int:
        """Images (and textures) rendered per batch: the spec's count; models and videos come on top."""
        return sum(t.count for t in self.renderable_tasks() if t.media_type in ("image", "texture"))

    @property
    def media_types(self) -> list[str]:
        return order_media_types(t.media_type for t in self.tasks)

    def to_table_rows(self) -> list[dict[str, str]]:
        """One row of strings per task, in dependency order, for a Rich table or --json."""
        return [
            {
                "id": t.id,
                "type": t.media_type,
                "title": t.title,
                "count": str(t.count),
                "size": f"{t.width}x{t.height}" + (" tiling" if t.tiling else ""),
                "depends_on": ", ".join(t.depends_on) or "-",
                "status": "render" if t.renderable else "planned",
                "prompt": t.prompt,
                "notes": t.notes,
                "init": ", ".join(t.init) or "-",
            }
            for t in self.ordered()
        ]

    def mermaid(self) -> str:
        """The task graph as a Mermaid flowchart (`graph LR`): one node per task (id, media type,
        count) and an edge per dependency; references feed the tasks that start from them."""
        def node(task_id: str) -> str:
            return re.sub(r"[^A-Za-z0-9_]", "_", task_id)

        lines = ["graph LR"]
        for i, ref in enumerate(self.references, start=1):
            name = ref.source.replace("\\", "/").rsplit("/", 1)[-1]
            lines.append(f'    ref{i}[/"reference: {_mermaid_text(name)}"/]')
        for task in self.ordered():
            status = "" if task.renderable else ", planned"
            label = f"{task.id}<br/>{task.media_type} x{task.count}{status}"
            lines.append(f'    {node(task.id)}["{_mermaid_text(label)}"]')
        for i, ref in enumerate(self.references, start=1):
            lines.extend(f"    ref{i} -.-> {node(t.id)}" for t in self.ordered() if ref.artifact_id in t.init)
        lines.extend(f"    {node(dep)} --> {node(task.id)}" for task in self.ordered() for dep in task.depends_on)
        return "\n".join(lines)


def _mermaid_text(text: str) -> str:
    """Text safe inside a quoted Mermaid label (quotes and brackets as HTML entities)."""
    return (text.replace("&", "&amp;").replace('"', "&quot;").replace("[", "&#91;").replace("]", "&#93;")
            .replace("\n", " "))


def plan_fingerprint(spec: ProjectSpec) -> str:
    """Hash of the spec fields that decide the plan, plus the planner version."""
    data = spec.model_dump(mode="json", include=set(PLAN_FIELDS))
    data["planner_version"] = PLANNER_VERSION
    if spec.references:  # only then: the plans of projects without references keep their fingerprint
        data["references"] = list(spec.references)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def plan_is_current(plan: Plan, spec: ProjectSpec) -> bool:
    """False when the spec (or the planner) changed since the plan was made."""
    return plan.project == spec.slug and plan.created_from == plan_fingerprint(spec)


def _split(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` near-equal shares, larger ones first: 5, 2 -> [3, 2]."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def plan_project(spec: ProjectSpec, references: Sequence[PlanReference] = (),
                 reference_style: str | None = None) -> Plan:
    """The plan of a project (deterministic: same spec and references, identical plan).

    `references` (from `prepare_references`) become the `init` of the image tasks, and
    `reference_style` their style when the spec names none."""
    intent = parse_intent(spec.name, spec.intent, spec.constraints)
    media = set(order_media_types([*spec.media_types, *intent.media_types]))
    subject = intent.subject
    range_note = ""
    stripped = " ".join(_RANGE.sub(" ", subject).split()).strip(" ,")
    if stripped != subject and stripped:
        range_note = f"numbered range in {subject!r} left out: the project count ({spec.count}) decides how many images"
        subject = stripped

    has_3d, has_video, has_texture = "3d_model" in media, "video" in media, "texture" in media
    texture_only = has_texture and not has_3d and bool(TEXTURE_WORDS.search(subject))
    n = spec.count
    tasks: list[Task] = []

    def add(role: str, media_type: str, title: str, count: int, depends_on: list[str], notes: str, prompt_role: str | None = None) -> Task:
        defaults = media_defaults(media_type, spec.width, spec.height)
        renderable = defaults["renderable"] and count > 0
        if not defaults["renderable"]:
            reason = not_renderable_reason(media_type) or ""
            notes = f"{notes}; {reason}" if notes else reason
        from_references = bool(references) and role in REFERENCE_ROLES
        if from_references:
            notes = f"{notes}; img2img from {len(references)} reference(s), one per batch in turn"
        task = Task(
            id=f"t{len(tasks) + 1}-{role}",
            media_type=media_type,
            title=title,
            prompt=media_prompt(prompt_role or media_type, subject),
            count=count,
            style=spec.style or reference_style,
            width=defaults["width"],
            height=defaults["height"],
            tiling=defaults["tiling"],
            depends_on=depends_on,
            renderable=renderable,
            notes="; ".join(x for x in (notes, range_note if media_type in ("image", "texture") else "") if x),
            init=[r.artifact_id for r in references] if from_references else [],
            strength=REFERENCE_STRENGTH if from_references else None,
        )
        tasks.append(task)
        return task

    def no_images_note(other: Task) -> str:
        return (f"no images this batch: count {n} all goes to {other.id}; "
                f"set the project count to 2 or more to render this task")

    if has_3d:
        c_concept, c_texture = _split(n, 2)
        concept = add("concept", "image", f"Concept art: {subject}", c_concept, [],
                      "concept designs the textures and 3D models are made from", prompt_role="concept")
        texture = add("texture", "texture", f"Textures: {subject}", c_texture, [concept.id],
                      no_images_note(concept) if c_texture == 0 else "seamless, tileable material textures for the models")
        add("model", "3d_model", f"3D models: {subject}", c_concept, [concept.id, texture.id],
            f"one model per concept design of {concept.id}, textured with {texture.id}")
        first = concept
    elif texture_only:
        first = add("texture", "texture", f"Textures: {subject}", n, [], "seamless, tileable textures")
    elif has_texture:
        c_images, c_texture = _split(n, 2)
        role = "collection" if intent.collection else ("keyframes" if has_video else "images")
        first = add(role, "image", f"Images: {subject}", c_images, [], "reference images for the textures",
                    prompt_role="keyframes" if role == "keyframes" else "image")
        add("texture", "texture", f"Textures: {subject}", c_texture, [first.id],
            no_images_note(first) if c_texture == 0 else f"seamless textures in the look of {first.id}")
    elif intent.collection:
        first = add("collection", "image", f"Collection: {subject}", n, [],
                    f"the collection: all {n} images of each batch, one coherent series")
    elif has_video:
        first = add("keyframes", "image", f"Keyframes: {subject}", n, [], "keyframe images for the video",
                    prompt_role="keyframes")
    else:
        first = add("images", "image", f"Images: {subject}", n, [], f"all {n} images of each batch")

    if has_video:
        add("video", "video", f"Video: {subject}", 1, [first.id], f"one clip per batch from the images of {first.id}")
    if "interactive" in media:
        add("interactive", "interactive", f"Interactive: {subject}", 1, [first.id],
            f"one live piece per batch, drawn from the parameters of an image of {first.id}")

    return Plan(project=spec.slug, intent=intent, tasks=tasks, created_from=plan_fingerprint(spec),
                references=list(references), reference_style=reference_style if references else None)


def reference_style_name(slug: str) -> str:
    return f"references-{slug}"


def prepare_references(engine: CreativeEngine, spec: ProjectSpec) -> tuple[list[PlanReference], str | None]:
    """Store the spec's reference images in its project and learn their style (see the module
    docstring): (the references, the learned style's name), or ([], None) without references.

    Each file is checked first (it exists and is an image: one-line InvalidInputError/NotFoundError);
    storing is idempotent (content-hashed copies, artifacts keyed by pixels), and the style preset is
    written only when what was learned differs from what it holds."""
    from PIL import Image

    from echo_pipeline.resonance.style_learning import learn_from_images

    if not spec.references:
        return [], None
    paths = check_references(spec.references)
    stored: list[PlanReference] = []
    images = []
    for source, path in zip(spec.references, paths, strict=True):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:16]
        suffix = path.suffix.lower() if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp") else ".img"
        relpath = f"{REFERENCES_DIR}/{digest}{suffix}"
        if engine.store.read_project_file(spec.slug, relpath) is None:
            engine.store.write_project_file(spec.slug, relpath, data)
        record = engine.import_image(path, spec.slug)
        prompt = None
        with Image.open(path) as opened:
            text = getattr(opened, "text", None) or {}
            images.append(opened.convert("RGB"))
        if "parameters" in text:
            from echo_pipeline.artifacts.metadata import parse_infotext

            prompt = parse_infotext(str(text["parameters"])).get("Prompt") or None
        stored.append(PlanReference(source=source, file=relpath, sha256=digest, artifact_id=record.artifact_id,
                                    width=record.request.width, height=record.request.height, prompt=prompt))
    learned = learn_from_images(images, [r.prompt for r in stored])
    name = reference_style_name(spec.slug)
    try:
        current = engine.styles.get(name).prompt
    except EchoError:
        current = None
    if current != learned.description:
        engine.styles.create(name, learned.description, replace=True)
    return stored, name


def batch_seed(spec: ProjectSpec, task: Task, batch: int) -> int:
    """First seed of `task` in batch number `batch` (see the module docstring)."""
    base = spec.seed if spec.seed is not None else stable_seed(f"{spec.slug}|{task.id}|{task.prompt}")
    return (base + batch * BATCH_SEED_STRIDE) % (MAX_SEED + 1)


def task_prompt_specs(plan: Plan, spec: ProjectSpec, *, batch: int = 0) -> list[PromptSpec]:
    """One PromptSpec per renderable task of `plan`, for batch number `batch` (0, 1, 2, ...).

    The same batch number always gives identical specs (and so identical render requests); the next
    batch number gives new seeds, so new images.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise InvalidInputError(f"batch number must be a whole number >= 0 (got {batch!r})")
    if plan.project != spec.slug:
        raise InvalidInputError(f"plan is for project {plan.project!r}, not {spec.slug!r}")
    return [
        PromptSpec(
            prompt=task.prompt,
            parent_id=task.init[batch % len(task.init)] if task.init else None,
            strength=(REFERENCE_STRENGTH if task.strength is None else task.strength) if task.init else None,
            count=task.count,
            seed=batch_seed(spec, task, batch),
            style=task.style,
            constraints=list(plan.intent.constraints),
            width=task.width,
            height=task.height,
            tiling=task.tiling,
            steps=spec.steps,
            cfg_scale=spec.cfg_scale,
            sampler=spec.sampler,
            project=spec.slug,
            media_type=task.media_type,
        )
        for task in plan.renderable_tasks()
    ]
