"""Galleries: a self-contained HTML page and a contact sheet per project, plus tiny thumbnail grids.

`build_gallery` writes, under the project folder of the artifact store (any fsspec root), or into
another folder (`out_dir`, e.g. when the store is read-only)::

    gallery/index.html            filter "all"    (newest first)
    gallery/best.html             filter "best"   (top 25 % by total score, at least 1)
    gallery/recent.html           filter "recent" (newest 50)
    gallery/contact_sheet.jpg     contact sheet of the "all" page (first 48 images);
    gallery/contact_sheet_<filter>.jpg  for the other filters

Every page is rewritten on every build (whichever filter was asked for), so no page goes stale.

The page has no external assets: inline CSS, a few lines of inline JavaScript (the search box; a tile
whose thumbnail does not load shows the full image, else "no image"), and links relative to the page
(`../thumbs/<id>.jpg` tiles, `../images/<id>.png` full images), so the folder can be opened from a
local disk, served, or synced from S3 as it is. Pages written elsewhere link to the store's files
(relative paths when both are local). Text from the store (prompts, names) is HTML-escaped, with
control and bidi characters shown as visible escapes (`textsafe.safe_text`), and long words wrap.

Scores come from the caller (`scores`, a DataFrame with `artifact_id`, `total` and components), so
this module needs nothing from `resonance`. Missing or damaged files are reported, not hidden: the
result lists them (`GalleryResult.problems`, from the store's cheap `check_files`, plus thumbnails
that do not decode) and the page says how many there are.

`thumbnail_grid_markdown` makes the small data-URI JPEG grid that Dagster materialization metadata
shows (kept under a byte budget, a few KB).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from PIL import Image, ImageDraw

from echo_pipeline.artifacts.storage import ArtifactStore, Problem, ProblemKind
from echo_pipeline.atomic import write_atomic
from echo_pipeline.errors import InvalidInputError, StorageError
from echo_pipeline.textsafe import safe_text

FILTERS: dict[str, str] = {
    "all": "every image, newest first",
    "best": "top 25% by total score",
    "recent": "the newest 50 images",
}
PAGE_NAMES = {"all": "index.html", "best": "best.html", "recent": "recent.html"}
RECENT_COUNT = 50
BEST_FRACTION = 0.25
MAX_SHEET_IMAGES = 48
MAX_GRID_IMAGES = 24
BACKGROUND = (16, 16, 20)
COMPONENTS = (
    ("technical", "technical"), ("style_consistency", "style"), ("uniqueness", "unique"),
    ("alignment", "alignment"), ("aesthetic", "aesthetic"),
)
TECH_COMPONENTS = ("sharpness", "contrast", "colourfulness", "entropy", "exposure", "noise")


@dataclass
class GalleryResult:
    html_path: str
    contact_sheet_path: str
    count: int  # images shown on the page
    filter: str
    total_images: int = 0  # images in the project
    mean_total: float | None = None  # mean total score of the images shown (None without scores)
    note: str | None = None  # e.g. how "best" was ranked without a score table
    pages: dict[str, str] = field(default_factory=dict)  # filter -> page path: every page, rewritten together
    problems: list[Problem] = field(default_factory=list)  # missing or damaged files found on the way


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
# Selection


def _scores_frame(scores: pd.DataFrame | None) -> pd.DataFrame | None:
    if scores is None or len(scores) == 0 or "artifact_id" not in scores.columns:
        return None
    frame = scores.copy()
    frame["artifact_id"] = frame["artifact_id"].astype(str)
    return frame.drop_duplicates(subset="artifact_id", keep="last").set_index("artifact_id")


def _select(catalog: pd.DataFrame, filter: str, totals: dict[str, float]) -> pd.DataFrame:
    newest = catalog.iloc[::-1]
    if filter == "all":
        return newest
    if filter == "recent":
        return newest.head(RECENT_COUNT)
    ranked = newest[newest["artifact_id"].map(lambda a: a in totals)]
    if ranked.empty:
        return ranked
    keep = max(1, math.ceil(len(ranked) * BEST_FRACTION))
    order = sorted(range(len(ranked)), key=lambda i: -totals[ranked["artifact_id"].iloc[i]])
    return ranked.iloc[order[:keep]]


# --------------------------------------------------------------------------------------------------
# HTML

_CSS = """
:root{--bg:#0f1014;--panel:#17181e;--panel2:#1e2028;--line:#2a2c36;--text:#e8e8ee;--muted:#9a9cab;
--accent:#ff9a5a;--good:#5fd39a;--mid:#f2c14e;--bad:#ef6a6a}
*{box-sizing:border-box}
html,body{margin:0;background:var(--bg);color:var(--text);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header{padding:28px 32px 18px;border-bottom:1px solid var(--line);
background:linear-gradient(180deg,#181922 0%,var(--bg) 100%)}
.brand{font-size:12px;letter-spacing:.18em;text-transform:uppercase;color:var(--muted);overflow-wrap:anywhere}
h1{margin:4px 0 10px;font-size:28px;font-weight:650;letter-spacing:-.01em;overflow-wrap:anywhere}
.stats{display:flex;flex-wrap:wrap;gap:10px;margin:0;padding:0;list-style:none}
.stats li{background:var(--panel);border:1px solid var(--line);border-radius:999px;padding:4px 12px;
color:var(--muted);font-size:13px}.stats b{color:var(--text);font-weight:600}
.bar{display:flex;flex-wrap:wrap;align-items:center;gap:12px;margin-top:16px}
nav a{display:inline-block;padding:6px 14px;border-radius:8px;border:1px solid var(--line);
color:var(--muted);margin-right:6px;background:var(--panel)}
nav a.on{color:#111;background:var(--accent);border-color:var(--accent);font-weight:600}
nav a:hover{text-decoration:none;color:var(--text)}nav a.on:hover{color:#111}
input[type=search]{flex:1;min-width:200px;max-width:360px;background:var(--panel);color:var(--text);
border:1px solid var(--line);border-radius:8px;padding:7px 12px;font:inherit}
.note{margin:14px 0 0;color:var(--mid);font-size:13px;overflow-wrap:anywhere}
main{padding:24px 32px 48px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:18px}
.tile{margin:0;background:var(--panel);border:1px solid var(--line);border-radius:12px;overflow:hidden;
display:flex;flex-direction:column;transition:transform .12s ease,border-color .12s ease}
.tile:hover{transform:translateY(-2px);border-color:#3a3d4a}
.tile:target{outline:2px solid var(--accent)}
.thumb{position:relative;display:block;background:#000;aspect-ratio:1/1}
.thumb img{display:block;width:100%;height:100%;object-fit:cover}
.thumb.noimg img{display:none}.thumb.noimg::before{content:"no image";position:absolute;inset:0;display:flex;
align-items:center;justify-content:center;color:var(--muted);font-size:13px}
.score{position:absolute;top:8px;right:8px;min-width:40px;text-align:center;padding:3px 8px;
border-radius:999px;font-weight:700;font-size:13px;color:#111;box-shadow:0 1px 6px rgba(0,0,0,.5)}
.s-good{background:var(--good)}.s-mid{background:var(--mid)}.s-bad{background:var(--bad)}
figcaption{padding:10px 12px 12px;display:flex;flex-direction:column;gap:7px}
.prompt{margin:0;font-size:13.5px;color:var(--text);display:-webkit-box;-webkit-line-clamp:3;
-webkit-box-orient:vertical;overflow:hidden;overflow-wrap:anywhere}
.meta{display:flex;flex-wrap:wrap;gap:4px 6px;font-size:11.5px;color:var(--muted)}
.meta span{background:var(--panel2);border-radius:5px;padding:1px 6px;overflow-wrap:anywhere;min-width:0}
.comps{display:grid;grid-template-columns:auto 1fr auto;gap:3px 8px;align-items:center;font-size:11px;
color:var(--muted)}
.meter{height:5px;background:var(--panel2);border-radius:3px;overflow:hidden}
.meter i{display:block;height:100%;background:linear-gradient(90deg,#7a5cff,var(--accent))}
.lineage{font-size:12px;color:var(--muted);overflow-wrap:anywhere}
.damaged{font-size:12px;color:var(--bad);overflow-wrap:anywhere}
.id{font:11px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:#6d6f7d}
.empty{padding:80px 20px;text-align:center;color:var(--muted);font-size:16px;border:1px dashed var(--line);
border-radius:14px}
footer{padding:0 32px 32px;color:#5d5f6c;font-size:12px}
@media (max-width:600px){header,main{padding-left:14px;padding-right:14px}
.grid{grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}h1{font-size:22px}}
"""

_JS = """
const q=document.getElementById('q');if(q){q.addEventListener('input',()=>{const t=q.value.toLowerCase();
let n=0;document.querySelectorAll('.tile').forEach(e=>{const s=!t||e.dataset.text.includes(t);
e.style.display=s?'':'none';if(s)n++});const c=document.getElementById('shown');if(c)c.textContent=n;});}
"""


# A thumbnail that does not load (missing, damaged) is replaced by the full image; when that fails too,
# the tile says "no image" instead of showing a broken-image icon with the prompt over it.
_IMG_FALLBACK = ("if(!this.dataset.full){this.dataset.full=1;this.src=this.parentNode.href}"
                 "else{this.onerror=null;this.parentNode.classList.add('noimg')}")


def _e(value) -> str:
    """`value` as HTML text or attribute value; control and bidi characters as visible escapes (`\\x1b`)."""
    return html.escape(safe_text("" if value is None else str(value)), quote=True)


def _num(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _fmt_time(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return str(value)
    if pd.isna(ts):
        return ""
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")


def _score_class(total: float) -> str:
    return "s-good" if total >= 70 else ("s-mid" if total >= 50 else "s-bad")


def _str(row: pd.Series, key: str) -> str | None:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = str(value)
    return text if text else None


def _tile(row: pd.Series, score: dict | None, shown_ids: set[str], base: str = "..",
          broken: dict[str, str] | None = None) -> str:
    aid = str(row["artifact_id"])
    qid = quote(aid, safe="")
    prompt = _str(row, "prompt") or ""
    style = _str(row, "style")
    seed = row.get("seed")
    width, height = row.get("width"), row.get("height")
    created = _fmt_time(row.get("created"))
    parent = _str(row, "parent_id")

    badge = ""
    comps = ""
    if score:
        total = _num(score.get("total"))
        if total is not None:
            badge = f'<span class="score {_score_class(total)}" title="total score">{total:.0f}</span>'
        rows = []
        for key, label in COMPONENTS:
            value = _num(score.get(key))
            if value is None:
                continue
            rows.append(
                f'<span>{_e(label)}</span><span class="meter"><i style="width:{max(0.0, min(100.0, value)):.0f}%">'
                f"</i></span><span>{value:.0f}</span>"
            )
        if rows:
            tech = ", ".join(
                f"{k} {v:.0f}" for k in TECH_COMPONENTS if (v := _num(score.get(k))) is not None
            )
            comps = f'<div class="comps" title="{_e(tech)}">{"".join(rows)}</div>'

    meta = [f"seed {_e(seed)}"] if seed is not None and not pd.isna(seed) else []
    if style:
        meta.append(f"style {_e(style)}")
    if width is not None and height is not None and not pd.isna(width) and not pd.isna(height):
        meta.append(f"{int(width)}×{int(height)}")
    if created:
        meta.append(_e(created))
    model = _str(row, "model") or _str(row, "backend")
    if model:
        meta.append(_e(model))

    lineage = ""
    if parent:
        target = f"#a-{quote(parent, safe='')}" if parent in shown_ids else f"{base}/images/{quote(parent, safe='')}.png"
        strength = _num(row.get("strength"))
        how = f" (strength {strength:.2f})" if strength is not None else ""
        lineage = (
            f'<div class="lineage">↳ refined from <a href="{_e(target)}" title="{_e(parent)}">'
            f"{_e(parent[:10])}</a>{_e(how)}</div>"
        )

    damage = ""
    if broken and aid in broken:
        damage = f'<div class="damaged" title="{_e(broken[aid])}">⚠ {_e(broken[aid])}</div>'
    search = " ".join(x for x in (prompt, style or "", str(seed), aid) if x).lower()
    return (
        f'<figure class="tile" id="a-{_e(qid)}" data-text="{_e(search)}">'
        f'<a class="thumb" href="{_e(base)}/images/{_e(qid)}.png" title="open the full image">'
        f'<img src="{_e(base)}/thumbs/{_e(qid)}.jpg" loading="lazy" alt="{_e(prompt)}" onerror="{_IMG_FALLBACK}">'
        f"{badge}</a>"
        f'<figcaption><p class="prompt" title="{_e(prompt)}">{_e(prompt)}</p>'
        f'<div class="meta">{"".join(f"<span>{m}</span>" for m in meta)}</div>'
        f"{comps}{lineage}{damage}"
        f'<div class="id" title="artifact id">{_e(aid)}</div></figcaption></figure>'
    )


def render_gallery_html(
    *,
    title: str,
    project: str,
    rows: pd.DataFrame,
    scores: dict[str, dict],
    filter: str,
    total_images: int,
    mean_total: float | None,
    note: str | None,
    pages: Sequence[str],
    sheet_name: str | None,
    asset_base: str = "..",
    broken: dict[str, str] | None = None,
    warning: str | None = None,
) -> str:
    """The page as a string (pure; `build_gallery` writes it).

    `asset_base`: URL of the project folder (thumbs/, images/) relative to the page. `broken`:
    artifact id -> what is wrong with its files (shown on its tile); `warning`: a line for the header.
    """
    shown_ids = set(rows["artifact_id"].astype(str)) if len(rows) else set()
    tiles = "\n".join(
        _tile(row, scores.get(str(row["artifact_id"])), shown_ids, asset_base, broken) for _, row in rows.iterrows()
    )
    nav = "".join(
        f'<a href="{_e(PAGE_NAMES[f])}" class="{"on" if f == filter else ""}" title="{_e(FILTERS[f])}">'
        f"{_e(f.capitalize())}</a>"
        for f in FILTERS
        if f == filter or PAGE_NAMES[f] in pages
    )
    stats = [
        f"<li><b>{total_images}</b> image{'s' if total_images != 1 else ''} in project</li>",
        f'<li>showing <b id="shown">{len(rows)}</b> · {_e(FILTERS[filter])}</li>',
    ]
    if mean_total is not None:
        stats.append(f"<li>mean score <b>{mean_total:.1f}</b></li>")
    if sheet_name:
        stats.append(f'<li><a href="{_e(sheet_name)}">contact sheet</a></li>')
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if len(rows):
        body = f'<div class="grid">\n{tiles}\n</div>'
    elif total_images:
        body = '<div class="empty">No images match this filter yet.</div>'
    else:
        body = '<div class="empty">No images yet — render some and rebuild the gallery.</div>'
    note_html = "".join(f'<p class="note">{_e(text)}</p>' for text in (warning, note) if text)
    search = '<input type="search" id="q" placeholder="Filter by prompt, style, seed…" aria-label="filter">' if len(
        rows) else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="echo_pipeline gallery">
<title>{_e(title)} · {_e(filter)}</title>
<style>{_CSS}</style></head>
<body>
<header><div class="brand">ECHO.OS gallery · {_e(project)}</div>
<h1>{_e(title)}</h1>
<ul class="stats">{"".join(stats)}</ul>
<div class="bar"><nav>{nav}</nav>{search}</div>{note_html}
</header>
<main>{body}</main>
<footer>Generated {_e(generated)}. Click an image for the full-size PNG (its generation parameters are
embedded in the file).</footer>
<script>{_JS}</script>
</body></html>
"""


def build_gallery(
    store: ArtifactStore,
    project: str,
    *,
    title: str | None = None,
    scores: pd.DataFrame | None = None,
    filter: str = "all",
    out_dir: str | os.PathLike[str] | None = None,
    scores_note: str | None = None,
    check_hashes: bool = False,
) -> GalleryResult:
    """Write every gallery page of the project and their contact sheets; see the module docstring.

    `scores`: the project's score table from the caller (`artifact_id`, `total`, components); without
    one, "best" ranks nothing and says so. `scores_note` is shown on the "best" page (e.g. how the
    scores were made). `filter` picks the page the result describes; all pages are written anyway.
    `out_dir`: a folder (path or fsspec URL) to write into instead of the store's `gallery/`; nothing
    is then written into the store, so it may be read-only or full. `check_hashes`: also compare
    every PNG's sha256 with the catalog (reads every PNG; see `ArtifactStore.check_files`).
    """
    key = str(filter or "").strip().lower()
    if key not in FILTERS:
        raise InvalidInputError(f"unknown gallery filter {filter!r}; valid filters: {', '.join(FILTERS)}")
    catalog = store.catalog(project)
    problems = list(store.check_files(project, hashes=check_hashes).problems)
    score_frame = _scores_frame(scores)
    score_rows: dict[str, dict] = {}
    if score_frame is not None:
        ids = set(catalog["artifact_id"].astype(str))
        score_rows = {str(a): r.to_dict() for a, r in score_frame.iterrows() if a in ids}
    totals = {a: t for a, r in score_rows.items() if (t := _num(r.get("total"))) is not None}
    best_note = scores_note if totals else (NO_SCORES_NOTE if len(catalog) else None)

    write, asset_base = _writer(store, project, out_dir)
    thumbs: dict[str, Image.Image] = {}

    def thumb(artifact_id: str) -> Image.Image:
        if artifact_id not in thumbs:
            image, problem = load_gallery_thumbnail(store, project, artifact_id)
            if problem and not any(p.artifact_id == artifact_id for p in problems):
                kind: ProblemKind = "thumb_undecodable" if problem.startswith("thumbnail") else "undecodable"
                detail = problem.removeprefix("thumbnail undecodable: ")
                problems.append(Problem(project, kind, store.thumb_path(project, artifact_id), detail, artifact_id))
            thumbs[artifact_id] = image
        return thumbs[artifact_id]

    selections = {f: _select(catalog, f, totals) for f in FILTERS}
    # Contact sheets first: loading their thumbnails finds damaged files the listing cannot see.
    sheets: dict[str, str] = {}
    for f, rows in selections.items():
        shown = [str(a) for a in rows["artifact_id"]] if len(rows) else []
        images = [thumb(a) for a in shown[:MAX_SHEET_IMAGES]]
        sheet = contact_sheet(images) if images else _placeholder(128, "no images yet")
        sheets[f] = write(_sheet_name(f), _jpeg(sheet, 85))

    broken: dict[str, str] = {}
    for problem in problems:
        if problem.artifact_id and problem.artifact_id not in broken:
            broken[problem.artifact_id] = problem.label
    warning = None
    if problems:
        warning = (f"{len(problems)} stored file problem(s): {', '.join(sorted({p.label for p in problems}))}; "
                   f"`echo-os artifacts verify --project {project}` lists them.")
    page_title = title or _project_title(store, project)
    pages: dict[str, str] = {}
    means: dict[str, float | None] = {}
    for f, rows in selections.items():
        shown = [str(a) for a in rows["artifact_id"]] if len(rows) else []
        shown_totals = [totals[a] for a in shown if a in totals]
        means[f] = float(sum(shown_totals) / len(shown_totals)) if shown_totals else None
        text = render_gallery_html(
            title=page_title, project=project, rows=rows, scores=score_rows, filter=f, total_images=len(catalog),
            mean_total=means[f], note=best_note if f == "best" else None, pages=list(PAGE_NAMES.values()),
            sheet_name=_sheet_name(f) if shown else None, asset_base=asset_base, broken=broken, warning=warning,
        )
        pages[f] = write(PAGE_NAMES[f], text.encode("utf-8"))
    return GalleryResult(
        html_path=pages[key], contact_sheet_path=sheets[key], count=len(selections[key]), filter=key,
        total_images=len(catalog), mean_total=means[key], note=best_note if key == "best" else None,
        pages=pages, problems=problems,
    )


def _sheet_name(filter: str) -> str:
    return "contact_sheet.jpg" if filter == "all" else f"contact_sheet_{filter}.jpg"


def _writer(
    store: ArtifactStore, project: str, out_dir: str | os.PathLike[str] | None
) -> tuple[Callable[[str, bytes], str], str]:
    """(write(name, data) -> path, URL of the project folder relative to the pages)."""
    if out_dir is None:
        return (lambda name, data: store.write_project_file(project, f"gallery/{name}", data)), ".."
    out = os.fspath(out_dir)
    fs: Any
    try:
        fs, root = url_to_fs(out)
    except Exception as exc:
        raise InvalidInputError(f"gallery output folder {out!r} cannot be used: {exc}") from exc
    local = isinstance(fs, LocalFileSystem)
    if local:
        root = os.path.abspath(os.path.expanduser(root))
    project_dir = store.project_path(project)
    store_local = isinstance(store.fs, LocalFileSystem)
    if local and store_local:  # both on this disk: relative links survive moving both together
        base = quote(Path(os.path.relpath(project_dir, root)).as_posix(), safe="/")
    elif store_local:
        base = Path(project_dir).as_uri()
    else:
        base = project_dir

    def write(name: str, data: bytes) -> str:
        path = os.path.join(root, name) if local else posixpath.join(root, name)
        try:
            write_atomic(path, data, fs=fs)
        except OSError as exc:
            raise StorageError(f"cannot write the gallery into {out!r}: {exc.strerror or exc}") from exc
        return path if local else fs.unstrip_protocol(path)

    return write, base


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
    "FILTERS", "NO_SCORES_NOTE", "GalleryResult", "build_gallery", "contact_sheet", "load_gallery_thumbnail",
    "render_gallery_html", "thumbnail_grid_markdown",
]
