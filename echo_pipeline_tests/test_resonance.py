"""Resonance: technical scores, style embeddings, consistency, uniqueness, style memory, score tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from echo_pipeline.artifacts import ArtifactStore
from echo_pipeline.errors import InvalidInputError, NotFoundError, StorageError
from echo_pipeline.resonance import (
    MIN_STABLE_IMAGES,
    QualityAssessor,
    StyleDescriptor,
    StyleMemory,
    get_embedder,
    learn_style,
    load_memory,
    load_scores,
    near_duplicates,
    save_memory,
    save_scores,
    style_consistency,
    technical_scores,
)
from echo_pipeline.resonance import quality_assessor as qa
from echo_pipeline.resonance.memory_system import MEMORY_FILE, tokenize

# --------------------------------------------------------------------------------------------------
# Test images built in code


def warm_waves(seed: int, size: int = 96) -> Image.Image:
    """One "style": smooth interference patterns in an orange/red/yellow palette."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    field = np.zeros((size, size))
    for angle in rng.uniform(0, np.pi, 4):
        freq = rng.uniform(1.5, 4.0)
        field += np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 6))
    f = (field - field.min()) / (field.max() - field.min())
    rgb = np.stack([120 + 135 * f, 30 + 170 * f**1.5, 10 + 50 * f**3], axis=-1)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")


def cool_stripes(seed: int = 0, size: int = 96) -> Image.Image:
    """Another style: hard-edged blue/cyan stripes with grain."""
    rng = np.random.default_rng(seed)
    x = np.arange(size)
    stripes = ((x // 6) % 2)[None, :].repeat(size, 0).astype(float)
    grain = rng.normal(0, 0.08, (size, size))
    f = (stripes + grain).clip(0, 1)
    rgb = np.stack([10 + 30 * f, 40 + 140 * f, 90 + 165 * f], axis=-1)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")


def solid(colour=(128, 128, 128), size: int = 96) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def checker(size: int = 128, square: int = 8) -> Image.Image:
    idx = (np.indices((size, size)) // square).sum(axis=0) % 2
    arr = np.zeros((size, size, 3), dtype=np.uint8)
    arr[idx == 1] = (245, 220, 40)
    arr[idx == 0] = (20, 20, 120)
    return Image.fromarray(arr, "RGB")


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------------------------------
# Technical scores


def test_technical_scores_keys_and_ranges():
    rng = np.random.default_rng(3)
    noise = Image.fromarray(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8), "RGB")
    images = [warm_waves(1), cool_stripes(), solid(), solid((255, 255, 255)), solid((0, 0, 0)), checker(), noise,
              warm_waves(2).convert("L"), warm_waves(3).convert("RGBA")]
    for image in images:
        scores = technical_scores(image)
        assert set(scores) == {"sharpness", "contrast", "colourfulness", "entropy", "exposure", "noise", "technical"}
        for key, value in scores.items():
            assert 0.0 <= value <= 100.0, (key, value)
        parts = {k: v for k, v in scores.items() if k != "technical"}
        expected = sum(parts[k] * w for k, w in qa.TECHNICAL_WEIGHTS.items())
        assert scores["technical"] == pytest.approx(expected)


def test_sharp_high_contrast_beats_flat_grey():
    sharp = technical_scores(checker())
    flat = technical_scores(solid((128, 128, 128)))
    assert flat["sharpness"] == 0 and flat["contrast"] == 0 and flat["entropy"] == 0 and flat["colourfulness"] == 0
    # sharpness > 85 (was > 90): the noise estimate reads the checker's corners as a little noise
    # (noise ~89), and sharpness is damped by it.
    assert sharp["sharpness"] > 85 and sharp["contrast"] > 90 and sharp["colourfulness"] > 50
    assert sharp["technical"] > flat["technical"] + 30


def test_blur_lowers_sharpness_and_grey_has_no_colour():
    # 8-px squares (were 4): a 4-px checkerboard is pixel-scale texture that the 3x3 noise estimate
    # reads as noise (noise ~10), which now damps its sharpness.
    image = checker(256, 8)
    blurred = image.filter(ImageFilter.GaussianBlur(4))
    assert technical_scores(blurred)["sharpness"] < technical_scores(image)["sharpness"] - 30
    grey = Image.fromarray(np.tile(np.linspace(0, 255, 128, dtype=np.uint8), (64, 1)), "L")
    assert technical_scores(grey)["colourfulness"] == pytest.approx(0.0, abs=1e-6)
    assert technical_scores(grey)["entropy"] > 80  # every grey level present


def test_clipped_white_image_has_poor_exposure():
    white = technical_scores(solid((255, 255, 255)))
    black = technical_scores(solid((0, 0, 0)))
    mid = technical_scores(warm_waves(5))
    assert white["exposure"] == 0 and black["exposure"] == 0
    assert mid["exposure"] > 60
    # Mostly blown out (70 % white) is still poor.
    arr = np.full((100, 100, 3), 255, np.uint8)
    arr[:30] = 110
    assert technical_scores(Image.fromarray(arr))["exposure"] < 20


def noisy(image: Image.Image, std: float, seed: int = 0) -> Image.Image:
    arr = np.asarray(image.convert("RGB"), dtype=np.float64)
    arr = arr + np.random.default_rng(seed).normal(0, std, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def julia_renders() -> list[Image.Image]:
    from echo_pipeline.render.backends.procedural import ProceduralBackend
    from echo_pipeline.render.requests import RenderRequest

    backend = ProceduralBackend(workers=1)
    requests = [RenderRequest(prompt="warm fractal", seed=s, width=256, height=256) for s in range(3)]
    requests.append(RenderRequest(prompt="cool ocean waves", seed=7, width=256, height=256))
    return [r.image for r in backend.render(requests)]


def test_known_properties_blur_grey_noise():
    image = warm_waves(4, size=128)
    base = technical_scores(checker(256, 8))
    assert technical_scores(checker(256, 8).filter(ImageFilter.GaussianBlur(3)))["sharpness"] < base["sharpness"] - 30
    # A grey copy is less colourful than the colour original.
    assert technical_scores(image.convert("L"))["colourfulness"] < technical_scores(image)["colourfulness"] - 20
    # Added noise lowers the noise score (higher = cleaner) monotonically.
    clean = technical_scores(image)["noise"]
    assert clean > 90
    steps = [technical_scores(noisy(image, std))["noise"] for std in (5, 15, 40)]
    assert clean > steps[0] > steps[1] > steps[2]
    assert steps[2] < 10


def test_noise_estimate_matches_known_sigma():
    rng = np.random.default_rng(1)
    for std in (5.0, 10.0, 20.0):
        y = 128 + rng.normal(0, std, (256, 256))
        assert qa.noise_sigma(y) == pytest.approx(std, rel=0.05)
    plane = np.add.outer(np.arange(64.0), 2 * np.arange(64.0))  # a ramp: no noise at all
    assert qa.noise_sigma(plane) == pytest.approx(0.0, abs=1e-9)
    assert qa.noise_sigma(np.zeros((2, 2))) == 0.0


def test_pure_noise_scores_below_a_clean_fractal(julia_renders):
    rng = np.random.default_rng(2)
    uniform = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), "RGB")
    gauss = Image.fromarray((128 + rng.normal(0, 60, (256, 256, 3))).clip(0, 255).astype(np.uint8), "RGB")
    fractals = [technical_scores(im) for im in julia_renders[:3]]
    for noise_image in (uniform, gauss):
        scores = technical_scores(noise_image)
        assert scores["noise"] < 1 and scores["sharpness"] < 1  # noise is not detail
        for fractal in fractals:
            assert fractal["noise"] > 85
            assert scores["technical"] < fractal["technical"] - 15, (scores, fractal)


def test_crops_are_near_duplicates_different_renders_are_not(julia_renders):
    # Two overlapping crops (shifted by 2 px) of each render are flagged by the project-wide
    # near-duplicate rule; different renders (other seeds, another prompt) are not.
    crops = {}
    for i, image in enumerate(julia_renders):
        crops[f"a{i}"] = qa.phash_hex(image.crop((0, 0, 254, 254)))
        crops[f"b{i}"] = qa.phash_hex(image.crop((2, 2, 256, 256)))
        assert qa.hamming(crops[f"a{i}"], crops[f"b{i}"]) <= qa.NEAR_DUPLICATE_DISTANCE
    pairs = qa.project_near_duplicates({k: v for k, v in crops.items() if k.startswith("a")},
                                       {k: v for k, v in crops.items() if k.startswith("b")})
    assert sorted((a, b) for a, b, _ in pairs) == [(f"a{i}", f"b{i}") for i in range(len(julia_renders))]


def test_scoring_weights_file(tmp_path):
    from echo_pipeline.settings import REPO_CONFIG_DIR

    assert qa.load_scoring_weights(tmp_path) == qa.ScoringWeights()  # no file: built-ins
    shipped = qa.load_scoring_weights(REPO_CONFIG_DIR)
    assert shipped.technical == qa.TECHNICAL_WEIGHTS and shipped.total == qa.TOTAL_WEIGHTS
    path = tmp_path / "scoring.yaml"
    path.write_text("technical:\n  noise: 0\n  sharpness: 1\ntotal:\n  technical: 1\n")
    weights = qa.load_scoring_weights(tmp_path)
    assert weights.technical["noise"] == 0 and weights.technical["contrast"] == qa.TECHNICAL_WEIGHTS["contrast"]
    assert weights.total["aesthetic"] == qa.TOTAL_WEIGHTS["aesthetic"]
    frame = QualityAssessor(weights=weights).assess([("a", warm_waves(1)), ("b", cool_stripes())])
    row = frame.iloc[0]
    w = weights.technical
    expected = sum(row[k] * w[k] for k in w) / sum(w.values())
    assert row["technical"] == pytest.approx(expected)
    for text, key in [("technical:\n  sharpnes: 1\n", "technical.sharpnes"), ("total:\n  technical: -1\n", "total.technical"),
                      ("total:\n  uniqueness: abc\n", "total.uniqueness"), ("weights: {}\n", "weights"),
                      ("technical: [1, 2]\n", "technical"), ("technical: {a: [}\n", "scoring.yaml")]:
        path.write_text(text)
        with pytest.raises(InvalidInputError, match=key.replace(".", r"\.")) as info:
            qa.load_scoring_weights(tmp_path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# Embeddings


def test_embedding_shape_normalisation_and_determinism():
    emb = get_embedder()
    assert isinstance(emb, StyleDescriptor) and emb.name == "style-descriptor-v1"
    assert get_embedder("style-descriptor-v1").dim == emb.dim
    images = [warm_waves(1), cool_stripes(), solid(), warm_waves(1, size=200).resize((150, 90))]
    a = emb.embed(images)
    b = get_embedder().embed(images)
    assert a.shape == (4, emb.dim) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])
    assert emb.embed([]).shape == (0, emb.dim)


def test_unknown_embedder():
    with pytest.raises(NotFoundError, match="style-descriptor"):
        get_embedder("clip-vit-h")


def test_same_style_closer_than_cross_style():
    emb = get_embedder()
    warm = emb.embed([warm_waves(s) for s in range(6)])
    cool = emb.embed([cool_stripes(s) for s in range(3)])
    within = [cos(warm[i], warm[j]) for i in range(6) for j in range(i + 1, 6)]
    across = [cos(w, c) for w in warm for c in cool]
    assert min(within) > max(across)
    assert np.mean(within) - np.mean(across) > 0.3


# --------------------------------------------------------------------------------------------------
# Style consistency


def test_consistency_same_style_high_outlier_low():
    emb = get_embedder()
    train = emb.embed([warm_waves(s) for s in range(8)])
    centroid = train.mean(axis=0)
    centroid /= np.linalg.norm(centroid)
    spread = float(np.mean(1 - train @ centroid))
    fresh = emb.embed([warm_waves(s) for s in range(100, 104)])
    outlier = emb.embed([cool_stripes(1), solid((0, 200, 80))])
    assert (style_consistency(train, centroid, spread) > 80).all()
    assert (style_consistency(fresh, centroid, spread) > 80).all()
    assert (style_consistency(outlier, centroid, spread) < 50).all()
    # Without a spread, the documented default applies and the ordering holds.
    assert style_consistency(fresh, centroid, None).min() > style_consistency(outlier, centroid, None).max()
    with pytest.raises(InvalidInputError, match="dimensions"):
        style_consistency(fresh, centroid[:10], spread)


def test_consistency_mapping_is_documented_curve():
    # d = spread -> ~99; d = 3 spread -> 50; monotone decreasing.
    assert qa.consistency_from_distance(0.1, 0.1)[()] == pytest.approx(100 / (1 + (1 / 3) ** 4))
    assert qa.consistency_from_distance(0.3, 0.1)[()] == pytest.approx(50.0)
    values = qa.consistency_from_distance(np.linspace(0, 1, 20), 0.1)
    assert (np.diff(values) < 0).all() and values[0] == 100


# --------------------------------------------------------------------------------------------------
# QualityAssessor


def test_assess_columns_batch_consistency_and_total():
    items = [(f"w{s}", warm_waves(s)) for s in range(5)] + [("cool", cool_stripes())]
    frame, embeddings = QualityAssessor().assess_with_embeddings(items)
    assert list(frame["artifact_id"]) == [a for a, _ in items]
    for column in qa.SCORE_COLUMNS:
        assert column in frame.columns
    assert embeddings.shape == (6, get_embedder().dim)
    by_id = frame.set_index("artifact_id")
    assert by_id.loc["cool", "style_consistency"] < 50
    assert (by_id.loc[[f"w{s}" for s in range(5)], "style_consistency"] > 80).all()
    assert frame["alignment"].isna().all() and frame["aesthetic"].isna().all()
    assert frame["phash"].str.fullmatch(r"[0-9a-f]{16}").all()
    for _, row in frame.iterrows():
        w = qa.TOTAL_WEIGHTS
        expected = (w["technical"] * row["technical"] + w["style_consistency"] * row["style_consistency"]
                    + w["uniqueness"] * row["uniqueness"]) / (w["technical"] + w["style_consistency"] + w["uniqueness"])
        assert row["total"] == pytest.approx(expected)
        assert 0 <= row["total"] <= 100
    # assess() is the same table.
    pd.testing.assert_frame_equal(QualityAssessor().assess(items), frame)


def test_assess_with_centroid_and_single_item():
    assessor = QualityAssessor()
    single = assessor.assess([("only", warm_waves(1))])
    assert math.isnan(single.loc[0, "style_consistency"])
    assert single.loc[0, "uniqueness"] == 100 and single.loc[0, "nearest_id"] is None
    assert single.loc[0, "total"] == pytest.approx(
        (qa.TOTAL_WEIGHTS["technical"] * single.loc[0, "technical"] + qa.TOTAL_WEIGHTS["uniqueness"] * 100)
        / (qa.TOTAL_WEIGHTS["technical"] + qa.TOTAL_WEIGHTS["uniqueness"])
    )
    train = get_embedder().embed([warm_waves(s) for s in range(6)])
    centroid = train.mean(0) / np.linalg.norm(train.mean(0))
    spread = float(np.mean(1 - train @ centroid))
    one = assessor.assess([("warm", warm_waves(42))], centroid=centroid, spread=spread)
    off = assessor.assess([("cool", cool_stripes(4))], centroid=centroid, spread=spread)
    assert one.loc[0, "style_consistency"] > 80 > 50 > off.loc[0, "style_consistency"]
    assert one.loc[0, "total"] > off.loc[0, "total"]
    assert assessor.assess([]).empty
    with pytest.raises(InvalidInputError, match="unique"):
        assessor.assess([("a", solid()), ("a", solid())])


def test_uniqueness_identical_images_and_near_duplicates():
    image = warm_waves(7)
    items = [("a", image), ("b", image.copy()), ("c", cool_stripes(2)), ("d", checker())]
    frame = QualityAssessor().assess(items).set_index("artifact_id")
    assert frame.loc["a", "uniqueness"] == 0 and frame.loc["b", "uniqueness"] == 0
    assert frame.loc["a", "nearest_id"] == "b" and frame.loc["b", "nearest_id"] == "a"
    assert frame.loc["c", "uniqueness"] > 50
    pairs = near_duplicates(frame.reset_index())
    assert ("a", "b", 0) in pairs
    assert all({x, y} != {"c", "d"} for x, y, _ in pairs)
    assert near_duplicates(frame.reset_index(), max_distance=0) == [("a", "b", 0)]
    assert near_duplicates(frame.iloc[:0].reset_index()) == []


def test_uniqueness_against_reference_hashes():
    image = warm_waves(8)
    ref_hash = qa.phash_hex(image)
    assessor = QualityAssessor()
    frame = assessor.assess([("new", image)], reference_hashes={"old": ref_hash, "other": qa.phash_hex(checker())})
    assert frame.loc[0, "uniqueness"] == 0 and frame.loc[0, "nearest_id"] == "old"
    # Re-scoring an artifact ignores its own previous hash.
    again = assessor.assess([("old", image)], reference_hashes={"old": ref_hash})
    assert again.loc[0, "uniqueness"] == 100 and again.loc[0, "nearest_id"] is None


# --------------------------------------------------------------------------------------------------
# Style memory


def _batch(start: int, n: int):
    emb = get_embedder().embed([warm_waves(s) for s in range(start, start + n)])
    ids = [f"img{s:03d}" for s in range(start, start + n)]
    return emb, ids


def test_learn_style_incremental_idempotent_and_history():
    emb, ids = _batch(0, 10)
    prompts = ["warm waves golden glow" if i % 2 == 0 else "warm waves muddy" for i in range(10)]
    totals = [80.0 if i % 2 == 0 else 30.0 for i in range(10)]
    totals[1] = float("nan")  # unscored: never accepted
    mem = learn_style(None, "p", emb, ids, prompts, totals)
    accepted = [i for i in range(10) if i % 2 == 0]
    assert mem.count == 5 and sorted(mem.learned_ids) == sorted(ids[i] for i in accepted)
    mean = emb[accepted].astype(np.float64).mean(0)
    np.testing.assert_allclose(mem.centroid, mean / np.linalg.norm(mean), atol=1e-6)
    assert mem.spread == pytest.approx(float(np.mean(1 - emb[accepted] @ (mean / np.linalg.norm(mean)))), abs=1e-5)
    assert len(mem.history) == 1 and mem.history[0].new_accepted == 5 and mem.history[0].count == 5
    assert not mem.stable
    assert 1 <= len(mem.exemplars) <= 8 and set(mem.exemplars) <= set(mem.learned_ids)
    assert "golden" in mem.learned_modifiers and mem.token_stats["golden"] > 1 > mem.token_stats["muddy"]
    assert "muddy" not in mem.learned_modifiers

    # Same images again: nothing changes but a snapshot is recorded.
    again = learn_style(mem, "p", emb, ids, prompts, totals)
    assert again.count == mem.count and again.centroid == mem.centroid and again.spread == mem.spread
    assert again.token_stats == mem.token_stats and again.exemplars == mem.exemplars
    assert len(again.history) == 2 and again.history[-1].new_accepted == 0

    # New images: the centroid is the running mean over every accepted image.
    emb2, ids2 = _batch(10, 6)
    more = learn_style(again, "p", emb2, ids2, ["warm waves golden"] * 6, [90.0] * 6)
    all_acc = np.concatenate([emb[accepted], emb2]).astype(np.float64)
    m = all_acc.mean(0)
    np.testing.assert_allclose(more.centroid, m / np.linalg.norm(m), atol=1e-6)
    assert more.count == 11 and len(more.history) == 3 and more.history[-1].centroid_shift >= 0
    assert more.spread == pytest.approx(float(np.mean(1 - all_acc @ (m / np.linalg.norm(m)))), abs=1e-5)

    # A previously rejected image that now scores well is learned (once).
    late = learn_style(more, "p", emb[[3]], [ids[3]], [prompts[3]], [75.0])
    assert late.count == 12 and ids[3] in late.learned_ids
    assert late.token_seen["muddy"] == more.token_seen["muddy"]  # not counted twice
    assert learn_style(late, "p", emb[[3]], [ids[3]], [prompts[3]], [75.0]).count == 12


def test_memory_stable_flag_and_json_roundtrip():
    emb = np.random.default_rng(0).normal(size=(MIN_STABLE_IMAGES, 16)) + 3.0
    ids = [f"x{i}" for i in range(MIN_STABLE_IMAGES)]
    almost = learn_style(None, "p", emb[:-1], ids[:-1], ["a b c"] * (MIN_STABLE_IMAGES - 1), [60] * 49)
    assert not almost.stable
    full = learn_style(almost, "p", emb[-1:], ids[-1:], ["a b c"], [60])
    assert full.stable and full.count == MIN_STABLE_IMAGES
    back = StyleMemory.from_json(full.to_json())
    assert back == full and back.stable


def test_memory_input_checks():
    emb, ids = _batch(0, 2)
    with pytest.raises(InvalidInputError, match="one embedding"):
        learn_style(None, "p", emb, ids, ["x"], [60, 60])
    mem = learn_style(None, "p", emb, ids, ["x", "y"], [60, 60])
    with pytest.raises(InvalidInputError, match="embedder"):
        learn_style(mem, "p", emb, ids, ["x", "y"], [60, 60], embedder="clip-vit-b-32")
    with pytest.raises(InvalidInputError, match="dimensions"):
        learn_style(mem, "p", emb[:, :10], ["n1", "n2"], ["x", "y"], [60, 60])
    with pytest.raises(InvalidInputError, match="project"):
        learn_style(mem, "q", emb, ids, ["x", "y"], [60, 60])
    empty = learn_style(None, "p", np.zeros((0, 80)), [], [], [])
    assert empty.count == 0 and empty.centroid == [] and len(empty.history) == 1


def test_tokenize():
    assert tokenize("Warm fractal, with GOLDEN glow; warm!") == ["warm", "fractal", "golden", "glow"]
    assert tokenize("rüzgar of a 01 sky") == ["ruzgar", "sky"]


def test_save_and_load_memory(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "a"))
    assert load_memory(store, "p") is None
    emb, ids = _batch(0, 3)
    mem = learn_style(None, "p", emb, ids, ["warm"] * 3, [70, 70, 70])
    path = save_memory(store, mem)
    assert path.endswith("resonance/style_memory.json")
    assert load_memory(store, "p") == mem
    store.write_project_file("p", MEMORY_FILE, b"{not json")
    with pytest.raises(StorageError, match="corrupted"):
        load_memory(store, "p")


def test_palette_statistics_and_dominant_colours():
    from echo_pipeline.resonance.memory_system import colour_histogram

    emb, ids = _batch(0, 8)
    palettes = ["gold", "gold", "gold", "ocean", "ocean", "ocean", None, "fire"]
    totals = [82.0, 78.0, 80.0, 55.0, 52.0, 40.0, 90.0, 95.0]
    orange = Image.new("RGB", (16, 16), (240, 130, 20))
    half = np.zeros((16, 16, 3), np.uint8)
    half[:, :8] = (10, 20, 200)  # half deep blue, half black
    colours = [colour_histogram(orange)] * 3 + [colour_histogram(Image.fromarray(half))] * 5
    mem = learn_style(None, "p", emb, ids, ["x"] * 8, totals, palettes=palettes, colours=colours)
    table = mem.palette_table().set_index("palette")
    assert table.loc["gold", "images"] == 3 and table.loc["gold", "accepted"] == 3
    assert table.loc["gold", "mean_total"] == pytest.approx(80.0)
    assert table.loc["ocean", "accepted"] == 2 and table.loc["ocean", "acceptance"] == pytest.approx(200 / 3)
    # fire scores highest but from one image: the best palette needs two accepted images.
    assert mem.best_palette == "gold" and mem.history[-1].best_palette == "gold"
    colours_found = dict(mem.dominant_colours())
    # accepted: 3 orange images and 4 half-blue ones (ids 3, 4, 6 and 7; 5 scored 40)
    assert colours_found["#f08214"] == pytest.approx(3 / 7) and colours_found["#0a14c8"] == pytest.approx(2 / 7)
    assert colours_found["#000000"] == pytest.approx(2 / 7)
    with pytest.raises(InvalidInputError, match="palettes"):
        learn_style(None, "p", emb, ids, ["x"] * 8, totals, palettes=palettes[:3])


def test_every_memory_version_keeps_its_own_file(tmp_path):
    from echo_pipeline.resonance.memory_system import load_memory_version, memory_version_file, memory_versions

    store = ArtifactStore.open(str(tmp_path / "a"))
    emb, ids = _batch(0, 6)
    first = learn_style(None, "p", emb[:3], ids[:3], ["warm"] * 3, [70, 70, 70])
    save_memory(store, first)
    second = learn_style(first, "p", emb[3:], ids[3:], ["warm"] * 3, [80, 80, 80])
    save_memory(store, second)
    assert (first.version, second.version) == (1, 2) and memory_versions(store, "p") == [1, 2]
    assert load_memory_version(store, "p", 1) == first and load_memory(store, "p") == second
    # A version's file is written once: saving a changed memory under the same version leaves it.
    save_memory(store, second.model_copy(update={"count": 99}))
    assert load_memory_version(store, "p", 2) == second and load_memory(store, "p").count == 99
    # Learning nothing new is a snapshot, not a version.
    assert learn_style(second, "p", emb[3:], ids[3:], ["warm"] * 3, [80, 80, 80]).version == 2
    assert store.read_project_file("p", memory_version_file(3)) is None


# --------------------------------------------------------------------------------------------------
# Score tables


def test_scores_save_merge_load(tmp_path):
    store = ArtifactStore.open(str(tmp_path / "a"))
    empty = load_scores(store, "p")
    assert empty.empty and list(empty.columns) == list(qa.SCORE_COLUMNS)
    first = QualityAssessor().assess([("a", warm_waves(1)), ("b", warm_waves(2)), ("c", cool_stripes())])
    save_scores(store, "p", first)
    loaded = load_scores(store, "p")
    assert sorted(loaded["artifact_id"]) == ["a", "b", "c"]
    assert loaded.set_index("artifact_id").loc["a", "total"] == pytest.approx(first.loc[0, "total"])

    second = QualityAssessor().assess([("b", checker()), ("d", solid())])
    save_scores(store, "p", second)
    merged = load_scores(store, "p").set_index("artifact_id")
    assert sorted(merged.index) == ["a", "b", "c", "d"]
    assert merged.loc["b", "total"] == pytest.approx(second.loc[0, "total"])  # replaced
    assert merged.loc["b", "phash"] == second.loc[0, "phash"]
    assert merged.loc["c", "total"] == pytest.approx(first.loc[2, "total"])  # kept
    assert math.isnan(merged.loc["d", "alignment"])


# --------------------------------------------------------------------------------------------------
# With the real procedural renderer


def test_procedural_style_consistency():
    from echo_pipeline.render.backends import procedural
    from echo_pipeline.render.requests import RenderRequest

    backend = procedural.ProceduralBackend()
    warm = [backend.prepare(RenderRequest(prompt="warm fractal", seed=s, width=96, height=96)) for s in range(5)]
    city = backend.prepare(RenderRequest(prompt="cool city", seed=1, width=96, height=96))
    images = [r.image for r in backend.render(warm + [city])]
    frame = QualityAssessor().assess([(f"w{i}", im) for i, im in enumerate(images[:5])] + [("city", images[5])])
    by_id = frame.set_index("artifact_id")["style_consistency"]
    assert by_id["city"] < by_id.drop("city").min()
    assert by_id["city"] < 50
