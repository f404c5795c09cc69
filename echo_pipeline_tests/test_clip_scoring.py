"""CLIP scoring through open_clip, with a tiny random-init model saved and re-loaded through
`ClipScorer`'s real loading path (open_clip.create_model_and_transforms with a checkpoint file)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from echo_pipeline.errors import BackendUnavailableError, InvalidInputError
from echo_pipeline.resonance import quality_assessor as qa
from echo_pipeline.resonance.clip import ClipScorer

pytestmark = [pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "open_clip")),
                                 reason="needs torch and open_clip"),
              pytest.mark.torch]


class _Imported:
    """A module imported on first use: torch and open_clip take seconds to import, and every xdist
    worker would pay that while collecting, before any test runs."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # pytest probes module globals for its own markers while collecting
            raise AttributeError(attr)
        return getattr(importlib.import_module(self._name), attr)


torch: Any = _Imported("torch")
open_clip: Any = _Imported("open_clip")

TINY_NAME = "echo-tiny-clip-test"
# ~3.3M parameters, almost all in the 49408-token embedding (open_clip's default BPE tokenizer).
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Register the tiny architecture with open_clip and save a random-init state dict."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    config = folder / f"{TINY_NAME}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_NAME, pretrained=None)
    path = folder / "tiny-clip.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def aesthetic_head(tiny_checkpoint) -> Path:
    torch.manual_seed(1)
    head = torch.nn.Linear(TINY_CONFIG["embed_dim"], 1)
    path = tiny_checkpoint.parent / "head.pt"
    torch.save(head.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def scorer(tiny_checkpoint, aesthetic_head) -> ClipScorer:
    return ClipScorer(TINY_NAME, str(tiny_checkpoint), device="cpu", aesthetic_head=str(aesthetic_head)).load()


def images(n: int = 5) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = [Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8), "RGB") for i in range(n - 1)]
    out.append(Image.new("L", (64, 64), 100))  # any mode works
    return out


PROMPTS = ["warm fractal", "cool ocean waves", "warm fractal", "a city at night", "grey"]


def test_checkpoint_loads_the_saved_weights(scorer, tiny_checkpoint):
    saved = torch.load(tiny_checkpoint, weights_only=True)
    loaded = scorer.model.state_dict()
    assert set(saved) == set(loaded)
    for key, value in saved.items():
        assert torch.equal(value, loaded[key]), key
    assert scorer.dim == TINY_CONFIG["embed_dim"]
    assert scorer.load() is scorer  # loaded once


def test_embeddings_shapes_norms_determinism(scorer, tiny_checkpoint):
    ims = images()
    a = scorer.embed_images(ims)
    assert a.shape == (5, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    again = ClipScorer(TINY_NAME, str(tiny_checkpoint), device="cpu", batch_size=2)
    np.testing.assert_allclose(again.embed_images(ims), a, atol=1e-5)  # other instance, other batching
    t = scorer.embed_texts(PROMPTS)
    assert t.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(t[0], t[2])
    np.testing.assert_allclose(scorer.embed_texts(["cool ocean waves"])[0], t[1], atol=1e-6)
    assert scorer.embed_images([]).shape == (0, 32)


def test_alignment_and_aesthetic(scorer, tiny_checkpoint):
    ims = images()
    align = scorer.alignment(ims, PROMPTS)
    assert align.shape == (5,) and np.all((align >= 0) & (align <= 100))
    cos = np.einsum("ij,ij->i", scorer.embed_images(ims), scorer.embed_texts(PROMPTS))
    np.testing.assert_allclose(align, 100 * np.maximum(cos, 0), atol=1e-4)
    with pytest.raises(InvalidInputError):
        scorer.alignment(ims, PROMPTS[:2])
    aes = scorer.aesthetic(ims)
    assert aes.shape == (5,) and np.all(np.isfinite(aes))
    head = torch.load(scorer.aesthetic_head, weights_only=True)
    expected = scorer.embed_images(ims) @ head["weight"].numpy().T[:, 0] + float(head["bias"])
    np.testing.assert_allclose(aes, expected, atol=1e-5)
    plain = ClipScorer(TINY_NAME, str(tiny_checkpoint), device="cpu")
    assert np.isnan(plain.aesthetic(ims)).all()


def test_assessor_fills_clip_columns(scorer, tiny_checkpoint):
    items = [(f"i{k}", im) for k, im in enumerate(images())]
    frame = qa.QualityAssessor(clip=scorer).assess(items, prompts=PROMPTS[:4] + [""])
    assert frame["alignment"].iloc[:4].between(0, 100).all() and math.isnan(frame["alignment"].iloc[4])
    assert frame["aesthetic"].between(0, 100).all()
    row = frame.iloc[0].to_dict()
    assert row["total"] == pytest.approx(qa.weighted_total(row))
    no_prompts = qa.QualityAssessor(clip=ClipScorer(TINY_NAME, str(tiny_checkpoint), device="cpu")).assess(items)
    assert no_prompts["alignment"].isna().all() and no_prompts["aesthetic"].isna().all()
    assert qa.QualityAssessor().assess(items, prompts=PROMPTS)["alignment"].isna().all()
    with pytest.raises(InvalidInputError, match="prompts"):
        qa.QualityAssessor(clip=scorer).assess(items, prompts=PROMPTS[:2])


def test_missing_or_bad_sources_give_one_line_errors(tmp_path, tiny_checkpoint):
    missing = tmp_path / "nope.safetensors"
    for model, pretrained, pattern in [
        (TINY_NAME, str(missing), "not found"),
        ("ViT-B-32", "no-such-tag", "neither a checkpoint file nor a known open_clip tag"),
        ("ViT-B-32", "laion2b_s34b_b79k", "ViT-B-32"),  # a real tag: not cached here, never downloaded
        ("no-such-architecture", str(tiny_checkpoint), "no-such-architecture"),
    ]:
        with pytest.raises(BackendUnavailableError, match=pattern) as info:
            ClipScorer(model, pretrained, device="cpu").load()
        assert "\n" not in str(info.value)
    with pytest.raises(BackendUnavailableError, match="aesthetic head"):
        ClipScorer(TINY_NAME, str(tiny_checkpoint), device="cpu", aesthetic_head=str(missing)).load()
    wrong = tmp_path / "wrong-head.pt"
    torch.save(torch.nn.Linear(7, 1).state_dict(), wrong)
    with pytest.raises(InvalidInputError, match="32-d"):
        ClipScorer(TINY_NAME, str(tiny_checkpoint), device="cpu", aesthetic_head=str(wrong)).load()


def test_a_batch_scores_prompt_alignment_and_aesthetics_with_the_configured_clip(
        cli, config_dir, artifact_root, tiny_checkpoint, aesthetic_head):
    """settings.yaml's `clip:` turns CLIP scoring on for the project's quality_scores step."""
    from echo_pipeline.artifacts.storage import ArtifactStore
    from echo_pipeline.resonance.memory_system import load_scores

    (config_dir / "settings.yaml").write_text(
        f"clip: {{model: {TINY_NAME}, pretrained: '{tiny_checkpoint}', aesthetic_head: '{aesthetic_head}'}}\n")
    code, _, err = cli("plan", "Clip Test", "warm fractal", "--size", "64x64", "--count", "3")
    assert code == 0, err
    code, _, err = cli("batch", "--project", "clip")
    assert code == 0, err
    scores = load_scores(ArtifactStore.open(str(artifact_root)), "clip-test")
    assert len(scores) == 3
    assert scores["alignment"].between(0, 100).all() and scores["aesthetic"].between(0, 100).all()
