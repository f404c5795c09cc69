"""Material textures: the procedural `material` motif, the seam measure and the derived game-engine maps."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
from PIL import Image

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.media import texture_maps
from echo_pipeline.media.texture_maps import (
    NORMAL_CONVENTION,
    SEAM_RATIO_TILEABLE,
    decode_normal,
    derive_maps,
    normal_from_height,
    seam_measure,
)
from echo_pipeline.render.backends.procedural import ProceduralBackend, words
from echo_pipeline.render.backends.procedural import params as P
from echo_pipeline.render.backends.procedural.motifs import material
from echo_pipeline.render.requests import RenderRequest

SIDE = 96
KIND_PROMPTS = {"metal": "sword texture", "wood": "oak wood texture", "stone": "granite stone texture",
                "leather": "leather texture", "cloth": "linen fabric texture"}


@pytest.fixture(scope="module")
def backend() -> ProceduralBackend:
    return ProceduralBackend(workers=1)


def render(backend, prompt: str, seed: int = 1, side: int = SIDE, tiling: bool = True, **extra):
    request = RenderRequest(prompt=prompt, seed=seed, width=side, height=side, tiling=tiling, **extra)
    (out,) = list(backend.render([request]))
    return out


@pytest.fixture(scope="module")
def textures(backend) -> dict[str, Image.Image]:
    return {kind: render(backend, prompt).image for kind, prompt in KIND_PROMPTS.items()}


# ------------------------------------------------------------------------ words -> motif and kind
@pytest.mark.parametrize("prompt,kind,palette", [
    ("sword texture", "metal", "steel"), ("forged iron", "metal", "steel"), ("oak", "wood", "wood"),
    ("timber planks", "wood", "wood"), ("cobblestone", "stone", "stone"), ("marble", "stone", "stone"),
    ("leather", "leather", "leather"), ("wool fabric", "cloth", "cloth"), ("denim", "cloth", "cloth"),
])
def test_material_words_on_a_tiling_request_pick_the_material_motif_and_kind(backend, prompt, kind, palette):
    info = render(backend, prompt, side=64).info
    assert (info["motif"], info["kind"], info["palette"], info["motif_source"]) == ("material", kind, palette,
                                                                                    "material")
    assert info["notes"] == []  # drawn by the material renderer: nothing approximated


def test_surface_words_pick_the_material_motif_without_tiling_and_pictures_keep_their_family(backend):
    surface = render(backend, "oak wood texture", side=64, tiling=False).info
    assert (surface["motif"], surface["kind"]) == ("material", "wood")
    grain = render(backend, "walnut wood grain", side=64, tiling=False).info  # a surface phrase
    assert (grain["motif"], grain["kind"]) == ("material", "wood")
    concept = render(backend, "concept art of a steel sword", side=64, tiling=False).info
    # an object noun in a concept prompt draws the object (motif `object`), in the material's palette
    assert (concept["motif"], concept["palette"], concept["motif_source"]) == ("object", "steel", "prompt")
    assert render(backend, "steel sword texture", side=64, tiling=False).info["motif"] == "material"
    fractal = render(backend, "steel fractal", side=64).info  # a family noun the user typed wins
    assert (fractal["motif"], fractal["palette"], fractal["motif_source"]) == ("fractal", "steel", "prompt")
    seeded = render(backend, "material", side=64).info  # the family word alone: the seed picks a kind
    assert seeded["motif"] == "material" and seeded["kind"] in material.KINDS
    assert seeded["palette"] == words.MATERIALS[seeded["kind"]]["palette"]


def test_kinds_agree_between_the_renderer_the_words_and_the_maps():
    assert material.KINDS == P.MATERIAL_KINDS == texture_maps.KINDS
    assert set(material.KINDS) == set(words.MATERIALS)
    assert "material" in words.vocabulary()["motifs"]


def test_a_material_word_refines_a_surface_into_another_kind(backend):
    from echo_pipeline.render.backends import ParentImage

    parent = render(backend, "sword texture", side=64)
    request = RenderRequest(prompt="sword texture, oak", seed=3, width=64, height=64, tiling=True,
                            parent_id="p", strength=0.3)
    refined = backend.refine(ParentImage("p", parent.image, parent.request, parent.info), request)
    assert (refined.info["motif"], refined.info["kind"], refined.info["palette"]) == ("material", "wood", "wood")
    assert "kind:wood" in refined.info["changes"]


# ------------------------------------------------------------------------ the look
def _hsv(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)[::7] / 255.0
    return np.array([colorsys.rgb_to_hsv(*px) for px in rgb])


def test_steel_is_a_cold_low_saturation_grey_and_wood_is_brown(textures):
    steel = _hsv(textures["metal"])
    assert steel[:, 1].mean() < 0.15  # grey ...
    rgb = np.asarray(textures["metal"], dtype=np.float64).reshape(-1, 3).mean(axis=0)
    assert rgb[2] > rgb[0]  # ... leaning cold blue, not warm
    assert 0.25 < steel[:, 2].mean() < 0.8  # mid-tone metal, neither black nor blown out
    wood = _hsv(textures["wood"])
    hue_deg = np.median(wood[:, 0]) * 360
    assert 18 < hue_deg < 45 and wood[:, 1].mean() > 0.3  # orange-brown, clearly coloured
    leather, cloth = _hsv(textures["leather"]), _hsv(textures["cloth"])
    assert leather[:, 2].mean() < wood[:, 2].mean()  # leather is darker than oak
    assert cloth[:, 1].mean() < wood[:, 1].mean()  # undyed linen is paler than wood


def test_kinds_have_their_structure(textures):
    """Brushed metal is anisotropic; cloth shows holes between threads; stone dark cracks between stones."""
    metal = np.asarray(textures["metal"].convert("L"), dtype=np.float64)
    across = np.mean(np.diff(metal, axis=0) ** 2)
    along = np.mean(np.diff(metal, axis=1) ** 2)
    assert max(across, along) > 1.5 * min(across, along)
    cloth = np.asarray(textures["cloth"].convert("L"), dtype=np.float64)
    assert np.percentile(cloth, 0.5) < 0.7 * np.median(cloth)  # the holes between crossing threads
    stone = np.asarray(textures["stone"].convert("L"), dtype=np.float64)
    assert np.percentile(stone, 2) < 0.7 * np.median(stone)


def test_material_textures_are_deterministic(backend):
    a = render(backend, "leather texture", seed=5, side=64).image
    b = render(backend, "leather texture", seed=5, side=64).image
    assert a.tobytes() == b.tobytes()
    assert render(backend, "leather texture", seed=6, side=64).image.tobytes() != a.tobytes()


# ------------------------------------------------------------------------ seam measure
def test_tiled_textures_of_every_kind_have_an_invisible_seam(backend):
    for kind, prompt in KIND_PROMPTS.items():
        for seed in (1, 2):
            ratio = seam_measure(render(backend, prompt, seed=seed).image)["seam_ratio"]
            assert ratio < SEAM_RATIO_TILEABLE, (kind, seed, ratio)


def test_non_tiling_images_have_a_visible_seam(backend):
    ramp = np.tile(np.linspace(0, 255, 64), (64, 1)).astype(np.uint8)
    measured = seam_measure(Image.fromarray(ramp, "L"))
    assert measured["seam_ratio"] > 1000
    assert set(measured) == {"seam_energy", "interior_energy", "seam_ratio"}
    fractal = seam_measure(render(backend, "warm fractal", tiling=False).image)
    assert fractal["seam_ratio"] > 10
    assert seam_measure(Image.new("RGB", (16, 16), "gray"))["seam_ratio"] == 1.0  # flat: nothing to see


def test_seam_measure_rejects_what_is_not_an_image():
    with pytest.raises(InvalidInputError):
        seam_measure(np.zeros((4, 4)))
    with pytest.raises(InvalidInputError):
        seam_measure(np.zeros(100))


# ------------------------------------------------------------------------ derived maps
def test_maps_have_the_right_modes_and_sizes_and_tile(textures):
    for kind, albedo in textures.items():
        maps = derive_maps(albedo, kind=kind)
        assert {name: image.mode for name, image in maps.items()} == {"height": "L", "normal": "RGB",
                                                                      "roughness": "L"}
        assert all(image.size == albedo.size for image in maps.values())
        for name, image in maps.items():
            assert seam_measure(image)["seam_ratio"] < SEAM_RATIO_TILEABLE, (kind, name)
            assert np.asarray(image).std() > 1.0, (kind, name)  # not flat


def test_maps_are_shift_equivariant_so_they_wrap_exactly(textures):
    """Rolling the albedo rolls every map by the same amount: all filtering wraps around the border."""
    albedo = textures["stone"]
    rolled = Image.fromarray(np.roll(np.asarray(albedo), (17, 40), axis=(0, 1)))
    plain, shifted = derive_maps(albedo, kind="stone"), derive_maps(rolled, kind="stone")
    for name in plain:
        expected = np.roll(np.asarray(plain[name]).astype(int), (17, 40), axis=(0, 1))
        assert np.abs(np.asarray(shifted[name]).astype(int) - expected).max() <= 1, name


def test_normal_map_is_opengl_green_up():
    assert NORMAL_CONVENTION == "OpenGL (+Y up)"
    rows = np.linspace(1.0, 0.0, 64)[:, None] * np.ones((1, 64))  # height rises towards the top
    vectors = decode_normal(normal_from_height(rows, depth=20.0))[4:-4]  # rows away from the wrap
    assert np.allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=0.03)
    # a slope rising towards the top faces down (-Y): green below 128; x flat; z out
    assert vectors[..., 1].mean() < -0.1 and abs(vectors[..., 0].mean()) < 0.01 and vectors[..., 2].min() > 0
    flipped = decode_normal(normal_from_height(rows[::-1], depth=20.0))[4:-4]  # rises towards the bottom
    assert flipped[..., 1].mean() > 0.1
    cols = np.linspace(0.0, 1.0, 64)[None, :] * np.ones((64, 1))  # rises to the right: faces left (-X)
    assert decode_normal(normal_from_height(cols, depth=20.0))[:, 4:-4, 0].mean() < -0.1
    # a bump's upper edge faces up: green > 128 above the centre, < 128 below it
    y, x = np.mgrid[0:64, 0:64]
    bump = np.exp(-((y - 32) ** 2 + (x - 32) ** 2) / 60.0)
    n = decode_normal(normal_from_height(bump, depth=10.0))
    assert n[26, 32, 1] > 0.05 and n[38, 32, 1] < -0.05


def test_roughness_is_material_aware(textures):
    mean = {kind: np.asarray(derive_maps(image, kind=kind)["roughness"]).mean() for kind, image in textures.items()}
    assert mean["metal"] < mean["wood"] < mean["stone"]
    assert mean["metal"] < mean["cloth"] and mean["leather"] < mean["cloth"]


def test_derive_maps_is_deterministic_and_checks_its_input(textures):
    a, b = derive_maps(textures["wood"], kind="wood"), derive_maps(textures["wood"], kind="wood")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert derive_maps(textures["wood"])["height"].size == textures["wood"].size  # generic kind
    with pytest.raises(InvalidInputError, match="unknown material kind"):
        derive_maps(textures["wood"], kind="glass")
    with pytest.raises(InvalidInputError):
        derive_maps(np.zeros((32, 32, 3)))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        derive_maps(Image.new("RGB", (4, 4)))
