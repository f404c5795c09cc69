"""Colour palettes: named gradients chosen by prompt words, interpolated in OKLab.

A palette is a list of sRGB stops ordered roughly dark -> light, plus a background and a few
accents. Motifs read colours through a `Palette`: `lut` is a 1024-entry gradient in *linear* RGB
(blending and lighting happen in linear light; `finish` converts back to sRGB once, at the end).
Interpolating in OKLab keeps gradients perceptually even (no muddy greys between complementary
stops). A seed may jitter the hue/chroma a little so a collection does not repeat one exact palette.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# name -> stops (dark -> light), background, accents, light (True: the palette reads as a light image)
PALETTES: dict[str, dict[str, Any]] = {
    "warm": {
        "stops": ["#1a0504", "#4d0d09", "#8f1e0c", "#cc4216", "#ef8222", "#f8c14a", "#fff0c4"],
        "bg": "#140403", "accents": ["#ff7a00", "#ffd166", "#ff4d2e"],
    },
    "cool": {
        "stops": ["#030916", "#0a1d3d", "#143b6b", "#1e66a3", "#3b98cf", "#8ed2ef", "#e4f6ff"],
        "bg": "#030814", "accents": ["#4cc9f0", "#7b8cff", "#b5f2ff"],
    },
    "neon": {
        "stops": ["#06020e", "#1c0636", "#4e0f85", "#ff1f8f", "#ff5fe0", "#22e4ff", "#cafbff"],
        "bg": "#05020c", "accents": ["#ff2bd6", "#00eaff", "#8b5cff", "#ff3d7f"],
    },
    "neon noir": {
        "stops": ["#020206", "#06071a", "#0e1030", "#22174f", "#ff2a6d", "#05d9e8", "#d6f8ff"],
        "bg": "#020205", "accents": ["#ff2a6d", "#05d9e8", "#c03bff"], "exposure": 0.85,
    },
    "noir": {
        "stops": ["#020202", "#09090b", "#141418", "#25252b", "#4b4b53", "#9c9ca4", "#f0f0f0"],
        "bg": "#030303", "accents": ["#c1121f"], "exposure": 0.6,
    },
    "pastel": {
        "stops": ["#5b5f7d", "#9d8fb0", "#b8c0ff", "#ffc2d9", "#ffd6a5", "#cdf5c4", "#fdfcea"],
        "bg": "#f7efe6", "accents": ["#ff9ebb", "#9bd0ff", "#b9f3c6"], "light": True,
    },
    "monochrome": {
        "stops": ["#000000", "#161616", "#333333", "#5e5e5e", "#999999", "#d2d2d2", "#ffffff"],
        "bg": "#050505", "accents": ["#ffffff"],
    },
    "earthy": {
        "stops": ["#1b130c", "#3c291b", "#6a4429", "#9a6a3e", "#b79a6f", "#8f9a5c", "#e8ddc4"],
        "bg": "#17100a", "accents": ["#c96f3b", "#8f9a5c", "#d9b77e"],
    },
    "sunset": {
        "stops": ["#0d0628", "#2d0f4c", "#6a1b6b", "#b8336a", "#ec5e4f", "#f9a03f", "#fde29a"],
        "bg": "#0b0522", "accents": ["#ff7b54", "#ffd56b", "#ff4f79"],
    },
    "ocean": {
        "stops": ["#00101c", "#002a45", "#005f73", "#0a9396", "#57c4c0", "#a8e6df", "#f0fbfa"],
        "bg": "#000d17", "accents": ["#2ee6d6", "#94d2bd", "#e9d8a6"],
    },
    "forest": {
        "stops": ["#06120a", "#11301f", "#1e5233", "#3a7d44", "#76a84b", "#c1d37f", "#f1f5d8"],
        "bg": "#050f08", "accents": ["#a7c957", "#f2e8cf", "#6a994e"],
    },
    "fire": {
        "stops": ["#050000", "#2d0300", "#7a0a00", "#c72a00", "#f26b0f", "#ffb627", "#fff3b0"],
        "bg": "#040000", "accents": ["#ff5a00", "#ffc300", "#ff2200"],
    },
    "ice": {
        "stops": ["#06121f", "#12355b", "#2a6f97", "#61a5c2", "#a9d6e5", "#dff3fb", "#ffffff"],
        "bg": "#050f1b", "accents": ["#bde0fe", "#e0fbfc", "#7fdbff"],
    },
    "gold": {
        "stops": ["#0f0a02", "#3a2706", "#74500f", "#b0831d", "#dcb243", "#f3dc8c", "#fff8e1"],
        "bg": "#0b0702", "accents": ["#ffd700", "#f3dc8c", "#ffb300"],
    },
    "vaporwave": {
        "stops": ["#12062a", "#3b0f6e", "#8a2be2", "#ff6ec7", "#01cdfe", "#05ffa1", "#fffb96"],
        "bg": "#10052a", "accents": ["#ff71ce", "#01cdfe", "#05ffa1", "#b967ff"],
    },
    "autumn": {
        "stops": ["#1d0b05", "#4a1607", "#8c2f0e", "#c4541a", "#e08e2b", "#e9c46a", "#f6e7c8"],
        "bg": "#170904", "accents": ["#e76f51", "#f4a261", "#e9c46a"],
    },
    "purple": {
        "stops": ["#0b0418", "#241046", "#4c1d95", "#7c3aed", "#a78bfa", "#ddd6fe", "#f7f5ff"],
        "bg": "#080312", "accents": ["#c084fc", "#f0abfc", "#818cf8"],
    },
    # Material palettes (picked by material words such as "steel", "wood", "stone", "leather", "linen"; never by a
    # seed).
    "steel": {
        "stops": ["#0b0d10", "#1f242b", "#3a424c", "#5f6a76", "#8d98a4", "#c3ccd5", "#f1f5f8"],
        "bg": "#0a0c0f", "accents": ["#9fb3c8", "#d9e2ea", "#6c7a89"],
    },
    "wood": {
        "stops": ["#1a0f07", "#3b2212", "#5e3a1e", "#85562e", "#a97842", "#c99b62", "#ead0a0"],
        "bg": "#160c05", "accents": ["#8b5a2b", "#c68e4e", "#5a3618"],
    },
    "stone": {
        "stops": ["#121211", "#2a2926", "#46433e", "#66625a", "#8a857b", "#b3ada1", "#dcd7cc"],
        "bg": "#0f0f0e", "accents": ["#9a948a", "#c2bcb0", "#6e6a62"],
    },
    "leather": {
        "stops": ["#100805", "#26130a", "#3f2113", "#5c321c", "#7b4828", "#a06a42", "#cfa27a"],
        "bg": "#0d0604", "accents": ["#8a4b2a", "#b9825a", "#4a2414"],
    },
    "cloth": {  # undyed linen / canvas
        "stops": ["#1c1a16", "#3a362e", "#5e584b", "#847c6b", "#a89f8b", "#cbc3ae", "#ece6d6"],
        "bg": "#171510", "accents": ["#b5a98f", "#ddd3bd", "#7d735f"],
    },
}

# Palettes whose images must keep a dark ground (light comes only from accents / lit structure).
DARK_GROUND = frozenset({"neon", "neon noir", "noir"})

# Palettes a seed may pick when the prompt names none (monochrome/noir only when asked for).
DEFAULT_PALETTES = ("warm", "cool", "neon", "sunset", "ocean", "fire", "ice", "gold", "vaporwave", "purple",
                    "forest", "autumn", "pastel", "neon noir")


def hex_to_rgb(code: str) -> list[float]:
    code = code.lstrip("#")
    return [int(code[i:i + 2], 16) / 255.0 for i in (0, 2, 4)]


def srgb_to_linear(c):
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0) + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c):
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, None)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055).astype(np.float32)


_M1 = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                [0.2119034982, 0.6806995451, 0.1073969566],
                [0.0883024619, 0.2817188376, 0.6299787005]], dtype=np.float64)
_M2 = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                [1.9779984951, -2.4285922050, 0.4505937099],
                [0.0259040371, 0.7827717662, -0.8086757660]], dtype=np.float64)


def linear_to_oklab(rgb):
    lms = np.cbrt(np.asarray(rgb, np.float64) @ _M1.T)
    return lms @ _M2.T


def oklab_to_linear(lab):
    lms = np.asarray(lab, np.float64) @ np.linalg.inv(_M2).T
    return (lms ** 3) @ np.linalg.inv(_M1).T


def luminance(rgb):
    """Relative luminance of linear RGB (last axis)."""
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722


def _round(c) -> list[float]:
    return [round(float(v), 4) for v in np.clip(c, 0.0, 1.0)]


def palette_spec(name: str, rng: np.random.Generator | None = None, jitter: float = 1.0) -> dict[str, Any]:
    """The JSON-able palette record stored in params: named stops, seed-jittered in OKLab."""
    base = PALETTES[name]
    colours = {
        "stops": [hex_to_rgb(h) for h in base["stops"]],
        "bg": [hex_to_rgb(base["bg"])],
        "accents": [hex_to_rgb(h) for h in base["accents"]],
    }
    if rng is not None and jitter > 0:
        # Small hue rotation and chroma/lightness change: recognisably the same palette, not identical.
        angle = float(rng.normal(0.0, 0.07)) * jitter
        chroma = float(np.exp(rng.normal(0.0, 0.06) * jitter))
        light = float(rng.normal(0.0, 0.012)) * jitter
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        for key, values in colours.items():
            lab = linear_to_oklab(srgb_to_linear(np.array(values)))
            lab[:, 1:] = (lab[:, 1:] @ rot.T) * chroma
            lab[:, 0] = np.clip(lab[:, 0] + light * (lab[:, 0] > 0.08), 0.0, 1.0)
            colours[key] = [list(v) for v in linear_to_srgb(np.clip(oklab_to_linear(lab), 0, 1))]
    return {
        "name": name,
        "stops": [_round(c) for c in colours["stops"]],
        "bg": _round(colours["bg"][0]),
        "accents": [_round(c) for c in colours["accents"]],
        "light": bool(base.get("light", False)),
        "exposure": float(base.get("exposure", 1.0)),  # low-key palettes (noir) darken the whole image
    }


def blend_specs(a: dict[str, Any], b: dict[str, Any], t: float) -> dict[str, Any]:
    """Interpolate two palette records of the same name (used by refine to move the jitter)."""
    if a.get("name") != b.get("name") or len(a["stops"]) != len(b["stops"]) or len(a["accents"]) != len(b["accents"]):
        return b if t >= 0.5 else a

    def mix(x, y):
        return _round((1 - t) * np.asarray(x) + t * np.asarray(y))

    return {
        "name": a["name"],
        "stops": [mix(x, y) for x, y in zip(a["stops"], b["stops"], strict=True)],
        "bg": mix(a["bg"], b["bg"]),
        "accents": [mix(x, y) for x, y in zip(a["accents"], b["accents"], strict=True)],
        "light": a.get("light", False),
        "exposure": a.get("exposure", 1.0),
    }


@dataclass
class Palette:
    """Runtime view of a palette record: linear-RGB gradient lookups for motifs."""

    name: str
    stops: np.ndarray  # (n, 3) linear RGB
    bg: np.ndarray  # (3,) linear RGB
    accents: np.ndarray  # (k, 3) linear RGB
    light: bool
    lut: np.ndarray  # (1024, 3) linear RGB, OKLab-interpolated

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Palette:
        stops_srgb = np.asarray(spec["stops"], dtype=np.float64)
        lab = linear_to_oklab(srgb_to_linear(stops_srgb))
        n = len(lab)
        t = np.linspace(0.0, n - 1, 1024)
        i = np.clip(np.floor(t).astype(int), 0, n - 2)
        f = (t - i)[:, None]
        f = f * f * (3 - 2 * f) * 0.35 + f * 0.65  # slightly eased: stops read as colours, not a ramp
        lut_lab = lab[i] * (1 - f) + lab[i + 1] * f
        lut = np.clip(oklab_to_linear(lut_lab), 0, 1).astype(np.float32)
        return cls(
            name=str(spec.get("name", "")),
            stops=srgb_to_linear(stops_srgb),
            bg=srgb_to_linear(np.asarray(spec["bg"])),
            accents=srgb_to_linear(np.asarray(spec["accents"])),
            light=bool(spec.get("light", False)),
            lut=lut,
        )

    def at(self, t) -> np.ndarray:
        """Gradient colour at t in [0, 1] (clipped); returns t.shape + (3,)."""
        idx = np.clip(np.asarray(t, dtype=np.float32) * 1023.0 + 0.5, 0, 1023).astype(np.int32)
        return self.lut[idx]

    def cyclic(self, t) -> np.ndarray:
        """Ping-pong gradient: continuous for any real t (used by banded colourings)."""
        t = np.asarray(t, dtype=np.float32)
        return self.at(1.0 - np.abs(1.0 - 2.0 * (t - np.floor(t))))

    def mix(self, a: float) -> np.ndarray:
        """One colour of the gradient, as an RGB triple."""
        return self.at(np.float32(a)).reshape(3)
