"""Galleries: a static, self-contained HTML gallery of one project or of every project, its contact
sheets, and the tiny thumbnail grids of Dagster metadata.

`build_gallery` (one project) and `build_collection_gallery` (several; the CLI's "no project") write,
into the project's `gallery/` folder, the store's top-level `gallery/` folder, or another folder
(`out_dir`, e.g. when the store is read-only)::

    index.html  best.html  recent.html  accepted.html   one page per filter preset (same app, another start)
    top-<N>.html  style-<slug>.html                     the `top:N` / `style:S` page, when asked for
    data.js                                             every entry: parameters, scores, lineage, file URLs
    gallery.js  gallery.css                             the app (no CDN, no build step, no fetch())
    contact_sheet.png, contact_sheet_<page>.png         the first 48 images of each page

The pages run from `file://` and behind any web server: the data is a script (`window.ECHO_GALLERY
= {...}`), not fetched, and every link is relative to the page (`../thumbs/<id>.jpg`, or
`../projects/<slug>/...` for the top-level gallery); pages written elsewhere link to the store's
files (relative paths when both are local). The app (`gallery_assets/gallery.js`) shows a grid of
lazily loaded thumbnails, rendered in chunks as you scroll so 10,000 entries stay responsive;
filters by preset, project, style, backend, score range and date; text search over prompts; sorting
by score or date; and a detail view (`#id=<artifact id>`) with the full image, every parameter, the
scores, the lineage tree (parents and refined children, clickable) and a button that copies the
A1111 `parameters` text. Text from the store reaches the page as JSON and is set with
`textContent`, so prompts cannot inject markup; control and bidi characters are shown as visible
escapes (`textsafe.safe_text`).

Filter presets (`parse_filter`; the same semantics in `select_entries` and in the app):
`all` (newest first), `best` (top 25 % by total score, at least 1), `recent` (newest 50),
`accepted` (what the project's style memory accepted), `top:N` (the N best), `style:S` (one style).

Scores and the accepted set come from the caller (`GallerySource`), so this module needs nothing
from `resonance`. Missing or damaged files are reported, not hidden: the result lists them
(`GalleryResult.problems`, from the store's cheap `check_files`, plus thumbnails that do not decode),
the page says how many there are, and each entry carries its problem.

`thumbnail_grid_markdown` makes the small data-URI JPEG grid that Dagster materialization metadata
shows (kept under a byte budget, a few KB).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from PIL import Image, ImageDraw

from echo_pipeline.artifacts.metadata import format_infotext
from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.artifacts.storage import ArtifactStore, Problem, ProblemKind
from echo_pipeline.atomic import write_atomic
from echo_pipeline.errors import InvalidInputError, StorageError
from echo_pipeline.naming import project_slug
from echo_pipeline.textsafe import safe_text

ASSETS_DIR = Path(__file__).with_name("gallery_assets")
PRESETS: dict[str, str] = {
    "all": "every image, newest first",
    "best": "top 25% by total score",
    "recent": "the newest 50 images",
    "accepted": "images the style memory accepted",
}
FILTER_SYNTAX = "all, best, recent, accepted, top:N or style:S"
PAGE_NAMES = {"all": "index.html", "best": "best.html", "recent": "recent.html", "accepted": "accepted.html"}
DATA_FILE = "data.js"
MIRROR_DIR = "files"  # copies of a remote store's files in a gallery written elsewhere (`_writer`)
RECENT_COUNT = 50
BEST_FRACTION = 0.25
MAX_TOP = 10_000
MAX_SHEET_IMAGES = 48
MAX_GRID_IMAGES = 24
BACKGROUND = (16, 16, 20)
COMPONENTS = (
    ("technical", "technical"), ("style_consistency", "style"), ("uniqueness", "unique"),
    ("alignment", "alignment"), ("aesthetic", "aesthetic"),
)
TECH_COMPONENTS = ("sharpness", "contrast", "colourfulness", "entropy", "exposure", "noise")
SCORE_KEYS = ("total",) + tuple(k for k, _ in COMPONENTS) + TECH_COMPONENTS


@dataclass(frozen=True)
class GalleryFilter:
    """A filter preset: `kind` is all/best/recent/accepted/top/style; `n` for top, `style` for style."""

    kind: str
    n: int | None = None
    style: str | None = None

    @property
    def key(self) -> str:
        if self.kind == "top":
            return f"top:{self.n}"
        if self.kind == "style":
            return f"style:{self.style}"
        return self.kind

    @property
    def page(self) -> str:
        if self.kind == "top":
            return f"top-{self.n}.html"
        if self.kind == "style":
            return f"style-{project_slug(self.style or '') or 'style'}.html"
        return PAGE_NAMES[self.kind]

    @property
    def description(self) -> str:
        if self.kind == "top":
            return f"the {self.n} best by total score"
        if self.kind == "style":
            return f"style {self.style}"
        return PRESETS[self.kind]


def parse_filter(text: str | GalleryFilter | None) -> GalleryFilter:
    """`all` | `best` | `recent` | `accepted` | `top:N` (1..10000) | `style:S`; one line if not."""
    if isinstance(text, GalleryFilter):
        return text
    raw = str(text if text is not None else "all").strip()
    kind, sep, arg = raw.partition(":")
    kind = kind.strip().lower()
    if not sep and kind in PRESETS:
        return GalleryFilter(kind)
    if sep and kind == "top":
        if not re.fullmatch(r"\s*\d{1,6}\s*", arg) or not 1 <= int(arg) <= MAX_TOP:
            raise InvalidInputError(f"gallery filter {raw!r}: top:N needs a whole number N from 1 to {MAX_TOP}")
        return GalleryFilter("top", n=int(arg))
    if sep and kind == "style":
        style = " ".join(arg.split())
        if not style or len(style) > 100:
            raise InvalidInputError(f"gallery filter {raw!r}: style:S needs a style name (up to 100 characters)")
        return GalleryFilter("style", style=style)
    raise InvalidInputError(f"unknown gallery filter {safe_text(raw)!r}; valid filters: {FILTER_SYNTAX}")


@dataclass
class GallerySource:
    """One project's gallery input: its scores (`artifact_id`, `total`, components; None = not
    scored), the ids its style memory accepted (None = no memory yet) and a note on the scores."""

    project: str
    title: str | None = None
    scores: pd.DataFrame | None = None
    accepted: set[str] | None = None
    scores_note: str | None = None


@dataclass
class GalleryResult:
    html_path: str
    contact_sheet_path: str
    count: int  # images the page's filter selects
    filter: str
    total_images: int = 0  # images in the project(s)
    mean_total: float | None = None  # mean total score of the images selected (None without scores)
    note: str | None = None  # e.g. how "best" was ranked without a score table
    pages: dict[str, str] = field(default_factory=dict)  # filter -> page path: every page, rewritten together
    problems: list[Problem] = field(default_factory=list)  # missing or damaged files found on the way
    data_path: str = ""
    projects: list[str] = field(default_factory=list)
    content_hash: str = ""  # of what the pages show (entries), not of when they were built


NO_SCORES_NOTE = ("No score table yet, so nothing is ranked: score the project (the batch's quality_scores "
                  "step) to fill this page.")


# --------------------------------------------------------------------------------------------------
# Images


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.mode == "P":
        rgba = image.convert("RGBA")
        out = Image.new("RGB", rgba.size, BACKGROUND)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return image.convert("RGB")


def contact_sheet(
    images: Sequence[Image.Image],
    columns: int | None = None,
    cell: int = 128,
    gap: int = 4,
    background: tuple[int, int, int] = BACKGROUND,
) -> Image.Image:
    """A grid of `images`, each fitted (aspect kept, centred) into a `cell` x `cell` square.

    Size: columns * cell + (columns + 1) * gap wide, rows * cell + (rows + 1) * gap high; `columns`
    defaults to ceil(sqrt(n)) (at most 8). An empty list gives one empty cell.
    """
    images = list(images)
    if cell < 1 or gap < 0:
        raise InvalidInputError("contact sheet cell must be >= 1 px and gap >= 0")
    n = len(images)
    if columns is None:
        columns = min(8, max(1, math.ceil(math.sqrt(n))))
    if columns < 1:
        raise InvalidInputError("contact sheet needs at least one column")
    columns = min(columns, max(n, 1))
    rows = max(1, math.ceil(n / columns))
    width = columns * cell + (columns + 1) * gap
    height = rows * cell + (rows + 1) * gap
    sheet = Image.new("RGB", (width, height), tuple(background))
    for i, image in enumerate(images):
        tile = _rgb(image).copy()
        tile.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        if max(tile.size) < cell:  # small images are scaled up to fill the cell
            scale = cell / max(tile.size)
            tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))),
                               Image.Resampling.LANCZOS)
        r, c = divmod(i, columns)
        x = gap + c * (cell + gap) + (cell - tile.width) // 2
        y = gap + r * (cell + gap) + (cell - tile.height) // 2
        sheet.paste(tile, (x, y))
    return sheet


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def thumbnail_grid_markdown(images: Sequence[Image.Image], max_bytes: int = 12_000, cell: int = 64) -> str:
    """`![thumbnails](data:image/jpeg;base64,...)` of a small contact sheet, at most `max_bytes` long.

    Uses the first 24 images; lowers JPEG quality (75 -> 20), then the cell size (down to 16 px), then
    the number of images until the markdown fits. Returns a short text note when nothing fits.
    """
    images = list(images)[:MAX_GRID_IMAGES]
    if not images:
        note = "_no images yet_"
        return note if len(note) <= max_bytes else ""
    prefix, suffix = "![thumbnails](data:image/jpeg;base64,", ")"
    count = len(images)
    size = max(8, int(cell))
    while count >= 1:
        size_now = size
        while size_now >= 16:
            sheet = contact_sheet(images[:count], cell=size_now, gap=2)
            for quality in (75, 60, 45, 30, 20):
                text = prefix + base64.b64encode(_jpeg(sheet, quality)).decode("ascii") + suffix
                if len(text) <= max_bytes:
                    return text
            size_now = int(size_now * 0.75)
        count //= 2
    note = "_thumbnail grid omitted: it does not fit the metadata budget_"
    return note if len(note) <= max_bytes else ""


def _placeholder(size: int = 256, text: str = "no image") -> Image.Image:
    image = Image.new("RGB", (size, size), (28, 28, 34))
    draw = ImageDraw.Draw(image)
    draw.text((size // 2, size // 2), text, fill=(120, 120, 130), anchor="mm")
    return image


def load_gallery_thumbnail(store: ArtifactStore, project: str, artifact_id: str) -> tuple[Image.Image, str | None]:
    """(thumbnail as RGB, problem or None) without writing anything: the stored thumbnail (fast),
    else the full image, else a placeholder; the problem says what was wrong."""
    problem = None
    try:
        data = store.fs.cat_file(store.thumb_path(project, artifact_id))
        thumb = Image.open(io.BytesIO(data))
        thumb.load()
        return _rgb(thumb), None
    except FileNotFoundError:
        problem = "thumbnail missing"
    except (OSError, ValueError, SyntaxError) as exc:
        problem = f"thumbnail undecodable: {exc}"
    try:
        image = store.load_image(project, artifact_id)
        image.thumbnail((256, 256))
        return image, problem
    except StorageError as exc:
        return _placeholder(), str(exc)


# --------------------------------------------------------------------------------------------------
# Entries and selection


def _num(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def _str(row: Mapping[Any, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text else None


def _text(value: Any, *, newlines: bool = False) -> str | None:
    return None if value is None else safe_text(str(value), newlines=newlines)


def _scores_by_id(scores: pd.DataFrame | None, ids: set[str]) -> dict[str, dict[str, float]]:
    if scores is None or len(scores) == 0 or "artifact_id" not in scores.columns:
        return {}
    frame = scores.drop_duplicates(subset="artifact_id", keep="last")
    keys = [k for k in SCORE_KEYS if k in frame.columns]
    out: dict[str, dict[str, float]] = {}
    for row in frame[["artifact_id", *keys]].itertuples(index=False):
        artifact_id = str(row[0])
        if artifact_id not in ids:
            continue
        values = {k: round(v, 1) for k, raw in zip(keys, row[1:], strict=True) if (v := _num(raw)) is not None}
        if values:
            out[artifact_id] = values
    return out


def _iso(value: Any) -> tuple[str | None, float | None]:
    if value is None:
        return None, None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None, None
    if pd.isna(ts):
        return None, None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ"), round(ts.timestamp(), 3)


def _parameters(row: Mapping[Any, Any]) -> str | None:
    """The A1111 `parameters` text the PNG carries, rebuilt from the catalogued record."""
    text = _str(row, "record_json")
    if text is None:
        return None
    try:
        return format_infotext(ArtifactRecord.model_validate_json(text))
    except ValueError:
        return None


def gallery_entries(
    store: ArtifactStore,
    source: GallerySource,
    *,
    base: str | None = "..",
    broken: dict[str, str] | None = None,
    catalog: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """The project's images as JSON-able dicts, newest first: parameters, scores, `accepted`,
    `parent` and `children` ids, `parameters` (the A1111 text), `problem`, and with `base` (the
    project folder's URL relative to the page) `thumb` and `image` URLs. Text fields are made safe
    to show (`safe_text`); everything else is data."""
    frame = store.catalog(source.project) if catalog is None else catalog
    if len(frame) == 0:
        return []
    rows = frame.iloc[::-1].to_dict("records")
    ids = {str(r["artifact_id"]) for r in rows}
    scores = _scores_by_id(source.scores, ids)
    children: dict[str, list[str]] = {}
    for row in reversed(rows):  # oldest child first
        parent = _str(row, "parent_id")
        if parent:
            children.setdefault(parent, []).append(str(row["artifact_id"]))
    entries = []
    for row in rows:
        artifact_id = str(row["artifact_id"])
        created, stamp = _iso(row.get("created"))
        width, height = _num(row.get("width")), _num(row.get("height"))
        seed = _num(row.get("seed"))
        entry: dict[str, Any] = {
            "id": artifact_id, "project": source.project,
            "prompt": _text(_str(row, "prompt")) or "", "negative": _text(_str(row, "negative_prompt")),
            "style": _text(_str(row, "style")), "backend": _text(_str(row, "backend")),
            "model": _text(_str(row, "model")), "model_hash": _text(_str(row, "model_hash")),
            "seed": int(seed) if seed is not None else None,
            "width": int(width) if width is not None else None, "height": int(height) if height is not None else None,
            "steps": int(v) if (v := _num(row.get("steps"))) is not None else None,
            "cfg": _num(row.get("cfg_scale")), "sampler": _text(_str(row, "sampler")),
            "media": _text(_str(row, "media_type")), "tiling": bool(row.get("tiling")) if row.get("tiling") is not None
            and not pd.isna(row.get("tiling")) else None,
            "parent": _str(row, "parent_id"), "strength": _num(row.get("strength")),
            "children": children.get(artifact_id, []),
            "created": created, "t": stamp, "run_id": _str(row, "run_id"), "sha256": _str(row, "sha256"),
            "scores": scores.get(artifact_id),
            "accepted": (artifact_id in source.accepted) if source.accepted is not None else None,
            "parameters": _text(_parameters(row), newlines=True),
            "problem": (broken or {}).get(artifact_id),
        }
        media = entry["media"]
        if media and media != "image":
            entry.update(_media_entry(row, artifact_id, base))
        if base is not None:
            qid = quote(artifact_id, safe="")
            entry["thumb"] = f"{base}/thumbs/{qid}.jpg"
            entry["image"] = f"{base}/images/{qid}.png"
        entries.append(entry)
    return entries


def _media_entry(row: dict[Any, Any], artifact_id: str, base: str | None) -> dict[str, Any]:
    """A media artifact's files (links the page plays or offers: MP4/GIF, GLB/OBJ, maps, HTML), what
    it was made from and its few numbers; read from the record only for media rows (few of them)."""
    try:
        info = json.loads(str(row.get("record_json") or "{}")).get("info") or {}
    except ValueError:
        return {}
    names = sorted(info.get("media_files") or {})
    qid = quote(artifact_id, safe="")
    files = {name: f"{base}/media/{qid}/{quote(name)}" for name in names} if base is not None else {}
    facts: dict[str, Any] = {}
    if info.get("seam"):
        facts["seam ratio"] = info["seam"].get("seam_ratio")
    if info.get("mesh"):
        facts.update({"triangles": info["mesh"].get("triangles"), "watertight": info["mesh"].get("watertight"),
                      "mesh method": info["mesh"].get("method")})
    if info.get("video"):
        video = info["video"]
        facts.update({"frames": video.get("frames"), "fps": video.get("fps"), "loop": video.get("loop"),
                      "audio": (video.get("audio") or {}).get("name") if isinstance(video.get("audio"), dict) else None})
    inputs = {role: [str(i) for i in ids] for role, ids in (info.get("inputs") or {}).items()}
    return {"files": files, "inputs": inputs,
            "facts": {k: (v if isinstance(v, (int, float, bool)) or v is None else _text(str(v)))
                      for k, v in facts.items() if v is not None}}


def _total(entry: dict[str, Any]) -> float | None:
    scores = entry.get("scores") or {}
    return scores.get("total")


def select_entries(entries: Sequence[dict[str, Any]], filter: str | GalleryFilter) -> list[dict[str, Any]]:
    """The entries (newest first, as `gallery_entries` gives them) a filter preset selects, in the
    order the page shows them; the app in gallery.js implements the same rules."""
    flt = parse_filter(filter)
    items = list(entries)
    if flt.kind == "all":
        return items
    if flt.kind == "recent":
        return items[:RECENT_COUNT]
    if flt.kind == "accepted":
        return [e for e in items if e.get("accepted")]
    if flt.kind == "style":
        wanted = (flt.style or "").casefold()
        return [e for e in items if (e.get("style") or "").casefold() == wanted]
    ranked = sorted((e for e in items if _total(e) is not None), key=lambda e: -float(_total(e) or 0.0))
    if flt.kind == "top":
        return ranked[: flt.n]
    return ranked[: max(1, math.ceil(len(ranked) * BEST_FRACTION))] if ranked else []


# --------------------------------------------------------------------------------------------------
# Pages


def _e(value) -> str:
    """`value` as HTML text or attribute value; control and bidi characters as visible escapes (`\\x1b`)."""
    return html.escape(safe_text("" if value is None else str(value)), quote=True)


def _json_script(value: Any) -> str:
    """JSON safe inside a script: no `</script>` or `<!--` can end or confuse it."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> bytes:
    return (ASSETS_DIR / name).read_bytes()


def render_page(*, title: str, scope: str, flt: GalleryFilter, version: str, presets: Sequence[GalleryFilter]) -> str:
    """One page: the app's shell, starting on filter `flt` (pure; the data is in data.js)."""
    nav = "".join(
        f'<a href="{_e(p.page)}" data-preset="{_e(p.key)}" class="{"on" if p == flt else ""}" '
        f'title="{_e(p.description)}">{_e(p.key.capitalize() if p.kind in PRESETS else p.key)}</a>'
        for p in presets
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="echo_pipeline gallery">
<title>{_e(title)} · {_e(flt.key)}</title>
<link rel="stylesheet" href="gallery.css?v={version}">
</head>
<body data-filter="{_e(flt.key)}">
<header><div class="brand">ECHO.OS gallery · {_e(scope)}</div>
<h1>{_e(title)}</h1>
<ul class="stats" id="stats"></ul>
<nav id="presets">{nav}</nav>
<form class="bar" id="filters" autocomplete="off" onsubmit="return false">
<input type="search" id="q" placeholder="Search prompts, seeds, ids…" aria-label="search prompts">
<select id="project" aria-label="project"><option value="">all projects</option></select>
<select id="style" aria-label="style"><option value="">all styles</option></select>
<select id="backend" aria-label="backend"><option value="">all backends</option></select>
<label>score <input type="number" id="min" min="0" max="100" step="1" placeholder="min" aria-label="minimum score">
– <input type="number" id="max" min="0" max="100" step="1" placeholder="max" aria-label="maximum score"></label>
<label>from <input type="date" id="from" aria-label="from date"></label>
<label>to <input type="date" id="to" aria-label="to date"></label>
<select id="sort" aria-label="sort"><option value="">sort: preset order</option>
<option value="score-desc">score, best first</option><option value="score-asc">score, worst first</option>
<option value="new">newest first</option><option value="old">oldest first</option></select>
<button type="button" id="reset">reset</button>
</form>
<div id="notes"></div>
</header>
<main><div class="grid" id="grid"></div><div id="more" aria-hidden="true"></div>
<div class="empty" id="empty" hidden></div></main>
<dialog id="detail" aria-label="image details"></dialog>
<noscript><p class="empty">This gallery is drawn by JavaScript; without it, see the
<a href="contact_sheet.png">contact sheet</a>.</p></noscript>
<footer>Generated <span id="generated"></span> by echo_pipeline. Each PNG embeds its generation parameters.</footer>
<script src="{DATA_FILE}?v={version}"></script>
<script src="gallery.js?v={version}"></script>
</body></html>
"""


def _sheet_name(flt: GalleryFilter) -> str:
    return "contact_sheet.png" if flt.kind == "all" else f"contact_sheet_{flt.page.removesuffix('.html')}.png"


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def build_gallery(
    store: ArtifactStore,
    project: str,
    *,
    title: str | None = None,
    scores: pd.DataFrame | None = None,
    accepted: set[str] | None = None,
    filter: str | GalleryFilter = "all",
    out_dir: str | os.PathLike[str] | None = None,
    scores_note: str | None = None,
    check_hashes: bool = False,
) -> GalleryResult:
    """Write one project's gallery (every preset page, data, app, contact sheets); see the module
    docstring. `scores`/`accepted`: see `GallerySource`; without scores, "best" ranks nothing and
    says so. `filter` picks the page the result describes (a `top:N`/`style:S` page is added); all
    preset pages are written anyway. `out_dir`: a folder (path or fsspec URL) to write into instead
    of the store's `gallery/`, so the store may be read-only or full. `check_hashes`: also compare
    every PNG's sha256 with the catalog (reads every PNG; see `ArtifactStore.check_files`)."""
    source = GallerySource(project=project, title=title, scores=scores, accepted=accepted, scores_note=scores_note)
    return build_collection_gallery(store, [source], filter=filter, out_dir=out_dir, check_hashes=check_hashes,
                                    title=title or _project_title(store, project), scope=project, per_project=True)


def build_collection_gallery(
    store: ArtifactStore,
    sources: Sequence[GallerySource],
    *,
    filter: str | GalleryFilter = "all",
    out_dir: str | os.PathLike[str] | None = None,
    check_hashes: bool = False,
    title: str = "All projects",
    scope: str = "all projects",
    per_project: bool = False,
) -> GalleryResult:
    """Write one gallery over several projects (into the store's top-level `gallery/` unless
    `out_dir`); `per_project` writes a single project's gallery into its own `gallery/` folder."""
    flt = parse_filter(filter)
    if per_project and len(sources) != 1:
        raise InvalidInputError("a project gallery shows exactly one project")
    problems: list[Problem] = []
    entries: list[dict[str, Any]] = []
    notes: list[str] = []
    projects_meta = []
    write, base_for, mirror = _writer(store, sources[0].project if per_project else None, out_dir)
    for source in sources:
        catalog = store.catalog(source.project)
        found = list(store.check_files(source.project, hashes=check_hashes).problems)
        broken: dict[str, str] = {}
        for problem in found:
            if problem.artifact_id and problem.artifact_id not in broken:
                broken[problem.artifact_id] = problem.label
        problems += found
        project_entries = gallery_entries(store, source, base=base_for(source.project), broken=broken,
                                          catalog=catalog)
        entries += project_entries
        if mirror is not None:
            mirror(source.project, project_entries)
        scored = [t for e in project_entries if (t := _total(e)) is not None]
        note = source.scores_note if scored else (NO_SCORES_NOTE if project_entries else None)
        if note:
            notes.append(note if per_project else f"{source.title or source.project}: {note}")
        projects_meta.append({"slug": source.project, "title": _text(source.title or source.project),
                              "images": len(project_entries),
                              "mean": round(sum(scored) / len(scored), 1) if scored else None,
                              "accepted_known": source.accepted is not None})
    if not per_project:  # newest first across projects, as within one
        entries.sort(key=lambda e: e.get("t") or 0.0, reverse=True)

    presets = [GalleryFilter(k) for k in PRESETS] + ([flt] if flt.kind not in PRESETS else [])
    selections = {p: select_entries(entries, p) for p in presets}
    # Contact sheets first: loading their thumbnails finds damaged files the listing cannot see.
    thumbs: dict[str, Image.Image] = {}
    by_id = {e["id"]: e for e in entries}

    def thumb(entry: dict[str, Any]) -> Image.Image:
        artifact_id, project = entry["id"], entry["project"]
        if artifact_id not in thumbs:
            image, problem = load_gallery_thumbnail(store, project, artifact_id)
            if problem and not any(p.artifact_id == artifact_id for p in problems):
                kind: ProblemKind = "thumb_undecodable" if problem.startswith("thumbnail") else "undecodable"
                detail = problem.removeprefix("thumbnail undecodable: ")
                found = Problem(project, kind, store.thumb_path(project, artifact_id), detail, artifact_id)
                problems.append(found)
                by_id[artifact_id]["problem"] = by_id[artifact_id].get("problem") or found.label
            thumbs[artifact_id] = image
        return thumbs[artifact_id]

    sheets: dict[str, str] = {}
    for preset, chosen in selections.items():
        images = [thumb(e) for e in chosen[:MAX_SHEET_IMAGES]]
        sheet = contact_sheet(images) if images else _placeholder(128, "no images yet")
        sheets[preset.key] = write(_sheet_name(preset), _png(sheet))

    warning = None
    if problems:
        command = "echo-os artifacts verify" + (f" --project {sources[0].project}" if per_project else "")
        warning = (f"{len(problems)} stored file problem(s): {', '.join(sorted({p.label for p in problems}))}; "
                   f"`{command}` lists them.")
    data = {
        "title": _text(title), "scope": _text(scope), "per_project": per_project,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "presets": {p.key: {"page": p.page, "description": p.description, "sheet": _sheet_name(p)} for p in presets},
        "recent_count": RECENT_COUNT, "best_fraction": BEST_FRACTION,
        "projects": projects_meta, "notes": [_text(n) for n in ([warning] if warning else []) + notes],
        "problems": len(problems), "entries": entries,
    }
    payload = ("window.ECHO_GALLERY = " + _json_script(data) + ";\n").encode("utf-8")
    content_hash = hashlib.sha256(_json_script(entries).encode("utf-8")).hexdigest()[:16]
    version = hashlib.sha256(payload + _asset("gallery.js") + _asset("gallery.css")).hexdigest()[:12]
    data_path = write(DATA_FILE, payload)
    write("gallery.js", _asset("gallery.js"))
    write("gallery.css", _asset("gallery.css"))
    pages: dict[str, str] = {}
    for preset in presets:
        text = render_page(title=title, scope=scope, flt=preset, version=version, presets=presets)
        pages[preset.key] = write(preset.page, text.encode("utf-8"))
    chosen = selections[flt]
    totals = [t for e in chosen if (t := _total(e)) is not None]
    return GalleryResult(
        html_path=pages[flt.key], contact_sheet_path=sheets[flt.key], count=len(chosen), filter=flt.key,
        total_images=len(entries), mean_total=float(sum(totals) / len(totals)) if totals else None,
        note="; ".join(notes) if flt.kind in ("best", "top") and notes else None,
        pages=pages, problems=problems, data_path=data_path, projects=[s.project for s in sources],
        content_hash=content_hash,
    )


def _writer(
    store: ArtifactStore, project: str | None, out_dir: str | os.PathLike[str] | None
) -> tuple[Callable[[str, bytes], str], Callable[[str], str], Callable[[str, list[dict[str, Any]]], None] | None]:
    """(write(name, data) -> path, project -> URL of that project's folder relative to the pages,
    mirror(project, entries) or None).

    `project` None: the pages go into the store's top-level `gallery/`. A remote store's files
    (s3://...) cannot be loaded by a browser, so a gallery of one written to `out_dir` gets copies of
    the thumbnails, images and media files it shows under `files/<project>/` (`mirror`; a file
    already there with the same size is not copied again)."""
    if out_dir is None:
        if project is not None:
            return (lambda name, data: store.write_project_file(project, f"gallery/{name}", data)), lambda p: "..", None
        # No project's recovery covers the top-level gallery/: a build killed mid-write left its
        # temporary file there, so the next build clears the stale ones.
        store.remove_stale_root_tmp("gallery")
        return (lambda name, data: store.write_root_file(f"gallery/{name}", data)), (
            lambda p: f"../projects/{quote(p, safe='')}"), None
    out = os.fspath(out_dir)
    fs: Any
    try:
        fs, root = url_to_fs(out)
    except Exception as exc:
        raise InvalidInputError(f"gallery output folder {out!r} cannot be used: {exc}") from exc
    local = isinstance(fs, LocalFileSystem)
    if local:
        root = os.path.abspath(os.path.expanduser(root))
        if os.path.exists(root) and not os.path.isdir(root):
            raise InvalidInputError(f"gallery output folder {out!r} is a file")
    store_local = isinstance(store.fs, LocalFileSystem)

    def base(p: str) -> str:
        if not store_local:
            return f"{MIRROR_DIR}/{quote(p, safe='')}"
        project_dir = store.project_path(p)
        if local:  # both on this disk: relative links survive moving both together
            return quote(Path(os.path.relpath(project_dir, root)).as_posix(), safe="/")
        return Path(project_dir).as_uri()

    def write(name: str, data: bytes) -> str:
        path = os.path.join(root, name) if local else posixpath.join(root, name)
        try:
            write_atomic(path, data, fs=fs)
        except OSError as exc:
            raise StorageError(f"cannot write the gallery into {out!r}: {exc.strerror or exc}") from exc
        return path if local else fs.unstrip_protocol(path)

    def mirror(p: str, entries: list[dict[str, Any]]) -> None:
        prefix = f"{base(p)}/"
        links = [e[k] for e in entries for k in ("thumb", "image") if e.get(k)]
        links += [link for e in entries for link in (e.get("files") or {}).values()]
        for link in links:
            relpath = unquote(link.removeprefix(prefix))
            target = os.path.join(root, unquote(link)) if local else posixpath.join(root, unquote(link))
            try:
                if fs.exists(target) and fs.size(target) == store.fs.size(store.project_file_path(p, relpath)):
                    continue
            except FileNotFoundError:
                pass
            data = store.read_project_file(p, relpath)
            if data is not None:  # a missing file is already the entry's `problem`
                write(unquote(link), data)

    return write, base, (None if store_local else mirror)


def _project_title(store, project: str) -> str:
    try:
        meta = store.read_project_meta(project)
    except StorageError:
        meta = {}
    for key in ("display_name", "name", "title"):
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return project


__all__ = [
    "FILTER_SYNTAX", "NO_SCORES_NOTE", "PRESETS", "GalleryFilter", "GalleryResult", "GallerySource",
    "build_collection_gallery", "build_gallery", "contact_sheet", "gallery_entries", "load_gallery_thumbnail",
    "parse_filter", "render_page", "select_entries", "thumbnail_grid_markdown",
]
