"""Tiny random Stable Diffusion pipelines built in code: the diffusers backend's tests and offline demo.

No download and no real weights: a few-thousand-parameter UNet, VAE and CLIP text encoder with the
exact layout of SD 1.5 (and SDXL: two text encoders, `text_time` added conditions), saved with
`save_pretrained` so the backend loads them like any local model folder. The images are noise-like
but deterministic, and a 64x64 render takes a fraction of a second on a CPU.

    python -m echo_pipeline_tests.tiny_models /tmp/tiny-sd      # prints the folder
    echo-os render "a test" --backend diffusers:/tmp/tiny-sd

`write_single_file(folder, path)` writes the SD 1.5 pipeline as ONE checkpoint in the original
(LDM / A1111) key layout, the reverse of diffusers' single-file conversion, so
`StableDiffusionPipeline.from_single_file(path, config=folder)` can be tested offline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Tiny but structurally complete: two UNet levels (one with cross-attention), two VAE levels.
_TOKEN_LENGTH = 77  # CLIP's usual context; the pipelines read it from the tokenizer
_MARKER = "echo-tiny.json"  # written last: a folder holding it is complete


def _bytes_to_unicode() -> list[str]:
    """The 256 characters GPT-2/CLIP byte-level BPE uses for the bytes 0-255 (printable ones as themselves)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_tokenizer(folder: Path) -> None:
    """A CLIPTokenizer without merges: every byte is a token (`x` and `x</w>`), plus the two specials."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = {token: index for index, token in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                              model_max_length=_TOKEN_LENGTH, pad_token="<|endoftext|>")
    tokenizer.save_pretrained(str(folder))


def _vocab_size() -> int:
    return 2 * 256 + 2


def _text_config(**extra: Any) -> Any:
    from transformers import CLIPTextConfig

    size = _vocab_size()
    return CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                          vocab_size=size, bos_token_id=size - 2, eos_token_id=size - 1, pad_token_id=size - 1,
                          max_position_embeddings=_TOKEN_LENGTH, **extra)


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                         up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4, sample_size=64)


def _scheduler() -> Any:
    from diffusers import EulerAncestralDiscreteScheduler

    # SD 1.5's training schedule: what `from_config` carries over to every sampler.
    return EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")


def _done(folder: Path, kind: str) -> bool:
    marker = folder / _MARKER
    try:
        return json.loads(marker.read_text()).get("kind") == kind and (folder / "model_index.json").is_file()
    except (OSError, ValueError):
        return False


def _finish(folder: Path, kind: str) -> Path:
    (folder / _MARKER).write_text(json.dumps({"kind": kind}))
    return folder.resolve()


def build_tiny_sd(folder: str | Path) -> Path:
    """A tiny random SD 1.5-class pipeline saved in `folder` (reused when already built there)."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    if _done(folder, "sd"):
        return folder.resolve()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=4,
    )
    torch.manual_seed(1)
    vae = _vae()
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(_text_config())
    write_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return _finish(folder, "sd")


def build_tiny_sdxl(folder: str | Path) -> Path:
    """A tiny random SDXL-class pipeline (two text encoders, `text_time` conditioning) saved in `folder`."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    if _done(folder, "sdxl"):
        return folder.resolve()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size/crop ids + the pooled text embedding
        cross_attention_dim=64, norm_num_groups=4,  # the two encoders' hidden states, concatenated
    )
    torch.manual_seed(1)
    vae = _vae()
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(_text_config())
    torch.manual_seed(3)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(projection_dim=32))
    write_tokenizer(folder / "tokenizer")
    write_tokenizer(folder / "tokenizer_2")
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(str(folder / "tokenizer")),
        tokenizer_2=CLIPTokenizer.from_pretrained(str(folder / "tokenizer_2")),
        unet=unet, scheduler=_scheduler(), force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(str(folder))
    return _finish(folder, "sdxl")


# --- diffusers -> original (LDM) keys, the reverse of diffusers' single-file conversion -----------

_UNET_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _swap(rest: str, pairs: tuple[tuple[str, str], ...]) -> str:
    """Rename the first part of `rest` (a module-relative key) by `pairs`."""
    for new, old in pairs:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_to_ldm(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """UNet2DConditionModel keys -> `model.diffusion_model.*` (input_blocks / middle_block / output_blocks)."""
    layers = int(config["layers_per_block"])
    blocks = len(config["down_block_types"])
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    mapping: dict[str, str] = dict(fixed)
    for block in range(blocks):
        for layer in range(layers):
            index = 1 + block * (layers + 1) + layer
            mapping[f"down_blocks.{block}.resnets.{layer}"] = f"input_blocks.{index}.0"
            mapping[f"down_blocks.{block}.attentions.{layer}"] = f"input_blocks.{index}.1"
        # the downsampler is its own input block after the block's layers
        mapping[f"down_blocks.{block}.downsamplers.0.conv"] = f"input_blocks.{1 + block * (layers + 1) + layers}.0.op"
        for layer in range(layers + 1):
            index = block * (layers + 1) + layer
            mapping[f"up_blocks.{block}.resnets.{layer}"] = f"output_blocks.{index}.0"
            mapping[f"up_blocks.{block}.attentions.{layer}"] = f"output_blocks.{index}.1"
        up_attention = "CrossAttn" in config["up_block_types"][block]
        last = block * (layers + 1) + layers
        mapping[f"up_blocks.{block}.upsamplers.0.conv"] = f"output_blocks.{last}.{2 if up_attention else 1}.conv"
    mapping.update({"mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
                    "mid_block.resnets.1": "middle_block.2"})
    out = {}
    for key, value in state.items():
        prefix = max((p for p in mapping if key.startswith(p + ".")), key=len, default=None)
        if prefix is None:
            raise KeyError(f"no LDM name for UNet key {key}")
        rest = key[len(prefix) + 1:]
        if ".resnets." in prefix or prefix.startswith("mid_block.resnets"):
            rest = _swap(rest, _UNET_RESNET)
        out["model.diffusion_model." + mapping[prefix] + "." + rest] = value
    return out


def vae_to_ldm(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """AutoencoderKL keys -> `first_stage_model.*` (encoder.down.N.block.M, decoder.up reversed, mid.attn_1)."""
    blocks = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        part, _, rest = key.partition(".")
        ldm = key
        if part in ("encoder", "decoder"):
            sub = rest.split(".")
            if sub[0] in ("down_blocks", "up_blocks"):
                index = int(sub[1])
                level = index if sub[0] == "down_blocks" else blocks - 1 - index  # LDM counts decoder levels upwards
                name = "down" if sub[0] == "down_blocks" else "up"
                if sub[2] == "resnets":
                    tail = ".".join(sub[4:]).replace("conv_shortcut", "nin_shortcut")
                    ldm = f"{part}.{name}.{level}.block.{sub[3]}.{tail}"
                else:  # downsamplers.0.conv / upsamplers.0.conv
                    ldm = f"{part}.{name}.{level}.{'downsample' if name == 'down' else 'upsample'}.{'.'.join(sub[4:])}"
            elif sub[0] == "mid_block":
                if sub[1] == "resnets":
                    tail = ".".join(sub[3:]).replace("conv_shortcut", "nin_shortcut")
                    ldm = f"{part}.mid.block_{int(sub[2]) + 1}.{tail}"
                else:
                    ldm = f"{part}.mid.attn_1.{_swap('.'.join(sub[3:]), _VAE_ATTENTION)}"
                    if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                        value = value[:, :, None, None]
            elif sub[0] == "conv_norm_out":
                ldm = f"{part}.norm_out.{'.'.join(sub[1:])}"
        out["first_stage_model." + ldm] = value
    return out


def clip_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """CLIPTextModel keys -> `cond_stage_model.transformer.text_model.*` (transformers 5 drops `text_model.`)."""
    return {"cond_stage_model.transformer.text_model." + key.removeprefix("text_model."): value
            for key, value in state.items() if not key.endswith("position_ids")}


def write_single_file(folder: str | Path, path: str | Path) -> Path:
    """The SD 1.5 pipeline in `folder` (from `build_tiny_sd`) as one original-format .safetensors file."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)
    state = {**unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config)),
             **vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)),
             **clip_to_ldm(pipe.text_encoder.state_dict())}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return path.resolve()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or (len(args) == 2 and args[1] != "--sdxl"):
        print("usage: python -m echo_pipeline_tests.tiny_models FOLDER [--sdxl]", file=sys.stderr)
        return 2
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for module in (dlog, tlog):
        module.disable_progress_bar()
    folder = build_tiny_sdxl(args[0]) if len(args) == 2 else build_tiny_sd(args[0])
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
