"""`echo-os render`: prompts in, stored artifacts out (one Dagster run, through defs/launch.py)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from echo_pipeline.cli.common import (
    console,
    display_path,
    engine,
    print_json,
    progress_bar,
    say,
    settings,
    shorten,
    warn,
)
from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.prompt_engine import MAX_COUNT

MEDIA_TYPES = ("image", "texture", "video", "3d_model", "interactive")


def render(
    ctx: typer.Context,
    prompt: Annotated[Optional[str], typer.Argument(help="What to make. Ranges ('warm fractal 01-09'), variants "
                                                    "('{warm|cool}'), wildcards ('__palettes__') and 'no X' constraints "
                                                    "are understood. Optional with --view.")] = None,
    style: Annotated[Optional[str], typer.Option("--style", "-s", help="Style preset (see `echo-os style list`).")] = None,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Project name, slug or prefix "
                                                   "(default: the 'default' project); its spec's backend, "
                                                   "model, size and sampler settings apply.")] = None,
    count: Annotated[int, typer.Option("--count", "-n", help=f"Images per prompt (1-{MAX_COUNT} in total).")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Base seed; image k uses seed+k. Default: derived from the prompt.")] = None,
    size: Annotated[Optional[str], typer.Option(help="WIDTHxHEIGHT, each side 64-2048 (default 512x512).")] = None,
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt: what to avoid.")] = "",
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="Image backend: procedural (default, offline), "
                                                   "diffusers, comfyui, openai; or backend:model.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="The backend's model: a diffusers hub id, "
                                                 "save_pretrained folder or .safetensors file; a ComfyUI checkpoint; "
                                                 "an OpenAI model (see `echo-os models`).")] = None,
    init: Annotated[Optional[str], typer.Option("--init", help="img2img: start from this artifact id or image file "
                                                "(the new images name it as their parent).")] = None,
    strength: Annotated[Optional[float], typer.Option("--strength", min=0.0, max=1.0, help="img2img: how far from "
                                                      "--init (0 = same, 1 = new; default 0.6).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, max=500, help="Sampler steps (model backends; "
                                                 "default: the project's, else 30).")] = None,
    cfg_scale: Annotated[Optional[float], typer.Option("--cfg", min=0.0, max=50.0, help="CFG scale (model backends; "
                                                       "0-1 for turbo models; default: the project's, else 7).")] = None,
    sampler: Annotated[Optional[str], typer.Option("--sampler", help="A1111 sampler name (model backends): 'Euler a' "
                                                   "(default, or the project's), 'DPM++ 2M Karras', DDIM, ...")] = None,
    media_type: Annotated[str, typer.Option("--type", help="image; texture (seamless, with height/normal/roughness "
                                            "maps); video (MP4 + GIF); 3d_model (GLB + OBJ from a concept image and "
                                            "its texture); interactive (a live HTML piece).")] = "image",
    tiling: Annotated[bool, typer.Option("--tiling", help="Make the image seamlessly tileable.")] = False,
    frames: Annotated[Optional[int], typer.Option("--frames", help="video: frames (2-600, default 48).")] = None,
    fps: Annotated[Optional[int], typer.Option("--fps", help="video: frames per second (1-60, default 12).")] = None,
    loop: Annotated[bool, typer.Option("--loop", help="video: the last frame flows into the first.")] = False,
    motion: Annotated[Optional[str], typer.Option("--motion", help="video: auto (fractals zoom, others walk), walk "
                                                  "(between keyframes), zoom, cycle (the palette).")] = None,
    keyframes: Annotated[Optional[int], typer.Option("--keyframes", help="video: keyframe images (1-8, default 3).")] = None,
    audio: Annotated[Optional[str], typer.Option("--audio", help="video: a WAV/MP3 track; its beats and loudness "
                                                 "drive the frames and it is muxed into the MP4.")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="3d_model: auto, extrude (the concept's "
                                                  "silhouette), heightfield (a relief), shap-e (ECHO_SHAP_E_MODEL).")] = None,
    view: Annotated[Optional[str], typer.Option("--view", help="A view record kept in an interactive page "
                                                "(view.json): rendered as the same picture, as a PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Render images from a prompt into the artifact store (already stored requests are skipped)."""
    from echo_pipeline.defs import launch
    from echo_pipeline.render.prompt_engine import parse_size

    config = settings(ctx)
    if media_type not in MEDIA_TYPES:
        raise InvalidInputError(f"--type {media_type!r} is not available; choose one of: {', '.join(MEDIA_TYPES)}")
    if strength is not None and init is None:
        raise InvalidInputError("--strength needs --init (the image to start from)")
    video_options: dict[str, Any] = {"frames": frames, "fps": fps, "loop": loop or None, "motion": motion, "keyframes": keyframes,
                     "audio": audio}
    mesh_options = {"method": method}
    for kind, options in (("video", video_options), ("3d_model", mesh_options)):
        given = [name for name, value in options.items() if value is not None]
        if given and media_type != kind:
            raise InvalidInputError(f"--{given[0]} is for --type {kind}, not {media_type}")
    slug = engine(ctx).resolve_project(project).slug
    dimensions = parse_size(size) if size else None
    parent = engine(ctx).init_image(init, slug) if init is not None else None
    media: dict | None = None
    if view is not None:
        import json
        from pathlib import Path

        from echo_pipeline.errors import NotFoundError
        from echo_pipeline.render.backends.procedural.live import view_from_record

        if media_type != "image" or init is not None:
            raise InvalidInputError("--view renders a kept view as an image: no --type or --init with it")
        record_file = Path(view).expanduser()
        if not record_file.is_file():
            raise NotFoundError(f"view record {view!r} does not exist (save one with 'Keep this view' in the page)")
        text = record_file.read_bytes()
        kept = view_from_record(text)
        source = json.loads(text).get("source") or {}
        prompt = prompt or str(source.get("prompt") or f"live view of {kept.motif}")
        dimensions = (kept.width, kept.height)
        media = {"view": kept.model_dump(mode="json")}
    elif prompt is None:
        raise InvalidInputError("say what to render: a prompt (or --view view.json)")
    elif media_type == "video":
        if audio is not None:
            video_options["audio"] = engine(ctx).store_audio(audio, slug)
        media = {k: v for k, v in video_options.items() if v is not None}
    elif media_type == "3d_model":
        media = {k: v for k, v in mesh_options.items() if v is not None}
    # The project's spec supplies what the command leaves out (backend and model, size, sampler settings).
    spec, backend, model = launch.prompt_spec(
        config, prompt, project=slug, parent=parent, size=dimensions, backend=backend, model=model, steps=steps,
        cfg_scale=cfg_scale, sampler=sampler, strength=strength, style=style, count=count, seed=seed,
        negative_prompt=negative, media_type=media_type, tiling=tiling or media_type == "texture", media=media)
    with progress_bar("rendering", enabled=not as_json) as progress:
        outcome = launch.render(config, spec, backend=backend, model=model, progress=progress, notify=warn)
    result = outcome.result
    # Sources (concept, texture, keyframes) first, then what was made from them.
    rows = sorted([(r, "new") for r in result.new] + [(r, "stored") for r in result.existing],
                  key=lambda item: (item[0].request.media is not None, item[0].request.index))
    store = engine(ctx).store
    ignored = _ignored_user_words([r for r, _ in rows])
    if as_json:
        print_json({
            "project": outcome.project, "run_id": outcome.run_id, "backend": outcome.backend,
            "parent": spec.parent_id,
            "new": len(result.new), "already_stored": len(result.existing), "recovered": result.recovered,
            "seconds": round(result.seconds, 3), "words_ignored": ignored,
            "artifacts": [
                {"artifact_id": r.artifact_id, "status": status, "prompt": r.request.prompt, "seed": r.request.seed,
                 "width": r.request.width, "height": r.request.height, "style": r.request.style,
                 "words_used": r.info.get("words_used"), "words_ignored": r.info.get("words_ignored"),
                 "media_type": r.request.media_type, "made_from": r.info.get("inputs"),
                 "path": store.image_path(r.project, r.artifact_id), "files": _media_files(store, r)}
                for r, status in rows
            ],
        })
        return
    table = Table(title=f"project {outcome.project}")
    for column in ("#", "artifact", "type", "status", "seed", "prompt"):
        table.add_column(column, no_wrap=True, overflow="ellipsis" if column == "prompt" else "fold")
    for r, status in rows:
        table.add_row(str(r.request.index + 1), r.artifact_id, r.request.media_type, status, str(r.request.seed),
                      shorten(r.request.source_prompt or r.request.prompt, 40))
    console.print(table)
    if rows:
        say(f"images: {display_path(store.image_path(outcome.project, rows[0][0].artifact_id)).rsplit('/', 1)[0]}/")
    for r, _ in rows:
        files = _media_files(store, r)
        if files:
            folder = display_path(next(iter(files.values()))).rsplit("/", 1)[0]
            say(f"{r.request.media_type} {r.artifact_id}: {folder}/ ({', '.join(files)})"
                + _media_note(r))
    if result.new:
        say(f"{len(result.new)} new {'image' if all(r.request.media_type == 'image' for r in result.new) else 'artifact'}(s)"
            f" in {result.seconds:.2f}s"
            + (f", {len(result.existing)} already stored" if result.existing else "") + f"   run: {outcome.run_id}")
    else:
        say(f"Nothing new: all {len(result.existing)} image(s) were already stored.   run: {outcome.run_id}")
    if result.recovered:
        say(f"Recovered {result.recovered} image(s) left uncatalogued by an interrupted run.")
    if ignored:
        warn(launch.ignored_words_hint(outcome.backend, ignored))


def _media_files(store, record) -> dict[str, str]:
    """{file name: path} of a media artifact's files (texture maps, MP4/GIF, GLB/OBJ, HTML)."""
    return {name: store.media_file_path(record.project, record.artifact_id, name)
            for name in sorted(record.info.get("media_files") or {})}


def _media_note(record) -> str:
    info = record.info
    if info.get("seam"):
        return f"; seam ratio {info['seam'].get('seam_ratio')} (1 = invisible)"
    if info.get("mesh"):
        mesh = info["mesh"]
        return f"; {mesh.get('triangles')} triangles, {'watertight' if mesh.get('watertight') else 'open'}"
    if info.get("video"):
        video = info["video"]
        return f"; {video.get('frames')} frames at {video.get('fps')} fps" + (", with audio" if video.get("audio") else "")
    return ""


def _ignored_user_words(records: list) -> list[str]:
    """Words the backend ignored that the user typed (a style preset's own words are not news)."""
    import re

    ignored = set()
    for record in records:
        typed = set(re.findall(r"[\w'-]+", (record.request.source_prompt or record.request.prompt).lower()))
        ignored |= {w for w in record.info.get("words_ignored", []) if set(w.lower().split()) <= typed}
    return sorted(ignored)


def refine(
    ctx: typer.Context,
    artifact: Annotated[str, typer.Argument(help="The image to refine: an artifact id, a unique prefix or project/id.")],
    prompt: Annotated[Optional[str], typer.Argument(help="'add rain effects' adds words to its prompt; any other text "
                                                    "is a new prompt; none makes a variation.")] = None,
    strength: Annotated[Optional[float], typer.Option("--strength", min=0.0, max=1.0, help="How far from the parent "
                                                      "(0 = same, 1 = new; default 0.5).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed (default: the parent's).")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="Backend (default: the one that made the "
                                                   "parent); name or name:model.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="The backend's model (default: the parent's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Refine a stored image (img2img): the new image is stored as its child, lineage included."""
    from echo_pipeline.defs import launch

    with progress_bar("refining", enabled=not as_json) as progress:
        outcome = launch.refine(settings(ctx), artifact, prompt, strength=strength, seed=seed, backend=backend,
                                model=model, progress=progress, notify=warn)
    child = (outcome.result.new + outcome.result.existing)[0]
    parent_id = child.request.parent_id
    path = engine(ctx).store.image_path(child.project, child.artifact_id)
    if as_json:
        print_json({"artifact_id": child.artifact_id, "parent": parent_id, "project": child.project,
                    "status": "new" if outcome.result.new else "stored", "backend": outcome.backend,
                    "prompt": child.request.prompt, "strength": child.request.strength,
                    "changes": child.info.get("changes"), "path": path, "run_id": outcome.run_id})
        return
    say(f"{child.artifact_id}  refined from {parent_id}  ({'new' if outcome.result.new else 'already stored'})")
    say(f"prompt:   {shorten(child.request.prompt, 100)}")
    say(f"strength: {child.request.strength}   backend: {outcome.backend}")
    if child.info.get("changes"):
        say(f"changes:  {', '.join(map(str, child.info['changes']))}")
    say(f"image:    {display_path(path)}")
