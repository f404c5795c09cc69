"""Geometric patterns: Truchet tiles, hexagonal Truchet / honeycomb, and mandalas.

Every shape is a signed distance measured in *pixels*, turned into coverage with a 1-px ramp
(analytic anti-aliasing: crisp at any size, no supersampling). Tubes get a cylindrical shading term
from the same distance and a soft drop shadow from a shifted copy, which lifts flat tiles into
something that looks made.

Tiling: Truchet and hex grids use whole numbers of cells across the image (cells stretch by at most
a few percent) and hash cell indices modulo the grid, so the pattern is exactly periodic. Mandalas
are centred compositions; a tiling request prefers the grid styles unless a mandala is asked for.
"""

from __future__ import annotations

import numpy as np

from echo_pipeline.render.backends.procedural import noise
from echo_pipeline.render.backends.procedural.motifs import Canvas, blend
from echo_pipeline.render.backends.procedural.palettes import DARK_GROUND

STYLES = ("truchet", "hex", "mandala")
SQ3 = float(np.sqrt(3.0))


def make(rng: np.random.Generator, canvas: Canvas, kinds: list[str]) -> dict:
    asked = next((k for k in kinds if k in STYLES), None)
    if asked:
        style = asked
    elif canvas.tiling:
        style = str(rng.choice(("truchet", "hex"), p=[0.5, 0.5]))
    else:
        style = str(rng.choice(STYLES, p=[0.34, 0.33, 0.33]))
    n_rings = int(rng.integers(5, 9))
    rings = []
    for _ in range(n_rings):
        rings.append({
            "shape": str(rng.choice(("petal", "dots", "band", "spike"), p=[0.4, 0.2, 0.2, 0.2])),
            "tone": float(rng.uniform(0.2, 1.0)),
            "width": float(rng.uniform(0.5, 1.0)),
            "offset": bool(rng.random() < 0.5),
        })
    return {
        "style": style,
        "cells": float(rng.uniform(5.0, 10.0)),
        "thickness": float(rng.uniform(0.16, 0.3)),
        "stripes": int(rng.choice([1, 1, 2, 3])),
        "tone_freq": float(rng.uniform(0.6, 1.6)),
        "tone_angle": float(rng.uniform(0, 2 * np.pi)),
        "shadow": float(rng.uniform(0.3, 0.7)),
        "honeycomb": bool(rng.random() < 0.3),
        "folds": int(rng.choice([8, 10, 12, 16, 20])),
        "rings": rings,
        "spin": float(rng.uniform(0, np.pi)),
        "light_bg": bool(rng.random() < 0.3),
        "salt": int(rng.integers(0, 2**31 - 1)),
    }


def vary(params: dict, rng: np.random.Generator, amount: float, canvas: Canvas, kinds: list[str]) -> dict:
    if amount <= 0:
        return dict(params)
    fresh = make(rng, canvas, [params["style"]])
    out = blend(params, fresh, amount, rng)
    out["style"] = params["style"]
    out["folds"] = params["folds"] if rng.random() > amount * 0.7 else fresh["folds"]
    out["salt"] = params["salt"] if rng.random() > amount ** 2 else fresh["salt"]
    return out


def periodic(params: dict, canvas: Canvas) -> tuple[bool, bool]:
    native = params["style"] in ("truchet", "hex")
    return native, native


def _tone_field(params, canvas, y, x):
    """Slow colour drift across the frame (0..1), periodic when tiling."""
    h, w = canvas.height, canvas.width
    n = noise.fbm2(h, w, params["tone_freq"], 2, canvas.seed + [41])
    a = params["tone_angle"]
    if canvas.tiling:
        return np.clip(0.5 + 0.45 * n, 0, 1)
    ramp = ((x - w / 2) * np.cos(a) + (y - h / 2) * np.sin(a)) / canvas.unit
    return np.clip(0.5 + 0.3 * n + 0.45 * ramp, 0, 1)


def _background(params, canvas, y, x):
    pal = canvas.palette
    light = pal.light or (params["light_bg"] and pal.name not in DARK_GROUND)
    h, w = canvas.height, canvas.width
    base = pal.bg if not light else pal.at(0.96)
    tex = noise.fbm2(h, w, 24.0, 3, canvas.seed + [42])
    img = np.broadcast_to(base.astype(np.float32), (h, w, 3)) * (1.0 + 0.04 * tex)[..., None]
    return img, light


def _tube(img, dist, half, tone, pal, shadow_dist, shadow, stripes):
    """Composite a tube of half-width `half` px around distance field `dist` (px)."""
    # soft drop shadow first (from a shifted distance field)
    if shadow_dist is not None:
        sh = np.clip((half + 2.5 - shadow_dist) / 5.0, 0, 1) * shadow
        img = img * (1 - 0.6 * sh)[..., None]
    cov = np.clip(half - dist + 0.5, 0, 1)
    u = np.clip(dist / np.maximum(half, 1e-3), 0, 1)
    shade = np.sqrt(1 - u * u)  # cylinder: bright on the crest, darker at the rims
    col = pal.at(np.clip(0.25 + 0.7 * tone, 0, 1))
    if stripes > 1:
        # parallel grooves inside the tube (anti-aliased by the same pixel ramp)
        k = u * stripes
        groove = np.abs(k - np.round(k)) * half / stripes * 2
        line = np.clip(1.2 - groove, 0, 1) * (u > 0.05) * (u < 0.98)
        shade = shade * (1 - 0.45 * line)
    edge = np.clip(half - dist - 1.0, 0, 1)  # 1-px darker rim: an outline that stays crisp
    lit = col * (0.45 + 0.75 * shade)[..., None] * (0.55 + 0.45 * edge)[..., None]
    return img * (1 - cov[..., None]) + lit * cov[..., None]


def _truchet(params, canvas, y, x, img, light):
    pal = canvas.palette
    h, w = canvas.height, canvas.width
    cells = params["cells"] * (0.8 + 0.35 * canvas.detail)
    nx = max(2, int(round(cells * w / canvas.unit)))
    ny = max(2, int(round(cells * h / canvas.unit)))
    cw, ch = w / nx, h / ny
    cpx = 0.5 * (cw + ch)
    gx, gy = x / cw, y / ch
    ix, iy = np.floor(gx), np.floor(gy)
    fx, fy = gx - ix, gy - iy
    flip = noise.hash01(ix.astype(np.int64) % nx, iy.astype(np.int64) % ny, params["salt"]) < 0.5
    fx = np.where(flip, 1.0 - fx, fx)

    def dist_at(fxx, fyy):
        d1 = np.abs(np.sqrt(fxx * fxx + fyy * fyy) - 0.5)
        d2 = np.abs(np.sqrt((1 - fxx) ** 2 + (1 - fyy) ** 2) - 0.5)
        return np.minimum(d1, d2) * cpx

    dist = dist_at(fx, fy)
    half = params["thickness"] * cpx * 0.5
    off = max(1.5, cpx * 0.04)
    sgx, sgy = (x - off) / cw, (y - off) / ch
    six, siy = np.floor(sgx), np.floor(sgy)
    sfx, sfy = sgx - six, sgy - siy
    sflip = noise.hash01(six.astype(np.int64) % nx, siy.astype(np.int64) % ny, params["salt"]) < 0.5
    sfx = np.where(sflip, 1.0 - sfx, sfx)
    shadow_dist = dist_at(sfx, sfy)
    tone = _tone_field(params, canvas, y, x)
    return _tube(img, dist, half, tone, pal, shadow_dist, params["shadow"], params["stripes"])


def _hex_cells(X, Y):
    """Pointy-top hexagons of circumradius 1: (q, r) axial cell and local offset (dx, dy)."""
    q = (SQ3 / 3.0) * X - Y / 3.0
    r = (2.0 / 3.0) * Y
    s = -q - r
    rq, rr, rs = np.round(q), np.round(r), np.round(s)
    dq, dr, ds = np.abs(rq - q), np.abs(rr - r), np.abs(rs - s)
    fix_q = (dq > dr) & (dq > ds)
    fix_r = ~fix_q & (dr > ds)
    rq = np.where(fix_q, -rr - rs, rq)
    rr = np.where(fix_r, -rq - rs, rr)
    cx = SQ3 * (rq + rr / 2.0)
    cy = 1.5 * rr
    return rq, rr, X - cx, Y - cy


def _hex(params, canvas, y, x, img, light):
    pal = canvas.palette
    h, w = canvas.height, canvas.width
    cells = params["cells"] * (0.75 + 0.3 * canvas.detail) * 0.8
    nx = max(1, int(round(cells * w / canvas.unit)))
    ny = max(2, int(round(cells * h / canvas.unit / 1.5 * SQ3 / 2))) * 2  # even rows: the grid repeats
    sx, sy = w / (nx * SQ3), h / (ny * 1.5)  # pixels per lattice unit (nearly equal)
    spx = 0.5 * (sx + sy)
    X, Y = x / sx, y / sy
    q, r, dx, dy = _hex_cells(X, Y)
    # wrap the cell index so hashes repeat with the tile
    col = (q + np.floor(r / 2)).astype(np.int64) % nx
    row = r.astype(np.int64) % ny
    rnd = noise.hash01(col, row, params["salt"])
    tone = _tone_field(params, canvas, y, x)
    if params["honeycomb"]:
        # bevelled honeycomb: hex distance to the cell edge, lit from the upper left
        ax, ay = np.abs(dx), np.abs(dy)
        hexd = np.maximum(ax, ax * 0.5 + ay * SQ3 / 2)
        inner = (SQ3 / 2 - hexd) * spx  # px to the edge
        gap = max(1.0, spx * 0.06)
        cov = np.clip(inner - gap + 0.5, 0, 1)
        bevel = np.clip((inner - gap) / (spx * 0.18), 0, 1)
        lightdir = np.clip(0.5 - (dx - dy) * 0.35, 0, 1)
        c = pal.at(np.clip(0.25 + 0.7 * rnd, 0, 1))  # one colour per cell
        face = c * (0.6 + 0.5 * (bevel + (1 - bevel) * lightdir))[..., None]
        return img * (1 - cov[..., None]) + face * cov[..., None]
    # hex Truchet: three arcs around alternate vertices (radius 1/2 joins adjacent edge midpoints)
    start = np.where(rnd < 0.5, 0, 1)
    dist = np.full(dx.shape, np.inf, np.float32)
    for k in range(3):
        ang = np.pi / 6 + (start + 2 * k) * np.pi / 3
        vx, vy = np.cos(ang), np.sin(ang)
        dist = np.minimum(dist, np.abs(np.sqrt((dx - vx) ** 2 + (dy - vy) ** 2) - 0.5))
    dist = dist * spx
    half = params["thickness"] * spx * 0.5 * 1.4
    return _tube(img, dist, half, tone, pal, None, 0.0, params["stripes"])


def _mandala(params, canvas, y, x, img, light):
    pal = canvas.palette
    h, w = canvas.height, canvas.width
    # long frames hold a row of mandalas rather than one tiny one
    count = max(1, int(round(max(w, h) / min(w, h))))
    along_x = w >= h
    size = min(w, h)
    if along_x:
        cx = (np.floor(x / (w / count)) + 0.5) * (w / count)
        cy = np.full_like(y, h / 2.0)
    else:
        cy = (np.floor(y / (h / count)) + 0.5) * (h / count)
        cx = np.full_like(x, w / 2.0)
    radius = 0.47 * size
    px_, py_ = x - cx, y - cy
    r = np.sqrt(px_ * px_ + py_ * py_)
    theta = np.arctan2(py_, px_) + params["spin"]
    folds = params["folds"]
    sector = 2 * np.pi / folds
    a = np.abs(((theta % sector) + sector) % sector - sector / 2)  # 0 on the spoke, folded & mirrored
    rings = params["rings"]
    n = len(rings)
    glow = np.exp(-(r / (radius * 1.1)) ** 2)
    img = img * (1 - 0.25 * glow[..., None]) + pal.at(0.45 if not light else 0.85) * (0.25 * glow)[..., None]
    ink = pal.at(0.97) * 0.9 if not light else pal.at(0.0) * 0.5
    edges = radius * (np.linspace(0.12, 1.0, n + 1) ** 0.85)  # rings widen a little outwards
    # Each ring only touches the pixels of its annulus: work on those (flat indices), not the frame.
    flat_img = img.reshape(-1, 3)
    r_flat, a_flat = r.reshape(-1), a.reshape(-1)
    for k in range(n):
        ring = rings[k]
        r0, r1 = edges[k], edges[k + 1]
        band = r1 - r0
        sel = np.nonzero((r_flat > r0 - 2.5) & (r_flat < r1 + 2.5))[0]
        if sel.size == 0:
            continue
        rr, a_k = r_flat[sel], a_flat[sel]
        px_img = flat_img[sel]
        uu = (rr - r0) / band  # 0..1 across the ring
        aa = a_k if not ring["offset"] else np.abs(a_k - sector / 2)
        v = rr * aa  # px from the spoke along the arc
        span = np.maximum(rr * sector / 2, 1e-3)  # px from spoke to sector edge
        shape = ring["shape"]
        if shape == "petal":  # pointed petal filling the ring
            prof = span * 0.95 * np.clip(np.sin(np.pi * np.clip(uu, 0, 1)), 0, 1) ** 0.7
            d = np.maximum(v - prof, np.maximum(-uu, uu - 1) * band)
        elif shape == "spike":  # triangle pointing outwards
            prof = span * 0.95 * np.clip(1 - uu, 0, 1)
            d = np.maximum(v - prof, np.maximum(-uu, uu - 1) * band)
        elif shape == "dots":
            rad = band * 0.38 * ring["width"]
            d = np.sqrt((rr - (r0 + r1) / 2) ** 2 + v * v) - np.minimum(rad, span * 0.8)
        else:  # scalloped band
            d = np.abs(rr - (r0 + r1) / 2) - band * 0.42 * (0.6 + 0.4 * np.cos(a_k * folds))
        ring_in = np.clip(np.minimum(rr - r0, r1 - rr) + 0.5, 0, 1)[:, None]
        # the ring's ground, alternating, then the ornament, then a crisp ink line around both
        ground = pal.at(0.12 + 0.1 * (k % 2)) if not light else pal.at(0.9 - 0.08 * (k % 2))
        px_img = px_img * (1 - ring_in * 0.85) + ground * ring_in * 0.85
        c = pal.at(np.clip(0.35 + 0.6 * ring["tone"], 0, 1) if not light else np.clip(0.1 + 0.6 * ring["tone"], 0, 1))
        cov = np.clip(0.5 - d, 0, 1)[:, None]
        inner = np.clip(-d / (band * 0.25 + 1e-3), 0, 1)[:, None]
        px_img = px_img * (1 - cov) + c * (0.7 + 0.4 * inner) * cov
        line = np.clip(1.0 - np.abs(d) / 0.9, 0, 1)[:, None]
        px_img = px_img * (1 - line * 0.8) + ink * line * 0.8
        rim = np.clip(1.0 - np.abs(rr - r1) / 0.8, 0, 1)[:, None]
        flat_img[sel] = px_img * (1 - rim * 0.6) + ink * rim * 0.6
    img = flat_img.reshape(img.shape)
    d = r - edges[0]
    cov = np.clip(0.5 - d, 0, 1)[..., None]
    img = img * (1 - cov) + pal.at(0.95) * cov
    return img


def draw(params: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    y = (np.arange(h, dtype=np.float32) + 0.5)[:, None] * np.ones((1, w), np.float32)
    x = (np.arange(w, dtype=np.float32) + 0.5)[None, :] * np.ones((h, 1), np.float32)
    img, light = _background(params, canvas, y, x)
    style = params["style"]
    if style == "truchet":
        img = _truchet(params, canvas, y, x, img, light)
    elif style == "hex":
        img = _hex(params, canvas, y, x, img, light)
    else:
        img = _mandala(params, canvas, y, x, img, light)
    return np.clip(img, 0, None).astype(np.float32)
