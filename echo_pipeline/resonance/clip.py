"""CLIP scoring through open_clip: image/text embeddings, prompt alignment, an aesthetic head.

`ClipScorer(model, pretrained, device=None, aesthetic_head=None)` loads nothing until first used
(torch and open_clip are imported inside its methods), then keeps the model for its lifetime: keep one
instance per run.

* `model`: an open_clip architecture name ("ViT-B-32", "ViT-L-14", any name `open_clip.list_models()`
  knows, including configs registered with `open_clip.add_model_config`), or "hf-hub:org/repo" /
  "local-dir:/folder" (then `pretrained` is ignored, as in open_clip).
* `pretrained`: a local checkpoint file (.pt/.bin/.safetensors state dict), an open_clip pretrained
  tag ("laion2b_s34b_b79k", "openai", ...), or None for random weights (tests and benchmarks only: the
  scores then mean nothing).
* Nothing is downloaded unless `allow_download=True`: a tag or hub id is loaded from the Hugging Face
  cache (or open_clip's URL cache) when it is there, and otherwise the scorer raises a one-line
  `BackendUnavailableError` naming the model and saying how to provide it.

Scores (rows of the image/text embeddings are L2-normalised float32):

* **alignment** = 100 * max(cos(image, prompt), 0), the CLIPScore convention (Hessel et al. 2021,
  without their 2.5 rescaling): 0 = unrelated or opposed, higher = the image matches its prompt
  better. With real CLIP weights matching pairs typically land at 25-35 and unrelated ones at 10-20;
  100 is only reached by identical directions.
* **aesthetic** = output of a linear head (or a chain of linear layers, like LAION's
  improved-aesthetic-predictor, whose MLP has only dropouts between its Linears) applied to the
  unit image embedding; higher = more pleasing. LAION's heads are trained on 1-10 ratings (most
  images 4-7). NaN when no `aesthetic_head` is configured. `QualityAssessor` maps it to 0-100 as
  10 * score, clipped.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from echo_pipeline.errors import BackendUnavailableError, InvalidInputError
from echo_pipeline.resonance.embedders import to_rgb

DEFAULT_BATCH_SIZE = 32
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_HOW = ("pass a local checkpoint file (.pt/.bin/.safetensors) as `pretrained`, or a pretrained tag or "
        "hf-hub id already in the Hugging Face cache; downloads are off unless allow_download=True")


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(_CHECKPOINT_SUFFIXES) or value.startswith("~")


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Turn huggingface_hub's offline mode on for the duration (read at call time by hf_hub_download)."""
    if not offline:
        yield
        return
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - open_clip then cannot reach the hub at all
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _load_state_dict(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    import torch

    data = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise InvalidInputError(f"aesthetic head {path} is not a state dict")
    return dict(data)


def _natural(key: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


class ClipScorer:
    """open_clip model + tokenizer + preprocess, loaded once; see the module docstring."""

    def __init__(
        self,
        model: str,
        pretrained: str | None,
        device: str | None = None,
        aesthetic_head: str | None = None,
        *,
        allow_download: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_dir: str | None = None,
    ) -> None:
        if not model or not str(model).strip():
            raise InvalidInputError("CLIP model name is empty")
        if batch_size < 1:
            raise InvalidInputError("CLIP batch_size must be at least 1")
        self.model_name = str(model).strip()
        self.pretrained = str(pretrained).strip() if pretrained else None
        self.device_name = device
        self.aesthetic_head = aesthetic_head
        self.allow_download = allow_download
        self.batch_size = int(batch_size)
        self.cache_dir = cache_dir
        self.model: Any = None
        self.preprocess: Any = None
        self.tokenizer: Any = None
        self.device: Any = None
        self._head: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __repr__(self) -> str:
        return f"ClipScorer(model={self.model_name!r}, pretrained={self.pretrained!r})"

    @property
    def name(self) -> str:
        return f"open_clip:{self.model_name}:{self.pretrained or 'random-init'}"

    # ---------------------------------------------------------------------------------- loading

    def _describe(self) -> str:
        return f"CLIP model {self.model_name!r}" + (f" with weights {self.pretrained!r}" if self.pretrained else "")

    def _check_offline_source(self) -> None:
        """Refuse, before open_clip tries, a source that would need the network."""
        import open_clip

        if self.model_name.startswith(("hf-hub:", "local-dir:")):
            return
        if open_clip.get_model_config(self.model_name.replace("/", "-")) is None:
            raise BackendUnavailableError(
                f"{self._describe()}: unknown open_clip architecture {self.model_name!r} (open_clip.list_models() "
                "names them, e.g. ViT-B-32, ViT-L-14), or use 'hf-hub:org/repo' or 'local-dir:/folder'")
        if self.allow_download or not self.pretrained:
            return
        path = Path(self.pretrained).expanduser()
        if path.is_file():
            return
        cfg = open_clip.get_pretrained_cfg(self.model_name.replace("/", "-"), self.pretrained)
        if not cfg:
            if _looks_like_path(self.pretrained):
                raise BackendUnavailableError(f"{self._describe()}: checkpoint file {path} not found; {_HOW}")
            raise BackendUnavailableError(
                f"{self._describe()}: {self.pretrained!r} is neither a checkpoint file nor a known open_clip tag for "
                f"this model; {_HOW}")
        if cfg.get("hf_hub"):
            return  # resolved through the hub cache with offline mode on
        url = cfg.get("url", "")
        if url:
            cached = Path(self.cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
            if not cached.is_file():
                raise BackendUnavailableError(f"{self._describe()}: weights are not in the local cache ({cached}); "
                                              f"{_HOW}")

    def load(self) -> ClipScorer:
        """Load model, preprocess, tokenizer and head (once); returns self."""
        if self.model is not None:
            return self
        try:
            import open_clip
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(f"CLIP scoring needs torch and open_clip ({_first_line(exc)})") from exc
        self._check_offline_source()
        device = self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        pretrained = str(Path(self.pretrained).expanduser()) if self.pretrained and Path(
            self.pretrained).expanduser().is_file() else self.pretrained
        try:
            with _hub_offline(not self.allow_download):
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.model_name, pretrained=pretrained, device=device, cache_dir=self.cache_dir,
                    pretrained_text=False)
                tokenizer = open_clip.get_tokenizer(self.model_name, cache_dir=self.cache_dir)
        except Exception as exc:
            local = bool(pretrained) and Path(str(pretrained)).is_file()
            if not self.allow_download and not local and "local cache" in str(exc):
                raise BackendUnavailableError(f"{self._describe()}: weights are not in the local Hugging Face cache "
                                              f"and downloads are off; {_HOW}") from exc
            raise BackendUnavailableError(f"{self._describe()} could not be loaded: {_first_line(exc)}; {_HOW}") from exc
        model.eval()
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.device = torch.device(device)
        if self.aesthetic_head:
            self._head = self._load_head(Path(self.aesthetic_head).expanduser())
        return self

    def _load_head(self, path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
        if not path.is_file():
            raise BackendUnavailableError(f"aesthetic head {path} not found; configure a .pt/.safetensors state dict "
                                          "of a torch.nn.Linear(d, 1) (or a chain of Linears)")
        try:
            state = _load_state_dict(path)
        except InvalidInputError:
            raise
        except Exception as exc:
            raise InvalidInputError(f"aesthetic head {path} could not be read: {_first_line(exc)}") from exc
        weights = sorted((k for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2),
                         key=_natural)
        layers: list[tuple[np.ndarray, np.ndarray]] = []
        for key in weights:
            w = state[key].detach().cpu().double().numpy()
            b_key = key[: -len("weight")] + "bias"
            b = state[b_key].detach().cpu().double().numpy() if b_key in state else np.zeros(w.shape[0])
            layers.append((w, b))
        dim = self.dim
        if not layers or layers[0][0].shape[1] != dim or layers[-1][0].shape[0] != 1 or any(
                a[0].shape[0] != c[0].shape[1] for a, c in zip(layers, layers[1:], strict=False)):
            shapes = [tuple(w.shape) for w, _ in layers]
            raise InvalidInputError(f"aesthetic head {path} does not map a {dim}-d embedding to one score "
                                    f"(linear weight shapes {shapes})")
        return layers

    @property
    def dim(self) -> int:
        """Embedding dimension (loads the model)."""
        self.load()
        proj = getattr(self.model.visual, "output_dim", None)
        if proj is None:  # pragma: no cover - every open_clip vision tower sets it
            raise BackendUnavailableError(f"{self._describe()}: cannot tell its embedding dimension")
        return int(proj)

    # ---------------------------------------------------------------------------------- scoring

    def _normalised(self, features: Any) -> np.ndarray:
        import torch

        out = torch.nn.functional.normalize(features.float(), dim=-1)
        return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, d) float32 unit rows; the model's own preprocess, batches of `batch_size`."""
        self.load()
        import torch

        if isinstance(images, Image.Image):
            images = [images]
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start:start + self.batch_size]
                batch = torch.stack([self.preprocess(to_rgb(im)) for im in chunk]).to(self.device)
                out[start:start + len(chunk)] = self._normalised(self.model.encode_image(batch))
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 unit rows; repeated texts are encoded once."""
        self.load()
        import torch

        if isinstance(texts, str):
            texts = [texts]
        texts = [str(t) for t in texts]
        unique = list(dict.fromkeys(texts))
        table = np.zeros((len(unique), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(unique), self.batch_size):
                chunk = unique[start:start + self.batch_size]
                tokens = self.tokenizer(chunk).to(self.device)
                table[start:start + len(chunk)] = self._normalised(self.model.encode_text(tokens))
        index = {t: i for i, t in enumerate(unique)}
        return table[[index[t] for t in texts]] if texts else table

    def alignment_from_embeddings(self, image_embeddings: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """(n,) 100 * max(cos, 0) of each image embedding with its prompt (pairs in order)."""
        if len(prompts) != len(image_embeddings):
            raise InvalidInputError(f"{len(image_embeddings)} images but {len(prompts)} prompts")
        if not len(prompts):
            return np.zeros(0, dtype=np.float64)
        text = self.embed_texts(prompts)
        cos = np.einsum("ij,ij->i", np.asarray(image_embeddings, dtype=np.float64), text.astype(np.float64))
        return 100.0 * np.maximum(cos, 0.0)

    def alignment(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        """(n,) prompt alignment 0-100 (CLIPScore convention), image i against prompt i."""
        if len(prompts) != len(images):
            raise InvalidInputError(f"{len(images)} images but {len(prompts)} prompts")
        return self.alignment_from_embeddings(self.embed_images(images), prompts)

    def aesthetic_from_embeddings(self, image_embeddings: np.ndarray) -> np.ndarray:
        """(n,) head output for unit image embeddings; NaN when no head is configured."""
        self.load()
        n = len(image_embeddings)
        if self._head is None:
            return np.full(n, np.nan)
        x = np.asarray(image_embeddings, dtype=np.float64).reshape(n, -1)
        for w, b in self._head:
            x = x @ w.T + b
        return x[:, 0]

    def aesthetic(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n,) aesthetic score from the configured head (LAION scale ~1-10, higher = better); else NaN."""
        if self.aesthetic_head is None:
            return np.full(len(images), np.nan)
        return self.aesthetic_from_embeddings(self.embed_images(images))


__all__ = ["ClipScorer"]
