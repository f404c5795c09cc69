"""Settings: where artifacts and configs live.

Resolution order (first wins): explicit argument (CLI flag), environment variable
(`ECHO_ARTIFACT_ROOT`, `ECHO_CONFIG_DIR`), `configs/settings.yaml`, built-in defaults.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from echo_pipeline.errors import InvalidInputError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_CONFIG_DIR = PACKAGE_DIR.parent / "configs"


def default_config_dir() -> Path:
    """`ECHO_CONFIG_DIR`, else the checkout's `configs/` (editable install), else `./configs`."""
    env = os.environ.get("ECHO_CONFIG_DIR")
    if env:
        return Path(env).expanduser().resolve()
    if REPO_CONFIG_DIR.is_dir():
        return REPO_CONFIG_DIR
    return Path.cwd() / "configs"


class Settings(BaseModel):
    artifact_root: str = Field(
        default="./artifacts",
        description="fsspec URL or local path of the artifact store (./artifacts, memory://echo, s3://bucket/echo)",
    )
    config_dir: Path = Field(default_factory=default_config_dir)
    default_backend: str = "procedural"
    default_width: int = 512
    default_height: int = 512

    @cached_property
    def styles_dir(self) -> Path:
        return self.config_dir / "styles"

    @classmethod
    def load(cls, artifact_root: str | None = None, config_dir: str | Path | None = None) -> "Settings":
        cfg_dir = Path(config_dir).expanduser().resolve() if config_dir else default_config_dir()
        values: dict = {"config_dir": cfg_dir}
        settings_file = cfg_dir / "settings.yaml"
        if settings_file.is_file():
            try:
                loaded = yaml.safe_load(settings_file.read_text()) or {}
            except yaml.YAMLError as exc:
                raise InvalidInputError(f"{settings_file}: not valid YAML ({exc.__class__.__name__})") from exc
            if not isinstance(loaded, dict):
                raise InvalidInputError(f"{settings_file}: expected a mapping of settings")
            values.update({k: v for k, v in loaded.items() if k in cls.model_fields and k != "config_dir"})
        if os.environ.get("ECHO_ARTIFACT_ROOT"):
            values["artifact_root"] = os.environ["ECHO_ARTIFACT_ROOT"]
        if artifact_root:
            values["artifact_root"] = artifact_root
        return cls(**values)
