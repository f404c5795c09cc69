"""NFT export (`echo-os export nft`): a collection from a rendered project checked against the
ERC-721 / OpenSea metadata field types, its provenance hash recomputed from the image files, the
selection's refusals (near-duplicates, identical pixels, low scores, not accepted), atomic writing,
and the command's exit codes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from echo_pipeline.artifacts import nft
from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.errors import InvalidInputError, StorageError
from echo_pipeline.resonance.memory_system import load_scores, save_scores
from echo_pipeline.settings import REPO_CONFIG_DIR, Settings
from echo_pipeline.workflows.creative_engine import CreativeEngine
from echo_pipeline.workflows.nft_export import export_nft, select_tokens

# --------------------------------------------------------------------------------------------------
# A validator for the metadata standard, written from the specs (EIP-721's metadata JSON schema,
# OpenSea's metadata standards, HashLips' extra fields), independent of the code under test.

TOKEN_KEYS = {"name", "description", "image", "external_url", "animation_url", "background_color",
              "attributes", "edition", "dna", "date", "compiler"}
ATTRIBUTE_KEYS = {"trait_type", "value", "display_type", "max_value"}
DISPLAY_TYPES = {"number", "boost_number", "boost_percentage", "date"}
URI = re.compile(r"^[a-z][a-z0-9+.-]*://[^\s/][^\s]*$")
HEX6 = re.compile(r"^[0-9a-fA-F]{6}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metadata_problems(doc) -> list[str]:
    """Every way `doc` breaks the standard's field types (empty when it is valid)."""
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    problems = [f"unknown field {key!r}" for key in doc if key not in TOKEN_KEYS]
    for key in ("name", "description", "image"):
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            problems.append(f"{key} must be a non-empty string")
    for key in ("image", "external_url", "animation_url"):
        if key in doc and not (isinstance(doc[key], str) and URI.match(doc[key])):
            problems.append(f"{key} {doc[key]!r} is not an absolute URI")
    if "background_color" in doc and not (isinstance(doc["background_color"], str)
                                          and HEX6.match(doc["background_color"])):
        problems.append(f"background_color {doc['background_color']!r} is not 6 hex digits without '#'")
    if not isinstance(doc.get("edition"), int) or isinstance(doc.get("edition"), bool):
        problems.append("edition must be an integer")
    if not (isinstance(doc.get("dna"), str) and SHA256.match(doc["dna"])):
        problems.append("dna must be a lowercase hex sha256")
    if "date" in doc and (not isinstance(doc["date"], int) or isinstance(doc["date"], bool)):
        problems.append("date must be an integer (ms since the epoch)")
    attributes = doc.get("attributes")
    if not isinstance(attributes, list):
        return [*problems, "attributes must be a list"]
    for i, attribute in enumerate(attributes):
        if not isinstance(attribute, dict):
            problems.append(f"attribute {i} is not an object")
            continue
        problems += [f"attribute {i}: unknown field {k!r}" for k in attribute if k not in ATTRIBUTE_KEYS]
        if not isinstance(attribute.get("trait_type"), str) or not attribute["trait_type"]:
            problems.append(f"attribute {i}: trait_type must be a non-empty string")
        value = attribute.get("value")
        if not (isinstance(value, str) or _number(value)):
            problems.append(f"attribute {i}: value must be a string or a number, not {value!r}")
        if "display_type" in attribute:
            if attribute["display_type"] not in DISPLAY_TYPES:
                problems.append(f"attribute {i}: display_type {attribute['display_type']!r} is not allowed")
            elif not _number(value):
                problems.append(f"attribute {i}: a {attribute['display_type']} trait needs a numeric value")
        if "max_value" in attribute:
            if not _number(attribute["max_value"]):
                problems.append(f"attribute {i}: max_value must be a number")
            elif _number(value) and value > attribute["max_value"]:
                problems.append(f"attribute {i}: value {value} is above max_value {attribute['max_value']}")
    return problems


def test_the_validator_catches_what_it_checks():
    good = {"name": "X #1", "description": "d", "image": "ipfs://cid/1.png", "edition": 1, "dna": "a" * 64,
            "attributes": [{"trait_type": "Score", "value": 50.5, "display_type": "number", "max_value": 100}],
            "background_color": "0a0b0c"}
    assert metadata_problems(good) == []
    bad = dict(good, image="images/1.png", background_color="#0a0b0c", edition="1", extra=1,
               dna="ABC", attributes=[{"trait_type": "", "value": None, "display_type": "percent", "max_value": "9"},
                                      {"trait_type": "Score", "value": "high", "display_type": "number"}])
    found = " | ".join(metadata_problems(bad))
    for fragment in ("unknown field 'extra'", "absolute URI", "6 hex digits", "edition", "dna", "trait_type",
                     "string or a number", "'percent' is not allowed", "max_value must be", "needs a numeric value"):
        assert fragment in found, fragment
    assert len(metadata_problems(bad)) == 10


# --------------------------------------------------------------------------------------------------
# A small rendered project, shared by the tests of this module


@dataclass
class Project:
    settings: Settings
    slug: str

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.settings.artifact_root, read_only=True)

    def copy(self, target: Path) -> Project:
        """The same project in a copy of the artifact root (for tests that add images or scores)."""
        shutil.copytree(self.settings.artifact_root, target / "artifacts")
        return Project(Settings.load(artifact_root=str(target / "artifacts"), config_dir=self.settings.config_dir),
                       self.slug)


@pytest.fixture(scope="module")
def ruzgar(tmp_path_factory, _dagster_home_template) -> Project:
    """The Ruzgar NFT Collection spec (configs/projects/ruzgar-nft-collection.yaml) at 8 images of
    64x64, planned and rendered (scores, style memory) through launch.plan and launch.batch. Built
    once per test session and shared by the xdist workers (like `tiny_sd`); the tests only read it."""
    import os

    from filelock import FileLock

    from echo_pipeline.defs import launch

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "nft-project"
    settings = Settings.load(artifact_root=str(shared / "artifacts"), config_dir=shared / "configs")
    with FileLock(f"{shared}.lock"):
        if not (shared / "built").exists():
            shutil.rmtree(shared, ignore_errors=True)
            shutil.copytree(REPO_CONFIG_DIR, shared / "configs", ignore=shutil.ignore_patterns("user.json", "projects"))
            (shared / "configs" / "projects").mkdir()
            shutil.copytree(_dagster_home_template, shared / "dagster_home")
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("DAGSTER_HOME", str(shared / "dagster_home"))
                plan = launch.plan(settings, "Ruzgar NFT Collection", "warm fractal, no human forms",
                                   style="digital art", count=8, width=64, height=64)
                launch.batch(settings, plan.spec.slug)
            (shared / "built").write_text(plan.spec.slug)
    return Project(settings, (shared / "built").read_text())


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.slow(seconds=7)  # builds the shared project (~5 s) when it runs first
def test_collection_of_a_rendered_project_is_valid_and_its_provenance_recomputes(ruzgar, tmp_path):
    out = tmp_path / "collection"
    result = export_nft(CreativeEngine(ruzgar.settings), "Ruzgar NFT", str(out), base_uri="ipfs://QmCollection/")
    store = ruzgar.store
    scores = load_scores(store, ruzgar.slug).set_index("artifact_id")
    provenance = read_json(out / "provenance.json")
    tokens = provenance["tokens"]
    assert provenance["token_count"] == len(tokens) == 8 and result.selection.skipped == []
    assert sorted(p.name for p in out.iterdir()) == ["_metadata.json", "images", "metadata", "provenance.json"]
    assert {p.name for p in (out / "images").iterdir()} == {f"{n}.png" for n in range(1, 9)}

    documents = []
    for n, entry in enumerate(tokens, start=1):
        assert entry["token_id"] == n  # numbered from 1, in order
        doc = read_json(out / "metadata" / f"{n}.json")
        assert metadata_problems(doc) == [], (n, metadata_problems(doc))
        documents.append(doc)
        image = (out / "images" / f"{n}.png").read_bytes()
        assert image == store.read_bytes(ruzgar.slug, entry["artifact_id"])  # byte for byte
        assert hashlib.sha256(image).hexdigest() == entry["sha256"]
        assert "parameters" in Image.open(out / "images" / f"{n}.png").text  # A1111 infotext kept
        record = store.record(ruzgar.slug, entry["artifact_id"])
        traits = {a["trait_type"]: a for a in doc["attributes"]}
        assert doc["name"] == f"Ruzgar NFT Collection #{n}" and doc["edition"] == n
        assert doc["image"] == f"ipfs://QmCollection/{n}.png" and doc["dna"] == entry["dna"]
        assert traits["Style"]["value"] == "digital art" and traits["Seed"]["value"] == str(record.seed)
        assert traits["Palette"]["value"] == record.info["palette"] and traits["Motif"]["value"] == record.info["motif"]
        total = float(scores.loc[entry["artifact_id"], "total"])
        assert traits["Score"] == {"trait_type": "Score", "value": round(total, 2), "display_type": "number",
                                   "max_value": 100}
        assert {"Technical", "Style consistency", "Uniqueness"} <= set(traits)
    assert len({d["dna"] for d in documents}) == 8  # unique across tokens
    assert read_json(out / "_metadata.json") == documents
    totals = [e["total"] for e in tokens]
    assert totals == sorted(totals, reverse=True)  # best score first

    # The provenance hash from the image files alone, in token order.
    digests = "".join(hashlib.sha256((out / "images" / f"{n}.png").read_bytes()).hexdigest() for n in range(1, 9))
    assert hashlib.sha256(digests.encode("ascii")).hexdigest() == provenance["provenance_hash"]
    assert result.collection.provenance_hash == provenance["provenance_hash"]
    assert not provenance["base_uri_is_placeholder"]


def test_near_duplicates_identical_pixels_and_low_scores_are_refused_unless_told(ruzgar, tmp_path):
    project = ruzgar.copy(tmp_path)
    engine = CreativeEngine(project.settings)
    slug = project.slug
    scores = load_scores(engine.store, slug)
    best = scores.sort_values("total", ascending=False).iloc[0]
    image = engine.store.load_image(slug, best.artifact_id)
    image.save(tmp_path / "same.png")  # the same pixels, another file: another artifact
    image.putpixel((0, 0), tuple(255 - c for c in image.getpixel((0, 0))))
    image.save(tmp_path / "tweaked.png")  # one pixel changed: a near-duplicate (pHash distance ~0)
    same = engine.import_image(tmp_path / "same.png", slug).artifact_id
    tweaked = engine.import_image(tmp_path / "tweaked.png", slug).artifact_id
    # The tweaked copy scores higher than its original, the identical copy lower. No phash: the
    # selection hashes their thumbnails, like every image the score table has no hash for.
    save_scores(engine.store, slug, pd.DataFrame([
        {"artifact_id": tweaked, "total": best.total + 1, "technical": 70.0},
        {"artifact_id": same, "total": best.total - 0.5, "technical": 70.0}]))
    store = project.store

    chosen = select_tokens(store, slug)
    ids = [t.record.artifact_id for t in chosen.tokens]
    reasons = {s.artifact_id: (s.reason, s.detail) for s in chosen.skipped}
    assert ids[0] == tweaked and len(ids) == 8  # of the pair, the higher-scoring one is kept
    assert reasons[best.artifact_id][0] == "near_duplicate" and tweaked in reasons[best.artifact_id][1]
    assert reasons[same][0] == "near_duplicate"

    allowed = select_tokens(store, slug, allow_duplicates=True)
    assert [t.record.artifact_id for t in allowed.tokens][:2] == [tweaked, best.artifact_id]
    assert {s.artifact_id: s.reason for s in allowed.skipped} == {same: "identical"}  # dna stays unique

    # A threshold above some totals; 0 admits everything (and unscored images).
    threshold = float(scores.total.median())
    strict = select_tokens(store, slug, min_score=threshold)
    low = {s.artifact_id for s in strict.skipped if s.reason == "low_score"}
    assert low == set(scores.artifact_id[scores.total < threshold]) and low
    assert all(t.scores["total"] >= threshold for t in strict.tokens)
    limited = select_tokens(store, slug, min_score=0, limit=3)
    assert len(limited.tokens) == 3 and limited.not_examined == 10 - 3 - len(limited.skipped)

    # Accepted = what the style memory learned: the two imports were never learned.
    accepted = select_tokens(store, slug, only_accepted=True)
    assert {s.artifact_id for s in accepted.skipped if s.reason == "not_accepted"} == {same, tweaked}
    assert "not learned by the style memory yet" in {s.artifact_id: s.detail for s in accepted.skipped}[tweaked]

    with pytest.raises(InvalidInputError, match=r"nothing to export .* all 10 image\(s\) were skipped .*min-score"):
        export_nft(engine, slug, str(tmp_path / "none"), min_score=100)
    assert not (tmp_path / "none").exists()

    # An image with neither PNG nor thumbnail left (nothing to hash) is skipped as damaged; the rest export.
    store.fs.rm(store.image_path(slug, same))
    store.fs.rm(store.thumb_path(slug, same))
    damaged = select_tokens(store, slug)
    assert {s.artifact_id: s.reason for s in damaged.skipped}[same] == "damaged"
    assert [t.record.artifact_id for t in damaged.tokens] == ids


def test_a_failed_export_leaves_no_half_written_collection(ruzgar, tmp_path, monkeypatch):
    engine = CreativeEngine(ruzgar.settings)
    work = tmp_path / "exports"
    out = work / "collection"
    first = export_nft(engine, ruzgar.slug, str(out), limit=2)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real_write = nft.write_atomic

    def disk_full_at_the_second_token(path, data, **kwargs):
        if Path(path).name == "2.json":
            raise OSError(28, "No space left on device")
        real_write(path, data, **kwargs)

    monkeypatch.setattr(nft, "write_atomic", disk_full_at_the_second_token)
    with pytest.raises(StorageError, match="No space left on device"):
        export_nft(engine, ruzgar.slug, str(out), overwrite=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
    with pytest.raises(StorageError):
        export_nft(engine, ruzgar.slug, str(work / "new"))
    assert sorted(p.name for p in work.iterdir()) == ["collection"]  # no temporary folder, no "new"
    monkeypatch.setattr(nft, "write_atomic", real_write)
    again = export_nft(engine, ruzgar.slug, str(out), overwrite=True)  # an earlier export is replaced
    assert len(again.collection.tokens) == 8 and again.collection.tokens[:2] == first.collection.tokens


def test_base_uri_start_and_out_dir_are_checked(tmp_path):
    assert nft.check_base_uri(None) == nft.DEFAULT_BASE_URI
    for good in ("ipfs://QmCid/", "ar://tx/", "https://example.com/nft/"):
        assert nft.check_base_uri(good) == good
    for bad, why in (("QmCid/", "not a URI"), ("ipfs://QmCid", "end with '/'"), ("ftp://host/", "ftp://"),
                     ("ipfs:///", "not a URI|no CID"), ("https://a b/", "not a URI")):
        with pytest.raises(InvalidInputError, match=why):
            nft.check_base_uri(bad)
    with pytest.raises(InvalidInputError, match="0 or 1"):
        nft.check_start(2)
    (tmp_path / "file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    for out, overwrite, why in ((tmp_path / "file", False, "is a file"), (tmp_path / "mine", False, "not empty"),
                                (tmp_path / "mine", True, "not an earlier NFT export"),
                                ("s3://bucket/x", False, "local folder")):
        with pytest.raises(InvalidInputError, match=why):
            nft.check_out_dir(out, overwrite=overwrite)
    assert nft.check_out_dir(tmp_path / "new" / "folder") == tmp_path / "new" / "folder"
    with pytest.raises(InvalidInputError, match="has no images yet"):
        select_tokens(ArtifactStore(str(tmp_path / "empty-root"), read_only=True), "no-images")


def test_export_nft_command(ruzgar, tmp_path, monkeypatch, capsys):
    from echo_pipeline.cli.app import main

    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(["--artifact-root", ruzgar.settings.artifact_root, "--config-dir", str(ruzgar.settings.config_dir),
                  "export", "nft", *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    out = tmp_path / "ruzgar"
    code, stdout, stderr = run("--project", "Ruzgar NFT", "--out", str(out), "--start", "0", "--limit", "5", "--json")
    assert code == 0, stderr
    payload = json.loads(stdout)
    provenance = read_json(out / "provenance.json")
    assert payload["provenance_hash"] == provenance["provenance_hash"] and payload["token_count"] == 5
    assert [t["token_id"] for t in payload["tokens"]] == [0, 1, 2, 3, 4] and payload["base_uri_is_placeholder"]
    assert read_json(out / "metadata" / "0.json")["image"] == "ipfs://NewUriToReplace/0.png"

    code, stdout, stderr = run("-p", "ruzgar", "--out", str(out), "--overwrite", "--base-uri", "ipfs://QmReal/")
    assert code == 0, stderr
    assert "provenance:" in stdout and "8 token(s)" in stdout and read_json(out / "provenance.json")["start"] == 1

    (tmp_path / "a-file").write_text("x")
    for args, message in ((["-p", "no-such-project", "--out", str(tmp_path / "x")], "no project 'no-such-project'"),
                          (["-p", "ruzgar", "--out", str(tmp_path / "x"), "--base-uri", "ipfs://cid"], "end with '/'"),
                          (["-p", "ruzgar", "--out", str(tmp_path / "a-file")], "is a file"),
                          (["-p", "ruzgar", "--out", str(out)], "not empty"),
                          (["-p", "ruzgar", "--out", str(tmp_path / "x"), "--limit", "10001"], "between 1 and 10000"),
                          (["-p", "ruzgar", "--out", str(tmp_path / "x"), "--min-score", "101"], "between 0 and 100")):
        code, stdout, stderr = run(*args)
        assert code == 2 and stderr.startswith("error: ") and message in stderr, (args, stderr)
        assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
