"""Projects: a spec per project, stored as `configs/projects/<slug>.yaml`.

A project is the unit of work of the pipeline (one Dagster partition per project, keyed by slug).
Its spec says what to make (intent, constraints, style, size, media types), how much per batch
(count) and whether scheduled batch generation includes it. Users create and update projects with
`echo-os plan "<name>" "<intent>"` or by editing the YAML file; the file name is the slug.

Every problem with a project file is a one-line `InvalidInputError` naming the file and the field
(or the YAML line), so the CLI, the API and the Dagster sensor can show it as is. What could never
render is refused where it is made: an intent over the prompt limit, a seed whose range passes
MAX_SEED, and (`ProjectRegistry.create`) a first batch whose styled prompts would not fit.

Names resolve to projects one way, for every command: `ProjectRegistry.resolve_ref` (called through
`CreativeEngine.resolve_project`), see its docstring.
"""

from __future__ import annotations

import builtins
import difflib
import os
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from echo_pipeline.atomic import write_atomic
from echo_pipeline.errors import InvalidInputError, NotFoundError
from echo_pipeline.naming import (
    DEFAULT_PROJECT,
    MAX_SLUG,
    check_slug,
    is_valid_slug,
    slugify,
    validate_project_name,
)
from echo_pipeline.render.prompt_engine import MAX_COUNT, PromptEngine, check_seed_range
from echo_pipeline.render.requests import MAX_PROMPT_CHARS, MAX_SEED, MAX_SIDE, MIN_SIDE, MediaType
from echo_pipeline.render.style_manager import StyleLibrary
from echo_pipeline.workflows.intent import normalize_constraints
from echo_pipeline.workflows.multi_modal import order_media_types

PROJECT_SUFFIX = ".yaml"
CREATE_HINT = 'echo-os plan "<name>" "<intent>"'
#: An intent is the seed of every prompt of the project: it must fit in one.
MAX_INTENT_CHARS = MAX_PROMPT_CHARS
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_IMAGE_ONLY: list[MediaType] = ["image"]
_SHELL_SAFE = re.compile(r"^[^\"$`\\!]*$")
MAX_REFERENCES = 50
REFERENCE_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "MPO"})  # MPO: JPEGs from phones and cameras


class ProjectSpec(BaseModel):
    """One project, as stored in `configs/projects/<slug>.yaml`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="display name, e.g. 'Ruzgar NFT Collection'")
    slug: str = Field(default="", description="partition key and folder name; derived from the name when omitted")
    intent: str = Field(description="what to make, free text, e.g. 'warm fractal, no human forms'")
    constraints: list[str] = Field(default_factory=list, description="extra things to leave out, e.g. 'text' or 'no text'")
    style: str | None = Field(default=None, description="style preset applied to every prompt (echo-os style list)")
    width: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE, description=f"image width in pixels ({MIN_SIDE}-{MAX_SIDE})")
    height: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE, description=f"image height in pixels ({MIN_SIDE}-{MAX_SIDE})")
    backend: str = Field(default="procedural", description="image backend: procedural, diffusers, comfyui, openai")
    model: str | None = Field(default=None, description="the backend's model: a diffusers hub id, folder or "
                              ".safetensors file, a ComfyUI checkpoint, an OpenAI model (empty: settings' default)")
    steps: int = Field(default=30, ge=1, le=500, description="sampler steps (model backends; e.g. 1-4 for SD-Turbo)")
    cfg_scale: float = Field(default=7.0, ge=0.0, le=50.0, description="CFG scale (model backends; 0-1 for SD-Turbo)")
    sampler: str = Field(default="Euler a", description="A1111 sampler name (model backends): Euler a, DPM++ 2M Karras...")
    count: int = Field(default=10, ge=1, le=MAX_COUNT, description=f"images per batch (1-{MAX_COUNT})")
    media_types: list[MediaType] = Field(
        default_factory=lambda: _IMAGE_ONLY.copy(),
        description="media types to plan besides those the intent implies: image, texture, 3d_model, video",
    )
    schedule: bool = Field(default=False, description="include this project in scheduled batch generation")
    use_memory: bool = Field(default=True, description="add the style memory's best learned modifiers to the next "
                             "batch's prompts")
    style_threshold: float = Field(
        default=60.0, ge=0.0, le=100.0,
        description="per-image style consistency (0-100) at or above which an image counts as on-style",
    )
    style_target: float = Field(
        default=80.0, ge=0.0, le=100.0,
        description="share (%) of a batch's images that must be on-style; the style_consistency check fails below it",
    )
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="base seed; derived from the prompts when empty")
    references: list[str] = Field(
        default_factory=list, max_length=MAX_REFERENCES,
        description="reference images (PNG/JPEG/WebP files or file:// URLs): the plan learns a style from them "
                    "and starts the image tasks from them (img2img)",
    )
    created: datetime | None = Field(default=None, description="when the project was created")

    @model_validator(mode="before")
    @classmethod
    def _media_alias(cls, data: Any) -> Any:
        """`media: [image, video]` in a project file means `media_types`."""
        if isinstance(data, dict) and "media" in data:
            if data.get("media_types") not in (None, [], "") and data.get("media") not in (None, [], ""):
                raise ValueError("give either 'media' or 'media_types' (the same field), not both")
            data = {k: v for k, v in data.items() if k != "media"} | (
                {"media_types": data["media"]} if data["media"] is not None else {})
        return data

    @model_validator(mode="before")
    @classmethod
    def _derive_slug(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("slug") and isinstance(data.get("name"), str):
            data = {**data, "slug": slugify(data["name"])}
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return validate_project_name(value)

    @field_validator("slug")
    @classmethod
    def _check_slug(cls, value: str) -> str:
        value = value.strip()
        if not is_valid_slug(value):
            raise ValueError(
                f"slug {value!r} must be lowercase letters and digits separated by single '-' "
                f"(at most {MAX_SLUG} characters), e.g. {slugify(value) or 'my-project'!r}"
            )
        return value

    @model_validator(mode="after")
    def _check_seed_room(self) -> ProjectSpec:
        if self.seed is not None:
            try:
                check_seed_range(self.seed, self.count)
            except InvalidInputError as exc:
                raise ValueError(exc.message) from None
        return self

    @field_validator("intent")
    @classmethod
    def _check_intent(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("intent is empty: say what to make, e.g. 'warm fractal, no human forms'")
        if len(value) > MAX_INTENT_CHARS:
            raise ValueError(
                f"intent is {len(value)} characters long; the limit is {MAX_INTENT_CHARS} (the prompt limit)"
            )
        if _CONTROL.search(value):
            raise ValueError("intent contains control characters")
        return value

    @field_validator("constraints", mode="before")
    @classmethod
    def _check_constraints(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if value is None:
            return []
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            if any(_CONTROL.search(" ".join(v.split())) for v in value):
                raise ValueError("constraints contain control characters")
            value = normalize_constraints(value)
            if sum(len(v) + 2 for v in value) > MAX_PROMPT_CHARS:
                raise ValueError(f"constraints are longer than the prompt limit of {MAX_PROMPT_CHARS} characters together")
        return value

    @field_validator("style", mode="before")
    @classmethod
    def _strip_style(cls, value: Any) -> Any:
        if isinstance(value, str):
            return " ".join(value.split()) or None
        return value

    @field_validator("backend", mode="before")
    @classmethod
    def _strip_backend(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _split_backend_model(cls, data: Any) -> Any:
        """`backend: diffusers:stabilityai/sd-turbo` is `backend: diffusers` + `model: stabilityai/sd-turbo`."""
        if isinstance(data, dict) and isinstance(data.get("backend"), str) and ":" in data["backend"]:
            backend, _, model = data["backend"].partition(":")
            data = {**data, "backend": backend.strip().lower(), "model": model.strip() or data.get("model")}
        return data

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, value: str | None) -> str:
        if not value:
            raise ValueError("backend is empty (e.g. procedural, diffusers, comfyui, openai)")
        return value

    @field_validator("media_types", mode="before")
    @classmethod
    def _split_media_types(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if value is None:
            return ["image"]
        return value

    @field_validator("media_types")
    @classmethod
    def _order_media_types(cls, value: list[str]) -> list[str]:
        return order_media_types(value or ["image"])

    @field_validator("references", mode="before")
    @classmethod
    def _split_references(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if value is None:
            return []
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            refs = [v.strip() for v in value if v.strip()]
            if any(_CONTROL.search(v) for v in refs):
                raise ValueError("references contain control characters")
            return list(dict.fromkeys(refs))  # the same reference once
        return value



class ProjectRef(BaseModel):
    """A project a command works on, however the user named it (`CreativeEngine.resolve_project`).

    source: 'spec' (it has `configs/projects/<slug>.yaml`; `spec` is set), 'store' (it only has a
    folder in the artifact store, e.g. images rendered before specs existed), 'default' (the
    `default` project of ad-hoc renders) or 'new' (asked with `create=True` and not there yet).
    """

    model_config = ConfigDict(frozen=True)

    slug: str = Field(description="partition key and folder name, e.g. 'ruzgar-nft-collection'")
    name: str = Field(description="display name, e.g. 'Ruzgar NFT Collection' (the slug when there is no spec)")
    spec: ProjectSpec | None = Field(default=None, description="the project's spec, when it has one")
    source: Literal["spec", "store", "default", "new"] = "spec"

    def require_spec(self) -> ProjectSpec:
        """The spec, or a one-line NotFoundError saying how to give the project one (for `batch`)."""
        if self.spec is None:
            raise NotFoundError(
                f"project {self.name!r} has no spec (configs/projects/{self.slug}{PROJECT_SUFFIX}); "
                f"create it with: echo-os plan {_shell_quote(self.name)} \"<intent>\""
            )
        return self.spec


def reference_path(reference: str, base: Path) -> str:
    """A reference as stored in a spec: `file://` URLs and relative or `~` paths made absolute
    against `base`; other URLs are kept (and refused by `check_references`)."""
    text = reference.strip()
    if text.startswith("file://"):
        from urllib.parse import unquote, urlparse

        text = unquote(urlparse(text).path)
    if "://" in text:
        return text
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def check_references(references: Iterable[str]) -> builtins.list[Path]:
    """The reference files, each checked to exist and be a readable PNG/JPEG/WebP image (one-line
    NotFoundError/InvalidInputError naming it). Remote URLs are refused: echo-os works offline."""
    from PIL import Image, UnidentifiedImageError

    paths = []
    for reference in references:
        if "://" in reference and not reference.startswith("file://"):
            raise InvalidInputError(f"reference {reference!r}: remote images are not downloaded (echo-os works "
                                    "offline); save it and give the file")
        path = Path(reference_path(reference, Path.cwd()))
        if not path.is_file():
            raise NotFoundError(f"reference {reference!r} does not exist (give a PNG, JPEG or WebP file)")
        try:
            with Image.open(path) as opened:
                if opened.format not in REFERENCE_FORMATS:
                    raise InvalidInputError(f"reference {reference!r} is {opened.format}, not PNG, JPEG or WebP")
                opened.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            raise InvalidInputError(f"reference {reference!r} is not a readable image ({exc.__class__.__name__})") from exc
        paths.append(path)
    return paths


def local_model_path(model: str, base: Path) -> str:
    """A model written as a relative local path ('./tiny-sd', '../models/x.safetensors', '~/m') made
    absolute against `base`; hub ids ('stabilityai/sd-turbo'), checkpoint names and absolute paths
    are kept as they are."""
    text = model.strip()
    if text.startswith("~"):
        return str(Path(text).expanduser())
    if text.startswith(("./", "../", ".\\", "..\\")) or text in (".", ".."):
        return str((base / text).resolve())
    return text


def _shell_quote(text: str) -> str:
    """"Ruzgar NFT" as a user would type it in a shell (single quotes when double ones are not safe)."""
    if _SHELL_SAFE.match(text):
        return f'"{text}"'
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _display_path(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _validation_message(exc: ValidationError) -> str:
    """'field 'count': Input should be greater than or equal to 1; field ...' (one line)."""
    parts = []
    known = builtins.list(ProjectSpec.model_fields)
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][0]), known, n=1)
            msg += f" (did you mean {close[0]!r}?)" if close else f" (known fields: {', '.join(known)})"
        parts.append(f"field {where!r}: {msg}")
    return "; ".join(parts)


def spec_to_yaml(spec: ProjectSpec) -> str:
    """Human-friendly YAML: a comment header, then each field preceded by its description."""
    lines = [
        f"# ECHO.OS project: {spec.name}",
        f"# Edit by hand or update with: echo-os plan \"{spec.name}\" \"<intent>\"",
        "# The file name must be the slug. Plan it: echo-os plan; render a batch: echo-os batch --project=" + spec.slug,
        "",
    ]
    data = spec.model_dump(mode="python")
    for name, field in ProjectSpec.model_fields.items():
        if field.description:
            lines.append(f"# {field.description}")
        value = data[name]
        if isinstance(value, list):  # short lists read best inline: media_types: [image, texture]
            inline = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip()
            lines.append(f"{name}: {inline}")
        else:
            lines.append(yaml.safe_dump({name: value}, sort_keys=False, allow_unicode=True, width=100).rstrip("\n"))
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    """Write the spec atomically, with the umask's permissions (see `echo_pipeline.atomic`)."""
    write_atomic(path, text)


class ProjectRegistry:
    """The project specs in one folder (`configs/projects/`), one `<slug>.yaml` per project."""

    def __init__(self, projects_dir: Path | str, *, prompts: PromptEngine | None = None):
        """`prompts` builds the first batch's prompts when a project is created (to refuse one that
        could never render); by default from the styles/ and wildcards/ beside `projects_dir`."""
        self.projects_dir = Path(projects_dir)
        self._prompts = prompts

    @property
    def prompts(self) -> PromptEngine:
        if self._prompts is None:
            config_dir = self.projects_dir.parent
            self._prompts = PromptEngine(StyleLibrary(config_dir / "styles"), config_dir / "wildcards")
        return self._prompts

    # -- files --------------------------------------------------------------------------------------

    def _files(self) -> builtins.list[Path]:
        if not self.projects_dir.is_dir():
            return []
        return sorted(
            (p for p in self.projects_dir.iterdir()
             if p.suffix in (PROJECT_SUFFIX, ".yml") and not p.name.startswith(".") and p.is_file()),
            key=lambda p: p.stem,
        )

    def path(self, slug: str) -> Path:
        return self.projects_dir / f"{check_slug(slug)}{PROJECT_SUFFIX}"

    def exists(self, slug: str) -> bool:
        return is_valid_slug(slug) and self.path(slug).is_file()

    def slugs(self) -> builtins.list[str]:
        """Slugs of the project files, sorted; files whose name is not a valid slug are left out
        (`list()` and `scan()` report them), so every slug returned is a safe partition key."""
        return [p.stem for p in self._files() if p.suffix == PROJECT_SUFFIX and is_valid_slug(p.stem)]

    def _load_file(self, path: Path) -> ProjectSpec:
        shown = _display_path(path)
        if path.suffix != PROJECT_SUFFIX:
            raise InvalidInputError(f"{shown}: project files end in {PROJECT_SUFFIX}; rename it to {path.stem}{PROJECT_SUFFIX}")
        if not is_valid_slug(path.stem):
            raise InvalidInputError(
                f"{shown}: the file name must be the project's slug (lowercase letters, digits and '-'), "
                f"e.g. {slugify(path.stem) or 'my-project'}{PROJECT_SUFFIX}"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFoundError(f"{shown}: no such project file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"{shown}: cannot be read ({exc.__class__.__name__}: {exc})") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or exc.__class__.__name__
            raise InvalidInputError(f"{shown}: invalid YAML{where}: {problem}") from exc
        if data is None:
            raise InvalidInputError(f"{shown}: the file is empty; it needs at least 'name' and 'intent'")
        if not isinstance(data, dict):
            raise InvalidInputError(f"{shown}: expected a mapping of fields (name: ..., intent: ...), got {type(data).__name__}")
        data = {str(k): v for k, v in data.items()}
        if data.get("slug") in (None, ""):
            data["slug"] = path.stem  # the file name is the slug
        elif data["slug"] != path.stem:
            raise InvalidInputError(
                f"{shown}: field 'slug' is {data['slug']!r} but the file name says {path.stem!r}; "
                f"rename the file to {data['slug']}{PROJECT_SUFFIX} or fix the slug"
            )
        if isinstance(data.get("model"), str):
            # A hand-written './models/x.safetensors' means the same file from wherever echo-os runs
            # (a daemon, a schedule): relative to the folder that holds configs/.
            data["model"] = local_model_path(data["model"], self.projects_dir.parent.parent)
        if isinstance(data.get("references"), str):
            data["references"] = [data["references"]]
        if isinstance(data.get("references"), list):  # hand-written relative paths: as for the model
            data["references"] = [reference_path(r, self.projects_dir.parent.parent) if isinstance(r, str) else r
                                  for r in data["references"]]
        try:
            return ProjectSpec.model_validate(data)
        except ValidationError as exc:
            raise InvalidInputError(f"{shown}: {_validation_message(exc)}") from exc

    # -- reading ------------------------------------------------------------------------------------

    def load(self, slug: str) -> ProjectSpec:
        path = self.path(slug)
        if not path.is_file():
            raise NotFoundError(self._not_found_message(slug, self.scan()[0], []))
        return self._load_file(path)

    def list(self) -> builtins.list[ProjectSpec]:
        """All projects sorted by slug; the first broken file raises InvalidInputError."""
        return [self._load_file(p) for p in self._files()]

    def scan(self) -> tuple[builtins.list[ProjectSpec], builtins.list[str]]:
        """(the projects that load, one error message per broken file): for sensors and listings that
        must keep going past a broken file."""
        specs, errors = [], []
        for path in self._files():
            try:
                specs.append(self._load_file(path))
            except (InvalidInputError, NotFoundError) as exc:
                errors.append(exc.message)
        return specs, errors

    # -- writing ------------------------------------------------------------------------------------

    def save(self, spec: ProjectSpec) -> Path:
        """Write `<slug>.yaml` atomically (temp file in the same folder, then os.replace)."""
        path = self.path(spec.slug)
        _atomic_write(path, spec_to_yaml(spec))
        return path

    def create(self, name: str, intent: str | None, **fields: Any) -> ProjectSpec:
        """Create the project, or update it when its slug exists (then `created` is kept).

        Fields given as None are left as they are (new projects get the defaults), so a CLI can pass
        every option through. Unknown fields and invalid values raise InvalidInputError; so does a
        project whose first batch could not be built (`check_renderable`): nothing is written then.
        """
        name = validate_project_name(name)
        slug = check_slug(fields.pop("slug", None) or slugify(name))
        fields.pop("created", None)
        if isinstance(fields.get("backend"), str) and ":" in fields["backend"]:
            from echo_pipeline.render.backends.registry import split_backend_spec

            fields["backend"], model = split_backend_spec(fields["backend"])
            fields["model"] = model or fields.get("model")
        if isinstance(fields.get("model"), str):  # a relative model path typed here is stored absolute
            fields["model"] = local_model_path(fields["model"], Path.cwd())
        if fields.get("references") is not None:  # checked now (plan time), stored absolute
            check_references(fields["references"])
            fields["references"] = [reference_path(r, Path.cwd()) for r in fields["references"]]
        updates = {k: v for k, v in fields.items() if v is not None}
        if intent is not None and str(intent).strip():
            updates["intent"] = intent
        if self.exists(slug):
            current = self.load(slug)
            data = {**current.model_dump(), "name": name, **updates}
            data["created"] = current.created or datetime.now(timezone.utc).replace(microsecond=0)
        else:
            if "intent" not in updates:
                raise InvalidInputError(f"project {name!r} is new: give its intent, e.g. {CREATE_HINT}")
            data = {"name": name, **updates, "created": datetime.now(timezone.utc).replace(microsecond=0)}
        data["slug"] = slug
        try:
            spec = ProjectSpec.model_validate(data)
        except ValidationError as exc:
            raise InvalidInputError(f"project {name!r}: {_validation_message(exc)}") from exc
        self.check_renderable(spec)
        self.save(spec)
        return spec

    def check_renderable(self, spec: ProjectSpec) -> None:
        """Build the first prompt of every task of batch 0, with the project's style and constraints.

        Raises a one-line InvalidInputError ('project 'X' cannot render: prompt is 2150 characters long
        with style 'Y' applied; the limit is 2000 ...') or NotFoundError (unknown style or wildcard).
        """
        from echo_pipeline.workflows.visual_planner import plan_project, task_prompt_specs

        for prompt_spec in task_prompt_specs(plan_project(spec), spec, batch=0):
            try:
                self.prompts.build_requests(prompt_spec.model_copy(update={"count": 1}))
            except InvalidInputError as exc:
                raise InvalidInputError(f"project {spec.name!r} cannot render: {exc.message}") from exc

    # -- lookup -------------------------------------------------------------------------------------

    def resolve(self, text: str) -> ProjectSpec:
        """The spec of the project `text` names (see `resolve_ref`; projects without a spec are not found)."""
        ref = self.resolve_ref(text)
        if ref.spec is None:  # 'default' without a spec file
            raise NotFoundError(self._not_found_message(ref.slug, self.scan()[0], []))
        return ref.spec

    def resolve_ref(
        self,
        text: str | None,
        *,
        stored: Iterable[str] | Callable[[], Iterable[str]] = (),
        create: bool = False,
    ) -> ProjectRef:
        """The project `text` names: the one resolution rule of every command.

        In order, first match wins:
        1. a spec whose slug or display name equals the text (case-insensitive), or whose slug equals
           the text's slug ('ruzgar nft collection' -> ruzgar-nft-collection);
        2. a project of the artifact store (`stored`: its slugs, or a function returning them) whose
           slug is exactly the text, and `default`;
        3. with `create=True`: the store project with the text's slug, else a new project
           (source 'new', slug = the text's slug); prefixes are not used to create;
        4. the one spec whose name or slug starts with the text or its slug ('Ruzgar NFT' ->
           ruzgar-nft-collection); several -> InvalidInputError listing them;
        5. a store project whose slug is the text's slug ('Default' -> default).
        None means `default`. Anything else: NotFoundError with the closest names and how to create
        the project. A name with '/', '..' or control characters is an InvalidInputError.
        """
        if text is None:
            return self._default_ref()
        query = validate_project_name(" ".join(str(text).split()))
        key, skey = query.casefold(), slugify(query)

        # 1. exact spec: a broken file for the exact slug reports its own error
        if is_valid_slug(query) and self.path(query).is_file():
            return _ref(self._load_file(self.path(query)))
        specs, errors = self.scan()
        exact = [s for s in specs if s.name.casefold() == key or s.slug == key or s.slug == skey]
        if len(exact) > 1:
            raise InvalidInputError(f"project {query!r} is ambiguous: {self._candidates(exact)}; give the slug")
        if exact:
            return _ref(exact[0])

        # 2. exact store project, or default
        with_spec = {s.slug for s in specs}
        store_only = sorted({s for s in (stored() if callable(stored) else stored)
                             if is_valid_slug(s) and s not in with_spec})
        if query == DEFAULT_PROJECT or (query == skey and query in store_only):
            return self._default_ref() if query == DEFAULT_PROJECT else _store_ref(query)

        # 3. creating: never by prefix
        if create:
            if skey == DEFAULT_PROJECT:
                return self._default_ref()
            return _store_ref(skey) if skey in store_only else ProjectRef(slug=skey, name=query, source="new")

        # 4. unique spec prefix
        prefix = [s for s in specs if s.name.casefold().startswith(key) or s.slug.startswith(skey)]
        if len(prefix) > 1:
            raise InvalidInputError(
                f"project {query!r} is ambiguous: it matches {self._candidates(prefix)}; give more of the name or the slug"
            )
        if prefix:
            return _ref(prefix[0])

        # 5. store project by the text's slug
        if skey == DEFAULT_PROJECT:
            return self._default_ref()
        if skey in store_only:
            return _store_ref(skey)
        message = self._not_found_message(query, specs, store_only)
        if errors:
            message += f" ({len(errors)} project file(s) could not be read: {errors[0]})"
        raise NotFoundError(message)

    def _default_ref(self) -> ProjectRef:
        if self.exists(DEFAULT_PROJECT):
            return _ref(self.load(DEFAULT_PROJECT))
        return ProjectRef(slug=DEFAULT_PROJECT, name=DEFAULT_PROJECT, source="default")

    @staticmethod
    def _candidates(specs: Iterable[ProjectSpec]) -> str:
        return ", ".join(f"{s.name!r} ({s.slug})" for s in specs)

    @staticmethod
    def _not_found_message(query: str, specs: builtins.list[ProjectSpec], store_only: Iterable[str]) -> str:
        create = f"create it with: echo-os plan {_shell_quote(query)} \"<intent>\""
        names = {s.slug: s.name for s in specs} | {slug: slug for slug in store_only if slug != DEFAULT_PROJECT}
        if not names:
            return f"no project {query!r}: there are no projects yet; {create}"
        by_key: dict[str, str] = {}
        for slug, name in names.items():
            by_key.setdefault(name.casefold(), slug)
            by_key.setdefault(slug, slug)
        close = difflib.get_close_matches(query.casefold(), by_key, n=3, cutoff=0.5)
        close += difflib.get_close_matches(slugify(query), by_key, n=3, cutoff=0.5)
        suggestions = builtins.list(dict.fromkeys(by_key[c] for c in close))
        if suggestions:
            shown = " or ".join(f"{names[x]!r} ({x})" if names[x] != x else repr(x) for x in suggestions[:3])
            hint = f"did you mean {shown}?"
        else:
            listed = builtins.list(names)
            hint = "known projects: " + ", ".join(repr(names[x]) for x in listed[:10]) + (", ..." if len(listed) > 10 else "")
        return f"no project {query!r}; {hint} Or {create}"


def _ref(spec: ProjectSpec) -> ProjectRef:
    return ProjectRef(slug=spec.slug, name=spec.name, spec=spec, source="spec")


def _store_ref(slug: str) -> ProjectRef:
    return ProjectRef(slug=slug, name=slug, source="store")
