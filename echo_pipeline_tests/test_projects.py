"""Project specs and the registry: YAML round-trip, validation messages, atomic saves, name resolution."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from echo_pipeline.errors import InvalidInputError, NotFoundError
from echo_pipeline.workflows.projects import ProjectRegistry, ProjectSpec


@pytest.fixture
def registry(tmp_path: Path) -> ProjectRegistry:
    return ProjectRegistry(tmp_path / "projects")


def test_spec_derives_slug_and_normalizes_fields():
    spec = ProjectSpec(name="  Ruzgar NFT Collection ", intent=" warm   fractal, no human forms ",
                       constraints=["no text", "logos"], media_types=["texture", "image", "texture"])
    assert spec.name == "Ruzgar NFT Collection"
    assert spec.slug == "ruzgar-nft-collection"
    assert spec.intent == "warm fractal, no human forms"
    assert spec.constraints == ["text", "logos"]
    assert spec.media_types == ["image", "texture"]
    assert (spec.width, spec.height, spec.count, spec.backend, spec.schedule) == (512, 512, 10, "procedural", False)


@pytest.mark.parametrize("fields, field", [
    ({"count": 0}, "count"),
    ({"count": 1001}, "count"),
    ({"width": 32}, "width"),
    ({"height": 4096}, "height"),
    ({"style_threshold": 101}, "style_threshold"),
    ({"media_types": ["hologram"]}, "media_types"),
    ({"slug": "Bad Slug"}, "slug"),
    ({"colour": "red"}, "colour"),
])
def test_spec_rejects_bad_values(fields, field):
    with pytest.raises(Exception) as info:
        ProjectSpec(name="P", intent="warm fractal", **fields)
    assert field in str(info.value)


def test_registry_round_trip(registry: ProjectRegistry):
    created = registry.create("Ruzgar NFT Collection", "warm fractal, no human forms", count=100,
                              style="digital art", schedule=True, seed=7)
    assert isinstance(created.created, datetime)
    path = registry.path("ruzgar-nft-collection")
    assert path == registry.projects_dir / "ruzgar-nft-collection.yaml" and path.is_file()
    text = path.read_text()
    assert text.startswith("# ECHO.OS project: Ruzgar NFT Collection")
    assert "# images per batch" in text  # field descriptions as comments
    loaded = registry.load("ruzgar-nft-collection")
    assert loaded == created
    assert registry.slugs() == ["ruzgar-nft-collection"]
    assert registry.exists("ruzgar-nft-collection") and not registry.exists("nope")
    assert registry.list() == [created]


def test_create_updates_and_keeps_created(registry: ProjectRegistry):
    first = registry.create("Video Game Assets", "medieval fantasy weapons", count=4)
    again = registry.create("Video Game Assets", "medieval fantasy shields", style=None, width=768)
    assert again.created == first.created
    assert again.intent == "medieval fantasy shields"
    assert (again.count, again.width) == (4, 768)  # untouched fields kept, None means "leave as is"
    assert registry.slugs() == ["video-game-assets"]
    with pytest.raises(InvalidInputError, match="field 'count'"):
        registry.create("Video Game Assets", None, count=0)
    with pytest.raises(InvalidInputError, match="intent"):
        registry.create("Brand New", None)


def test_list_is_sorted_by_slug(registry: ProjectRegistry):
    for name in ("Zeta", "alpha", "Mid Project"):
        registry.create(name, "warm fractal")
    assert registry.slugs() == ["alpha", "mid-project", "zeta"]
    assert [s.slug for s in registry.list()] == ["alpha", "mid-project", "zeta"]


def test_atomic_save_leaves_no_temp_files(registry: ProjectRegistry, monkeypatch):
    spec = registry.create("Ruzgar", "warm fractal")
    assert sorted(p.name for p in registry.projects_dir.iterdir()) == ["ruzgar.yaml"]

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        registry.save(spec.model_copy(update={"intent": "cool waves"}))
    assert sorted(p.name for p in registry.projects_dir.iterdir()) == ["ruzgar.yaml"]
    assert registry.load("ruzgar").intent == "warm fractal"  # the old file is intact


def _write(registry: ProjectRegistry, name: str, text: str) -> Path:
    registry.projects_dir.mkdir(parents=True, exist_ok=True)
    path = registry.projects_dir / name
    path.write_text(text)
    return path


def test_validation_error_names_file_and_field(registry: ProjectRegistry):
    _write(registry, "x.yaml", "name: X\nintent: warm fractal\ncount: 0\n")
    with pytest.raises(InvalidInputError) as info:
        registry.load("x")
    message = str(info.value)
    assert "x.yaml" in message
    assert "field 'count': Input should be greater than or equal to 1" in message
    with pytest.raises(InvalidInputError, match="x.yaml"):
        registry.list()  # a broken file raises
    specs, errors = registry.scan()  # ... unless the caller wants to keep going
    assert specs == [] and len(errors) == 1 and "field 'count'" in errors[0]


def test_unknown_field_suggests_the_right_one(registry: ProjectRegistry):
    _write(registry, "x.yaml", "name: X\nintent: warm fractal\ncuont: 3\n")
    with pytest.raises(InvalidInputError, match=r"field 'cuont': Extra inputs are not permitted \(did you mean 'count'"):
        registry.load("x")


def test_yaml_syntax_error_names_file_and_line(registry: ProjectRegistry):
    _write(registry, "x.yaml", "name: X\nintent: warm fractal\nconstraints: [text\ncount: 3\n")
    with pytest.raises(InvalidInputError, match=r"x\.yaml: invalid YAML at line \d+"):
        registry.load("x")


def test_slug_must_match_file_name(registry: ProjectRegistry):
    _write(registry, "x.yaml", "name: X\nslug: other\nintent: warm fractal\n")
    with pytest.raises(InvalidInputError, match="x.yaml: field 'slug' is 'other'"):
        registry.load("x")
    # Without a slug field the file name is the slug, even when the name would slugify differently.
    _write(registry, "short.yaml", "name: A Much Longer Name\nintent: warm fractal\n")
    assert registry.load("short").slug == "short"


def test_bad_file_names_are_reported_not_listed(registry: ProjectRegistry):
    _write(registry, "My Project.yaml", "name: My Project\nintent: warm fractal\n")
    _write(registry, "old.yml", "name: Old\nintent: warm fractal\n")
    registry.create("Good", "warm fractal")
    assert registry.slugs() == ["good"]  # only safe partition keys
    specs, errors = registry.scan()
    assert [s.slug for s in specs] == ["good"] and len(errors) == 2
    assert any("rename it to old.yaml" in e for e in errors)
    with pytest.raises(InvalidInputError):
        registry.path("../etc/passwd")


@pytest.fixture
def populated(registry: ProjectRegistry) -> ProjectRegistry:
    registry.create("Ruzgar NFT Collection", "warm fractal, no human forms")
    registry.create("Ruzgar Textures", "seamless warm stone textures")
    registry.create("Video Game Assets", "medieval fantasy weapons")
    return registry


@pytest.mark.parametrize("text", [
    "Ruzgar NFT Collection", "ruzgar nft collection", "ruzgar-nft-collection",
    "Ruzgar NFT", "ruzgar-nft", "RUZGAR NF",
])
def test_resolve_by_name_slug_or_prefix(populated: ProjectRegistry, text: str):
    spec = populated.resolve(text)
    assert (spec.slug, spec.name) == ("ruzgar-nft-collection", "Ruzgar NFT Collection")


def test_resolve_exact_match_wins_over_prefix(registry: ProjectRegistry):
    registry.create("Art", "warm fractal")
    registry.create("Art Deco", "gold lines")
    assert registry.resolve("art").slug == "art"
    assert registry.resolve("Art D").slug == "art-deco"


def test_resolve_ambiguous_prefix_lists_candidates(populated: ProjectRegistry):
    with pytest.raises(InvalidInputError) as info:
        populated.resolve("ruzgar")
    message = str(info.value)
    assert "ambiguous" in message
    assert "ruzgar-nft-collection" in message and "ruzgar-textures" in message


def test_resolve_unknown_suggests_closest(populated: ProjectRegistry):
    with pytest.raises(NotFoundError) as info:
        populated.resolve("Video Gme Assets")
    assert "did you mean 'Video Game Assets'" in str(info.value)
    with pytest.raises(NotFoundError, match="echo-os plan"):
        populated.resolve("Something Else Entirely")


def test_resolve_with_no_projects_says_how_to_create(registry: ProjectRegistry):
    with pytest.raises(NotFoundError, match=r'no projects yet; create one with echo-os plan "Ruzgar NFT" "<intent>"'):
        registry.resolve("Ruzgar NFT")
    with pytest.raises(NotFoundError, match="no projects yet"):
        registry.load("ruzgar-nft")


def test_resolve_reports_a_broken_target_file(registry: ProjectRegistry):
    _write(registry, "broken.yaml", "name: Broken\nintent: warm fractal\nwidth: 10\n")
    with pytest.raises(InvalidInputError, match="broken.yaml: field 'width'"):
        registry.resolve("broken")


def test_saved_yaml_is_plain_and_hand_editable(registry: ProjectRegistry):
    registry.create("Ruzgar", "warm fractal", constraints=["no text"], media_types=["image", "texture"])
    data = yaml.safe_load(registry.path("ruzgar").read_text())
    assert data["constraints"] == ["text"] and data["media_types"] == ["image", "texture"]
    assert data["seed"] is None and data["style"] is None
