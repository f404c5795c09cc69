"""Render requests: the one description of "which pixels to make".

A `RenderRequest` holds everything that determines an image. Its `request_id` is a hash of exactly
those fields, so the same request always maps to the same artifact and re-rendering is a no-op.
Fields that only describe where an image belongs (project, style name, the user's source prompt,
numbering) are kept for lineage but excluded from the hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MIN_SIDE = 64
MAX_SIDE = 2048
MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 2000
MediaType = Literal["image", "texture", "video", "3d_model", "interactive"]

# Fields that decide the pixels; everything else in the request is bookkeeping.
PIXEL_FIELDS = (
    "prompt", "negative_prompt", "seed", "width", "height", "steps", "cfg_scale", "sampler",
    "backend", "model", "backend_version", "tiling", "parent_id", "strength",
)


class RenderRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(description="final positive prompt, style already applied")
    negative_prompt: str = ""
    seed: int = Field(ge=0, le=MAX_SEED)
    width: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE)
    height: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE)
    steps: int = Field(default=30, ge=1, le=500)
    cfg_scale: float = Field(default=7.0, ge=0.0, le=50.0)
    sampler: str = "Euler a"
    backend: str = "procedural"
    model: str = ""
    backend_version: str = Field(default="", description="backend code/model version: bump when pixels change")
    tiling: bool = False
    parent_id: str | None = Field(default=None, description="artifact refined by this request (img2img)")
    strength: float | None = Field(default=None, ge=0.0, le=1.0, description="img2img denoising strength")
    media: dict[str, Any] | None = Field(
        default=None, description="what a media artifact is made of and how (workflows/media_production.py): "
                                  "its kind, options (frames, fps, loop, method...) and source requests; hashed when set")
    # Bookkeeping (not hashed)
    source_prompt: str = Field(default="", description="the user's prompt before the style was applied")
    style: str | None = None
    project: str = "default"
    media_type: MediaType = "image"
    index: int = Field(default=0, ge=0, description="position in the prompt set")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("prompt is empty")
        if len(value) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is {len(value)} characters long; the limit is {MAX_PROMPT_CHARS}")
        return value

    @model_validator(mode="after")
    def _img2img_consistent(self) -> RenderRequest:
        if (self.parent_id is None) != (self.strength is None):
            raise ValueError("parent_id and strength go together (img2img needs both)")
        return self

    def pixel_key(self) -> dict:
        key = {name: getattr(self, name) for name in PIXEL_FIELDS}
        if self.media is not None:  # only then: ids of plain images stay what they always were
            key["media"] = self.media
        return key

    @property
    def request_id(self) -> str:
        canonical = json.dumps(self.pixel_key(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height
