"""Intent parsing, the visual planner and multi-modal tasks, on the vision's use cases."""

from __future__ import annotations

import pytest

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.prompt_engine import PromptEngine
from echo_pipeline.render.style_manager import StyleLibrary
from echo_pipeline.workflows.intent import parse_intent
from echo_pipeline.workflows.multi_modal import RENDERABLE, media_defaults
from echo_pipeline.workflows.projects import ProjectSpec
from echo_pipeline.workflows.visual_planner import (
    BATCH_SEED_STRIDE,
    Plan,
    Task,
    plan_fingerprint,
    plan_is_current,
    plan_project,
    task_prompt_specs,
)

NFT = ProjectSpec(name="Ruzgar NFT Collection", intent="warm fractal, no human forms", count=100, style="digital art")
GAME = ProjectSpec(name="Video Game Assets", intent="medieval fantasy weapons", count=10)


# -- intent -----------------------------------------------------------------------------------------

def test_intent_nft_collection():
    intent = parse_intent("Ruzgar NFT Collection", "warm fractal, no human forms")
    assert intent.subject == "warm fractal"
    assert intent.constraints == ["human forms"]
    assert {"human forms", "person", "face"} <= set(intent.negative_terms)
    assert intent.keywords == ["warm", "fractal"]
    assert intent.media_types == ["image"]
    assert intent.collection is True


def test_intent_game_assets():
    intent = parse_intent("Video Game Assets", "medieval fantasy weapons")
    assert intent.subject == "medieval fantasy weapons"
    assert intent.constraints == [] and intent.negative_terms == []
    assert intent.media_types == ["image", "texture", "3d_model"]  # not video: "video game" is no video
    assert intent.collection is False


@pytest.mark.parametrize("name, text, expected", [
    ("Stones", "seamless stone material", ["image", "texture"]),
    ("Ocean", "waves in a looping animation", ["image", "video"]),
    ("Props", "low poly props", ["image", "texture", "3d_model"]),
    ("Art", "warm fractal", ["image"]),
    ("Art", "warm fractal, no video", ["image"]),  # constraints never ask for a medium
])
def test_intent_media_types(name, text, expected):
    assert parse_intent(name, text).media_types == expected


def test_intent_inline_and_extra_constraints():
    intent = parse_intent("P", "misty forest without people; no text", extra_constraints=["no logos", "Text"])
    assert intent.subject == "misty forest"
    assert intent.constraints == ["people", "text", "logos"]
    assert "watermark" in intent.negative_terms


def test_intent_of_only_constraints_falls_back_to_project_name():
    assert parse_intent("Ruzgar Fractals", "no human forms").subject == "Ruzgar Fractals"


# -- plans ------------------------------------------------------------------------------------------

def test_plan_nft_collection_is_one_image_task():
    plan = plan_project(NFT)
    assert plan.project == "ruzgar-nft-collection"
    [task] = plan.tasks
    assert (task.id, task.media_type, task.prompt, task.count) == ("t1-collection", "image", "warm fractal", 100)
    assert task.renderable and task.style == "digital art" and not task.tiling
    assert plan.intent.constraints == ["human forms"]


def test_plan_game_assets_concept_texture_model():
    plan = plan_project(GAME)
    by_id = {t.id: t for t in plan.tasks}
    assert list(by_id) == ["t1-concept", "t2-texture", "t3-model"]
    concept, texture, model = by_id.values()
    assert concept.media_type == "image" and "medieval fantasy weapons" in concept.prompt
    assert texture.media_type == "texture" and texture.tiling and texture.width == texture.height
    # weapons name no material: the texture and concept prompts carry the one they imply
    assert texture.prompt.startswith("seamless forged steel texture of medieval fantasy weapons")
    assert "forged steel" in concept.prompt and "forged steel" in model.prompt
    assert texture.depends_on == ["t1-concept"]
    assert model.media_type == "3d_model" and model.depends_on == ["t1-concept", "t2-texture"]
    assert model.renderable and model.count == concept.count  # one model per concept design
    assert [t.id for t in plan.renderable_tasks()] == ["t1-concept", "t2-texture", "t3-model"]
    assert concept.count + texture.count == 10 == plan.image_count


def test_plan_is_deterministic_and_fingerprinted():
    assert plan_project(GAME) == plan_project(GAME.model_copy())
    assert plan_project(GAME).model_dump_json() == plan_project(GAME).model_dump_json()
    changed = GAME.model_copy(update={"intent": "medieval fantasy shields"})
    assert plan_fingerprint(changed) != plan_fingerprint(GAME)
    # Fields that do not shape the plan do not make it stale.
    assert plan_fingerprint(GAME.model_copy(update={"seed": 5, "schedule": True})) == plan_fingerprint(GAME)
    plan = plan_project(GAME)
    assert plan_is_current(plan, GAME) and not plan_is_current(plan, changed)


def test_plan_dependency_order_and_validation():
    plan = plan_project(GAME)
    order = [t.id for t in plan.ordered()]
    for task in plan.tasks:
        assert all(order.index(dep) < order.index(task.id) for dep in task.depends_on)
    # Reversed input order still sorts topologically.
    shuffled = Plan(project=plan.project, intent=plan.intent, tasks=list(reversed(plan.tasks)),
                    created_from=plan.created_from)
    assert [t.id for t in shuffled.ordered()] == order

    def task(tid, deps):
        return Task(id=tid, media_type="image", title=tid, prompt="x", count=1, width=64, height=64, depends_on=deps)

    with pytest.raises(ValueError, match="cycle"):
        Plan(project="p", intent=plan.intent, tasks=[task("a", ["b"]), task("b", ["a"])], created_from="x")
    with pytest.raises(ValueError, match="unknown task"):
        Plan(project="p", intent=plan.intent, tasks=[task("a", ["zzz"])], created_from="x")
    with pytest.raises(ValueError, match="duplicate"):
        Plan(project="p", intent=plan.intent, tasks=[task("a", []), task("a", [])], created_from="x")


def test_plan_table_rows_are_strings():
    rows = plan_project(GAME).to_table_rows()
    assert [r["id"] for r in rows] == ["t1-concept", "t2-texture", "t3-model"]
    assert rows[2]["status"] == "render" and rows[2]["depends_on"] == "t1-concept, t2-texture"
    assert all(isinstance(v, str) for row in rows for v in row.values())


def test_plan_video_and_texture_only_projects():
    video = plan_project(ProjectSpec(name="Ocean", intent="ocean waves, looping animation", count=6))
    assert [(t.id, t.media_type, t.renderable) for t in video.tasks] == [
        ("t1-keyframes", "image", True), ("t2-video", "video", True)]
    assert video.tasks[1].depends_on == ["t1-keyframes"]
    textures = plan_project(ProjectSpec(name="Stones", intent="seamless stone textures", count=4))
    [only] = textures.tasks
    assert only.media_type == "texture" and only.count == 4 and only.tiling
    assert "seamless texture of seamless" not in only.prompt


def test_count_one_keeps_the_plan_and_says_why():
    plan = plan_project(GAME.model_copy(update={"count": 1}))
    texture = plan.get("t2-texture")
    assert texture.count == 0 and not texture.renderable and "count" in texture.notes
    assert [t.id for t in plan.renderable_tasks()] == ["t1-concept", "t3-model"]


@pytest.mark.parametrize("count", [1, 2, 3, 7, 100, 1000])
@pytest.mark.parametrize("spec", [NFT, GAME, ProjectSpec(name="Mix", intent="warm fractal", media_types=["image", "texture", "video"])])
def test_counts_add_up_to_spec_count(spec, count):
    spec = spec.model_copy(update={"count": count})
    specs = task_prompt_specs(plan_project(spec), spec)
    assert sum(s.count for s in specs if s.media_type in ("image", "texture")) == count  # models/videos on top
    assert all(s.count >= 1 for s in specs)


def test_media_defaults():
    assert {"image", "texture", "3d_model", "video"} <= RENDERABLE
    assert media_defaults("texture", 768, 512) == {"width": 512, "height": 512, "tiling": True, "renderable": True,
                                                   "reason": None, "inputs": ["image"]}
    assert media_defaults("image", 768, 512)["width"] == 768
    assert media_defaults("3d_model")["inputs"] == ["image", "texture"]
    assert media_defaults("video")["inputs"] == ["image"]
    with pytest.raises(InvalidInputError):
        media_defaults("hologram")


# -- prompt specs -----------------------------------------------------------------------------------

def test_task_prompt_specs_carry_the_intent():
    plan = plan_project(NFT)
    [spec] = task_prompt_specs(plan, NFT)
    assert spec.prompt == "warm fractal" and spec.count == 100 and spec.style == "digital art"
    assert spec.constraints == ["human forms"]
    assert (spec.project, spec.media_type, spec.width, spec.height, spec.tiling) == (
        "ruzgar-nft-collection", "image", 512, 512, False)
    game = task_prompt_specs(plan_project(GAME), GAME)
    assert [s.media_type for s in game] == ["image", "texture", "3d_model"] and game[1].tiling
    assert all(s.parent_id is None and s.strength is None for s in game)  # no references: txt2img


def test_batches_are_reproducible_and_new():
    plan = plan_project(GAME)
    b0, b0_again, b1 = (task_prompt_specs(plan, GAME, batch=b) for b in (0, 0, 1))
    assert b0 == b0_again
    assert all(x.seed != y.seed for x, y in zip(b0, b1, strict=True))
    assert all(y.seed - x.seed == BATCH_SEED_STRIDE for x, y in zip(b0, b1, strict=True))
    seeded = GAME.model_copy(update={"seed": 42})
    assert [s.seed for s in task_prompt_specs(plan, seeded, batch=2)] == [42 + 2 * BATCH_SEED_STRIDE] * 3
    with pytest.raises(InvalidInputError, match="batch"):
        task_prompt_specs(plan, GAME, batch=-1)
    with pytest.raises(InvalidInputError, match="plan is for project"):
        task_prompt_specs(plan, NFT)


def test_prompt_specs_build_real_requests(config_dir):
    """End to end through the prompt engine: negatives from constraints, no seed overlap across batches."""
    engine = PromptEngine(StyleLibrary(config_dir / "styles"), config_dir / "wildcards")
    spec = NFT.model_copy(update={"count": 20})
    plan = plan_project(spec)
    batch0 = [r for ps in task_prompt_specs(plan, spec, batch=0) for r in engine.build_requests(ps)]
    batch1 = [r for ps in task_prompt_specs(plan, spec, batch=1) for r in engine.build_requests(ps)]
    assert len(batch0) == len(batch1) == 20
    assert "human forms" in batch0[0].negative_prompt and "person" in batch0[0].negative_prompt
    assert batch0[0].project == "ruzgar-nft-collection"
    ids0, ids1 = {r.request_id for r in batch0}, {r.request_id for r in batch1}
    assert len(ids0) == 20 and not ids0 & ids1
    again = [r for ps in task_prompt_specs(plan, spec, batch=0) for r in engine.build_requests(ps)]
    assert [r.request_id for r in again] == [r.request_id for r in batch0]


@pytest.mark.parametrize("subject,role,expected", [
    ("medieval fantasy weapons", "texture", "seamless forged steel texture of medieval fantasy weapons, tileable"),
    ("a sword", "concept", "concept art of a sword, forged steel, game asset design"),
    ("castle ruins", "texture", "seamless weathered stone texture of castle ruins"),
    ("wooden barrels", "texture", "seamless texture of wooden barrels"),  # names its material: no hint
    ("seamless stone", "texture", "seamless stone, tileable"),  # "seamless" is a texture word (one rule)
    ("sword textures", "texture", "seamless sword textures, forged steel, tileable"),
    ("warm fractal", "image", "warm fractal"),  # images get no material
])
def test_texture_and_weapon_prompts_carry_material_words(subject, role, expected):
    from echo_pipeline.workflows.multi_modal import media_prompt

    assert media_prompt(role, subject).startswith(expected)


def test_one_home_for_the_texture_words_and_the_range_regex():
    from echo_pipeline.render import prompt_engine
    from echo_pipeline.workflows import intent, multi_modal, visual_planner

    assert visual_planner.TEXTURE_WORDS is multi_modal.TEXTURE_WORDS is intent.TEXTURE_WORDS
    assert visual_planner._RANGE is prompt_engine._RANGE
    assert intent.infer_media_types("tiling floor") == ["image", "texture"]


def test_game_asset_prompts_render_as_metal_with_the_procedural_backend():
    """The planner's words reach the renderer: weapons become steel, not a random motif."""
    from echo_pipeline.render.backends.procedural import ProceduralBackend
    from echo_pipeline.render.requests import RenderRequest

    backend = ProceduralBackend(workers=1)
    for task in plan_project(GAME).renderable_tasks():
        if task.media_type == "3d_model":
            continue  # a mesh made from the concept and texture: its own prompt is never drawn
        request = RenderRequest(prompt=task.prompt, seed=1, width=64, height=64, tiling=task.tiling)
        (out,) = list(backend.render([request]))
        assert (out.info["palette"], out.info["material"]) == ("steel", "metal")
        # textures are the steel surface; concepts and models name weapons: the object itself
        assert out.info["motif"] == ("material" if task.tiling else "object"), (task.id, out.info["motif"])
        assert "medieval" in out.info["words_ignored"] and "weapons" in out.info["words_used"]


# -- references and the dependency graph --------------------------------------------------------------

def _reference(path, colour, prompt=None):
    from PIL import Image, ImageDraw, PngImagePlugin

    image = Image.new("RGB", (96, 64), colour)
    ImageDraw.Draw(image).ellipse((20, 8, 76, 56), fill=(250, 210, 60))
    info = PngImagePlugin.PngInfo()
    if prompt:
        info.add_text("parameters", f"{prompt}\nSteps: 20, Seed: 1, Size: 96x64")
    image.save(path, pnginfo=info) if str(path).endswith(".png") else image.save(path)
    return path


def test_references_are_stored_learned_from_and_start_the_image_tasks(settings, tmp_path):
    from echo_pipeline.workflows.creative_engine import CreativeEngine
    from echo_pipeline.workflows.visual_planner import REFERENCE_STRENGTH, prepare_references, reference_style_name

    engine = CreativeEngine(settings)
    refs = [str(_reference(tmp_path / "a.png", (20, 60, 140), prompt="ocean waves at dusk")),
            str(_reference(tmp_path / "b.jpg", (30, 70, 150)))]
    spec = engine.projects.create("Video Game Assets", "medieval fantasy weapons", count=4, references=refs)
    stored, style = prepare_references(engine, spec)
    assert style == reference_style_name(spec.slug) == "references-video-game-assets"
    # copies under references/, named by their content hash; imported as artifacts (the img2img parents)
    assert sorted(engine.store.list_project_files(spec.slug, "references")) == sorted(
        f"{r.sha256}{'.png' if r.source.endswith('.png') else '.jpg'}" for r in stored)
    assert engine.store.read_project_file(spec.slug, stored[0].file) == (tmp_path / "a.png").read_bytes()
    assert {r.artifact_id for r in stored} <= set(engine.store.catalog(spec.slug)["artifact_id"])
    # the style learned from them: blue references, the words of the one with a prompt
    learned = engine.styles.get(style)
    assert "ocean" in learned.prompt and "palette" in learned.prompt
    assert prepare_references(engine, spec) == (stored, style)  # idempotent: same copies, same artifacts

    plan = plan_project(spec, stored, style)
    concept, texture, model = plan.tasks
    assert concept.init == [r.artifact_id for r in stored] and concept.strength == REFERENCE_STRENGTH
    assert texture.init == [] and model.init == [] and concept.style == style
    assert plan_fingerprint(spec) != plan_fingerprint(spec.model_copy(update={"references": []}))
    # batch b starts from reference b mod n; everything else is txt2img as before
    for batch in (0, 1, 2):
        first, *rest = task_prompt_specs(plan, spec, batch=batch)
        assert (first.parent_id, first.strength) == (stored[batch % 2].artifact_id, REFERENCE_STRENGTH)
        assert all(s.parent_id is None for s in rest)
    # a style the spec names wins over the learned one
    styled = spec.model_copy(update={"style": "digital art"})
    assert plan_project(styled, stored, style).tasks[0].style == "digital art"


def test_keyframes_from_references_feed_the_video():
    spec = ProjectSpec(name="Ocean", intent="ocean waves, looping animation", count=4)
    from echo_pipeline.workflows.visual_planner import PlanReference

    ref = PlanReference(source="/refs/wave.png", file="references/0123456789abcdef.png", sha256="0123456789abcdef",
                        artifact_id="a" * 20, width=64, height=64)
    plan = plan_project(spec, [ref], "references-ocean")
    keyframes, video = plan.tasks
    assert (keyframes.id, keyframes.init, video.depends_on, video.init) == ("t1-keyframes", ["a" * 20], ["t1-keyframes"], [])
    assert plan.mermaid().splitlines() == [
        "graph LR",
        '    ref1[/"reference: wave.png"/]',
        '    t1_keyframes["t1-keyframes<br/>image x4"]',
        '    t2_video["t2-video<br/>video x1"]',
        "    ref1 -.-> t1_keyframes",
        "    t1_keyframes --> t2_video",
    ]


def test_dependency_graph_of_the_game_assets_plan():
    graph = plan_project(GAME).mermaid()
    assert graph.splitlines()[0] == "graph LR"
    edges = [line.strip() for line in graph.splitlines() if "-->" in line]
    assert edges == ["t1_concept --> t2_texture", "t1_concept --> t3_model", "t2_texture --> t3_model"]
    assert '    t3_model["t3-model<br/>3d_model x5"]' in graph.splitlines()
    assert "ref" not in graph


@pytest.mark.parametrize(("reference", "error", "match"), [
    ("missing.png", "NotFoundError", "does not exist"),
    ("notes.txt", "InvalidInputError", "not a readable image"),
    ("https://example.com/a.png", "InvalidInputError", "not downloaded"),
])
def test_bad_references_are_refused_at_plan_time(settings, tmp_path, monkeypatch, reference, error, match):
    from echo_pipeline.workflows.creative_engine import CreativeEngine

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    engine = CreativeEngine(settings)
    with pytest.raises(Exception, match=match) as info:
        engine.projects.create("Refs", "warm fractal", references=[reference])
    assert type(info.value).__name__ == error
    assert not engine.projects.exists("refs")  # nothing written


def test_cli_plan_game_assets_with_and_without_ref(cli, tmp_path, artifact_root):
    import json

    code, out, err = cli("plan", "Video Game Assets", "medieval fantasy weapons", "--size", "64", "--count", "4")
    assert code == 0, err
    assert "t1-concept" in out and "t3-model" in out and "img2img from" not in out and "references:" not in out

    ref = _reference(tmp_path / "x.png", (120, 40, 30))
    code, out, err = cli("plan", "Video Game Assets", "medieval fantasy weapons", "--ref", str(ref), "--json")
    assert code == 0, err
    planned = json.loads(out)
    [stored] = planned["references"]
    assert planned["reference_style"] == "references-video-game-assets"
    assert [(t["id"], t["init"]) for t in planned["tasks"]] == [
        ("t1-concept", stored["artifact_id"]), ("t2-texture", "-"), ("t3-model", "-")]
    assert (artifact_root / "projects" / "video-game-assets" / stored["file"]).read_bytes() == ref.read_bytes()

    code, _, err = cli("plan", "Video Game Assets", "medieval fantasy weapons", "--ref", str(tmp_path / "nope.png"))
    assert code == 2 and "does not exist" in err
