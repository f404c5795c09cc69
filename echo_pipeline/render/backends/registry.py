"""Backend registry: names -> implementations, imported lazily.

A backend module is imported only when that backend is asked for, so a heavy one (a diffusers
backend would pull in torch) never slows `echo-os --help` or the procedural path. A new backend is
one line in `_BACKENDS`; callers never change.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from echo_pipeline.errors import BackendUnavailableError, NotFoundError
from echo_pipeline.render.backends.base import ImageBackend

# name -> "module:ClassName"
_BACKENDS: dict[str, str] = {
    "procedural": "echo_pipeline.render.backends.procedural:ProceduralBackend",
}

# Names people ask for that cannot be offered, with the reason.
_UNAVAILABLE: dict[str, str] = {
    "midjourney": "Midjourney has no public API; use 'openai', 'diffusers' or 'comfyui' instead",
}


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type[ImageBackend]:
    key = (name or "").strip().lower()
    if key in _UNAVAILABLE:
        raise BackendUnavailableError(_UNAVAILABLE[key])
    if key not in _BACKENDS:
        close = difflib.get_close_matches(key, _BACKENDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise NotFoundError(f"unknown backend {name!r}{hint}; available: {', '.join(available_backends())}")
    module_name, class_name = _BACKENDS[key].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {key!r} cannot be loaded: {exc}") from exc
    return getattr(module, class_name)


def create_backend(name: str, **options: Any) -> ImageBackend:
    return backend_class(name)(**options)
