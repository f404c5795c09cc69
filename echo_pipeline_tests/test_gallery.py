"""Gallery: HTML pages, contact sheets and the small markdown thumbnail grid."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

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


def gallery_data(store: ArtifactStore, result: G.GalleryResult) -> dict:
    """The page's data (data.js is `window.ECHO_GALLERY = {...};`)."""
    text = read_text(store, result.data_path)
    assert text.startswith("window.ECHO_GALLERY = ") and text.endswith(";\n")
    return json.loads(text.removeprefix("window.ECHO_GALLERY = ").removesuffix(";\n"))


def shown_ids(store: ArtifactStore, result: G.GalleryResult, flt: str | None = None) -> list[str]:
    """What the page shows for a preset: the app applies `select_entries`' rules to the data."""
    return [e["id"] for e in G.select_entries(gallery_data(store, result)["entries"], flt or result.filter)]


# --------------------------------------------------------------------------------------------------
# build_gallery


def test_gallery_all_keeps_prompts_as_data_and_has_one_entry_per_image(store):
    records = add_images(store, 5, prompt=EVIL + "\x1b[2J", style="nft-collection")
    result = build_gallery(store, "p", title="My <Collection>")
    assert result.count == 5 and result.filter == "all" and result.total_images == 5
    assert result.html_path.endswith("gallery/index.html") and result.data_path.endswith("gallery/data.js")
    page = read_text(store, result.html_path)
    assert "My &lt;Collection&gt;" in page and "<h1>My <Collection>" not in page
    raw = read_text(store, result.data_path)
    assert "<script>" not in raw and "</" not in raw  # JSON with < > & escaped: nothing can end the script
    data = gallery_data(store, result)
    entries = data["entries"]
    # Newest first (the catalog is oldest first; all records share one part, so it is the reverse order).
    assert [e["id"] for e in entries] == [r.artifact_id for r in records][::-1]
    first = entries[-1]
    assert first["prompt"] == EVIL + "\\x1b[2J"  # the prompt as text; the control character made visible
    assert first["seed"] == 0 and first["style"] == "nft-collection" and (first["width"], first["height"]) == (64, 64)
    assert first["thumb"] == f"../thumbs/{records[0].artifact_id}.jpg"
    assert first["image"] == f"../images/{records[0].artifact_id}.png"
    assert first["parameters"].startswith(EVIL) and "Seed: 0" in first["parameters"]
    assert first["sha256"] == records[0].sha256 and first["children"] == [] and first["parent"] is None
    for name in ("index.html", "gallery.js", "gallery.css", "data.js"):  # self-contained: no CDN, no fetch
        text = store.fs.cat_file(store.project_file_path("p", f"gallery/{name}")).decode()
        assert "http://" not in text and "https://" not in text and "fetch(" not in text, name
    sheet = Image.open(io.BytesIO(store.fs.cat_file(result.contact_sheet_path)))
    assert sheet.format == "PNG" and result.contact_sheet_path.endswith("gallery/contact_sheet.png")
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
    assert shown_ids(store, best) == [ids[1], ids[4]]  # 95 then 88
    assert best.mean_total == pytest.approx(91.5)
    assert 'data-filter="best"' in read_text(store, best.html_path)
    entry = next(e for e in gallery_data(store, best)["entries"] if e["id"] == ids[1])
    assert entry["scores"] == {"total": 95.0, "technical": 70.0, "style_consistency": 90.0, "uniqueness": 100.0}
    full = build_gallery(store, "p", scores=scores)
    assert full.count == 8 and full.mean_total == pytest.approx(np.mean(totals))
    top = build_gallery(store, "p", scores=scores, filter="top:3")
    assert top.html_path.endswith("gallery/top-3.html") and shown_ids(store, top) == [ids[1], ids[4], ids[6]]
    assert 'data-filter="top:3"' in read_text(store, top.html_path)


def test_gallery_accepted_and_style_filters(store):
    warm = add_images(store, 3, style="digital art")
    cool = add_images(store, 2, prompt="cool waves", style="neon noir")
    accepted = {warm[0].artifact_id, cool[1].artifact_id}
    result = build_gallery(store, "p", accepted=accepted, filter="accepted")
    assert result.count == 2 and set(shown_ids(store, result)) == accepted
    styled = build_gallery(store, "p", filter="style:Neon Noir")  # style names match case-insensitively
    assert styled.html_path.endswith("gallery/style-neon-noir.html")
    assert shown_ids(store, styled) == [r.artifact_id for r in cool][::-1]
    unknown = build_gallery(store, "p")  # no style memory yet: "accepted" is unknown, not "none"
    assert {e["accepted"] for e in gallery_data(store, unknown)["entries"]} == {None}


@pytest.mark.parametrize("text", ["favourites", "top:0", "top:x", "top:10001", "style:", "best:3"])
def test_unknown_or_malformed_filters_are_one_line_errors(text):
    with pytest.raises(InvalidInputError) as err:
        G.parse_filter(text)
    assert "\n" not in str(err.value) and ("top:N" in str(err.value) or "style:S" in str(err.value))


def test_gallery_without_scores_ranks_nothing_and_says_so(store):
    records = add_images(store, 3)
    result = build_gallery(store, "p", filter="best")
    assert result.count == 0 and result.note == G.NO_SCORES_NOTE
    assert G.NO_SCORES_NOTE in gallery_data(store, result)["notes"]
    scores = pd.DataFrame({"artifact_id": [r.artifact_id for r in records], "total": [1.0, 3.0, 2.0]})
    ranked = build_gallery(store, "p", filter="best", scores=scores, scores_note="ranked by a test")
    assert ranked.count == 1 and ranked.note == "ranked by a test"
    assert shown_ids(store, ranked) == [records[1].artifact_id]
    assert "ranked by a test" in gallery_data(store, ranked)["notes"]


def test_every_page_is_rewritten_together(store):
    """best.html must not go stale when the gallery is rebuilt for another filter after a new batch."""
    first = add_images(store, 2)
    scores = pd.DataFrame({"artifact_id": [r.artifact_id for r in first], "total": [50.0, 60.0]})
    build_gallery(store, "p", filter="best", scores=scores)
    later = add_images(store, 2, prompt="cool waves")
    scores = pd.concat([scores, pd.DataFrame({"artifact_id": [r.artifact_id for r in later],
                                              "total": [99.0, 10.0]})])
    result = build_gallery(store, "p", scores=scores)  # filter "all", as after every batch
    assert set(result.pages) == {"all", "best", "recent", "accepted"}
    assert shown_ids(store, result, "best") == [later[0].artifact_id]  # every page reads the one data file
    assert len(shown_ids(store, result, "recent")) == 4
    for name in ("best", "recent", "accepted"):
        assert store.fs.exists(store.project_file_path("p", f"gallery/contact_sheet_{name}.png"))
    versions = set()
    for page in result.pages.values():  # every page links to every other, and loads the same data version
        text = read_text(store, page)
        assert all(f'href="{n}"' in text for n in ("index.html", "best.html", "recent.html", "accepted.html"))
        versions |= set(re.findall(r'src="data\.js\?v=([0-9a-f]+)"', text))
    assert len(versions) == 1


def test_gallery_into_another_folder_leaves_a_read_only_store_alone(tmp_path):
    root = tmp_path / "store"
    writer = ArtifactStore.open(str(root))
    add_images(writer, 2)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    store = ArtifactStore(str(root), read_only=True)
    out = tmp_path / "site" / "gallery"
    result = build_gallery(store, "p", out_dir=out)
    assert result.html_path == str(out / "index.html") and result.count == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "accepted.html", "best.html", "contact_sheet.png", "contact_sheet_accepted.png", "contact_sheet_best.png",
        "contact_sheet_recent.png", "data.js", "gallery.css", "gallery.js", "index.html", "recent.html"]
    for entry in gallery_data(store, result)["entries"]:  # links reach the store's files from the other folder
        assert entry["thumb"] == f"../../store/projects/p/thumbs/{entry['id']}.jpg"
        assert (out / entry["thumb"]).resolve().is_file() and (out / entry["image"]).resolve().is_file()
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()} == before
    with pytest.raises(StorageError, match="read-only"):
        build_gallery(store, "p")  # into the store itself: refused with one line
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        build_gallery(store, "p", out_dir=tmp_path / "file")


def test_collection_gallery_spans_projects_from_the_store_root(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "a"))
    add_images(store, 2, project="alpha")
    add_images(store, 3, project="beta", prompt="cool waves")
    sources = [G.GallerySource("alpha", "Alpha"), G.GallerySource("beta", "Beta")]
    result = G.build_collection_gallery(store, sources)
    page = Path(result.html_path)
    assert page == tmp_path / "a" / "gallery" / "index.html" and result.total_images == 5
    data = gallery_data(store, result)
    assert {p["slug"]: p["images"] for p in data["projects"]} == {"alpha": 2, "beta": 3}
    for entry in data["entries"]:
        assert entry["thumb"].startswith(f"../projects/{entry['project']}/thumbs/")
        assert (page.parent / entry["thumb"]).resolve().is_file() and (page.parent / entry["image"]).resolve().is_file()
    with pytest.raises(InvalidInputError):
        store.write_root_file("projects/alpha/x.html", b"x")  # the top-level gallery cannot write into a project


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
    data = gallery_data(store, result)
    assert any("3 stored file problem(s)" in n and "artifacts verify --project p" in n for n in data["notes"])
    problems = {e["id"]: e["problem"] for e in data["entries"] if e["problem"]}
    assert len(problems) == 3 and problems[records[0].artifact_id] == "PNG missing"
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

    result = build_gallery(store, "p")
    entries = {e["id"]: e for e in gallery_data(store, result)["entries"]}
    assert entries[child.artifact_id]["parent"] == parent.artifact_id
    assert entries[child.artifact_id]["strength"] == 0.35
    assert entries[parent.artifact_id]["children"] == [child.artifact_id]

    monkeypatch.setattr(G, "RECENT_COUNT", 2)
    recent = build_gallery(store, "p", filter="recent")
    assert recent.count == 2 and recent.html_path.endswith("gallery/recent.html")
    data = gallery_data(store, recent)
    assert data["recent_count"] == 2  # the app selects with the same number
    assert [e["id"] for e in G.select_entries(data["entries"], "recent")][0] == child.artifact_id


def test_gallery_empty_project_and_unknown_filter(store):
    result = build_gallery(store, "empty")
    assert result.count == 0 and result.total_images == 0
    assert gallery_data(store, result)["entries"] == []
    assert store.fs.exists(result.contact_sheet_path)
    with pytest.raises(InvalidInputError) as err:
        build_gallery(store, "p", filter="favourites")
    assert all(word in str(err.value) for word in ("all", "best", "recent", "accepted", "top:N", "style:S"))


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
