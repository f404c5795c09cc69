"""3D models from a concept image and a texture: a textured triangle mesh, GLB/OBJ export, a preview render.

Concept images here are often generative art (fractals, flow fields), not clean object shots, so the mesh
is made from whatever the image holds:

- ``"extrude"``: the foreground silhouette (Otsu on the colour distance from the border colour, morphological
  cleanup, largest component, holes filled) extruded to a closed solid with rounded edges whose thickness
  follows the local width (a blade stays thin); the concept's brightness adds a faint relief on the faces.
- ``"heightfield"``: a relief plaque: the top surface from the concept's luminance, fading to a flat frame,
  a flat back and four side walls; a closed solid.
- ``"auto"``: extrude when the silhouette is clean (a well separated, compact foreground on a plain border),
  otherwise the plaque.

The texture is UV-mapped by planar projection on the faces (one copy over the object's long side, so texels
stay square) and wrapped along the side walls; without a texture the concept image itself is projected.
Models use glTF's frame: Y up, the image plane on XY facing +Z, the long side 1 unit, centred at the origin.

`render_preview` is a small vectorised NumPy rasteriser (z-buffer, perspective-correct texturing, Lambert plus
Blinn-Phong specular and a sky reflection, 2x2 supersampling) so previews render headless, without OpenGL.
Everything is deterministic: the same inputs give the same mesh, the same GLB bytes and the same pixels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from echo_pipeline.errors import InvalidInputError

if TYPE_CHECKING:
    import trimesh

METHODS = ("auto", "extrude", "heightfield")
MIN_RESOLUTION, MAX_RESOLUTION = 8, 256
TRIANGLE_BUDGET = 50_000  # the grid is coarsened until a mesh fits
MAX_TEXTURE_SIDE = 4096
MIN_CONCEPT_SIDE = 16
_WORK_SIDE = 256  # the concept is analysed at this long side
_FRAME = 0.06  # heightfield: width of the flat frame around the relief, in model units
_PLINTH = 0.035  # heightfield: thickness under the lowest point of the relief
_INFLATE = 0.45  # extrude: half-thickness per unit of local half-width (a 1:2.2 cross-section)


@dataclass(frozen=True)
class MeshResult:
    """A textured mesh and how it was made.

    `mesh` is a `trimesh.Trimesh` with `TextureVisuals` (UVs in [0, 1] and a PBR material whose base colour
    texture is `texture`), or with vertex colours when `texture` is None (image-to-3D models). `stats`:
    vertices, triangles, watertight (of the welded geometry: UV seams split vertices, not the surface),
    bounds ([[min x, y, z], [max x, y, z]]), plus method-specific numbers (grid, silhouette scores).
    """

    mesh: trimesh.Trimesh
    method: str
    texture: Image.Image | None
    stats: dict[str, Any] = field(default_factory=dict)


# --- input checks -------------------------------------------------------------------------------------------


def _check_image(image: Any, what: str, min_side: int) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise InvalidInputError(f"{what} must be a PIL image, not {type(image).__name__}")
    w, h = image.size
    if min(w, h) < min_side:
        raise InvalidInputError(f"{what} is {w}x{h}; each side must be at least {min_side} px")
    if max(w, h) > MAX_TEXTURE_SIDE:
        raise InvalidInputError(f"{what} is {w}x{h}; the longest side may be at most {MAX_TEXTURE_SIDE} px")
    return image


def _rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB (alpha composited on white, so transparent cut-outs keep a plain background)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return image.convert("RGB")


def _check_options(method: Any, resolution: Any, depth: Any) -> None:
    if method not in METHODS:
        raise InvalidInputError(f"mesh method {method!r} is not one of {', '.join(METHODS)}")
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise InvalidInputError(f"mesh resolution must be an integer, not {resolution!r}")
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise InvalidInputError(f"mesh resolution {resolution} is outside {MIN_RESOLUTION}..{MAX_RESOLUTION}")
    if isinstance(depth, bool) or not isinstance(depth, int | float) or not math.isfinite(depth):
        raise InvalidInputError(f"mesh depth must be a number, not {depth!r}")
    if not 0.01 <= depth <= 1.0:
        raise InvalidInputError(f"mesh depth {depth} is outside 0.01..1 (a fraction of the long side)")


# --- image analysis -----------------------------------------------------------------------------------------


def _work_array(concept: Image.Image) -> np.ndarray:
    """The concept as float RGB in [0, 1], its long side `_WORK_SIDE` (analysis does not depend on input size)."""
    w, h = concept.size
    scale = _WORK_SIDE / max(w, h)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return np.asarray(concept.resize(size, Image.Resampling.LANCZOS), dtype=np.float64) / 255.0


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2126, 0.7152, 0.0722])


def _otsu(values: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Otsu's threshold of `values` and its separability (between-class / total variance, 0..1)."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-9:
        return hi, 0.0
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    p = hist.astype(np.float64) / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centres)
    total_mu = mu[-1]
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mu * w0 - mu) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = 0.0
    k = int(np.argmax(between[:-1]))
    total_var = float((p * (centres - total_mu) ** 2).sum())
    return float(edges[k + 1]), float(between[k] / total_var) if total_var > 0 else 0.0


@dataclass(frozen=True)
class Silhouette:
    """The foreground mask of a concept image and how clean it is (`clean` decides "auto")."""

    mask: np.ndarray
    separability: float
    coverage: float
    largest_share: float
    border_touch: float
    border_noise: float

    @property
    def clean(self) -> bool:
        return (self.separability >= 0.75 and 0.03 <= self.coverage <= 0.75 and self.largest_share >= 0.85
                and self.border_touch <= 0.02 and self.border_noise <= 0.35)

    def scores(self) -> dict[str, float]:
        return {k: round(float(getattr(self, k)), 4) for k in
                ("separability", "coverage", "largest_share", "border_touch", "border_noise")}


def segment(rgb: np.ndarray) -> Silhouette:
    """Foreground of an RGB float image: pixels far (in luma/chroma) from the median border colour.

    Otsu splits the smoothed distance map; an opening and closing remove specks and bridge hairline gaps,
    the largest 4-connected component is kept and its holes filled.
    """
    from scipy import ndimage

    y = _luminance(rgb)
    feats = np.stack([y, (rgb[..., 2] - y) * 0.8, (rgb[..., 0] - y) * 0.8], axis=-1)
    h, w = y.shape
    b = max(2, round(min(h, w) * 0.02))
    border = np.zeros((h, w), dtype=bool)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    ref = np.median(feats[border], axis=0)
    # A 3x3 median quiets noise and JPEG ringing without the halo a blur would add around the object.
    dist = ndimage.median_filter(np.sqrt(((feats - ref) ** 2).sum(-1)), size=3, mode="nearest")
    threshold, separability = _otsu(dist)
    border_noise = float(np.percentile(dist[border], 90) / threshold) if threshold > 1e-6 else 1.0
    # On a plain backdrop everything clearly off the border colour is object, even parts close to it in
    # colour (a pale blade on pale grey) that Otsu's two classes would put with the background.
    floor = max(4.0 * float(np.percentile(dist[border], 99)), 0.03)
    if border_noise <= 0.35 and floor < threshold:
        threshold = floor
    fg = dist > threshold
    disk = _disk(2)
    fg = ndimage.binary_closing(ndimage.binary_opening(fg, disk), disk, border_value=0)
    labels, n = ndimage.label(fg)
    if n == 0:
        empty = np.zeros((h, w), dtype=bool)
        return Silhouette(empty, separability, 0.0, 0.0, 0.0, border_noise)
    sizes = np.bincount(labels.ravel())[1:]
    keep = int(np.argmax(sizes)) + 1
    mask = ndimage.binary_fill_holes(labels == keep)
    return Silhouette(
        mask=mask, separability=separability, coverage=float(mask.mean()),
        largest_share=float(sizes[keep - 1] / sizes.sum()), border_touch=float(mask[border].mean()),
        border_noise=border_noise,
    )


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return np.asarray(xx * xx + yy * yy <= radius * radius + 0.5)


def _sample(field_: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear sample of a 2D array at float pixel coordinates (pixel centres at integers), edge-clamped."""
    h, w = field_.shape[:2]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2 if w > 1 else 0)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2 if h > 1 else 0)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    if field_.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = field_[y0, x0] * (1 - fx) + field_[y0, x1] * fx
    bottom = field_[y1, x0] * (1 - fx) + field_[y1, x1] * fx
    return np.asarray(top * (1 - fy) + bottom * fy)


def _relief(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Luminance smoothed by `sigma` px and stretched to [0, 1] between its 2nd and 98th percentiles."""
    from scipy import ndimage

    lum = ndimage.gaussian_filter(_luminance(rgb), sigma)
    lo, hi = np.percentile(lum, [2, 98])
    if hi - lo < 1e-6:
        return np.zeros_like(lum)
    return np.asarray(np.clip((lum - lo) / (hi - lo), 0.0, 1.0))


# --- mesh construction --------------------------------------------------------------------------------------


def _fill_pinches(cells: np.ndarray) -> np.ndarray:
    """Fill cells so that no two cells touch only at a corner (a pinched vertex would not be manifold)."""
    from scipy import ndimage

    cells = cells.copy()
    for _ in range(64):
        a, b = cells[:-1, :-1], cells[:-1, 1:]
        c, d = cells[1:, :-1], cells[1:, 1:]
        diag = a & d & ~b & ~c  # TL and BR set: fill TR
        anti = b & c & ~a & ~d  # TR and BL set: fill TL
        if not diag.any() and not anti.any():
            break
        cells[:-1, 1:] |= diag
        cells[:-1, :-1] |= anti
        cells = ndimage.binary_fill_holes(cells)
    return np.asarray(cells)


def _largest_component(cells: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(cells)
    if n <= 1:
        return cells
    sizes = np.bincount(labels.ravel())[1:]
    return np.asarray(labels == int(np.argmax(sizes)) + 1)


def _cell_grid(mask: np.ndarray, cols: int, rows: int) -> np.ndarray:
    """The mask box-averaged onto a `rows` x `cols` grid of cells, a cell inside when at least half is."""
    img = Image.fromarray((mask * 255).astype(np.uint8))
    return np.asarray(img.resize((cols, rows), Image.Resampling.BOX)) >= 128


def _extrude(rgb: np.ndarray, sil: Silhouette, resolution: int, depth: float, concept_uv: bool) -> dict[str, Any]:
    """Vertices, faces and UVs of the silhouette extruded to a closed solid with rounded edges.

    The cells of a grid over the silhouette's box form the front and back faces; the rim vertices move onto
    the smooth contour of the pixel mask, and a short wall joins the faces and shares their rim vertices
    (a closed surface without UV seams). The faces bulge with an elliptic cross-section that follows the
    local half-width, capped at `depth`, so narrow parts (a blade) come out thinner than broad ones.
    `concept_uv`: UVs are the vertices' places in the concept image (the concept is the texture), else the
    silhouette's box holds one copy of the texture (square texels).
    """
    from scipy import ndimage

    ys, xs = np.nonzero(sil.mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box_w, box_h = x1 - x0, y1 - y0
    long_px = max(box_w, box_h)
    res = resolution
    while True:
        pitch = long_px / res  # work pixels per cell
        cols, rows = max(2, math.ceil(box_w / pitch)), max(2, math.ceil(box_h / pitch))
        # one empty cell all round, so every rim vertex sees the outside
        crop = np.zeros((rows * 4 + 8, cols * 4 + 8), dtype=bool)
        sub = sil.mask[y0:y1, x0:x1]
        sub_img = Image.fromarray((sub * 255).astype(np.uint8)).resize((cols * 4, rows * 4), Image.Resampling.BOX)
        crop[4:-4, 4:-4] = np.asarray(sub_img) >= 128
        cells = _cell_grid(crop, cols + 2, rows + 2)
        cells = _largest_component(_fill_pinches(ndimage.binary_fill_holes(cells)))
        cells[0, :], cells[-1, :], cells[:, 0], cells[:, -1] = False, False, False, False
        n_cells = int(cells.sum())
        if n_cells * 4 + 4 * (rows + cols) * 2 <= TRIANGLE_BUDGET or res <= MIN_RESOLUTION:
            break
        res = max(MIN_RESOLUTION, int(res * math.sqrt(TRIANGLE_BUDGET / (n_cells * 4 + 8 * (rows + cols))) * 0.97))
    if n_cells < 4:
        raise InvalidInputError("the concept image has no usable silhouette at this resolution: "
                                "use method='heightfield', or a larger resolution")
    gr, gc = cells.shape  # cells, including the empty border
    # Lattice vertex (i, j) is the corner shared by cells (i-1..i, j-1..j); its position in work pixels:
    unit = 1.0 / long_px  # model units per work pixel (the silhouette's long side is 1)
    vy_px = y0 + (np.arange(gr + 1) - 1) * (box_h / rows)
    vx_px = x0 + (np.arange(gc + 1) - 1) * (box_w / cols)
    padded = np.pad(cells, 1)
    around = np.stack([padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]])  # (4, gr+1, gc+1)
    used = around.any(0)
    interior = around.all(0)
    rim = used & ~interior

    # Smooth outline: move rim vertices onto the 0.5 level of the blurred pixel mask (Newton steps).
    pitch_px = box_w / cols
    smooth = ndimage.gaussian_filter(sil.mask.astype(np.float64), max(0.8, 0.6 * pitch_px)) - 0.5
    gy, gx = np.gradient(smooth)
    ri, rj = np.nonzero(rim)
    py, px = vy_px[ri].astype(np.float64), vx_px[rj].astype(np.float64)
    oy, ox = py.copy(), px.copy()
    for _ in range(3):
        f = _sample(smooth, py, px)
        dy, dx = _sample(gy, py, px), _sample(gx, py, px)
        g2 = dy * dy + dx * dx
        ok = g2 > 1e-8
        step = np.where(ok, f / np.where(ok, g2, 1.0), 0.0)
        py, px = py - step * dy, px - step * dx
        off = np.hypot(py - oy, px - ox)
        lim = 0.5 * pitch_px
        scale = np.where(off > lim, lim / np.maximum(off, 1e-12), 1.0)
        py, px = oy + (py - oy) * scale, ox + (px - ox) * scale
    pos_y = np.broadcast_to(vy_px[:, None], used.shape).astype(np.float64).copy()
    pos_x = np.broadcast_to(vx_px[None, :], used.shape).astype(np.float64).copy()
    pos_y[ri, rj], pos_x[ri, rj] = py, px

    # Height: the silhouette is inflated with an elliptic cross-section whose depth follows the local
    # half-width R (a blade comes out thin, a pommel round), softly capped at the thickness; a faint relief
    # from the concept's luminance on the broad faces.
    half = depth / 2
    wall = 0.06 * half
    inside_px = ndimage.distance_transform_edt(np.pad(sil.mask, 1))[1:-1, 1:-1]
    r_max = float(inside_px.max())
    local = ndimage.maximum_filter(inside_px, size=int(2 * r_max) | 1)
    local = np.maximum(ndimage.gaussian_filter(local, max(1.0, r_max / 3)), inside_px)
    d = _sample(inside_px, pos_y, pos_x) * unit
    r_loc = _sample(local, pos_y, pos_x) * unit
    d[rim] = 0.0
    d = np.minimum(d, r_loc)
    swell = _INFLATE * np.sqrt(np.maximum(d * (2 * r_loc - d), 0.0)) / (half - wall)
    z = wall + (half - wall) * swell / (1 + swell ** 4) ** 0.25
    lum = _relief(rgb, max(1.0, pitch_px))
    t = np.clip(d / np.maximum(r_loc, 1e-9), 0.0, 1.0)
    z = z + 0.1 * (z - wall) * (_sample(lum, pos_y, pos_x) - 0.5) * t

    # Vertex table: top copies of all used lattice points, bottom copies of the interior ones and of the rim.
    vid_top = np.full(used.shape, -1, dtype=np.int64)
    vid_top[used] = np.arange(int(used.sum()))
    n_top = int(used.sum())
    x_m = (pos_x - x0) * unit
    y_m = (y1 - pos_y) * unit  # image rows run down, Y runs up
    xyz_top = np.stack([x_m[used], y_m[used], z[used]], axis=-1)
    xyz_bot = xyz_top * np.array([1.0, 1.0, -1.0])
    vertices = np.concatenate([xyz_top, xyz_bot])
    if concept_uv:
        h_px, w_px = sil.mask.shape
        uv_top = np.stack([(pos_x[used] + 0.5) / w_px, 1.0 - (pos_y[used] + 0.5) / h_px], axis=-1)
        uv_top = np.clip(uv_top, 0.0, 1.0)
    else:  # planar projection, long side = one texture copy
        uv_top = np.stack([x_m[used], y_m[used]], axis=-1)
        uv_top = (uv_top - uv_top.min(0)) / max(float(np.ptp(uv_top, axis=0).max()), 1e-9)
    uv = np.concatenate([uv_top, uv_top])

    ci, cj = np.nonzero(cells)
    tl, tr = np.stack([ci, cj], -1), np.stack([ci, cj + 1], -1)
    bl, br = np.stack([ci + 1, cj], -1), np.stack([ci + 1, cj + 1], -1)
    # Alternate the split diagonal like a chequerboard, so bevels do not all lean one way.
    flip = ((ci + cj) % 2).astype(bool)

    def ids(table: np.ndarray, corner: np.ndarray) -> np.ndarray:
        return np.asarray(table[corner[:, 0], corner[:, 1]])

    a, b, c, e = ids(vid_top, bl), ids(vid_top, br), ids(vid_top, tr), ids(vid_top, tl)
    t1 = np.where(flip[:, None], np.stack([a, b, c], -1), np.stack([a, b, e], -1))
    t2 = np.where(flip[:, None], np.stack([a, c, e], -1), np.stack([b, c, e], -1))
    top = np.concatenate([t1, t2])
    bottom = (top + n_top)[:, ::-1]
    # Walls: every top edge without a twin is on the outline; join it to its bottom copy (outward winding).
    edges = np.concatenate([top[:, [0, 1]], top[:, [1, 2]], top[:, [2, 0]]])
    n_v = len(vertices)
    keys = edges[:, 0] * n_v + edges[:, 1]
    twins = edges[:, 1] * n_v + edges[:, 0]
    outline = edges[~np.isin(keys, twins)]
    oa, ob = outline[:, 0], outline[:, 1]
    walls = np.concatenate([np.stack([ob, oa, oa + n_top], -1), np.stack([ob, oa + n_top, ob + n_top], -1)])
    faces = np.concatenate([top, bottom, walls])
    return {"vertices": vertices, "faces": faces, "uv": uv, "grid": [int(gc - 2), int(gr - 2)],
            "resolution": int(res), "outline_edges": int(len(outline))}


def _heightfield(rgb: np.ndarray, resolution: int, depth: float, concept_uv: bool) -> dict[str, Any]:
    """Vertices, faces and UVs of a relief plaque: luminance relief on top, a flat back, four side walls.

    The relief fades into a flat frame at the edges (a smooth bevel, no cliff at the walls); the back is a
    fan from its centre over the perimeter vertices, so the solid closes without T-junctions.
    `concept_uv`: the face maps the whole concept image, else one texture copy spans the long side.
    """
    h_px, w_px = rgb.shape[:2]
    res = resolution
    while True:
        if w_px >= h_px:
            nx, ny = res, max(2, round(res * h_px / w_px))
        else:
            nx, ny = max(2, round(res * w_px / h_px)), res
        n_tris = 2 * nx * ny + 4 * (nx + ny) + 2 * (nx + ny)
        if n_tris <= TRIANGLE_BUDGET or res <= MIN_RESOLUTION:
            break
        res = max(MIN_RESOLUTION, int(res * math.sqrt(TRIANGLE_BUDGET / n_tris) * 0.97))
    width, height = nx / max(nx, ny), ny / max(nx, ny)
    xs = np.linspace(0.0, width, nx + 1)
    ys = np.linspace(height, 0.0, ny + 1)  # row 0 is the image's top
    gx, gy = np.meshgrid(xs, ys)
    pitch_px = max(w_px, h_px) / max(nx, ny)
    lum = _relief(rgb, max(1.5, pitch_px))
    rows_px = (height - gy) / height * (h_px - 1)
    cols_px = gx / width * (w_px - 1)
    hgt = _sample(lum, rows_px, cols_px)
    edge = np.minimum.reduce([gx, width - gx, gy, height - gy])
    s = np.clip(edge / _FRAME, 0.0, 1.0)
    fade = s * s * (3 - 2 * s)
    z_top = _PLINTH + depth * hgt * fade
    top_xyz = np.stack([gx, gy, z_top], -1).reshape(-1, 3)
    uv_scale = np.array([1 / width, 1 / height]) if concept_uv else np.ones(2)
    top_uv = np.stack([gx, gy], -1).reshape(-1, 2) * uv_scale  # planar projection
    vid = np.arange((ny + 1) * (nx + 1)).reshape(ny + 1, nx + 1)
    a, b = vid[1:, :-1].ravel(), vid[1:, 1:].ravel()  # bottom-left, bottom-right of each cell (y down a row)
    c, e = vid[:-1, 1:].ravel(), vid[:-1, :-1].ravel()  # top-right, top-left
    ci, cj = np.divmod(np.arange(nx * ny), nx)
    flip = ((ci + cj) % 2).astype(bool)[:, None]
    t1 = np.where(flip, np.stack([a, b, c], -1), np.stack([a, b, e], -1))
    t2 = np.where(flip, np.stack([a, c, e], -1), np.stack([b, c, e], -1))
    top_faces = np.concatenate([t1, t2])

    # Perimeter, counter-clockwise seen from +Z, starting at the bottom-left corner: bottom, right, top, left.
    sides = [vid[ny, :], vid[::-1, nx], vid[0, ::-1], vid[:, 0]]
    parts_xyz, parts_uv, wall_faces, rims = [], [], [], []
    base = len(top_xyz)
    for side in sides:
        p = top_xyz[side]
        run = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p[:, :2], axis=0), axis=1))])
        n = len(side)
        up = p.copy()
        down = p * np.array([1.0, 1.0, 0.0])
        parts_xyz += [up, down]
        # wrap the tileable texture along the wall at the faces' texel scale (one copy per unit)
        parts_uv += [np.stack([run, p[:, 2]], -1), np.stack([run, np.zeros(n)], -1)]
        k = np.arange(n - 1)
        u0, u1, d0, d1 = base + k, base + k + 1, base + n + k, base + n + k + 1
        wall_faces += [np.stack([u0, d0, d1], -1), np.stack([u0, d1, u1], -1)]
        rims.append(down[:-1])
        base += 2 * n
    # Back: a fan over the perimeter (each side's last point is the next side's first).
    loop = np.concatenate(rims)
    centre = np.array([[width / 2, height / 2, 0.0]])
    back_xyz = np.concatenate([centre, loop])
    back_uv = np.stack([width - back_xyz[:, 0], back_xyz[:, 1]], -1) * uv_scale  # mirrored, as seen from behind
    m = len(loop)
    k = np.arange(m)
    back_faces = np.stack([np.zeros(m, dtype=np.int64), 1 + (k + 1) % m, 1 + k], -1) + base
    vertices = np.concatenate([top_xyz, *parts_xyz, back_xyz])
    uv = np.concatenate([top_uv, *parts_uv, back_uv])
    faces = np.concatenate([top_faces, *wall_faces, back_faces])
    return {"vertices": vertices, "faces": faces, "uv": uv, "grid": [int(nx), int(ny)], "resolution": int(res)}


def _bleed(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """`image` with every pixel outside `mask` (shrunk by 2 px) set to the nearest inside pixel's colour.

    The usual edge padding of a texture atlas: texels at and past the silhouette's rim, and the mipmaps a
    viewer makes, then show the object's colours, not a fringe of backdrop.
    """
    from scipy import ndimage

    w, h = image.size
    full = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BILINEAR)) >= 128
    inside = ndimage.binary_erosion(full, iterations=2 * max(1, round(max(w, h) / _WORK_SIDE)))
    if not inside.any():
        return image
    rows, cols = ndimage.distance_transform_edt(~inside, return_distances=False, return_indices=True)
    return Image.fromarray(np.asarray(image)[rows, cols], "RGB")


def _welded_watertight(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether the surface is closed once vertices at the same position are one (UV seams split them)."""
    import trimesh

    rounded = np.round(vertices, 6)
    _, inverse = np.unique(rounded, axis=0, return_inverse=True)
    welded = trimesh.Trimesh(vertices=vertices, faces=inverse.reshape(-1)[faces], process=False)
    return bool(welded.is_watertight)


def textured_mesh(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, texture: Image.Image,
                  name: str = "echo_model") -> trimesh.Trimesh:
    """A `trimesh.Trimesh` with `uv` and a PBR material whose base colour texture is `texture`."""
    import trimesh
    from trimesh.visual.material import PBRMaterial
    from trimesh.visual.texture import TextureVisuals

    material = PBRMaterial(name=name, baseColorTexture=texture, baseColorFactor=[255, 255, 255, 255],
                           metallicFactor=0.35, roughnessFactor=0.45, doubleSided=False)
    visual = TextureVisuals(uv=np.clip(uv, 0.0, 1.0), material=material)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)
    _ = mesh.vertex_normals  # cache: exported and used by the preview
    return mesh


def mesh_stats(mesh: trimesh.Trimesh, watertight: bool) -> dict[str, Any]:
    return {
        "vertices": int(len(mesh.vertices)),
        "triangles": int(len(mesh.faces)),
        "watertight": bool(watertight),
        "bounds": np.round(mesh.bounds, 5).tolist(),
    }


def build_mesh(concept: Image.Image, texture: Image.Image | None, *, method: str = "auto", resolution: int = 96,
               depth: float = 0.15) -> MeshResult:
    """A textured, closed mesh from `concept` (see the module docstring for the methods).

    `resolution`: grid cells along the object's long side (coarsened if the mesh would pass
    `TRIANGLE_BUDGET`); `depth`: the thickness (extrude) or relief height (heightfield) as a fraction of the
    long side. `texture` (tileable, e.g. forged steel) is embedded as it is; None projects the concept
    itself (for an extrusion with its backdrop replaced by the silhouette's edge colours, see `_bleed`).
    """
    _check_image(concept, "concept image", MIN_CONCEPT_SIDE)
    if texture is not None:
        _check_image(texture, "texture", 4)
    _check_options(method, resolution, depth)
    concept_rgb = _rgb(concept)
    tex = (_rgb(texture) if texture is not None else concept_rgb).copy()  # detached; .format is None -> PNG
    rgb = _work_array(concept_rgb)
    sil = segment(rgb) if method != "heightfield" else None
    chosen = method
    if method == "auto":
        assert sil is not None
        chosen = "extrude" if sil.clean else "heightfield"
    if chosen == "extrude":
        assert sil is not None
        if not sil.mask.any():
            raise InvalidInputError("the concept image has no foreground to extrude (it is one flat colour): "
                                    "use method='heightfield' or 'auto'")
        built = _extrude(rgb, sil, int(resolution), float(depth), concept_uv=texture is None)
    else:
        built = _heightfield(rgb, int(resolution), float(depth), concept_uv=texture is None)
    if chosen == "extrude" and texture is None:
        assert sil is not None
        tex = _bleed(concept_rgb, sil.mask)
    vertices = built.pop("vertices")
    faces = built.pop("faces")
    uv = built.pop("uv")
    vertices = vertices - (vertices.min(0) + vertices.max(0)) / 2  # centred: the bounding box about the origin
    mesh = textured_mesh(vertices, faces.astype(np.int64), uv, tex)
    stats = mesh_stats(mesh, _welded_watertight(vertices, faces))
    stats.update(built)
    if sil is not None:
        stats["silhouette"] = {**sil.scores(), "clean": sil.clean}
    return MeshResult(mesh=mesh, method=chosen, texture=tex, stats=stats)


# --- export -------------------------------------------------------------------------------------------------


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def export_glb(result: MeshResult) -> bytes:
    """The mesh as binary glTF 2.0, its texture embedded as PNG (vertex colours when there is none)."""
    from trimesh.exchange.gltf import export_glb as _export

    mesh = result.mesh
    if result.texture is not None:
        mesh = mesh.copy()
        tex = result.texture.copy()
        tex.format = "PNG"  # trimesh re-encodes JPEG as JPEG; PNG keeps the pixels exact
        visual: Any = mesh.visual
        visual.material.baseColorTexture = tex
    _ = mesh.vertex_normals
    return bytes(_export(mesh, include_normals=True))


def export_obj(result: MeshResult) -> dict[str, bytes]:
    """Wavefront OBJ + MTL (+ the texture as texture.png): {"model.obj", "model.mtl", "texture.png"}.

    model.obj names model.mtl (`mtllib`), whose material maps texture.png (`map_Kd`). A mesh with vertex
    colours instead of a texture writes them on the `v` lines and a plain material, without texture.png.
    """
    mesh = result.mesh
    v = mesh.vertices
    n = mesh.vertex_normals
    f = mesh.faces + 1
    lines = ["# echo-os 3D model", "mtllib model.mtl", "o model"]
    textured = result.texture is not None
    if textured:
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
        visual: Any = mesh.visual
        uv = np.asarray(visual.uv)
        lines += [f"vt {s:.6f} {t:.6f}" for s, t in uv]
    else:
        colors = _vertex_colors(mesh)[:, :3] / 255.0
        lines += [f"v {x:.6f} {y:.6f} {z:.6f} {r:.4f} {g:.4f} {b:.4f}" for (x, y, z), (r, g, b) in zip(v, colors,
                                                                                                     strict=True)]
    lines += [f"vn {x:.5f} {y:.5f} {z:.5f}" for x, y, z in n]
    lines.append("usemtl material0")
    if textured:
        lines += [f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}" for a, b, c in f]
    else:
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in f]
    mtl = ["# echo-os material", "newmtl material0", "Ka 1.000 1.000 1.000", "Kd 1.000 1.000 1.000",
           "Ks 0.350 0.350 0.350", "Ns 60.0", "d 1.0", "illum 2"]
    out = {"model.obj": ("\n".join(lines) + "\n").encode("ascii")}
    if textured:
        assert result.texture is not None
        mtl.append("map_Kd texture.png")
        out["texture.png"] = _png(result.texture)
    out["model.mtl"] = ("\n".join(mtl) + "\n").encode("ascii")
    return out


def _vertex_colors(mesh: trimesh.Trimesh) -> np.ndarray:
    colors = getattr(mesh.visual, "vertex_colors", None)
    if colors is None or len(colors) != len(mesh.vertices):
        return np.full((len(mesh.vertices), 4), 200, dtype=np.uint8)
    return np.asarray(colors, dtype=np.uint8)


# --- preview render -----------------------------------------------------------------------------------------


def _normalize(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12))


def _background(w: int, h: int) -> np.ndarray:
    """A soft studio backdrop in linear RGB: a warm-grey vertical gradient with a gentle vignette."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ty = yy / max(h - 1, 1)
    top, bottom = np.array([0.50, 0.52, 0.56]), np.array([0.16, 0.165, 0.18])
    bg = top * (1 - ty[..., None]) + bottom * ty[..., None]
    r = np.hypot((xx - w / 2) / (0.75 * w), (yy - h * 0.45) / (0.75 * h))
    return np.asarray(bg * (1.0 - 0.35 * np.clip(r, 0, 1.2)[..., None] ** 2))


_BOX_SIDES = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
                       3072, 4096, 6144, 8192])


def _rasterize(sx: np.ndarray, sy: np.ndarray, depth: np.ndarray, faces: np.ndarray, w: int, h: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visible triangle and perspective-correct barycentrics per pixel: (pixel index, triangle, bary (P, 3)).

    Front-facing triangles are bucketed by bounding-box width and height; a bucket evaluates the three edge
    functions (linear in the pixel offset, float32) over its triangles' boxes at once, and a stable sort by
    (pixel, depth) keeps the nearest fragment of each pixel.
    """
    x, y, z = sx[faces], sy[faces], depth[faces]  # (T, 3)
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    # Screen y runs down, so counter-clockwise (front-facing) triangles have negative area here.
    keep = (area < -1e-9) & (z > 1e-6).all(1)
    keep &= (x.max(1) >= 0) & (x.min(1) < w) & (y.max(1) >= 0) & (y.min(1) < h)
    tri = np.nonzero(keep)[0]
    x, y, z, area = x[tri], y[tri], z[tri], area[tri]
    xmin = np.clip(np.ceil(x.min(1) - 0.5), 0, w - 1).astype(np.int64)  # first pixel centre inside the box
    xmax = np.clip(np.floor(x.max(1) - 0.5), -1, w - 1).astype(np.int64)
    ymin = np.clip(np.ceil(y.min(1) - 0.5), 0, h - 1).astype(np.int64)
    ymax = np.clip(np.floor(y.max(1) - 0.5), -1, h - 1).astype(np.int64)
    bw, bh = xmax - xmin + 1, ymax - ymin + 1
    ok = (bw > 0) & (bh > 0)
    # Edge functions as weights: w_k(px, py) = a_k * (px - xmin) + b_k * (py - ymin) + c_k, pixel centres at +0.5.
    ox, oy = xmin + 0.5, ymin + 0.5
    coef = []
    for i, j in ((1, 2), (2, 0)):
        a_ = (y[:, i] - y[:, j]) / area
        b_ = (x[:, j] - x[:, i]) / area
        c_ = (x[:, i] * y[:, j] - x[:, j] * y[:, i]) / area + a_ * ox + b_ * oy
        coef.append((a_.astype(np.float32), b_.astype(np.float32), c_.astype(np.float32)))
    iw = np.searchsorted(_BOX_SIDES, bw)
    ih = np.searchsorted(_BOX_SIDES, bh)
    key = np.where(ok, iw * 64 + ih, -1)
    pix_out, tri_out, bary_out = [], [], []
    eps = np.float32(-1e-6)
    for k in np.unique(key[key >= 0]):
        side_w, side_h = int(_BOX_SIDES[k // 64]), int(_BOX_SIDES[k % 64])
        members = np.nonzero(key == k)[0]
        dy, dx = np.divmod(np.arange(side_w * side_h, dtype=np.int64), side_w)
        fdx, fdy = dx.astype(np.float32), dy.astype(np.float32)
        chunk = max(1, (1 << 20) // (side_w * side_h))
        for start in range(0, len(members), chunk):
            t = members[start:start + chunk]
            (a0, b0, c0), (a1, b1, c1) = ((a_[t, None], b_[t, None], c_[t, None]) for a_, b_, c_ in coef)
            w0 = a0 * fdx + b0 * fdy + c0
            w1 = a1 * fdx + b1 * fdy + c1
            inside = (w0 >= eps) & (w1 >= eps) & (w0 + w1 <= 1 - eps)
            inside &= (dx <= (bw[t, None] - 1)) & (dy <= (bh[t, None] - 1))
            r, c = np.nonzero(inside)
            if not len(r):
                continue
            tt = t[r]
            pix_out.append((ymin[tt] + dy[c]) * w + xmin[tt] + dx[c])
            tri_out.append(tt)
            b0_, b1_ = w0[r, c], w1[r, c]
            bary_out.append(np.stack([b0_, b1_, 1 - b0_ - b1_], -1))
    if not pix_out:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3))
    pix = np.concatenate(pix_out)
    tris = np.concatenate(tri_out)
    bary = np.concatenate(bary_out).astype(np.float64)
    b = bary / z[tris]  # perspective-correct: screen weights over view depth
    invz = b.sum(1)
    order = np.lexsort((1.0 / invz, pix))
    pix_sorted = pix[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = pix_sorted[1:] != pix_sorted[:-1]
    pick = order[first]
    return pix[pick], tri[tris[pick]], b[pick] / invz[pick, None]


def render_preview(result: MeshResult, size: tuple[int, int] = (512, 512), *, azimuth: float = 35.0,
                   elevation: float = 22.0) -> Image.Image:
    """An RGB preview of the textured model from a 3/4 view on a soft backdrop (software rendered).

    `azimuth`/`elevation` in degrees place the camera (0/0 looks straight at the front, +Z). The model is
    framed to fill most of the image; shading is Lambert from a key and a fill light, a sky/ground ambient,
    Blinn-Phong highlights and a faint sky reflection, with a soft drop shadow on the backdrop.
    """
    from scipy import ndimage

    if (not isinstance(size, tuple | list) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)):
        raise InvalidInputError(f"preview size must be (width, height) in pixels, not {size!r}")
    width, height = int(size[0]), int(size[1])
    if not (32 <= width <= 4096 and 32 <= height <= 4096):
        raise InvalidInputError(f"preview size {width}x{height} is outside 32..4096 px a side")
    mesh = result.mesh
    if len(mesh.faces) == 0:
        raise InvalidInputError("the mesh has no triangles to render")
    ss = 2
    w, h = width * ss, height * ss
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)

    centre = (verts.min(0) + verts.max(0)) / 2
    radius = float(np.linalg.norm(verts - centre, axis=1).max()) or 1.0
    az, el = math.radians(azimuth), math.radians(elevation)
    forward = -np.array([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])  # eye -> centre
    fov = math.radians(28.0)
    distance = radius / math.sin(fov / 2) * 1.02
    eye = centre - forward * distance
    right = _normalize(np.cross(forward, [0.0, 1.0, 0.0]))
    up = np.cross(right, forward)
    rel = verts - eye
    cam = np.stack([rel @ right, rel @ up, rel @ forward], -1)  # x right, y up, z = depth ahead
    # Frame the projected model: 84% of the tighter side, centred (the bounding sphere would leave a margin).
    u, v = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
    u_mid, v_mid = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    focal = 0.84 * min(w / max(float(np.ptp(u)), 1e-9), h / max(float(np.ptp(v)), 1e-9))
    sx = w / 2 + focal * (u - u_mid)
    sy = h / 2 - focal * (v - v_mid)

    pix, tri, bary64 = _rasterize(sx, sy, cam[:, 2], faces, w, h)
    bary = bary64.astype(np.float32)  # shading runs on a million samples: float32 is plenty and twice as fast
    uv_attr = getattr(mesh.visual, "uv", None)
    textured = result.texture is not None and uv_attr is not None
    if textured:
        extra = np.asarray(uv_attr, dtype=np.float32)
    else:
        extra = (_vertex_colors(mesh)[:, :3].astype(np.float32) / 255.0) ** 2.2
    attrs = np.concatenate([normals, verts, extra], axis=1).astype(np.float32)  # one gather, one interpolation
    inter = np.einsum("pk,pkd->pd", bary, attrs[faces[tri]])
    n = _normalize(inter[:, 0:3])
    view = _normalize(eye.astype(np.float32) - inter[:, 3:6])
    n = np.where((np.einsum("pd,pd->p", n, view) < 0)[:, None], -n, n)  # seen from behind: light the side we see

    albedo: np.ndarray
    if textured:
        assert result.texture is not None
        tex_lin = (np.asarray(result.texture.convert("RGB"), dtype=np.float32) / 255.0) ** 2.2
        th, tw = tex_lin.shape[:2]
        # Minified texture: pre-blur to about the sample spacing (no sparkle); samples are then nearest
        # texels, smoothed by the 2x2 supersampling.
        footprint = max(tw, th) / (0.6 * min(w, h))
        if footprint > 1.0:
            tex_lin = ndimage.gaussian_filter(tex_lin, (0.5 * footprint, 0.5 * footprint, 0), mode="wrap")
        uv = inter[:, 6:8]
        ti = np.clip(((1.0 - uv[:, 1]) * th).astype(np.int64), 0, th - 1)
        tj = np.clip((uv[:, 0] * tw).astype(np.int64), 0, tw - 1)
        albedo = tex_lin[ti, tj]
    else:
        albedo = inter[:, 6:9]

    f32 = np.float32
    key = _normalize(-0.55 * right + 0.75 * up - 0.45 * forward).astype(f32)  # from the upper left, in front
    fill = _normalize(0.8 * right + 0.1 * up - 0.4 * forward).astype(f32)
    sky, ground = np.array([0.60, 0.64, 0.72], f32), np.array([0.20, 0.18, 0.16], f32)
    ndl = np.clip(n @ key, 0, None)[:, None]
    ndf = np.clip(n @ fill, 0, None)[:, None]
    hemi = 0.5 + 0.5 * n[:, 1:2]
    ambient = ground * (1 - hemi) + sky * hemi
    diffuse = albedo * (ambient * f32(0.55) + ndl * np.array([1.05, 1.0, 0.95], f32)
                        + ndf * np.array([0.19, 0.21, 0.25], f32))
    half_v = _normalize(key[None, :] + view)
    spec = np.clip(np.einsum("pd,pd->p", n, half_v), 0, None) ** 48 * f32(0.55)
    ndv = np.clip(np.einsum("pd,pd->p", n, view), 0, 1)
    fresnel = f32(0.04) + f32(0.5) * (1 - ndv) ** 5
    refl = 2 * ndv[:, None] * n - view
    env = ground * f32(0.6) + (sky * f32(1.3) - ground * f32(0.6)) * np.clip(f32(0.5) + f32(0.7) * refl[:, 1:2], 0, 1)
    colour = diffuse + spec[:, None] * np.array([1.0, 0.97, 0.92], f32) + (fresnel[:, None] + f32(0.08)) * env * (
        f32(0.35) + f32(0.65) * albedo.mean(1, keepdims=True))

    # Compose at the supersampled size, then average 2x2 blocks (anti-aliased edges).
    cover = np.zeros(h * w, dtype=f32)
    cover[pix] = 1.0
    cover_lo = cover.reshape(height, ss, width, ss).mean((1, 3))
    bg = _background(width, height).astype(f32)
    shadow = ndimage.gaussian_filter(cover_lo, 0.025 * min(width, height))
    shift = (round(0.035 * height), round(0.025 * width))
    shadow = ndimage.shift(shadow, shift, order=1, mode="constant")
    bg = bg * (f32(1.0) - f32(0.45) * shadow[..., None])
    frame = np.repeat(np.repeat(bg, ss, 0), ss, 1).reshape(-1, 3)
    frame[pix] = colour
    img = frame.reshape(height, ss, width, ss, 3).mean((1, 3))
    img = img / (f32(1.0) + f32(0.25) * img)  # soft shoulder, keeps highlights from clipping flat
    srgb = np.clip(img, 0, 1) ** (1 / 2.2)
    return Image.fromarray(np.round(srgb * 255).astype(np.uint8), "RGB")
