"""Settings: one normalized artifact root, checked once; one rule for where configs live."""

from __future__ import annotations

import os

import pytest

from echo_pipeline.errors import InvalidInputError, StorageError
from echo_pipeline.settings import CHECKOUT_DIR, REPO_CONFIG_DIR, Settings, normalize_artifact_root


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("ECHO_ARTIFACT_ROOT", raising=False)
    monkeypatch.delenv("ECHO_CONFIG_DIR", raising=False)


@pytest.mark.parametrize("root, expected", [
    ("memory://echo", "memory://echo"),
    ("memory://echo/", "memory://echo"),
    ("s3://bucket/prefix/", "s3://bucket/prefix"),
    ("simplecache::memory://echo", "simplecache::memory://echo"),
    ("file:///srv/art/", "/srv/art"),
    ("  /srv/art  ", "/srv/art"),
])
def test_urls_are_kept_and_file_urls_become_paths(root, expected):
    assert normalize_artifact_root(root) == expected
    assert normalize_artifact_root(expected) == expected  # idempotent


def test_local_paths_become_absolute_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_artifact_root("./art") == str(tmp_path / "art")
    assert normalize_artifact_root("file://art") == str(tmp_path / "art")
    assert normalize_artifact_root("~/art") == os.path.expanduser("~/art")


@pytest.mark.parametrize("root, message", [
    ("::", "is not a folder or an fsspec URL"),
    ("x::y", "is not a folder or an fsspec URL"),
    ("memory::", "is not a folder or an fsspec URL"),
    ("", "artifact root is empty"),
    ("   ", "artifact root is empty"),
    ("bogus://x", "unknown artifact root protocol 'bogus'"),
    ("s3://", "names no location"),
    ("file://", "names no folder"),
    ("art\x1b[2J", "control characters"),
])
def test_junk_roots_are_one_line_storage_errors(root, message):
    with pytest.raises(StorageError, match=message) as info:
        normalize_artifact_root(root)
    assert "\n" not in str(info.value)
    with pytest.raises(StorageError, match=message):
        Settings(artifact_root=root)


def test_settings_carry_the_normalized_root_everywhere(tmp_path, monkeypatch, no_env):
    monkeypatch.chdir(tmp_path)
    settings = Settings.load(artifact_root="art", config_dir="cfg")
    assert settings.artifact_root == str(tmp_path / "art")
    assert settings.config_dir == tmp_path / "cfg"
    # handed on (as a Dagster resource's config would be) and read back in another folder: same places
    monkeypatch.chdir(CHECKOUT_DIR)
    again = Settings.model_validate(settings.model_dump())
    assert (again.artifact_root, again.config_dir) == (settings.artifact_root, settings.config_dir)
    assert Settings.load(settings.artifact_root, settings.config_dir).artifact_root == settings.artifact_root
    assert Settings(artifact_root="art").artifact_root == str(CHECKOUT_DIR / "art")
    settings.artifact_root = "file:///srv/x/"
    assert settings.artifact_root == "/srv/x"  # assignment is normalized too


def test_environment_and_arguments(tmp_path, monkeypatch, no_env):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ECHO_ARTIFACT_ROOT", "memory://from-env/")
    assert Settings.load().artifact_root == "memory://from-env"
    assert Settings.load().describe()["artifact_root_from"] == "ECHO_ARTIFACT_ROOT"
    assert Settings.load(artifact_root="other").artifact_root == str(tmp_path / "other")
    monkeypatch.setenv("ECHO_ARTIFACT_ROOT", "::")
    with pytest.raises(StorageError, match="'::'"):
        Settings.load()
    with pytest.raises(StorageError, match="empty"):
        Settings.load(artifact_root="")  # an explicit empty root is an error, not the default


def test_settings_file(tmp_path, monkeypatch, no_env):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "settings.yaml").write_text("artifact_root: memory://from-file\ndefault_width: 768\n")
    settings = Settings.load(config_dir=cfg)
    assert (settings.artifact_root, settings.default_width) == ("memory://from-file", 768)
    assert settings.describe()["artifact_root_from"] == str(cfg / "settings.yaml")
    (cfg / "settings.yaml").write_text("artifact_rot: x\n")
    with pytest.raises(InvalidInputError, match=r"settings\.yaml: unknown setting\(s\) artifact_rot"):
        Settings.load(config_dir=cfg)
    (cfg / "settings.yaml").write_text("default_width: wide\n")
    with pytest.raises(InvalidInputError, match=r"settings\.yaml: default_width: Input should be a valid integer"):
        Settings.load(config_dir=cfg)


def test_config_dir_rule(tmp_path, monkeypatch, no_env):
    # 1. ECHO_CONFIG_DIR
    monkeypatch.setenv("ECHO_CONFIG_DIR", str(tmp_path / "mine"))
    assert Settings.load().config_dir == tmp_path / "mine"
    assert Settings.load().describe()["config_dir_from"] == "ECHO_CONFIG_DIR"
    monkeypatch.delenv("ECHO_CONFIG_DIR")
    # 2. ./configs when the current folder has one
    (tmp_path / "configs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert Settings.load().config_dir == tmp_path / "configs"
    # 3. elsewhere: the source checkout's configs/ (this test runs from an editable install)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = Settings.load()
    assert settings.config_dir == REPO_CONFIG_DIR
    assert settings.describe()["config_dir_from"] == "the source checkout (editable install)"
    assert settings.artifact_root == str(elsewhere / "artifacts")


def test_describe_says_where_things_go(tmp_path, monkeypatch, no_env):
    monkeypatch.chdir(tmp_path)
    described = Settings.load(config_dir=tmp_path / "cfg").describe()
    assert described == {
        "artifact_root": str(tmp_path / "artifacts"),
        "config_dir": str(tmp_path / "cfg"),
        "projects": str(tmp_path / "cfg" / "projects"),
        "styles": str(tmp_path / "cfg" / "styles"),
        "user_styles": str(tmp_path / "cfg" / "styles" / "user.json"),
        "wildcards": str(tmp_path / "cfg" / "wildcards"),
        "settings_file": str(tmp_path / "cfg" / "settings.yaml"),
        "artifact_root_from": "default (./artifacts in the current folder)",
        "config_dir_from": "argument",
    }


def test_readme_example_project_is_found_from_the_checkout_root(monkeypatch, no_env):
    from echo_pipeline.workflows.projects import ProjectRegistry

    monkeypatch.chdir(CHECKOUT_DIR)
    settings = Settings.load()
    assert settings.config_dir == REPO_CONFIG_DIR
    assert ProjectRegistry(settings.projects_dir).resolve("Ruzgar NFT").slug == "ruzgar-nft-collection"


def test_cli_refuses_a_junk_root_before_writing_anything(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("--artifact-root", "::", "render", "warm fractal")
    assert code == 2
    assert err.strip().startswith("error: artifact root '::' is not a folder or an fsspec URL")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "projects").exists() and not (tmp_path / ":").exists()
