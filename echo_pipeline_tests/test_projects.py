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
def registry(config_dir: Path) -> ProjectRegistry:
    """An empty projects/ beside a copy of the built-in styles and wildcards."""
    return ProjectRegistry(config_dir / "projects")


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

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)  # the disk fills up while the new file is written
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
    with pytest.raises(NotFoundError, match=r'no projects yet; create it with: echo-os plan "Ruzgar NFT" "<intent>"'):
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


# --------------------------------------------------------------------------------------------------
# What can never render is refused when the project is made (issue 7, item 12)


def test_over_long_intent_is_refused_at_creation_and_nothing_is_written(registry: ProjectRegistry):
    with pytest.raises(InvalidInputError, match=r"field 'intent': intent is 100000 characters long; the limit is 2000"):
        registry.create("Huge", "w" * 100_000)
    assert not registry.projects_dir.exists() or not list(registry.projects_dir.iterdir())
    with pytest.raises(InvalidInputError, match="control characters"):
        registry.create("Escape", "warm fractal \x1b]0;pwned\x07")


def test_intent_that_fits_but_not_with_its_style_is_refused(registry: ProjectRegistry):
    styles = registry.prompts.styles
    styles.create("wordy", "{prompt}, " + ", ".join(["intricate golden detail"] * 38))  # about 950 characters
    intent = "warm fractal " + ", ".join(["spiral"] * 150)  # about 1200 characters: fits alone
    assert len(intent) < 2000
    with pytest.raises(InvalidInputError) as info:
        registry.create("Wordy", intent, style="wordy")
    assert "project 'Wordy' cannot render: prompt is" in str(info.value)
    assert "with style 'wordy' applied; the limit is 2000" in str(info.value)
    assert not registry.exists("wordy")
    registry.create("Wordy", intent)  # without the style it renders


def test_unknown_style_is_refused_at_creation(registry: ProjectRegistry):
    with pytest.raises(NotFoundError, match="unknown style 'digtal art'; did you mean 'digital art'"):
        registry.create("Styled", "warm fractal", style="digtal art")
    assert not registry.exists("styled")


def test_seed_without_room_for_a_batch_is_refused():
    with pytest.raises(ValueError, match="the largest usable seed is 4294967286"):
        ProjectSpec(name="P", intent="warm fractal", seed=4294967295, count=10)
    assert ProjectSpec(name="P", intent="warm fractal", seed=4294967286, count=10).seed == 4294967286


def test_loading_an_over_long_spec_names_the_file(registry: ProjectRegistry):
    _write(registry, "long.yaml", f"name: Long\nintent: {'warm fractal ' * 400}\n")
    with pytest.raises(InvalidInputError, match=r"long\.yaml: field 'intent': intent is \d+ characters long; the limit is 2000"):
        registry.load("long")


# --------------------------------------------------------------------------------------------------
# One resolver for every command (issue 7, item 9)


STORE = ["default", "old-renders", "ruzgar-nft"]  # what `store.projects()` lists


@pytest.mark.parametrize("text", ["Ruzgar NFT", "ruzgar nft", "RUZGAR NF", "Ruzgar NFT Collection",
                                  "ruzgar-nft-collection", "ruzgar-nft-c"])
def test_ruzgar_nft_resolves_to_the_collection_in_every_path(populated: ProjectRegistry, text: str):
    for stored in ((), ["default"], lambda: ["default", "video-game-assets"]):
        ref = populated.resolve_ref(text, stored=stored)
        assert (ref.slug, ref.name, ref.source) == ("ruzgar-nft-collection", "Ruzgar NFT Collection", "spec")
        assert ref.spec == populated.load("ruzgar-nft-collection") == ref.require_spec()
    assert populated.resolve(text).slug == "ruzgar-nft-collection"


def test_ruzgar_nft_resolves_to_the_collection_through_the_engine(settings, config_dir):
    from echo_pipeline.workflows.creative_engine import CreativeEngine

    engine = CreativeEngine(settings)
    engine.projects.create("Ruzgar NFT Collection", "warm fractal, no human forms")
    ref = engine.resolve_project("Ruzgar NFT")
    assert (ref.slug, ref.source) == ("ruzgar-nft-collection", "spec")
    assert engine.resolve_project(None).slug == "default"
    with pytest.raises(NotFoundError, match="create it with: echo-os plan"):
        engine.resolve_project("Nothing Like It")
    # plan asks to create: a new name gets a new slug, an existing one its project
    assert engine.resolve_project("Brand New", create=True).model_dump(exclude={"spec"}) == {
        "slug": "brand-new", "name": "Brand New", "source": "new"}
    assert engine.resolve_project("ruzgar nft collection", create=True).slug == "ruzgar-nft-collection"


def test_store_only_projects_resolve_after_specs(populated: ProjectRegistry):
    ref = populated.resolve_ref("old-renders", stored=STORE)
    assert (ref.slug, ref.name, ref.spec, ref.source) == ("old-renders", "old-renders", None, "store")
    assert populated.resolve_ref("Old Renders", stored=STORE).slug == "old-renders"
    # a store project's exact slug beats a spec prefix; its name in words does not
    assert populated.resolve_ref("ruzgar-nft", stored=STORE).source == "store"
    assert populated.resolve_ref("Ruzgar NFT", stored=STORE).slug == "ruzgar-nft-collection"
    with pytest.raises(NotFoundError, match="has no spec"):
        populated.resolve_ref("old-renders", stored=STORE).require_spec()
    with pytest.raises(NotFoundError):
        populated.resolve("old-renders")  # spec-only lookup (batch) does not see the store


def test_none_and_default_resolve_to_default(populated: ProjectRegistry):
    for text in (None, "default", "Default"):
        ref = populated.resolve_ref(text, stored=())
        assert (ref.slug, ref.source, ref.spec) == ("default", "default", None)
    populated.create("Default", "cool waves")
    assert populated.resolve_ref(None).source == "spec"


def test_unknown_name_suggests_specs_and_store_projects(populated: ProjectRegistry):
    with pytest.raises(NotFoundError) as info:
        populated.resolve_ref("old-render", stored=STORE)
    message = str(info.value)
    assert "did you mean 'old-renders'?" in message
    assert message.endswith('create it with: echo-os plan "old-render" "<intent>"')
    with pytest.raises(NotFoundError, match="did you mean 'Video Game Assets' \\(video-game-assets\\)"):
        populated.resolve_ref("Video Gme Assets", stored=STORE)


def test_ambiguous_name_lists_candidates(populated: ProjectRegistry):
    with pytest.raises(InvalidInputError) as info:
        populated.resolve_ref("Ruzgar", stored=STORE)
    assert "ambiguous" in str(info.value)
    assert "'Ruzgar NFT Collection' (ruzgar-nft-collection)" in str(info.value)
    assert "'Ruzgar Textures' (ruzgar-textures)" in str(info.value)


def test_create_never_picks_a_project_by_prefix(populated: ProjectRegistry):
    ref = populated.resolve_ref("Ruzgar NFT", stored=(), create=True)
    assert (ref.slug, ref.name, ref.spec, ref.source) == ("ruzgar-nft", "Ruzgar NFT", None, "new")
    assert populated.resolve_ref("ruzgar-nft", stored=STORE, create=True).source == "store"
    assert populated.resolve_ref("Video Game Assets", create=True).source == "spec"
    assert not populated.exists("ruzgar-nft")  # resolving never writes


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("   ", "empty"), ("a/b", "contains '/'"), ("..", "'..'"), ("x\x1b[2J", "control characters"),
])
def test_bad_names_are_one_line_errors(populated: ProjectRegistry, text: str, message: str):
    with pytest.raises(InvalidInputError, match=message):
        populated.resolve_ref(text, stored=STORE)


def test_quotes_in_the_create_hint_are_shell_safe(registry: ProjectRegistry):
    with pytest.raises(NotFoundError) as info:
        registry.resolve_ref('Say "Hi" $HOME')
    assert str(info.value).endswith("""echo-os plan 'Say "Hi" $HOME' "<intent>\"""")


def test_media_is_an_alias_of_media_types_in_project_files(registry: ProjectRegistry):
    path = registry.projects_dir / "ocean.yaml"
    path.write_text("name: Ocean\nintent: ocean waves\nmedia: [video, image]\n")
    spec = registry.load("ocean")
    assert spec.media_types == ["image", "video"]
    path.write_text("name: Ocean\nintent: ocean waves\nmedia: texture\n")
    assert registry.load("ocean").media_types == ["texture"]  # a comma-separated string, as media_types takes
    registry.save(registry.load("ocean"))  # written back under its own name
    assert "media_types:" in path.read_text() and "\nmedia:" not in path.read_text()
    path.write_text("name: Ocean\nintent: ocean waves\nmedia: [video]\nmedia_types: [texture]\n")
    with pytest.raises(InvalidInputError, match="either 'media' or 'media_types'"):
        registry.load("ocean")


def test_references_are_checked_and_stored_absolute(registry: ProjectRegistry, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), (10, 20, 30)).save(tmp_path / "ref.png")
    spec = registry.create("Refs", "warm fractal", references=["ref.png", "ref.png", f"file://{tmp_path}/ref.png"])
    assert spec.references == [str(tmp_path / "ref.png")]  # absolute, each once
    assert registry.load("refs").references == spec.references
    # hand-written relative paths are relative to the folder that holds configs/
    path = registry.path("refs")
    path.write_text(path.read_text().replace(f"[{tmp_path / 'ref.png'}]", "[pics/a.png]"))
    assert registry.load("refs").references == [str((registry.projects_dir.parent.parent / "pics/a.png").resolve())]
    with pytest.raises(NotFoundError, match="does not exist"):
        registry.create("Refs", None, references=["nope.png"])
    assert registry.load("refs").references != []  # nothing written by the refused update
