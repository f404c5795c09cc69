"""Resources: the creative engine (settings, store, styles, projects), the image backends, and the
observer of a run executed from the CLI or the API.

Settings arrive as resource config (what `defs/launch.py` puts in every run's config, visible in the
UI's launchpad); unset fields fall back to the same defaults as the CLI (ECHO_* environment, then
configs/settings.yaml). Backends are created once per run and closed at its end, so a model is
loaded once per run, never per image.
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
        from echo_pipeline.defs.instance import tag_run_process

        self._engine = None  # settings are read fresh for every run
        if context.instance is not None and context.run is not None:
            tag_run_process(context.instance, context.run.run_id)  # so a killed run can be told dead

    @classmethod
    def config_for(cls, settings: Settings) -> dict:
        """This resource's run config for the given settings."""
        return {"artifact_root": settings.artifact_root, "config_dir": str(settings.config_dir)}

    def engine(self) -> CreativeEngine:
        if self._engine is None:
            self._engine = CreativeEngine(Settings.load(self.artifact_root, self.config_dir))
        return self._engine


class PreparedBackends(dict[str, ImageBackend]):
    """Backends a caller created before the run (already loading a model or rendering), by name.
    The caller owns them: it closes them after the run."""


class ImageBackendResource(dg.ConfigurableResource):
    """Creates each named backend once per run (the project spec or the render command names which),
    or hands out the one the launching caller prepared for this run."""

    default_backend: str = "procedural"
    prepared: dg.ResourceDependency[Optional[PreparedBackends]] = None  # type: ignore[assignment]
    _backends: dict = PrivateAttr(default_factory=dict)

    def get(self, name: Optional[str] = None) -> ImageBackend:
        from echo_pipeline.render.backends.registry import create_backend

        key = name or self.default_backend
        if self.prepared and key in self.prepared:
            return self.prepared[key]
        if key not in self._backends:
            self._backends[key] = create_backend(key)
        return self._backends[key]

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
