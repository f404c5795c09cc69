"""The backend protocol every image generator implements.

Modelled on diffusers pipelines: `check_requests` validates everything up front with explicit
errors, then `render` streams images one at a time (a generator, so a batch never sits in memory and
a crash loses at most the image in flight). `refine` is img2img of an existing artifact.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image
from pydantic import BaseModel, ConfigDict

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.requests import RenderRequest

ProgressCallback = Callable[[int, int], None]  # (done, total)


class BackendCapabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    txt2img: bool = True
    img2img: bool = False
    tiling: bool = False
    negative_prompt: bool = True
    sampler: bool = True  # runs a sampler (steps, sampler, CFG scale mean something); False for procedural art
    min_side: int = 64
    max_side: int = 2048
    size_multiple: int = 1


class BackendDescription(BaseModel):
    """Recorded in every artifact: which backend, model and version made it."""

    model_config = ConfigDict(frozen=True)

    backend: str
    model: str
    model_hash: str = ""
    version: str = ""


@dataclass
class RenderedImage:
    request: RenderRequest
    image: Image.Image
    info: dict[str, Any] = field(default_factory=dict)  # backend-specific lineage (motif, revised_prompt...)


@dataclass
class ParentImage:
    """An existing artifact handed to `refine`: its pixels and its lineage record info."""

    artifact_id: str
    image: Image.Image
    request: RenderRequest
    info: dict[str, Any] = field(default_factory=dict)


class ImageBackend(abc.ABC):
    name: ClassVar[str]
    capabilities: ClassVar[BackendCapabilities]

    @abc.abstractmethod
    def describe(self) -> BackendDescription:
        """Backend, model id and model hash; stable for one loaded model."""

    def prepare(self, request: RenderRequest) -> RenderRequest:
        """Fill in the backend's identity so it enters the request hash."""
        desc = self.describe()
        return request.model_copy(update={"backend": desc.backend, "model": desc.model, "backend_version": desc.version})

    @classmethod
    def check_requests(cls, requests: Sequence[RenderRequest]) -> None:
        """Raise `InvalidInputError` for the first request this backend cannot render.

        A classmethod: inputs are checked before any backend (or model) is created."""
        caps = cls.capabilities
        for request in requests:
            for side_name, side in (("width", request.width), ("height", request.height)):
                if not caps.min_side <= side <= caps.max_side:
                    raise InvalidInputError(
                        f"{side_name} {side} is out of range for backend {cls.name!r} "
                        f"({caps.min_side}-{caps.max_side})"
                    )
                if side % caps.size_multiple:
                    raise InvalidInputError(
                        f"{side_name} {side} must be a multiple of {caps.size_multiple} for backend {cls.name!r}"
                    )
            if request.tiling and not caps.tiling:
                raise InvalidInputError(f"backend {cls.name!r} cannot render tiling images")
            if request.negative_prompt and not caps.negative_prompt:
                raise InvalidInputError(f"backend {cls.name!r} does not support negative prompts")
            if request.parent_id is not None and not caps.img2img:
                raise InvalidInputError(f"backend {cls.name!r} cannot refine images (no img2img)")

    @abc.abstractmethod
    def render(
        self, requests: Sequence[RenderRequest], progress: ProgressCallback | None = None
    ) -> Iterator[RenderedImage]:
        """txt2img: yield one `RenderedImage` per request, in order, as each finishes."""

    def prefetch(self, requests: Sequence[RenderRequest]) -> None:  # noqa: B027 - optional hook
        """Optionally start rendering `requests` now, so a later `render` of exactly these requests
        (same ids, same order) yields results already under way, e.g. while the caller sets up a
        Dagster run. Any other `render` call works as usual; `close` drops what was not consumed.
        It runs before the run holds its `gpu` pool slot: only work that needs no exclusive device
        (CPU rendering, reading files) belongs here, never loading a model onto a GPU."""

    def refine(self, parent: ParentImage, request: RenderRequest) -> RenderedImage:
        """img2img: a variation of `parent` steered by `request` (strength = how far it may move)."""
        raise InvalidInputError(f"backend {self.name!r} cannot refine images (no img2img)")

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release models, sessions or connections."""
