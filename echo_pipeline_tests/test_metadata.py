"""A1111 infotext and PNG metadata: what we write must read back in AUTOMATIC1111 as we mean it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from echo_pipeline.artifacts import ArtifactRecord, format_infotext, parse_infotext
from echo_pipeline.artifacts.metadata import encode_png, read_png_metadata, sha256_hex
from echo_pipeline.errors import StorageError
from echo_pipeline.render.backends.base import BackendDescription
from echo_pipeline.render.requests import RenderRequest

try:
    from echo_pipeline_tests.a1111_infotext import create_generation_params_text, parse_generation_parameters
except ImportError:  # the tests folder is not a package
    from a1111_infotext import create_generation_params_text, parse_generation_parameters


def make_record(
    prompt: str = "warm fractal",
    model_hash: str = "",
    model: str = "echo-procedural",
    project: str = "p",
    **request_fields,
) -> ArtifactRecord:
    req = RenderRequest(prompt=prompt, seed=request_fields.pop("seed", 1), width=request_fields.pop("width", 64),
                        height=request_fields.pop("height", 64), project=project, **request_fields)
    desc = BackendDescription(backend="procedural", model=model, model_hash=model_hash, version="1")
    return ArtifactRecord(artifact_id=req.request_id, project=project, request=req, backend=desc)


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[..., 0] = x[None, :]
    arr[..., 1] = y[:, None]
    arr[..., 2] = 128
    return Image.fromarray(arr, "RGB")


# A real txt2img infotext as AUTOMATIC1111 1.10 writes it (quoted Lora hashes, schedule type...).
REAL_A1111 = (
    "masterpiece, best quality, (warm fractal:1.2), neon city at night, <lora:add_detail:0.6>\n"
    "Negative prompt: lowres, bad anatomy, (worst quality:1.4)\n"
    'Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3861274569, '
    'Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, '
    'VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, '
    'Hires upscale: 2, Hires upscaler: 4x-UltraSharp, Lora hashes: "add_detail: 7c6bad76eb54", '
    'TI: "easynegative, bad-hands-5", Version: v1.10.0'
)


class TestFormatInfotext:
    def test_layout_and_order(self):
        record = make_record(negative_prompt="blurry", model_hash="45dee52b")
        text = format_infotext(record)
        lines = text.split("\n")
        assert lines[0] == "warm fractal"
        assert lines[1] == "Negative prompt: blurry"
        assert lines[2] == (
            f"Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, Model hash: 45dee52b, "
            f"Model: echo-procedural, Echo artifact: {record.artifact_id}, Echo project: p, "
            f"Echo backend: procedural, Version: echo-os {record.code_version}"
        )

    def test_optional_lines_and_keys(self):
        record = make_record()
        text = format_infotext(record)
        assert "Negative prompt" not in text
        assert "Model hash" not in text
        assert "Denoising strength" not in text and "Tiling" not in text and "Echo style" not in text
        assert len(text.split("\n")) == 2

    def test_img2img_tiling_style_parent(self):
        record = make_record(parent_id="abcdef0123", strength=0.55, tiling=True, style="Neon, Glow")
        params = parse_generation_parameters(format_infotext(record))
        assert params["Denoising strength"] == "0.55"
        assert params["Tiling"] == "True"
        assert params["Echo style"] == "Neon, Glow"
        assert params["Echo parent"] == "abcdef0123"
        keys = list(parse_infotext(format_infotext(record)))
        assert keys.index("Model") < keys.index("Denoising strength") < keys.index("Tiling") < keys.index("Echo artifact")
        assert keys[-1] == "Version"

    def test_same_line_as_a1111_would_join(self):
        record = make_record(model="a, b: c", style="x, y")
        last_line = format_infotext(record).split("\n")[-1]
        ours = parse_infotext(format_infotext(record))
        a1111_params = {k: v for k, v in ours.items() if k not in ("Prompt", "Negative prompt", "Size-1", "Size-2")}
        a1111_params = {"Steps": a1111_params.pop("Steps"), "Sampler": a1111_params.pop("Sampler"),
                        "CFG scale": a1111_params.pop("CFG scale"), "Seed": a1111_params.pop("Seed"),
                        "Size": f"{ours['Size-1']}x{ours['Size-2']}", **a1111_params}
        assert last_line == create_generation_params_text(a1111_params)


ROUND_TRIP_CASES = [
    dict(),
    dict(negative_prompt="blurry, lowres", model_hash="45dee52b"),
    dict(prompt="a, b, c: d\nsecond line", negative_prompt="x\ny, z"),
    dict(model="a, b: c"),
    dict(model='"quoted" model'),
    dict(model="back\\slash, \"quote\""),
    dict(style="Neon, Glow: 2"),
    dict(style="multi\nline style"),
    dict(prompt="rüzgar, ışık", negative_prompt="çirkin, bulanık", model="Öz: model"),
    dict(sampler="DPM++ 2M Karras", cfg_scale=7.5, seed=4294967295, width=768, height=512, steps=50),
    dict(parent_id="0123456789abcdef0123", strength=0.3, tiling=True),
]


@pytest.mark.parametrize("fields", ROUND_TRIP_CASES)
def test_a1111_reads_what_we_write(fields):
    fields = dict(fields)
    model = fields.pop("model", "echo-procedural")
    model_hash = fields.pop("model_hash", "")
    record = make_record(model=model, model_hash=model_hash, **fields)
    req = record.request
    text = format_infotext(record)
    a1111 = parse_generation_parameters(text)

    assert a1111["Prompt"] == req.prompt
    assert a1111["Negative prompt"] == req.negative_prompt
    assert a1111["Steps"] == str(req.steps)
    assert a1111["Sampler"] == req.sampler
    assert float(a1111["CFG scale"]) == req.cfg_scale
    assert a1111["Seed"] == str(req.seed)
    assert (a1111["Size-1"], a1111["Size-2"]) == (str(req.width), str(req.height))
    assert a1111["Model"] == model
    assert a1111["Echo artifact"] == record.artifact_id
    assert a1111["Echo project"] == "p"
    assert a1111["Echo backend"] == "procedural"
    assert a1111["Version"] == f"echo-os {record.code_version}"
    if model_hash:
        assert a1111["Model hash"] == model_hash
    if req.style:
        assert a1111["Echo style"] == req.style
    if req.strength is not None:
        assert float(a1111["Denoising strength"]) == req.strength
        assert a1111["Echo parent"] == req.parent_id
    # Our reader agrees with A1111's on our own texts.
    assert parse_infotext(text) == a1111


def test_a1111_defaults_do_not_clash():
    params = parse_generation_parameters(format_infotext(make_record()), fill_defaults=True)
    assert params["Size-1"] == "64" and params["Clip skip"] == "1" and params["Seed"] == "1"


@pytest.mark.parametrize(
    "text",
    [
        REAL_A1111,
        "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b",
        "just a prompt, no parameters",
        "a prompt\nwith two lines: only, two: params",
        "Negative prompt: only negative\nSteps: 20, Sampler: Euler, CFG scale: 7",
        "  padded prompt  \n\nSteps: 1, Sampler: x, Seed: 2, Size: 64x128  ",
    ],
)
def test_parse_infotext_agrees_with_a1111(text):
    assert parse_infotext(text) == parse_generation_parameters(text)


def test_parse_real_a1111_text():
    params = parse_infotext(REAL_A1111)
    assert params["Prompt"].startswith("masterpiece, best quality, (warm fractal:1.2)")
    assert params["Negative prompt"] == "lowres, bad anatomy, (worst quality:1.4)"
    assert params["Steps"] == "25"
    assert params["Sampler"] == "DPM++ 2M"
    assert params["Schedule type"] == "Karras"
    assert params["CFG scale"] == "6.5"
    assert params["Seed"] == "3861274569"
    assert (params["Size-1"], params["Size-2"]) == ("512", "768")
    assert params["Model"] == "v1-5-pruned-emaonly"
    assert params["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert params["TI"] == "easynegative, bad-hands-5"
    assert params["Version"] == "v1.10.0"


def test_parse_infotext_windows_newlines():
    text = format_infotext(make_record(negative_prompt="blurry")).replace("\n", "\r\n")
    params = parse_infotext(text)
    assert params["Prompt"] == "warm fractal" and params["Negative prompt"] == "blurry"
    assert params["Version"].startswith("echo-os ")


class TestPng:
    def test_round_trip(self):
        record = make_record(negative_prompt="blurry", style="Neon, Glow")
        data = encode_png(gradient(), record)
        params, back = read_png_metadata(data)
        assert params == format_infotext(record)
        assert back == record

    def test_plain_pil_reads_chunks(self):
        record = make_record()
        data = encode_png(gradient(), record)
        with Image.open(io.BytesIO(data)) as im:
            assert im.text["parameters"] == format_infotext(record)
            assert ArtifactRecord.model_validate_json(im.text["echo"]) == record
            assert im.size == (64, 48) and im.mode == "RGB"

    def test_non_ascii_prompt(self):
        record = make_record(prompt="rüzgar, ışık", negative_prompt="karanlık")
        data = encode_png(gradient(), record)
        with Image.open(io.BytesIO(data)) as im:
            assert im.text["parameters"].split("\n")[0] == "rüzgar, ışık"
        params, back = read_png_metadata(data)
        assert parse_generation_parameters(params)["Prompt"] == "rüzgar, ışık"
        assert back.request.prompt == "rüzgar, ışık"

    def test_latin1_parameters_use_text_chunk_like_a1111(self):
        data = encode_png(gradient(), make_record(prompt="café"))
        assert b"tEXtparameters\x00" in data
        data = encode_png(gradient(), make_record(prompt="ışık"))
        assert b"iTXtparameters\x00" in data

    def test_pixels_preserved(self):
        image = gradient()
        data = encode_png(image, make_record())
        with Image.open(io.BytesIO(data)) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(image))

    def test_foreign_png(self):
        buf = io.BytesIO()
        gradient().save(buf, format="PNG")
        assert read_png_metadata(buf.getvalue()) == (None, None)
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", REAL_A1111)
        info.add_text("echo", "{not json")
        buf = io.BytesIO()
        gradient().save(buf, format="PNG", pnginfo=info)
        assert read_png_metadata(buf.getvalue()) == (REAL_A1111, None)

    @pytest.mark.parametrize(
        "damage",
        [
            lambda d: d[: len(d) // 2],
            lambda d: d[:-6],
            lambda d: d[:20],
            lambda d: b"",
            lambda d: b"GIF89a garbage",
            lambda d: d[: len(d) // 2] + bytes([d[len(d) // 2] ^ 0xFF]) + d[len(d) // 2 + 1:],
        ],
        ids=["half", "no-iend", "header-only", "empty", "garbage", "flipped-byte"],
    )
    def test_damaged_png_raises_storage_error(self, damage):
        data = encode_png(gradient(), make_record())
        with pytest.raises(StorageError) as err:
            read_png_metadata(damage(data), source="s3://bucket/x.png")
        assert "s3://bucket/x.png" in str(err.value)
        assert "\n" not in str(err.value)

    def test_truncation_detected_even_with_load_truncated_images(self, monkeypatch):
        from PIL import ImageFile

        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        data = encode_png(gradient(), make_record())
        with pytest.raises(StorageError):
            read_png_metadata(data[: len(data) // 2])

    def test_rgba_and_grayscale(self):
        for mode in ("RGBA", "L"):
            data = encode_png(gradient().convert(mode), make_record())
            params, record = read_png_metadata(data)
            assert params and record is not None


def test_sha256_hex():
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
