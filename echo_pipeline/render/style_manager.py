"""Style presets: built-in ones from `configs/styles/`, the user's own beside them.

Formats: Fooocus-style JSON (a list of `{name, prompt, negative_prompt}`) and AUTOMATIC1111
`styles.csv` (`name,prompt,negative_prompt`). Applying a style follows A1111: when the
style prompt contains `{prompt}`, the user's prompt is substituted there, otherwise the style is
appended after ", ". Negative prompts are joined the same way.

Every file in the styles folder is built in, except `user.json`, which holds the styles users create
(`echo-os style create`): built-in files are never rewritten.

Limits (checked when a style is created and when a file is loaded, so a style that could never render
is caught where it is made): a name of at most `MAX_STYLE_NAME` printable characters, a template and a
negative prompt of at most `MAX_STYLE_TEXT` characters each (half the prompt limit, leaving the other
half for the user's prompt), no control characters. A style in a file that breaks them is left out
of the library and reported (`StyleLibrary.problems`); asking for it names the file and the problem.
"""

from __future__ import annotations

import builtins
import csv
import difflib
import io
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from echo_pipeline.atomic import write_atomic
from echo_pipeline.errors import InvalidInputError, NotFoundError
from echo_pipeline.render.requests import MAX_PROMPT_CHARS

USER_STYLES_FILE = "user.json"
PROMPT_SLOT = "{prompt}"
MAX_STYLE_NAME = 60
MAX_STYLE_TEXT = MAX_PROMPT_CHARS // 2
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_NOT_SPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def style_key(name: str) -> str:
    """Lookup key: case, spaces, '-' and '_' don't matter ('Digital_Art' == 'digital art')."""
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def join_prompts(*parts: str) -> str:
    """Join prompt fragments with ', ', skipping empty ones."""
    return ", ".join(p.strip().strip(",").strip() for p in parts if p and p.strip().strip(","))


StyleSource = Literal["builtin", "user"]


class Style(BaseModel):
    name: str
    prompt: str = Field(default=PROMPT_SLOT, description="template; '{prompt}' marks where the user's prompt goes")
    negative_prompt: str = ""
    source: StyleSource = "builtin"

    def apply(self, prompt: str, negative_prompt: str = "") -> tuple[str, str]:
        """Return (positive, negative) with this style applied, A1111 semantics."""
        if PROMPT_SLOT in self.prompt:
            positive = self.prompt.replace(PROMPT_SLOT, prompt)
        else:
            positive = join_prompts(prompt, self.prompt)
        positive = re.sub(r"\s*,\s*(,\s*)+", ", ", positive).strip(" ,")
        return positive, join_prompts(negative_prompt, self.negative_prompt)


def style_problem(name: str, prompt: str, negative_prompt: str = "", *, allow_newlines: bool = False) -> str | None:
    """What makes a style unusable ('template is 10000 characters long; the limit is 1000'), or None.

    Styles read from files may contain line breaks and tabs (A1111 CSVs do); created ones may not.
    """
    control = _CONTROL_NOT_SPACE if allow_newlines else _CONTROL
    if not name:
        return "style name is empty"
    if len(name) > MAX_STYLE_NAME or _CONTROL.search(name):
        shown = repr(name) if len(name) <= MAX_STYLE_NAME else f"{name[:MAX_STYLE_NAME]!r}... ({len(name)} characters)"
        return f"style name {shown} must be at most {MAX_STYLE_NAME} printable characters"
    for what, text in (("template", prompt), ("negative prompt", negative_prompt)):
        if len(text) > MAX_STYLE_TEXT:
            return (f"style {name!r}: {what} is {len(text)} characters long; the limit is {MAX_STYLE_TEXT} "
                    f"(prompts are at most {MAX_PROMPT_CHARS} characters with the style applied)")
        if control.search(text):
            newlines = "" if allow_newlines else " or newlines"
            return f"style {name!r}: {what} must not contain control characters{newlines}"
    return None


def _read_style_file(path: Path, source: StyleSource) -> tuple[list[Style], list[tuple[Style, str]]]:
    """(the usable styles, (style, problem) for each unusable one); an unreadable file raises."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise ValueError("expected a JSON list of {name, prompt, negative_prompt}")
        else:
            rows = list(csv.DictReader(io.StringIO(text)))
        styles = [
            Style(name=str(r["name"]).strip(), prompt=r.get("prompt") or "", negative_prompt=r.get("negative_prompt") or "",
                  source=source)
            for r in rows
            if str(r.get("name") or "").strip()
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise InvalidInputError(f"style file {path} cannot be read: {exc}") from exc
    good, bad = [], []
    for style in styles:
        problem = style_problem(style.name, style.prompt, style.negative_prompt, allow_newlines=True)
        if problem is None:
            good.append(style)
        else:
            bad.append((style, f"style file {path}: {problem}"))
    return good, bad


class StyleLibrary:
    """All styles visible to a user: built-in presets first, then user styles."""

    def __init__(self, styles_dir: Path):
        self.styles_dir = Path(styles_dir)
        self.user_file = self.styles_dir / USER_STYLES_FILE
        self._styles: dict[str, Style] = {}
        self._broken: dict[str, tuple[Style, str]] = {}
        self.reload()

    def reload(self) -> None:
        self._styles, self._broken = {}, {}
        files: list[tuple[Path, StyleSource]] = []
        if self.styles_dir.is_dir():
            files = [(p, "builtin") for p in sorted(self.styles_dir.iterdir())
                     if p.suffix in (".json", ".csv") and p.name != USER_STYLES_FILE]
        if self.user_file.is_file():
            files.append((self.user_file, "user"))
        for path, source in files:
            good, bad = _read_style_file(path, source)
            for style in good:
                key = style_key(style.name)
                if key not in self._broken:
                    self._styles.setdefault(key, style)
            for style, problem in bad:
                key = style_key(style.name)
                if key not in self._styles:
                    self._broken.setdefault(key, (style, problem))

    @property
    def problems(self) -> list[str]:
        """One line per style left out because its file breaks the limits (file, style, what is wrong)."""
        return [problem for _, problem in self._broken.values()]

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
        if key in self._broken:
            raise InvalidInputError(self._broken[key][1])
        close = difflib.get_close_matches(key, list(self._styles), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(self._styles[c].name) for c in close)}?" if close else ""
        raise NotFoundError(f"unknown style {name!r}{hint} (`echo-os style list` shows all {len(self._styles)})")

    def create(self, name: str, description: str, negative_prompt: str = "", *, replace: bool = False) -> Style:
        """Add a user style. A description without '{prompt}' is appended to prompts (A1111 rule)."""
        name = (name or "").strip()
        description = (description or "").strip()
        negative_prompt = (negative_prompt or "").strip()
        problem = style_problem(name, "")
        if problem is None and not description:
            problem = f"style {name!r} needs a description (the words it adds to prompts)"
        problem = problem or style_problem(name, description, negative_prompt)
        if problem is not None:
            raise InvalidInputError(problem)
        key = style_key(name)
        existing = self._styles.get(key) or (self._broken[key][0] if key in self._broken else None)
        if existing is not None and existing.source == "builtin":
            raise InvalidInputError(f"style {existing.name!r} is built in; choose another name")
        if existing is not None and not replace:
            raise InvalidInputError(f"style {existing.name!r} already exists; pass --replace to overwrite it")
        style = Style(name=name, prompt=description, negative_prompt=negative_prompt, source="user")
        # Styles of user.json left out for breaking the limits are written back as they were.
        kept = [s for s in self.list() if s.source == "user"] + [s for s, _ in self._broken.values() if s.source == "user"]
        user_styles = [s for s in kept if style_key(s.name) != key]
        self._write_user_styles(user_styles + [style])
        self.reload()
        return style

    def _write_user_styles(self, styles: builtins.list[Style]) -> None:
        payload = json.dumps([s.model_dump(exclude={"source"}) for s in styles], indent=2, ensure_ascii=False)
        self.styles_dir.mkdir(parents=True, exist_ok=True)
        # Atomic replace (a crash never leaves a half-written user.json), umask permissions.
        write_atomic(self.user_file, payload + "\n")
