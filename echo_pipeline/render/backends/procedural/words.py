"""Prompt parsing: which motif, palette, effects and modifiers the words ask for.

Rules (all case- and accent-insensitive, plurals folded):
- Motif and palette: the EARLIEST matching word wins. Prompts are "user words, style words", so the
  user's choice beats a style preset's. Motif words come in two tiers: nouns that name a family
  ("fractal", "city", "flow") beat contextual words ("cyberpunk", "texture", "stars"), whatever their
  order, because some presets put such words *before* the user's prompt ("cyberpunk {prompt}",
  "seamless texture of {prompt}").
- Multi-word keys ("neon noir", "burning ship", "more detail") match greedily, longest first, so
  "neon noir" is its own palette and "negative space" never means outer space.
- Negative-prompt words exclude every motif, palette and effect they name (and push modifiers the
  other way: a negative "ornate" lowers detail).
- Effects are additive: every effect word present switches that effect on; "no"/"without" before an
  effect word switches it off.
- Materials ("steel", "sword", "oak", "granite", "leather", "linen"...): a material word picks the
  material's palette (as a palette word, in prompt order) and, unless a family noun is named, the
  material's motif, between the two motif tiers. Surfaces (a tiling request, or a surface word such
  as "texture", "material", "seamless", or a surface phrase such as "wood grain") are drawn by the
  `material` family in the material's kind ("sword texture" is worked steel); other images of metal,
  wood and stone keep the closest picture family (`MATERIALS`: "steel sword" concept art is brushed
  steel strokes, "stone" a rock landscape). Leather and cloth have no closer family than `material`.
- Objects ("sword", "axe", "shield", "weapons"...): an object noun draws the item itself (the `object`
  family: a game-asset concept on a plain backdrop), beating material and contextual words, and family
  nouns that come later; in a concept/design/asset prompt it beats every family noun. Surfaces (tiling,
  or a surface word) never draw an object: "sword texture" is worked steel.
- Every image reports the words it used and those it ignored (`report`); stop-words and numbers are
  neither.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from dataclasses import dataclass, field

MOTIFS = ("fractal", "flow", "waves", "landscape", "geometric", "city", "nebula", "material", "object")

# Objects: noun -> kind of the `object` family ("weapon": the seed picks among the weapons). An object
# noun draws the item itself (a game-asset concept on a plain backdrop) unless the request is a surface
# (tiling, or a surface word: "sword texture" stays worked steel) or a family noun comes first ("steel
# fractal", "nebula with a sword"); in a concept/design/asset prompt (`CONCEPT_WORDS`) the object wins.
OBJECTS = ("sword", "dagger", "axe", "hammer", "spear", "shield", "staff")
OBJECT_WORDS: dict[str, str] = {
    "sword": "sword", "longsword": "sword", "broadsword": "sword", "greatsword": "sword", "blade": "sword",
    "sabre": "sword", "saber": "sword", "scimitar": "sword", "katana": "sword", "rapier": "sword", "kilic": "sword",
    "dagger": "dagger", "knife": "dagger", "knives": "dagger", "dirk": "dagger", "stiletto": "dagger",
    "bicak": "dagger",
    "axe": "axe", "battleaxe": "axe", "battle axe": "axe", "war axe": "axe", "hatchet": "axe", "tomahawk": "axe",
    "halberd": "axe", "balta": "axe",
    "hammer": "hammer", "warhammer": "hammer", "war hammer": "hammer", "mace": "hammer", "maul": "hammer",
    "cekic": "hammer",
    "spear": "spear", "lance": "spear", "javelin": "spear", "polearm": "spear", "mizrak": "spear",
    "shield": "shield", "buckler": "shield", "kalkan": "shield",
    "staff": "staff", "staves": "staff", "wand": "staff", "scepter": "staff", "sceptre": "staff", "asa": "staff",
    "weapon": "weapon", "arsenal": "weapon", "silah": "weapon",
}
# Words of a concept/design/asset request: there an object noun beats every family noun.
CONCEPT_WORDS = frozenset({"concept", "design", "designs", "asset", "assets", "prop", "props", "item", "items",
                           "icon", "icons", "sprite", "sprites", "loot", "inventory", "equipment", "gear"})

# family -> (strong words, weak words)
MOTIF_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "fractal": (("fractal", "mandelbrot", "julia", "burning ship", "burningship", "fractals", "mandelbrot set",
                 "julia set", "self similar", "recursive", "recursion"),
                ("infinite", "infinity", "zoom", "chaos")),
    "flow": (("flow", "flowing", "flowfield", "flow field", "wind", "windy", "stream", "silk", "silky", "current",
              "ruzgar", "breeze", "streamlines", "swirl", "swirling", "turbulence", "turbulent", "brushstroke",
              "strokes", "threads", "hair", "smoke"),
             ("lines", "brush", "motion", "wisps", "ribbons", "fluid")),
    "waves": (("wave", "wavy", "ripple", "rippling", "interference", "moire", "cymatics", "chladni", "resonance",
               "vibration", "oscillation", "sine", "sinusoidal", "rings"),
              ("water", "pond", "liquid", "sound", "frequency", "dalga")),
    "landscape": (("landscape", "mountain", "mountains", "mountainous", "hill", "ridge", "valley", "peak",
                   "terrain", "vista", "scenery", "dune", "alps", "manzara", "dag"),
                  ("horizon", "nature", "wilderness", "outdoor", "sunrise", "dawn")),
    "geometric": (("geometric", "geometry", "truchet", "hexagon", "hexagonal", "hex", "mandala", "kaleidoscope",
                   "kaleidoscopic", "tessellation", "mosaic", "lattice", "ornament", "ornamental", "islamic",
                   "arabesque", "symmetry", "symmetric", "isometric", "weave", "celtic", "labyrinth", "maze"),
                  ("pattern", "texture", "tile", "tiles", "tiling", "tileable", "seamless", "grid", "shapes",
                   "desen", "doku")),
    "city": (("city", "cityscape", "skyline", "urban", "metropolis", "downtown", "skyscraper", "building",
              "buildings", "town", "sehir", "megacity"),
             ("cyberpunk", "street", "blade runner", "futuristic", "dystopian", "tokyo")),
    # surfaces of a material (the kind comes from a material word, else the seed)
    "material": ((), ("material", "surface")),
    "nebula": (("nebula", "nebulae", "galaxy", "galactic", "cosmic", "cosmos", "space", "universe", "interstellar",
                "starfield", "celestial", "astral", "supernova", "milky way", "uzay"),
               ("star", "stars", "starry", "astronomy", "aurora", "dust")),
}

# Sub-kinds a word asks for inside a family (motif modules read `Parsed.kinds`).
KIND_WORDS: dict[str, str] = {
    "mandelbrot": "mandelbrot", "mandelbrot set": "mandelbrot", "julia": "julia", "julia set": "julia",
    "burning ship": "ship", "burningship": "ship",
    "truchet": "truchet", "hex": "hex", "hexagon": "hex", "hexagonal": "hex", "mandala": "mandala",
    "kaleidoscope": "mandala", "kaleidoscopic": "mandala", "islamic": "hex", "weave": "truchet",
    "maze": "truchet", "labyrinth": "truchet", "celtic": "truchet",
    "moire": "moire", "chladni": "chladni", "cymatics": "chladni", "ripple": "ripples", "rippling": "ripples",
    "pond": "ripples", "interference": "ripples",
    "silk": "silk", "silky": "silk", "smoke": "silk", "hair": "silk", "threads": "silk",
    "brushstroke": "ink", "strokes": "ink", "brush": "ink", "ink": "ink",
    "wind": "wind", "windy": "wind", "breeze": "wind", "ruzgar": "wind", "stream": "stream", "current": "stream",
    "swirl": "swirl", "swirling": "swirl", "turbulence": "swirl", "turbulent": "swirl",
    "galaxy": "galaxy", "galactic": "galaxy", "milky way": "galaxy",
    "street": "street", "streets": "street", "wet": "street", "reflection": "street", "reflections": "street",
    "sign": "signs", "signs": "signs", "neon lights": "signs",
    "night": "night", "midnight": "night", "moon": "night", "moonlight": "night", "moonlit": "night",
    "sun": "sun", "sunny": "sun", "lake": "lake", "reflection lake": "lake", "forest": "trees", "trees": "trees",
    "pine": "trees", "pines": "trees", "desert": "dunes", "dune": "dunes", "dunes": "dunes",
}

PALETTE_WORDS: dict[str, str] = {
    "warm": "warm", "warmer": "warm", "hot": "warm", "orange": "warm", "sicak": "warm",
    "cool": "cool", "cooler": "cool", "cold": "cool", "blue": "cool", "soguk": "cool",
    "neon": "neon", "fluorescent": "neon", "electric": "neon", "magenta": "neon",
    "neon noir": "neon noir", "cyber noir": "neon noir", "neon lights": "neon",
    "noir": "noir", "gothic": "noir",
    "pastel": "pastel", "pastels": "pastel", "soft colors": "pastel", "candy": "pastel",
    "monochrome": "monochrome", "monochromatic": "monochrome", "grayscale": "monochrome",
    "greyscale": "monochrome", "black and white": "monochrome", "bw": "monochrome", "gray": "monochrome",
    "earthy": "earthy", "earth tones": "earthy", "earthen": "earthy", "terracotta": "earthy", "rustic": "earthy",
    "sepia": "earthy", "brown": "earthy",
    "sunset": "sunset", "dusk": "sunset", "sundown": "sunset", "twilight": "sunset",
    "ocean": "ocean", "sea": "ocean", "marine": "ocean", "aqua": "ocean", "teal": "ocean", "turquoise": "ocean",
    "underwater": "ocean", "deniz": "ocean",
    "forest": "forest", "jungle": "forest", "green": "forest", "emerald": "forest", "woodland": "forest",
    "fire": "fire", "fiery": "fire", "flame": "fire", "flames": "fire", "lava": "fire", "inferno": "fire",
    "ember": "fire", "embers": "fire", "magma": "fire", "volcanic": "fire", "red": "fire", "ates": "fire",
    "ice": "ice", "icy": "ice", "frozen": "ice", "frost": "ice", "winter": "ice", "arctic": "ice",
    "glacier": "ice", "glacial": "ice",
    "gold": "gold", "golden": "gold", "gilded": "gold", "amber": "gold", "yellow": "gold",
    "vaporwave": "vaporwave", "synthwave": "vaporwave", "retrowave": "vaporwave", "outrun": "vaporwave",
    "autumn": "autumn", "autumnal": "autumn", "fall colors": "autumn", "harvest": "autumn",
    "purple": "purple", "violet": "purple", "amethyst": "purple", "lavender": "purple", "ultraviolet": "purple",
    "mor": "purple",
}

EFFECT_WORDS: dict[str, str] = {
    "rain": "rain", "rainy": "rain", "raining": "rain", "rainfall": "rain", "drizzle": "rain", "storm": "rain",
    "yagmur": "rain",
    "snow": "snow", "snowy": "snow", "snowing": "snow", "snowfall": "snow", "blizzard": "snow", "kar": "snow",
    "fog": "fog", "foggy": "fog", "mist": "fog", "misty": "fog", "haze": "fog", "hazy": "fog", "sis": "fog",
    "atmospheric": "fog", "volumetric": "fog",
    "glow": "glow", "glowing": "glow", "bloom": "glow", "luminous": "glow", "radiant": "glow",
    "neon lights": "glow",
    "vignette": "vignette", "cinematic": "vignette",
    "grain": "grain", "grainy": "grain", "film": "grain", "analog": "grain", "noise": "grain",
    "film grain": "grain", "vintage": "grain",
    "soft": "soft", "dreamy": "soft", "ethereal": "soft", "blurry": "soft", "blur": "soft", "gentle": "soft",
    "pixel": "pixel", "pixel art": "pixel", "pixelated": "pixel", "8 bit": "pixel", "16 bit": "pixel",
    "retro game": "pixel",
}

# Modifiers: word -> (axis, value)
MODIFIER_WORDS: dict[str, tuple[str, float]] = {
    "minimal": ("detail", -1), "minimalist": ("detail", -1), "minimalistic": ("detail", -1),
    "simple": ("detail", -1), "clean": ("detail", -1), "sparse": ("detail", -1), "calm": ("detail", -1),
    "simpler": ("detail", -1), "less detail": ("detail", -1),
    "intricate": ("detail", 1), "detailed": ("detail", 1), "highly detailed": ("detail", 1),
    "complex": ("detail", 1), "ornate": ("detail", 1), "elaborate": ("detail", 1), "more detail": ("detail", 1),
    "more detailed": ("detail", 1), "high detail": ("detail", 1), "busy": ("detail", 1), "dense": ("detail", 1),
    "dark": ("light", -1), "darker": ("light", -1), "moody": ("light", -1), "night": ("light", -1),
    "shadows": ("light", -1), "deep shadows": ("light", -1), "midnight": ("light", -1), "dim": ("light", -1),
    "bright": ("light", 1), "brighter": ("light", 1), "sunny": ("light", 1), "cheerful": ("light", 1),
    "daylight": ("light", 1), "day": ("light", 1), "vivid": ("light", 0.5),
    "vibrant": ("saturation", 1), "saturated": ("saturation", 1), "colorful": ("saturation", 1),
    "colourful": ("saturation", 1),
    "muted": ("saturation", -1), "desaturated": ("saturation", -1), "faded": ("saturation", -1),
    "washed out": ("saturation", -1),
    "negative space": ("detail", -1),
}

# Materials: word -> material. Weapons and armour are metal ("sword texture", "medieval weapons").
MATERIAL_WORDS: dict[str, str] = {
    "metal": "metal", "metallic": "metal", "steel": "metal", "iron": "metal", "silver": "metal",
    "chrome": "metal", "bronze": "metal", "copper": "metal", "titanium": "metal", "brushed metal": "metal",
    "forged": "metal", "damascus": "metal", "rust": "metal", "rusty": "metal", "sword": "metal",
    "blade": "metal", "dagger": "metal", "knife": "metal", "axe": "metal", "spear": "metal", "mace": "metal",
    "weapon": "metal", "armor": "metal", "armour": "metal", "helmet": "metal", "chainmail": "metal",
    "wood": "wood", "wooden": "wood", "wood grain": "wood", "oak": "wood", "timber": "wood", "plank": "wood",
    "walnut": "wood", "mahogany": "wood", "bark": "wood", "driftwood": "wood", "bamboo": "wood",
    "stone": "stone", "rock": "stone", "rocky": "stone", "granite": "stone", "marble": "stone",
    "cobblestone": "stone", "brick": "stone", "concrete": "stone", "slate": "stone", "pebble": "stone",
    "gravel": "stone", "sandstone": "stone", "masonry": "stone", "tas": "stone",
    "leather": "leather", "leathery": "leather", "suede": "leather", "hide": "leather", "rawhide": "leather",
    "deri": "leather",
    # ("canvas" is not here: the oil-painting style says "canvas texture" of any subject)
    "cloth": "cloth", "fabric": "cloth", "linen": "cloth", "wool": "cloth", "woolen": "cloth", "woollen": "cloth",
    "textile": "cloth", "cotton": "cloth", "denim": "cloth", "burlap": "cloth", "hessian": "cloth",
    "tweed": "cloth", "woven": "cloth", "kumas": "cloth",
}

# Words that ask for a surface rather than a picture: with a material word they pick the `material`
# family even when the request does not tile ("oak wood texture", "seamless granite").
SURFACE_WORDS = frozenset({"texture", "material", "surface", "seamless", "tileable", "tiling", "tile",
                           "tiles", "wood grain", "brushed metal"})

# What a material becomes: its palette, and for pictures (not surfaces) the closest family and its
# sub-kinds; surfaces are always the `material` family, in the kind named like the material.
MATERIALS: dict[str, dict] = {
    "metal": {"palette": "steel", "motif": "flow", "kinds": ["silk", "wind"]},  # steel pictures: fine strokes
    "wood": {"palette": "wood", "motif": "flow", "kinds": ["wind"]},  # long parallel strokes
    "stone": {"palette": "stone", "motif": "landscape", "kinds": []},  # rock faces
    "leather": {"palette": "leather", "motif": "material", "kinds": ["leather"]},
    "cloth": {"palette": "cloth", "motif": "material", "kinds": ["cloth"]},
}

# Neither used nor ignored: function words, and numbers (variation labels such as "warm fractal 07").
STOP_WORDS = frozenset(
    ["a", "an", "the", "of", "and", "or", "for", "with", "in", "on", "to", "at", "by", "from", "into", "over",
     "under", "some", "very", "its", "it", "this", "that", "is", "are", "be", "as", "like", "my", "your", "our",
     "their", "his", "her"]
)

# Words that turn the next effect/modifier word off ("no rain", "without fog", "remove grain").
NEGATORS = frozenset({"no", "without", "remove", "less", "minus", "sans", "not"})

_TURKISH = str.maketrans({"ı": "i", "İ": "i", "ş": "s", "ğ": "g", "ç": "c", "ö": "o", "ü": "u"})


def tokenize(text: str) -> list[str]:
    """Lower-case words with accents folded ('Rüzgâr' -> 'ruzgar'); digits kept as words."""
    text = (text or "").translate(_TURKISH).lower()
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.replace("&", " and ").replace("b and w", "black and white")
    return re.findall(r"[a-z0-9]+", text)


def _all_keys() -> set[str]:
    keys: set[str] = set(PALETTE_WORDS) | set(EFFECT_WORDS) | set(MODIFIER_WORDS) | set(KIND_WORDS)
    keys |= set(MATERIAL_WORDS) | set(OBJECT_WORDS)
    for strong, weak in MOTIF_WORDS.values():
        keys |= set(strong) | set(weak)
    return keys


_KEYS = _all_keys()
_MAX_PHRASE = max(len(k.split()) for k in _KEYS)


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def phrases(words: list[str]) -> list[tuple[int, int, str]]:
    """Vocabulary keys in `words` as (position, length, key): greedy longest match, left to right, so
    "neon noir" is one palette (not "neon" then "noir") and "negative space" is not "space"."""
    found = []
    i = 0
    while i < len(words):
        for n in range(min(_MAX_PHRASE, len(words) - i), 0, -1):
            chunk = words[i:i + n]
            key = next((c for c in (" ".join(chunk), " ".join(chunk[:-1] + [_singular(chunk[-1])])) if c in _KEYS),
                       None)
            if key is not None:
                found.append((i, n, key))
                i += n
                break
        else:
            i += 1
    return found


@dataclass
class Parsed:
    """What a prompt asks for. `None` means "not named": the seed decides."""

    motif: str | None = None
    palette: str | None = None
    kinds: list[str] = field(default_factory=list)  # sub-kind hints, prompt order
    effects: dict[str, float] = field(default_factory=dict)  # effect -> +1 on / -1 explicitly off
    detail: float = 0.0  # -1 minimal .. +1 intricate (summed, clipped)
    light: float = 0.0  # -1 dark .. +1 bright
    saturation: float = 0.0
    excluded_motifs: set[str] = field(default_factory=set)
    excluded_palettes: set[str] = field(default_factory=set)
    excluded_effects: set[str] = field(default_factory=set)
    excluded_kinds: set[str] = field(default_factory=set)
    words: list[str] = field(default_factory=list)
    material: str | None = None  # first material word (see MATERIALS)
    motif_source: str = "seed"  # what chose the motif: "prompt" (a family word), "material" or "seed"
    motif_contextual: bool = False  # chosen by a contextual word only ("stars", "night"), not a family noun
    surface: bool = False  # a surface word ("texture", "seamless", "wood grain"): materials draw as surfaces
    # An object noun chose the `object` family: what the words chose without it (motif, motif_source,
    # motif_contextual), for tiling requests, which never draw an object.
    without_object: tuple[str | None, str, bool] | None = None


def _motif_of(key: str) -> tuple[str, int] | None:
    """(family, tier) a key names: tier 0 a family noun, 1 a material's closest family, 2 a contextual word."""
    for motif, (strong, weak) in MOTIF_WORDS.items():
        if key in strong:
            return motif, 0
        if key in weak:
            return motif, 2
    if key in MATERIAL_WORDS:
        return MATERIALS[MATERIAL_WORDS[key]]["motif"], 1
    return None


def _material_palette(key: str) -> str | None:
    return MATERIALS[MATERIAL_WORDS[key]]["palette"] if key in MATERIAL_WORDS else None


def parse(prompt: str, negative: str = "") -> Parsed:
    words = tokenize(prompt)
    result = Parsed(words=words)
    neg = phrases(tokenize(negative))
    for _, _, key in neg:
        hit = _motif_of(key)
        if hit and hit[1] != 1:  # a negative "metal" rules out the steel palette, not flow fields
            result.excluded_motifs.add(hit[0])
        if key in PALETTE_WORDS or key in MATERIAL_WORDS:
            result.excluded_palettes.add(PALETTE_WORDS.get(key) or str(_material_palette(key)))
        if key in EFFECT_WORDS:
            result.excluded_effects.add(EFFECT_WORDS[key])
        if key in KIND_WORDS:
            result.excluded_kinds.add(KIND_WORDS[key])
        if key in OBJECT_WORDS:  # a negative "weapon" rules out objects, a negative "shield" that object
            if OBJECT_WORDS[key] == "weapon":
                result.excluded_motifs.add("object")
            result.excluded_kinds.add(OBJECT_WORDS[key])
    # "neon" excluded also rules out "neon noir"; "noir" alone does not (it is a different look).
    if "neon" in result.excluded_palettes:
        result.excluded_palettes.add("neon noir")

    for _, _, key in neg:
        # "ornate" in a negative prompt pushes detail down, "daylight" pushes towards dark, etc.
        if key in MODIFIER_WORDS:
            axis, value = MODIFIER_WORDS[key]
            setattr(result, axis, float(max(-1.0, min(1.0, getattr(result, axis) - 0.5 * value))))

    motif_best: tuple[int, int] | None = None  # (tier, position)
    named_object: tuple[int, str] | None = None  # (position, kind) of the first object noun
    for pos, _length, key in phrases(words):
        negated = pos > 0 and words[pos - 1] in NEGATORS
        if (key in OBJECT_WORDS and not negated and named_object is None
                and OBJECT_WORDS[key] not in result.excluded_kinds):
            named_object = (pos, OBJECT_WORDS[key])
        hit = _motif_of(key)
        if (hit and hit[0] not in result.excluded_motifs and not negated
                and (motif_best is None or (hit[1], pos) < motif_best)):
            motif_best, result.motif = (hit[1], pos), hit[0]
            result.motif_source = "material" if hit[1] == 1 else "prompt"
            result.motif_contextual = hit[1] == 2
        if key in MATERIAL_WORDS and not negated and result.material is None:
            result.material = MATERIAL_WORDS[key]
        if key in SURFACE_WORDS and not negated:
            result.surface = True
        palette = PALETTE_WORDS.get(key) or _material_palette(key)
        if palette and not negated and result.palette is None and palette not in result.excluded_palettes:
            result.palette = palette  # phrases come in prompt order: first one wins
        if key in KIND_WORDS and not negated:
            kind = KIND_WORDS[key]
            if kind not in result.excluded_kinds and kind not in result.kinds:
                result.kinds.append(kind)
        if key in EFFECT_WORDS:
            effect = EFFECT_WORDS[key]
            if negated:
                result.effects[effect] = -1.0
            elif effect not in result.excluded_effects and result.effects.get(effect, 0) >= 0:
                result.effects[effect] = 1.0
        if key in MODIFIER_WORDS:
            axis, value = MODIFIER_WORDS[key]
            value = -value if negated else value
            setattr(result, axis, float(max(-1.0, min(1.0, getattr(result, axis) + value))))
    for effect in result.excluded_effects:
        result.effects[effect] = -1.0
    if result.material and result.motif_source == "material":
        # the material's look within its family ("silk" strokes read as brushed metal)
        result.kinds += [k for k in MATERIALS[result.material]["kinds"] if k not in result.kinds]
    if named_object is not None and "object" not in result.excluded_motifs and not result.surface:
        concept = any(w in CONCEPT_WORDS for w in words)
        family_first = motif_best is not None and motif_best[0] == 0 and motif_best[1] < named_object[0]
        if concept or not family_first:
            result.without_object = (result.motif, result.motif_source, result.motif_contextual)
            result.motif, result.motif_source, result.motif_contextual = "object", "prompt", False
            result.kinds.insert(0, named_object[1])
    return result


def report(prompt: str) -> tuple[list[str], list[str]]:
    """(words used, words ignored) of a prompt, each in prompt order without repeats.

    Used: the vocabulary phrases found ("burning ship", "highly detailed", "swords"), as written.
    Ignored: every other word, except stop-words, negators and numbers, which are neither.
    """
    words = tokenize(prompt)
    used: list[str] = []
    covered: set[int] = set()
    for pos, length, _key in phrases(words):
        used.append(" ".join(words[pos:pos + length]))
        covered.update(range(pos, pos + length))
    if any(w in OBJECT_WORDS for w in words):
        # An object is drawn as a concept-sheet item (a clean silhouette on a neutral backdrop): the
        # words asking for that presentation are honoured, not ignored.
        for i, w in enumerate(words):
            if i not in covered and (w in CONCEPT_WORDS or w in PRESENTATION_WORDS):
                used.append(w)
                covered.add(i)
    ignored = [w for i, w in enumerate(words)
               if i not in covered and w not in STOP_WORDS and w not in NEGATORS and not w.isdigit()]
    return list(dict.fromkeys(used)), list(dict.fromkeys(ignored))


#: How an object concept is presented (see `report`): what the `object` motif draws anyway.
PRESENTATION_WORDS = frozenset({"concept", "art", "game", "silhouette", "clean", "neutral", "background",
                                "backdrop", "studio", "sheet", "isolated", "centered", "centred"})


def vocabulary() -> dict[str, list[str]]:
    """What the procedural renderer understands, by category (for a "words it knows" warning).

    motifs: the families; motif_words: the words that name one; kinds: sub-kinds ("julia",
    "truchet"...); palettes: palette names (material palettes included); palette_words; materials
    and material_words; objects (kinds of the `object` family) and object_words; effects and effect_words; modifiers (detail, light, saturation words).
    """
    from echo_pipeline.render.backends.procedural.palettes import PALETTES

    motif_words = sorted({w for strong, weak in MOTIF_WORDS.values() for w in (*strong, *weak)})
    return {
        "motifs": list(MOTIFS),
        "motif_words": motif_words,
        "kinds": sorted(set(KIND_WORDS.values())),
        "palettes": sorted(PALETTES),
        "palette_words": sorted(PALETTE_WORDS),
        "materials": sorted(MATERIALS),
        "objects": list(OBJECTS),
        "object_words": sorted(OBJECT_WORDS),
        "material_words": sorted(MATERIAL_WORDS),
        "effects": sorted(set(EFFECT_WORDS.values())),
        "effect_words": sorted(EFFECT_WORDS),
        "modifiers": sorted(MODIFIER_WORDS),
    }


def vocabulary_free_hash(prompt: str) -> int:
    """Stable hash (crc32) of the prompt words that are NOT vocabulary.

    Mixed into the seed so "warm fractal 01" and "warm fractal 02" differ even with one seed, while
    "warm fractal 01" and "cool fractal 01" keep the same composition and only change colour.
    """
    words = tokenize(prompt)
    vocab_positions: set[int] = set()
    for pos, length, _ in phrases(words):
        vocab_positions.update(range(pos, pos + length))
    rest = " ".join(w for i, w in enumerate(words) if i not in vocab_positions)
    return zlib.crc32(rest.encode("utf-8"))


def stable_key(*parts: str) -> int:
    """crc32 of text parts: a process-independent integer for seeding (never Python's salted hash())."""
    return zlib.crc32("\x1f".join(parts).encode("utf-8"))
