"""Finishing: supersample reduction, seamless tiling, effects and the final sRGB encode.

Everything here works on linear-light float32 RGB arrays (h, w, 3): blurs, glows and fades are
physically plausible there (no dark fringes), and the image is converted to sRGB exactly once, with
dither, in `encode`. Every effect respects tiling: blurs wrap around and particles wrap modulo the
size, so a seamless motif stays seamless after rain, fog or grain.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from echo_pipeline.render.backends.procedural import noise
from echo_pipeline.render.backends.procedural.palettes import Palette, linear_to_srgb, luminance


def downsample(img: np.ndarray, ss: int) -> np.ndarray:
    """Box-filter a supersampled image by an integer factor (averaging in linear light)."""
    if ss == 1:
        return img
    h, w = img.shape[0] // ss, img.shape[1] // ss
    img = img[: h * ss, : w * ss]
    out = np.zeros((h, w) + img.shape[2:], np.float32)
    for dy in range(ss):
        for dx in range(ss):
            out += img[dy::ss, dx::ss]
    return out * np.float32(1.0 / (ss * ss))


def _upsample_matrix(n_out: int, n_in: int, f: int, wrap: bool) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix from a grid downsampled by f back to n_out samples."""
    u = (np.arange(n_out, dtype=np.float64) + 0.5) / f - 0.5
    i0 = np.floor(u).astype(np.int64)
    t = (u - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    for idx, wgt in ((i0, 1 - t), (i0 + 1, t)):
        idx = idx % n_in if wrap else np.clip(idx, 0, n_in - 1)
        m[rows, idx] += wgt
    return m


def blur(img: np.ndarray, sigma: float | tuple[float, float], wrap: bool) -> np.ndarray:
    """Gaussian blur of an (h, w) or (h, w, c) array.

    Wide blurs run on a box-downsampled copy and come back through two small interpolation matrices
    (a separable upsample as matrix products): a 24 px glow costs about as much as a 3 px one.
    """
    sy, sx = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else (float(sigma[0]), float(sigma[1]))
    mode = "wrap" if wrap else "nearest"
    planar = img.ndim == 2
    x = img[..., None] if planar else img
    h, w = x.shape[:2]
    f = 1
    while max(sy, sx) / f > 3.0 and min(h, w) // (f * 2) >= 8:
        f *= 2
    if f == 1:
        out = ndimage.gaussian_filter(x, (sy, sx, 0), mode=mode, truncate=3.0)
    else:
        ph, pw = (-h) % f, (-w) % f
        if ph or pw:
            x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="wrap" if wrap else "edge")
        small = downsample(x, f)
        small = ndimage.gaussian_filter(small, (sy / f, sx / f, 0), mode=mode, truncate=3.0)
        uy = _upsample_matrix(h, small.shape[0], f, wrap)
        ux = _upsample_matrix(w, small.shape[1], f, wrap)
        hs, ws, c = small.shape
        tmp = (uy @ small.reshape(hs, ws * c)).reshape(h, ws, c)  # upsample rows: one matmul
        out = np.ascontiguousarray(tmp.transpose(0, 2, 1)).reshape(h * c, ws) @ ux.T  # then columns
        out = out.reshape(h, c, w).transpose(0, 2, 1)
    out = out.astype(np.float32, copy=False)
    return out[..., 0] if planar else out


def seamless(img: np.ndarray, periodic: tuple[bool, bool]) -> np.ndarray:
    """Make an image tile along the axes that are not already periodic.

    Blends the image with copies shifted by half its size, with separable weights that vanish where
    each copy has its own seam: the original fades out at the borders, the shifted copy (whose seam
    lies in the middle) fades in there. Only a band near the borders is blended, so most of the image
    is untouched.
    """
    if all(periodic):
        return img.astype(np.float32, copy=False)  # drawn on a periodic domain: nothing to blend
    out = img
    h, w = img.shape[:2]
    for axis, (is_periodic, n) in enumerate(zip(periodic, (h, w), strict=True)):
        if is_periodic:
            continue
        t = (np.arange(n, dtype=np.float32) + 0.5) / n
        d = np.minimum(t, 1.0 - t)  # distance to the nearest border, 0 .. 0.5
        band = 0.22
        wgt = np.clip(d / band, 0.0, 1.0)
        wgt = wgt * wgt * (3 - 2 * wgt)
        shape = [1, 1, 1]
        shape[axis] = n
        wgt = wgt.reshape(shape)
        out = out * wgt + np.roll(out, n // 2, axis=axis) * (1.0 - wgt)
    return out.astype(np.float32, copy=False)


def _splat(acc: np.ndarray, y: np.ndarray, x: np.ndarray, weight: np.ndarray, wrap: bool) -> None:
    """Add weights at fractional positions into a 2-D accumulator (bilinear footprint)."""
    h, w = acc.shape
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = (x - x0).astype(np.float32)
    fy = (y - y0).astype(np.float32)
    flat = acc.reshape(-1)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            if wrap:
                yy, xx, ok = yy % h, xx % w, None
            else:
                ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                yy, xx = yy[ok], xx[ok]
            wv = weight * wy * wx
            if ok is not None:
                wv = wv[ok]
            flat += np.bincount(yy * w + xx, weights=wv, minlength=h * w).astype(np.float32)


def splat(acc: np.ndarray, y, x, weight, wrap: bool) -> None:
    _splat(acc, np.asarray(y), np.asarray(x), np.asarray(weight, dtype=np.float32), wrap)


def rain(img: np.ndarray, amount: float, rng: np.random.Generator, wrap: bool, colour: np.ndarray) -> np.ndarray:
    """Slanted rain streaks in three depth layers (far: fine and dim, near: long, soft, brighter)."""
    h, w = img.shape[:2]
    scale = np.sqrt(h * w) / 512.0
    angle = rng.uniform(-0.28, 0.12)  # mostly falling a little to the left: wind
    direction = np.array([np.cos(angle), np.sin(angle)])  # (dy, dx)
    out = img * (1.0 - 0.08 * amount)  # rain dims and flattens the light a little
    for density, length, sigma, bright in ((0.0024, 9, 0.4, 0.05), (0.0009, 18, 0.55, 0.08), (0.00025, 34, 1.0, 0.12)):
        count = max(4, int(density * h * w * amount))
        n_samp = max(4, int(length * scale * 1.2))
        y0 = rng.uniform(0, h, count)
        x0 = rng.uniform(0, w, count)
        s = np.linspace(0.0, 1.0, n_samp, dtype=np.float32)
        ln = length * scale * rng.uniform(0.7, 1.3, count)
        yy = (y0[:, None] + s[None, :] * ln[:, None] * direction[0]).ravel()
        xx = (x0[:, None] + s[None, :] * ln[:, None] * direction[1]).ravel()
        taper = np.maximum(np.sin(np.pi * s), 0.0) ** 0.7  # streak fades in and out: no blunt ends
        wgt = (taper[None, :] * rng.uniform(0.4, 1.0, count)[:, None]).ravel()
        acc = np.zeros((h, w), np.float32)
        splat(acc, yy, xx, wgt, wrap)
        acc = blur(acc, sigma * max(scale, 0.5), wrap)
        out = out + (acc * bright * amount / max(sigma, 0.5))[..., None] * colour
    return out


def snow(img: np.ndarray, amount: float, rng: np.random.Generator, wrap: bool) -> np.ndarray:
    """Soft snowflakes in depth layers (near flakes larger and out of focus)."""
    h, w = img.shape[:2]
    scale = np.sqrt(h * w) / 512.0
    out = img
    for density, sigma, bright in ((0.0025, 0.6, 0.5), (0.0008, 1.4, 0.7), (0.00015, 3.2, 0.9)):
        count = max(3, int(density * h * w * amount))
        acc = np.zeros((h, w), np.float32)
        splat(acc, rng.uniform(0, h, count), rng.uniform(0, w, count), rng.uniform(0.5, 1.0, count), wrap)
        s = sigma * max(scale, 0.5)
        acc = blur(acc, s, wrap) * (2 * np.pi * s * s) ** 0.6
        out = out + (np.minimum(acc * bright, 1.0))[..., None] * np.float32(0.9)
    return out


def fog(img: np.ndarray, amount: float, colour: np.ndarray, seed, wrap: bool, profile: np.ndarray | None) -> np.ndarray:
    """A drifting veil of mist: low-frequency noise times an optional vertical profile."""
    h, w = img.shape[:2]
    veil = 0.5 + 0.5 * noise.fbm2(h, w, 2.5, 4, seed)
    veil = np.clip(veil, 0, 1) ** 1.3
    m = amount * (0.25 + 0.6 * veil)
    if profile is not None:
        m = m * profile[:, None]
    m = np.clip(m, 0, 0.85)[..., None]
    return img * (1 - m) + colour * m


def bloom(img: np.ndarray, amount: float, wrap: bool) -> np.ndarray:
    """Glow around bright areas: thresholded highlights blurred at three radii and added back."""
    h, w = img.shape[:2]
    lum = luminance(img)
    ref = float(np.percentile(lum, 99.5)) + 1e-4
    knee = 0.45 * ref
    hi = img * (np.clip((lum - knee) / (ref - knee + 1e-6), 0, 1) ** 2)[..., None]
    scale = np.sqrt(h * w) / 512.0
    glow = np.zeros_like(img)
    for sigma, weight in ((3.0, 0.45), (9.0, 0.35), (24.0, 0.3)):
        glow += weight * blur(hi, sigma * scale, wrap)
    return img + glow * amount


def soften(img: np.ndarray, amount: float, wrap: bool) -> np.ndarray:
    """Dreamy softness: a touch of diffusion and lifted shadows."""
    h, w = img.shape[:2]
    scale = np.sqrt(h * w) / 512.0
    diffused = blur(img, 2.5 * scale, wrap)
    out = img * (1 - 0.35 * amount) + diffused * (0.35 * amount)
    return out + (0.012 * amount) * diffused.mean(axis=(0, 1), keepdims=True)


def tone(img: np.ndarray, exposure: float, saturation: float) -> np.ndarray:
    """Exposure, saturation and a soft highlight shoulder (glows roll off instead of clipping)."""
    out = img * np.float32(exposure)
    if abs(saturation - 1.0) > 1e-3:
        lum = luminance(out)[..., None]
        out = lum + (out - lum) * np.float32(saturation)
        out = np.maximum(out, 0)
    knee = np.float32(0.8)
    over = np.maximum(out - knee, 0)
    return np.where(out > knee, knee + 0.2 * (1 - np.exp(-over / 0.2)), out).astype(np.float32)


def vignette(img: np.ndarray, amount: float) -> np.ndarray:
    h, w = img.shape[:2]
    y = (np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1
    x = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    r = np.sqrt(y[:, None] ** 2 + x[None, :] ** 2) / np.sqrt(2)
    m = 1.0 - amount * np.clip((r - 0.35) / 0.65, 0, 1) ** 1.8
    return img * m[..., None]


def encode(img: np.ndarray, grain: float, rng: np.random.Generator) -> np.ndarray:
    """Linear float -> sRGB uint8, with film grain (strongest in mid-tones) and dither."""
    srgb = linear_to_srgb(np.clip(np.nan_to_num(img, nan=0.0), 0, 1))
    h, w = srgb.shape[:2]
    g = rng.standard_normal((h, w), dtype=np.float32)
    lum = srgb.mean(axis=2)
    mid = 0.35 + 2.6 * lum * (1 - lum)  # grain shows in mid-tones, fades in deep shadows/highlights
    srgb = srgb + (g * (0.006 + 0.05 * grain) * mid)[..., None]
    srgb = srgb + (rng.random((h, w, 1), dtype=np.float32) - 0.5) / 255.0  # dither: no banding
    return np.clip(srgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def pixelate(rgb: np.ndarray, palette: Palette, amount: float) -> np.ndarray:
    """Pixel-art look: big pixels snapped to a small palette (uint8 sRGB in and out)."""
    h, w = rgb.shape[:2]
    block = max(2, int(round(min(h, w) / (96 - 32 * amount))))
    hb, wb = max(1, h // block), max(1, w // block)
    from PIL import Image

    small = np.asarray(Image.fromarray(rgb).resize((wb, hb), Image.Resampling.BOX), dtype=np.float32) / 255.0
    colours = linear_to_srgb(np.concatenate([palette.lut[::68], palette.accents], axis=0))
    d = ((small[:, :, None, :] - colours[None, None]) ** 2).sum(-1)
    snapped = (colours[np.argmin(d, axis=2)] * 255 + 0.5).astype(np.uint8)
    return np.asarray(Image.fromarray(snapped).resize((w, h), Image.Resampling.NEAREST))


def apply_effects(img: np.ndarray, params: dict[str, Any], palette: Palette, wrap: bool,
                  fog_profile: np.ndarray | None, seed: list[int]) -> np.ndarray:
    """Every effect the params ask for, in a fixed order, then the sRGB encode. Returns uint8 RGB."""
    fx = params.get("effects", {})
    img = np.nan_to_num(img, nan=0.0, posinf=1.0, neginf=0.0)  # one bad sample must not poison blurs
    rng = np.random.default_rng(seed + [0xF1])
    light = float(params.get("light", 0.0))
    if fx.get("fog", 0) > 0:
        hazecol = palette.at(0.72) * 0.6 + img.mean(axis=(0, 1)) * 0.6
        img = fog(img, fx["fog"], hazecol.astype(np.float32), seed + [0xF06], wrap, fog_profile)
    if fx.get("rain", 0) > 0:
        rain_col = (palette.at(0.85) * 0.5 + 0.5).astype(np.float32)
        img = rain(img, fx["rain"], rng, wrap, rain_col)
    if fx.get("snow", 0) > 0:
        img = snow(img, fx["snow"], rng, wrap)
    if fx.get("glow", 0) > 0:
        img = bloom(img, fx["glow"], wrap)
    if fx.get("soft", 0) > 0:
        img = soften(img, fx["soft"], wrap)
    exposure = 2.0 ** (0.45 * light) * float(params["palette"].get("exposure", 1.0))
    saturation = 1.0 + 0.18 * float(params.get("saturation", 0.0))
    img = tone(img, exposure, saturation)
    if fx.get("vignette", 0) > 0 and not wrap:
        img = vignette(img, fx["vignette"])
    out = encode(img, 0.0 if fx.get("pixel", 0) > 0 else fx.get("grain", 0.0), rng)
    if fx.get("pixel", 0) > 0:
        out = pixelate(out, palette, fx["pixel"])
    return out
