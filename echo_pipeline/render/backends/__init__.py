"""Image backends: one protocol (`base.ImageBackend`), one registry (`registry`)."""

from echo_pipeline.render.backends.base import (
    BackendCapabilities,
    BackendConfig,
    BackendDescription,
    ImageBackend,
    ParentImage,
    RenderedImage,
)
from echo_pipeline.render.backends.registry import available_backends, create_backend

__all__ = [
    "BackendCapabilities",
    "BackendConfig",
    "BackendDescription",
    "ImageBackend",
    "ParentImage",
    "RenderedImage",
    "available_backends",
    "create_backend",
]
