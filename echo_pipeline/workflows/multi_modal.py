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

_TEXTURE_WORDS = re.compile(r"\b(?:textures?|materials?|patterns?|tileable)\b", re.IGNORECASE)

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


def media_prompt(role: str, subject: str) -> str:
    """The engineered prompt of a task: `role` is a media type or 'concept'/'keyframes' (image roles)."""
    subject = subject.strip()
    if role == "texture" and _TEXTURE_WORDS.search(subject):
        # "seamless stone textures" already names the texture: don't say it twice.
        lead = subject if re.search(r"\bseamless\b", subject, re.IGNORECASE) else f"seamless {subject}"
        return f"{lead}, tileable, even lighting, top-down view, high detail"
    template = _PROMPTS.get(role, "{subject}")
    return template.format(subject=subject)
