"""Backend registry: names -> implementations, imported lazily.

A backend module is imported only when that backend is asked for, so a heavy one (diffusers pulls
in torch) never slows `echo-os --help` or the procedural path. A built-in backend is one line in
`_BACKENDS`; callers never change.

Extension point: another package adds a backend (a Midjourney bridge through some third-party
service, a company's in-house model server...) without touching this code, by declaring an entry
point in the `echo_os.backends` group that names an `ImageBackend` subclass::

    [project.entry-points."echo_os.backends"]
    mybackend = "my_package.backend:MyBackend"

A backend spec on the command line or in a project is `name` or `name:model`
(`diffusers:stabilityai/sd-turbo`, `diffusers:./models/tiny-sd`, `openai:gpt-image-1`).
"""

from __future__ import annotations

import difflib
import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from echo_pipeline.errors import BackendUnavailableError, InvalidInputError, NotFoundError
from echo_pipeline.render.backends.base import BackendConfig, ImageBackend

ENTRY_POINT_GROUP = "echo_os.backends"

# name -> "module:ClassName"
_BACKENDS: dict[str, str] = {
    "procedural": "echo_pipeline.render.backends.procedural:ProceduralBackend",
    "diffusers": "echo_pipeline.render.backends.diffusion:DiffusersBackend",
    "comfyui": "echo_pipeline.render.backends.comfyui:ComfyUIBackend",
    "openai": "echo_pipeline.render.backends.openai_images:OpenAIImagesBackend",
}

# Names people ask for that cannot be offered, with the reason.
_UNAVAILABLE: dict[str, str] = {
    "midjourney": "Midjourney has no public API; use 'openai', 'diffusers' or 'comfyui' instead, or install a "
                  f"package that registers a backend in the {ENTRY_POINT_GROUP!r} entry-point group",
}


@cache
def _plugins() -> dict[str, str]:
    """Backends other packages declare in the `echo_os.backends` entry-point group (built-ins win)."""
    return {ep.name.lower(): ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name.lower() not in _BACKENDS}


def _known() -> dict[str, str]:
    return {**_plugins(), **_BACKENDS}


def available_backends() -> list[str]:
    return sorted(_known())


def split_backend_spec(spec: str | None) -> tuple[str, str | None]:
    """'diffusers:stabilityai/sd-turbo' -> ('diffusers', 'stabilityai/sd-turbo'); 'comfyui' -> ('comfyui', None).

    Only the first ':' splits, so a model may itself hold one (a Windows path, a URL-like id)."""
    text = (spec or "").strip()
    if not text:
        raise InvalidInputError(f"backend is empty; available: {', '.join(available_backends())}")
    name, sep, model = text.partition(":")
    name = name.strip().lower()
    model = model.strip()
    if sep and not model:
        raise InvalidInputError(f"backend {text!r} names no model after ':' (e.g. diffusers:stabilityai/sd-turbo)")
    return name, (model or None)


def backend_class(name: str) -> type[ImageBackend]:
    key, _ = split_backend_spec(name) if (name or "").strip() else ("", None)
    if key in _UNAVAILABLE:
        raise BackendUnavailableError(_UNAVAILABLE[key])
    known = _known()
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise NotFoundError(f"unknown backend {name!r}{hint}; available: {', '.join(available_backends())}")
    module_name, class_name = known[key].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {key!r} cannot be loaded: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ImageBackend)):
        raise BackendUnavailableError(f"backend {key!r} ({known[key]}) is not an ImageBackend")
    return cls


def create_backend(spec: str, config: BackendConfig | None = None, **options: Any) -> ImageBackend:
    """A backend for `spec` ('name' or 'name:model'); a model in the spec overrides `config.model`.

    Creating one is cheap: models load and connections open on first use."""
    name, model = split_backend_spec(spec)
    config = config or BackendConfig()
    if model is not None:
        config = config.model_copy(update={"model": model})
    return backend_class(name)(config, **options)
