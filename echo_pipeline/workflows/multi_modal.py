"""Multi-modal tasks: which media types exist, how each one is produced, and what it needs as input.

| media type  | produced by                                                  | sources (planned dependencies)   |
|-------------|--------------------------------------------------------------|----------------------------------|
| image       | an image backend (txt2img / img2img)                         | -                                |
| texture     | an image backend (square, tiling=True), then its height,     | a concept/reference image when   |
|             | normal and roughness maps and a seam measure                 | planned                          |
| video       | keyframes from the backend, frames by parameter interpolation | keyframe images                  |
|             | (procedural) or img2img chains (model backends); MP4 + GIF   |                                  |
| 3d_model    | a mesh from the concept image, UV-mapped with the texture    | a concept image and a texture    |
| interactive | a self-contained HTML page drawing the piece live            | an image (its procedural params) |

Media made from sources (`MADE_FROM_SOURCES`) carry what they are made of in `RenderRequest.media`
(`with_sources`): the kind, the options (frames, fps, loop, method...) and the source requests
themselves, so the request id covers everything that decides the output, the sources are rendered
(or found stored) by the same batch, and the artifact's lineage names them. The work itself is
`workflows/media_production.py`.
"""

from __future__ import annotations

import re
from typing import Any, get_args

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.requests import MAX_SIDE, MIN_SIDE, MediaType, RenderRequest

#: Media types the pipeline makes (all of them: nothing is planned that cannot be produced).
RENDERABLE: frozenset[str] = frozenset({"image", "texture", "3d_model", "video", "interactive"})

#: Media types made from other artifacts (their requests carry `media`), not by a backend alone.
MADE_FROM_SOURCES: frozenset[str] = frozenset({"3d_model", "video", "interactive"})

#: Canonical order of media types (plans and intents list them in this order).
MEDIA_ORDER: tuple[str, ...] = ("image", "texture", "3d_model", "video", "interactive")
assert set(MEDIA_ORDER) == set(get_args(MediaType))

#: What each media type is made from (media types of the tasks it depends on when those are planned).
MEDIA_INPUTS: dict[str, tuple[str, ...]] = {
    "image": (),
    "texture": ("image",),
    "3d_model": ("image", "texture"),
    "video": ("image",),
    "interactive": ("image",),
}

#: Why a media type is not rendered (only for types outside RENDERABLE).
NOT_RENDERABLE_REASONS: dict[str, str] = {}

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
    "interactive": "{subject}",
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


# -- media made from sources ----------------------------------------------------------------------
#: Options of each kind with their defaults and (low, high) limits; `media_options` checks them.
VIDEO_OPTIONS: dict[str, Any] = {"frames": 48, "fps": 12, "loop": False, "motion": "auto", "keyframes": 3,
                                 "audio": None}
VIDEO_LIMITS = {"frames": (2, 600), "fps": (1, 60), "keyframes": (1, 8)}
VIDEO_MOTIONS = ("auto", "walk", "zoom", "cycle")
MESH_OPTIONS: dict[str, Any] = {"method": "auto", "resolution": 96}
MESH_METHODS = ("auto", "extrude", "heightfield", "shap-e")
MESH_LIMITS = {"resolution": (16, 256)}


def _checked_int(kind: str, name: str, value: Any, limits: tuple[int, int]) -> int:
    low, high = limits
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"{kind} {name} must be a whole number from {low} to {high} (got {value!r})")
    return value


def media_options(media_type: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options of a media kind with defaults filled in; unknown or out-of-range ones raise
    InvalidInputError (one line naming the option)."""
    given = {k: v for k, v in (options or {}).items() if v is not None}
    defaults: dict[str, Any] = {"video": VIDEO_OPTIONS, "3d_model": MESH_OPTIONS}.get(media_type, {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise InvalidInputError(f"{media_type} has no option {unknown[0]!r} (options: {known})")
    merged = {**defaults, **given}
    if media_type == "video":
        for name, limits in VIDEO_LIMITS.items():
            merged[name] = _checked_int("video", name, merged[name], limits)
        if merged["motion"] not in VIDEO_MOTIONS:
            raise InvalidInputError(f"video motion {merged['motion']!r} is unknown (choose {', '.join(VIDEO_MOTIONS)})")
        merged["loop"] = bool(merged["loop"])
    elif media_type == "3d_model":
        if merged["method"] not in MESH_METHODS:
            raise InvalidInputError(f"3d_model method {merged['method']!r} is unknown (choose {', '.join(MESH_METHODS)})")
        merged["resolution"] = _checked_int("3d_model", "resolution", merged["resolution"], MESH_LIMITS["resolution"])
    return merged


def _source(request: RenderRequest, k: int = 0, **update: Any) -> RenderRequest:
    """A source request derived from a media request: same settings, no media of its own."""
    fields: dict[str, Any] = {"media": None, "media_type": "image", "index": k, "parent_id": None, "strength": None}
    fields.update(update)
    return request.model_copy(update=fields)


def default_sources(request: RenderRequest, options: dict[str, Any]) -> dict[str, list[RenderRequest]]:
    """What an ad-hoc media request (`echo-os render ... --type video|3d_model|interactive`) is made
    from: keyframes of the same prompt on spread seeds (video); a concept image and a seamless texture
    of the subject, material included (3d_model); the image itself (interactive)."""
    subject = request.source_prompt or request.prompt
    if request.media_type == "video":
        # Keyframes that draw the same family (motif and kind) as the first, so a walk between them
        # interpolates like with like (found by the procedural parameters; any seeds suit a model).
        from echo_pipeline.workflows.video_maker import procedural_keyframes

        seeds, _ = procedural_keyframes(request, options["keyframes"])
        return {"keyframes": [_source(request, k, seed=seed) for k, seed in enumerate(seeds)]}
    if request.media_type == "3d_model":
        side = texture_side(request.width, request.height)
        concept = _source(request, prompt=media_prompt("concept", subject), source_prompt=subject)
        texture = _source(request, prompt=media_prompt("texture", subject), source_prompt=subject,
                          media_type="texture", tiling=True, width=side, height=side)
        return {"concept": [concept], "texture": [texture]}
    if request.media_type == "interactive":
        return {"image": [_source(request)]}
    raise InvalidInputError(f"{request.media_type} is not made from sources")


def with_sources(request: RenderRequest, options: dict[str, Any] | None = None,
                 sources: dict[str, list[RenderRequest]] | None = None) -> RenderRequest:
    """`request` with its `media`: kind, checked options and source requests (`default_sources` when
    none are given). The sources' ids are part of the media request's id."""
    opts = media_options(request.media_type, options)
    chosen = sources if sources is not None else default_sources(request, opts)
    media = {"kind": request.media_type, "options": opts,
             "sources": {role: [r.model_dump(mode="json") for r in reqs] for role, reqs in chosen.items()}}
    return request.model_copy(update={"media": media})


def sources_of(request: RenderRequest) -> dict[str, list[RenderRequest]]:
    """The source requests a media request names (empty for plain requests)."""
    media = request.media or {}
    return {role: [RenderRequest.model_validate(r) for r in reqs] for role, reqs in media.get("sources", {}).items()}


def link_plan_sources(requests_by_task: dict[str, list[RenderRequest]], depends_on: dict[str, list[str]],
                      media_types: dict[str, str]) -> dict[str, list[RenderRequest]]:
    """Media requests of a planned batch made from the batch's own requests of the tasks they depend
    on (request k of a 3D task from concept k and texture k, wrapping; a video from `keyframes`
    consecutive keyframe requests), so a project renders each source once."""
    linked: dict[str, list[RenderRequest]] = {}
    for task_id, requests in requests_by_task.items():
        kind = media_types[task_id]
        if kind not in MADE_FROM_SOURCES:
            linked[task_id] = requests
            continue
        inputs = {media_types[d]: requests_by_task.get(d, []) for d in depends_on.get(task_id, [])}
        out = []
        for k, request in enumerate(requests):
            opts = media_options(kind, (request.media or {}).get("options"))
            if kind == "3d_model" and inputs.get("image") and inputs.get("texture"):
                sources = {"concept": [inputs["image"][k % len(inputs["image"])]],
                           "texture": [inputs["texture"][k % len(inputs["texture"])]]}
            elif kind == "video" and inputs.get("image"):
                frames = inputs["image"]
                sources = {"keyframes": [frames[(k + j) % len(frames)] for j in range(min(opts["keyframes"], len(frames)))]}
            elif kind == "interactive" and inputs.get("image"):
                sources = {"image": [inputs["image"][k % len(inputs["image"])]]}
            else:
                sources = None
            out.append(with_sources(request, opts, sources))
        linked[task_id] = out
    return linked
