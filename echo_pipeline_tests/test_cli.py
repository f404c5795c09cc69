"""`echo-os` end to end through the real entry point: render, styles, artifacts, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from echo_pipeline_tests.a1111_infotext import parse_generation_parameters


def _images(root: Path, project: str = "default") -> list[Path]:
    return sorted((root / "projects" / project / "images").glob("*.png"))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_range_with_style_then_again_adds_nothing(cli, artifact_root):
    code, out, err = cli("render", "warm fractal 01-09", "--style", "digital art", "--size", "96x96")
    assert code == 0, err
    assert "9 new image(s)" in out
    images = _images(artifact_root)
    assert len(images) == 9
    pixels = {Image.open(p).tobytes() for p in images}
    assert len(pixels) == 9, "nine distinct images"
    for path in images:
        params = parse_generation_parameters(Image.open(path).text["parameters"])
        assert params["Prompt"].startswith("warm fractal 0") and "digital art" in params["Prompt"]
        assert params["Size-1"] == "96" and params["Size-2"] == "96"
        assert params["Echo artifact"] == path.stem
    before = _snapshot(artifact_root)
    code, out, _ = cli("render", "warm fractal 01-09", "--style", "digital art", "--size", "96x96")
    assert code == 0 and "Nothing new: all 9 image(s) were already stored" in out
    after = _snapshot(artifact_root)
    assert {k: v for k, v in after.items() if "/catalog/" not in k} == {k: v for k, v in before.items() if "/catalog/" not in k}
    assert len([k for k in after if "/catalog/" in k]) == len([k for k in before if "/catalog/" in k])


def test_render_json_and_artifacts_commands(cli, artifact_root):
    # Projects are created by `plan` only; `render --project` resolves like every other command.
    code, _, err = cli("render", "cyberpunk cityscape", "--project", "Neon Tests")
    assert code == 2 and "echo-os plan" in err and not (artifact_root / "projects" / "neon-tests").exists()
    assert cli("plan", "Neon Tests", "cyberpunk cityscape")[0] == 0
    code, out, err = cli("render", "cyberpunk cityscape", "--style", "neon noir", "--project", "Neon Tests",
                         "--size", "128x72", "--count", "2", "--seed", "5", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["project"] == "neon-tests" and payload["new"] == 2
    assert [a["seed"] for a in payload["artifacts"]] == [5, 6]
    first = payload["artifacts"][0]
    assert Path(first["path"]).is_file() and Image.open(first["path"]).size == (128, 72)

    code, out, _ = cli("artifacts", "list", "--project", "Neon Tests", "--json")
    assert code == 0 and {a["artifact_id"] for a in json.loads(out)} == {a["artifact_id"] for a in payload["artifacts"]}
    code, out, _ = cli("artifacts", "show", first["artifact_id"][:8], "--json")
    shown = json.loads(out)
    assert code == 0 and shown["artifact_id"] == first["artifact_id"]
    assert shown["request"]["style"] == "neon noir" and "Seed: 5" in shown["parameters"]
    code, out, _ = cli("artifacts", "show", first["artifact_id"][:8])
    assert code == 0 and "parameters" in out and "neon noir" in out


def test_every_command_resolves_a_project_the_same_way(cli, artifact_root):
    assert cli("plan", "Ruzgar NFT Collection", "warm fractal, no human forms", "--size", "64", "--count", "1")[0] == 0
    code, out, err = cli("render", "warm fractal", "--project", "Ruzgar NFT", "--size", "64", "--json")
    assert code == 0, err
    assert json.loads(out)["project"] == "ruzgar-nft-collection"
    assert sorted(p.name for p in (artifact_root / "projects").iterdir()) == ["ruzgar-nft-collection"]
    for args in (["batch", "--project", "Ruzgar NFT", "--json"], ["gallery", "--project", "Ruzgar NFT", "--json"],
                 ["runs", "--project", "Ruzgar NFT", "--json"], ["artifacts", "list", "--project", "Ruzgar NFT", "--json"]):
        code, out, err = cli(*args)
        assert code == 0, (args, err)
        assert "ruzgar-nft-collection" in out, args
    # `runs --project` lists the project's render runs too (they carry no partition).
    code, out, _ = cli("runs", "--project", "Ruzgar NFT", "--json")
    assert sorted(r["job"] for r in json.loads(out)) == ["batch", "plan_project", "render_job"]
    assert {r["project"] for r in json.loads(out)} == {"ruzgar-nft-collection"}


def test_style_commands(cli, config_dir):
    code, out, _ = cli("style", "list", "--json")
    assert code == 0 and len(json.loads(out)) >= 12
    code, out, _ = cli("style", "create", "ruzgar", "{prompt}, warm golden glow", "--negative", "people")
    assert code == 0 and (config_dir / "styles" / "user.json").is_file()
    code, out, _ = cli("style", "show", "ruzgar", "--json")
    assert json.loads(out)["example"]["prompt"] == "warm fractal, warm golden glow"
    code, out, err = cli("render", "spiral", "--style", "ruzgar", "--size", "64", "--json")
    assert code == 0, err
    assert json.loads(out)["artifacts"][0]["prompt"] == "spiral, warm golden glow"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["render", ""], "prompt is empty"),
        (["render", "x", "--style", "no such style"], "unknown style"),
        (["render", "x", "--size", "32x32"], "out of range"),
        (["render", "x", "--size", "4096x512"], "out of range"),
        (["render", "x", "--count", "0"], "at least 1"),
        (["render", "x", "--count", "1001"], "limit of 1000"),
        (["render", "x", "--project", "a/b"], "'/'"),
        (["render", "x", "--project", "a\\b"], "'\\\\'"),
        (["render", "x", "--project", "up..there"], "'..'"),
        (["render", "x", "--project", "bad\x07name"], "control characters"),
        (["render", "x", "--backend", "midjourney"], "no public API"),
        (["render", "x", "--backend", "procedurall"], "did you mean 'procedural'"),
        (["render", "x", "--type", "hologram"], "--type"),
        (["artifacts", "show", "ffffffffffff"], "no artifact"),
        (["style", "show", "nope"], "unknown style"),
        (["style", "create", "digital art", "x"], "built in"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_stores_nothing(cli, seeded_store, monkeypatch, args, message):
    monkeypatch.setenv("ECHO_ARTIFACT_ROOT", str(seeded_store))  # the store the commands below must leave alone
    before = _snapshot(seeded_store)
    code, out, err = cli(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert message.lower() in lines[0].lower()
    assert _snapshot(seeded_store) == before


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory, _dagster_home_template) -> Path:
    """An artifact root holding one rendered image (what `echo-os render "seed image" --size 64`
    stores), rendered once and shared by the bad-input cases: each proves it changes nothing there."""
    import shutil

    from echo_pipeline.defs import launch
    from echo_pipeline.settings import REPO_CONFIG_DIR, Settings

    work = tmp_path_factory.mktemp("seeded-store")
    shutil.copytree(REPO_CONFIG_DIR, work / "configs", ignore=shutil.ignore_patterns("user.json", "projects"))
    shutil.copytree(_dagster_home_template, work / "dagster_home")
    settings = Settings.load(artifact_root=str(work / "artifacts"), config_dir=work / "configs")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DAGSTER_HOME", str(work / "dagster_home"))
        spec, backend, model = launch.prompt_spec(settings, "seed image", size=(64, 64))
        launch.render(settings, spec, backend=backend, model=model)
    return work / "artifacts"


@pytest.mark.parametrize("root_kind", ["unknown protocol", "parent is a file"])
def test_bad_artifact_root(cli, tmp_path, root_kind):
    if root_kind == "unknown protocol":
        root = "nosuchproto://bucket/x"
    else:
        blocker = tmp_path / "file.txt"
        blocker.write_text("not a directory")
        root = str(blocker / "artifacts")
    code, _, err = cli("--artifact-root", root, "render", "x", "--size", "64")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "artifact root" in err.lower()


def test_corrupted_png_in_store_is_reported_and_left_alone(cli, artifact_root):
    code, out, _ = cli("render", "geometric pattern", "--size", "64", "--json")
    artifact = json.loads(out)["artifacts"][0]
    path = Path(artifact["path"])
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    before = _snapshot(artifact_root)
    code, _, err = cli("artifacts", "show", artifact["artifact_id"])
    assert code == 2 and "corrupt" in err.lower() and len(err.strip().splitlines()) == 1
    assert _snapshot(artifact_root) == before
    code, _, _ = cli("artifacts", "list")
    assert code == 0


def test_help_lists_commands(cli):
    code, out, _ = cli("--help")
    assert code == 0 and all(word in out for word in ("render", "style", "artifacts"))


def test_help_does_not_import_heavy_libraries():
    """`echo-os --help` stays fast: no pandas, dagster, torch, diffusers or open_clip at import."""
    import subprocess
    import sys

    code = ("import sys, echo_pipeline.cli.app; "
            "print(sorted(m for m in ('pandas', 'dagster', 'torch', 'diffusers', 'open_clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_render_says_which_prompt_words_it_ignored(cli):
    code, out, err = cli("render", "a cat", "--size", "64", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["words_ignored"] == ["cat"] and payload["artifacts"][0]["words_ignored"] == ["cat"]
    code, _, err = cli("render", "a cat", "--size", "64", "--seed", "3")
    assert code == 0 and "did not use these words of your prompt: cat" in err and "motifs: fractal" in err
    # A style preset's own words ("digital", "art") are not the user's: no warning for a clear prompt.
    code, _, err = cli("render", "warm fractal", "--style", "digital art", "--size", "64")
    assert code == 0 and "did not use" not in err


@pytest.mark.parametrize(("args", "message"), [
    (["render", "x", "--count", "ten"], "'--count'"),
    (["render"], "say what to render"),
    (["render", "x", "--no-such-flag"], "--no-such-flag"),
    (["artifacts", "nope"], "No such command"),
])
def test_parse_errors_are_one_line_exit_2(cli, args, message):
    code, out, err = cli(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert "╭" not in err  # not Typer's multi-line box


def test_render_escapes_control_characters_in_its_output(cli):
    code, out, err = cli("render", "warm fractal \x1b[2J\x1b]0;pwned\x07", "--size", "64")
    assert code == 0, err
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "\\x1b[2J" in out
