"""Live views: the procedural fractal and flow pieces as one algorithm shared by NumPy and the browser.

An interactive page (`echo_pipeline.media.interactive`) draws a `LiveView` live in JavaScript
(`media/interactive_assets/live.js`); `render_view` draws the same view here, so a view kept in the
browser ("Keep this view") re-renders as the same picture. The backend's own renderer cannot be
ported (adaptive supersampling, post effects, float32 SIMD), so this is a simpler twin of it that
keeps its look: the artifact's palette, framing and colouring. Every step is specified so that
JavaScript doubles and NumPy float64 compute it the same way, operation by operation (IEEE 754
add, subtract, multiply, divide and sqrt are exact-rounded in both; no fused multiply-adds, no
complex dtype, no float32); only `exp`, `log`, `pow`, `cos`, `cbrt` may differ in the last bit,
which moves a colour by at most one level on rare pixels. When the algorithm changes, bump
`LIVE_VERSION` and change live.js in the same commit.

Shared algorithm (live.js mirrors each function of the same name):

- Palette (`_lut`): the sRGB stops go to OKLab (Ottosson's matrices, written out term by term) and
  are interpolated with a slight ease into a 1024-entry linear-RGB table. `at(t)` reads entry
  floor(t * 1023 + 0.5) clamped to the table; `cyclic(t)` ping-pongs t. Output: linear -> sRGB
  curve, then byte = floor(clamp(v, 0, 1) * 255 + 0.5).
- Screen -> plane: px = scale / sqrt(w h); u = (j + 0.5 - w/2) px, v = (h/2 - i - 0.5) px, negated
  by `mirror` / `flip`, turned by `rotation`, plus the centre. `scale` is the view's width across
  the mean side (smaller = deeper zoom), as the backend's fractal `width`.
- Fractal: escape-time iteration of z^p + c (Julia: c fixed; Burning Ship: |Re z| + i |Im z|
  folded) with its derivative, bailout 256, one escape test per iteration. The derivative is
  rescaled by exactly 2^-200 whenever |dz|^2 > 2^400 (exact in binary, so no rounding differs).
  Mandelbrot's main cardioid and period-2 bulb are inside outright; Brent-style cycle detection
  (z saved at iterations 16, 32, 64, ...) stops interior points early. From the escape: the smooth
  count nu, the distance estimate (in pixels) and the surface normal z/dz colour the pixel in one
  of three styles (`ink`, `relief`, `glow`: the backend's colourings, one sample per pixel).
- Flow: a value-noise field on an integer lattice hashed with 32-bit integer math (`_hash`: JS
  Math.imul and >>> 0, NumPy uint32 wrap-around), fBm over `octaves` with a rotation between
  octaves, morphing with the time `t` (two noises mixed by cos/sin of t, drifting along the
  prevailing direction). Its angle ("noise") or curl ("curl") gives unit vectors on a coarse grid;
  particles seeded on a hash-jittered grid trace it with midpoint steps, depositing tapered
  weight and tone by bilinear splats; a 3x3 binomial blur, then light on dark (`silk`) or ink on
  paper (`ink`).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends.procedural.palettes import DARK_GROUND

LIVE_VERSION: Literal[1] = 1
RECORD_FORMAT = "echo-live-view"

FRACTAL_KINDS = ("mandelbrot", "julia", "ship")
FLOW_KINDS = ("noise", "curl")
FRACTAL_STYLES = ("ink", "relief", "glow")
FLOW_STYLES = ("silk", "ink")
MAX_LIVE_ITER = 5000  # a browser must be able to draw the view in seconds, not minutes

# Constants are written out (not computed) so that live.js uses the very same doubles.
LUT_SIZE = 1024
BAILOUT2 = 65536.0  # 256^2
LOG_BAILOUT = 5.545177444479562  # ln 256
LN2 = 0.6931471805599453
DZ_LIMIT = 2.0 ** 400  # |dz|^2 above this: rescale dz by DZ_SCALE (a power of two: exact)
DZ_SCALE = 2.0 ** -200
DZ_LOG_STEP = 200 * LN2
CYCLE_EPS2 = 1e-24
TWO_PI = 6.283185307179586
HASH_M1, HASH_M2, HASH_M3, HASH_M4 = 0x27D4EB2D, 0x165667B1, 0x85EBCA6B, 0xC2B2AE35
OCTAVE_SEED = 0x9E3779B9
FLOW_GRID = 80.0  # field grid cells across the mean side
FLOW_STEP = 200.0  # steps of a particle across the mean side

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
RGB = tuple[Unit, Unit, Unit]


class LiveView(BaseModel):
    """What a live piece shows: motif, camera, palette and the motif's parameters (JSON-able).

    Fractal fields: kind, centre, scale, rotation, flip/mirror, julia_c, power, max_iter, style and
    the colouring (colour_freq, colour_offset, reverse, light_*, glow_*). Flow fields: kind (the field
    type), freq, octaves, turns, direction, drift, phase, particles, steps, t and style. Both: seed
    (the noise seed of a flow; the artifact's seed for a fractal), palette, background, size.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    version: Literal[1] = LIVE_VERSION
    motif: Literal["fractal", "flow"]
    kind: Literal["mandelbrot", "julia", "ship", "noise", "curl"]
    style: Literal["ink", "relief", "glow", "silk"]
    seed: int = Field(ge=0, le=2**32 - 1)
    width: int = Field(ge=16, le=2048)
    height: int = Field(ge=16, le=2048)
    center_x: float = Field(default=0.0, ge=-1e6, le=1e6)
    center_y: float = Field(default=0.0, ge=-1e6, le=1e6)
    scale: float = Field(default=1.0, gt=1e-300, le=1e6, description="view width across the mean side")
    rotation: float = Field(default=0.0, ge=-1e3, le=1e3)
    flip: bool = False
    mirror: bool = False
    palette: tuple[RGB, ...] = Field(min_length=2, max_length=16, description="sRGB stops, dark -> light")
    background: RGB
    # fractal
    julia_c: tuple[float, float] | None = None
    power: int = Field(default=2, ge=2, le=4)
    max_iter: int = Field(default=400, ge=8, le=MAX_LIVE_ITER)
    colour_freq: float = Field(default=1.0, ge=-100, le=100)
    colour_offset: float = Field(default=0.0, ge=-100, le=100)
    reverse: bool = False
    light_angle: float = Field(default=0.8, ge=-100, le=100)
    light_height: float = Field(default=1.0, ge=0.0, le=100)
    glow_radius: float = Field(default=1.0, gt=0.0, le=100)
    glow_colour: float = Field(default=0.8, ge=0.0, le=10)
    # flow
    freq: float = Field(default=2.0, gt=0.0, le=100)
    octaves: int = Field(default=3, ge=1, le=6)
    turns: float = Field(default=1.0, ge=-20, le=20)
    direction: float = Field(default=0.0, ge=-100, le=100)
    drift: float = Field(default=0.0, ge=0.0, le=10)
    phase: tuple[float, float] = (0.0, 0.0)
    particles: int = Field(default=2000, ge=1, le=60000)
    steps: int = Field(default=100, ge=1, le=1000)
    t: float = Field(default=0.0, ge=-1e6, le=1e6)
    colour_shift: float = Field(default=0.0, ge=-100, le=100)
    space: float = Field(default=0.0, ge=0.0, le=0.95, description="share of the canvas left as empty ground")

    @model_validator(mode="after")
    def _consistent(self) -> LiveView:
        if self.motif == "fractal":
            if self.kind not in FRACTAL_KINDS:
                raise ValueError(f"a fractal's kind is one of {', '.join(FRACTAL_KINDS)}, not {self.kind}")
            if self.style not in FRACTAL_STYLES:
                raise ValueError(f"a fractal's style is one of {', '.join(FRACTAL_STYLES)}, not {self.style}")
            if self.kind == "julia" and self.julia_c is None:
                raise ValueError("a julia view needs julia_c")
            if self.kind != "julia" and self.power != 2:
                raise ValueError("only julia views have a power other than 2")
        else:
            if self.kind not in FLOW_KINDS:
                raise ValueError(f"a flow's kind is one of {', '.join(FLOW_KINDS)}, not {self.kind}")
            if self.style not in FLOW_STYLES:
                raise ValueError(f"a flow's style is one of {', '.join(FLOW_STYLES)}, not {self.style}")
        return self


# ------------------------------------------------------------------------------------------ from params
def view_from_params(params: dict[str, Any], width: int, height: int) -> LiveView:
    """The live view of a procedural artifact (its `info["params"]`): same motif kind, framing,
    colouring and palette, at `width` x `height`."""
    try:
        motif = params["motif"]
        mp = params["motif_params"]
        palette = params["palette"]
        common: dict[str, Any] = {
            "seed": int(params["seed"]) & 0xFFFFFFFF,
            "width": int(width), "height": int(height),
            "palette": tuple(tuple(float(c) for c in stop) for stop in palette["stops"]),
            "background": tuple(float(c) for c in palette["bg"]),
        }
        if motif == "fractal":
            kind = str(mp["kind"])
            style = str(mp.get("style", "ink"))
            if kind == "ship" and style == "relief":
                style = "glow"  # the Ship's folded map has no smooth normal (as in the backend)
            iters = int(mp.get("max_iter", 400) * (0.75 + 0.25 * float(params.get("detail", 1.0))))
            jc = mp.get("julia_c")
            return _view(motif="fractal", kind=kind, style=style, **common,
                         center_x=float(mp["center"][0]), center_y=float(mp["center"][1]),
                         scale=float(mp["width"]), rotation=float(mp.get("rotation", 0.0)),
                         flip=bool(mp.get("flip", False)), mirror=bool(mp.get("mirror", False)),
                         julia_c=None if jc is None else (float(jc[0]), float(jc[1])),
                         power=int(mp.get("power", 2)), max_iter=int(np.clip(iters, 8, MAX_LIVE_ITER)),
                         colour_freq=float(mp.get("freq", 1.0)), colour_offset=float(mp.get("offset", 0.0)),
                         reverse=bool(mp.get("reverse", False)),
                         light_angle=float(mp.get("light_angle", 0.8)),
                         light_height=float(mp.get("light_height", 1.0)),
                         glow_radius=float(mp.get("glow_radius", 1.0)),
                         glow_colour=float(mp.get("glow_colour", 0.8)))
        if motif == "flow":
            paper = (bool(mp.get("paper")) or bool(palette.get("light"))) and mp.get("style") == "ink"
            detail = float(params.get("detail", 1.0))
            unit = math.sqrt(width * height)
            # the backend's seed spacing (pixels at 512 px) at this size: the same density of strokes
            spacing = float(mp.get("spacing", 8.0)) * unit / 512.0 / math.sqrt(detail)
            particles = int(np.clip(round(width * height / (spacing * spacing)), 1, 60000))
            steps = int(np.clip(round(float(mp.get("length", 0.4)) * FLOW_STEP), 4, 1000))
            return _view(motif="flow", kind=str(mp.get("field", "noise")), style="ink" if paper else "silk",
                         **common, freq=float(mp["freq"]), octaves=int(np.clip(mp.get("octaves", 3), 1, 6)),
                         turns=float(mp.get("turns", 1.0)), direction=float(mp.get("direction", 0.0)),
                         drift=float(mp.get("drift", 0.0)),
                         phase=(float(mp.get("phase", [0, 0])[0]) * 8.0, float(mp.get("phase", [0, 0])[1]) * 8.0),
                         particles=particles, steps=steps, colour_freq=float(mp.get("colour_freq", 1.5)),
                         colour_shift=float(mp.get("colour_shift", 0.0)),
                         space=max(float(mp.get("space", 0.25)), 0.35 if palette.get("name") in DARK_GROUND else 0.0))
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"these are not a procedural artifact's params ({type(exc).__name__}: {exc})") from exc
    raise InvalidInputError(f"interactive pieces exist for the fractal and flow motifs, not {motif}")


def _view(**fields: Any) -> LiveView:
    try:
        return LiveView.model_validate_json(json.dumps(fields))
    except ValidationError as exc:
        raise InvalidInputError(f"bad live view: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "view"
    return f"{where}: {err.get('msg', 'invalid')}"


# --------------------------------------------------------------------------------------------- records
def record_from_view(view: LiveView, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-able record a kept view is saved as (what `echo-os render --view` reads); `source`
    names the artifact it came from."""
    return {"format": RECORD_FORMAT, "version": LIVE_VERSION, "source": dict(source or {}),
            "view": view.model_dump(mode="json")}


def view_from_record(json_text: str | bytes) -> LiveView:
    """The `LiveView` of a kept-view record (JSON text); InvalidInputError says what is wrong."""
    try:
        data = json.loads(json_text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"the view record is not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        raise InvalidInputError(f'not a kept-view record: expected an object with "format": "{RECORD_FORMAT}"')
    if data.get("version") != LIVE_VERSION:
        raise InvalidInputError(f"unsupported view record version {data.get('version')!r} (this is {LIVE_VERSION})")
    view = data.get("view")
    if not isinstance(view, dict):
        raise InvalidInputError('the view record has no "view" object')
    try:
        return LiveView.model_validate_json(json.dumps(view))
    except ValidationError as exc:
        raise InvalidInputError(f"bad view record: {_first_error(exc)}") from exc


# ---------------------------------------------------------------------------------------------- colour
def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _encode(lin: np.ndarray) -> np.ndarray:
    """Linear RGB -> sRGB bytes: clamp, curve, floor(v * 255 + 0.5)."""
    v = np.clip(lin, 0.0, 1.0)
    s = np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.power(v, 1 / 2.4) - 0.055)
    return np.clip(np.floor(s * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _lut(stops: tuple[RGB, ...]) -> np.ndarray:
    """(LUT_SIZE, 3) linear RGB gradient through the stops, interpolated in OKLab."""
    lin = _srgb_to_linear(np.asarray(stops, np.float64))
    r, g, b = lin[:, 0], lin[:, 1], lin[:, 2]
    lc = np.cbrt(0.4122214708 * r + 0.5363325363 * g + 0.0514459929 * b)
    mc = np.cbrt(0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b)
    sc = np.cbrt(0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b)
    lab_l = 0.2104542553 * lc + 0.7936177850 * mc - 0.0040720468 * sc
    lab_a = 1.9779984951 * lc - 2.4285922050 * mc + 0.4505937099 * sc
    lab_b = 0.0259040371 * lc + 0.7827717662 * mc - 0.8086757660 * sc
    n = len(stops)
    t = np.arange(LUT_SIZE, dtype=np.float64) * (n - 1) / (LUT_SIZE - 1)
    i = np.minimum(np.floor(t), n - 2).astype(np.int64)
    f = t - i
    f = f * f * (3 - 2 * f) * 0.35 + f * 0.65
    ll = lab_l[i] * (1 - f) + lab_l[i + 1] * f
    la = lab_a[i] * (1 - f) + lab_a[i + 1] * f
    lb = lab_b[i] * (1 - f) + lab_b[i + 1] * f
    l_ = ll + 0.3963377774 * la + 0.2158037573 * lb
    m_ = ll - 0.1055613458 * la - 0.0638541728 * lb
    s_ = ll - 0.0894841775 * la - 1.2914855480 * lb
    l3, m3, s3 = l_ * l_ * l_, m_ * m_ * m_, s_ * s_ * s_
    out = np.stack([4.0767416621 * l3 - 3.3077115913 * m3 + 0.2309699292 * s3,
                    -1.2684380046 * l3 + 2.6097574011 * m3 - 0.3413193965 * s3,
                    -0.0041960863 * l3 - 0.7034186147 * m3 + 1.7076147010 * s3], axis=-1)
    return np.clip(out, 0.0, 1.0)


def _at(lut: np.ndarray, t: np.ndarray) -> np.ndarray:
    idx = np.clip(np.floor(np.asarray(t, np.float64) * (LUT_SIZE - 1) + 0.5), 0, LUT_SIZE - 1).astype(np.int64)
    return lut[idx]


def _cyclic(lut: np.ndarray, t: np.ndarray) -> np.ndarray:
    return _at(lut, 1 - np.abs(1 - 2 * (t - np.floor(t))))


def _plane(view: LiveView, sx: np.ndarray, sy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plane coordinates of screen positions (pixel units, 0 = the left/top edge)."""
    w, h = view.width, view.height
    px = view.scale / math.sqrt(w * h)
    u = (sx - w / 2) * px
    v = (h / 2 - sy) * px
    if view.mirror:
        u = -u
    if view.flip:
        v = -v
    cos, sin = math.cos(view.rotation), math.sin(view.rotation)
    return view.center_x + (u * cos - v * sin), view.center_y + (u * sin + v * cos)


# --------------------------------------------------------------------------------------------- fractal
def _iterate(view: LiveView, x0: np.ndarray, y0: np.ndarray):
    """Escape-time iteration of flat plane points: (nu, log_de, normal_x, normal_y); nu NaN inside."""
    n = x0.size
    nu = np.full(n, np.nan)
    log_de = np.full(n, -np.inf)
    nrm_x, nrm_y = np.zeros(n), np.zeros(n)
    kind, power, julia = view.kind, view.power, view.kind == "julia"
    idx = np.arange(n)
    x, y = x0.astype(np.float64), y0.astype(np.float64)
    if julia:
        assert view.julia_c is not None
        cx: Any = view.julia_c[0]
        cy: Any = view.julia_c[1]
        it = 0
    else:
        cx, cy = x.copy(), y.copy()
        it = 1
        if kind == "mandelbrot":
            xq = x - 0.25
            q = xq * xq + y * y
            xb = x + 1
            keep = ~((q * (q + xq) < 0.25 * (y * y)) | (xb * xb + y * y < 0.0625))
            idx, x, y, cx, cy = idx[keep], x[keep], y[keep], cx[keep], cy[keep]
    dx, dy = np.ones(idx.size), np.zeros(idx.size)
    k = np.zeros(idx.size)
    sx, sy = x.copy(), y.copy()
    next_save = 16
    log_p = math.log(power)
    dead = 0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        while it < view.max_iter and idx.size:
            if kind == "ship":
                pr = x * dx - y * dy
                pi = x * dy + y * dx
                xy = x * y
                pi = pi * np.sign(xy)
                dx = 2 * pr + 1
                dy = 2 * pi
                x, y = x * x - y * y + cx, np.abs(2 * xy) + cy
            else:
                ar, ai = x, y
                for _ in range(power - 2):
                    ar, ai = ar * x - ai * y, ar * y + ai * x
                pr = ar * dx - ai * dy
                pi = ar * dy + ai * dx
                dx = power * pr
                dy = power * pi
                if not julia:
                    dx = dx + 1
                x, y = ar * x - ai * y + cx, ar * y + ai * x + cy
            it += 1
            r2 = x * x + y * y
            esc = np.nonzero(r2 > BAILOUT2)[0]
            if esc.size:
                ex, ey, edx, edy = x[esc], y[esc], dx[esc], dy[esc]
                lz = 0.5 * np.log(r2[esc])
                target = idx[esc]
                nu[target] = it - np.log(lz / LOG_BAILOUT) / log_p
                m2 = edx * edx + edy * edy
                log_de[target] = lz + np.log(lz) - 0.5 * np.log(m2) - k[esc] * DZ_LOG_STEP
                ur = ex * edx + ey * edy
                ui = ey * edx - ex * edy
                nn = np.sqrt(ur * ur + ui * ui)
                ok = nn > 0
                nrm_x[target] = np.where(ok, ur / np.where(ok, nn, 1.0), 0.0)
                nrm_y[target] = np.where(ok, ui / np.where(ok, nn, 1.0), 0.0)
                x[esc] = np.nan  # dead: NaN never escapes, rescales or cycles again
                y[esc] = np.nan
                dead += esc.size
            big = np.nonzero(dx * dx + dy * dy > DZ_LIMIT)[0]
            if big.size:
                dx[big] *= DZ_SCALE
                dy[big] *= DZ_SCALE
                k[big] += 1
            if it == next_save:
                sx, sy = x.copy(), y.copy()
                next_save *= 2
            else:
                ddx, ddy = x - sx, y - sy
                cyc = np.nonzero(ddx * ddx + ddy * ddy < CYCLE_EPS2)[0]
                if cyc.size:
                    x[cyc] = np.nan  # fell into an attracting cycle: inside
                    y[cyc] = np.nan
                    dead += cyc.size
            if dead > 0.25 * idx.size:
                live = np.isfinite(x)
                idx, x, y, dx, dy, k, sx, sy = idx[live], x[live], y[live], dx[live], dy[live], k[live], sx[live], \
                    sy[live]
                if not julia:
                    cx, cy = cx[live], cy[live]
                dead = 0
    return nu, log_de, nrm_x, nrm_y


def _fractal_colour(view: LiveView, lut: np.ndarray, nu, log_de, nrm_x, nrm_y) -> np.ndarray:
    """Linear RGB of samples, the backend's colourings (one sample per pixel, no post pass)."""
    unit = math.sqrt(view.width * view.height)
    px = view.scale / unit
    sc = max(0.6, unit / 512.0)
    inside = np.isnan(nu)
    nus = np.where(inside, 1.0, np.maximum(nu, 0.0))
    t = view.colour_freq * np.log1p(nus) + view.colour_offset
    if view.reverse:
        t = -t
    with np.errstate(over="ignore", invalid="ignore"):
        d = np.exp(np.minimum(log_de, 30.0)) / px
    d = np.where(inside | ~np.isfinite(d), 0.0, d)
    bg = _srgb_to_linear(np.asarray(view.background, np.float64))
    if view.style == "relief":
        base = _cyclic(lut, t)
        ca, sa, hgt = math.cos(view.light_angle), math.sin(view.light_angle), view.light_height
        lam = np.clip((nrm_x * ca + nrm_y * sa + hgt) / (1 + hgt), 0.0, 1.0)
        shade = np.clip(np.power(d / (3.0 * sc), 0.3), 0.0, 1.0)
        kk = np.clip(0.1 + 0.95 * lam * (0.35 + 0.65 * shade), 0.0, 1.2)
        col = base * kk[:, None] + _at(lut, np.array(0.04))[None, :] * (np.clip(1 - kk, 0.0, 1.0) * 0.8)[:, None]
        col = col + (0.3 * np.power(lam, 30.0) * shade)[:, None] * _at(lut, np.array(0.98))[None, :]
        interior = bg * 0.7 + _at(lut, np.array(0.12)) * 0.3
    elif view.style == "glow":
        r = view.glow_radius * sc
        core = np.exp(-d / r)
        halo = 1.0 / (1.0 + np.power(d / (7.0 * r), 1.5))
        band = 0.5 + 0.5 * np.cos(TWO_PI * t)
        dark = _at(lut, 0.04 + 0.16 * band)
        fine = 0.5 + 0.5 * np.cos(TWO_PI * (t * 2.0))
        lit = _at(lut, np.clip(0.22 + 0.3 * core + 0.5 * fine * view.glow_colour, 0.0, 1.0))
        col = dark * (1 - core)[:, None] + lit * core[:, None]
        col = col + _at(lut, np.array(0.5))[None, :] * (0.22 * halo * (1 - core))[:, None]
        interior = bg * 0.8
    else:  # ink
        base = _cyclic(lut, t)
        shade = np.clip(np.power(d / (4.0 * sc), 0.28), 0.0, 1.0)
        col = base * (0.06 + 0.94 * shade)[:, None]
        interior = bg * 0.9 + _at(lut, np.array(0.3)) * 0.1
    # One sample per pixel: within ~a pixel of the set the colour would flicker between neighbours,
    # so it settles to one edge tone there (the distance estimate as anti-aliasing).
    if view.style == "glow":
        edge = _at(lut, np.array(min(1.0, 0.52 + 0.25 * view.glow_colour)))
    else:
        edge = _at(lut, np.array(0.04)) * 0.9
    e = np.clip(d / (1.5 * sc), 0.0, 1.0)[:, None]
    col = col * e + edge[None, :] * (1 - e)
    return np.where(inside[:, None], interior[None, :], col)


def _render_fractal(view: LiveView, lut: np.ndarray) -> np.ndarray:
    w, h = view.width, view.height
    sx = np.arange(w, dtype=np.float64) + 0.5
    sy = np.arange(h, dtype=np.float64) + 0.5
    x, y = _plane(view, sx[None, :], sy[:, None])
    nu, log_de, nrm_x, nrm_y = _iterate(view, x.ravel(), y.ravel())
    return _fractal_colour(view, lut, nu, log_de, nrm_x, nrm_y).reshape(h, w, 3)


# ------------------------------------------------------------------------------------------------ flow
def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """A 32-bit integer hash of lattice points in [0, 1) (live.js: Math.imul and >>> 0)."""
    a = (ix.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)
    b = (iy.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)
    h = np.uint32(seed & 0xFFFFFFFF) ^ (a * np.uint32(HASH_M1)) ^ (b * np.uint32(HASH_M2))
    h ^= h >> np.uint32(15)
    h *= np.uint32(HASH_M3)
    h ^= h >> np.uint32(13)
    h *= np.uint32(HASH_M4)
    h ^= h >> np.uint32(16)
    return h.astype(np.float64) / 4294967296.0


def _value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smoothly interpolated lattice values in [-1, 1)."""
    fx0, fy0 = np.floor(x), np.floor(y)
    ix, iy = fx0.astype(np.int64), fy0.astype(np.int64)
    fx, fy = x - fx0, y - fy0
    ux = fx * fx * (3 - 2 * fx)
    uy = fy * fy * (3 - 2 * fy)
    a, b = _hash(ix, iy, seed), _hash(ix + 1, iy, seed)
    c, d = _hash(ix, iy + 1, seed), _hash(ix + 1, iy + 1, seed)
    top = a + (b - a) * ux
    bot = c + (d - c) * ux
    return (top + (bot - top) * uy) * 2 - 1


def _fbm(x: np.ndarray, y: np.ndarray, seed: int, octaves: int) -> np.ndarray:
    """Octaves of value noise, each turned and doubled (x, y) -> (1.6 x - 1.2 y, 1.2 x + 1.6 y)."""
    total = np.zeros(np.broadcast_shapes(x.shape, y.shape))
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total = total + amp * _value_noise(x, y, (seed + o * OCTAVE_SEED) & 0xFFFFFFFF)
        norm += amp
        amp *= 0.5
        x, y = 1.6 * x - 1.2 * y + 17.0, 1.2 * x + 1.6 * y - 9.0
    return total / norm


def _flow_scalar(view: LiveView, wx: np.ndarray, wy: np.ndarray, seed: int, freq: float, octaves: int):
    """The morphing noise at plane points and time t: two fields mixed by cos/sin (constant variance),
    drifting along the prevailing direction."""
    t = view.t
    nx = wx * freq + view.phase[0] - t * 0.15 * math.cos(view.direction)
    ny = wy * freq + view.phase[1] - t * 0.15 * math.sin(view.direction)
    ca, sa = math.cos(0.35 * t), math.sin(0.35 * t)
    return _fbm(nx, ny, seed, octaves) * ca + _fbm(nx + 5.2, ny + 1.3, (seed + 7919) & 0xFFFFFFFF, octaves) * sa


def _flow_field(view: LiveView) -> tuple[np.ndarray, np.ndarray, float]:
    """Unit vectors (screen axes) on a grid of cell size g pixels: (vx, vy, g), shape (gh + 1, gw + 1)."""
    w, h = view.width, view.height
    g = math.sqrt(w * h) / FLOW_GRID
    gw, gh = math.ceil(w / g), math.ceil(h / g)
    gx = np.arange(-1, gw + 2, dtype=np.float64) * g
    gy = np.arange(-1, gh + 2, dtype=np.float64) * g
    wx, wy = _plane(view, gx[None, :], gy[:, None])
    f = _flow_scalar(view, wx, wy, view.seed, view.freq, view.octaves)
    if view.kind == "curl":
        fdx = f[1:-1, 2:] - f[1:-1, :-2]
        fdy = f[2:, 1:-1] - f[:-2, 1:-1]
        vx, vy = fdy, -fdx  # along the contour lines: divergence-free streams
        m = np.sqrt(vx * vx + vy * vy)
        ok = m > 1e-12
        vx = np.where(ok, vx / np.where(ok, m, 1.0), 1.0)
        vy = np.where(ok, vy / np.where(ok, m, 1.0), 0.0)
    else:
        ang = view.direction + f[1:-1, 1:-1] * view.turns * TWO_PI - view.rotation
        vx, vy = np.cos(ang), np.sin(ang)
    dcx, dsy = math.cos(view.direction - view.rotation), math.sin(view.direction - view.rotation)
    vx = vx + view.drift * dcx
    vy = vy + view.drift * dsy
    m = np.sqrt(vx * vx + vy * vy) + 1e-12
    return vx / m, vy / m, g


def _lookup(vx: np.ndarray, vy: np.ndarray, g: float, px: np.ndarray, py: np.ndarray):
    """Bilinear field vector at screen positions (clamped to the grid), renormalised."""
    gh, gw = vx.shape[0] - 1, vx.shape[1] - 1
    fx, fy = px / g, py / g
    i0 = np.clip(np.floor(fy), 0, gh - 1).astype(np.int64)
    j0 = np.clip(np.floor(fx), 0, gw - 1).astype(np.int64)
    ax = np.clip(fx - j0, 0.0, 1.0)
    ay = np.clip(fy - i0, 0.0, 1.0)
    out = []
    for f in (vx, vy):
        top = f[i0, j0] + (f[i0, j0 + 1] - f[i0, j0]) * ax
        bot = f[i0 + 1, j0] + (f[i0 + 1, j0 + 1] - f[i0 + 1, j0]) * ax
        out.append(top + (bot - top) * ay)
    m = np.sqrt(out[0] * out[0] + out[1] * out[1]) + 1e-12
    return out[0] / m, out[1] / m


def _blur(a: np.ndarray) -> np.ndarray:
    """3x3 binomial blur (1 2 1), edges clamped."""
    p = np.pad(a, ((0, 0), (1, 1)), mode="edge")
    a = 0.25 * p[:, :-2] + 0.5 * p[:, 1:-1] + 0.25 * p[:, 2:]
    p = np.pad(a, ((1, 1), (0, 0)), mode="edge")
    return 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]


def _seeds(view: LiveView) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Particle start points on a hash-jittered grid, with their tone and weight."""
    w, h = view.width, view.height
    ny = max(1, math.floor(math.sqrt(view.particles * h / w) + 0.5))
    nx = max(1, math.floor(view.particles / ny + 0.5))
    grid_j, grid_i = np.meshgrid(np.arange(nx), np.arange(ny))  # row-major: particle p = i * nx + j
    ii, jj = grid_i.ravel(), grid_j.ravel()
    s = view.seed
    px = (jj + _hash(ii, jj, (s + 1) & 0xFFFFFFFF)) * (w / nx)
    py = (ii + _hash(ii, jj, (s + 2) & 0xFFFFFFFF)) * (h / ny)
    wx, wy = _plane(view, px, py)
    tone_noise = _fbm(wx * view.colour_freq + 3.1, wy * view.colour_freq - 4.7, (s + 3) & 0xFFFFFFFF, 2)
    tone = view.colour_shift + 0.5 + 0.8 * tone_noise + 0.1 * (_hash(ii, jj, (s + 4) & 0xFFFFFFFF) - 0.5)
    tone = tone - np.floor(tone)
    weight = 0.55 + 0.45 * _hash(ii, jj, (s + 5) & 0xFFFFFFFF)
    if view.space > 0:
        # negative space: a slow envelope thins the strokes out in some regions
        env = _fbm(wx * 1.3 + 11.0, wy * 1.3 - 6.0, (s + 6) & 0xFFFFFFFF, 2)
        weight = weight * np.power(np.clip((env - (view.space - 0.5)) / 0.2, 0.0, 1.0), 1.5)
    return px, py, tone, weight


def _render_flow(view: LiveView, lut: np.ndarray) -> np.ndarray:
    w, h = view.width, view.height
    vx, vy, g = _flow_field(view)
    px, py, tone, weight = _seeds(view)
    step = math.sqrt(w * h) / FLOW_STEP
    subs = math.ceil(step / 0.75)
    acc_w = np.zeros(h * w)
    acc_t = np.zeros(h * w)
    n_steps = view.steps
    for s in range(n_steps):
        ux, uy = _lookup(vx, vy, g, px, py)
        mx, my = px + ux * (0.5 * step), py + uy * (0.5 * step)
        ux, uy = _lookup(vx, vy, g, mx, my)
        qx, qy = px + ux * step, py + uy * step
        wk = weight * (np.sin(math.pi * ((s + 0.5) / n_steps)) ** 0.6)
        for sub in range(subs):
            a = sub / subs
            sx = px + (qx - px) * a - 0.5
            sy = py + (qy - py) * a - 0.5
            x0, y0 = np.floor(sx), np.floor(sy)
            fx, fy = sx - x0, sy - y0
            xi, yi = x0.astype(np.int64), y0.astype(np.int64)
            for oy, ox, cw in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy),
                               (1, 1, fx * fy)):
                xx, yy = xi + ox, yi + oy
                ok = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
                flat = (yy * w + xx)[ok]
                dep = (wk * cw)[ok]
                # add.at sums in order (unlike bincount's grouping): the same sums as live.js's loop
                np.add.at(acc_w, flat, dep)
                np.add.at(acc_t, flat, dep * tone[ok])
        px, py = qx, qy
    acc_w = _blur(acc_w.reshape(h, w))
    acc_t = _blur(acc_t.reshape(h, w))
    tone_px = acc_t / np.maximum(acc_w, 1e-9)
    density = acc_w * (step / subs)
    bg = _srgb_to_linear(np.asarray(view.background, np.float64))
    if view.style == "silk":
        colour = _at(lut, 0.35 + 0.65 * tone_px)
        ygrad = 1.0 - 0.35 * ((np.arange(h, dtype=np.float64) + 0.5) / h)
        base = (bg * 0.9 + _at(lut, np.array(0.1)) * 0.1)[None, None, :] * ygrad[:, None, None]
        light = (1.0 - np.exp(-density * 0.9))[..., None]
        return base * (1 - 0.9 * light) + colour * (light * 1.15)
    paper = _at(lut, np.array(0.97)) * 0.75 + np.array([0.08, 0.072, 0.06])
    alpha = (1.0 - np.exp(-density * 0.9))[..., None]
    return paper[None, None, :] * (1 - alpha) + _at(lut, 0.78 * tone_px) * alpha


def render_view(view: LiveView) -> Image.Image:
    """The picture of a live view, pixel for pixel what the interactive page draws (see the module
    docstring for the shared algorithm)."""
    lut = _lut(view.palette)
    lin = _render_fractal(view, lut) if view.motif == "fractal" else _render_flow(view, lut)
    return Image.fromarray(_encode(lin), "RGB")
