"""The API's request and response bodies: strict (unknown fields are refused) and bounded.

Every bound is the product's own limit (prompt length, images per command, image sides, seeds,
sampler settings), so a request that passes here fails later only for reasons the entry points in
`defs/launch.py` check against the current state (an unknown style, a busy project, a full store).
Text fields refuse control characters and unpaired surrogates: they end up in PNG text chunks,
parquet files and Dagster's run storage, none of which should see them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.naming import MAX_PROJECT_NAME
from echo_pipeline.render.prompt_engine import MAX_COUNT
from echo_pipeline.render.requests import MAX_PROMPT_CHARS, MAX_SEED, MAX_SIDE, MIN_SIDE

MAX_BODY_BYTES = 64 * 1024
MAX_NAME_CHARS = 200  # style, backend, sampler names
MAX_MODEL_CHARS = 1000  # a hub id, a checkpoint name or a path on the server
MAX_ID_CHARS = 128
MIN_ID_CHARS = 4  # the store's shortest unique prefix (ArtifactStore.find)
# The store's artifact names (`ArtifactStore`'s `_NAME`), optionally `project/id`; '..' is refused apart.
ARTIFACT_REF_PATTERN = r"^([a-z0-9]+(-[a-z0-9]+)*/)?[A-Za-z0-9][A-Za-z0-9._-]*$"
ARTIFACT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
RUN_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"  # Dagster's run ids
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (an unpaired surrogate)") from None
    if _CONTROL.search(value):
        raise ValueError("text contains control characters")
    return value


def _no_dot_dot(value: str) -> str:
    if ".." in value:
        raise ValueError("an artifact id never contains '..'")
    return value


Text = Annotated[str, AfterValidator(_clean_text)]
ArtifactRef = Annotated[str, Field(min_length=MIN_ID_CHARS, max_length=MAX_ID_CHARS + 81,
                                   pattern=ARTIFACT_REF_PATTERN), AfterValidator(_no_dot_dot)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)


class RenderBody(_Body):
    """POST /api/render: what `echo-os render` takes, as JSON."""

    prompt: Text = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What to make; ranges "
                         "('warm fractal 01-09'), variants ('{warm|cool}'), wildcards and 'no X' constraints work.")
    project: Text | None = Field(default=None, max_length=MAX_PROJECT_NAME, description="Project name, slug or "
                                 "prefix (default: 'default'); its spec's backend, model, size and sampler apply.")
    style: Text | None = Field(default=None, max_length=MAX_NAME_CHARS, description="Style preset.")
    count: int = Field(default=1, ge=1, le=MAX_COUNT, description=f"Images per prompt (1-{MAX_COUNT} in total).")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="Base seed; image k uses seed+k.")
    width: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE)
    height: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE)
    negative_prompt: Text = Field(default="", max_length=MAX_PROMPT_CHARS)
    backend: Text | None = Field(default=None, max_length=MAX_NAME_CHARS,
                                 description="procedural (default), diffusers, comfyui, openai; or backend:model.")
    model: Text | None = Field(default=None, max_length=MAX_MODEL_CHARS)
    init: ArtifactRef | None = Field(default=None, description="img2img: the stored artifact to start from "
                                     "(id, unique prefix or project/id).")
    strength: float | None = Field(default=None, ge=0.0, le=1.0, description="img2img: 0 = same, 1 = new (0.6).")
    steps: int | None = Field(default=None, ge=1, le=500)
    cfg_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    sampler: Text | None = Field(default=None, max_length=MAX_NAME_CHARS)
    media_type: Literal["image", "texture", "video", "3d_model", "interactive"] = "image"
    tiling: bool = False
    frames: int | None = Field(default=None, ge=2, le=600, description="video: frames (default 48).")
    fps: int | None = Field(default=None, ge=1, le=60, description="video: frames per second (default 12).")
    loop: bool | None = Field(default=None, description="video: the last frame flows into the first.")
    motion: Literal["auto", "walk", "zoom", "cycle"] | None = Field(default=None, description="video: camera/parameter motion.")
    keyframes: int | None = Field(default=None, ge=1, le=8, description="video: keyframe images (default 3).")
    method: Literal["auto", "extrude", "heightfield", "shap-e"] | None = Field(
        default=None, description="3d_model: how the mesh is made from the concept image.")

    @property
    def media_options(self) -> dict[str, Any] | None:
        """The media options given, for `media_type` video or 3d_model (others take none)."""
        video = {k: v for k, v in (("frames", self.frames), ("fps", self.fps), ("loop", self.loop),
                                   ("motion", self.motion), ("keyframes", self.keyframes)) if v is not None}
        mesh = {"method": self.method} if self.method is not None else {}
        for kind, given in (("video", video), ("3d_model", mesh)):
            if given and self.media_type != kind:
                raise InvalidInputError(f"{next(iter(given))} is for media_type {kind}, not {self.media_type}")
        return (video if self.media_type == "video" else mesh if self.media_type == "3d_model" else {}) or None

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) when either is given (a missing side copies the other)."""
        if self.width is None and self.height is None:
            return None
        return (self.width or self.height or 0, self.height or self.width or 0)


class BatchBody(_Body):
    """POST /api/batch: the project's next batch (`echo-os batch`)."""

    project: Text = Field(min_length=1, max_length=MAX_PROJECT_NAME, description="Project name, slug or prefix.")
    count: int | None = Field(default=None, ge=1, le=MAX_COUNT, description="Images (default: the project's).")
    style: Text | None = Field(default=None, max_length=MAX_NAME_CHARS)


class RefineBody(_Body):
    """POST /api/refine: img2img of a stored image (`echo-os refine`)."""

    artifact: ArtifactRef = Field(description="Artifact id, unique prefix (4+ characters) or project/id.")
    prompt: Text | None = Field(default=None, max_length=MAX_PROMPT_CHARS, description="'add rain effects' adds "
                                "words; other text is a new prompt; none makes a variation.")
    strength: float | None = Field(default=None, ge=0.0, le=1.0, description="0 = same, 1 = new (default 0.5).")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    backend: Text | None = Field(default=None, max_length=MAX_NAME_CHARS)
    model: Text | None = Field(default=None, max_length=MAX_MODEL_CHARS)


class StyleBody(_Body):
    """POST /api/style: create or replace one of your own styles (built-in ones cannot be changed)."""

    name: Text = Field(min_length=1, max_length=MAX_NAME_CHARS)
    prompt: Text = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="Words the style adds; "
                         "'{prompt}' marks where the prompt goes, otherwise they are appended.")
    negative_prompt: Text = Field(default="", max_length=MAX_PROMPT_CHARS)


# -- responses ---------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. invalid_input, not_found, project_busy, unauthorized")
    message: str = Field(description="one line for people")
    field: str | None = Field(default=None, description="the offending field, e.g. body.count or query.limit")


class ErrorBody(BaseModel):
    error: ErrorDetail


class RunLinks(BaseModel):
    self: str


class RunAccepted(BaseModel):
    run_id: str
    status: str
    links: RunLinks


class RunError(BaseModel):
    code: str
    message: str


class RunProgress(BaseModel):
    done: float
    total: int


class RunStatus(BaseModel):
    run_id: str
    status: str = Field(description="QUEUED until Dagster has the run, then Dagster's status "
                        "(STARTING, STARTED, SUCCESS, FAILURE, CANCELED, ...)")
    kind: str | None = Field(default=None, description="render, batch or refine (runs this server queued)")
    job: str | None = None
    project: str | None = None
    created: datetime | None = None
    started: datetime | None = None
    seconds: float | None = None
    progress: RunProgress | None = None
    note: str | None = Field(default=None, description="what the run waits for, e.g. the gpu pool")
    result: dict[str, Any] | None = Field(default=None, description="the typed result once it succeeded")
    error: RunError | None = None
    links: RunLinks


class ArtifactLinks(BaseModel):
    self: str
    image: str


class ArtifactItem(BaseModel):
    artifact_id: str
    project: str
    created: datetime
    prompt: str
    source_prompt: str | None = None
    negative_prompt: str | None = None
    seed: int
    width: int
    height: int
    style: str | None = None
    backend: str | None = None
    model: str | None = None
    parent_id: str | None = None
    strength: float | None = None
    media_type: str | None = None
    run_id: str | None = None
    sha256: str | None = None
    score: float | None = Field(default=None, description="total score (0-100) when the project was scored")
    links: ArtifactLinks


class ArtifactPage(BaseModel):
    items: list[ArtifactItem]
    total: int
    limit: int
    offset: int
    next: str | None = Field(description="the next page's URL, or null on the last page")


class GalleryPage(BaseModel):
    filter: str
    items: list[dict[str, Any]] = Field(description="gallery entries (artifacts/gallery.py `gallery_entries`), "
                                        "newest first or ranked, each with its links")
    total: int
    limit: int
    offset: int
    next: str | None


class StyleOut(BaseModel):
    name: str
    prompt: str
    negative_prompt: str
    source: str


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    writes: Literal["token", "loopback"] = Field(description="token: writes need the bearer token; loopback: "
                                                 "no token is configured and writes come from loopback only")
    queued: int
    running: int
    queue_limit: int
