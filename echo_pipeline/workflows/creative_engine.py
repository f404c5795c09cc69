"""The creative engine: the one service the CLI, the API and the Dagster assets call.

It wires settings to the artifact store, the style library, the prompt engine and a backend, so each
interface stays a thin client: parse arguments, call the engine, present the result.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from typing import TYPE_CHECKING, Any

from echo_pipeline.artifacts.metadata import sha256_hex
from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.errors import InvalidInputError, NotFoundError
from echo_pipeline.naming import DEFAULT_PROJECT, project_slug
from echo_pipeline.render.backends.base import ImageBackend
from echo_pipeline.render.prompt_engine import PromptEngine, PromptSpec
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.render.style_manager import StyleLibrary, join_prompts
from echo_pipeline.settings import Settings
from echo_pipeline.workflows.batch_processor import BatchProcessor, BatchResult, ProgressCallback

if TYPE_CHECKING:
    from PIL import Image

    from echo_pipeline.workflows.projects import ProjectRef

# "add rain effects", "with fog", "plus stars": words added to the parent's prompt (the vision's
# `refine <id> "add rain effects"`); anything else is a new prompt for the same picture.
_REFINE_ADD = re.compile(r"^(?:add|adding|with|plus|and|more)\s+(?P<what>.+)$", re.IGNORECASE)
REFINE_STRENGTH = 0.5
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a")


class CreativeEngine:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.load()

    @cached_property
    def styles(self) -> StyleLibrary:
        return StyleLibrary(self.settings.styles_dir)

    @cached_property
    def prompts(self) -> PromptEngine:
        return PromptEngine(self.styles, self.settings.config_dir / "wildcards")

    @cached_property
    def store(self) -> ArtifactStore:
        return ArtifactStore.open(self.settings.artifact_root)

    @cached_property
    def scoring_weights(self):
        """The score weights of `configs/scoring.yaml` (built-in ones when it is absent)."""
        from echo_pipeline.resonance.quality_assessor import load_scoring_weights

        return load_scoring_weights(self.settings.config_dir)

    @cached_property
    def clip_scorer(self):
        """The configured CLIP model (settings' `clip:`), created once per engine (so once per run;
        it loads on first use), or None when CLIP scoring is off."""
        clip = self.settings.clip
        if not clip.model:
            return None
        from echo_pipeline.resonance.clip import ClipScorer

        return ClipScorer(clip.model, clip.pretrained, device=clip.device, aesthetic_head=clip.aesthetic_head,
                          allow_download=clip.allow_downloads)

    def quality_assessor(self):
        """The quality assessor every step that scores uses: the configured weights and CLIP model."""
        from echo_pipeline.resonance.quality_assessor import QualityAssessor

        return QualityAssessor(weights=self.scoring_weights, clip=self.clip_scorer)

    @cached_property
    def projects(self):
        from echo_pipeline.workflows.projects import ProjectRegistry

        return ProjectRegistry(self.settings.config_dir / "projects")

    def resolve_project(self, text: str | None, *, create: bool = False) -> ProjectRef:
        """The project a user's words name, the same way for every command (render, batch, gallery,
        artifacts, runs, plan): a spec by exact slug or name, then a project that only exists in the
        artifact store, then a unique prefix of a spec's name or slug; None -> `default`.

        Unknown -> NotFoundError with the closest names and how to create it; ambiguous ->
        InvalidInputError listing the candidates. `create=True` (plan) returns a new ProjectRef
        (source 'new') for an unknown name instead; nothing is written either way. See
        `ProjectRegistry.resolve_ref` for the exact order.
        """
        # Resolving only reads: a read-only or full store must not fail the write probe of `self.store`.
        return self.projects.resolve_ref(
            text, stored=lambda: ArtifactStore.open(self.settings.artifact_root, read_only=True).projects(),
            create=create)

    def plan_requests(self, spec: PromptSpec, *, media_sources: bool = True) -> list[RenderRequest]:
        """Validate the spec (project name, style, size, count) and expand it into requests.
        `media_sources=False`: media requests are left without their sources (a planned batch links
        them to its own requests, `multi_modal.link_plan_sources`)."""
        from echo_pipeline.workflows.multi_modal import MADE_FROM_SOURCES, with_sources

        project = project_slug(spec.project or DEFAULT_PROJECT)
        requests = self.prompts.build_requests(spec.model_copy(update={"project": project}))
        if spec.media_type in MADE_FROM_SOURCES:
            # A video, 3D model or interactive piece names the requests it is made from.
            requests = [with_sources(r, spec.media) for r in requests] if media_sources else requests
        elif spec.media and set(spec.media) == {"view"} and spec.media_type == "image":
            # A view kept in an interactive page, drawn by the live renderer as a PNG.
            requests = [r.model_copy(update={"media": {"kind": "view", "options": {"view": spec.media["view"]},
                                                       "sources": {}}}) for r in requests]
        elif spec.media:
            raise InvalidInputError(f"{spec.media_type} takes no media options ({', '.join(spec.media)})")
        return requests

    def render(
        self,
        spec: PromptSpec,
        backend: ImageBackend,
        *,
        run_id: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> BatchResult:
        """Render every request of `spec` not already stored with `backend` (owned by the caller, so a
        model is loaded once per run); everything is validated before any work."""
        return BatchProcessor(self.store, backend).run(self.plan_requests(spec), run_id=run_id, progress=progress)

    def init_image(self, init: str, project: str) -> ArtifactRecord:
        """The artifact an img2img command starts from: a stored artifact id (or `project/id`, or a
        unique prefix), or an image file, imported into `project` first so the child's lineage
        names a real parent (importing the same file again finds the same artifact)."""
        from pathlib import Path

        path = Path(init).expanduser()
        if path.is_file():
            return self.import_image(path, project)
        if any(sep in init for sep in ("\\", ".png", ".jpg", ".jpeg", ".webp")) or init.startswith((".", "~")):
            raise NotFoundError(f"init image {init!r} does not exist (give an image file or an artifact id)")
        if "/" in init:
            return self.store.find(init)
        try:
            return self.store.find(init, project=project)
        except NotFoundError:
            return self.store.find(init)  # a parent from another project

    def store_audio(self, path: str | os.PathLike[str], project: str) -> dict[str, Any]:
        """Copy an audio track (WAV, MP3, FLAC, OGG, M4A) into the project's store, named by its
        content hash, so a video made from it can be re-made from the record; returns the `audio`
        video option ({"name", "path", "sha256"}). The track is decoded once here, so a file that is
        not audio fails now with one line, not in the middle of a run."""
        from pathlib import Path

        from echo_pipeline.media.audio import load_audio

        file = Path(path).expanduser()
        if not file.is_file():
            raise NotFoundError(f"audio track {str(path)!r} does not exist")
        suffix = file.suffix.lower()
        if suffix not in AUDIO_SUFFIXES:
            raise InvalidInputError(f"audio track {file.name!r}: use one of {', '.join(AUDIO_SUFFIXES)}")
        load_audio(str(file))
        data = file.read_bytes()
        digest = sha256_hex(data)
        relpath = f"audio/{digest[:16]}{suffix}"
        if self.store.read_project_file(project, relpath) is None:
            self.store.write_project_file(project, relpath, data)
        return {"name": file.name, "path": relpath, "sha256": digest}

    def import_image(self, path: str | os.PathLike[str], project: str) -> ArtifactRecord:
        """Store an image file (PNG, JPEG, WebP...) as an artifact of `project` (backend 'import'),
        its id derived from the file's pixels, so importing twice stores it once. Sides above the
        render limit are scaled down to fit."""
        from PIL import Image, UnidentifiedImageError

        from echo_pipeline.artifacts.records import ArtifactRecord
        from echo_pipeline.render.backends.base import BackendDescription
        from echo_pipeline.render.requests import MAX_SIDE, MIN_SIDE

        project = project_slug(project)
        source = os.fspath(path)
        try:
            with Image.open(source) as opened:
                opened.load()
                image = opened.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise InvalidInputError(f"{source} is not a readable image ({exc.__class__.__name__})") from exc
        if min(image.size) < MIN_SIDE:
            raise InvalidInputError(f"{source} is {image.width}x{image.height}; each side must be at least {MIN_SIDE}")
        if max(image.size) > MAX_SIDE:
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        digest = sha256_hex(image.tobytes())[:16]
        name = os.path.basename(source)
        request = RenderRequest(prompt=f"imported image {name}", seed=0, width=image.width, height=image.height,
                                backend="import", model=digest, source_prompt=name, project=project)
        try:
            return self.store.record(project, request.request_id)
        except (NotFoundError, InvalidInputError):
            pass
        record = ArtifactRecord(artifact_id=request.request_id, project=project, request=request,
                                backend=BackendDescription(backend="import", model=name, model_hash=digest[:10]),
                                info={"imported_from": source, "pixels_sha256": digest})
        with self.store.project_lock(project):
            stored = self.store.save(record, image)
            self.store.append_catalog(project, [stored])
        return stored

    def refine_spec(self, parent: ArtifactRecord, instruction: str | None = None, *,
                    strength: float | None = None, seed: int | None = None) -> PromptSpec:
        """The img2img request that refines `parent`: its prompt with the instruction's words added
        ("add rain effects" -> "<parent prompt>, rain effects"), or a new prompt, or (no
        instruction) the same prompt for a variation; the parent's style, negative prompt, size,
        sampler settings and seed, `strength` (default 0.5) of change."""
        request = parent.request
        if request.media is not None:
            what = {"view": "a kept view"}.get(str(request.media.get("kind")), f"a {request.media_type}")
            raise InvalidInputError(f"{parent.artifact_id} is {what}, made from its sources, not refined by "
                                    "img2img: refine the image it was made from, or render it again")
        text = " ".join((instruction or "").split())
        style = None
        if request.style:
            try:
                style = self.styles.get(request.style)
            except NotFoundError:  # a style deleted since: keep the parent's styled prompt as it is
                style = None
        base = (request.source_prompt or request.prompt) if style else request.prompt
        added = _REFINE_ADD.match(text)
        prompt = join_prompts(base, added.group("what")) if added else (text or base)
        negative = request.negative_prompt
        if style and style.negative_prompt and negative.endswith(style.negative_prompt):
            negative = negative[: -len(style.negative_prompt)].rstrip(" ,")  # the style adds it again
        return PromptSpec(
            prompt=prompt, style=style.name if style else None, negative_prompt=negative, project=parent.project,
            seed=request.seed if seed is None else seed, width=request.width, height=request.height,
            steps=request.steps, cfg_scale=request.cfg_scale, sampler=request.sampler, tiling=request.tiling,
            media_type=request.media_type, parent_id=parent.artifact_id,
            strength=REFINE_STRENGTH if strength is None else strength,
        )

    def reference_images(self, sources: list[str]) -> list[tuple[str, Image.Image, str | None]]:
        """(name, image, prompt or None) for each reference a user named: an image file, a folder
        (its PNG/JPEG/WebP files), a glob, or a stored artifact id. The prompt comes from the
        artifact's record or the file's A1111/echo metadata, when there is one."""
        import glob as globbing
        from pathlib import Path

        from PIL import Image as PILImage

        from echo_pipeline.artifacts.metadata import parse_infotext

        suffixes = {".png", ".jpg", ".jpeg", ".webp"}
        found: list[tuple[str, Image.Image, str | None]] = []
        for source in sources:
            path = Path(source).expanduser()
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
            elif path.is_file():
                files = [path]
            elif any(c in source for c in "*?["):
                files = sorted(Path(p) for p in globbing.glob(str(path)) if Path(p).suffix.lower() in suffixes)
            else:
                record = self.store.find(source)
                found.append((record.artifact_id, self.store.load_image(record),
                              record.request.source_prompt or record.request.prompt))
                continue
            if not files:
                raise NotFoundError(f"no PNG, JPEG or WebP images in {source!r}")
            for file in files:
                try:
                    with PILImage.open(file) as opened:
                        opened.load()
                        text = getattr(opened, "text", None) or {}
                        prompt = None
                        if "parameters" in text:
                            prompt = parse_infotext(str(text["parameters"])).get("Prompt") or None
                        found.append((file.name, opened.convert("RGB"), prompt))
                except (OSError, ValueError) as exc:
                    raise InvalidInputError(f"{file} is not a readable image ({exc.__class__.__name__})") from exc
        return found
