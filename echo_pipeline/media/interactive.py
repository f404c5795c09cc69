"""Interactive media: one self-contained HTML page that draws a procedural piece live in the browser.

The page inlines its script, style and the `LiveView` (no external request of any kind: a
Content-Security-Policy with the inlined code's hashes forbids them, and it works from file://).
It draws the view on a canvas with the JavaScript twin of `procedural.live.render_view`, lets the
viewer pan (drag, arrow keys), zoom (wheel, pinch, buttons, +/-) and play or pause the flow, shows
seed, motif, kind, centre, scale and iterations, and "Keep this view" gives the view record (JSON:
shown, downloadable as view.json, copyable) that `view_from_record` / `echo-os render --view` turn
into the same picture as a PNG. `window.echoLive` (getView, setView, rendered, keep) lets tests
drive it deterministically.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from pathlib import Path
from typing import Any

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends.procedural.live import (
    RECORD_FORMAT,
    LiveView,
    record_from_view,
    view_from_params,
    view_from_record,
)

__all__ = ["RECORD_FORMAT", "LiveView", "interactive_page", "record_from_view", "view_from_params",
           "view_from_record"]

ASSETS_DIR = Path(__file__).with_name("interactive_assets")

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="generator" content="echo-os live {version}">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
  <div class="stage">
    <canvas id="live" width="{width}" height="{height}" tabindex="0"
      aria-label="{title}: drag to pan, scroll or pinch to zoom"></canvas>
  </div>
  <aside>
    <h1>{title}</h1>
    <dl>
      <dt>motif</dt><dd id="motif"></dd>
      <dt>kind</dt><dd id="kind"></dd>
      <dt>seed</dt><dd id="seed" class="mono"></dd>
      <dt>center</dt><dd id="center" class="mono"></dd>
      <dt>scale</dt><dd class="mono"><span id="scale"></span> (<span id="zoom"></span>)</dd>
      <dt class="row" id="itersrow">iterations</dt><dd id="iters" class="mono"></dd>
      <dt class="row" id="timerow">t</dt><dd id="time" class="mono"></dd>
      <dt>draw</dt><dd id="ms" class="mono"></dd>
    </dl>
    <div class="buttons">
      <button id="zin" type="button" title="Zoom in (+)">Zoom in</button>
      <button id="zout" type="button" title="Zoom out (-)">Zoom out</button>
      <button id="reset" type="button" title="Back to the artifact's view (0)">Reset</button>
      <button id="play" type="button" title="Play or pause the flow (space)">Pause</button>
      <button id="keep" type="button" class="primary" title="Keep this view (k)">Keep this view</button>
    </div>
    <p class="hint">Drag to pan, scroll or pinch to zoom, arrow keys and +/- work too.</p>
    <section id="record" hidden>
      <label for="json">The kept view</label>
      <textarea id="json" readonly spellcheck="false"></textarea>
      <div class="buttons">
        <a id="download" class="button" download="view.json" href="#">Download view.json</a>
        <button id="copy" type="button">Copy</button>
        <button id="close" type="button">Close</button>
      </div>
      <p class="hint">Render it as a PNG: <code>echo-os render --view view.json</code></p>
    </section>
  </aside>
</main>
<noscript><p>This piece draws itself with JavaScript; enable it to see it.</p></noscript>
<script type="application/json" id="echo-live-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def interactive_page(view: LiveView, *, title: str, record: dict[str, Any]) -> bytes:
    """The HTML page (UTF-8 bytes) of a live piece. `record` says where the view comes from (the
    artifact's id, prompt, seed...: JSON-able); it is shown nowhere but travels in every kept view."""
    if not isinstance(view, LiveView):
        raise InvalidInputError("interactive_page needs a LiveView")
    try:
        data = json.dumps({"view": view.model_dump(mode="json"), "record": record}, allow_nan=False,
                          ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the interactive page's record is not JSON-able ({exc})") from exc
    # inside <script>: no "</script" or "<!--" can appear once every "<" is escaped
    data = data.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    js = (ASSETS_DIR / "live.js").read_text(encoding="utf-8")
    css = (ASSETS_DIR / "live.css").read_text(encoding="utf-8")
    csp = (f"default-src 'none'; script-src {_sha256(js)}; style-src {_sha256(css)}; img-src data: blob:; "
           "base-uri 'none'; form-action 'none'")
    page = _PAGE.format(csp=csp, version=view.version, title=html.escape(title.strip() or "echo-os live piece"),
                        css=css, width=view.width, height=view.height, data=data, js=js)
    return page.encode("utf-8")
