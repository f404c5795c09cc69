"""Style presets: built-ins, A1111/Fooocus semantics, user styles that persist beside them."""

from __future__ import annotations

import json

import pytest

from echo_pipeline.errors import InvalidInputError, NotFoundError
from echo_pipeline.render.style_manager import Style, StyleLibrary


def test_builtin_presets(config_dir):
    library = StyleLibrary(config_dir / "styles")
    names = library.names()
    assert len(names) >= 12
    assert {"digital art", "neon noir"} <= set(names)
    assert all(s.source == "builtin" for s in library.list())
    assert library.get("Digital_Art").name == "digital art"
    assert library.get("neon-noir").name == "neon noir"


def test_apply_follows_a1111():
    slot = Style(name="s", prompt="cinematic still of {prompt}, film grain", negative_prompt="cartoon")
    assert slot.apply("a cat", "blurry") == ("cinematic still of a cat, film grain", "blurry, cartoon")
    appended = Style(name="t", prompt="oil painting", negative_prompt="")
    assert appended.apply("a cat") == ("a cat, oil painting", "")


def test_user_styles_persist_without_touching_builtins(config_dir):
    styles_dir = config_dir / "styles"
    builtin_before = (styles_dir / "builtin.json").read_bytes()
    library = StyleLibrary(styles_dir)
    created = library.create("ruzgar warm", "warm golden fractal glow, {prompt}, intricate", "people")
    assert created.source == "user"
    again = StyleLibrary(styles_dir)
    assert again.get("ruzgar warm").apply("spiral") == ("warm golden fractal glow, spiral, intricate", "people")
    assert (styles_dir / "builtin.json").read_bytes() == builtin_before
    assert json.loads((styles_dir / "user.json").read_text())[0]["name"] == "ruzgar warm"
    with pytest.raises(InvalidInputError, match="already exists"):
        again.create("ruzgar warm", "other")
    again.create("ruzgar warm", "other", replace=True)
    assert StyleLibrary(styles_dir).get("ruzgar warm").prompt == "other"


@pytest.mark.parametrize(
    ("name", "description", "message"),
    [("digital art", "x", "built in"), ("", "x", "empty"), ("ok", "  ", "description"), ("bad\nname", "x", "printable")],
)
def test_bad_user_styles(config_dir, name, description, message):
    with pytest.raises(InvalidInputError, match=message):
        StyleLibrary(config_dir / "styles").create(name, description)


def test_unknown_style_and_a1111_csv(config_dir):
    styles_dir = config_dir / "styles"
    (styles_dir / "extra.csv").write_text('name,prompt,negative_prompt\nmy csv,"{prompt}, moody",blurry\n')
    library = StyleLibrary(styles_dir)
    assert library.get("my csv").apply("sea") == ("sea, moody", "blurry")
    with pytest.raises(NotFoundError, match="unknown style"):
        library.get("nonexistent style")


@pytest.mark.parametrize(
    ("name", "description", "negative", "message"),
    [
        ("huge", "{prompt}, " + "x" * 10_000, "", r"style 'huge': template is 10010 characters long; the limit is 1000"),
        ("neg", "{prompt}", "y" * 1001, r"style 'neg': negative prompt is 1001 characters long; the limit is 1000"),
        ("n" * 61, "x", "", r"style name 'n{60}'\.\.\. \(61 characters\) must be at most 60 printable characters"),
        ("esc\x1b[2J", "x", "", "printable"),
        ("ok", "warm \x1b]0;title\x07 glow", "", "control characters"),
        ("ok", "warm", "blurry\x1b[2J", "control characters"),
    ],
)
def test_styles_that_could_never_render_are_refused_at_creation(config_dir, name, description, negative, message):
    library = StyleLibrary(config_dir / "styles")
    with pytest.raises(InvalidInputError, match=message):
        library.create(name, description, negative)
    assert not (config_dir / "styles" / "user.json").exists()


def test_over_long_style_in_a_file_names_the_file_and_keeps_the_rest(config_dir):
    styles_dir = config_dir / "styles"
    (styles_dir / "user.json").write_text(json.dumps([
        {"name": "fine", "prompt": "{prompt}, warm glow"},
        {"name": "huge", "prompt": "{prompt}, " + "x" * 10_000},
    ]))
    (styles_dir / "extra.csv").write_text('name,prompt,negative_prompt\nmultiline,"{prompt},\nmoody",blurry\n')
    library = StyleLibrary(styles_dir)
    assert library.get("fine").prompt == "{prompt}, warm glow"
    assert library.get("multiline").apply("sea")[0] == "sea,\nmoody"  # A1111 CSVs may span lines
    assert "huge" not in library.names()
    assert library.problems == [f"style file {styles_dir / 'user.json'}: style 'huge': template is 10010 characters "
                                "long; the limit is 1000 (prompts are at most 2000 characters with the style applied)"]
    with pytest.raises(InvalidInputError, match=r"user\.json: style 'huge': template is 10010 characters long"):
        library.get("huge")
    # creating another style keeps the broken one in user.json for the user to fix
    library.create("another", "cool tones")
    assert [s["name"] for s in json.loads((styles_dir / "user.json").read_text())] == ["fine", "huge", "another"]
    with pytest.raises(InvalidInputError, match="already exists"):
        library.create("huge", "short now")
    library.create("huge", "short now", replace=True)
    assert StyleLibrary(styles_dir).get("huge").prompt == "short now" and StyleLibrary(styles_dir).problems == []
