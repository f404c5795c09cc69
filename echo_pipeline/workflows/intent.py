"""Intent: what a person asked for, in structured form.

`parse_intent("Ruzgar NFT Collection", "warm fractal, no human forms")` gives
subject "warm fractal", constraints ["human forms"], negative terms ["human forms", "human", "person",
...], media types ["image"] and collection=True (the name says "NFT"/"Collection").

Rules (word-level, case-insensitive, on the project name plus the positive part of the text, so a
constraint such as "no video" never asks for video):
- constraints: comma/semicolon/newline separated parts starting with no/without/avoid/exclude/not/
  never/free of (see `prompt_engine.split_constraints`), inline "... without X", "... with no X",
  "... but no X", plus the project's extra constraints;
- media types (always "image"):
  texture  <- texture(s), material(s), pattern(s), seamless, tileable;
  3d_model <- 3d, 3d model(s), model(s), mesh(es), prop(s), weapon(s), "asset(s)" with "game"/"gaming";
              a 3d_model also needs textures, so "texture" comes with it;
  video    <- video (not "video game"), animation, animated, loop(s), looping (in a project's name:
              only video, animation, animated);
  interactive <- interactive, explorable, live piece(s), live art;
- collection <- nft(s), collection(s), series.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, Field

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.prompt_engine import constraint_terms, split_constraints
from echo_pipeline.render.requests import MediaType
from echo_pipeline.workflows.multi_modal import TEXTURE_WORDS, order_media_types

_INLINE_CONSTRAINT = re.compile(r"\s+(?:(?:but|and)\s+(?:no|not|without)|with\s+no|without)\s+", re.IGNORECASE)
_3D = re.compile(
    r"\b(?:3d|3-d)\b|\bmesh(?:es)?\b|\bprops?\b|\bweapons?\b|(?<!fashion )(?<!role )(?<!scale )\bmodels?\b"
)
_GAME = re.compile(r"\b(?:games?|gaming|gamedev)\b")
_ASSETS = re.compile(r"\bassets?\b")
_VIDEO = re.compile(r"\bvideos?\b(?!\s*games?\b)|\banimations?\b|\banimated\b|\bloops?\b|\blooping\b")
_VIDEO_IN_NAME = re.compile(r"\bvideos?\b(?!\s*games?\b)|\banimations?\b|\banimated\b")
_INTERACTIVE = re.compile(r"\binteractive\b|\bexplorable\b|\blive (?:pieces?|art)\b")
_COLLECTION = re.compile(r"\b(?:nfts?|collections?|series)\b")
_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_STOPWORDS = frozenset(
    ["a", "an", "the", "of", "and", "or", "for", "with", "in", "on", "to", "at", "by", "from", "into", "over",
     "under", "some", "very", "its", "it", "this", "that", "is", "are", "be"]
)


class Intent(BaseModel):
    """The normalized intent of a project."""

    project: str = Field(description="the project's display name")
    text: str = Field(description="the intent as the user wrote it (whitespace normalized)")
    subject: str = Field(description="the positive part: what to make, constraints removed")
    constraints: list[str] = Field(default_factory=list, description="things to leave out ('human forms')")
    negative_terms: list[str] = Field(default_factory=list, description="negative-prompt terms for the constraints")
    keywords: list[str] = Field(default_factory=list, description="content words of the subject")
    media_types: list[MediaType] = Field(default_factory=lambda: list[MediaType](["image"]))
    collection: bool = Field(default=False, description="a coherent series (NFT collection, series)")

    @property
    def negative_prompt(self) -> str:
        return ", ".join(self.negative_terms)

    @property
    def game_assets(self) -> bool:
        return "3d_model" in self.media_types


def normalize_constraints(items: Sequence[str]) -> list[str]:
    """'no text', 'without logos, avoid people' or plain 'text' -> ['text', 'logos', 'people'] (deduplicated)."""
    out: list[str] = []
    for item in items:
        if item is None:
            continue
        text = " ".join(str(item).split())
        positive, excluded = split_constraints(text.replace(";", ","))
        # A bare phrase ("human forms") in a constraints list is itself the thing to leave out.
        parts = excluded + [p.strip() for p in positive.split(",") if p.strip()]
        out.extend(parts)
    seen: set[str] = set()
    unique = []
    for phrase in out:
        key = phrase.casefold()
        if key and key not in seen:
            seen.add(key)
            unique.append(phrase)
    return unique


def infer_media_types(text: str) -> list[str]:
    """Media types implied by free text (lower-cased inside); always includes 'image'."""
    low = text.lower()
    types = {"image"}
    if TEXTURE_WORDS.search(low):
        types.add("texture")
    if _3D.search(low) or (_ASSETS.search(low) and _GAME.search(low)):
        types.update({"3d_model", "texture"})
    if _VIDEO.search(low):
        types.add("video")
    if _INTERACTIVE.search(low):
        types.add("interactive")
    return order_media_types(types)


def _media_types(project: str, subject: str) -> list[str]:
    """The media the subject and the project name imply; from a name, "loop" is no video ("Loop
    Test" names a test, "Ruzgar Loops" may name anything): only "video"/"animation" there."""
    from_name = set(infer_media_types(project))
    if "video" in from_name and not _VIDEO_IN_NAME.search(project.lower()):
        from_name.discard("video")
    return order_media_types(set(infer_media_types(subject)) | from_name)


def is_collection(text: str) -> bool:
    return bool(_COLLECTION.search(text.lower()))


def keywords_of(text: str) -> list[str]:
    words = [
        w for w in _WORD.findall(text.lower())
        if w not in _STOPWORDS and len(w) > 1 and not re.fullmatch(r"[\d-]+", w)
    ]
    return list(dict.fromkeys(words))


def parse_intent(project_name: str, text: str, extra_constraints: Sequence[str] = ()) -> Intent:
    """Structure a project's intent; see the module docstring for the rules.

    The subject falls back to the project name when the text only says what to leave out.
    """
    project = " ".join(str(project_name or "").split())
    raw = " ".join(str(text or "").split())
    if not raw and not project:
        raise InvalidInputError("intent is empty: say what to make, e.g. \"warm fractal, no human forms\"")
    prepared = _INLINE_CONSTRAINT.sub(", no ", raw.replace(";", ","))
    subject, excluded = split_constraints(prepared)
    subject = subject or project
    if not subject:
        raise InvalidInputError(f"intent {raw!r} only says what to leave out; say what to make")
    constraints = normalize_constraints([*excluded, *extra_constraints])
    inferred_from = f"{project} {subject}"
    return Intent(
        project=project,
        text=raw,
        subject=subject,
        constraints=constraints,
        negative_terms=constraint_terms(constraints),
        keywords=keywords_of(subject),
        media_types=_media_types(project, subject),
        collection=is_collection(inferred_from),
    )
