"""`echo-os memory`: what each project's style memory has learned, and moving a memory as one file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from echo_pipeline.cli.common import columns, console, display_path, engine, print_json, say, shorten, warn
from echo_pipeline.errors import InvalidInputError, NotFoundError


def memory(
    ctx: typer.Context,
    analyze: Annotated[bool, typer.Option("--analyze", help="Show what the memory learned (the default) and "
                                          "plot its evolution.")] = False,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Project (default: every project "
                                                   "with a memory, one section each).")] = None,
    export: Annotated[Optional[Path], typer.Option("--export", help="Write the project's memory to this file.")] = None,
    import_from: Annotated[Optional[Path], typer.Option("--import", help="Read a memory file written by --export "
                                                        "into the project (--project, else its own).")] = None,
    learn_from: Annotated[Optional[list[str]], typer.Option(
        "--learn-from", help="Learn a style from reference images: artifact ids, image files, folders or globs "
        "(repeat, or separate with commas); saved as a style for `render --style`.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Name of the learned style (default: learned-<first "
                                                "reference>).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """What each project's style memory learned (and its history), or learn a style from references."""
    from echo_pipeline.atomic import write_atomic
    from echo_pipeline.resonance.memory_system import import_memory, load_memory, memory_versions, save_memory

    eng = engine(ctx)
    store = eng.store
    if learn_from:
        _learn(eng, [part.strip() for item in learn_from for part in item.split(",") if part.strip()], name, as_json)
        return
    if export is not None and import_from is not None:
        raise InvalidInputError("--export and --import go one at a time")
    if import_from is not None:
        try:
            data = import_from.read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"{import_from}: cannot be read ({exc.strerror or exc})") from exc
        target = eng.resolve_project(project).slug if project else None
        imported = import_memory(data, target)
        # The import becomes the project's next version: its earlier version files stay as they are.
        imported = imported.model_copy(update={"version": max([0, *memory_versions(store, imported.project)]) + 1})
        save_memory(store, imported)
        say(f"imported the style memory of {imported.count} image(s) into project {imported.project}")
        return
    if export is not None:
        if not project:
            raise InvalidInputError("--export needs --project (which project's memory)")
        slug = eng.resolve_project(project).slug
        found = load_memory(store, slug)
        if found is None:
            raise NotFoundError(f"project {slug!r} has no style memory yet; run `echo-os batch --project {slug}`")
        write_atomic(export, found.to_json().encode("utf-8"))
        say(f"wrote the style memory of {slug} ({found.count} image(s)) to {display_path(str(export))}")
        return
    slugs = [eng.resolve_project(project).slug] if project else store.projects()
    found_any = [(slug, load_memory(store, slug)) for slug in slugs]
    memories = [m for _, m in found_any if m is not None]
    if project and not memories:
        raise NotFoundError(f"project {slugs[0]!r} has no style memory yet; run `echo-os batch --project {slugs[0]}`")
    if as_json:
        print_json([_summary(store, m) for m in memories])
        return
    if not memories:
        warn("no project has a style memory yet; `echo-os batch --project <name>` learns one")
    for m in memories:
        _print_section(store, m)


def _summary(store, m) -> dict:
    from echo_pipeline.resonance.memory_system import MIN_STABLE_IMAGES, history_frame, memory_versions

    history = history_frame(m)
    palettes = m.palette_table().round(1)
    return {
        "project": m.project, "images": m.count, "stable": m.stable, "needs": max(0, MIN_STABLE_IMAGES - m.count),
        "cohesion": round(100.0 * (1.0 - m.spread), 1), "embedder": m.embedder, "exemplars": m.exemplars,
        "learned_modifiers": m.learned_modifiers,
        "top_tokens": sorted(m.token_stats.items(), key=lambda kv: -kv[1])[:10],
        "version": m.version, "version_files": memory_versions(store, m.project),
        "best_palette": m.best_palette,
        "palettes": palettes.astype(object).where(palettes.notna(), None).to_dict("records"),
        "dominant_colours": [{"colour": c, "share": round(w, 4)} for c, w in m.dominant_colours()],
        "versions": len(history), "drift": round(float(history["drift"].iloc[-1]), 2) if len(history) else 0.0,
        "history": history.assign(created=history["created"].astype(str)).round(2).to_dict("records"),
    }


def _print_section(store, m) -> None:
    from echo_pipeline.resonance.memory_system import HISTORY_PLOT_FILE, plot_history

    info = _summary(store, m)
    stable = "stable" if info["stable"] else f"not stable yet: {info['needs']} more accepted image(s) needed (50)"
    console.rule(f"[bold]{m.project}[/bold]")
    say(f"learned from {m.count} accepted image(s) ({stable}); cohesion {info['cohesion']} %, "
        f"centroid drift {info['drift']} over {info['versions']} version(s)")
    say(f"modifiers that go with high scores: {', '.join(m.learned_modifiers) or '-'}")
    if info["top_tokens"]:
        say("prompt words by lift (P(accepted | word) / P(accepted)): "
            + ", ".join(f"{shorten(t, 20)} {lift:.2f}" for t, lift in info["top_tokens"][:8]))
    say(f"exemplars (closest to the centroid): {', '.join(m.exemplars) or '-'}")
    if info["palettes"]:
        best = f"best: {info['best_palette']}; " if info["best_palette"] else ""
        say(f"palettes ({best}images / accepted / mean score): " + ", ".join(
            f"{p['palette']} {p['images']}/{p['accepted']}/" + ("-" if p["mean_total"] is None else f"{p['mean_total']:.1f}")
            for p in info["palettes"][:8]))
    if info["dominant_colours"]:
        say("dominant colours: " + ", ".join(f"{c['colour']} {100 * c['share']:.0f} %" for c in info["dominant_colours"]))
    kept = info["version_files"]
    say(f"version {m.version}" + (f"; versions kept: {kept[0]}-{kept[-1]} ({len(kept)} file(s) under "
                                  f"resonance/memory/)" if kept else ""))
    rows = [{"version": str(r["version"]), "images": str(r["images"]), "new": str(r["new_accepted"]),
             "mean score": "-" if r["mean_total"] != r["mean_total"] or r["mean_total"] is None else f"{r['mean_total']:.1f}",
             "cohesion": f"{r['cohesion']:.1f}", "drift": f"{r['drift']:.2f}", "when": r["created"][:19]}
            for r in info["history"][-8:]]
    if rows:
        for line in columns(rows, console.width, shrink="when", right={"version", "images", "new", "mean score",
                                                                      "cohesion", "drift"}):
            say(line)
    if info["versions"]:
        path = store.write_project_file(m.project, HISTORY_PLOT_FILE, plot_history(m))
        say(f"evolution plot: {display_path(path)}")


def _learn(eng, sources: list[str], name: Optional[str], as_json: bool) -> None:
    import re

    from echo_pipeline.resonance.style_learning import learn_from_images

    references = eng.reference_images(sources)
    learned = learn_from_images([image for _, image, _ in references], [prompt for _, _, prompt in references])
    stem = re.sub(r"[^a-z0-9]+", "-", references[0][0].lower().rsplit(".", 1)[0]).strip("-")[:24] or "style"
    style_name = name or f"learned-{stem}"
    # A default name is ours to update when the same references are learned again; a chosen one is not.
    style = eng.styles.create(style_name, learned.description, replace=name is None)
    if as_json:
        print_json({"style": style.name, "prompt": style.prompt, "palette": learned.palette,
                    "palette_distance": learned.palette_distance, "words": learned.words, "images": learned.images,
                    "prompts": learned.prompts, "spread": learned.spread})
        return
    say(f"learned style {style.name!r} from {learned.images} image(s) ({learned.prompts} with a prompt)")
    say(f"palette: {learned.palette} (distance {learned.palette_distance}); words: {', '.join(learned.words) or '-'}")
    say(f"style prompt: {style.prompt}")
    say(f'use it: echo-os render "<prompt>" --style "{style.name}"')
