"""Interactive media: live views of procedural artifacts, kept-view records and the live HTML page.

The unit tests check `view_from_params`, `render_view` and the records in Python. The browser tests
open the page from file:// in Debian's headless chromium (as test_gallery_browser does), zoom and
pan it, keep the view, and check that `render_view` of the kept record gives the canvas's pixels.
Set ECHO_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.media.interactive import interactive_page
from echo_pipeline.render.backends.procedural import ProceduralBackend
from echo_pipeline.render.backends.procedural.live import (
    LiveView,
    _iterate,
    _plane,
    record_from_view,
    render_view,
    view_from_params,
    view_from_record,
)
from echo_pipeline.render.requests import RenderRequest

W, H = 160, 120


def params(prompt: str, seed: int = 7) -> dict:
    return ProceduralBackend.params_for(RenderRequest(prompt=prompt, seed=seed, width=W, height=H))


@pytest.fixture(scope="module")
def fractal_view() -> LiveView:
    return view_from_params(params("warm fractal", 3), W, H)


@pytest.fixture(scope="module")
def flow_view() -> LiveView:
    return view_from_params(params("ocean flow field", 5), W, H)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


# ------------------------------------------------------------------------------------------ unit
def test_fractal_view_keeps_the_artifacts_framing_colouring_and_palette(fractal_view):
    p = params("warm fractal", 3)
    mp, view = p["motif_params"], fractal_view
    assert (view.motif, view.kind, view.width, view.height) == ("fractal", mp["kind"], W, H)
    assert (view.center_x, view.center_y, view.scale, view.rotation) == (*mp["center"], mp["width"], mp["rotation"])
    assert view.julia_c == (None if mp["julia_c"] is None else tuple(mp["julia_c"]))
    assert view.palette == tuple(tuple(s) for s in p["palette"]["stops"]) and view.background == tuple(p["palette"]["bg"])
    assert view.colour_freq == mp["freq"] and view.max_iter >= int(0.75 * mp["max_iter"])
    image = render_view(view)
    assert image.size == (W, H) and image.mode == "RGB"
    rgb = pixels(image)
    assert rgb.std() > 20 and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 500  # a picture, not a fill
    assert rgb[..., 0].mean() > rgb[..., 2].mean() + 30  # the warm palette reads warm
    assert image.tobytes() == render_view(view).tobytes()  # deterministic


def test_flow_view_and_its_time_axis(flow_view):
    p = params("ocean flow field", 5)
    view = flow_view
    assert (view.motif, view.kind, view.seed) == ("flow", p["motif_params"]["field"], p["seed"])
    assert view.freq == p["motif_params"]["freq"] and view.particles > 100 and view.steps > 10
    first = render_view(view)
    rgb = pixels(first)
    assert rgb.std() > 10 and rgb[..., 2].mean() > rgb[..., 0].mean()  # ocean: blue-green strokes on dark
    assert first.tobytes() == render_view(view).tobytes()
    later = pixels(render_view(view.model_copy(update={"t": 1.5})))
    assert np.abs(later - rgb).mean() > 2  # the field moves with t


def test_a_julia_view_and_a_zoom_render_differently():
    view = view_from_params(params("cool julia fractal", 3), W, H)
    assert view.kind == "julia" and view.julia_c is not None
    zoomed = view.model_copy(update={"scale": view.scale / 20})
    assert np.abs(pixels(render_view(zoomed)) - pixels(render_view(view))).mean() > 5


def test_record_round_trip_and_other_motifs_rejected(fractal_view):
    record = record_from_view(fractal_view, {"artifact_id": "abc"})
    assert record["format"] == "echo-live-view" and record["source"] == {"artifact_id": "abc"}
    assert view_from_record(json.dumps(record)) == fractal_view
    with pytest.raises(InvalidInputError, match="fractal and flow"):
        view_from_params(params("cool waves", 2), W, H)
    with pytest.raises(InvalidInputError, match="procedural artifact"):
        view_from_params({"motif": "fractal"}, W, H)


@pytest.mark.parametrize(("change", "message"), [
    (None, "not JSON"),
    ({"format": "png"}, "not a kept-view record"),
    ({"version": 99}, "version 99"),
    ({"view": [1, 2]}, 'no "view"'),
    ({"view.width": 0}, "width"),
    ({"view.max_iter": 10**7}, "max_iter"),
    ({"view.scale": -1.0}, "scale"),
    ({"view.motif": "nebula"}, "motif"),
    ({"view.center_x": "0.5"}, "center_x"),  # strict: no strings for numbers
    ({"view.extra": 1}, "extra"),
    ({"view.julia_c": None, "view.kind": "julia"}, "julia_c"),
    ({"view.kind": "curl"}, "fractal's kind"),
    ({"view.palette": [[0, 0, 0]]}, "palette"),
])
def test_bad_records_are_rejected_with_one_line(fractal_view, change, message):
    record = record_from_view(fractal_view)
    if change is None:
        text = json.dumps(record)[:-5]
    else:
        for key, value in change.items():
            if key.startswith("view."):
                record["view"][key[5:]] = value
            else:
                record[key] = value
        text = json.dumps(record)
    with pytest.raises(InvalidInputError, match=re.escape(message)) as err:
        view_from_record(text)
    assert "\n" not in str(err.value)


def test_the_page_is_self_contained(fractal_view):
    page = interactive_page(fractal_view, title="Ruzgar <fractal>", record={"artifact_id": "x</script>y"}).decode()
    assert "<title>Ruzgar &lt;fractal&gt;</title>" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page and "script-src 'sha256-" in page
    data = re.search(r'<script type="application/json" id="echo-live-data">(.*?)</script>', page, re.S)
    assert data is not None and "</script" not in data.group(1)
    payload = json.loads(data.group(1))
    assert LiveView.model_validate_json(json.dumps(payload["view"])) == fractal_view
    assert payload["record"] == {"artifact_id": "x</script>y"}
    assert f'width="{W}" height="{H}"' in page


# --------------------------------------------------------------------------------------- browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(not CHROMIUM and not os.environ.get("ECHO_REQUIRE_BROWSER"),
                                   reason="no chromium here (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield instance
        instance.close()


def open_page(browser, view: LiveView, tmp_path: Path, title: str):
    path = tmp_path / "piece.html"
    path.write_bytes(interactive_page(view, title=title, record={"prompt": title}))
    page = browser.new_page(viewport={"width": 900, "height": 700}, device_scale_factor=1)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    # arrow functions, not strings: the page's CSP forbids eval, which string predicates need
    page.wait_for_function("() => window.echoLive && window.echoLive.frames > 0", timeout=10_000)
    return page, errors, requests


def canvas_pixels(page) -> np.ndarray:
    url = page.evaluate("() => document.getElementById('live').toDataURL('image/png')")
    return pixels(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def kept_record(page) -> str:
    page.click("#keep")
    page.wait_for_selector("#record:not([hidden])")
    text = page.input_value("#json")
    assert page.get_attribute("#download", "href").startswith("blob:")
    assert page.get_attribute("#download", "download") == "view.json"
    return text


def assert_matches(canvas: np.ndarray, view: LiveView) -> float:
    diff = np.abs(canvas - pixels(render_view(view)))
    assert diff.mean() < 2.0, diff.mean()
    assert (diff.max(axis=-1) <= 3).mean() > 0.99
    return float(diff.mean())


def screenshot(page, tmp_path: Path, name: str) -> None:
    target = Path(os.environ.get("ECHO_SCREENSHOT_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / f"{name}.png"))


@needs_browser
@pytest.mark.slow(seconds=8)
def test_fractal_page_zooms_and_its_kept_view_renders_the_same(browser, fractal_view, tmp_path):
    page, errors, requests = open_page(browser, fractal_view, tmp_path, "Ruzgar fractal")
    first = canvas_pixels(page)
    assert first.std() > 20  # drawn, not blank
    assert_matches(first, fractal_view)
    assert page.text_content("#seed") == str(fractal_view.seed) and page.text_content("#iters") == str(
        fractal_view.max_iter)

    # The wheel zooms in about the cursor; a drag pans.
    box = page.locator("#live").bounding_box()
    assert box is not None and (round(box["width"]), round(box["height"])) == (W, H)
    page.mouse.move(box["x"] + W * 0.3, box["y"] + H * 0.6)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"() => window.echoLive.getView().scale < {fractal_view.scale * 0.7}")
    page.mouse.down()
    page.mouse.move(box["x"] + W * 0.5, box["y"] + H * 0.5, steps=3)
    page.mouse.up()
    page.evaluate("() => window.echoLive.rendered")
    wheeled = page.evaluate("() => window.echoLive.getView()")
    assert wheeled["center_x"] != fractal_view.center_x and wheeled["scale"] < fractal_view.scale * 0.7
    # ...and deterministically through the API, deeper than float32 could follow, into the detail
    # around the initial view's exterior point closest to the set (its highest escape count).
    xs, ys = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    px, py = _plane(fractal_view, xs.ravel(), ys.ravel())
    nu = _iterate(fractal_view, px, py)[0]
    edge = int(np.nanargmax(nu))
    deep = fractal_view.scale / 3000
    page.evaluate(f"() => window.echoLive.setView({{center_x: {float(px[edge])!r}, center_y: {float(py[edge])!r}, "
                  f"scale: {deep!r}, max_iter: 900}})")
    assert page.text_content("#iters") == "900"
    page.keyboard.press("+")  # the keyboard zooms too (1.5x)
    page.wait_for_function(f"() => window.echoLive.getView().scale < {deep * 0.9!r}")
    page.evaluate("() => window.echoLive.rendered")
    assert "\u00d7" in (page.text_content("#zoom") or "")

    kept = view_from_record(kept_record(page))
    assert kept.scale == pytest.approx(deep / 1.5) and kept.max_iter == 900
    assert kept.center_x == pytest.approx(float(px[edge]), abs=deep)  # zoomed about the centre
    canvas = canvas_pixels(page)
    assert canvas.std() > 15  # still detail down there
    assert np.abs(canvas - first).mean() > 10  # the zoomed view is another picture
    assert_matches(canvas, kept)
    screenshot(page, tmp_path, "interactive-fractal")
    assert errors == [] and all(url.startswith("file://") for url in requests)
    page.close()


@needs_browser
@pytest.mark.slow(seconds=8)
def test_flow_page_animates_pauses_and_its_kept_view_renders_the_same(browser, flow_view, tmp_path):
    page, errors, _ = open_page(browser, flow_view, tmp_path, "Ruzgar flow")
    assert page.evaluate("() => window.echoLive.playing")
    frames = page.evaluate("() => window.echoLive.frames")
    before = canvas_pixels(page)
    page.wait_for_function(f"() => window.echoLive.frames > {frames + 3} && window.echoLive.getView().t > 0.05")
    assert np.abs(canvas_pixels(page) - before).mean() > 0.5  # it moves
    page.click("#play")  # pause
    assert page.text_content("#play") == "Play" and not page.evaluate("() => window.echoLive.playing")
    page.evaluate("() => window.echoLive.rendered")
    kept = view_from_record(kept_record(page))
    assert kept.t > 0.05 and kept.motif == "flow"
    assert_matches(canvas_pixels(page), kept)
    assert errors == []
    page.close()
