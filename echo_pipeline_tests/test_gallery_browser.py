"""The gallery in a real browser: Debian's headless chromium driven by playwright.

The page is opened from `file://` (the hardest case: no server, no fetch), must log no console
errors, and its filters, search, sorting, lineage tree, detail view and copy button must do what the
Python selection (`select_entries`) says. Set ECHO_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from echo_pipeline.artifacts import ArtifactRecord, ArtifactStore
from echo_pipeline.artifacts import gallery as G
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline_tests.test_gallery import DESC, add_images, gallery_data, picture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM and not os.environ.get("ECHO_REQUIRE_BROWSER"):
    pytest.skip("no chromium here (apt-get install chromium); .ci/run installs it and requires these tests",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

IMAGES = 130  # more than one drawing chunk (120), so scrolling has to add tiles


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A 133-image project: two styles, scores, an accepted set, and a three-generation lineage."""
    store = ArtifactStore.open(str(tmp_path_factory.mktemp("browser") / "artifacts"))
    warm = add_images(store, IMAGES // 2, prompt="warm fractal", style="digital art")
    add_images(store, IMAGES - IMAGES // 2, prompt="cool waves", style="neon noir")
    chain = [warm[0]]
    for generation in (1, 2, 3):
        parent = chain[-1]
        req = RenderRequest(prompt=f"warm fractal, refined {generation}", seed=1000 + generation, width=64,
                            height=64, project="p", parent_id=parent.artifact_id, strength=0.5)
        child = ArtifactRecord(artifact_id=req.request_id, project="p", request=req, backend=DESC,
                               parent_id=parent.artifact_id)
        store.append_catalog("p", [store.save(child, picture(500 + generation))])
        chain.append(child)
    ids = [str(a) for a in store.catalog("p")["artifact_id"]]
    scores = pd.DataFrame({"artifact_id": ids, "total": [(i * 37) % 100 for i in range(len(ids))],
                           "technical": [60.0] * len(ids), "style_consistency": [70.0] * len(ids)})
    accepted = {a for i, a in enumerate(ids) if i % 3 == 0}
    result = G.build_gallery(store, "p", title="Browser test", scores=scores, accepted=accepted)
    return {"store": store, "result": result, "entries": gallery_data(store, result)["entries"], "chain": chain}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield instance
        instance.close()


def screenshot(page, tmp_path: Path, name: str) -> None:
    keep = os.environ.get("ECHO_SCREENSHOT_DIR")
    target = Path(keep) if keep else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / f"{name}.png"))
    assert (target / f"{name}.png").stat().st_size > 10_000  # a drawn page, not a blank one


def shown(page) -> int:
    return int(page.text_content("#shown") or "-1")


def wait_shown(page, count: int) -> None:
    page.wait_for_function(f"document.getElementById('shown').textContent === '{count}'", timeout=5000)


@pytest.mark.slow(seconds=11)
def test_gallery_filters_search_lineage_and_copy_in_chromium(site, browser, tmp_path):
    entries, chain = site["entries"], site["chain"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(Path(site["result"].html_path).as_uri())
    page.wait_for_selector(".tile img")
    total = len(entries)
    assert shown(page) == total == IMAGES + 3
    # Drawn in chunks: the first 120 tiles, the rest once the end of the grid scrolls into view.
    assert page.locator(".tile").count() == 120
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function(f"document.querySelectorAll('.tile').length === {total}", timeout=5000)
    assert page.evaluate("document.querySelector('.tile img').naturalWidth") > 0  # thumbnails load from file://
    screenshot(page, tmp_path, "gallery-grid")

    # Search: every term must appear (prompt, style, seed, id...).
    page.fill("#q", "cool neon")
    wait_shown(page, sum(1 for e in entries if e["prompt"] == "cool waves"))
    page.fill("#q", "REFINED")  # case-insensitive
    wait_shown(page, 3)
    page.fill("#q", chain[2].artifact_id[:8])  # ids too
    wait_shown(page, 1)
    page.click("#reset")
    wait_shown(page, total)

    # Presets give exactly what select_entries gives, in its order.
    page.click("#presets a[data-preset=best]")
    best = G.select_entries(entries, "best")
    wait_shown(page, len(best))
    assert len(best) == math.ceil(total * 0.25)
    assert page.evaluate("window.echoGallery.shown()") == [e["id"] for e in best]
    page.click("#presets a[data-preset=accepted]")
    wait_shown(page, len(G.select_entries(entries, "accepted")))
    page.click("#presets a[data-preset=all]")
    wait_shown(page, total)

    # Facets and ranges stack on the preset.
    page.select_option("#style", "neon noir")
    wait_shown(page, sum(1 for e in entries if e["style"] == "neon noir"))
    page.fill("#min", "60")
    expected = [e for e in entries if e["style"] == "neon noir" and e["scores"]["total"] >= 60]
    wait_shown(page, len(expected))
    page.select_option("#sort", "score-asc")
    page.wait_for_timeout(50)
    totals = [next(e for e in entries if e["id"] == i)["scores"]["total"]
              for i in page.evaluate("window.echoGallery.shown()")]
    assert totals == sorted(totals) and min(totals) >= 60
    page.fill("#from", "2999-01-01")  # nothing is from the future
    wait_shown(page, 0)
    assert page.is_visible("#empty")
    page.click("#reset")
    page.select_option("#style", "")
    wait_shown(page, total)

    # Detail view of the newest refinement: full image, scores, the lineage tree, clickable.
    newest = chain[-1].artifact_id
    page.click(f'.tile[data-id="{newest}"]')
    page.wait_for_selector("dialog[open] #d-image")
    page.wait_for_function("document.getElementById('d-image').naturalWidth > 0", timeout=5000)
    assert page.text_content(".dhead .id") == newest and "id=" + newest in page.url
    lineage = page.locator("#lineage .node")
    assert lineage.count() == 4  # three ancestors and the image itself
    assert page.locator("#lineage .node.here").count() == 1
    screenshot(page, tmp_path, "gallery-detail")
    page.click("#copy")
    page.wait_for_function("document.getElementById('copy').dataset.copied === '1'", timeout=5000)
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == next(e for e in entries if e["id"] == newest)["parameters"]
    assert "Seed: 1003" in copied
    page.click(f'#lineage .node[data-open="{chain[0].artifact_id}"]')  # up to the original
    page.wait_for_function(f"document.querySelector('.dhead .id').textContent === '{chain[0].artifact_id}'")
    assert page.locator("#lineage .node").count() == 4  # the original's tree: three generations of children
    page.keyboard.press("Escape")
    page.wait_for_function("!document.getElementById('detail').open")
    # The dialog's "close" event (queued after `open` goes) takes the id out of the address.
    page.wait_for_function("!location.hash.includes('id=')", timeout=5000)
    assert "id=" not in page.url
    # A link to a detail view opens it on load.
    page.goto(Path(site["result"].html_path).as_uri() + f"#id={chain[1].artifact_id}")
    page.wait_for_selector("dialog[open]")
    assert page.text_content(".dhead .id") == chain[1].artifact_id
    assert errors == []
    context.close()


@pytest.fixture(scope="module")
def media_site(tmp_path_factory):
    """A project with one of each media type, made through the real batch processor (64 px)."""
    from echo_pipeline.render.backends.procedural import ProceduralBackend
    from echo_pipeline.render.prompt_engine import PromptSpec
    from echo_pipeline.settings import Settings
    from echo_pipeline.workflows.creative_engine import CreativeEngine

    root = tmp_path_factory.mktemp("media-gallery")
    engine = CreativeEngine(Settings.load(artifact_root=str(root / "artifacts"), config_dir=root / "configs"))
    backend = ProceduralBackend(workers=1)
    made = {}
    for kind, prompt, media in (("video", "warm fractal", {"frames": 8, "fps": 8, "keyframes": 2}),
                                ("3d_model", "sword design", {"method": "auto"}),
                                ("texture", "oak wood texture", None), ("interactive", "cool flow field", None)):
        spec = PromptSpec(prompt=prompt, width=64, height=64, media_type=kind, media=media, tiling=kind == "texture")
        result = engine.render(spec, backend)
        made[kind] = next(r for r in result.new if r.request.media_type == kind).artifact_id
    result = G.build_gallery(engine.store, "default", title="Media test")
    return {"result": result, "made": made}


@pytest.mark.slow(seconds=8)
def test_the_gallery_plays_videos_and_shows_3d_previews_and_texture_maps(media_site, browser, tmp_path):
    made = media_site["made"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(Path(media_site["result"].html_path).as_uri())
    page.wait_for_selector(".tile")
    badges = {b.text_content() for b in page.query_selector_all(".thumb .badge")}
    assert {"▶ video", "3D", "texture", "live"} <= badges

    page.evaluate(f"window.echoGallery.open('{made['video']}')")
    page.wait_for_function("() => { const v = document.getElementById('d-video'); "
                           "return v && v.readyState >= 2 && v.currentTime > 0 && !v.paused }", timeout=10000)
    assert page.eval_on_selector("#d-video", "v => v.videoWidth") == 64
    assert page.eval_on_selector_all("#made-from .node", "nodes => nodes.length") == 2  # its keyframes
    screenshot(page, tmp_path, "media-video")

    page.evaluate(f"window.echoGallery.open('{made['3d_model']}')")
    page.wait_for_function("() => { const i = document.getElementById('d-image'); return i && i.complete "
                           "&& i.naturalWidth > 0 }")
    files = page.eval_on_selector_all("#d-files a", "links => links.map(a => a.textContent)")
    assert {"model.glb", "model.obj", "model.mtl", "texture.png"} <= set(files)
    roles = page.text_content("#made-from") or ""
    assert "concept" in roles and "texture" in roles
    screenshot(page, tmp_path, "media-3d")

    page.evaluate(f"window.echoGallery.open('{made['texture']}')")
    page.wait_for_function("() => [...document.querySelectorAll('.maps img')].filter(i => i.complete "
                           "&& i.naturalWidth > 0).length === 3")
    assert "background-image" in (page.get_attribute("#d-tiled", "style") or "")

    page.evaluate(f"window.echoGallery.open('{made['interactive']}')")
    page.wait_for_selector("#d-live")
    assert page.get_attribute("#d-live", "src").endswith("/index.html")
    assert not errors, errors
    page.close()
