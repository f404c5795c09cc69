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
from echo_pipeline.settings import BackendConfig

# (done, total) in work units of the backend's choosing over one `render` call (denoising steps for
# a sampler backend, images for the procedural one); `done` only grows and ends equal to `total`.
ProgressCallback = Callable[[int, int], None]



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
    png_text: dict[str, str] = field(default_factory=dict)  # extra PNG text chunks kept as they are (ComfyUI's prompt/workflow)


@dataclass
class ParentImage:
    """An existing artifact handed to `refine`: its pixels and its lineage record info."""

    artifact_id: str
    image: Image.Image
    request: RenderRequest
    info: dict[str, Any] = field(default_factory=dict)


class ImageBackend(abc.ABC):
    """Subclasses take one optional `BackendConfig` (`create_backend` passes it) and must not load a
    model or open a connection in `__init__`: that happens on first use, so a backend is cheap to
    create and `check_requests` / `describe` work before any heavy work starts."""

    name: ClassVar[str]
    capabilities: ClassVar[BackendCapabilities]

    def __init__(self, config: BackendConfig | None = None):
        self.config = config or BackendConfig()

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

    def check_usable(self) -> str | None:
        """Why this backend cannot render right now (weights missing, server down, no API key), or
        None when it can. Cheap: no model is loaded. `echo-os models` shows it."""
        return None

    def available_models(self) -> list[str]:
        """Models this backend could use besides the configured one (cached hub pipelines, a
        server's checkpoints, an API's model names), for `echo-os models`; cheap, may be empty."""
        return []

    def refine(self, parent: ParentImage, request: RenderRequest,
               progress: ProgressCallback | None = None) -> RenderedImage:
        """img2img: a variation of `parent` steered by `request` (strength = how far it may move)."""
        raise InvalidInputError(f"backend {self.name!r} cannot refine images (no img2img)")

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release models, sessions or connections."""
