"""Style presets: built-in ones from `configs/styles/`, the user's own beside them.

Formats (see PROTOCOLS.md): Fooocus-style JSON (a list of `{name, prompt, negative_prompt}`) and
AUTOMATIC1111 `styles.csv` (`name,prompt,negative_prompt`). Applying a style follows A1111: when the
style prompt contains `{prompt}`, the user's prompt is substituted there, otherwise the style is
appended after ", ". Negative prompts are joined the same way.

Every file in the styles folder is built in, except `user.json`, which holds the styles users create
(`echo-os style create`): built-in files are never rewritten.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from echo_pipeline.errors import InvalidInputError, NotFoundError

USER_STYLES_FILE = "user.json"
PROMPT_SLOT = "{prompt}"
MAX_STYLE_NAME = 60
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def style_key(name: str) -> str:
    """Lookup key: case, spaces, '-' and '_' don't matter ('Digital_Art' == 'digital art')."""
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def join_prompts(*parts: str) -> str:
    """Join prompt fragments with ', ', skipping empty ones."""
    return ", ".join(p.strip().strip(",").strip() for p in parts if p and p.strip().strip(","))


class Style(BaseModel):
    name: str
    prompt: str = Field(default=PROMPT_SLOT, description="template; '{prompt}' marks where the user's prompt goes")
    negative_prompt: str = ""
    source: Literal["builtin", "user"] = "builtin"

    def apply(self, prompt: str, negative_prompt: str = "") -> tuple[str, str]:
        """Return (positive, negative) with this style applied, A1111 semantics."""
        if PROMPT_SLOT in self.prompt:
            positive = self.prompt.replace(PROMPT_SLOT, prompt)
        else:
            positive = join_prompts(prompt, self.prompt)
        positive = re.sub(r"\s*,\s*(,\s*)+", ", ", positive).strip(" ,")
        return positive, join_prompts(negative_prompt, self.negative_prompt)


def _read_style_file(path: Path, source: str) -> list[Style]:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise ValueError("expected a JSON list of {name, prompt, negative_prompt}")
        else:
            rows = list(csv.DictReader(io.StringIO(text)))
        return [
            Style(name=str(r["name"]).strip(), prompt=r.get("prompt") or "", negative_prompt=r.get("negative_prompt") or "",
                  source=source)
            for r in rows
            if str(r.get("name") or "").strip()
        ]
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        raise InvalidInputError(f"style file {path} cannot be read: {exc}") from exc


class StyleLibrary:
    """All styles visible to a user: built-in presets first, then user styles."""

    def __init__(self, styles_dir: Path):
        self.styles_dir = Path(styles_dir)
        self.user_file = self.styles_dir / USER_STYLES_FILE
        self._styles: dict[str, Style] = {}
        self.reload()

    def reload(self) -> None:
        self._styles = {}
        if self.styles_dir.is_dir():
            for path in sorted(self.styles_dir.iterdir()):
                if path.suffix in (".json", ".csv") and path.name != USER_STYLES_FILE:
                    for style in _read_style_file(path, "builtin"):
                        self._styles.setdefault(style_key(style.name), style)
        if self.user_file.is_file():
            for style in _read_style_file(self.user_file, "user"):
                self._styles.setdefault(style_key(style.name), style)

    def fingerprint(self) -> str:
        """A hash of every style file, for change detection (Dagster data versions, sensors)."""
        import hashlib

        digest = hashlib.sha256()
        if self.styles_dir.is_dir():
            for path in sorted(self.styles_dir.iterdir()):
                if path.suffix in (".json", ".csv"):
                    digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()[:16]

    def names(self) -> list[str]:
        return [s.name for s in self._styles.values()]

    def list(self) -> list[Style]:
        return list(self._styles.values())

    def get(self, name: str) -> Style:
        key = style_key(name or "")
        if not key:
            raise InvalidInputError("style name is empty")
        if key in self._styles:
            return self._styles[key]
        close = difflib.get_close_matches(key, list(self._styles), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(self._styles[c].name) for c in close)}?" if close else ""
        raise NotFoundError(f"unknown style {name!r}{hint} (`echo-os style list` shows all {len(self._styles)})")

    def create(self, name: str, description: str, negative_prompt: str = "", *, replace: bool = False) -> Style:
        """Add a user style. A description without '{prompt}' is appended to prompts (A1111 rule)."""
        name = (name or "").strip()
        description = (description or "").strip()
        if not name:
            raise InvalidInputError("style name is empty")
        if len(name) > MAX_STYLE_NAME or _CONTROL.search(name):
            raise InvalidInputError(f"style name {name!r} must be at most {MAX_STYLE_NAME} printable characters")
        if not description:
            raise InvalidInputError(f"style {name!r} needs a description (the words it adds to prompts)")
        if _CONTROL.search(description) or _CONTROL.search(negative_prompt or ""):
            raise InvalidInputError("style text must not contain control characters or newlines")
        existing = self._styles.get(style_key(name))
        if existing is not None and existing.source == "builtin":
            raise InvalidInputError(f"style {existing.name!r} is built in; choose another name")
        if existing is not None and not replace:
            raise InvalidInputError(f"style {existing.name!r} already exists; pass --replace to overwrite it")
        style = Style(name=name, prompt=description, negative_prompt=(negative_prompt or "").strip(), source="user")
        user_styles = [s for s in self.list() if s.source == "user" and style_key(s.name) != style_key(name)]
        self._write_user_styles(user_styles + [style])
        self.reload()
        return style

    def _write_user_styles(self, styles: list[Style]) -> None:
        payload = json.dumps([s.model_dump(exclude={"source"}) for s in styles], indent=2, ensure_ascii=False)
        self.styles_dir.mkdir(parents=True, exist_ok=True)
        # Atomic replace: a crash never leaves a half-written user.json.
        fd, tmp = tempfile.mkstemp(dir=self.styles_dir, prefix=".user-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload + "\n")
            os.replace(tmp, self.user_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
