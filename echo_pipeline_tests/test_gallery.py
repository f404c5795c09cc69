"""Gallery: HTML pages, contact sheets and the small markdown thumbnail grid."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from echo_pipeline.artifacts import ArtifactRecord, ArtifactStore
from echo_pipeline.artifacts import gallery as G
from echo_pipeline.artifacts.gallery import build_gallery, contact_sheet, thumbnail_grid_markdown
from echo_pipeline.errors import InvalidInputError, StorageError
from echo_pipeline.render.backends.base import BackendDescription
from echo_pipeline.render.requests import RenderRequest

DESC = BackendDescription(backend="procedural", model="echo-procedural", version="1")
EVIL = '<script>alert("x")</script> & "quotes"'


def picture(i: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:size, 0:size]
    arr = np.zeros((size, size, 3), np.uint8)
    arr[..., 0] = (x * (2 + i) + 40 * i) % 256
    arr[..., 1] = (y * 3 + 25 * i) % 256
    arr[..., 2] = rng.integers(0, 256, (size, size))
    return Image.fromarray(arr, "RGB")


def add_images(store: ArtifactStore, n: int, project: str = "p", prompt: str = "warm fractal", **fields):
    records = []
    for i in range(n):
        req = RenderRequest(prompt=prompt, seed=i, width=64, height=64, project=project, **fields)
        record = ArtifactRecord(artifact_id=req.request_id, project=project, request=req, backend=DESC)
        records.append(store.save(record, picture(i)))
    store.append_catalog(project, records)
    return records


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path, memory_root):
    root = str(tmp_path / "a") if request.param == "local" else memory_root
    return ArtifactStore.open(root)


def read_text(store: ArtifactStore, path: str) -> str:
    return store.fs.cat_file(path).decode("utf-8")


def tile_ids(page: str) -> list[str]:
    return re.findall(r'<figure class="tile" id="a-([^"]+)"', page)


# --------------------------------------------------------------------------------------------------
# build_gallery


def test_gallery_all_escapes_prompts_and_has_one_tile_per_image(store):
    records = add_images(store, 5, prompt=EVIL, style="nft-collection")
    result = build_gallery(store, "p", title="My <Collection>")
    assert result.count == 5 and result.filter == "all" and result.total_images == 5
    assert result.html_path.endswith("gallery/index.html")
    page = read_text(store, result.html_path)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "My &lt;Collection&gt;" in page and "<h1>My <Collection>" not in page
    # Newest first (the catalog is oldest first; all records share one part, so it is the reverse order).
    assert tile_ids(page) == [r.artifact_id for r in records][::-1]
    for record in records:
        assert f'src="../thumbs/{record.artifact_id}.jpg"' in page
        assert f'href="../images/{record.artifact_id}.png"' in page
    assert "seed 3" in page and "style nft-collection" in page and "64×64" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    sheet = Image.open(io.BytesIO(store.fs.cat_file(result.contact_sheet_path)))
    assert sheet.format == "JPEG" and result.contact_sheet_path.endswith("gallery/contact_sheet.jpg")
    assert sheet.size == (3 * 128 + 4 * 4, 2 * 128 + 3 * 4)  # 5 images -> 3 columns x 2 rows


def test_gallery_shows_scores_and_best_picks_top_quarter(store):
    records = add_images(store, 8)
    ids = [r.artifact_id for r in records]
    totals = [10, 95, 30, 40, 88, 20, 60, 50]
    scores = pd.DataFrame({
        "artifact_id": ids, "total": totals, "technical": [70.0] * 8, "style_consistency": [90.0] * 8,
        "uniqueness": [100.0] * 8,
    })
    best = build_gallery(store, "p", scores=scores, filter="best")
    assert best.count == 2 and best.html_path.endswith("gallery/best.html")
    page = read_text(store, best.html_path)
    assert tile_ids(page) == [ids[1], ids[4]]  # 95 then 88
    assert best.mean_total == pytest.approx(91.5)
    assert "mean score <b>91.5</b>" in page
    assert ">95</span>" in page and "technical" in page and "style" in page
    full = build_gallery(store, "p", scores=scores)
    assert full.count == 8 and full.mean_total == pytest.approx(np.mean(totals))
    # The "all" page links to the "best" page now that it exists.
    assert 'href="best.html"' in read_text(store, full.html_path)


def test_gallery_without_scores_ranks_nothing_and_says_so(store):
    records = add_images(store, 3)
    result = build_gallery(store, "p", filter="best")
    assert result.count == 0 and result.note == G.NO_SCORES_NOTE
    assert "No score table yet" in read_text(store, result.html_path)
    scores = pd.DataFrame({"artifact_id": [r.artifact_id for r in records], "total": [1.0, 3.0, 2.0]})
    ranked = build_gallery(store, "p", filter="best", scores=scores, scores_note="ranked by a test")
    assert ranked.count == 1 and ranked.note == "ranked by a test"
    page = read_text(store, ranked.html_path)
    assert tile_ids(page) == [records[1].artifact_id] and "ranked by a test" in page


def test_every_page_is_rewritten_together(store):
    """best.html must not go stale when the gallery is rebuilt for another filter after a new batch."""
    first = add_images(store, 2)
    scores = pd.DataFrame({"artifact_id": [r.artifact_id for r in first], "total": [50.0, 60.0]})
    build_gallery(store, "p", filter="best", scores=scores)
    later = add_images(store, 2, prompt="cool waves")
    scores = pd.concat([scores, pd.DataFrame({"artifact_id": [r.artifact_id for r in later],
                                              "total": [99.0, 10.0]})])
    result = build_gallery(store, "p", scores=scores)  # filter "all", as after every batch
    assert set(result.pages) == {"all", "best", "recent"}
    best = read_text(store, result.pages["best"])
    assert tile_ids(best) == [later[0].artifact_id]
    assert len(tile_ids(read_text(store, result.pages["recent"]))) == 4
    for name in ("best", "recent"):
        assert store.fs.exists(store.project_file_path("p", f"gallery/contact_sheet_{name}.jpg"))
    for page in result.pages.values():  # every page links to every other
        text = read_text(store, page)
        assert all(f'href="{n}"' in text for n in ("index.html", "best.html", "recent.html"))


def test_gallery_into_another_folder_leaves_a_read_only_store_alone(tmp_path):
    root = tmp_path / "store"
    writer = ArtifactStore.open(str(root))
    records = add_images(writer, 2)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    store = ArtifactStore(str(root), read_only=True)
    out = tmp_path / "site" / "gallery"
    result = build_gallery(store, "p", out_dir=out)
    assert result.html_path == str(out / "index.html") and result.count == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "best.html", "contact_sheet.jpg", "contact_sheet_best.jpg", "contact_sheet_recent.jpg",
        "index.html", "recent.html"]
    page = (out / "index.html").read_text()
    for record in records:  # links reach the store's files from the other folder
        link = f"../../store/projects/p/thumbs/{record.artifact_id}.jpg"
        assert f'src="{link}"' in page and (out / link).resolve().is_file()
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()} == before
    with pytest.raises(StorageError, match="read-only"):
        build_gallery(store, "p")  # into the store itself: refused with one line


def test_gallery_reports_missing_and_damaged_files(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "a"))
    records = add_images(store, 4)
    store.fs.rm(store.image_path("p", records[0].artifact_id))
    store.fs.rm(store.thumb_path("p", records[1].artifact_id))
    store.fs.pipe_file(store.thumb_path("p", records[2].artifact_id), b"not a jpeg")
    result = build_gallery(store, "p")
    found = {(p.kind, p.artifact_id) for p in result.problems}
    assert found == {("missing", records[0].artifact_id), ("thumb_missing", records[1].artifact_id),
                     ("thumb_undecodable", records[2].artifact_id)}
    assert result.count == 4  # still shown, marked
    page = read_text(store, result.html_path)
    assert "3 stored file problem(s)" in page and "artifacts verify --project p" in page
    assert page.count('class="damaged"') == 3 and "PNG missing" in page
    hashes = build_gallery(store, "p", check_hashes=True)
    assert len(hashes.problems) == 3


def test_artifacts_package_does_not_import_resonance():
    """artifacts/ sits below resonance/: the gallery takes scores from its caller (no import cycle)."""
    import ast
    from pathlib import Path

    package = Path(G.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.startswith("echo_pipeline.resonance")], path.name


def test_gallery_recent_and_lineage(store, monkeypatch):
    records = add_images(store, 4)
    parent = records[0]
    child_req = RenderRequest(prompt="warm fractal refined", seed=9, width=64, height=64, project="p",
                              parent_id=parent.artifact_id, strength=0.35)
    child = ArtifactRecord(artifact_id=child_req.request_id, project="p", request=child_req, backend=DESC,
                           parent_id=parent.artifact_id)
    store.append_catalog("p", [store.save(child, picture(9))])

    page = read_text(store, build_gallery(store, "p").html_path)
    assert f'href="#a-{parent.artifact_id}"' in page and "refined from" in page and "strength 0.35" in page

    monkeypatch.setattr(G, "RECENT_COUNT", 2)
    recent = build_gallery(store, "p", filter="recent")
    assert recent.count == 2 and recent.html_path.endswith("gallery/recent.html")
    shown = tile_ids(read_text(store, recent.html_path))
    assert shown[0] == child.artifact_id and len(shown) == 2
    # The parent is not on the recent page: the lineage link points at its image instead.
    assert f'href="../images/{parent.artifact_id}.png"' in read_text(store, recent.html_path)


def test_gallery_empty_project_and_unknown_filter(store):
    result = build_gallery(store, "empty")
    assert result.count == 0 and result.total_images == 0
    page = read_text(store, result.html_path)
    assert "No images yet" in page and "<figure" not in page
    assert store.fs.exists(result.contact_sheet_path)
    with pytest.raises(InvalidInputError) as err:
        build_gallery(store, "p", filter="favourites")
    assert "all" in str(err.value) and "best" in str(err.value) and "recent" in str(err.value)


def test_gallery_survives_missing_thumbnail(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "a"))
    records = add_images(store, 2)
    store.fs.rm(store.thumb_path("p", records[0].artifact_id))
    result = build_gallery(store, "p")
    assert result.count == 2
    assert Image.open(io.BytesIO(store.fs.cat_file(result.contact_sheet_path))).size == (2 * 128 + 3 * 4, 128 + 8)


# --------------------------------------------------------------------------------------------------
# contact_sheet / thumbnail_grid_markdown


def test_contact_sheet_size_and_layout():
    images = [picture(i, 50 + 10 * i) for i in range(5)]
    sheet = contact_sheet(images, columns=3, cell=32, gap=2)
    assert sheet.size == (3 * 32 + 4 * 2, 2 * 32 + 3 * 2) and sheet.mode == "RGB"
    assert sheet.getpixel((0, 0)) == G.BACKGROUND
    assert sheet.getpixel((2 + 16, 2 + 16)) != G.BACKGROUND  # first cell is filled
    assert sheet.getpixel((sheet.width - 3, sheet.height - 3)) == G.BACKGROUND  # 6th cell stays empty
    wide = contact_sheet([Image.new("RGB", (200, 100), (255, 0, 0))], cell=64, gap=0)
    assert wide.size == (64, 64)
    assert wide.getpixel((32, 2)) == G.BACKGROUND and wide.getpixel((32, 32))[0] > 200  # letterboxed
    assert contact_sheet([], cell=10, gap=3).size == (16, 16)
    assert contact_sheet(images).size == (3 * 128 + 16, 2 * 128 + 12)  # default: ceil(sqrt(5)) columns


def test_thumbnail_markdown_fits_budget():
    rng = np.random.default_rng(0)
    noisy = [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(20)]
    for budget in (12_000, 4_000):
        text = thumbnail_grid_markdown(noisy, max_bytes=budget)
        assert len(text) <= budget
        match = re.fullmatch(r"!\[thumbnails\]\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", text)
        assert match, text[:80]
        assert Image.open(io.BytesIO(base64.b64decode(match.group(1)))).format == "JPEG"
    small = thumbnail_grid_markdown([picture(i) for i in range(4)])
    assert small.startswith("![thumbnails](data:image/jpeg;base64,") and len(small) <= 12_000
    tiny = thumbnail_grid_markdown(noisy, max_bytes=80)
    assert len(tiny) <= 80 and "data:image" not in tiny
    assert thumbnail_grid_markdown([]) == "_no images yet_"
