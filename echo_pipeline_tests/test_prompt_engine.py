"""Prompt engineering: ranges, variants, wildcards, constraints, styles, seeds and request ids."""

from __future__ import annotations

import pytest

from echo_pipeline.errors import InvalidInputError, NotFoundError
from echo_pipeline.render.prompt_engine import (
    MAX_COUNT,
    PromptEngine,
    PromptSpec,
    check_seed_range,
    constraint_terms,
    expand_range,
    parse_size,
    split_constraints,
    stable_seed,
)
from echo_pipeline.render.requests import MAX_SEED, RenderRequest
from echo_pipeline.render.style_manager import StyleLibrary


@pytest.fixture
def engine(config_dir):
    return PromptEngine(StyleLibrary(config_dir / "styles"), config_dir / "wildcards")


def test_range_expands_to_numbered_series():
    assert expand_range("warm fractal 01-09") == [f"warm fractal 0{i}" for i in range(1, 10)]
    assert expand_range("tile 8-11 set") == ["tile 8 set", "tile 9 set", "tile 10 set", "tile 11 set"]
    assert expand_range("no range here") == ["no range here"]
    with pytest.raises(InvalidInputError, match="counts down"):
        expand_range("x 09-01")


def test_range_with_style_gives_nine_distinct_requests(engine):
    requests = engine.build_requests(PromptSpec(prompt="warm fractal 01-09", style="digital art"))
    assert len(requests) == 9
    assert [r.source_prompt for r in requests] == [f"warm fractal 0{i}" for i in range(1, 10)]
    assert requests[0].prompt.startswith("warm fractal 01, digital art")
    assert "watermark" in requests[0].negative_prompt
    assert len({r.request_id for r in requests}) == 9
    assert len({r.seed for r in requests}) == 9
    assert [r.index for r in requests] == list(range(9))


def test_same_spec_gives_same_requests_and_seed_option_is_respected(engine):
    spec = PromptSpec(prompt="cool waves", count=3)
    first = [r.request_id for r in engine.build_requests(spec)]
    assert first == [r.request_id for r in engine.build_requests(spec)]
    seeded = engine.build_requests(spec.model_copy(update={"seed": 42}))
    assert [r.seed for r in seeded] == [42, 43, 44]
    assert stable_seed("cool waves") == engine.build_requests(spec)[0].seed


def test_constraints_move_to_negative_prompt(engine):
    assert split_constraints("warm fractal, no human forms") == ("warm fractal", ["human forms"])
    terms = constraint_terms(["human forms"])
    assert "human forms" in terms and "person" in terms and "face" in terms
    (request,) = engine.build_requests(PromptSpec(prompt="warm fractal, no human forms, without text"))
    assert request.prompt == "warm fractal"
    assert "human forms" in request.negative_prompt and "watermark" in request.negative_prompt
    with pytest.raises(InvalidInputError, match="what to make"):
        engine.build_requests(PromptSpec(prompt="no people"))


def test_dynamic_prompts_variants_and_wildcards_are_seeded(engine):
    spec = PromptSpec(prompt="{warm|cool|neon} __motifs__", count=6, seed=7)
    prompts = [r.prompt for r in engine.build_requests(spec)]
    assert prompts == [r.prompt for r in engine.build_requests(spec)]
    assert all(p.split()[0] in {"warm", "cool", "neon"} and "__" not in p for p in prompts)
    assert len(set(prompts)) > 1
    with pytest.raises(NotFoundError, match="__nope__"):
        engine.build_requests(PromptSpec(prompt="a __nope__ thing"))
    with pytest.raises(InvalidInputError, match="cannot be parsed"):
        engine.build_requests(PromptSpec(prompt="a {warm|cool thing"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (PromptSpec(prompt="   "), "prompt is empty"),
        (PromptSpec(prompt="x", count=0), "at least 1"),
        (PromptSpec(prompt="x", count=MAX_COUNT + 1), "limit"),
        (PromptSpec(prompt="x 001-600", count=2), "limit"),
        (PromptSpec(prompt="x", seed=-1), "seed"),
        (PromptSpec(prompt="x", width=32), "width"),
    ],
)
def test_bad_specs_fail_up_front(engine, spec, message):
    with pytest.raises(InvalidInputError, match=message):
        engine.build_requests(spec)


def test_unknown_style_suggests_close_names(engine):
    with pytest.raises(NotFoundError, match="digital art"):
        engine.build_requests(PromptSpec(prompt="x", style="digtal art"))


def test_parse_size():
    assert parse_size("512") == (512, 512)
    assert parse_size("768x512") == (768, 512)
    for bad in ("32x32", "4096x512", "big", "512x"):
        with pytest.raises(InvalidInputError):
            parse_size(bad)


def test_request_id_covers_pixels_only():
    base = RenderRequest(prompt="warm fractal", seed=1)
    assert base.request_id == RenderRequest(prompt="warm fractal", seed=1, project="other", index=5).request_id
    for change in ({"seed": 2}, {"width": 640}, {"negative_prompt": "x"}, {"backend_version": "2"}, {"tiling": True}):
        assert base.model_copy(update=change).request_id != base.request_id


def test_seed_range_past_max_seed_is_refused_not_wrapped(engine):
    with pytest.raises(InvalidInputError) as info:
        engine.build_requests(PromptSpec(prompt="warm fractal", seed=MAX_SEED, count=3))
    message = str(info.value)
    assert "seed 4294967295 is too large for 3 images" in message
    assert message.endswith("the largest usable seed is 4294967293") and "\n" not in message
    # a range multiplies the images: 9 prompts from seed MAX_SEED - 7 would wrap too
    with pytest.raises(InvalidInputError, match="largest usable seed is 4294967287"):
        engine.build_requests(PromptSpec(prompt="warm fractal 01-09", seed=MAX_SEED - 7))
    top = engine.build_requests(PromptSpec(prompt="warm fractal", seed=MAX_SEED - 2, count=3))
    assert [r.seed for r in top] == [MAX_SEED - 2, MAX_SEED - 1, MAX_SEED]
    assert [r.seed for r in engine.build_requests(PromptSpec(prompt="x", seed=MAX_SEED))] == [MAX_SEED]


def test_check_seed_range():
    assert check_seed_range(0, 1000) == 0
    for seed, images in ((-1, 1), (MAX_SEED + 1, 1), (MAX_SEED - 998, 1000)):
        with pytest.raises(InvalidInputError):
            check_seed_range(seed, images)


def test_prompt_over_the_limit_with_its_style_says_so(engine):
    engine.styles.create("long tail", "{prompt}, " + "golden glow " * 80)  # 970 characters
    prompt = "warm fractal " * 90  # 1170 characters: fits alone, not with the style
    with pytest.raises(InvalidInputError, match=r"prompt is \d+ characters long with style 'long tail' applied; "
                                                r"the limit is 2000 \(shorten the prompt or the style\)"):
        engine.build_requests(PromptSpec(prompt=prompt, style="long tail"))
    with pytest.raises(InvalidInputError, match="prompt is 100000 characters long; the limit is 2000"):
        engine.build_requests(PromptSpec(prompt="w" * 100_000))
