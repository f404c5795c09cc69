"""Slug rules have one home (naming.py): project specs and the artifact store apply the same ones."""

from __future__ import annotations

import pytest

from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.errors import InvalidInputError
from echo_pipeline.naming import MAX_SLUG, check_slug, is_valid_slug, project_slug, slugify
from echo_pipeline.workflows.projects import ProjectRegistry, ProjectSpec

GOOD = ["default", "ruzgar-nft-collection", "a", "v2-assets", "x" * MAX_SLUG]
BAD = ["", "Ruzgar", "a--b", "-a", "a-", "a_b", "a.b", "..", "a/b", "x" * (MAX_SLUG + 1), "ü"]


@pytest.mark.parametrize("slug", GOOD)
def test_valid_slugs(slug):
    assert is_valid_slug(slug) and check_slug(slug) == slug and slugify(slug) == slug


@pytest.mark.parametrize("slug", BAD)
def test_invalid_slugs_everywhere(slug, tmp_path):
    assert not is_valid_slug(slug)
    with pytest.raises(InvalidInputError, match="is not a slug"):
        check_slug(slug)
    with pytest.raises(InvalidInputError):
        ProjectRegistry(tmp_path / "projects").path(slug)
    if slug:  # an empty slug is derived from the name
        with pytest.raises(ValueError, match="slug"):
            ProjectSpec(name="P", slug=slug, intent="warm fractal")
    store = ArtifactStore(str(tmp_path / "artifacts"))
    with pytest.raises(InvalidInputError, match="is not a slug"):
        store.image_path(slug, "abcd")  # the store accepted 'Ruzgar', 'a_b', 'a.b' before


def test_slugify_and_project_slug():
    assert slugify("Rüzgar NFT Collection") == "ruzgar-nft-collection"
    assert slugify("İstanbul Şehir") == "istanbul-sehir"
    assert len(slugify("word " * 60)) <= MAX_SLUG and is_valid_slug(slugify("word " * 60))
    assert project_slug("  Video Game Assets ") == "video-game-assets"
    with pytest.raises(InvalidInputError, match=r"partition 'Bad Slug' is not a slug: .* e\.g\. 'bad-slug'"):
        check_slug("Bad Slug", "partition")
