"""Objects: game-asset concepts of weapons and gear (sword, dagger, axe, hammer, spear, shield, staff).

One item per image, the way a concept sheet shows it: at a pose, size and place of the seed's framing
point (tilted up to 70 degrees, spanning 56-84 % of the frame, never touching its edge; spread evenly
over a project's seeds so no two concepts are near-duplicates), on a plain light-grey studio backdrop (so a mesh maker can cut the silhouette out
by its colour distance from the border, see `media/mesh.py`). Each kind is a parametric design drawn
from the seed: blade length, width, taper and belly, fuller, crossguard shape, grip wraps, pommel; axe
head reach, beard and flare, double bit or back spike; hammer head and flanges; spear-head leaf; round
or heater shield with rim, boss, rivets and a painted field; a gnarled staff holding a crystal.

Drawing: every part is a polygon (or circle) in object units; its signed distance in pixels gives
analytic anti-aliased coverage, a bevelled height (`bevel * (1 - exp(-depth / bevel))`: a ridge down
thin parts such as blades, a flat face with rounded edges on wide ones), an ink outline near the edge
and normals for shading. Parts are lit by a fixed soft key light from the upper left and shaded by
their material: metal (the image palette: steel unless the words ask for another) reflects a studio
softbox (one bevel side bright, the other dark, crisp speculars), trim is the palette's metal or brass,
hafts are wood with grain along the part, grips leather wraps, gems the palette's accent with an inner
glow. A part casts a soft contact shadow on the parts already drawn below it, never on the backdrop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from echo_pipeline.render.backends.procedural.finish import blur
from echo_pipeline.render.backends.procedural.motifs import Canvas, blend
from echo_pipeline.render.backends.procedural.palettes import Palette, palette_spec, srgb_to_linear

KINDS = ("sword", "dagger", "axe", "hammer", "spear", "shield", "staff")
WEAPONS = ("sword", "dagger", "axe", "hammer", "spear")  # what "weapon" alone may become
ELONGATED = frozenset({"sword", "dagger", "axe", "hammer", "spear", "staff"})
# Palettes that are already a material: gems get a jewel colour instead of the palette's accents.
MATERIAL_PALETTES = frozenset({"steel", "wood", "stone", "leather", "cloth", "gold", "monochrome", "noir"})
GEMS = ("#d6283a", "#2a64d6", "#1fa36a", "#8f3ad6", "#e0a21c")  # ruby, sapphire, emerald, amethyst, topaz

# Key light (x right, y down, z towards the viewer) from the upper left, and its half vector.
_LIGHT = np.array([-0.5, -0.62, 0.6], np.float32) / np.float32(np.linalg.norm([-0.5, -0.62, 0.6]))
_HALF = (_LIGHT + np.array([0, 0, 1], np.float32)) / np.float32(np.linalg.norm(_LIGHT + np.array([0, 0, 1])))
_BACKDROP_TOP, _BACKDROP_BOTTOM = 0.9, 0.82  # sRGB grey of the studio backdrop (soft vertical gradient)


def make(rng: np.random.Generator, canvas: Canvas, kinds: list[str]) -> dict:
    kind = next((k for k in kinds if k in KINDS), None)
    if kind is None:
        kind = str(rng.choice(WEAPONS if "weapon" in kinds or not kinds else KINDS))
    # Pose and backdrop from the seed's framing point (low-discrepancy over a project's seeds): items
    # of one kind on a plain backdrop look alike to a perceptual hash unless their poses, light and
    # placement spread evenly, and the project's uniqueness check blocks near-duplicates.
    f = canvas.framing or tuple(float(v) for v in rng.random(5))
    tilt = (2 * f[0] - 1) * (12 if kind == "shield" else 70)
    fill = 0.56 + 0.28 * float(f[1])
    room = max(0.0, (0.9 - fill) / 2)  # the item stays inside the frame, whatever its offset
    params: dict = {
        "kind": kind,
        "angle": round(float(tilt), 3),  # degrees, clockwise from upright
        "fill": round(fill, 4),  # share of the frame's limiting side the item spans
        "backdrop_angle": round(360.0 * float(f[2]), 3),  # direction the backdrop darkens towards
        "backdrop_tone": round(float(rng.random()), 4),  # 0 darker .. 1 lighter studio grey
        "shift": round(room * (2 * float(f[3]) - 1), 4),  # horizontal offset, share of the width
        "shift_y": round(room * (2 * float(f[4]) - 1), 4),  # vertical offset, share of the height
        "gilded": bool(rng.random() < 0.35),  # brass trim instead of the palette's metal
        "grip": str(rng.choice(["leather", "leather", "wood"])),
        "gem": int(rng.integers(len(GEMS))),
        "salt": int(rng.integers(0, 2**31 - 1)),
    }
    params["shape"] = _SHAPES[kind](rng)
    return params


def vary(params: dict, rng: np.random.Generator, amount: float, canvas: Canvas, kinds: list[str]) -> dict:
    if amount <= 0:
        return dict(params)
    kind = next((k for k in kinds if k in KINDS), params["kind"])
    fresh = make(rng, canvas, [kind])
    if kind != params["kind"]:
        return fresh  # another object: nothing of the old design carries over
    out = blend(params, fresh, amount, rng)
    out["kind"] = kind
    return out


def periodic(params: dict, canvas: Canvas) -> tuple[bool, bool]:
    return False, False  # an object on a backdrop never tiles (tiling requests never pick this family)


# ------------------------------------------------------------------------------------------- shapes
def _bladed_shape(rng: np.random.Generator, dagger: bool) -> dict:
    u = rng.uniform
    return {
        "blade_len": float(u(0.4, 0.5) if dagger else u(0.64, 0.74)),
        "blade_w": float(u(0.05, 0.07) if dagger else u(0.032, 0.046)),
        "taper": float(u(0.45, 0.85)),  # width near the tip relative to the base
        "belly": float(u(0.0, 0.35) if dagger else u(0.0, 0.22)),  # leaf-shaped widening mid-blade
        "tip": float(u(0.08, 0.2) if dagger else u(0.06, 0.14)),  # point length, share of the blade
        "curve": float(u(-0.05, 0.05) if dagger and rng.random() < 0.4 else 0.0),  # a curved knife edge
        "fuller": float(u(0.0, 0.75) if rng.random() < 0.7 else 0.0),  # fuller length, share of the blade
        "fuller_w": float(u(0.14, 0.22) if dagger else u(0.22, 0.34)),
        "guard": str(rng.choice(["bar", "up", "down", "flared", "disc"])),
        "guard_w": float(u(0.09, 0.14) if dagger else u(0.12, 0.2)),
        "guard_t": float(u(0.016, 0.026)),
        "grip_len": float(u(0.2, 0.26) if dagger else u(0.14, 0.19)),
        "grip_w": float(u(0.02, 0.026)),
        "wraps": int(rng.integers(5, 10)),
        "pommel": str(rng.choice(["disc", "diamond", "ball", "wheel"])),
        "pommel_r": float(u(0.028, 0.042)),
        "guard_gem": bool(rng.random() < 0.45),
    }


def _hafted_shape(rng: np.random.Generator) -> dict:
    u = rng.uniform
    return {
        "haft_w": float(u(0.024, 0.03)),  # chunky, game-asset proportions: the silhouette survives small sizes
        "haft_bend": float(u(-0.015, 0.015)),
        "wrap_len": float(u(0.12, 0.22)),
        "wraps": int(rng.integers(6, 11)),
        "bands": int(rng.integers(1, 3)),
    }


def _sword(rng):
    return _bladed_shape(rng, False)


def _dagger(rng):
    return _bladed_shape(rng, True)


def _axe(rng):
    u = rng.uniform
    return _hafted_shape(rng) | {
        "reach": float(u(0.2, 0.3)),  # how far the bit reaches from the haft
        "edge": float(u(0.16, 0.26)),  # length of the cutting edge
        "beard": float(u(0.0, 0.08)),  # how far the edge drops below the socket
        "flare": float(u(0.0, 0.05)),
        "double": bool(rng.random() < 0.4),
        "back": str(rng.choice(["poll", "spike", "none"])),
    }


def _hammer(rng):
    u = rng.uniform
    return _hafted_shape(rng) | {
        "head_w": float(u(0.13, 0.2)),  # half length of the head across the haft
        "head_h": float(u(0.08, 0.12)),
        "flange": float(u(0.006, 0.016)),
        "spike": bool(rng.random() < 0.45),  # a war hammer's back spike instead of a second face
        "top_spike": bool(rng.random() < 0.4),
    }


def _spear(rng):
    u = rng.uniform
    return _hafted_shape(rng) | {
        "head_len": float(u(0.2, 0.3)),
        "head_w": float(u(0.055, 0.08)),
        "leaf": float(u(0.35, 0.65)),  # where the head is widest, share of its length
        "socket_len": float(u(0.06, 0.1)),
        "wings": bool(rng.random() < 0.35),  # lugs below the head (a winged spear)
    }


def _shield(rng):
    u = rng.uniform
    return {
        "outline": str(rng.choice(["round", "heater", "heater"])),
        "rim": float(u(0.03, 0.05)),
        "boss": float(u(0.08, 0.12)),
        "rivets": int(rng.integers(8, 15)),
        "planks": int(rng.integers(4, 8)),
        "field": str(rng.choice(["plain", "pale", "bend", "chevron", "cross"])),
        "width": float(u(0.72, 0.86)),  # heater: width relative to height
        "shoulder": float(u(0.3, 0.5)),  # heater: where the sides start curving in
    }


def _staff(rng):
    u = rng.uniform
    return {
        "haft_w": float(u(0.024, 0.03)),
        "gnarl": float(u(0.002, 0.005)),
        "bend": float(u(-0.02, 0.02)),
        "wrap_len": float(u(0.1, 0.16)),
        "wraps": int(rng.integers(5, 9)),
        "crystal_len": float(u(0.12, 0.18)),
        "crystal_w": float(u(0.035, 0.055)),
        "claws": int(rng.integers(2, 4)),
        "orb": bool(rng.random() < 0.35),
    }


_SHAPES = {"sword": _sword, "dagger": _dagger, "axe": _axe, "hammer": _hammer, "spear": _spear, "shield": _shield,
           "staff": _staff}


# ------------------------------------------------------------------------------------------- geometry
@dataclass
class Part:
    """One piece of the item in object units (u right, v up; the item about 1 long)."""

    role: str  # metal, trim, wood, leather, gem, paint (`_shade` says how each looks)
    poly: np.ndarray | None = None  # (n, 2) outline
    circle: tuple[float, float, float] | None = None  # (u, v, r) instead of a polygon
    bevel: float = 0.01  # height-profile width, object units
    axis: tuple[float, float] = (0.0, 1.0)  # the part's long direction (grain, wraps run along it)
    origin: tuple[float, float] = (0.0, 0.0)
    carves: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (outline, depth) grooves
    wraps: float = 0.0  # wraps per object unit along the axis (leather grips)
    rim: float = 0.0  # shields: a metal band this wide (object units) inside the outline
    field: str = ""  # shields: the painted division of the face
    rivets: int = 0
    planks: int = 6


def _ribbon(centre: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Outline of a band of half-width `half` along the polyline `centre` (n, 2)."""
    d = np.gradient(centre, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    left = centre + normal * half[:, None]
    right = centre - normal * half[:, None]
    return np.concatenate([left, right[::-1]])


def _line(v0: float, v1: float, n: int = 24, bend: float = 0.0, wobble: tuple = ()) -> np.ndarray:
    """A vertical centre line from v0 to v1, bowed by `bend` and wobbled by (amplitude, freq, phase)s."""
    v = np.linspace(v0, v1, n)
    s = (v - v0) / (v1 - v0)
    uu = bend * 4 * s * (1 - s)
    for amp, freq, phase in wobble:
        uu = uu + amp * np.sin(2 * np.pi * freq * s + phase)
    return np.stack([uu, v], axis=1)


def _rect(u0: float, v0: float, u1: float, v1: float, chamfer: float = 0.0) -> np.ndarray:
    c = min(chamfer, abs(u1 - u0) / 2.5, abs(v1 - v0) / 2.5)
    return np.array([[u0 + c, v0], [u1 - c, v0], [u1, v0 + c], [u1, v1 - c], [u1 - c, v1], [u0 + c, v1],
                     [u0, v1 - c], [u0, v0 + c]])


def _ellipse(cu: float, cv: float, ru: float, rv: float, n: int = 40, phase: float = 0.0) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False) + phase
    return np.stack([cu + ru * np.cos(a), cv + rv * np.sin(a)], axis=1)


def _bezier(p0, p1, p2, n: int = 16) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t * t * np.asarray(p2)


def _grip_parts(s: dict, v_top: float, v_bottom: float, width: float, material: str, wraps: int) -> list[Part]:
    centre = _line(v_bottom, v_top, 16)
    sl = (centre[:, 1] - v_bottom) / (v_top - v_bottom)
    half = width * (0.9 + 0.18 * np.sin(np.pi * sl))  # a little fuller in the hand
    per_unit = wraps / max(v_top - v_bottom, 1e-6) if material == "leather" else 0.0
    return [Part(material, _ribbon(centre, half), bevel=width * 0.9, origin=(0.0, v_bottom), wraps=per_unit)]


def _bladed(s: dict, p: dict) -> list[Part]:
    length, w0, tip = s["blade_len"], s["blade_w"], s["tip"]
    n = 48
    sl = np.linspace(0, 1, n)
    body = 1 - tip
    taper = np.where(sl < body, 1 + (s["taper"] - 1) * sl / body, s["taper"] * np.clip(1 - (sl - body) / tip, 0, 1) ** 0.85)
    belly = 1 + s["belly"] * np.sin(np.pi * np.clip(sl / body, 0, 1)) ** 1.5
    half = w0 * taper * belly
    half[-1] = 0.0
    centre = np.stack([s["curve"] * sl ** 2, sl * length], axis=1)
    blade = Part("metal", _ribbon(centre, half), bevel=w0 * 0.8)
    if s["fuller"] > 0.05:
        fl = np.linspace(0.03, s["fuller"] * body, 20)
        f_half = w0 * s["fuller_w"] * np.interp(fl, sl, taper * belly) * np.sqrt(np.clip((fl[-1] - fl) / 0.06, 0, 1))
        f_centre = np.stack([s["curve"] * fl ** 2, fl * length], axis=1)
        blade.carves.append((_ribbon(f_centre, np.maximum(f_half, 1e-4)), w0 * 0.5))
    gt, gw = s["guard_t"], s["guard_w"]
    grip_top, grip_bottom = -gt * 0.6, -gt * 0.6 - s["grip_len"]
    parts = [blade] + _grip_parts(s, grip_top, grip_bottom, s["grip_w"], p["grip"], s["wraps"])
    trim = "trim"
    gu = np.linspace(-gw, gw, 33)
    x = gu / gw
    style = s["guard"]
    if style == "disc":
        guard = Part(trim, _ellipse(0.0, -gt * 0.2, gw * 0.45, gt * 1.4), bevel=gt * 0.9)
    else:
        bow = {"bar": 0.0, "up": 1.0, "down": -1.0, "flared": 0.35}[style] * gw * 0.3
        thick = gt * (0.55 + (0.45 * np.abs(x) ** 3 if style == "flared" else 0.0)) * (1 - 0.25 * np.abs(x) ** 6)
        gcentre = np.stack([gu, -gt * 0.2 + bow * x ** 2], axis=1)
        guard = Part(trim, _ribbon(gcentre, thick), bevel=gt * 0.7, axis=(1.0, 0.0))
    parts.append(guard)
    parts.append(Part(trim, _rect(-w0 * 0.95, -gt * 0.5, w0 * 0.95, gt * 1.1, w0 * 0.3), bevel=gt * 0.6))  # ricasso block
    if s["guard_gem"]:
        parts.append(Part("gem", circle=(0.0, gt * 0.3, min(w0 * 0.55, gt * 0.75)), bevel=gt))
    r = s["pommel_r"]
    pv = grip_bottom - r * 0.8
    if s["pommel"] == "diamond":
        pommel = Part(trim, np.array([[0, pv + r * 1.2], [r * 1.05, pv], [0, pv - r * 1.2], [-r * 1.05, pv]]),
                      bevel=r * 0.8)
    elif s["pommel"] == "ball":
        pommel = Part(trim, circle=(0.0, pv, r * 0.9), bevel=r)
    elif s["pommel"] == "wheel":
        pommel = Part(trim, _ellipse(0.0, pv, r * 1.1, r * 0.75), bevel=r * 0.35)
    else:
        pommel = Part(trim, _ellipse(0.0, pv, r, r * 0.9, 8, np.pi / 8), bevel=r * 0.6)
    parts.append(Part(trim, _rect(-s["grip_w"] * 1.15, grip_bottom - r * 0.3, s["grip_w"] * 1.15, grip_bottom + 0.012,
                                  0.004), bevel=0.008))  # a collar between grip and pommel
    parts.append(pommel)
    return parts


def _haft(s: dict, v0: float, v1: float, wood: bool = True, wobble: tuple = ()) -> list[Part]:
    centre = _line(v0, v1, 32, s.get("haft_bend", s.get("bend", 0.0)), wobble)
    half = np.full(len(centre), s["haft_w"])
    if wobble:
        half = half * (1 + 0.12 * np.sin(np.linspace(0, 9.0, len(centre))))
    parts = [Part("wood" if wood else "metal", _ribbon(centre, half), bevel=s["haft_w"] * 0.9, origin=(0.0, v0))]
    wrap_len = s["wrap_len"]
    lo = v0 + 0.05
    wrap_centre = _line(lo, lo + wrap_len, 12)
    wrap_centre[:, 0] += np.interp(wrap_centre[:, 1], centre[:, 1], centre[:, 0])
    parts.append(Part("leather", _ribbon(wrap_centre, np.full(12, s["haft_w"] * 1.18)), bevel=s["haft_w"],
                      origin=(0.0, lo), wraps=s["wraps"] / wrap_len))
    # a metal butt cap at the bottom
    parts.append(Part("trim", _rect(-s["haft_w"] * 1.3, v0 - 0.012, s["haft_w"] * 1.3, v0 + 0.03, 0.008), bevel=0.01))
    return parts


def _band(v: float, half: float, height: float = 0.018) -> Part:
    return Part("trim", _rect(-half, v - height / 2, half, v + height / 2, height * 0.35), bevel=height * 0.45,
                axis=(1.0, 0.0))


def _axe_parts(s: dict, p: dict) -> list[Part]:
    hw = s["haft_w"]
    parts = _haft(s, -0.5, 0.44)
    top, bottom = 0.4, 0.27  # the socket around the haft
    reach, edge, beard, flare = s["reach"], s["edge"], s["beard"], s["flare"]

    def bit(sign: float) -> np.ndarray:
        mid = (top + bottom) / 2
        e_top, e_bot = mid + edge / 2 + flare, mid - edge / 2 - beard
        upper = _bezier((hw * 1.4, top - 0.01), (reach * 0.5, top - 0.005), (reach, e_top))
        a = np.linspace(0.5 * np.pi, -0.5 * np.pi, 20)  # the cutting edge bulges outwards
        arc = np.stack([reach + 0.035 * np.cos(a) - 0.035 * np.cos(a[0]), e_bot + (e_top - e_bot) * (np.sin(a) + 1) / 2],
                       axis=1)
        lower = _bezier((reach * 0.96, e_bot), (reach * 0.45, bottom + 0.03 + beard * 0.2), (hw * 1.4, bottom + 0.01))
        pts = np.concatenate([upper, arc[1:], lower[1:]])
        pts[:, 0] *= sign
        return pts

    parts.append(Part("metal", bit(1.0), bevel=0.02, axis=(1.0, 0.0)))
    if s["double"]:
        parts.append(Part("metal", bit(-1.0), bevel=0.02, axis=(1.0, 0.0)))
    elif s["back"] == "spike":
        parts.append(Part("metal", np.array([[-hw, top - 0.02], [-0.13, (top + bottom) / 2 - 0.01], [-hw, bottom + 0.02]]),
                          bevel=0.015))
    elif s["back"] == "poll":
        parts.append(Part("metal", _rect(-0.07, bottom + 0.025, -hw, top - 0.025, 0.01), bevel=0.012))
    parts.append(Part("trim", _rect(-hw * 1.9, bottom - 0.005, hw * 1.9, top + 0.005, 0.01), bevel=0.014))  # socket
    parts.append(Part("trim", _ellipse(0.0, top + 0.012, hw * 1.25, 0.018, 12), bevel=0.01))  # wedge cap
    for i in range(int(s["bands"])):
        parts.append(_band(bottom - 0.04 - 0.035 * i, hw * 1.35))
    return parts


def _hammer_parts(s: dict, p: dict) -> list[Part]:
    hw = s["haft_w"]
    parts = _haft(s, -0.5, 0.36)
    w, h = s["head_w"], s["head_h"]
    top = 0.44
    bottom = top - h
    front = w
    back = w * (0.85 if s["spike"] else 1.0)
    parts.append(Part("metal", _rect(-back * 0.8, bottom + 0.008, front * 0.8, top - 0.008, 0.012), bevel=0.02,
                      axis=(1.0, 0.0)))
    f = s["flange"]
    parts.append(Part("metal", _rect(front * 0.78, bottom - f, front, top + f, 0.01), bevel=0.016))  # striking face
    if s["spike"]:
        parts.append(Part("metal", np.array([[-back * 0.75, top - 0.01], [-back * 1.55, (top + bottom) / 2 - 0.01],
                                             [-back * 0.75, bottom + 0.01]]), bevel=0.018))
    else:
        parts.append(Part("metal", _rect(-back, bottom - f, -back * 0.78, top + f, 0.01), bevel=0.016))
    parts.append(Part("trim", _rect(-hw * 2.2, bottom - 0.012, hw * 2.2, top + 0.004, 0.008), bevel=0.012))  # collar
    if s["top_spike"]:
        parts.append(Part("metal", np.array([[-hw * 1.6, top], [0.0, top + 0.07], [hw * 1.6, top]]), bevel=0.012))
    for i in range(int(s["bands"])):
        parts.append(_band(bottom - 0.03 - 0.035 * i, hw * 1.35))
    return parts


def _spear_parts(s: dict, p: dict) -> list[Part]:
    hw = s["haft_w"]
    sock = s["socket_len"]
    head_len = s["head_len"]
    v_head = 0.5 - head_len
    parts = _haft(s, -0.5, v_head - sock * 0.5)
    sl = np.linspace(0, 1, 40)
    leaf = s["leaf"]
    prof = np.where(sl < leaf, np.sin(0.5 * np.pi * np.minimum(sl / leaf, 1)) ** 0.8, np.clip((1 - sl) / (1 - leaf), 0, 1) ** 1.1)
    half = s["head_w"] * prof
    half[0] = hw * 0.9
    half[-1] = 0.0
    centre = np.stack([np.zeros_like(sl), v_head + sl * head_len], axis=1)
    parts.append(Part("metal", _ribbon(centre, np.maximum(half, hw * 0.6 * (sl < 0.2))), bevel=s["head_w"] * 0.7))
    if s["wings"]:
        wv = v_head - sock * 0.45
        for sign in (1.0, -1.0):
            parts.append(Part("metal", np.array([[sign * hw, wv + 0.012], [sign * hw * 4.2, wv + 0.004],
                                                 [sign * hw, wv - 0.014]]), bevel=0.006))
    socket = np.array([[-hw * 1.05, v_head - sock], [hw * 1.05, v_head - sock], [hw * 0.75, v_head + 0.01],
                       [-hw * 0.75, v_head + 0.01]])
    parts.append(Part("trim", socket, bevel=hw * 0.9))
    for i in range(int(s["bands"])):
        parts.append(_band(v_head - sock - 0.015 - 0.03 * i, hw * 1.35, 0.014))
    return parts


def _shield_parts(s: dict, p: dict) -> list[Part]:
    rim = s["rim"]
    if s["outline"] == "round":
        face = "planks" if s["field"] in ("plain", "cross") else s["field"]  # round: planks or a painted field
        body = Part("wood", circle=(0.0, 0.0, 0.5), bevel=0.03, rim=rim, field=face, rivets=int(s["rivets"]),
                    planks=int(s["planks"]))
        return [body, Part("trim", circle=(0.0, 0.0, s["boss"]), bevel=s["boss"] * 0.9)]
    width = s["width"]
    half = width / 2
    sh = s["shoulder"]
    top = np.array([[-half, 0.42], [0.0, 0.46], [half, 0.42]])
    # sides fall straight to the shoulder, then curve to the point at the bottom
    right = np.concatenate([np.linspace([half, 0.42], [half, 0.42 - sh * 0.92], 6)[1:],
                            _bezier((half, 0.42 - sh * 0.92), (half * 0.98, -0.28), (0.0, -0.5), 20)[1:]])
    left = right[::-1].copy()
    left[:, 0] *= -1
    outline = np.concatenate([_bezier(top[0], top[1], top[2], 12), right[:-1], left])
    body = Part("paint", outline, bevel=0.03, rim=rim, field=s["field"], rivets=0)
    parts = [body]
    if s["boss"] > 0.1:
        parts.append(Part("trim", circle=(0.0, 0.06, s["boss"] * 0.75), bevel=s["boss"] * 0.6))
    return parts


def _staff_parts(s: dict, p: dict) -> list[Part]:
    hw = s["haft_w"]
    g = s["gnarl"]
    salt = p["salt"] % 997
    wobble = ((g, 2.3, salt * 0.01), (g * 0.6, 5.1, salt * 0.02))
    cl, cw = s["crystal_len"], s["crystal_w"]
    c_bottom = 0.5 - cl
    parts = _haft(dict(s, haft_bend=s["bend"]), -0.5, c_bottom + cl * 0.25, wobble=wobble)
    parts[-1].role = "wood"  # a staff ends in a worn wooden foot
    if s["orb"]:
        gem = Part("gem", circle=(0.0, c_bottom + cl * 0.5, cw * 1.3), bevel=cw * 1.3)
    else:
        gem = Part("gem", np.array([[0.0, 0.5], [cw, 0.5 - cl * 0.3], [cw * 0.8, c_bottom + cl * 0.15],
                                    [0.0, c_bottom], [-cw * 0.8, c_bottom + cl * 0.15], [-cw, 0.5 - cl * 0.3]]),
                   bevel=cw * 0.9)
    parts.append(gem)
    n = int(s["claws"])
    for i in range(n):
        side = (-1.0 + 2.0 * i / max(n - 1, 1)) if n > 1 else 0.0
        reach = cw * (1.15 if not s["orb"] else 1.35)
        pts = _bezier((side * hw * 0.6, c_bottom - 0.02), (side * reach * 1.6, c_bottom + cl * 0.2),
                      (side * reach * 0.9, c_bottom + cl * (0.62 if s["orb"] else 0.5)), 14)
        taper = np.linspace(hw * 0.55, hw * 0.18, len(pts))
        parts.append(Part("trim", _ribbon(pts, taper), bevel=hw * 0.4))
    parts.append(_band(c_bottom - 0.02, hw * 1.5, 0.022))
    return parts


_BUILDERS = {"sword": _bladed, "dagger": _bladed, "axe": _axe_parts, "hammer": _hammer_parts, "spear": _spear_parts,
             "shield": _shield_parts, "staff": _staff_parts}


def parts(params: dict) -> list[Part]:
    """The item's parts in object units, in drawing order (back to front)."""
    return _BUILDERS[params["kind"]](params["shape"], params)


# ------------------------------------------------------------------------------------------- drawing
def _poly_sdf(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from pixel centres (x, y) to a closed polygon (Quilez's method)."""
    d = np.full(np.broadcast_shapes(x.shape, y.shape), np.inf, np.float32)
    sign = np.ones_like(d)
    n = len(poly)
    for i in range(n):
        ax, ay = poly[i]
        bx, by = poly[i - 1]
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / max(ex * ex + ey * ey, 1e-12), 0.0, 1.0)
        dx, dy = wx - ex * t, wy - ey * t
        d = np.minimum(d, dx * dx + dy * dy)
        c1, c2, c3 = y >= ay, y < by, ex * wy > ey * wx
        flip = (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
        sign = np.where(flip, -sign, sign)
    return (sign * np.sqrt(d)).astype(np.float32)


def _smooth(a: float, b: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - a) / (b - a), 0, 1)
    return t * t * (3 - 2 * t)


def _backdrop(h: int, w: int, params: dict | None = None) -> np.ndarray:
    """Plain studio grey, a touch lighter on one side and behind the item: still one colour to a
    segmenter. The side (`backdrop_angle`, 0 = darker at the bottom) and the tone vary by seed."""
    params = params or {}
    y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
    a = math.radians(float(params.get("backdrop_angle", 0.0)))
    reach = abs(math.sin(a)) + abs(math.cos(a))  # so the gradient spans 0..1 corner to corner at any angle
    along = 0.5 + ((x - 0.5) * np.float32(math.sin(a)) + (y - 0.5) * np.float32(math.cos(a))) / np.float32(reach)
    tone = 0.05 * (float(params.get("backdrop_tone", 0.5)) - 0.5)
    grey = _BACKDROP_TOP + tone + (_BACKDROP_BOTTOM - _BACKDROP_TOP) * along
    sx, sy = 0.5 - 0.05 * math.sin(a), 0.5 - 0.05 * math.cos(a)  # the light spot, away from the dark side
    grey = grey + 0.025 * np.exp(-(((x - sx) / 0.35) ** 2 + ((y - sy) / 0.35) ** 2))
    tint = np.array([1.0, 0.995, 0.985], np.float32)
    return srgb_to_linear(np.clip(grey[..., None] * tint, 0, 1))


def _palettes(params: dict, canvas: Canvas) -> dict[str, Palette]:
    metal = canvas.palette
    trim = Palette.from_spec(palette_spec("gold")) if params["gilded"] else metal
    wood = Palette.from_spec(palette_spec("wood")) if metal.name != "wood" else metal
    leather = Palette.from_spec(palette_spec("leather"))
    return {"metal": metal, "trim": trim, "wood": wood, "leather": leather}


def _gem_colour(params: dict, canvas: Canvas) -> np.ndarray:
    pal = canvas.palette
    if pal.name in MATERIAL_PALETTES or not len(pal.accents):
        code = GEMS[int(params["gem"]) % len(GEMS)].lstrip("#")
        return srgb_to_linear(np.array([int(code[i:i + 2], 16) / 255.0 for i in (0, 2, 4)], np.float32))
    return pal.accents[int(params["gem"]) % len(pal.accents)].astype(np.float32)


def _streaks(t: np.ndarray, key: int, freqs: tuple[float, ...], unit: float) -> np.ndarray:
    """Streaks along a part: detuned sines of the across coordinate `t` (object units), about [-1, 1].
    `freqs` are radians per object unit; components finer than the pixel grid fade out (no moire)."""
    rng = np.random.default_rng([key, 77])
    out = np.zeros_like(t)
    for f in freqs:
        ff = f * rng.uniform(0.8, 1.25)
        keep = 1.0 - float(np.clip((ff / unit - 0.35) / 0.35, 0, 1))  # radians per pixel: 0.35 .. 0.7 fade
        if keep > 0:
            out += keep * np.sin(t * ff + rng.uniform(0, 2 * np.pi)) / np.sqrt(len(freqs))
    return out


def _shade(part: Part, pals: dict[str, Palette], gem: np.ndarray, hgt: np.ndarray, depth: np.ndarray,
           along: np.ndarray, across: np.ndarray, unit: float, key: int) -> np.ndarray:
    """Linear RGB of a part from its height field (pixels) and its material."""
    gy, gx = np.gradient(hgt)
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    nx, ny, nz = -gx * inv, -gy * inv, inv
    diffuse = np.clip(nx * _LIGHT[0] + ny * _LIGHT[1] + nz * _LIGHT[2], 0, 1)
    half_dot = np.clip(nx * _HALF[0] + ny * _HALF[1] + nz * _HALF[2], 0, 1)
    role = part.role
    a_u, t_u = along / unit, across / unit  # object units: details keep their size at any resolution
    if role in ("metal", "trim"):
        pal = pals[role]
        # studio softbox: facets turned up-left mirror it, those turned down-right the dark studio
        facing = -(nx * 0.62 + ny * 0.78)
        env = 0.5 + 0.5 * np.tanh(facing * 4.0)
        brushed = 0.035 * _streaks(t_u, key, (180.0, 420.0, 900.0), unit) + 0.04 * np.sin(a_u * 9.0 + key % 7)
        # kept below the backdrop's brightness (only speculars reach it): pale steel stays apart from pale grey
        tone = 0.24 + 0.4 * env + 0.1 * diffuse + brushed
        col = pal.at(np.clip(tone, 0, 0.97)) * (0.8 + 0.25 * diffuse)[..., None]
        col = col + pal.at(0.97) * (half_dot ** 40 * 0.9 + half_dot ** 8 * 0.12)[..., None]
        return col
    if role == "wood":
        pal = pals["wood"]
        grain = _streaks(t_u + 0.004 * np.sin(a_u * 23.0 + key % 5), key, (260.0, 610.0, 1300.0, 2400.0), unit)
        tone = 0.42 + 0.1 * grain + 0.04 * np.sin(a_u * 3.0)
        return pal.at(np.clip(tone, 0, 1)) * (0.5 + 0.65 * diffuse)[..., None] + pal.at(0.9) * (half_dot ** 12 * 0.08)[
            ..., None]
    if role == "leather":
        pal = pals["leather"]
        tone = 0.5 + 0.05 * _streaks(t_u, key, (900.0, 1700.0), unit)
        return pal.at(np.clip(tone, 0, 1)) * (0.45 + 0.7 * diffuse)[..., None] + pal.at(0.95) * (
            half_dot ** 10 * 0.12)[..., None]
    if role == "gem":
        core = _smooth(0.0, float(depth.max()) + 1e-3, depth)  # lit from within: brightest at the heart
        col = gem[None, None, :] * (0.25 + 0.9 * core + 0.5 * diffuse)[..., None]
        return col + np.float32(0.9) * (half_dot ** 30)[..., None]
    raise ValueError(role)


def _shield_face(part: Part, pals: dict[str, Palette], gem: np.ndarray, hgt: np.ndarray, depth: np.ndarray,
                 xs: np.ndarray, ys: np.ndarray, centre: tuple[float, float], rot: tuple[float, float], unit: float,
                 key: int, canvas: Canvas) -> np.ndarray:
    """A shield: a metal rim band, then wooden planks or a painted field, rivets around the rim."""
    cos, sin = rot
    dx, dy = xs - centre[0], ys - centre[1]
    uu = (dx * cos + dy * sin) / unit  # object units, u right
    vv = (dx * sin - dy * cos) / unit  # v up
    rim_px = part.rim * unit
    inner = _smooth(rim_px - 1.0, rim_px + 1.0, depth)
    # the face sits a little lower than the rim
    face_h = hgt - np.float32(0.35) * part.bevel * unit * inner
    plank_w = 1.0 / max(part.planks, 1)
    if part.field == "planks":
        planks = np.abs(((uu / plank_w) % 1.0) - 0.5)
        groove = 1 - _smooth(0.44, 0.5, planks)
        face_h = face_h - (1 - groove) * np.float32(0.004 * unit) * inner
    wood = _shade(Part("wood"), pals, gem, face_h, depth, vv * unit, uu * unit + np.floor(uu / plank_w) * 37.0 * unit,
                  unit, key)
    metal = _shade(Part("trim"), pals, gem, face_h, depth, vv * unit, uu * unit, unit, key)
    if part.field == "planks":
        face = wood * (0.7 + 0.3 * groove)[..., None]
    else:
        pal = canvas.palette
        paint = gem if canvas.palette.name in MATERIAL_PALETTES else pal.accents[0]
        second = pals["metal"].at(0.9) if part.field != "plain" else paint
        regions = {"pale": uu > 0, "bend": (uu + vv) > 0.05, "chevron": vv < 0.15 - np.abs(uu) * 0.9,
                   "cross": (np.abs(uu) < 0.07) | (np.abs(vv - 0.08) < 0.07)}.get(part.field, uu > 9)
        base = np.where(regions[..., None], second[None, None, :], paint[None, None, :])
        gy, gx = np.gradient(face_h)
        inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
        diffuse = np.clip((-gx * _LIGHT[0] - gy * _LIGHT[1] + _LIGHT[2]) * inv, 0, 1)
        face = base * (0.4 + 0.6 * diffuse)[..., None] * np.float32(0.85)
        face = face + np.float32(0.05) * (np.clip((-gx * _HALF[0] - gy * _HALF[1] + _HALF[2]) * inv, 0, 1) ** 20)[
            ..., None]
    col = metal * (1 - inner)[..., None] + face * inner[..., None]
    if part.rivets:
        ang = np.arctan2(vv, uu)
        k = part.rivets
        cell = (ang / (2 * np.pi) * k) % 1.0 - 0.5
        r_mid = 0.5 - part.rim * 0.5
        dist = np.sqrt((cell * 2 * np.pi * r_mid / k) ** 2 + (np.sqrt(uu * uu + vv * vv) - r_mid) ** 2)
        bump = 1 - _smooth(part.rim * 0.18, part.rim * 0.28, dist)
        col = col * (1 - 0.55 * bump)[..., None] + pals["trim"].at(0.85) * (0.55 * bump)[..., None]
    return col


def _rotation(params: dict) -> tuple[float, float]:
    a = math.radians(float(params["angle"]))
    return math.cos(a), math.sin(a)


def _to_pixels(pts: np.ndarray, rot: tuple[float, float], scale: float, offset: tuple[float, float]) -> np.ndarray:
    """Object units (u right, v up) -> pixel coordinates (x right, y down), turned clockwise by the angle."""
    cos, sin = rot
    x = pts[:, 0] * cos + pts[:, 1] * sin
    y = pts[:, 0] * sin - pts[:, 1] * cos
    return np.stack([x * scale + offset[0], y * scale + offset[1]], axis=1)


def _outline_points(part: Part) -> np.ndarray:
    if part.circle is not None:
        cu, cv, r = part.circle
        return _ellipse(cu, cv, r, r, 16)
    assert part.poly is not None
    return part.poly


def layout(params: dict, width: int, height: int) -> tuple[list[Part], tuple[float, float], float,
                                                             tuple[float, float]]:
    """(parts, rotation, pixels per object unit, pixel offset of the object origin): the item centred,
    its longest extent `fill` of the frame's limiting side."""
    items = parts(params)
    rot = _rotation(params)
    pts = _to_pixels(np.concatenate([_outline_points(p) for p in items]), rot, 1.0, (0.0, 0.0))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    size = np.maximum(hi - lo, 1e-6)
    scale = float(params["fill"]) * min(width / size[0], height / size[1])
    centre = (lo + hi) / 2 * scale
    dx, dy = float(params.get("shift", 0.0)) * width, float(params.get("shift_y", 0.0)) * height
    return items, rot, scale, (width / 2 + dx - float(centre[0]), height / 2 + dy - float(centre[1]))


def draw(params: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    img = _backdrop(h, w, params)
    items, rot, scale, offset = layout(params, w, h)
    pals = _palettes(params, canvas)
    gem = _gem_colour(params, canvas)
    covered = np.zeros((h, w), np.float32)
    line = max(0.9, scale * 0.004)  # ink outline width, pixels
    for index, part in enumerate(items):
        key = int(params["salt"]) + 7919 * index
        if part.circle is not None:
            cu, cv, r = part.circle
            (cx, cy), = _to_pixels(np.array([[cu, cv]]), rot, scale, offset)
            rr = r * scale
            lo, hi = np.array([cx - rr, cy - rr]), np.array([cx + rr, cy + rr])
        else:
            assert part.poly is not None
            poly = _to_pixels(part.poly, rot, scale, offset)
            lo, hi = poly.min(axis=0), poly.max(axis=0)
        x0, y0 = max(int(lo[0]) - 3, 0), max(int(lo[1]) - 3, 0)
        x1, y1 = min(int(hi[0]) + 4, w), min(int(hi[1]) + 4, h)
        if x1 <= x0 or y1 <= y0:
            continue
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5)[None, :]
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5)[:, None]
        if part.circle is not None:
            d = (np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) - rr).astype(np.float32)
        else:
            d = _poly_sdf(xs, ys, poly)
        alpha = np.clip(0.5 - d, 0, 1)
        if not alpha.any():
            continue
        depth = np.maximum(-d, 0)
        bevel = max(part.bevel * scale, 1.0)
        hgt = bevel * (1 - np.exp(-depth / bevel))
        for carve, carve_depth in part.carves:
            dc = _poly_sdf(xs, ys, _to_pixels(carve, rot, scale, offset))
            hgt = hgt - carve_depth * scale * _smooth(-1.0, 2.5, -dc)
        ax, ay = _to_pixels(np.array([part.axis]), rot, 1.0, (0.0, 0.0))[0]
        (ox, oy), = _to_pixels(np.array([part.origin]), rot, scale, offset)
        along = (xs - ox) * ax + (ys - oy) * ay
        across = (xs - ox) * -ay + (ys - oy) * ax
        if part.wraps:
            # leather strips wound round the grip: a ridge per turn, slanted, dark in the seams
            phase = (along / scale * part.wraps + across / scale * 12.0) % 1.0
            ridge = np.sin(np.pi * phase) ** 0.6
            hgt = hgt * (0.7 + 0.3 * ridge)
        if part.rim or part.field:
            col = _shield_face(part, pals, gem, hgt, depth, xs + 0 * ys, ys + 0 * xs, offset, rot, scale, key,
                               canvas)
        else:
            col = _shade(part, pals, gem, hgt, depth, along, across, scale, key)
        if part.wraps:
            col = col * (0.55 + 0.45 * ridge)[..., None]
        if part.carves:
            col = col * (1 - 0.25 * _smooth(0.0, 0.3 * bevel, -hgt + bevel * (1 - np.exp(-depth / bevel))))[..., None]
        # ink outline: the concept-art line that also keeps pale metal apart from the pale backdrop
        col = col * (0.18 + 0.82 * _smooth(0.0, line * 1.6, depth))[..., None]
        region = img[y0:y1, x0:x1]
        below = covered[y0:y1, x0:x1]
        if below.any():
            shifted = np.zeros_like(alpha)
            sx, sy = int(round(scale * 0.006)), int(round(scale * 0.009))
            shifted[sy:, sx:] = alpha[:alpha.shape[0] - sy, :alpha.shape[1] - sx]
            shadow = blur(shifted, max(scale * 0.006, 0.8), False) * below * (1 - alpha)
            region = region * (1 - 0.45 * shadow)[..., None]
        img[y0:y1, x0:x1] = region * (1 - alpha)[..., None] + col * alpha[..., None]
        covered[y0:y1, x0:x1] = np.maximum(below, alpha)
    return img.astype(np.float32)
