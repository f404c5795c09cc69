"""Prompt engineering: from what a person typed to a list of seeded render requests.

What it understands:
- numbered ranges: `warm fractal 01-09` -> nine prompts `warm fractal 01` ... `warm fractal 09`;
- dynamicprompts templates: variants `{warm|cool}`, weights `{2::warm|cool}`, picks `{2$$a|b|c}` and
  wildcards `__palettes__` from `configs/wildcards/` (random sampling, seeded, so reproducible);
- constraints: phrases like `no human forms`, `without text`, `avoid people` leave the positive
  prompt and become negative-prompt terms;
- style presets (A1111 `{prompt}` semantics, see style_manager);
- seeds: request k gets `base + k`, where base is `--seed` or a stable hash of the prompt, so running
  the same command twice yields the same requests (and so stores nothing new). A given seed whose
  range would pass MAX_SEED is refused (`check_seed_range`) rather than wrapped to 0, 1, ...
"""

from __future__ import annotations

import re
import warnings
import zlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from echo_pipeline.errors import InvalidInputError, NotFoundError
from echo_pipeline.naming import DEFAULT_PROJECT
from echo_pipeline.render.requests import MAX_PROMPT_CHARS, MAX_SEED, MAX_SIDE, MIN_SIDE, MediaType, RenderRequest
from echo_pipeline.render.style_manager import StyleLibrary, join_prompts

MAX_COUNT = 1000  # images per render/batch command; documented in README and --help
_RANGE = re.compile(r"(?<![\w.])(\d{1,4})\s*-\s*(\d{1,4})(?![\w.])")
_CONSTRAINT = re.compile(r"^(?:no|without|avoid|exclude|not|never|free of)\s+(?P<what>.+)$", re.IGNORECASE)
_WILDCARD = re.compile(r"__([\w\-/]+)__")

# Constraint words whose usual synonyms also belong in the negative prompt.
_CONSTRAINT_SYNONYMS: dict[str, list[str]] = {
    "human": ["human", "person", "people", "face", "body", "figure", "hands"],
    "people": ["people", "person", "human", "crowd", "face", "figure"],
    "person": ["person", "people", "human", "face", "figure"],
    "face": ["face", "portrait", "eyes"],
    "text": ["text", "letters", "watermark", "signature", "logo"],
    "animal": ["animal", "creature", "fur"],
    "blur": ["blurry", "out of focus"],
}


class PromptSpec(BaseModel):
    """What a user asked for; `build_requests` turns it into concrete RenderRequests."""

    prompt: str
    count: int = Field(default=1, description="images per prompt (per number of a range)")
    seed: int | None = None
    style: str | None = None
    negative_prompt: str = ""
    constraints: list[str] = Field(default_factory=list, description="extra 'no X' phrases, e.g. from the project intent")
    width: int = 512
    height: int = 512
    steps: int = 30
    cfg_scale: float = 7.0
    sampler: str = "Euler a"
    tiling: bool = False
    project: str = DEFAULT_PROJECT
    media_type: MediaType = "image"
    parent_id: str | None = Field(default=None, description="img2img: the artifact every image starts from")
    strength: float | None = Field(default=None, description="img2img: how far from the parent (0-1)")
    media: dict[str, Any] | None = Field(default=None, description="options of a media kind made from sources "
                                         "(video: frames, fps, loop...; 3d_model: method); see workflows/multi_modal.py")


def check_seed_range(seed: int, images: int, *, what: str = "seed") -> int:
    """Return `seed` when seeds seed .. seed + images - 1 all fit in 0..MAX_SEED, else a one-line error.

    Image k of a command uses seed + k; a range past MAX_SEED would silently wrap to 0, 1, ... (and
    repeat images made from those seeds), so it is refused, naming the largest usable base seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInputError(f"{what} {seed} is out of range (0-{MAX_SEED})")
    images = max(int(images), 1)
    if seed + images - 1 > MAX_SEED:
        raise InvalidInputError(
            f"{what} {seed} is too large for {images} images (image k uses {what} + k, at most {MAX_SEED}); "
            f"the largest usable {what} is {MAX_SEED - images + 1}"
        )
    return seed


def stable_seed(text: str) -> int:
    """A seed derived from text, identical across processes and machines."""
    return zlib.crc32(text.strip().encode("utf-8")) & MAX_SEED


def parse_size(text: str) -> tuple[int, int]:
    """'512', '768x512' or '768X512' -> (width, height), within the global bounds."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*", text or "")
    if not match:
        raise InvalidInputError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 512x512 or 768x512)")
    width = int(match.group(1))
    height = int(match.group(2) or match.group(1))
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise InvalidInputError(f"size {width}x{height} is out of range: each side must be {MIN_SIDE}-{MAX_SIDE}")
    return width, height


def split_constraints(prompt: str) -> tuple[str, list[str]]:
    """'warm fractal, no human forms' -> ('warm fractal', ['human forms'])."""
    keep, excluded = [], []
    for part in prompt.split(","):
        match = _CONSTRAINT.match(part.strip())
        if match:
            excluded.append(match.group("what").strip())
        elif part.strip():
            keep.append(part.strip())
    return ", ".join(keep), excluded


def constraint_terms(excluded: list[str]) -> list[str]:
    """Negative-prompt terms for excluded things, with common synonyms ('human forms' -> person, face...)."""
    terms: list[str] = []
    for phrase in excluded:
        phrase = re.sub(r"^(?:any|the|a|an)\s+", "", phrase.strip().lower())
        terms.append(phrase)
        for word in re.findall(r"[a-z]+", phrase):
            stem = word[:-1] if word.endswith("s") and word[:-1] in _CONSTRAINT_SYNONYMS else word
            terms.extend(_CONSTRAINT_SYNONYMS.get(stem, []))
    return list(dict.fromkeys(t for t in terms if t))


def expand_range(prompt: str) -> list[str]:
    """Expand the first numbered range ('01-09'); prompts without one come back unchanged."""
    match = _RANGE.search(prompt)
    if not match:
        return [prompt]
    first, last = match.group(1), match.group(2)
    start, end = int(first), int(last)
    if end < start:
        raise InvalidInputError(f"range {first}-{last} counts down; write it as {last}-{first}")
    if end - start + 1 > MAX_COUNT:
        raise InvalidInputError(f"range {first}-{last} has {end - start + 1} numbers; the limit is {MAX_COUNT}")
    width = len(first) if first.startswith("0") or len(first) == len(last) else 0
    return [prompt[: match.start()] + str(n).zfill(width) + prompt[match.end():] for n in range(start, end + 1)]


class PromptEngine:
    def __init__(self, styles: StyleLibrary, wildcards_dir: Path | None = None):
        self.styles = styles
        self.wildcards_dir = wildcards_dir

    def _dynamic(self, template: str, count: int, seed: int) -> list[str]:
        """Sample `count` prompts from a dynamicprompts template (seeded)."""
        if not any(c in template for c in "{}") and not _WILDCARD.search(template):
            return [template] * count
        from dynamicprompts.generators import RandomPromptGenerator
        from dynamicprompts.wildcards import WildcardManager

        manager = WildcardManager(self.wildcards_dir) if self.wildcards_dir else None
        for name in _WILDCARD.findall(template):
            if manager is None or not manager.get_values(name):
                known = ", ".join(f"__{n}__" for n in sorted(manager.get_collection_names())) if manager else "none"
                raise NotFoundError(f"unknown wildcard __{name}__ (available: {known})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                generator = RandomPromptGenerator(wildcard_manager=manager, seed=seed)
                prompts = generator.generate(template, count)
        except Exception as exc:  # pyparsing raises its own error types for bad templates
            raise InvalidInputError(f"prompt template {template!r} cannot be parsed: {exc.__class__.__name__}") from exc
        return [" ".join(p.split()) for p in prompts]

    def build_requests(self, spec: PromptSpec) -> list[RenderRequest]:
        """All render requests for a spec, in order; raises InvalidInputError/NotFoundError up front."""
        prompt = " ".join((spec.prompt or "").split())
        if not prompt:
            raise InvalidInputError("prompt is empty")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInputError(f"prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}")
        if spec.count < 1:
            raise InvalidInputError(f"count must be at least 1 (got {spec.count})")
        if spec.count > MAX_COUNT:
            raise InvalidInputError(f"count {spec.count} is above the limit of {MAX_COUNT} images per command")
        if spec.seed is not None:
            check_seed_range(spec.seed, 1)
        style = self.styles.get(spec.style) if spec.style else None

        positive, excluded = split_constraints(prompt)
        if not positive:
            raise InvalidInputError(f"prompt {prompt!r} only says what to leave out; say what to make")
        negative_terms = constraint_terms(excluded + list(spec.constraints))
        items = expand_range(positive)
        total = len(items) * spec.count
        if total > MAX_COUNT:
            raise InvalidInputError(f"{len(items)} prompts x count {spec.count} = {total} images; the limit is {MAX_COUNT}")

        if spec.seed is not None:
            check_seed_range(spec.seed, total)
        # A seed derived from the prompt is a hash, not the user's choice: its range may wrap.
        base_seed = spec.seed if spec.seed is not None else stable_seed(prompt)
        expanded: list[str] = []
        for i, item in enumerate(items):
            expanded.extend(self._dynamic(item, spec.count, (base_seed + i) & MAX_SEED))

        requests = []
        for k, text in enumerate(expanded):
            negative = join_prompts(spec.negative_prompt, ", ".join(negative_terms))
            final, negative = style.apply(text, negative) if style else (text, negative)
            if len(final) > MAX_PROMPT_CHARS:
                styled = f" with style {style.name!r} applied" if style else ""
                raise InvalidInputError(
                    f"prompt is {len(final)} characters long{styled}; the limit is {MAX_PROMPT_CHARS}"
                    + (" (shorten the prompt or the style)" if style else "")
                )
            try:
                requests.append(RenderRequest(
                    prompt=final, negative_prompt=negative, seed=(base_seed + k) & MAX_SEED,
                    width=spec.width, height=spec.height, steps=spec.steps, cfg_scale=spec.cfg_scale,
                    sampler=spec.sampler, tiling=spec.tiling, source_prompt=text,
                    style=style.name if style else None, project=spec.project,
                    media_type=spec.media_type, index=k, parent_id=spec.parent_id, strength=spec.strength,
                ))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise InvalidInputError(f"{where}: {err['msg']}") from exc
        return requests
