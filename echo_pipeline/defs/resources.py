"""Resources: the creative engine (settings, store, styles, projects) and the image backends.

Backends are created once per run and closed at its end, so a diffusers model is loaded once.
"""


from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from echo_pipeline.render.backends.base import ImageBackend
from echo_pipeline.settings import Settings
from echo_pipeline.workflows.creative_engine import CreativeEngine


class EchoResource(dg.ConfigurableResource):
    """Where artifacts and configs live (None = the same defaults as the CLI)."""

    artifact_root: Optional[str] = None
    config_dir: Optional[str] = None
    _engine: Optional[CreativeEngine] = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._engine = None  # settings (and their environment) are read fresh for every run

    def engine(self) -> CreativeEngine:
        if self._engine is None:
            self._engine = CreativeEngine(Settings.load(self.artifact_root, self.config_dir))
        return self._engine


class ImageBackendResource(dg.ConfigurableResource):
    """Creates each named backend once per run (the project spec names which)."""

    default_backend: str = "procedural"
    _backends: dict = PrivateAttr(default_factory=dict)

    def get(self, name: Optional[str] = None) -> ImageBackend:
        from echo_pipeline.render.backends.registry import create_backend

        key = name or self.default_backend
        if key not in self._backends:
            self._backends[key] = create_backend(key)
        return self._backends[key]

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
