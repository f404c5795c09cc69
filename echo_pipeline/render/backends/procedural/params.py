"""From a request to the full parameter dict an image is drawn from, and back to pixels.

`build_params(request)` is the only place prompt words and seeds turn into numbers; `render_params`
draws pixels from that dict alone (plus size and tiling). The dict is JSON-able and goes into every
image's `info["params"]`, so an artifact can be re-created exactly and `refine` can move it in
parameter space instead of smudging pixels.

Seeding: every random choice comes from `np.random.default_rng([seed, text_hash, crc32(purpose)])`,
where `text_hash` is a crc32 of the prompt's non-vocabulary words. Separate purposes ("motif",
"palette", the motif's own name) keep choices independent: recolouring a prompt ("warm" -> "cool")
keeps its composition, and "warm fractal 01" vs "warm fractal 02" differ even on one seed.
Composition coordinates (where, zoom, rotation, placement) come from `framing.framing_point(seed,
text_hash)` instead: low-discrepancy over seeds, so a project's batches do not repeat framings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from echo_pipeline.render.backends.procedural import finish, framing, motifs, words
from echo_pipeline.render.backends.procedural.palettes import DEFAULT_PALETTES, Palette, blend_specs, palette_spec

PROCEDURAL_VERSION = "9"  # bump whenever the same params/request would give different pixels (see test_golden)

# With no motif word, the seed picks among the families that look best on their own.
DEFAULT_MOTIFS = (("fractal", 0.3), ("flow", 0.22), ("nebula", 0.18), ("landscape", 0.18), ("waves", 0.12))
TILING_MOTIFS = (("geometric", 0.35), ("flow", 0.25), ("nebula", 0.2), ("waves", 0.2))
# Kinds of the `material` family: one per material of `words.MATERIALS`, named alike.
MATERIAL_KINDS = ("metal", "wood", "stone", "leather", "cloth")
# With no palette word, palettes that suit the motif.
MOTIF_PALETTES: dict[str, tuple[str, ...]] = {
    "city": ("neon noir", "neon", "sunset", "cool", "purple", "vaporwave"),
    "nebula": ("neon", "cool", "purple", "fire", "ocean", "vaporwave", "sunset", "ice", "neon noir"),
    "landscape": ("sunset", "warm", "cool", "pastel", "forest", "autumn", "ice", "vaporwave", "purple", "gold"),
    "object": ("steel",),  # an item's metal parts: forged steel unless a word names other colours
}
# Strength an effect gets when a word asks for it, and the quiet defaults every image has.
EFFECT_ON = {"rain": 1.0, "snow": 1.0, "fog": 0.55, "glow": 0.6, "vignette": 0.45, "grain": 0.6, "soft": 0.6,
             "pixel": 1.0}
EFFECT_BASE = {"rain": 0.0, "snow": 0.0, "fog": 0.0, "glow": 0.0, "vignette": 0.22, "grain": 0.12, "soft": 0.0,
               "pixel": 0.0}
MOTIF_GLOW = {"city": 0.45, "nebula": 0.4, "fractal": 0.15, "waves": 0.12, "flow": 0.1, "material": 0.0}
# Quieter effect defaults for surfaces: a texture is albedo for a game engine, not a photograph.
SURFACE_EFFECTS = {"grain": 0.04}
# Objects sit on a plain studio backdrop a segmenter cuts them from: no vignette, glow or heavy grain
# unless the words ask for them.
OBJECT_EFFECTS = {"grain": 0.04, "vignette": 0.0, "glow": 0.0}
GLOWY_PALETTES = {"neon", "neon noir", "vaporwave", "fire"}


def _rng(seed: int, text_hash: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(text_hash), words.stable_key(purpose)])


def _weighted(rng: np.random.Generator, options: tuple[tuple[str, float], ...], allowed) -> str:
    names = [n for n, _ in options if n in allowed] or [m for m in motifs.MOTIF_MODULES
                                                         if m in allowed and m != "object"]
    if not names:
        names = [n for n, _ in options]
    weights = np.array([dict(options).get(n, 0.1) for n in names], dtype=float)
    return str(names[int(rng.choice(len(names), p=weights / weights.sum()))])


def choose_motif(parsed: words.Parsed, rng: np.random.Generator, tiling: bool) -> str:
    """The motif family; a material's surface (tiling, or a surface word) is the `material` family in
    the material's kind (put first in `parsed.kinds`, replacing the picture family's sub-kinds)."""
    if parsed.motif == "object" and tiling:
        # a tiling request never draws an object: back to what the other words chose ("sword" -> steel)
        if parsed.without_object is not None:
            parsed.motif, parsed.motif_source, parsed.motif_contextual = parsed.without_object
        parsed.kinds[:] = [k for k in parsed.kinds if k not in words.OBJECTS and k != "weapon"]
    material = parsed.material
    if (parsed.motif and parsed.motif_source == "material" and material and "material" not in parsed.excluded_motifs
            and (tiling or parsed.surface or parsed.motif == "material")):
        borrowed = set(words.MATERIALS[material]["kinds"]) | set(MATERIAL_KINDS)
        parsed.kinds[:] = [material] + [k for k in parsed.kinds if k not in borrowed]
        return "material"
    motif = parsed.motif or _weighted(rng, TILING_MOTIFS if tiling else DEFAULT_MOTIFS,
                                      [m for m in motifs.MOTIF_MODULES if m not in parsed.excluded_motifs])
    if motif == "material" and not any(k in MATERIAL_KINDS for k in parsed.kinds):
        parsed.kinds.append(str(MATERIAL_KINDS[int(rng.integers(len(MATERIAL_KINDS)))]))  # "material" alone
    return motif


def choose_palette(parsed: words.Parsed, motif: str, rng: np.random.Generator) -> str:
    if parsed.palette:
        return parsed.palette
    kind = next((k for k in parsed.kinds if k in MATERIAL_KINDS), None) if motif == "material" else None
    if kind and words.MATERIALS[kind]["palette"] not in parsed.excluded_palettes:
        return str(words.MATERIALS[kind]["palette"])  # a surface's own colours (`choose_motif` set its kind)
    options = [p for p in MOTIF_PALETTES.get(motif, DEFAULT_PALETTES) if p not in parsed.excluded_palettes]
    options = options or [p for p in DEFAULT_PALETTES if p not in parsed.excluded_palettes] or ["warm"]
    return str(options[int(rng.integers(len(options)))])


def effects_for(parsed: words.Parsed, motif: str, palette: str, tiling: bool) -> dict[str, float]:
    fx = dict(EFFECT_BASE)
    fx["glow"] = max(MOTIF_GLOW.get(motif, 0.0), 0.25 if palette in GLOWY_PALETTES else 0.0)
    for name, state in parsed.effects.items():
        fx[name] = 0.0 if state < 0 else max(fx.get(name, 0.0), EFFECT_ON[name])
    if motif == "object":
        fx.update({k: v for k, v in OBJECT_EFFECTS.items() if k not in parsed.effects})
    if motif == "material":
        fx.update({k: v for k, v in SURFACE_EFFECTS.items() if k not in parsed.effects})
        if "glow" not in parsed.effects:
            fx["glow"] = 0.0  # palettes' glow would bloom a texture's highlights
    if tiling:
        fx["vignette"] = 0.0  # a vignette would darken every tile border
    return {k: round(float(v), 4) for k, v in fx.items()}


def canvas_for(params: dict[str, Any], width: int, height: int, tiling: bool) -> motifs.Canvas:
    return motifs.Canvas(
        width=width, height=height, tiling=tiling, palette=Palette.from_spec(params["palette"]),
        seed=[int(params["seed"])], detail=float(params["detail"]), light=float(params["light"]),
        effects=dict(params["effects"]),
    )


def build_params(prompt: str, negative: str, seed: int, width: int, height: int, tiling: bool) -> dict[str, Any]:
    """Parameters for a txt2img request: words pick motif/palette/effects, the seed picks the rest."""
    parsed = words.parse(prompt, negative)
    text_hash = words.vocabulary_free_hash(prompt)
    motif = choose_motif(parsed, _rng(seed, text_hash, "motif"), tiling)
    palette_rng = _rng(seed, text_hash, "palette")
    palette = choose_palette(parsed, motif, palette_rng)
    structure = _rng(seed, text_hash, motif)
    params: dict[str, Any] = {
        "version": PROCEDURAL_VERSION,
        "motif": motif,
        "seed": int(structure.integers(0, 2**31 - 1)),
        "palette": palette_spec(palette, palette_rng),
        "detail": round(1.0 + 0.45 * parsed.detail, 4),
        "light": round(parsed.light, 4),
        "saturation": round(parsed.saturation, 4),
        "effects": effects_for(parsed, motif, palette, tiling),
        "kinds": list(parsed.kinds),
        "motif_source": parsed.motif_source,  # "prompt", "material" or "seed": did a word choose it?
        "material": parsed.material,
        "size": [int(width), int(height)],  # what it was drawn at (a refine may choose another size)
        "tiling": bool(tiling),
    }
    canvas = canvas_for(params, width, height, tiling)
    # Composition from the seed's low-discrepancy point: a project's seeds never share a framing.
    canvas.framing = framing.framing_point(seed, text_hash)
    params["motif_params"] = motifs.get(motif).make(structure, canvas, parsed.kinds)
    return params


def _new_words(old_prompt: str, new_prompt: str) -> str:
    """The refine prompt's words that the parent's prompt did not have, in order; a word right after
    a new negator is kept too ("no rain" must reach the parser even when the parent said "rain")."""
    old = set(words.tokenize(old_prompt))
    kept: list[str] = []
    previous_new = ""
    for word in words.tokenize(new_prompt):
        if word not in old or previous_new in words.NEGATORS:
            kept.append(word)
            previous_new = word
        else:
            previous_new = ""
    return " ".join(kept)


def refine_params(parent: dict[str, Any], parent_prompt: str, prompt: str, negative: str, seed: int,
                  strength: float, width: int, height: int, tiling: bool) -> tuple[dict[str, Any], list[str]]:
    """img2img as a move in parameter space: vary the parent's params by `strength`, then apply the
    refine prompt's new words (palette, effects, detail, light). Returns (params, changes)."""
    added = _new_words(parent_prompt, prompt)
    parsed = words.parse(added, negative)
    rng = np.random.default_rng([int(seed), words.stable_key(prompt), words.stable_key("refine")])
    amount = float(np.clip(strength, 0.0, 1.0))
    changes: list[str] = []
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in parent.items()}
    params["version"] = PROCEDURAL_VERSION
    params["size"], params["tiling"] = [int(width), int(height)], bool(tiling)
    kinds = list(dict.fromkeys(list(parent.get("kinds", [])) + parsed.kinds))
    params["kinds"] = kinds

    motif = parent["motif"]
    if motif == "material" and parsed.material and parsed.motif_source == "material":
        # a material word on a surface changes its kind ("... , oak"), not the family
        parsed.kinds[:] = [parsed.material] + [k for k in parsed.kinds if k not in MATERIAL_KINDS]
        if parsed.material != parent["motif_params"].get("kind"):
            changes.append(f"kind:{parsed.material}")
        parsed.motif = None
    # A family noun ("add a nebula") changes the motif; a contextual word ("add stars", "at night")
    # only its look: effects, palette, light.
    if parsed.motif and parsed.motif != motif and not parsed.motif_contextual:
        motif, changes = parsed.motif, changes + [f"motif:{parsed.motif}"]
        params["motif_source"] = parsed.motif_source
    elif motif in parsed.excluded_motifs:
        motif = choose_motif(words.Parsed(excluded_motifs=parsed.excluded_motifs), rng, tiling)
        changes.append(f"motif:{motif}")
        params["motif_source"] = "seed"
    params["motif"] = motif
    if parsed.material:
        params["material"] = parsed.material

    name = parent["palette"]["name"]
    if parsed.palette and parsed.palette != name:
        params["palette"] = palette_spec(parsed.palette, rng)
        changes.append(f"palette:{parsed.palette}")
    elif name in parsed.excluded_palettes:
        new = choose_palette(words.Parsed(excluded_palettes=parsed.excluded_palettes), motif, rng)
        params["palette"] = palette_spec(new, rng)
        changes.append(f"palette:{new}")
    elif amount > 0 and name in DEFAULT_PALETTES + ("noir", "monochrome", "earthy", "steel", "wood", "stone", "leather",
                                             "cloth"):
        params["palette"] = blend_specs(parent["palette"], palette_spec(name, rng), amount * 0.6)

    effects = dict(parent["effects"])
    for effect, state in parsed.effects.items():
        effects[effect] = 0.0 if state < 0 else max(effects.get(effect, 0.0), EFFECT_ON[effect])
        changes.append(f"{'-' if state < 0 else '+'}{effect}")
    if tiling:
        effects["vignette"] = 0.0
    params["effects"] = effects
    if parsed.detail:
        params["detail"] = round(float(np.clip(parent["detail"] + 0.4 * parsed.detail, 0.55, 1.6)), 4)
        changes.append(f"detail:{params['detail']}")
    if parsed.light:
        params["light"] = round(float(np.clip(parent["light"] + 0.5 * parsed.light, -1.5, 1.5)), 4)
        changes.append(f"light:{params['light']}")
    if parsed.saturation:
        params["saturation"] = round(float(np.clip(parent["saturation"] + 0.5 * parsed.saturation, -1.5, 1.5)), 4)

    if amount >= 1.0 or rng.random() < amount ** 3:
        params["seed"] = int(rng.integers(0, 2**31 - 1))
    canvas = canvas_for(params, width, height, tiling)
    module = motifs.get(motif)
    if motif != parent["motif"]:
        params["motif_params"] = module.make(rng, canvas, kinds)
    else:
        # strength is eased (amount^1.4): small strengths stay close to the parent, 1 is still "free"
        params["motif_params"] = module.vary(parent["motif_params"], rng, amount ** 1.4, canvas, parsed.kinds)
    return params, changes


def render_params(params: dict[str, Any], width: int, height: int, tiling: bool) -> Image.Image:
    """Pixels from params alone: motif, seamless pass, effects, sRGB."""
    canvas = canvas_for(params, width, height, tiling)
    module = motifs.get(params["motif"])
    img = module.draw(params["motif_params"], canvas)
    if tiling:
        img = finish.seamless(img, module.periodic(params["motif_params"], canvas))
    fog_profile = getattr(module, "fog_profile", None)
    profile = fog_profile(params["motif_params"], canvas) if fog_profile else None
    rgb = finish.apply_effects(img, params, canvas.palette, tiling, profile, [int(params["seed"]), width, height])
    return Image.fromarray(rgb, "RGB")
