"""Procedural backend: words pick motif/palette/effects, seeds reproduce, sizes, tiling, refine."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends import ParentImage, create_backend
from echo_pipeline.render.backends.procedural import PROCEDURAL_VERSION, ProceduralBackend, words
from echo_pipeline.render.requests import RenderRequest

FAMILIES = {
    "fractal": "fractal",
    "flow": "flow field",
    "waves": "ripples",
    "landscape": "mountains",
    "geometric": "geometric pattern",
    "city": "city skyline",
    "nebula": "nebula",
}


@pytest.fixture(scope="module")
def backend() -> ProceduralBackend:
    return ProceduralBackend()


def req(prompt: str, seed: int = 1, size: int | tuple[int, int] = 96, **kw) -> RenderRequest:
    w, h = (size, size) if isinstance(size, int) else size
    return RenderRequest(prompt=prompt, seed=seed, width=w, height=h, **kw)


def render_one(backend: ProceduralBackend, request: RenderRequest):
    (out,) = list(backend.render([request]))
    return out


def pixels(out) -> np.ndarray:
    return np.asarray(out.image, dtype=np.float64)


# ------------------------------------------------------------------------------------- protocol
def test_identity_and_capabilities(backend):
    assert backend.name == "procedural"
    caps = backend.capabilities
    assert (caps.txt2img, caps.img2img, caps.tiling, caps.negative_prompt) == (True, True, True, True)
    assert (caps.min_side, caps.max_side, caps.size_multiple) == (64, 2048, 1)
    desc = backend.describe()
    assert (desc.backend, desc.model, desc.model_hash, desc.version) == ("procedural", "echo-procedural", "",
                                                                         PROCEDURAL_VERSION)
    assert isinstance(create_backend("procedural"), ProceduralBackend)
    prepared = backend.prepare(req("warm fractal"))
    assert prepared.backend_version == PROCEDURAL_VERSION and prepared.model == "echo-procedural"


def test_constructor_takes_no_options():
    with pytest.raises(TypeError):
        ProceduralBackend(device="cuda")  # type: ignore[call-arg]


@pytest.mark.parametrize("side", [32, 4096])
def test_check_requests_rejects_out_of_range_sizes(backend, side):
    # RenderRequest itself validates sizes; model_construct skips that, as a caller bypassing it would
    bad = RenderRequest.model_construct(**{**req("fractal").model_dump(), "width": side})
    with pytest.raises(InvalidInputError):
        backend.check_requests([bad])
    with pytest.raises(InvalidInputError):
        backend.render([req("fractal"), bad])  # validated at the call, before any image is drawn


def test_progress_called_per_image_and_info_is_json(backend):
    calls = []
    requests = [req(FAMILIES[m], seed=i) for i, m in enumerate(FAMILIES)]
    outs = list(backend.render(requests, progress=lambda done, total: calls.append((done, total))))
    assert calls == [(i, len(requests)) for i in range(1, len(requests) + 1)]
    for out, motif in zip(outs, FAMILIES, strict=True):
        assert out.image.mode == "RGB" and out.image.size == (96, 96)
        info = json.loads(json.dumps(out.info, allow_nan=False))  # strict JSON: no NaN/inf
        assert info["motif"] == motif
        assert {"motif", "palette", "params"} <= set(info)
        assert info["params"]["motif"] == motif and info["params"]["palette"]["name"] == info["palette"]


# --------------------------------------------------------------------------------- determinism
def test_same_request_same_bytes_different_seed_differs(backend):
    a = render_one(backend, req("warm fractal 01, digital art", seed=7))
    b = render_one(ProceduralBackend(), req("warm fractal 01, digital art", seed=7))
    assert a.image.tobytes() == b.image.tobytes()
    assert a.info == b.info
    c = render_one(backend, req("warm fractal 01, digital art", seed=8))
    assert np.abs(pixels(a) - pixels(c)).mean() > 5


@pytest.mark.parametrize("motif", sorted(FAMILIES))
def test_every_family_is_deterministic_and_seed_sensitive(backend, motif):
    prompt = FAMILIES[motif]
    first = render_one(backend, req(prompt, seed=3, size=72))
    again = render_one(backend, req(prompt, seed=3, size=72))
    other = render_one(backend, req(prompt, seed=4, size=72))
    assert first.image.tobytes() == again.image.tobytes()
    assert np.abs(pixels(first) - pixels(other)).mean() > 2


def test_pixels_do_not_depend_on_python_hash_seed(backend):
    """String hashing is salted per process; seeding must not use it."""
    code = (
        "import hashlib;from echo_pipeline.render.backends.procedural import ProceduralBackend;"
        "from echo_pipeline.render.requests import RenderRequest;"
        "r=RenderRequest(prompt='neon flow field, rain',seed=11,width=64,height=64);"
        "print(hashlib.sha256(next(iter(ProceduralBackend().render([r]))).image.tobytes()).hexdigest())"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": str(salt), "PATH": ""}).stdout.strip()
        for salt in (1, 2)
    }
    local = hashlib.sha256(render_one(backend, req("neon flow field, rain", seed=11, size=64)).image.tobytes())
    assert digests == {local.hexdigest()}


# --------------------------------------------------------------------------------------- words
@pytest.mark.parametrize("motif,prompt", [
    ("fractal", "a mandelbrot zoom"), ("fractal", "julia set"), ("fractal", "burning ship"),
    ("flow", "silk in the wind"), ("flow", "Rüzgâr"), ("flow", "ruzgar gibi"), ("flow", "ocean currents, flowing"),
    ("waves", "interference of waves"), ("waves", "moire"), ("waves", "ripples"),
    ("landscape", "misty mountains"), ("landscape", "a quiet valley"),
    ("geometric", "texture"), ("geometric", "tile"), ("geometric", "mandala"), ("geometric", "hexagon pattern"),
    ("city", "cyberpunk cityscape"), ("city", "urban skyline"),
    ("nebula", "galaxy"), ("nebula", "cosmic dust, space"),
])
def test_motif_chosen_by_words(backend, motif, prompt):
    assert render_one(backend, req(prompt, size=64)).info["motif"] == motif


def test_sub_kinds_follow_words(backend):
    assert render_one(backend, req("julia fractal", size=64)).info["params"]["motif_params"]["kind"] == "julia"
    assert render_one(backend, req("burning ship", size=64)).info["params"]["motif_params"]["kind"] == "ship"
    assert render_one(backend, req("mandala", size=64)).info["params"]["motif_params"]["style"] == "mandala"
    assert render_one(backend, req("moire waves", size=64)).info["params"]["motif_params"]["style"] == "moire"


def test_no_motif_word_picks_an_attractive_default_by_seed(backend):
    motifs = {render_one(backend, req("untitled dream", seed=s, size=64)).info["motif"] for s in range(12)}
    assert len(motifs) >= 3
    assert motifs <= {"fractal", "flow", "nebula", "landscape", "waves"}


def test_earliest_word_wins(backend):
    assert render_one(backend, req("warm cool fractal", size=64)).info["palette"] == "warm"
    assert render_one(backend, req("cool warm fractal", size=64)).info["palette"] == "cool"
    assert render_one(backend, req("flow over mountains", size=64)).info["motif"] == "flow"
    assert render_one(backend, req("mountains with flowing mist", size=64)).info["motif"] == "landscape"
    # a style preset appended after the user's words does not take over
    styled = "warm fractal 01, neon noir, rain-slick streets, glowing magenta and cyan signs, night"
    out = render_one(backend, req(styled, size=64))
    assert (out.info["motif"], out.info["palette"]) == ("fractal", "warm")
    # contextual words a preset puts first ("cyberpunk {prompt}") lose to the family the user named
    assert render_one(backend, req("cyberpunk warm fractal, neon lights", size=64)).info["motif"] == "fractal"


def test_neon_noir_is_one_palette():
    assert words.parse("cyberpunk cityscape, neon noir").palette == "neon noir"
    assert words.parse("neon city, noir").palette == "neon"


def test_negative_prompt_excludes_motifs_palettes_and_effects(backend):
    for seed in range(4):
        out = render_one(backend, req("city skyline at night, cyberpunk", seed=seed, size=64,
                                      negative_prompt="city, human, person, figure"))
        assert out.info["motif"] != "city"
    out = render_one(backend, req("neon rain over mountains", size=64, negative_prompt="neon, rain"))
    assert out.info["palette"] not in ("neon", "neon noir")
    assert "rain" not in out.info["effects"]
    assert render_one(backend, req("landscape, vignette", size=64, negative_prompt="vignette")).info["params"][
        "effects"]["vignette"] == 0


def test_effect_words_switch_effects_on(backend):
    out = render_one(backend, req("mountains, rain, fog, glow, film grain, dreamy", size=64))
    assert {"rain", "fog", "glow", "grain", "soft", "vignette"} <= set(out.info["effects"])
    plain = render_one(backend, req("mountains", size=64))
    assert "rain" not in plain.info["effects"]
    assert np.abs(pixels(out) - pixels(plain)).mean() > 2


def test_detail_words_change_detail(backend):
    lo = render_one(backend, req("minimal flow field", size=64)).info["params"]["detail"]
    mid = render_one(backend, req("flow field", size=64)).info["params"]["detail"]
    hi = render_one(backend, req("intricate flow field", size=64)).info["params"]["detail"]
    assert lo < mid < hi


def test_palette_word_recolours_without_recomposing(backend):
    warm = render_one(backend, req("warm flow field", seed=5, size=64)).info["params"]
    cool = render_one(backend, req("cool flow field", seed=5, size=64)).info["params"]
    assert warm["motif_params"] == cool["motif_params"]
    assert warm["palette"]["name"] == "warm" and cool["palette"]["name"] == "cool"


# ------------------------------------------------------------------------------------ palettes
@pytest.mark.parametrize("motif", sorted(FAMILIES))
def test_palettes_read_as_named(backend, motif):
    prompt = FAMILIES[motif]
    warm = [pixels(render_one(backend, req(f"warm {prompt}", seed=s, size=72))) for s in (1, 2)]
    cool = [pixels(render_one(backend, req(f"cool {prompt}", seed=s, size=72))) for s in (1, 2)]
    noir = [pixels(render_one(backend, req(f"noir {prompt}", seed=s, size=72))) for s in (1, 2)]
    for img in warm:
        assert img[..., 0].mean() > img[..., 2].mean() + 20  # reds/oranges/golds dominate
    for img in cool:
        assert img[..., 2].mean() > img[..., 0].mean() + 15
    for img in noir:
        assert img.mean() < 85  # dark
        assert np.abs(img[..., 0] - img[..., 2]).mean() < 40  # few colour accents


@pytest.mark.parametrize("prompt", ["neon flow field", "neon fractal", "neon nebula", "neon city skyline"])
def test_neon_is_saturated_on_dark(backend, prompt):
    for seed in (1, 2):
        img = pixels(render_one(backend, req(prompt, seed=seed, size=96)))
        lum = img.mean(axis=2)
        assert np.percentile(lum, 25) < 60  # a dark ground shows
        bright = img[lum > np.percentile(lum, 90)]
        chroma = bright.max(axis=1) - bright.min(axis=1)
        assert chroma.mean() > 60  # the light is coloured (magenta/cyan), not white


# --------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("size", [(64, 64), (97, 131), (640, 360), (2048, 64), (64, 2048)])
def test_any_size_and_aspect(backend, size):
    motifs = ["fractal", "landscape", "city skyline"] if max(size) < 1000 else ["mountains"]
    for prompt in motifs:
        out = render_one(backend, req(prompt, seed=2, size=size))
        assert out.image.size == size and out.image.mode == "RGB"
        assert pixels(out).std() > 3  # not a blank frame


# -------------------------------------------------------------------------------------- tiling
def _seam_ratio(img: np.ndarray) -> tuple[float, float]:
    """Wrap-around edge difference relative to the typical neighbour difference, per axis."""
    inner_x = np.abs(np.diff(img, axis=1)).mean()
    inner_y = np.abs(np.diff(img, axis=0)).mean()
    edge_x = np.abs(img[:, 0] - img[:, -1]).mean()
    edge_y = np.abs(img[0] - img[-1]).mean()
    return edge_x / (inner_x + 1.0), edge_y / (inner_y + 1.0)


@pytest.mark.parametrize("prompt", ["fractal", "flow field, rain", "ripples", "chladni waves", "truchet pattern",
                                    "hexagon texture", "mountains", "city skyline", "nebula, glow", "mandala"])
def test_tiling_is_seamless(backend, prompt):
    out = render_one(backend, req(prompt, seed=3, size=(112, 96), tiling=True))
    img = pixels(out)
    rx, ry = _seam_ratio(img)
    assert rx < 2.0 and ry < 2.0, (rx, ry)
    # the same check on a rolled copy: the old border is now in the middle and must not show
    rolled = np.roll(np.roll(img, img.shape[0] // 2, axis=0), img.shape[1] // 2, axis=1)
    mid_x = np.abs(rolled[:, img.shape[1] // 2] - rolled[:, img.shape[1] // 2 - 1]).mean()
    assert mid_x < 2.0 * (np.abs(np.diff(img, axis=1)).mean() + 1.0)
    assert out.info["params"]["effects"]["vignette"] == 0


def test_untiled_fractal_has_a_visible_wraparound_seam(backend):
    """The seam check above is not vacuous: an ordinary render does not tile."""
    img = pixels(render_one(backend, req("fractal", seed=3, size=(112, 96))))
    assert max(_seam_ratio(img)) > 2.0


# -------------------------------------------------------------------------------------- refine
def _parent(backend, prompt="warm flow field", seed=5, size=96):
    request = req(prompt, seed=seed, size=size)
    out = render_one(backend, request)
    return ParentImage(artifact_id="parent-1", image=out.image, request=request, info=out.info), out


def _refine_req(prompt, strength, seed=9, size=96):
    return req(prompt, seed=seed, size=size, parent_id="parent-1", strength=strength)


@pytest.mark.parametrize("prompt", ["warm flow field", "fractal", "city skyline", "nebula"])
def test_refine_strength_zero_is_the_parent(backend, prompt):
    parent, out = _parent(backend, prompt)
    same = backend.refine(parent, _refine_req(prompt, 0.0))
    assert np.abs(pixels(same) - pixels(out)).mean() < 1.0
    assert same.info["parent_params"] == out.info["params"]
    assert same.info["parent_artifact_id"] == "parent-1"


@pytest.mark.parametrize("prompt", ["warm flow field", "fractal", "ripples", "mountains", "truchet pattern",
                                    "city skyline", "nebula"])
def test_refine_moves_with_strength_and_keeps_the_motif(backend, prompt):
    parent, out = _parent(backend, prompt)
    moved = backend.refine(parent, _refine_req(prompt, 0.6))
    assert moved.info["motif"] == out.info["motif"]
    assert np.abs(pixels(moved) - pixels(out)).mean() > 1.0
    again = backend.refine(parent, _refine_req(prompt, 0.6))
    assert moved.image.tobytes() == again.image.tobytes()  # refine is deterministic too
    json.dumps(moved.info, allow_nan=False)


def test_refine_applies_new_words(backend):
    parent, out = _parent(backend, "warm flow field")
    rainy = backend.refine(parent, _refine_req("warm flow field, add rain effects", 0.2))
    assert "rain" in rainy.info["effects"] and "rain" not in out.info["effects"]
    cooler = backend.refine(parent, _refine_req("cooler", 0.2))
    assert cooler.info["palette"] == "cool"
    img = pixels(cooler)
    assert img[..., 2].mean() > img[..., 0].mean()
    detailed = backend.refine(parent, _refine_req("more detail", 0.2))
    assert detailed.info["params"]["detail"] > out.info["params"]["detail"]
    no_rain = backend.refine(ParentImage("r", rainy.image, rainy.request, rainy.info), _refine_req("no rain", 0.1))
    assert "rain" not in no_rain.info["effects"]


def test_refine_without_params_rederives_them(backend):
    parent, out = _parent(backend, "mountains, sunset")
    bare = ParentImage(artifact_id="parent-1", image=parent.image, request=parent.request, info={})
    same = backend.refine(bare, _refine_req("mountains, sunset", 0.0))
    assert same.image.tobytes() == out.image.tobytes()


def test_refine_rejects_bad_sizes(backend):
    parent, _ = _parent(backend)
    bad = RenderRequest.model_construct(**{**_refine_req("x", 0.5).model_dump(), "height": 4096})
    with pytest.raises(InvalidInputError):
        backend.refine(parent, bad)


def test_worker_processes_give_identical_images_in_order():
    from echo_pipeline.render.backends.procedural import ProceduralBackend as _Backend
    from echo_pipeline.render.requests import RenderRequest as _Request

    requests = [_Request(prompt=f"warm fractal 0{i}", seed=i, width=80, height=64, index=i) for i in range(4)]
    serial = [r.image.tobytes() for r in _Backend(workers=1).render(requests)]
    pooled = list(_Backend(workers=2).render(requests))
    assert [r.request.index for r in pooled] == [0, 1, 2, 3]
    assert [r.image.tobytes() for r in pooled] == serial


# ------------------------------------------------------------------------------------- framing
@pytest.mark.parametrize("batches,count", [(50, 10), (10, 50), (1, 500)])
def test_framing_points_spread_over_a_projects_seeds(batches, count):
    """A project's seeds (base + batch * stride + k) get framing points at least 0.08 apart in some
    coordinate (sup norm on the torus); 500 independent RNG draws come as close as ~0.045."""
    from echo_pipeline.render.backends.procedural.framing import DIMS, framing_point
    from echo_pipeline.workflows.visual_planner import BATCH_SEED_STRIDE

    seeds = [(1641438593 + b * BATCH_SEED_STRIDE + k) % 2**32 for b in range(batches) for k in range(count)]
    points = np.array([framing_point(s, 12345) for s in seeds])
    assert points.shape == (500, DIMS) and ((points >= 0) & (points < 1)).all()
    nearest = min(
        float(np.minimum(d, 1 - d).max(axis=1).min())
        for i in range(len(points) - 1)
        for d in [np.abs(points[i + 1:] - points[i])]
    )
    assert nearest > 0.08


def test_fractal_framings_follow_the_framing_point(backend):
    """Same seed and text: same framing whatever the palette; the composition is recorded in params."""
    warm = render_one(backend, req("warm fractal", seed=11, size=64)).info["params"]["motif_params"]
    cool = render_one(backend, req("cool fractal", seed=11, size=64)).info["params"]["motif_params"]
    assert warm == cool
    assert {"center", "width", "rotation", "mirror"} <= set(warm)


# ------------------------------------------------------------------------ words used / ignored
@pytest.mark.parametrize("prompt,palette,motif", [
    ("sword texture", "steel", "material"), ("steel", "steel", "flow"),
    ("metal", "steel", "flow"), ("wood", "wood", "flow"), ("stone", "stone", "landscape"),
    ("leather", "leather", "material"), ("oak wood grain", "wood", "material"),
])
def test_material_words_pick_the_material_surface_or_the_closest_picture_motif(backend, prompt, palette, motif):
    """A surface ("texture", "wood grain") is the material motif; a picture of a material the closest family."""
    for seed in (1, 2):
        info = render_one(backend, req(prompt, seed=seed, size=64)).info
        assert (info["palette"], info["motif"], info["motif_source"]) == (palette, motif, "material")
        if motif == "material":
            assert info["kind"] == info["material"] and info["notes"] == []
        else:
            assert info["material"] and "approximated by the closest motif" in info["notes"][0]


def test_material_textures_tile_and_family_words_still_win(backend):
    stone = render_one(backend, req("stone", size=64, tiling=True)).info  # tiling alone makes it a surface
    assert (stone["motif"], stone["kind"], stone["palette"]) == ("material", "stone", "stone")
    sword = render_one(backend, req("sword texture", size=64, tiling=True)).info
    assert (sword["motif"], sword["kind"], sword["palette"]) == ("material", "metal", "steel")
    city = render_one(backend, req("steel city skyline", size=64)).info  # a family noun beats a material
    assert (city["motif"], city["palette"], city["motif_source"]) == ("city", "steel", "prompt")
    warm = render_one(backend, req("warm steel", size=64)).info  # the earlier palette word wins
    assert (warm["palette"], warm["motif"]) == ("warm", "flow")
    unmetal = render_one(backend, req("flow field", size=64, negative_prompt="metal")).info
    assert unmetal["motif"] == "flow" and unmetal["palette"] != "steel"


def test_info_says_which_words_were_used_and_ignored(backend):
    info = render_one(backend, req("a cat", size=64)).info
    assert (info["words_used"], info["words_ignored"], info["motif_source"]) == ([], ["cat"], "seed")
    assert "the seed chose" in info["notes"][0]
    info = render_one(backend, req("warm fractal 01, burning ship, with the digital art", size=64)).info
    assert info["words_used"] == ["warm", "fractal", "burning ship"]
    assert info["words_ignored"] == ["digital", "art"]  # "01", "with", "the" are neither
    assert (info["motif_source"], info["notes"]) == ("prompt", [])
    info = render_one(backend, req("medieval fantasy weapons", size=64)).info
    assert (info["words_used"], info["words_ignored"]) == (["weapons"], ["medieval", "fantasy"])
    json.dumps(info, allow_nan=False)
    parent, _ = _parent(backend, "warm flow field")
    refined = backend.refine(parent, _refine_req("warm flow field, oak", 0.3))
    assert refined.info["words_used"] == ["warm", "flow field", "oak"] and refined.info["palette"] == "wood"


def test_vocabulary_lists_what_the_renderer_knows():
    from echo_pipeline.render.backends.procedural import vocabulary

    vocab = vocabulary()
    assert vocab["motifs"] == ["fractal", "flow", "waves", "landscape", "geometric", "city", "nebula", "material",
                               "object"]
    assert {"sword", "axe", "shield", "staff"} <= set(vocab["objects"]) and "weapon" in vocab["object_words"]
    assert {"metal", "wood", "stone", "leather", "cloth"} == set(vocab["materials"])
    assert {"steel", "wood", "stone", "warm", "neon noir"} <= set(vocab["palettes"])
    assert {"sword", "steel", "oak", "granite"} <= set(vocab["material_words"])
    assert {"julia", "mandelbrot", "ship", "truchet"} <= set(vocab["kinds"])
    assert all(isinstance(v, list) and all(isinstance(w, str) for w in v) for v in vocab.values())
    # every word listed is understood: nothing it lists ends up ignored
    for key in ("motif_words", "palette_words", "material_words", "object_words", "effect_words", "modifiers"):
        for word in vocab[key]:
            assert words.report(word)[1] == [], (key, word)


def test_prefetch_renders_ahead_with_the_same_pixels_and_falls_back_for_other_requests():
    from echo_pipeline.render.backends.procedural import ProceduralBackend

    backend = ProceduralBackend(workers=2)
    requests = [backend.prepare(RenderRequest(prompt="warm fractal", seed=s, width=64, height=64)) for s in range(4)]
    plain = [r.image.tobytes() for r in ProceduralBackend(workers=1).render(requests)]

    backend.prefetch(requests)  # workers start now; render() of the same requests streams their results
    assert [r.image.tobytes() for r in backend.render(requests)] == plain
    # A render of other requests ignores (and stops) an unconsumed prefetch.
    backend.prefetch(requests)
    assert [r.image.tobytes() for r in backend.render(requests[1:])] == plain[1:]
    # close() stops a prefetch nobody consumed; the backend stays usable.
    backend.prefetch(requests)
    backend.close()
    assert [r.image.tobytes() for r in backend.render(requests[:1])] == plain[:1]


def _counted_render_one(request):
    """`_render_one` that leaves a marker file per image rendered (worker processes are forked)."""
    import os
    from pathlib import Path

    from echo_pipeline.render.backends.procedural import backend as module

    marks = Path(os.environ["ECHO_TEST_RENDER_MARKS"])
    # Every image but the first waits until the stream has been stopped (the test's `release`), so
    # how many are rendered depends on the pool's queueing, not on how fast this machine is.
    while request.seed != 0 and not (marks.parent / "release").exists():
        time.sleep(0.005)
    Path(marks, f"{request.seed}.{os.getpid()}").touch()
    return module._original_render_one(request)


def test_stopping_a_pooled_render_early_does_not_render_the_rest(tmp_path, monkeypatch):
    """Ctrl-C, SIGTERM or an error while storing ends the render stream early: the images queued
    behind the ones in progress are cancelled, not rendered and thrown away (a 1,000-image batch
    once kept rendering for minutes after SIGTERM)."""
    from echo_pipeline.render.backends.procedural import backend as module

    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("ECHO_TEST_RENDER_MARKS", str(marks))
    monkeypatch.setattr(module, "_original_render_one", module._render_one, raising=False)
    monkeypatch.setattr(module, "_render_one", _counted_render_one)
    shutdown = module.ProcessPoolExecutor.shutdown

    def shutdown_then_release(pool, wait=True, *, cancel_futures=False):
        shutdown(pool, wait=False, cancel_futures=cancel_futures)  # what is cancelled is decided here
        (tmp_path / "release").touch()
        shutdown(pool, wait=wait)

    monkeypatch.setattr(module.ProcessPoolExecutor, "shutdown", shutdown_then_release)
    requests = [RenderRequest(prompt="warm fractal", seed=s, width=64, height=64) for s in range(30)]
    stream = ProceduralBackend(workers=2).render(requests)
    next(stream)
    stream.close()
    rendered = len(list(marks.iterdir()))
    # the first image, the two workers' current ones and the executor's queued calls (3) at most
    assert 1 <= rendered <= 6, rendered


def _render_in_daemon(requests, results) -> None:
    results.put([img.image.tobytes() for img in ProceduralBackend(workers=2).render(requests)])


def test_a_daemonic_process_renders_a_batch_itself():
    """A daemonic process may not start children (a Celery prefork worker running a step is one):
    the backend renders the batch in that process instead of failing, with the same pixels."""
    import multiprocessing

    requests = [RenderRequest(prompt="warm fractal", seed=s, width=64, height=64) for s in range(3)]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    process = context.Process(target=_render_in_daemon, args=(requests, results), daemon=True)
    process.start()
    rendered = results.get(timeout=300)  # a hang guard, not a speed budget
    process.join(60)
    assert process.exitcode == 0
    assert rendered == [img.image.tobytes() for img in ProceduralBackend(workers=1).render(requests)]


# ------------------------------------------------------------------------ objects (game-asset concepts)
@pytest.mark.parametrize("prompt,kind", [
    ("sword design", "sword"), ("concept art of a steel sword", "sword"), ("katana", "sword"),
    ("battle axe concept art", "axe"), ("war hammer", "hammer"), ("mace", "hammer"), ("knife", "dagger"),
    ("lance", "spear"), ("round wooden shield", "shield"), ("wizard staff", "staff"), ("cyberpunk sword", "sword"),
    ("a fractal sword design", "sword"),  # in a concept/design prompt the object beats a family noun
])
def test_object_nouns_draw_the_object(backend, prompt, kind):
    info = render_one(backend, req(prompt, size=64)).info
    assert (info["motif"], info["kind"], info["motif_source"]) == ("object", kind, "prompt")
    assert info["effects"] == ["grain"]  # a plain backdrop: no vignette or glow unless asked for


def test_weapons_let_the_seed_pick_a_weapon_and_materials_colour_the_object(backend):
    from echo_pipeline.render.backends.procedural.motifs import object as obj

    kinds = {render_one(backend, req("medieval fantasy weapons", seed=s, size=64)).info["kind"] for s in range(8)}
    assert kinds <= set(obj.WEAPONS) and len(kinds) >= 2
    info = render_one(backend, req("medieval fantasy weapons", size=64)).info
    assert (info["motif"], info["palette"], info["material"]) == ("object", "steel", "metal")
    assert "the seed chose" in info["notes"][0]
    assert render_one(backend, req("golden shield", size=64)).info["palette"] == "gold"
    assert render_one(backend, req("shield", size=64)).info["palette"] == "steel"  # an object's default metal
    assert set(obj.KINDS) == set(words.OBJECTS)


@pytest.mark.parametrize("prompt,tiling,motif", [
    ("sword texture", False, "material"), ("sword", True, "material"), ("sword design", True, "material"),
    ("shield", True, None), ("steel fractal", False, "fractal"), ("nebula with a sword", False, "nebula"),
])
def test_surfaces_and_family_nouns_typed_first_never_draw_an_object(backend, prompt, tiling, motif):
    info = render_one(backend, req(prompt, size=64, tiling=tiling)).info
    assert info["motif"] != "object"
    if motif:
        assert info["motif"] == motif
    assert words.parse("sword", negative="weapons").motif != "object"  # a negative "weapons" rules objects out


def _silhouette(image) -> tuple[np.ndarray, np.ndarray]:
    """(the 2-px border ring as an (n, 3) array in sRGB 0..1, foreground mask) of an object concept: the
    foreground is whatever is far from the backdrop's soft vertical gradient (each row's border median)."""
    px = np.asarray(image, dtype=np.float64) / 255.0
    ring = np.concatenate([px[:2].reshape(-1, 3), px[-2:].reshape(-1, 3), px[:, :2].reshape(-1, 3),
                           px[:, -2:].reshape(-1, 3)])
    rows = np.median(np.concatenate([px[:, :2], px[:, -2:]], axis=1), axis=1)  # (h, 3): the backdrop per row
    dist = np.sqrt(((px - rows[:, None, :]) ** 2).sum(-1))
    return ring, dist > 0.12


@pytest.mark.parametrize("kind", ["sword", "dagger", "axe", "hammer", "spear", "shield", "staff"])
def test_object_silhouettes_are_clean_and_fill_the_frame(backend, kind):
    """A plain border, one connected item spanning 56-84 % of the frame's side at a pose of its seed
    (its box 8-60 %: thin weapons cover less), never touching the frame."""
    from scipy import ndimage

    for seed in (1, 2):
        out = render_one(backend, req(f"{kind} design", seed=seed, size=128))
        assert out.info["kind"] == kind
        border, fg = _silhouette(out.image)
        assert border.min() > 0.7 and np.ptp(border, axis=1).max() < 0.05  # light neutral grey all round
        assert np.ptp(border.mean(axis=1)) < 0.12  # only the backdrop's soft gradient: nothing of the item
        labels, n = ndimage.label(fg)
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.max() >= 0.97 * sizes.sum()  # one item, no specks
        item = labels == int(np.argmax(sizes)) + 1
        ys, xs = np.nonzero(item)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) / item.size
        assert 0.08 <= box <= 0.6 or kind == "shield" and 0.3 <= box <= 0.75, (seed, box)  # upright blades: ~0.1
        assert 0.02 <= item.mean() <= 0.6  # a thin staff at the smallest scale: ~3 %
        assert 0.5 <= max(ys.max() - ys.min(), xs.max() - xs.min()) / 128 <= 0.9
        assert ys.min() > 0 and xs.min() > 0 and ys.max() < 127 and xs.max() < 127  # inside the frame


def test_object_seeds_give_different_designs_and_a_seed_the_same_pixels(backend):
    outs = [render_one(backend, req("sword design", seed=s, size=96)) for s in range(1, 5)]
    shapes = [json.dumps(o.info["params"]["motif_params"], sort_keys=True) for o in outs]
    assert len(set(shapes)) == 4
    masks = [_silhouette(o.image)[1] for o in outs]
    for i in range(4):
        for j in range(i + 1, 4):
            assert (masks[i] != masks[j]).mean() > 0.01  # different silhouettes, not only recoloured
    again = render_one(backend, req("sword design", seed=1, size=96))
    assert again.image.tobytes() == outs[0].image.tobytes()


def test_refining_an_object_can_change_its_kind(backend):
    parent, _ = _parent(backend, "sword design")
    refined = backend.refine(parent, _refine_req("sword design, shield", 0.5))
    assert (refined.info["motif"], refined.info["kind"]) == ("object", "shield")
    same = backend.refine(parent, _refine_req("sword design", 0.0))
    assert same.info["params"]["motif_params"] == parent.info["params"]["motif_params"]
