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
        text = format_infotext(record, sampler=True)
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
        params = parse_generation_parameters(format_infotext(record, sampler=True))
        assert params["Denoising strength"] == "0.55"
        assert params["Tiling"] == "True"
        assert params["Echo style"] == "Neon, Glow"
        assert params["Echo parent"] == "abcdef0123"
        keys = list(parse_infotext(format_infotext(record, sampler=True)))
        assert keys.index("Model") < keys.index("Denoising strength") < keys.index("Tiling") < keys.index("Echo artifact")
        assert keys[-1] == "Version"

    def test_same_line_as_a1111_would_join(self):
        record = make_record(model="a, b: c", style="x, y")
        last_line = format_infotext(record, sampler=True).split("\n")[-1]
        ours = parse_infotext(format_infotext(record, sampler=True))
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
    text = format_infotext(record, sampler=True)
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


# --------------------------------------------------------------------------------------------------
# Prompts A1111's reader would change: they must come back exactly (ours) and in the right place (A1111)

TRICKY_PROMPTS = [
    ("Negative prompt: not the negative", ""),
    ("Negative prompt: positive words", "real negative"),
    ("first line\nNegative prompt: still positive\nthird", "neg"),
    ("a\n   Negative prompt: indented, still positive", ""),
    ("warm fractal", "line one\n    indented two\n\tthree"),
    ("warm fractal", "   leading spaces"),
    ("warm fractal", "trailing spaces   \nx"),
    ("warm fractal", "\n\nafter two empty lines"),
    ("warm fractal", "Negative prompt: twice"),
    ("warm fractal", "ok\nNegative prompt: second negative line"),
    ("\ufeffbom first", "\ufeff"),
    ("a\r\nb", "c\r"),
    ("line\u3000\nnbsp\xa0", "x\u2028"),
    ("Steps: 1, Sampler: x, CFG scale: 2\nreal prompt", "Steps: 1, Sampler: x, CFG scale: 2"),
]

_PIECES = ["Negative prompt:", "Negative prompt: ", " ", "  ", "\t", "\n", "\n\n", "\r", "\r\n", "\xa0",
           "\u3000", "\ufeff", ",", ":", '"', "Steps: 1, Sampler: a, CFG scale: 7", "warm", "fractal",
           "rüzgar", "ışık", "(word:1.2)", "x"]


def _random_prompts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Seeded random prompts (a property test without hypothesis): pieces joined at random."""
    import random

    rng = random.Random(seed)
    out = []
    while len(out) < n:
        prompt = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 12))).strip()
        negative = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 12)))
        if prompt:
            out.append((prompt, negative))
    return out


def _model_text(text: str) -> str:
    """What a CLIP text encoder reads (ftfy drops U+FEFF, whitespace runs collapse), without ftfy."""
    return " ".join(text.replace("\ufeff", "").split())


@pytest.mark.parametrize(("prompt", "negative"), TRICKY_PROMPTS + _random_prompts(300))
@pytest.mark.parametrize("sampler", [True, False])
def test_tricky_prompts_round_trip(prompt, negative, sampler):
    record = make_record(prompt=prompt, negative_prompt=negative)
    req = record.request
    text = format_infotext(record, sampler=sampler)
    ours = parse_infotext(text)
    assert (ours["Prompt"], ours["Negative prompt"]) == (req.prompt, req.negative_prompt)

    a1111 = parse_generation_parameters(text)
    # A1111 keeps every line where it belongs: the model reads the same positive and negative text...
    assert _model_text(a1111["Prompt"]) == _model_text(req.prompt)
    assert _model_text(a1111["Negative prompt"]) == _model_text(req.negative_prompt)
    # ...and exactly our text whenever no line needed protecting (the usual case).
    if "\ufeff" not in text:
        assert (a1111["Prompt"], a1111["Negative prompt"]) == (req.prompt, req.negative_prompt)
    # The last line still parses as the parameters, in both readers.
    assert a1111["Seed"] == "1" and (a1111["Size-1"], a1111["Size-2"]) == ("64", "64")
    assert a1111["Echo artifact"] == record.artifact_id and ours["Echo artifact"] == record.artifact_id
    assert {k: v for k, v in ours.items() if "prompt" not in k.lower()} == \
        {k: v for k, v in a1111.items() if "prompt" not in k.lower()}


def test_guard_survives_ftfy_like_a_clip_tokenizer():
    """CLIP tokenizers run ftfy.fix_text first, which removes U+FEFF: the guard is invisible to the model."""
    ftfy = pytest.importorskip("ftfy")
    record = make_record(prompt="Negative prompt: glowing", negative_prompt="a\n  b")
    a1111 = parse_generation_parameters(format_infotext(record))
    assert ftfy.fix_text(a1111["Prompt"]) == "Negative prompt: glowing"
    assert ftfy.fix_text(a1111["Negative prompt"]) == "a\n  b"


def test_plain_prompts_are_written_unchanged():
    record = make_record(prompt="warm fractal, neon\nsecond line", negative_prompt="blurry\nlowres")
    assert format_infotext(record, sampler=False).split("\n")[:3] == [
        "warm fractal, neon", "second line", "Negative prompt: blurry"]
    assert "\ufeff" not in format_infotext(record)


# --------------------------------------------------------------------------------------------------
# Only what is true: no sampler settings for backends without a sampler


def test_no_sampler_settings_without_a_sampler():
    record = make_record(negative_prompt="blurry", model_hash="45dee52b", parent_id="abcdef0123", strength=0.4)
    last = format_infotext(record, sampler=False).split("\n")[-1]
    assert last.startswith("Seed: 1, Size: 64x64, Model hash: 45dee52b, Model: echo-procedural, Echo strength: 0.4, ")
    for claim in ("Steps", "Sampler", "CFG scale", "Denoising strength"):
        assert claim not in last
    a1111 = parse_generation_parameters(format_infotext(record, sampler=False))
    assert a1111["Seed"] == "1" and a1111["Model"] == "echo-procedural" and a1111["Echo strength"] == "0.4"
    assert "Steps" not in a1111 and "Sampler" not in a1111 and a1111["Negative prompt"] == "blurry"
    with_sampler = parse_infotext(format_infotext(record, sampler=True))
    assert with_sampler["Steps"] == "30" and with_sampler["Denoising strength"] == "0.4"


def test_sampler_comes_from_the_backends_capabilities(monkeypatch):
    from echo_pipeline.artifacts import metadata
    from echo_pipeline.render.backends.base import BackendCapabilities
    from echo_pipeline.render.backends.procedural import ProceduralBackend

    assert metadata.backend_has_sampler("no-such-backend")  # unknown: the A1111 default
    record = make_record()
    monkeypatch.setattr(ProceduralBackend, "capabilities",
                        ProceduralBackend.capabilities.model_copy(update={"sampler": False}))
    assert not metadata.backend_has_sampler("procedural")
    assert "Steps:" not in format_infotext(record)
    monkeypatch.setattr(ProceduralBackend, "capabilities", BackendCapabilities(sampler=True))
    assert format_infotext(record).split("\n")[-1].startswith("Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 1")


def test_procedural_artifacts_claim_no_sampler():
    text = format_infotext(make_record())
    assert "Steps:" not in text and "Sampler:" not in text and "CFG scale:" not in text


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


def test_values_that_look_like_a_size_read_back_whole():
    """Found by the infotext fuzzer (faults/fuzz_targets.py): a style named like `16x9` was read
    back as "Echo style-1"/"Echo style-2". Values that are not the size are quoted, and a quoted
    `WxH` stays whole; A1111 still reads the Size as width and height."""
    record = make_record(style="16x9", model="1024x1024")
    text = format_infotext(record)
    assert 'Echo style: "16x9"' in text and "Size: 64x64" in text
    ours = parse_infotext(text)
    assert (ours["Echo style"], ours["Model"]) == ("16x9", "1024x1024")
    assert (ours["Size-1"], ours["Size-2"]) == ("64", "64") and "Size" not in ours
    a1111 = parse_generation_parameters(text)
    assert (a1111["Size-1"], a1111["Size-2"]) == ("64", "64")
