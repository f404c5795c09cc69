"""City skylines: building silhouettes in depth layers, lit windows, neon signs, haze, wet streets.

Geometry is snapped to whole pixels (rectangles, window grids, antennas), so edges are crisp without
supersampling; the only slanted shapes (light beams, the moon) use analytic coverage. Layers are
drawn far to near and mixed towards the haze colour with distance; windows dim and shrink with it.
Neon signs are drawn into their own buffer so they can glow (a local bloom) before compositing.
With "street"/"wet"/rain, the lower band becomes a wet street: the skyline mirrored, smeared
vertically and rippled, the way lights streak on rain-slick asphalt.
"""

from __future__ import annotations

import numpy as np

from echo_pipeline.render.backends.procedural import noise
from echo_pipeline.render.backends.procedural.finish import blur, splat
from echo_pipeline.render.backends.procedural.motifs import Canvas, blend
from echo_pipeline.render.backends.procedural.palettes import srgb_to_linear

AMBER = srgb_to_linear(np.array([1.0, 0.72, 0.38]))
WHITE = srgb_to_linear(np.array([0.85, 0.93, 1.0]))


def make(rng: np.random.Generator, canvas: Canvas, kinds: list[str]) -> dict:
    street = "street" in kinds or canvas.effects.get("rain", 0) > 0 or rng.random() < 0.45
    # Skylines share one layout (sky above, towers below): horizon, tower height, density and the
    # moon's place come from the framing point so a collection spreads them instead of repeating.
    horizon, tall, dense, moon_x = (canvas.framing or tuple(float(x) for x in rng.random(4)))[:4]
    return {
        "style": "street" if street else "skyline",
        "layers": int(rng.integers(3, 6)),
        "street": bool(street),
        "street_height": 0.16 + 0.18 * horizon,
        "height_scale": 0.7 + 0.6 * tall,
        "density": 0.8 + 0.4 * dense,
        "lit": float(rng.uniform(0.25, 0.55)),
        "signs": float(rng.uniform(0.5, 1.0) if "signs" in kinds else rng.uniform(0.15, 0.6)),
        "moon": bool(rng.random() < 0.4),
        "moon_x": 0.12 + 0.76 * moon_x,
        "moon_y": float(rng.uniform(0.08, 0.25)),
        "beams": int(rng.integers(0, 3)),
        "beam_angles": [float(rng.uniform(-0.5, 0.5)) for _ in range(3)],
        "haze": float(rng.uniform(0.5, 1.0)),
        "dusk": bool("sun" in kinds or (rng.random() < 0.25 and "night" not in kinds)),
        "layout": int(rng.integers(0, 2**31 - 1)),
    }


def vary(params: dict, rng: np.random.Generator, amount: float, canvas: Canvas, kinds: list[str]) -> dict:
    if amount <= 0:
        return dict(params)
    fresh = make(rng, canvas, kinds)
    out = blend(params, fresh, amount, rng)
    out["street"] = params["street"] or "street" in kinds or canvas.effects.get("rain", 0) > 0
    out["style"] = "street" if out["street"] else "skyline"
    # the skyline itself is re-rolled only on large moves; small ones change light, haze and signs
    out["layout"] = params["layout"] if rng.random() > amount ** 1.5 else fresh["layout"]
    out["layers"] = params["layers"] if out["layout"] == params["layout"] else fresh["layers"]
    return out


def periodic(params: dict, canvas: Canvas) -> tuple[bool, bool]:
    return False, False


def fog_profile(params: dict, canvas: Canvas) -> np.ndarray:
    y = np.linspace(0, 1, canvas.height, dtype=np.float32)
    return np.clip((y - 0.2) / 0.65, 0, 1)


def _buildings(rng, w, S, depth):
    """Rectangles (x0, x1, height, tier) for one layer, left to right, pixel-snapped."""
    rects = []
    x = -rng.uniform(0, 0.05) * S
    wmin, wmax = S * (0.025 + 0.05 * depth), S * (0.06 + 0.1 * depth)
    while x < w:
        bw = rng.uniform(wmin, wmax)
        tall = rng.random() < 0.15
        hgt = S * (rng.uniform(0.12, 0.38) + (rng.uniform(0.15, 0.3) if tall else 0.0)) * (1.15 - 0.45 * depth)
        x0, x1 = int(round(x)), int(round(x + bw))
        if x1 > x0:
            rects.append((x0, x1, hgt, 0))
            if rng.random() < 0.35 and x1 - x0 > 6:  # a setback tier on top
                inset = int(round((x1 - x0) * rng.uniform(0.15, 0.3)))
                rects.append((x0 + inset, x1 - inset, hgt + S * rng.uniform(0.03, 0.1), 1))
        x += bw + (rng.uniform(0, 0.02) * S if rng.random() < 0.5 else 0)
    return rects


def draw(params: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    pal = canvas.palette
    S = float(min(h, 1.3 * w))
    px = max(S / 512.0, 0.2)
    rng = np.random.default_rng(canvas.seed + [51, params["layout"]])
    y = (np.arange(h, dtype=np.float32) + 0.5)[:, None]
    x = (np.arange(w, dtype=np.float32) + 0.5)[None, :]
    street_h = int(round(params["street_height"] * S)) if params["street"] else 0
    ground = h - street_h  # buildings stand on this row
    dusk = params["dusk"] and canvas.light > -0.5 and pal.name not in ("noir", "neon noir")
    accents = pal.accents if len(pal.accents) else pal.at(np.array([0.8]))

    # ---- sky: deep at the top, light-polluted haze at the horizon
    lo, hi = (0.02, 0.32) if not dusk else (0.2, 0.85)
    ty = np.clip((y - (ground - S)) / S, 0, 1) ** 1.6
    sky = pal.at(lo + (hi - lo) * ty) * np.ones((1, w, 1), np.float32)
    glow_col = accents[0] * 0.5 + pal.at(0.5) * 0.5
    sky = sky + (np.exp(-np.maximum(ground - y, 0) / (0.18 * S)) * 0.16 * params["haze"])[..., None] * glow_col
    if not dusk:
        stars = np.zeros((h, w), np.float32)
        count = int(w * h * 0.0006)
        splat(stars, rng.uniform(0, ground * 0.7, count), rng.uniform(0, w, count),
              rng.pareto(3.0, count).astype(np.float32) * 0.25, False)
        sky = sky + (blur(stars, 0.5, False) * 1.5)[..., None]
    if params["moon"]:
        mx, my, mr = params["moon_x"] * w, ground - S * (0.55 + params["moon_y"]), 0.05 * S
        d = np.sqrt((x - mx) ** 2 + (y - my) ** 2)
        moon_col = pal.at(0.95) * 0.5 + WHITE * 0.5
        sky = sky + (np.exp(-d / (mr * 3)) * 0.25)[..., None] * moon_col
        cov = np.clip(mr - d + 0.5, 0, 1)[..., None]
        sky = sky * (1 - cov) + moon_col * (0.9 + 0.1 * np.clip((mx - x) / mr, -1, 1))[..., None] * cov
    img = sky.astype(np.float32)

    # ---- search-light beams behind the skyline
    for i in range(params["beams"]):
        bx = w * (0.2 + 0.6 * noise.hash01(params["layout"], i))
        ang = params["beam_angles"][i]
        dirx, diry = np.sin(ang), -np.cos(ang)
        rx, ry = x - bx, y - ground
        along = rx * dirx + ry * diry
        across = np.abs(rx * diry - ry * dirx)
        beam = np.exp(-across / (0.008 * S + np.maximum(along, 0) * 0.04)) * (along > 0) * \
            np.exp(-np.maximum(along, 0) / (0.7 * S))
        img = img + (beam * 0.07)[..., None] * (glow_col * 0.5 + WHITE * 0.5)

    # ---- building layers, far to near
    n = params["layers"]
    haze_col = pal.at(0.32) * 0.85 + glow_col * 0.15
    signs = np.zeros((h, w, 3), np.float32)
    win_w = max(1, int(round(0.0045 * S)))
    for li in range(n):
        depth = li / max(1, n - 1)  # 0 far .. 1 near
        body = pal.at(0.02) * 0.6 + pal.bg * 0.4
        body = haze_col * (1 - depth) * 0.55 * params["haze"] + body * (1 - (1 - depth) * 0.55 * params["haze"])
        wscale = 0.55 + 0.45 * depth
        lit_p = params["lit"] * (0.7 + 0.3 * depth)
        for bi, (x0, x1, hgt, tier) in enumerate(_buildings(rng, w, S * params["height_scale"], depth)):
            top = int(round(ground - hgt * params["density"]))
            a, b = max(0, x0), min(w, x1)
            if b <= a or top >= ground:
                continue
            t0 = max(0, top)
            region = img[t0:ground, a:b]
            hh, ww = region.shape[:2]
            ly = (np.arange(t0, ground) - top)[:, None]
            lx = (np.arange(a, b) - x0)[None, :]
            # front face and a darker side face: a hint of volume
            side = int((x1 - x0) * 0.22) if depth > 0.3 else 0
            face = np.where(lx >= (x1 - x0) - side, 0.6, 1.0).astype(np.float32)
            grad = (0.9 + 0.25 * (ly / max(1.0, ground - top)))  # lit from below by the street
            col = body[None, None, :] * (face * grad)[..., None]
            # windows on a pixel grid; sizes shrink with distance
            bid = (li * 1000 + bi) ^ params["layout"]
            wx = max(1, int(np.round(win_w * wscale * (1 + noise.hash01(bid, 1) * 1.2))))
            wy = max(1, int(np.round(wx * (0.8 + noise.hash01(bid, 2) * 0.8))))
            sx, sy = wx + max(1, int(np.round(wx * (0.6 + noise.hash01(bid, 3))))), wy + max(1, int(round(wy * 0.9)))
            margin = max(1, wx)
            cx, cy = (lx - margin) // sx, (ly - margin) // sy
            in_win = ((lx - margin) % sx < wx) & ((ly - margin) % sy < wy) & (lx >= margin) & \
                (lx < (x1 - x0) - margin) & (ly >= margin + (0 if tier else sy))
            rnd = noise.hash01(bid, cx, cy)
            floor_on = noise.hash01(bid, cy, 9) < 0.75  # whole floors dark: irregular, lived-in
            lit = in_win & (rnd < lit_p * (1.3 if tier else 1.0)) & floor_on
            kind = noise.hash01(bid, 4)
            wcol = AMBER if kind < 0.45 else WHITE if kind < 0.75 else accents[int(kind * 97) % len(accents)]
            bright = (0.35 + 0.65 * noise.hash01(bid, cx, cy, 5)) * (0.35 + 0.65 * depth) * 1.3
            col = col * (1 - lit[..., None] * 0.95) + (lit * bright)[..., None] * wcol * face[..., None]
            dim = in_win & ~lit
            col = col * (1 + 0.25 * dim[..., None])  # unlit glass catches a little sky
            region[:] = col[: hh, : ww]
            # antenna with a red light on some tall ones
            if tier == 0 and depth > 0.2 and noise.hash01(bid, 6) < 0.18 and hgt > 0.3 * S:
                ax = (a + b) // 2
                ah = int(0.05 * S * (0.5 + noise.hash01(bid, 7)))
                img[max(0, top - ah):t0, ax:ax + 1] = body
                if top - ah > 0:
                    signs[max(0, top - ah - 1):top - ah + 1, ax:ax + 1] += np.array([1.2, 0.08, 0.05], np.float32)
            # neon signs on near buildings: vertical boards with glyph-like segments
            if depth > 0.45 and noise.hash01(bid, 8) < params["signs"] and (x1 - x0) > 8 * px:
                sw = max(2, int(0.014 * S))
                sh = int(S * (0.06 + 0.1 * noise.hash01(bid, 10)))
                sxp = x0 + int((x1 - x0 - sw) * noise.hash01(bid, 11))
                syp = top + int((ground - top - sh) * (0.15 + 0.5 * noise.hash01(bid, 12)))
                if syp > 0 and sxp >= 0 and sxp + sw < w and syp + sh < ground:
                    ncol = accents[int(noise.hash01(bid, 13) * 997) % len(accents)] * 1.6
                    board = np.zeros((sh, sw), np.float32)
                    board[:, :1] = board[:, -1:] = 1.0
                    board[:1, :] = board[-1:, :] = 1.0
                    seg = max(2, sw)
                    rows = np.arange(sh)[:, None] // seg
                    glyph = noise.hash01(bid, rows, np.arange(sw)[None, :] * 0 + 1) < 0.6
                    inner = np.zeros_like(board, dtype=bool)
                    inner[1:-1, 1:-1] = True
                    board = np.maximum(board, (glyph & inner & ((np.arange(sh)[:, None] % seg) != 0)) * 0.8)
                    signs[syp:syp + sh, sxp:sxp + sw] += board[..., None] * ncol
        # haze between layers
        if li < n - 1:
            veil = np.clip((y - (ground - 0.5 * S)) / (0.5 * S), 0, 1) * 0.12 * params["haze"]
            img = img * (1 - veil[..., None]) + haze_col * veil[..., None]

    # neon: crisp tubes plus their own glow
    if signs.any():
        img = img + signs + blur(signs, 3.0 * px, False) * 0.9 + blur(signs, 12.0 * px, False) * 0.5

    # ---- street: wet reflection of the skyline
    if street_h > 0:
        img = _street(img, ground, canvas, pal, S, px, haze_col)
    return np.clip(img, 0, None).astype(np.float32)


def _street(img, ground, canvas, pal, S, px, haze_col):
    h, w = img.shape[:2]
    rows = np.arange(ground, h)
    depth = (rows - ground).astype(np.float32)
    src = np.clip(ground - 1 - depth * 1.15, 0, ground - 1).astype(np.int64)
    reflected = img[src]
    # rain-slick asphalt: lights smear vertically, ripples jitter them sideways
    reflected = blur(reflected, (7.0 * px, 1.2 * px), False)
    wob = noise.fbm2(h - ground, w, 18.0, 2, canvas.seed + [52], unit=float(S))
    shift = (wob * 3.0 * px).astype(np.float32)
    xs = np.clip(np.arange(w)[None, :] + shift, 0, w - 1).astype(np.int64)
    reflected = np.take_along_axis(reflected, xs[..., None].repeat(3, axis=2), axis=1)
    fade = (depth / max(1.0, h - ground))[:, None, None]
    asphalt = pal.bg * 0.8 + haze_col * 0.1
    puddles = 0.5 + 0.5 * noise.fbm2(h - ground, w, 6.0, 3, canvas.seed + [53], unit=float(S))
    wet = np.clip(0.35 + 0.65 * puddles, 0, 1)[..., None]
    street = asphalt * (1 - 0.3 * fade) + reflected * wet * (0.65 - 0.3 * fade)
    out = img.copy()
    out[ground:] = street
    out[ground:ground + max(1, int(px))] += haze_col * 0.35  # kerb line catching the light
    return out
