"""Escape-time fractals: Mandelbrot zooms, Julia sets and the Burning Ship.

Iteration keeps z and its derivative dz (w.r.t. c, or z0 for Julia), which give three smooth fields
per sample: the continuous (normalised) iteration count, the exterior distance estimate
DE = |z| log|z| / |dz|, and a surface normal z/dz (Chéritat's relief lighting). Colourings built from
those are smooth away from the set; near it, the distance estimate fades colour to a uniform edge
tone, and the pixels that still differ from their neighbours get four more samples (adaptive
supersampling), so boundaries are anti-aliased without paying for 4x everywhere.

Speed: samples that escaped are marked NaN (NaN arithmetic is as fast and never "escapes" again)
and the arrays are compacted once enough of them are dead; samples caught in an attracting cycle
(Brent-style check) are inside and stop early; complex64 is used unless the zoom needs complex128;
the iteration limit comes from a low-resolution preview of the same view.

Views: the seed's framing point (`procedural.framing`: low-discrepancy, so a collection's seeds
spread over the composition space instead of colliding) picks the neighbourhood (a curated spot, a
Julia c on the edge of the main component, a stretch of the Ship's antenna, or random points just
outside the set found by a cheap escape-count probe), the zoom, the rotation and where the subject
sits in the frame. A 56-px preview of the view is graded — how much of it lies near the boundary,
how much is interior or empty exterior, whether the detail sits mid-frame — and low-detail,
mostly-black or lopsided frames are replaced by the best of a few more candidates.
"""

from __future__ import annotations

import cmath
import math
from typing import Any

import numpy as np
from scipy import ndimage

from echo_pipeline.render.backends.procedural.motifs import Canvas, blend
from echo_pipeline.render.backends.procedural.palettes import DARK_GROUND

KINDS = ("mandelbrot", "julia", "ship")
STYLES = ("relief", "glow", "ink")
BAILOUT = 10.0  # small radius + chunked checks: |z| can grow for 4 more steps without overflowing float32
CHUNK = 4

# Hand-picked neighbourhoods worth zooming into: (x, y, min width, max width)
MANDEL_SPOTS = (
    (-0.743643887, 0.131825904, 0.003, 0.04),  # seahorse valley
    (-0.7453, 0.1127, 0.004, 0.03),
    (-0.1592, -1.0317, 0.01, 0.06),
    (0.2549870, -0.0005680, 0.002, 0.02),  # elephant valley
    (-0.088, 0.654, 0.01, 0.08),
    (-1.25066, 0.02012, 0.002, 0.02),
    (-0.16070135, 1.0375665, 0.003, 0.03),
    (0.3602404434, -0.6413130611, 0.003, 0.05),
    (-0.77568377, 0.13646737, 0.002, 0.02),
    (-0.5, 0.0, 2.4, 3.0),  # the whole set, now and then
)
# The Ship and two of its copies along the antenna: (x, y, size relative to the big ship). The
# copies look like the ship itself, so they share one range of *relative* zoom: whatever the copy,
# the framing point's zoom then means the same picture (and the low-discrepancy spread holds).
SHIP_SPOTS = (
    (-1.7615, -0.0287, 1.0),  # the ship
    (-1.861, -0.0020, 1 / 15),  # a ship of the armada along the antenna
    (-1.9415, -0.0010, 1 / 60),  # a smaller ship further out
)
SHIP_ZOOM = (0.035, 0.2)  # view width for a ship of size 1
SHIP_RIGGING = (-1.7740, -0.0450, 0.012, 0.045)  # close-ups of the masts: (x, y, min width, max width)


# ----------------------------------------------------------------------------------------- iteration
# Every step below is a real add, subtract, multiply, divide or sqrt of separate real and imaginary
# arrays. IEEE 754 rounds those exactly the same on every CPU, which NumPy's complex multiply and
# abs do not (their SIMD loops use fused multiply-adds where the CPU has them): escape-time
# iteration amplifies a last-bit difference into a different picture, and a seed must draw the
# same fractal on every machine.
def _rotate(u, v, rot: float):
    """(x, y) of the screen offsets (u, v) turned by `rot` radians (math.cos/sin: scalar, exact)."""
    cos, sin = math.cos(rot), math.sin(rot)
    return u * cos - v * sin, u * sin + v * cos


def _as_complex(x: np.ndarray, y: np.ndarray, dtype=np.complex128) -> np.ndarray:
    out = np.empty(np.broadcast_shapes(np.shape(x), np.shape(y)), dtype)
    out.real, out.imag = x, y
    return out


def _plane(center, width, rot, flip, h, w, offsets=(0.0, 0.0), mirror=False):
    """Complex coordinates of pixel centres (+ sub-pixel offsets); `width` spans the mean side.
    `flip` turns the view upside down, `mirror` left-right."""
    px = width / np.sqrt(h * w)
    u = (np.arange(w, dtype=np.float64) + 0.5 + offsets[1] - w / 2) * px
    v = (h / 2 - np.arange(h, dtype=np.float64) - 0.5 - offsets[0]) * px
    if flip:
        v = -v
    if mirror:
        u = -u
    x, y = _rotate(u[None, :], v[:, None], rot)
    return _as_complex(center[0] + x, center[1] + y), px


def _points_plane(center, width, rot, flip, h, w, ys, xs, mirror=False):
    """Complex coordinates of arbitrary (fractional) pixel positions."""
    px = width / np.sqrt(h * w)
    u = (xs + 0.5 - w / 2) * px
    v = (h / 2 - ys - 0.5) * px
    if flip:
        v = -v
    if mirror:
        u = -u
    x, y = _rotate(u, v, rot)
    return _as_complex(center[0] + x, center[1] + y), px


def _cmul(ar, ai, br, bi):
    """(a * b) of complex numbers given as real and imaginary arrays."""
    return ar * br - ai * bi, ar * bi + ai * br


def iterate(kind: str, pts: np.ndarray, julia_c, max_iter: int, dtype=np.complex64, power: int = 2):
    """Escape-time iteration of flat `pts`.

    Returns (nu, normal, log_de): smooth iteration count (NaN inside the set), unit normal as complex64
    (0 inside) and log of the distance estimate (-inf inside). `dtype` (complex64 or complex128) sets
    the precision; the arithmetic runs on real and imaginary parts (see the note above).
    """
    # Any: NumPy's stubs cannot follow arithmetic on arrays whose float width is chosen at run time
    real: Any = np.float32 if np.dtype(dtype) == np.complex64 else np.float64
    n = pts.size
    nu = np.full(n, np.nan, np.float32)
    normal = np.zeros(n, np.complex64)
    log_de = np.full(n, -np.inf, np.float32)
    idx = np.arange(n)
    x: Any = pts.real.astype(real)
    y: Any = pts.imag.astype(real)
    dx: Any = np.ones(n, real)
    dy: Any = np.zeros(n, real)
    cx: Any
    cy: Any
    if kind == "julia":
        cx, cy = real(julia_c[0]), real(julia_c[1])
        add = 0
        it = 0
    else:
        cx, cy = x.copy(), y.copy()
        add = 1
        it = 1
        if kind == "mandelbrot" and power == 2:
            # main cardioid and period-2 bulb are inside: skip them outright
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            q = (x64 - 0.25) ** 2 + y64 * y64
            inside = (q * (q + (x64 - 0.25)) < 0.25 * y64 * y64) | ((x64 + 1) ** 2 + y64 * y64 < 0.0625)
            keep = ~inside
            idx, x, y, cx, cy, dx, dy = idx[keep], x[keep], y[keep], cx[keep], cy[keep], dx[keep], dy[keep]
    log_scale = np.zeros(idx.size, np.float32)
    log_r = np.log(BAILOUT)
    dead = 0
    chunk = CHUNK if power == 2 else 2  # higher powers overshoot faster: check more often
    # Brent-style cycle detection: compare z with a copy saved at iterations 16, 32, 64, ...; points
    # that return to it have fallen into an attracting cycle (inside the set) and stop costing time.
    sx, sy = x.copy(), y.copy()
    next_save = 16
    eps2 = (1e-5 if real == np.float32 else 1e-8) ** 2
    two = real(2.0)
    with np.errstate(all="ignore"):
        while it < max_iter and idx.size:
            for _ in range(chunk):
                if kind == "ship":
                    # z <- (|Re z| + i |Im z|)^2 + c; dz <- 2 (z dz, imaginary part signed by Im z^2) + 1
                    pr, pi = _cmul(x, y, dx, dy)
                    xy = x * y
                    pi *= np.sign(xy)
                    dx, dy = pr * two + 1, pi * two
                    x, y = x * x - y * y + cx, np.abs(xy * two) + cy
                elif power == 2:  # the hot loop: in place where it can be (a doubling t + t is exact)
                    pr = x * dx
                    pr -= y * dy
                    pi = x * dy
                    pi += y * dx
                    dx = np.add(pr, pr, out=pr)
                    if add:
                        dx += 1
                    dy = np.add(pi, pi, out=pi)
                    xy = x * y
                    x *= x
                    x -= y * y
                    x += cx
                    y = np.add(xy, xy, out=xy)
                    y += cy
                else:  # z^p + c (Julia sets with p-fold symmetry); powers by multiplication
                    zr, zi = _cmul(x, y, x, y)
                    if power != 3:
                        zr, zi = _cmul(zr, zi, x, y)
                    pr, pi = _cmul(zr, zi, dx, dy)
                    dx, dy = pr * real(power), pi * real(power)
                    if add:
                        dx += 1
                    zr, zi = _cmul(zr, zi, x, y)
                    x, y = zr + cx, zi + cy
            it += chunk
            r2 = x * x + y * y
            esc = np.nonzero(r2 > BAILOUT * BAILOUT)[0]
            if esc.size:
                ex, ey = x[esc].astype(np.float64), y[esc].astype(np.float64)
                edx, edy = dx[esc].astype(np.float64), dy[esc].astype(np.float64)
                lz = 0.5 * np.log(ex * ex + ey * ey)
                target = idx[esc]
                nu[target] = it - np.log(lz / log_r) / np.log(power)
                # unit normal: the direction of z / dz = z conj(dz) / |dz|^2
                ur, ui = ex * edx + ey * edy, ey * edx - ex * edy
                norm = np.maximum(np.sqrt(ur * ur + ui * ui), 1e-30)
                ok = np.isfinite(ur) & np.isfinite(ui)
                normal.real[target] = np.where(ok, ur / norm, 0)
                normal.imag[target] = np.where(ok, ui / norm, 0)
                log_de[target] = lz + np.log(lz) - 0.5 * np.log(edx * edx + edy * edy) - log_scale[esc]
                x[esc] = np.nan  # dead: NaN never escapes again
                y[esc] = np.nan
                dead += esc.size
            if it >= next_save:
                sx, sy = x.copy(), y.copy()
                next_save *= 2
            elif it > 16 and (it // chunk) % 2 == 0:
                ddx, ddy = x - sx, y - sy
                cyc = np.nonzero(ddx * ddx + ddy * ddy < eps2)[0]
                if cyc.size:
                    x[cyc] = np.nan  # inside: never escapes (nu stays NaN)
                    y[cyc] = np.nan
                    dead += cyc.size
            if dead > 0.3 * idx.size or (it % (CHUNK * 8) == 0):
                live = np.isfinite(x)
                if not live.all():
                    idx, x, y, dx, dy, log_scale, sx, sy = (
                        idx[live], x[live], y[live], dx[live], dy[live], log_scale[live], sx[live], sy[live])
                    if kind != "julia":
                        cx, cy = cx[live], cy[live]
                dead = 0
            if it % (chunk * 2) == 0:
                # keep |dz| in range: rescale and remember the factor (only DE needs it)
                mag = np.sqrt(dx * dx + dy * dy)
                big = np.nonzero(mag > 1e12)[0]
                if big.size:
                    dx[big] /= mag[big]
                    dy[big] /= mag[big]
                    log_scale[big] += np.log(mag[big].astype(np.float64)).astype(np.float32)
    return nu, normal, log_de


# ------------------------------------------------------------------------------------------ views
def _near_boundary(kind, rng, julia_c, lo, hi, box, n=2500, power=2):
    """Random points just outside the set (high but finite escape counts): where the detail is."""
    x = rng.uniform(box[0], box[1], n)
    y = rng.uniform(box[2], box[3], n)
    nu, _, _ = iterate(kind, x + 1j * y, julia_c, hi, np.complex128, power)
    ok = np.nonzero(np.isfinite(nu) & (nu >= lo))[0]
    if ok.size == 0:
        ok = np.nonzero(np.isfinite(nu))[0]
    order = ok[np.argsort(-nu[ok])]
    return [(float(x[i]), float(y[i])) for i in order[: max(1, len(order) // 2)]]


def _log_between(lo: float, hi: float, t: float) -> float:
    return math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * t)


def _julia_c(power: int, t: float, rng) -> tuple[float, float]:
    """A Julia parameter on the edge of the main component of z^p + c (the period-2 bulb too for
    p = 2), at position t in [0, 1): c where the attracting fixed point has multiplier
    mu = rho e^(2 pi i theta), so c moves continuously with t and every t gives a detailed set
    (rho < 1: connected, spiralling; rho > 1: just broken into dust)."""
    rho = float(rng.uniform(0.95, 1.03))
    if power == 2 and t >= 0.75:  # period-2 bulb: c = -1 + mu / 4
        mu = rho * cmath.exp(2j * math.pi * (t - 0.75) / 0.25)
        c = -1.0 + mu / 4.0
    else:
        mu = rho * cmath.exp(2j * math.pi * (t / 0.75 if power == 2 else t))
        z = (mu / power) ** (1.0 / (power - 1))  # the fixed point: p z^(p-1) = mu, z = z^p + c
        c = z - z ** power
    return float(c.real), float(c.imag)


def _candidate(kind, rng, where: float, zoom: float, power: int = 2):
    """One candidate view (centre, width, julia c) for a family at framing coordinates in [0, 1):
    `where` picks the neighbourhood (a curated spot and the direction of its offset, a Julia c, a
    Ship view: see `_ship_candidate`), `zoom` the width within the neighbourhood's range. Points found
    by `_near_boundary` and yes/no choices still come from the RNG: the former range over a
    continuous plane, the latter only split the seeds (a subset of well-spread points is too)."""
    if kind == "julia":
        if where < 0.7:
            c = _julia_c(power, where / 0.7, rng)
        else:
            box = (-1.9, 0.45, -1.1, 1.1) if power == 2 else (-1.4, 1.4, -1.4, 1.4)
            pts = _near_boundary("mandelbrot", rng, None, 25 if power == 2 else 20, 160, box, 1500, power)
            c = pts[rng.integers(len(pts))]
        if rng.random() < (0.35 if power == 2 else 0.25):  # the whole set (few: whole sets look alike)
            return (0.0, 0.0), (2.4 if power == 2 else 2.2) + 0.9 * zoom, c
        pts = _near_boundary("julia", rng, c, 30, 300, (-1.5, 1.5, -1.5, 1.5), 1500, power)
        return pts[rng.integers(len(pts))], _log_between(0.12 if power == 2 else 0.2, 1.3, zoom), c
    if kind == "ship":
        return _ship_candidate(rng, where, zoom)
    if where < 0.4:  # a curated spot; the rest search the edge
        slot = where / 0.4 * len(MANDEL_SPOTS)
        x, y, lo, hi = MANDEL_SPOTS[int(slot)]
        width = _log_between(lo, hi, zoom)
        # the offset from the spot turns with the slot's fraction: one spot, many framings
        angle = 2 * np.pi * (slot % 1.0)
        reach = width * 0.15 * float(rng.uniform(0.3, 1.3))
        return (x + reach * math.cos(angle), y + reach * math.sin(angle)), width, None
    pts = _near_boundary(kind, rng, None, 40, 400, (-2.0, 0.5, -1.2, 1.2))
    return pts[rng.integers(len(pts))], _log_between(0.0015, 0.25, zoom), None


def _ship_candidate(rng, where: float, zoom: float):
    """Burning Ship views: a ship (45%, any of its copies at one relative zoom), the masts close up
    (15%), or deep detail along the antenna (40%, zoomed in past the size of its copies)."""
    if where < 0.45:
        x, y, size = SHIP_SPOTS[int(where / 0.45 * len(SHIP_SPOTS))]
        return (x, y), size * _log_between(*SHIP_ZOOM, zoom), None
    if where < 0.6:
        x, y, lo, hi = SHIP_RIGGING
        return (x, y), _log_between(lo, hi, zoom), None
    x0 = -1.98 + 0.38 * (where - 0.6) / 0.4
    pts = _near_boundary("ship", rng, None, 40, 400, (x0, x0 + 0.05, -0.1, 0.02))
    return pts[rng.integers(len(pts))], _log_between(0.0015, 0.01, zoom), None


def _score(kind, centre, width, rot, flip, julia_c, aspect, power=2):
    """Preview the view at ~56 px and grade it; returns (score, escape-count 99th percentile)."""
    ph = max(12, int(round(56 / np.sqrt(aspect))))
    pw = max(12, int(round(56 * np.sqrt(aspect))))
    plane, px = _plane(centre, width, rot, flip, ph, pw)
    nu, _, log_de = iterate(kind, plane.ravel(), julia_c, 1500, np.complex128, power)
    inside = ~np.isfinite(nu)
    de_px = np.exp(log_de.astype(np.float64)) / px  # float64: the same on every CPU (float32 SIMD is not)
    near = np.mean(de_px < 1.0)  # busy: boundary passes within a preview pixel
    far = np.mean((de_px > 10.0) & ~inside)  # smooth, empty exterior
    f_in = inside.mean()
    score = -abs(near - 0.32) * 2.0 - max(0.0, f_in - 0.3) * 3.0 - max(0.0, far - 0.45) * 2.5
    if near < 0.04:
        score -= 2.0  # nothing there
    # composition: the detail should sit around the middle, not crowd one edge of the frame
    busy = (de_px < 3.0).reshape(ph, pw)
    if busy.any():
        yy, xx = np.nonzero(busy)
        off = np.hypot(yy.mean() / ph - 0.5, xx.mean() / pw - 0.5)
        score -= max(0.0, off - 0.15) * 3.0
    ext = nu[~inside]
    p99 = float(np.percentile(ext, 99)) if ext.size else 100.0
    return float(score), p99


def _pick_view(kind, rng, aspect, power=2, framing: tuple[float, ...] | None = None):
    """The view of a fractal: the framing point's candidate if it grades well, else the best of a
    few more whose neighbourhood comes from the RNG (zoom, turn and placement stay the framing's).

    framing = (where, zoom, turn, dx, dy) in [0, 1)^5: see `_candidate` for the first two; turn is
    the rotation, (dx, dy) where the subject sits in the frame (within +-12% of its width, +-18% for the Ship): compact
    subjects (whole Julia sets, mini-ships) otherwise share one centred layout."""
    where, zoom, turn, dx, dy = framing if framing is not None else tuple(float(x) for x in rng.random(5))
    if kind == "ship":
        rot = (turn - 0.5) * 0.8  # ships read upright: a tilt (+-23 deg), and a mirror for half of them
        mirror = bool(rng.random() < 0.5)
    else:
        rot = 2 * np.pi * turn / (power if kind == "julia" else 1)  # a p-fold symmetric set repeats
        mirror = False
    flip = kind == "ship"
    best = None
    for attempt in range(7):
        centre, width, julia_c = _candidate(kind, rng, where if attempt == 0 else float(rng.random()), zoom, power)
        # move the view so the subject sits off-centre by (dx, dy) of the frame (screen axes); the
        # Ship's mini-ships are copies of it, so size, tilt and placement are all that tell them apart
        shift = complex(0.5 - dx, dy - 0.5) * (0.36 if kind == "ship" else 0.24) * width * cmath.exp(1j * rot)
        centre = (centre[0] + shift.real, centre[1] + shift.imag)
        score, p99 = _score(kind, centre, width, rot, flip, julia_c, aspect, power)  # mirror-blind
        if best is None or score > best[0]:
            best = (score, centre, width, julia_c, p99)
        if score > -0.35:
            break  # good enough: the framing's own view wins whenever it is acceptable
    assert best is not None  # the loop ran at least once
    score, centre, width, julia_c, p99 = best
    return {"center": [float(centre[0]), float(centre[1])], "width": width, "rotation": float(rot),
            "mirror": bool(mirror),
            "julia_c": None if julia_c is None else [float(julia_c[0]), float(julia_c[1])],
            "max_iter": int(np.clip(p99 * 2.2 + 60, 120, 2400)), "view_score": round(score, 3)}


def make(rng: np.random.Generator, canvas: Canvas, kinds: list[str]) -> dict:
    kind = next((k for k in kinds if k in KINDS), None) or str(rng.choice(KINDS, p=[0.42, 0.44, 0.14]))
    power = int(rng.choice([2, 3, 4], p=[0.6, 0.28, 0.12])) if kind == "julia" else 2
    params = _looks(rng, kind, power)
    params.update(_pick_view(kind, rng, canvas.aspect, power, canvas.framing))
    return params


def _looks(rng: np.random.Generator, kind: str, power: int) -> dict:
    """Everything but the view: colouring style, its bands and lighting."""
    styles = STYLES if kind != "ship" else STYLES[1:]  # the ship's folded map has no smooth normal
    return {
        "kind": kind,
        "style": str(rng.choice(styles, p=[0.42, 0.33, 0.25] if kind != "ship" else [0.6, 0.4])),
        "freq": float(rng.uniform(0.5, 1.6)),
        "offset": float(rng.uniform(0, 1)),
        "light_angle": float(rng.uniform(0, 2 * np.pi)),
        "light_height": float(rng.uniform(0.7, 1.5)),
        "glow_radius": float(rng.uniform(0.6, 1.6)),
        "glow_colour": float(rng.uniform(0.4, 1.4)),
        "reverse": bool(rng.random() < 0.3),
        "flip": kind == "ship",
        "power": power,
    }


def vary(params: dict, rng: np.random.Generator, amount: float, canvas: Canvas, kinds: list[str]) -> dict:
    """Small amounts move the camera and colouring; large ones may pick a new view of the family."""
    out = dict(params)
    if amount <= 0:
        return out
    power = int(params.get("power", 2))
    fresh = _looks(rng, params["kind"], power)  # a new view is searched only when it is taken (below)
    for key in ("freq", "offset", "light_angle", "light_height", "glow_radius", "glow_colour"):
        if key in params and key in fresh:
            out[key] = blend(params[key], fresh[key], amount * (0.5 if key in ("freq", "offset") else 1.0), rng)
    if rng.random() < max(0.0, amount - 0.5) and fresh["style"] in (STYLES if params["kind"] != "ship" else STYLES[1:]):
        out["style"] = fresh["style"]
    if rng.random() < max(0.0, amount - 0.45) * 1.6:
        view = _pick_view(params["kind"], rng, canvas.aspect, power)
        for key in ("center", "width", "rotation", "mirror", "julia_c", "max_iter", "view_score"):
            out[key] = view[key]
        return out
    # same place, moved camera: zoom, turn and drift a little (in view widths, so it scales)
    out["width"] = float(params["width"] * np.exp(rng.normal(0, 0.35 * amount)))
    out["rotation"] = float(params["rotation"] + rng.normal(0, 0.6 * amount))
    drift = rng.normal(0, 0.12 * amount, 2) * params["width"]
    out["center"] = [params["center"][0] + float(drift[0]), params["center"][1] + float(drift[1])]
    if params.get("julia_c") is not None:
        jc = params["julia_c"]
        out["julia_c"] = [jc[0] + float(rng.normal(0, 0.01 * amount)), jc[1] + float(rng.normal(0, 0.01 * amount))]
    return out


def periodic(params: dict, canvas: Canvas) -> tuple[bool, bool]:
    return False, False


# ------------------------------------------------------------------------------------------ colour
def _colour(params, palette, nu, normal, log_de, px, scale, ground=18.0):
    """Linear RGB for samples from their smooth count, normal and distance estimate.

    The distance to the set (in pixels) drives a wide, soft falloff (a power curve, not a threshold):
    where filaments crowd closer than a pixel the tone settles to a uniform edge colour instead of
    flickering between neighbours, which is what reads as "noise" in naive renders.
    """
    inside = ~np.isfinite(nu)
    nu_safe = np.where(inside, 1.0, np.maximum(nu, 0.0))
    t = params["freq"] * np.log1p(nu_safe) + params["offset"]
    if params.get("reverse"):
        t = -t
    d = np.where(inside, 0.0, np.exp(np.minimum(log_de, 30.0)) / px)  # distance to the set, in pixels
    d = np.where(np.isfinite(d), d, 0.0).astype(np.float32)
    style = params["style"]
    if style == "relief":
        base = palette.cyclic(t)
        ang, hgt = params["light_angle"], params["light_height"]
        lam = (normal.real * np.cos(ang) + normal.imag * np.sin(ang) + hgt) / (1 + hgt)
        lam = np.clip(lam, 0, 1).astype(np.float32)
        shade = np.clip((d / (3.0 * scale)) ** 0.3, 0, 1)
        k = np.clip(0.1 + 0.95 * lam * (0.35 + 0.65 * shade), 0, 1.2)[:, None]
        # shadows fall to the palette's own dark end, not to grey: colours stay rich when shaded
        col = base * k + palette.at(0.04)[None, :] * np.clip(1 - k, 0, 1) * 0.8
        col += (0.3 * lam ** 30 * shade)[:, None] * palette.at(0.98)
        interior = palette.bg * 0.7 + palette.at(0.12) * 0.3
    elif style == "glow":
        # thin luminous filaments with a wide soft halo, over dark bands of the palette's low end
        r = params["glow_radius"] * scale
        core = np.exp(-d / r)
        halo = 1.0 / (1.0 + (d / (7.0 * r)) ** 1.5)
        band = 0.5 + 0.5 * np.cos(2 * np.pi * t)
        dark = palette.at(0.04 + 0.16 * band)
        fine = 0.5 + 0.5 * np.cos(2 * np.pi * t * 2.0)  # faster cycles reveal structure inside dense areas
        lit = palette.at(np.clip(0.22 + 0.3 * core + 0.5 * fine * params.get("glow_colour", 0.7), 0, 1))
        col = dark * (1 - core)[:, None] + lit * core[:, None] + palette.at(0.5) * (0.22 * halo * (1 - core))[:, None]
        interior = palette.bg * 0.8
    else:  # ink: smooth palette bands, the set drawn in soft dark ink
        base = palette.cyclic(t)
        shade = np.clip((d / (4.0 * scale)) ** 0.28, 0, 1)
        col = base * (0.06 + 0.94 * shade)[:, None]
        interior = palette.bg * 0.9 + palette.at(0.3) * 0.1
    if palette.name in DARK_GROUND and style != "glow":
        # neon/noir: only the set's surroundings carry light; the far exterior sinks to the dark ground
        col = col * (0.08 + 0.92 * np.exp(-d / (ground * scale)))[:, None]
    col = np.where(inside[:, None], interior[None, :].astype(np.float32), col)
    return col.astype(np.float32)


def draw(params: dict, canvas: Canvas) -> np.ndarray:
    h, w = canvas.height, canvas.width
    kind = params["kind"]
    centre, width, rot, flip = params["center"], params["width"], params["rotation"], params.get("flip", False)
    px = width / np.sqrt(h * w)
    dtype = np.complex64 if px > 2e-6 * (1.0 + abs(complex(*centre))) else np.complex128
    max_iter = int(params["max_iter"] * (0.75 + 0.25 * canvas.detail))
    scale = max(0.6, canvas.unit / 512.0)

    mirror = bool(params.get("mirror", False))
    plane, _ = _plane(centre, width, rot, flip, h, w, mirror=mirror)
    power = int(params.get("power", 2))
    nu, normal, log_de = iterate(kind, plane.ravel(), params.get("julia_c"), max_iter, dtype, power)
    # Dark-ground palettes light only the set's surroundings: in a busy view (the set near every
    # pixel) the fall-off distance shrinks with the view's median distance so a dark ground still shows.
    exterior = np.isfinite(nu)
    dist = np.exp(np.minimum(log_de[exterior], 30.0)) / px
    dist = np.where(np.isfinite(dist), dist, 0.0)  # as in _colour: no estimate counts as on the set
    ground = float(np.clip(0.6 * float(np.median(dist)) / scale, 3.0, 18.0)) if dist.size else 18.0
    col = _colour(params, canvas.palette, nu, normal, log_de, px, scale, ground).reshape(h, w, 3)

    # Adaptive supersampling: pixels that differ visibly from a neighbour get 4 more samples.
    lum = np.sqrt(col @ np.array([0.2126, 0.7152, 0.0722], np.float32))
    diff = np.zeros((h, w), np.float32)
    np.maximum(diff[:, 1:], np.abs(lum[:, 1:] - lum[:, :-1]), out=diff[:, 1:])
    np.maximum(diff[:, :-1], np.abs(lum[:, 1:] - lum[:, :-1]), out=diff[:, :-1])
    np.maximum(diff[1:], np.abs(lum[1:] - lum[:-1]), out=diff[1:])
    np.maximum(diff[:-1], np.abs(lum[1:] - lum[:-1]), out=diff[:-1])
    ys, xs = np.nonzero(diff > 0.045)
    budget = int(0.25 * h * w)
    order = np.argsort(-diff[ys, xs])
    ys, xs = ys[order[:budget]], xs[order[:budget]]
    if ys.size:
        # the most contrasting third gets four extra samples (rotated grid), the rest two (diagonal)
        n4 = ys.size // 3
        offs4 = ((-0.375, 0.125), (0.125, 0.375), (0.375, -0.125), (-0.125, -0.375))
        offs2 = ((-0.25, -0.25), (0.25, 0.25))
        sy = np.concatenate([ys[:n4] + oy for oy, _ in offs4] + [ys[n4:] + oy for oy, _ in offs2])
        sx = np.concatenate([xs[:n4] + ox for _, ox in offs4] + [xs[n4:] + ox for _, ox in offs2])
        pts, _ = _points_plane(centre, width, rot, flip, h, w, sy, sx, mirror)
        s_nu, s_n, s_de = iterate(kind, pts, params.get("julia_c"), max_iter, dtype, power)
        sub = _colour(params, canvas.palette, s_nu, s_n, s_de, px, scale, ground)
        k4 = n4 * 4
        acc = col[ys, xs].copy()
        acc[:n4] += sub[:k4].reshape(4, n4, 3).sum(axis=0)
        acc[n4:] += sub[k4:].reshape(2, ys.size - n4, 3).sum(axis=0)
        acc[:n4] /= 5.0
        acc[n4:] /= 3.0
        col[ys, xs] = acc
    return _settle_dense(col, log_de.reshape(h, w), px, canvas.tiling)


def _settle_dense(col: np.ndarray, log_de: np.ndarray, px: float, wrap: bool) -> np.ndarray:
    """Smooth the regions where the set's filaments are packed closer than a pixel.

    There the true colour varies faster than any affordable sampling can follow, and what shows is
    salt-and-pepper. The share of near-set pixels in each 3x3 neighbourhood says how packed a region
    is: packed regions are replaced by their local average (a calm texture), while an isolated
    filament (few near-set neighbours) keeps its crisp edge.
    """
    near = (np.exp(np.minimum(log_de, 30.0)) / px < 1.5).astype(np.float32)
    near = ndimage.uniform_filter(near, 3, mode="wrap" if wrap else "nearest")
    m = np.clip((near - 0.45) / 0.45, 0, 1) ** 1.5
    if not m.any():
        return col
    mode = "wrap" if wrap else "nearest"
    soft = ndimage.uniform_filter(col, (3, 3, 1), mode=mode)
    # averaging neighbours of different hues greys them out (magenta + cyan = lavender): give the
    # average back the neighbourhood's mean chroma so packed regions keep their colour
    weights = np.array([0.2126, 0.7152, 0.0722], np.float32)
    lum, slum = col @ weights, soft @ weights
    chroma = np.linalg.norm(col - lum[..., None], axis=-1)
    want = ndimage.uniform_filter(chroma, 3, mode=mode)
    have = np.linalg.norm(soft - slum[..., None], axis=-1)
    gain = np.clip(want / (have + 1e-6), 1.0, 3.0)[..., None]
    soft = np.maximum(slum[..., None] + (soft - slum[..., None]) * gain, 0)
    return col * (1 - m[..., None]) + soft * m[..., None]
