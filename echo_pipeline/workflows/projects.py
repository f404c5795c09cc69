"""Projects: a spec per project, stored as `configs/projects/<slug>.yaml`.

A project is the unit of work of the pipeline (one Dagster partition per project, keyed by slug).
Its spec says what to make (intent, constraints, style, size, media types), how much per batch
(count) and whether scheduled batch generation includes it. Users create and update projects with
`echo-os plan "<name>" "<intent>"` or by editing the YAML file; the file name is the slug.

Every problem with a project file is a one-line `InvalidInputError` naming the file and the field
(or the YAML line), so the CLI, the API and the Dagster sensor can show it as is.
"""

from __future__ import annotations

import builtins
import difflib
import os
import re
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from echo_pipeline.errors import InvalidInputError, NotFoundError
from echo_pipeline.naming import slugify, validate_project_name
from echo_pipeline.render.prompt_engine import MAX_COUNT
from echo_pipeline.render.requests import MAX_SEED, MAX_SIDE, MIN_SIDE, MediaType
from echo_pipeline.workflows.intent import normalize_constraints
from echo_pipeline.workflows.multi_modal import order_media_types

PROJECT_SUFFIX = ".yaml"
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_SLUG = 80
CREATE_HINT = 'echo-os plan "<name>" "<intent>"'


def is_valid_slug(slug: str) -> bool:
    return isinstance(slug, str) and len(slug) <= MAX_SLUG and bool(SLUG_PATTERN.match(slug))


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
    count: int = Field(default=10, ge=1, le=MAX_COUNT, description=f"images per batch (1-{MAX_COUNT})")
    media_types: list[MediaType] = Field(
        default_factory=lambda: ["image"],
        description="media types to plan besides those the intent implies: image, texture, 3d_model, video",
    )
    schedule: bool = Field(default=False, description="include this project in scheduled batch generation")
    style_threshold: float = Field(
        default=60.0, ge=0.0, le=100.0, description="minimum mean style consistency (0-100) for the asset check"
    )
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="base seed; derived from the prompts when empty")
    created: datetime | None = Field(default=None, description="when the project was created")

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

    @field_validator("intent")
    @classmethod
    def _check_intent(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("intent is empty: say what to make, e.g. 'warm fractal, no human forms'")
        return value

    @field_validator("constraints", mode="before")
    @classmethod
    def _check_constraints(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if value is None:
            return []
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return normalize_constraints(value)
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

    @property
    def display(self) -> str:
        """'Ruzgar NFT Collection (ruzgar-nft-collection)'."""
        return f"{self.name} ({self.slug})"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class ProjectRegistry:
    """The project specs in one folder (`configs/projects/`), one `<slug>.yaml` per project."""

    def __init__(self, projects_dir: Path | str):
        self.projects_dir = Path(projects_dir)

    @classmethod
    def from_settings(cls, settings) -> "ProjectRegistry":
        """The registry of `settings.config_dir / 'projects'`."""
        return cls(Path(settings.config_dir) / "projects")

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
        if not is_valid_slug(slug):
            raise InvalidInputError(
                f"{slug!r} is not a project slug (lowercase letters and digits separated by '-', "
                f"e.g. {slugify(str(slug)) or 'my-project'!r})"
            )
        return self.projects_dir / f"{slug}{PROJECT_SUFFIX}"

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
        try:
            return ProjectSpec.model_validate(data)
        except ValidationError as exc:
            raise InvalidInputError(f"{shown}: {_validation_message(exc)}") from exc

    # -- reading ------------------------------------------------------------------------------------

    def load(self, slug: str) -> ProjectSpec:
        path = self.path(slug)
        if not path.is_file():
            raise NotFoundError(self._not_found_message(slug, self.scan()[0]))
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
        every option through. Unknown fields and invalid values raise InvalidInputError.
        """
        name = validate_project_name(name)
        slug = fields.pop("slug", None) or slugify(name)
        if not is_valid_slug(slug):
            raise InvalidInputError(f"slug {slug!r} must be lowercase letters and digits separated by '-'")
        fields.pop("created", None)
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
        self.save(spec)
        return spec

    def delete(self, slug: str) -> bool:
        """Remove a project file; True when there was one. Artifacts are not touched."""
        path = self.path(slug)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    # -- lookup -------------------------------------------------------------------------------------

    def resolve(self, text: str) -> ProjectSpec:
        """Find a project by display name, slug, or a unique case-insensitive prefix of either.

        The text's slug counts too ('Ruzgar NFT' -> prefix 'ruzgar-nft' of 'ruzgar-nft-collection').
        Exact matches win over prefixes. Ambiguous -> InvalidInputError listing the candidates;
        unknown -> NotFoundError suggesting the closest names (or how to create a first project).
        """
        query = " ".join(str(text or "").split())
        if not query:
            raise InvalidInputError("project name is empty")
        key, skey = query.casefold(), slugify(query)
        if is_valid_slug(query) and self.path(query).is_file():
            return self._load_file(self.path(query))  # exact slug: a broken file reports its own error
        specs, errors = self.scan()

        exact = [s for s in specs if s.name.casefold() == key or s.slug == key or (skey and s.slug == skey)]
        if len(exact) == 1:
            return exact[0]
        if len(exact) > 1:
            raise InvalidInputError(f"project {query!r} is ambiguous: {self._candidates(exact)}; give the slug")

        prefix = [
            s for s in specs
            if s.name.casefold().startswith(key) or s.slug.startswith(key) or (skey and s.slug.startswith(skey))
        ]
        if len(prefix) == 1:
            return prefix[0]
        if len(prefix) > 1:
            raise InvalidInputError(
                f"project {query!r} is ambiguous: it matches {self._candidates(prefix)}; give more of the name or the slug"
            )
        message = self._not_found_message(query, specs)
        if errors:
            message += f" ({len(errors)} project file(s) could not be read: {errors[0]})"
        raise NotFoundError(message)

    @staticmethod
    def _candidates(specs: Iterable[ProjectSpec]) -> str:
        return ", ".join(f"{s.name!r} ({s.slug})" for s in specs)

    @staticmethod
    def _not_found_message(query: str, specs: builtins.list[ProjectSpec]) -> str:
        if not specs:
            return f"no project {query!r}: there are no projects yet; create one with echo-os plan \"{query}\" \"<intent>\""
        by_key: dict[str, ProjectSpec] = {}
        for s in specs:
            by_key.setdefault(s.name.casefold(), s)
            by_key.setdefault(s.slug, s)
        close = difflib.get_close_matches(query.casefold(), by_key, n=3, cutoff=0.5)
        close += difflib.get_close_matches(slugify(query), by_key, n=3, cutoff=0.5)
        suggestions = builtins.list(dict.fromkeys(by_key[c].slug for c in close))
        if suggestions:
            named = {s.slug: s for s in specs}
            hint = "did you mean " + " or ".join(f"{named[x].name!r} ({x})" for x in suggestions[:3]) + "?"
        else:
            shown = ", ".join(f"{s.name!r}" for s in specs[:10]) + (", ..." if len(specs) > 10 else "")
            hint = f"known projects: {shown}"
        return f"no project {query!r}; {hint} (to create it: echo-os plan \"{query}\" \"<intent>\")"
