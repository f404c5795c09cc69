"""Golden pixel hashes of the procedural backend: pixels must match the ids that promise them.

An artifact id hashes the request *and* `PROCEDURAL_VERSION`, so a store may keep an image forever
under its id. If a code change alters the pixels of any request without bumping the version, old
stores hold old pixels under ids that claim the new ones (this happened once). These tests render a
few small images per motif family (plus tiling and refine) and compare sha256 of the RGB bytes with
the table in `procedural_golden.json`.

When a test here fails because you changed the renderer on purpose:

1. bump `PROCEDURAL_VERSION` in `echo_pipeline/render/backends/procedural/params.py`;
2. regenerate the table:  `python -m echo_pipeline_tests.test_golden --update`
   (it refuses to rewrite changed hashes while the version is still the one the table was made with);
3. commit the version bump and the table together with the pixel change.

If it fails and you did not mean to change pixels, your change has a side effect: fix that instead.

Other CPUs: the escape-time iteration runs on real arithmetic, which rounds identically everywhere
(see `motifs/fractal.py`), but NumPy's SIMD transcendental functions (float32 exp/log/cos on AVX2,
float64 ones on AVX-512) may differ in the last bit between CPUs, and that moves a handful of
pixels near colour boundaries. So the table also keeps each case's pixels (`golden/<case>.png`):
a render whose hash differs passes when at most `MAX_DRIFT_SHARE` of its pixels differ from them
(measured: <= 0.3 % between NumPy's AVX2 and baseline paths), while a real change moves far more.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from echo_pipeline.render.backends import ParentImage
from echo_pipeline.render.backends.procedural import PROCEDURAL_VERSION, ProceduralBackend
from echo_pipeline.render.requests import RenderRequest

TABLE = Path(__file__).with_name("procedural_golden.json")
PIXELS = Path(__file__).with_name("golden")  # <case>.png: the pixels each hash was taken of
SIDE = 64
MAX_DRIFT_SHARE = 0.01  # share of pixels a render may differ by on another CPU (see the module docstring)

# case id -> (prompt, seed, extra request fields). Every motif family, each fractal kind, 2-3 seeds.
TXT2IMG: dict[str, tuple[str, int, dict[str, Any]]] = {
    "fractal-warm-1": ("warm fractal", 1, {}),
    "fractal-warm-2": ("warm fractal", 2, {}),
    "fractal-warm-7": ("warm fractal, digital art", 7, {}),
    "fractal-julia-1": ("julia fractal", 1, {}),
    "fractal-julia-2": ("cool julia set", 2, {}),
    "fractal-mandelbrot-1": ("mandelbrot", 1, {}),
    "fractal-mandelbrot-2": ("golden mandelbrot set", 2, {}),
    "fractal-ship-1": ("burning ship", 1, {}),
    "fractal-ship-2": ("warm burning ship fractal", 2, {}),
    "flow-1": ("flow field", 1, {}),
    "flow-2": ("silk in the wind", 2, {}),
    "flow-3": ("ink brushstrokes, flowing", 3, {}),
    "waves-ripples-1": ("ripples", 1, {}),
    "waves-moire-2": ("moire waves", 2, {}),
    "waves-chladni-3": ("chladni cymatics", 3, {}),
    "landscape-1": ("mountains", 1, {}),
    "landscape-2": ("misty mountains at sunset, rain", 2, {}),
    "landscape-3": ("desert dunes at night", 3, {}),
    "geometric-truchet-1": ("truchet pattern", 1, {}),
    "geometric-hex-2": ("hexagon mosaic", 2, {}),
    "geometric-mandala-3": ("mandala", 3, {}),
    "city-1": ("city skyline", 1, {}),
    "city-2": ("cyberpunk cityscape, neon noir, rain", 2, {}),
    "nebula-1": ("nebula", 1, {}),
    "nebula-2": ("spiral galaxy", 2, {}),
    "default-1": ("untitled dream", 1, {}),
    "nonsquare-fractal-4": ("fractal", 4, {"width": 80, "height": 64}),
    "tiling-flow-1": ("flow field", 1, {"tiling": True}),
    "tiling-texture-2": ("texture", 2, {"tiling": True}),
    "material-sword-texture-1": ("sword texture", 1, {"tiling": True}),
    "material-weapons-2": ("medieval fantasy weapons", 2, {}),
    "material-wood-3": ("oak wood grain", 3, {}),
    "material-stone-4": ("stone", 4, {}),
    "material-stone-texture-5": ("stone texture", 5, {"tiling": True}),
    "material-leather-texture-6": ("leather texture", 6, {"tiling": True}),
    "material-cloth-texture-7": ("linen fabric texture", 7, {"tiling": True}),
    "material-oak-texture-8": ("oak wood texture", 8, {"tiling": True}),
    "object-sword-design-1": ("sword design", 1, {}),
    "object-battle-axe-2": ("battle axe concept art", 2, {}),
}
# case id -> (parent prompt, parent seed, refine prompt, refine seed, strength)
REFINE: dict[str, tuple[str, int, str, int, float]] = {
    "refine-flow": ("warm flow field", 5, "warm flow field, rain", 9, 0.5),
    "refine-fractal": ("julia fractal", 3, "cooler julia fractal", 4, 0.3),
}

HOW_TO_BUMP = (
    "procedural pixels changed. If intended: bump PROCEDURAL_VERSION in "
    "echo_pipeline/render/backends/procedural/params.py, then run "
    "`python -m echo_pipeline_tests.test_golden --update` and commit both with the change "
    "(stored artifacts keep ids that promise the old pixels otherwise). If not intended: "
    "your change has a side effect on the renderer."
)


def _request(prompt: str, seed: int, **extra: Any) -> RenderRequest:
    fields: dict[str, Any] = {"width": SIDE, "height": SIDE} | extra
    return RenderRequest(prompt=prompt, seed=seed, **fields)


def _digest(image: Image.Image) -> str:
    assert image.mode == "RGB"
    return hashlib.sha256(image.tobytes()).hexdigest()


def render_case(backend: ProceduralBackend, case: str) -> Image.Image:
    """The RGB image of one golden case."""
    if case in TXT2IMG:
        prompt, seed, extra = TXT2IMG[case]
        (out,) = list(backend.render([_request(prompt, seed, **extra)]))
        assert out.info["params"]["version"] == PROCEDURAL_VERSION
        return out.image
    parent_prompt, parent_seed, prompt, seed, strength = REFINE[case]
    parent_request = _request(parent_prompt, parent_seed)
    (parent,) = list(backend.render([parent_request]))
    request = _request(prompt, seed, parent_id="golden-parent", strength=strength)
    return backend.refine(ParentImage("golden-parent", parent.image, parent_request, parent.info), request).image


def drift_share(image: Image.Image, case: str) -> float:
    """Share of the pixels of `image` that differ from the case's stored pixels (1.0 when none)."""
    path = PIXELS / f"{case}.png"
    if not path.exists():
        return 1.0
    with Image.open(path) as stored:
        reference = np.asarray(stored.convert("RGB"), dtype=np.int16)
    actual = np.asarray(image, dtype=np.int16)
    if actual.shape != reference.shape:
        return 1.0
    return float((actual != reference).any(axis=2).mean())


def all_cases() -> list[str]:
    return [*TXT2IMG, *REFINE]


def load_table() -> dict[str, Any]:
    return json.loads(TABLE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def backend() -> ProceduralBackend:
    return ProceduralBackend(workers=1)


@pytest.fixture(scope="module")
def table() -> dict[str, Any]:
    return load_table()


def test_table_matches_version_and_cases(table):
    assert table["version"] == PROCEDURAL_VERSION, (
        f"golden table made for PROCEDURAL_VERSION {table['version']!r}, code says {PROCEDURAL_VERSION!r}: "
        "run `python -m echo_pipeline_tests.test_golden --update`")
    assert sorted(table["hashes"]) == sorted(all_cases()), "cases changed: run the --update command"


@pytest.mark.parametrize("case", all_cases())
def test_pixels_match_golden_hash(backend, table, case):
    expected = table["hashes"].get(case)
    image = render_case(backend, case)
    actual = _digest(image)
    if actual == expected:
        return
    drift = drift_share(image, case)  # another CPU's last bits (see the module docstring)
    assert drift <= MAX_DRIFT_SHARE, (
        f"{case}: sha256 {actual[:12]}..., table {str(expected)[:12]}..., {100 * drift:.1f} % of the pixels "
        f"differ from golden/{case}.png (another CPU may move {100 * MAX_DRIFT_SHARE:g} %): {HOW_TO_BUMP}")


def test_drift_tolerance_catches_a_real_change(backend):
    """The tolerance is for last-bit drift only: a slightly different request is far outside it."""
    image = render_case(backend, "fractal-warm-1")
    assert drift_share(image, "fractal-warm-1") <= MAX_DRIFT_SHARE
    assert drift_share(render_case(backend, "fractal-warm-2"), "fractal-warm-1") > 0.5  # another seed
    shifted = Image.fromarray(np.roll(np.asarray(image), 1, axis=1))
    assert drift_share(shifted, "fractal-warm-1") > 10 * MAX_DRIFT_SHARE


def update() -> int:
    """Rewrite the table and the stored pixels; refuse when pixels changed beyond the CPU drift
    under the same PROCEDURAL_VERSION."""
    backend = ProceduralBackend(workers=1)
    images = {case: render_case(backend, case) for case in all_cases()}
    hashes = {case: _digest(image) for case, image in images.items()}
    old = load_table() if TABLE.exists() else {"version": None, "hashes": {}}
    changed = sorted(c for c, h in hashes.items() if c in old["hashes"] and old["hashes"][c] != h
                     and drift_share(images[c], c) > MAX_DRIFT_SHARE)
    if changed and old["version"] == PROCEDURAL_VERSION:
        print(f"refusing: pixels of {len(changed)} case(s) changed ({', '.join(changed[:5])}) but "
              f"PROCEDURAL_VERSION is still {PROCEDURAL_VERSION!r}; bump it first", file=sys.stderr)
        return 1
    PIXELS.mkdir(exist_ok=True)
    for stale in PIXELS.glob("*.png"):
        if stale.stem not in images:
            stale.unlink()
    for case, image in images.items():
        image.save(PIXELS / f"{case}.png", optimize=True)
    payload = {"version": PROCEDURAL_VERSION, "size": SIDE, "hashes": hashes}
    TABLE.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {TABLE} and {PIXELS}/ ({len(hashes)} cases, version {PROCEDURAL_VERSION}, "
          f"{len(changed)} changed)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        print("usage: python -m echo_pipeline_tests.test_golden --update", file=sys.stderr)
        sys.exit(2)
    sys.exit(update())
