"""Settings: where artifacts and configs live, resolved once.

Each value is taken from the first of: an explicit argument (the CLI's `--artifact-root` /
`--config-dir`), the environment (`ECHO_ARTIFACT_ROOT`, `ECHO_CONFIG_DIR`, `ECHO_API_TOKEN`),
`settings.yaml` in the config folder (artifact_root and the defaults below), the built-in default.

Where things go (the one rule, for every command and every Dagster run):

* **artifacts** (images, thumbnails, catalog, galleries): the artifact root, default `./artifacts`
  in the current folder. A local path is made absolute once, so a Dagster run started from another
  folder writes to the same place; `file://...` becomes that local path; fsspec URLs (`memory://x`,
  `s3://bucket/prefix`) are kept. Junk (empty, `::`, an unknown protocol) is refused up front.
* **configs** (`projects/` specs written by `echo-os plan`, `styles/` with the built-in presets and
  the user's `user.json`, `wildcards/`): `ECHO_CONFIG_DIR` (or `--config-dir`), else `./configs` when
  the current folder has one (running from the repo root: the shipped example projects and styles),
  else the source checkout's `configs/` for an editable install (`pip install -e .`), else
  `./configs` (created on first write).

`Settings.describe()` returns the resolved paths and where each came from, for the CLI to print.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

from echo_pipeline.errors import InvalidInputError, StorageError

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent
REPO_CONFIG_DIR = CHECKOUT_DIR / "configs"
DEFAULT_ARTIFACT_ROOT = "./artifacts"
SETTINGS_FILE = "settings.yaml"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LOCAL_PROTOCOLS = ("file", "local")
_ROOT_EXAMPLES = "a folder or an fsspec URL such as ./artifacts, memory://echo or s3://bucket/echo"


def _is_checkout() -> bool:
    """True for an editable install / source checkout (configs/ beside pyproject.toml above the package)."""
    return REPO_CONFIG_DIR.is_dir() and (CHECKOUT_DIR / "pyproject.toml").is_file()


def _config_dir_and_source() -> tuple[Path, str]:
    env = os.environ.get("ECHO_CONFIG_DIR")
    if env and env.strip():
        return Path(env.strip()).expanduser().resolve(), "ECHO_CONFIG_DIR"
    here = Path.cwd() / "configs"
    if here.is_dir():
        return here.resolve(), "./configs in the current folder"
    if _is_checkout():
        return REPO_CONFIG_DIR, "the source checkout (editable install)"
    return here.resolve(), "default (./configs in the current folder)"


def default_config_dir() -> Path:
    """The config folder when none is given (see the module docstring for the rule)."""
    return _config_dir_and_source()[0]


def normalize_artifact_root(root: str | os.PathLike[str]) -> str:
    """The canonical form of an artifact root, or a one-line `StorageError` saying why it cannot be one.

    './artifacts' and '~/x' -> absolute local paths; 'file:///x' and 'file://x' -> the local path;
    'memory://x', 's3://bucket/p' (and chained URLs like 'simplecache::s3://b/p') are kept, without a
    trailing '/'. Refused: empty, control characters, '::' without protocols, a protocol fsspec does
    not know, a URL without a location ('s3://'). Idempotent: normalizing twice changes nothing.
    Only the form is checked here; `ArtifactStore.open` checks that the root can be written.
    """
    import fsspec
    from fsspec.core import split_protocol

    text = os.fspath(root).strip() if isinstance(root, (str, os.PathLike)) else ""
    if not text:
        raise StorageError(f"artifact root is empty: give {_ROOT_EXAMPLES}")
    if _CONTROL.search(text):
        raise StorageError(f"artifact root {text!r} contains control characters")
    protocol, rest = split_protocol(text)
    if protocol is None:
        if "::" in text:
            raise StorageError(
                f"artifact root {text!r} is not a folder or an fsspec URL ('::' chains URLs, as in "
                f"simplecache::s3://bucket/echo); give {_ROOT_EXAMPLES}"
            )
        return os.path.abspath(os.path.expanduser(text))
    protocols = protocol.split("::")
    if any(not p for p in protocols):
        raise StorageError(f"artifact root {text!r} is not a folder or an fsspec URL; give {_ROOT_EXAMPLES}")
    known = set(fsspec.available_protocols())
    unknown = next((p for p in protocols if p not in known), None)
    if unknown is not None:
        raise StorageError(
            f"unknown artifact root protocol {unknown!r} in {text!r}: use a local folder or an fsspec URL "
            f"such as memory://, file://, s3://, gs://, az://"
        )
    if len(protocols) == 1 and protocol in _LOCAL_PROTOCOLS:
        if not rest.strip():
            raise StorageError(f"artifact root {text!r} names no folder")
        return os.path.abspath(os.path.expanduser(rest))
    location = rest.rstrip("/")
    if not location.strip():
        raise StorageError(f"artifact root {text!r} names no location (e.g. {protocols[-1]}://echo)")
    return f"{protocol}://{location}"


DEFAULT_COMFYUI_URL = "http://127.0.0.1:8188"


class BackendConfig(BaseModel):
    """How to create a backend: the model plus the options of each backend (others ignore them).

    `Settings.backends` holds the configured options (settings.yaml's `backends:` mapping,
    ECHO_COMFYUI_URL, CLI flags); `Settings.backend_config(name, model)` adds the model and the
    config folder for one backend. Dagster's `ImageBackendResource` carries it as run config.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(default=None, description="diffusers: hub id, local folder or .safetensors/.ckpt file; "
                              "comfyui: checkpoint name; openai: model name. None = the backend's default")
    # diffusers
    device: str | None = Field(default=None, description="cuda, cuda:1, mps or cpu (None = best available)")
    dtype: str | None = Field(default=None, description="float16, bfloat16 or float32 (None = float16 on cuda, else float32)")
    batch_size: int | None = Field(default=None, ge=1, le=64, description="images per pipeline call (None = sized to memory)")
    allow_downloads: bool = Field(default=False, description="fetch a hub model that is not in the local cache")
    single_file_config: str | None = Field(default=None, description="for a .safetensors/.ckpt model: a hub id or "
                                           "local save_pretrained folder holding the pipeline's configs")
    scheduler: str | None = Field(default=None, description="diffusers scheduler class name that overrides the "
                                  "request's A1111 sampler name (e.g. DPMSolverMultistepScheduler)")
    # comfyui
    comfyui_url: str = DEFAULT_COMFYUI_URL
    comfyui_workflow: str | None = Field(default=None, description="API-format workflow file (None = configs/comfyui/)")
    comfyui_nodes: dict[str, str] = Field(default_factory=dict, description="role -> node id for a workflow without "
                                          "placeholders (roles: prompt, negative, seed, output, image)")
    comfyui_timeout_s: float = Field(default=600.0, gt=0, description="longest wait for one image")
    # openai
    openai_base_url: str | None = Field(default=None, description="Images API base URL (None = OPENAI_BASE_URL or api.openai.com)")
    # where configs/comfyui/ templates live
    config_dir: str | None = None

    def for_backend(self, backend: str, model: str | None, models: dict[str, str]) -> BackendConfig:
        """This config for one backend: `model`, else `models[backend]` (settings' defaults), else ours."""
        return self.model_copy(update={"model": model or models.get(backend) or self.model})

    @field_validator("comfyui_url", "openai_base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        text = value.strip().rstrip("/")
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL such as {DEFAULT_COMFYUI_URL}")
        return text


class ClipSettings(BaseModel):
    """CLIP scoring (prompt alignment, aesthetic score) through open_clip; off while `model` is empty.

    settings.yaml: `clip: {model: ViT-B-32, pretrained: /models/open_clip_vit_b32.bin,
    aesthetic_head: /models/aesthetic_linear.pth}`. `pretrained` is a local checkpoint file, an
    open_clip tag or a hub id; nothing is downloaded unless `allow_downloads` is true."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(default=None, description="open_clip architecture, e.g. ViT-B-32 (empty: CLIP off)")
    pretrained: str | None = Field(default=None, description="local checkpoint file, open_clip tag or hf-hub id")
    aesthetic_head: str | None = Field(default=None, description="weights of a linear aesthetic head on CLIP embeddings")
    device: str | None = None
    allow_downloads: bool = False


class Settings(BaseModel):
    """Where artifacts and configs live, normalized on construction (see the module docstring).

    `artifact_root` is always the canonical form (`normalize_artifact_root`) and `config_dir` an
    absolute path, however the object was made (`Settings.load`, `Settings(...)`,
    `Settings.model_validate(...)`), so settings handed on (e.g. as Dagster resource config) name
    exactly the same places. A bad artifact root raises `StorageError`; other bad values
    `InvalidInputError` (from `load`) or pydantic's `ValidationError`.
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    artifact_root: str = Field(
        default=DEFAULT_ARTIFACT_ROOT, validate_default=True,
        description="fsspec URL or local path of the artifact store (./artifacts, memory://echo, s3://bucket/echo)",
    )
    config_dir: Path = Field(default_factory=default_config_dir, description="folder with projects/, styles/, wildcards/")
    default_backend: str = "procedural"
    default_width: int = 512
    default_height: int = 512
    backends: BackendConfig = Field(default_factory=BackendConfig, description="options of the model backends")
    models: dict[str, str] = Field(default_factory=dict, description="default model per backend, e.g. "
                                   "{diffusers: stabilityai/sd-turbo, openai: dall-e-3}")
    clip: ClipSettings = Field(default_factory=ClipSettings, description="CLIP scoring (off unless a model is set)")
    # A secret: never printed (SecretStr) and never part of a run's config (see defs/resources.py).
    api_token: SecretStr | None = Field(default=None, description="bearer token `echo-os serve` requires for "
                                        "writes (ECHO_API_TOKEN wins); none: writes from loopback only")
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("artifact_root", mode="before")
    @classmethod
    def _normalize_root(cls, value: Any) -> str:
        return normalize_artifact_root(value)

    @field_validator("config_dir", mode="before")
    @classmethod
    def _absolute_config_dir(cls, value: Any) -> Any:
        if isinstance(value, (str, os.PathLike)):
            text = os.fspath(value).strip()
            if not text:
                raise ValueError("config folder is empty")
            return Path(text).expanduser().resolve()
        return value

    @property
    def projects_dir(self) -> Path:
        return self.config_dir / "projects"

    @property
    def styles_dir(self) -> Path:
        return self.config_dir / "styles"

    @property
    def wildcards_dir(self) -> Path:
        return self.config_dir / "wildcards"

    def describe(self) -> dict[str, str]:
        """Where things go, for the CLI to print: each resolved path, then where it came from.

        Keys: artifact_root, config_dir, projects, styles, user_styles, wildcards, settings_file,
        artifact_root_from, config_dir_from (e.g. 'ECHO_ARTIFACT_ROOT', 'argument', 'default').
        """
        return {
            "artifact_root": self.artifact_root,
            "config_dir": str(self.config_dir),
            "projects": str(self.projects_dir),
            "styles": str(self.styles_dir),
            "user_styles": str(self.styles_dir / "user.json"),
            "wildcards": str(self.wildcards_dir),
            "settings_file": str(self.config_dir / SETTINGS_FILE),
            "artifact_root_from": self._sources.get("artifact_root", "argument"),
            "config_dir_from": self._sources.get("config_dir", "argument"),
        }

    def backend_config(self, backend: str, model: str | None = None) -> BackendConfig:
        """The options to create `backend` with: `model`, else this backend's entry in `models`."""
        return self.backends.model_copy(update={"config_dir": self.backends.config_dir or str(self.config_dir)}
                                        ).for_backend(backend, model, self.models)

    @classmethod
    def load(cls, artifact_root: str | None = None, config_dir: str | Path | None = None,
             backend_options: dict[str, Any] | None = None) -> Settings:
        """Settings from the arguments, the environment, `settings.yaml` and the defaults, in that order.

        `backend_options`: `BackendConfig` fields given on the command line (None values are unset)."""
        sources: dict[str, str] = {}
        if config_dir is not None and str(config_dir).strip():
            cfg_dir, sources["config_dir"] = Path(config_dir).expanduser().resolve(), "argument"
        else:
            cfg_dir, sources["config_dir"] = _config_dir_and_source()
        if cfg_dir.exists() and not cfg_dir.is_dir():
            raise InvalidInputError(f"config folder {cfg_dir} is a file, not a folder")
        values: dict[str, Any] = {"config_dir": cfg_dir}
        settings_file = cfg_dir / SETTINGS_FILE
        sources["artifact_root"] = f"default ({DEFAULT_ARTIFACT_ROOT} in the current folder)"
        if settings_file.is_file():
            try:
                loaded = yaml.safe_load(settings_file.read_text(encoding="utf-8")) or {}
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                raise InvalidInputError(f"{settings_file}: cannot be read ({exc.__class__.__name__})") from exc
            if not isinstance(loaded, dict):
                raise InvalidInputError(f"{settings_file}: expected a mapping of settings")
            unknown = sorted(str(k) for k in loaded if k not in cls.model_fields or k == "config_dir")
            if unknown:
                known = ", ".join(k for k in cls.model_fields if k != "config_dir")
                raise InvalidInputError(f"{settings_file}: unknown setting(s) {', '.join(unknown)} (known: {known})")
            values.update(loaded)
            if "artifact_root" in loaded:
                sources["artifact_root"] = str(settings_file)
        env_token = os.environ.get("ECHO_API_TOKEN")
        if env_token and env_token.strip():
            values["api_token"] = env_token.strip()
        env_root = os.environ.get("ECHO_ARTIFACT_ROOT")
        if env_root and env_root.strip():
            values["artifact_root"], sources["artifact_root"] = env_root, "ECHO_ARTIFACT_ROOT"
        backends = dict(values.get("backends") or {}) if isinstance(values.get("backends") or {}, dict) else values["backends"]
        env_comfyui = os.environ.get("ECHO_COMFYUI_URL")
        if isinstance(backends, dict):
            if env_comfyui and env_comfyui.strip():
                backends["comfyui_url"] = env_comfyui.strip()
            backends.update({k: v for k, v in (backend_options or {}).items() if v is not None})
            values["backends"] = backends
        if artifact_root is not None and str(artifact_root).strip():
            values["artifact_root"], sources["artifact_root"] = artifact_root, "argument"
        elif artifact_root is not None:
            normalize_artifact_root(artifact_root)  # an explicitly empty root is an error, not the default
        try:
            settings = cls(**values)
        except ValidationError as exc:  # the other fields (a bad root raises StorageError itself)
            where = str(settings_file) if settings_file.is_file() else "settings"
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
            raise InvalidInputError(f"{where}: {problems}") from exc
        settings._sources = sources
        return settings
