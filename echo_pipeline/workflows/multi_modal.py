"""Multi-modal tasks: which media types exist, how each one is produced, and what it needs as input.

A plan mixes four media types (`render.requests.MediaType`):

| media type | produced by                                   | inputs (planned dependencies)          |
|------------|-----------------------------------------------|-----------------------------------------|
| image      | an image backend, now (txt2img)               | -                                       |
| texture    | an image backend, now (square, tiling=True)   | a concept/reference image when planned  |
| 3d_model   | planned, not implemented yet                  | a concept image and a texture           |
| video      | planned, not implemented yet                  | keyframe images                         |

Only `RENDERABLE` types are rendered. 3d_model and video tasks stay in the plan with their
dependencies, `renderable=False` and the reason, so the plan is honest about what the pipeline will
make; nothing ever fakes their output.
"""

from __future__ import annotations

import re
from typing import get_args

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.requests import MAX_SIDE, MIN_SIDE, MediaType

#: Media types rendered now by the image backends.
RENDERABLE: frozenset[str] = frozenset({"image", "texture"})

#: Canonical order of media types (plans and intents list them in this order).
MEDIA_ORDER: tuple[str, ...] = ("image", "texture", "3d_model", "video")
assert set(MEDIA_ORDER) == set(get_args(MediaType))

#: What each media type is made from (media types of the tasks it depends on when those are planned).
MEDIA_INPUTS: dict[str, tuple[str, ...]] = {
    "image": (),
    "texture": ("image",),
    "3d_model": ("image", "texture"),
    "video": ("image",),
}

#: Why a media type is not rendered (only for types outside RENDERABLE).
NOT_RENDERABLE_REASONS: dict[str, str] = {
    "3d_model": "3d_model generation is planned but not implemented yet: its concept images and textures "
                "are rendered, the mesh itself is not",
    "video": "video generation is planned but not implemented yet: its keyframe images are rendered, "
             "the clip itself is not",
}

#: Words that name a texture (the one home of this rule: intent and the planner import it).
TEXTURE_WORDS = re.compile(r"\b(?:textures?|materials?|patterns?|seamless|tileable|tiling)\b", re.IGNORECASE)

#: Material words: a subject naming one already says what its textures are made of.
MATERIAL_WORDS = re.compile(
    r"\b(?:metal\w*|steel|iron|bronze|copper|silver|gold(?:en)?|chrome|wood(?:en)?|oak|timber|bamboo|stone|"
    r"rocks?|rocky|granite|marble|bricks?|concrete|slate|leather|fabric|cloth|silk|glass|bone|crystal|ice)\b",
    re.IGNORECASE,
)

#: The material a subject implies when it names none: texture, concept and 3D prompts carry it, so
#: every backend is told what "medieval fantasy weapons" are made of (and the procedural one, which
#: knows materials but no weapons, picks its steel palette and closest look from it).
MATERIAL_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:weapons?|swords?|blades?|daggers?|knife|knives|axes?|spears?|maces?|halberds?|armou?rs?|"
                r"helmets?|gauntlets?|chainmail)\b", re.IGNORECASE), "forged steel"),
    (re.compile(r"\b(?:castles?|ruins?|temples?|dungeons?|fortress(?:es)?|statues?|walls?|towers?)\b",
                re.IGNORECASE), "weathered stone"),
    (re.compile(r"\b(?:furniture|barrels?|crates?|chests?|tables?|chairs?|cabins?|bows?|staffs?)\b",
                re.IGNORECASE), "oak wood"),
)

# Prompt templates per media type and role; `{subject}` is the intent's positive part.
_PROMPTS: dict[str, str] = {
    "image": "{subject}",
    "concept": "concept art of {subject}, game asset design, clean silhouette, neutral background",
    "keyframes": "{subject}, cinematic keyframe",
    "texture": "seamless texture of {subject}, tileable, even lighting, top-down view, high detail",
    "3d_model": "3d model of {subject}, game-ready asset, pbr materials",
    "video": "{subject}, seamless looping animation",
}


def is_renderable(media_type: str) -> bool:
    return media_type in RENDERABLE


def not_renderable_reason(media_type: str) -> str | None:
    """Why tasks of this media type are not rendered; None for renderable types."""
    return None if is_renderable(media_type) else NOT_RENDERABLE_REASONS.get(media_type, f"{media_type} cannot be rendered")


def order_media_types(media_types) -> list[str]:
    """Deduplicate and sort media types into MEDIA_ORDER; unknown names raise InvalidInputError."""
    wanted = set(media_types)
    unknown = sorted(wanted - set(MEDIA_ORDER))
    if unknown:
        raise InvalidInputError(f"unknown media type {unknown[0]!r} (known: {', '.join(MEDIA_ORDER)})")
    return [m for m in MEDIA_ORDER if m in wanted]


def texture_side(width: int, height: int) -> int:
    """Textures are square: the shorter side of the project size, rounded down to a multiple of 64."""
    side = min(width, height) // 64 * 64
    return max(MIN_SIDE, min(MAX_SIDE, side))


def media_defaults(media_type: str, width: int = 512, height: int = 512) -> dict:
    """How tasks of `media_type` are produced for a project of size `width`x`height`.

    Returns width, height, tiling, renderable, reason (None when renderable) and inputs (the media types
    the task is made from). Images (and the keyframes/concepts that feed video and 3D) use the project
    size; textures are square and tile seamlessly.
    """
    if media_type not in MEDIA_INPUTS:
        raise InvalidInputError(f"unknown media type {media_type!r} (known: {', '.join(MEDIA_ORDER)})")
    if media_type == "texture":
        side = texture_side(width, height)
        size = {"width": side, "height": side, "tiling": True}
    else:
        size = {"width": width, "height": height, "tiling": False}
    return {
        **size,
        "renderable": is_renderable(media_type),
        "reason": not_renderable_reason(media_type),
        "inputs": list(MEDIA_INPUTS[media_type]),
    }


def material_hint(subject: str) -> str | None:
    """The material `subject` implies ("medieval fantasy weapons" -> "forged steel"); None when it
    names a material itself or implies none."""
    if MATERIAL_WORDS.search(subject):
        return None
    return next((material for pattern, material in MATERIAL_HINTS if pattern.search(subject)), None)


def media_prompt(role: str, subject: str) -> str:
    """The engineered prompt of a task: `role` is a media type or 'concept'/'keyframes' (image roles).

    Texture, concept and 3d_model prompts carry the subject's material (`material_hint`).
    """
    subject = subject.strip()
    material = material_hint(subject) if role in ("texture", "concept", "3d_model") else None
    if role == "texture" and TEXTURE_WORDS.search(subject):
        # "seamless stone textures" already names the texture: don't say it twice.
        lead = subject if re.search(r"\bseamless\b", subject, re.IGNORECASE) else f"seamless {subject}"
        return f"{lead}{f', {material}' if material else ''}, tileable, even lighting, top-down view, high detail"
    if role == "texture" and material:
        return _PROMPTS["texture"].replace("seamless texture of", f"seamless {material} texture of").format(
            subject=subject)
    template = _PROMPTS.get(role, "{subject}")
    if material:
        template = template.replace("{subject}", f"{{subject}}, {material}", 1)
    return template.format(subject=subject)
