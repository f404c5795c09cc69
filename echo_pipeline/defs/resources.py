"""Resources: the creative engine (settings, store, styles, projects), the image backends, and the
observer of a run executed from the CLI or the API.

Settings arrive as resource config (what `defs/launch.py` puts in every run's config, visible in the
UI's launchpad); unset fields fall back to the same defaults as the CLI (ECHO_* environment, then
configs/settings.yaml). Backends are created once per run and closed at its end, so a model is
loaded once per run, never per image.
"""

import json
from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from echo_pipeline.render.backends.base import ImageBackend
from echo_pipeline.settings import BackendConfig, Settings
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
    """Creates each backend a step asks for once per run (so a model loads once per run, never per
    image), or hands out the one the launching caller prepared for this run.

    A step asks by backend name and model (the project spec's `backend`/`model`, or the render
    command's `--backend name:model`); `backend_config` is the settings' `BackendConfig` as JSON
    (device, ComfyUI URL, ...) and `models` the settings' default model per backend (JSON); empty =
    the settings this process loads."""

    default_backend: str = "procedural"
    backend_config: str = ""
    models: str = ""
    prepared: dg.ResourceDependency[Optional[PreparedBackends]] = None  # type: ignore[assignment]
    _backends: dict = PrivateAttr(default_factory=dict)

    @classmethod
    def config_for(cls, settings: Settings) -> dict:
        """This resource's run config for the given settings."""
        config = settings.backends.model_copy(update={"config_dir": settings.backends.config_dir or str(settings.config_dir)})
        return {"default_backend": settings.default_backend, "backend_config": config.model_dump_json(),
                "models": json.dumps(settings.models)}

    def config(self, backend: str, model: Optional[str]) -> BackendConfig:
        if not self.backend_config:  # a run launched without our run config (the UI, a schedule)
            return Settings.load().backend_config(backend, model)
        models = json.loads(self.models) if self.models else {}
        return BackendConfig.model_validate_json(self.backend_config).for_backend(backend, model, models)

    def get(self, name: Optional[str] = None, model: Optional[str] = None) -> ImageBackend:
        from echo_pipeline.render.backends.registry import create_backend, split_backend_spec

        backend, spec_model = split_backend_spec(name or self.default_backend)
        model = spec_model or model
        key = f"{backend}:{model}" if model else backend
        if self.prepared and key in self.prepared:
            return self.prepared[key]
        if key not in self._backends:
            self._backends[key] = create_backend(backend, self.config(backend, model))
        return self._backends[key]

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
