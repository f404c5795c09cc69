"""The per-project asset graph. Each asset is a thin wrapper over one ProjectPipeline step.

intent -> plan -> prompt_set -> generated_images -> quality_scores -> style_memory -> gallery
with the media made from the images between generated_images and quality_scores:
generated_images -> textures -> models_3d; generated_images -> videos; generated_images -> interactive_pieces

Metadata makes the UI useful (counts, a thumbnail grid, tables of new images and scores);
`data_version` is a content hash of what the step produced, so staleness downstream is real;
`code_version` is bumped when a change alters the step's output (pixels included).
"""


import warnings
from typing import Optional

import dagster as dg

from echo_pipeline.defs.partitions import projects_partitions
from echo_pipeline.defs.pools import GPU_OP_TAGS, GPU_POOL
from echo_pipeline.defs.resources import EchoResource, ImageBackendResource
from echo_pipeline.resonance.quality_assessor import PROJECT_DUPLICATE_DISTANCE
from echo_pipeline.workflows.project_pipeline import ProjectPipeline, RunObserver, StepResult

GROUP = "echo"

# Partitioned checks (one result per project, not the last project scored) and observable source
# assets are preview/beta in Dagster 1.13: both used on purpose, the warnings are not the user's concern.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


class PromptSetConfig(dg.Config):
    """One-off overrides for a batch (`echo-os batch --count N --style S`)."""

    count: Optional[int] = None
    style: Optional[str] = None


def _table_md(rows: list[dict]) -> str:
    if not rows:
        return "_none_"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[k]).replace("|", "\\|").replace("\n", " ")[:120] for k in header]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _result(step: StepResult, *, table: str | None = None, check_results=None) -> dg.MaterializeResult:
    """The step's summary, table and thumbnails as metadata, its content hash as data_version."""
    metadata: dict = {k: v for k, v in step.summary.items() if v is not None}
    if step.rows:
        metadata[table or "table"] = dg.MetadataValue.md(_table_md(step.rows))
    if step.images:
        from echo_pipeline.artifacts.gallery import thumbnail_grid_markdown

        metadata["preview"] = dg.MetadataValue.md(thumbnail_grid_markdown(step.images))
    for key, text in step.markdown.items():
        metadata[key] = dg.MetadataValue.md(text)
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(step.data_version),
                                check_results=check_results)


def _pipeline(context: dg.AssetExecutionContext, echo: EchoResource) -> ProjectPipeline:
    return ProjectPipeline(echo.engine(), context.partition_key)


def _observed(observer: RunObserver, step_name: str, step: StepResult) -> StepResult:
    observer.step_finished(step_name, step.data)
    return step


@dg.observable_source_asset(group_name=GROUP, description="Style presets in configs/styles/ (built-in and user).")
def style_presets(echo: EchoResource) -> dg.DataVersion:
    """Observing records a hash of the style files: after an edit, prompt sets and everything
    downstream show as stale in the UI until re-materialized."""
    return dg.DataVersion(echo.engine().styles.fingerprint())


@dg.asset(partitions_def=projects_partitions, group_name=GROUP, code_version="1", kinds={"python"})
def intent(context: dg.AssetExecutionContext, echo: EchoResource,
           observer: dg.ResourceParam[RunObserver]) -> dg.MaterializeResult:
    """The project's normalized intent, from configs/projects/<slug>.yaml."""
    return _result(_observed(observer, "intent", _pipeline(context, echo).intent()))


@dg.asset(partitions_def=projects_partitions, group_name=GROUP, code_version="2", deps=[intent])
def plan(context: dg.AssetExecutionContext, echo: EchoResource,
         observer: dg.ResourceParam[RunObserver]) -> dg.MaterializeResult:
    """Typed tasks (image, texture, 3d_model, video, interactive) with dependencies, as a table and a graph."""
    return _result(_observed(observer, "plan", _pipeline(context, echo).plan()), table="tasks")


@dg.asset(partitions_def=projects_partitions, group_name=GROUP, code_version="2", deps=[plan, style_presets])
def prompt_set(context: dg.AssetExecutionContext, config: PromptSetConfig, echo: EchoResource,
               image_backend: ImageBackendResource, observer: dg.ResourceParam[RunObserver]) -> dg.MaterializeResult:
    """Seeded render requests for the next batch (with the style memory's modifiers and palette when
    the spec's use_memory is on); each id is a hash of what determines the pixels."""
    pipeline = _pipeline(context, echo)
    step = pipeline.prompt_set(image_backend.get(pipeline.spec.backend, pipeline.spec.model), count=config.count, style=config.style)
    return _result(_observed(observer, "prompt_set", step), table="requests")


@dg.asset(
    partitions_def=projects_partitions, group_name=GROUP, code_version="2", deps=[prompt_set], pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    check_specs=[dg.AssetCheckSpec("unique_images", asset="generated_images", blocking=True,
                                   partitions_def=projects_partitions,
                                   description="No image of the batch is a near-duplicate of any image in the project "
                                               f"(perceptual-hash distance <= {PROJECT_DUPLICATE_DISTANCE}); a "
                                               "near-duplicate is re-rolled with other seeds before it is stored, "
                                               "and fails the check only when every re-roll was one too.")],
)
def generated_images(context: dg.AssetExecutionContext, echo: EchoResource, image_backend: ImageBackendResource,
                     observer: dg.ResourceParam[RunObserver]) -> dg.MaterializeResult:
    """Renders the prompt set's requests not already stored (resumable, idempotent); a near-duplicate
    of an image stored before it is re-rolled with another seed instead of being stored."""
    pipeline = _pipeline(context, echo)
    step = _observed(observer, "generated_images", pipeline.generate(
        image_backend.get(pipeline.spec.backend, pipeline.spec.model), run_id=context.run.run_id, progress=observer.progress))
    assert step.check is not None  # generate always reports its uniqueness check
    duplicates = step.check["near_duplicates"]
    check = dg.AssetCheckResult(
        check_name="unique_images", passed=step.check["passed"], description=step.check["message"],
        metadata={"near_duplicate_pairs": len(duplicates), "rerolled": step.check["rerolled"],
                  "still_duplicate_after_rerolls": len(step.check["survivors"]),
                  "pairs": dg.MetadataValue.json([list(p) for p in duplicates[:20]])},
    )
    if not step.check["passed"]:
        context.log.warning(f"unique_images failed: {step.check['message']}")
    context.log.info(f"{step.summary['new_images']} new, {step.summary['already_stored']} already stored, "
                     f"{step.summary['rerolled']} near-duplicate(s) re-rolled")
    return _result(step, table="images", check_results=[check])


#: (asset, media type, description) of the media made from a batch's images, in the order they are made.
MEDIA_KINDS = (
    ("textures", "texture", "Seamless material textures with their height, normal (OpenGL, +Y up) and roughness "
                            "maps and a seam measure."),
    ("models_3d", "3d_model", "3D models (GLB with the texture embedded, OBJ+MTL) from the concept images and "
                              "textures, with rendered previews."),
    ("videos", "video", "Videos (MP4 H.264 and GIF) from the keyframe images: parameter interpolation, fractal "
                        "zooms, palette cycles, img2img chains; audio-driven when a track is given."),
    ("interactive_pieces", "interactive", "Self-contained HTML pages that draw the images' procedural pieces live "
                                          "(pan, zoom, animate, keep a view)."),
)


@dg.multi_asset(
    specs=[dg.AssetSpec(name, partitions_def=projects_partitions, group_name=GROUP, code_version="1",
                        description=description, kinds={"python"},
                        deps=[generated_images, "textures"] if name == "models_3d" else [generated_images])
           for name, _, description in MEDIA_KINDS],
    pool=GPU_POOL, op_tags=GPU_OP_TAGS, can_subset=True,
)
def media(context: dg.AssetExecutionContext, echo: EchoResource, image_backend: ImageBackendResource,
          observer: dg.ResourceParam[RunObserver]):
    """One asset per media type, made in one step (one `gpu` pool claim per run, not four): the
    prompt set's requests of each type, from the images (and textures) they depend on; lineage to
    those source artifacts is in each record."""
    pipeline = _pipeline(context, echo)
    backend = image_backend.get(pipeline.spec.backend, pipeline.spec.model)
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    for name, media_type, _ in MEDIA_KINDS:
        if name not in selected:
            continue
        step = _observed(observer, name, pipeline.make_media(media_type, backend, run_id=context.run.run_id,
                                                             progress=observer.progress))
        result = _result(step, table=name)
        yield dg.MaterializeResult(asset_key=name, metadata=result.metadata, data_version=result.data_version)


MEDIA_ASSETS = [media]


@dg.asset(
    partitions_def=projects_partitions, group_name=GROUP, code_version="2",
    deps=[generated_images, *(name for name, _, _ in MEDIA_KINDS)],
    check_specs=[dg.AssetCheckSpec("style_consistency", asset="quality_scores", partitions_def=projects_partitions,
                                   description="At least the project's style_target % of the newly scored images "
                                               "reach its per-image style_threshold.")],
)
def quality_scores(context: dg.AssetExecutionContext, echo: EchoResource,
                   observer: dg.ResourceParam[RunObserver]) -> dg.MaterializeResult:
    """Per-image scores (technical, style consistency, uniqueness, total); scores only new images."""
    step = _observed(observer, "quality_scores", _pipeline(context, echo).score())
    assert step.check is not None  # score always reports the consistency check
    check = dg.AssetCheckResult(
        check_name="style_consistency", passed=step.check["passed"],
        severity=dg.AssetCheckSeverity.WARN,
        description=(f"{step.check['consistent_pct']} % of {step.check['judged_images']} "
                     f"{'new ' if step.check['batch'] else ''}image(s) at or above {step.check['threshold']:g} "
                     f"(target {step.check['target']:g} %)" if step.check["consistent_pct"] is not None
                     else "no rated images yet"),
        metadata={"consistent_pct": dg.MetadataValue.float(float("nan") if step.check["consistent_pct"] is None
                                                          else float(step.check["consistent_pct"])),
                  "target_pct": float(step.check["target"]), "threshold": float(step.check["threshold"]),
                  "judged_images": int(step.check["judged_images"]),
                  "mean_style_consistency": float(step.check["mean_style_consistency"])},
    )
    return _result(step, table="new scores", check_results=[check])


@dg.asset(partitions_def=projects_partitions, group_name=GROUP, code_version="2", deps=[quality_scores])
def style_memory(context: dg.AssetExecutionContext, echo: EchoResource,
                 observer: dg.ResourceParam[RunObserver]) -> dg.MaterializeResult:
    """The project's learned style: centroid and spread of accepted images, exemplars, prompt-word and
    palette statistics, dominant colours, one stored version per learning step, suggestions."""
    return _result(_observed(observer, "style_memory", _pipeline(context, echo).learn()))


@dg.asset(partitions_def=projects_partitions, group_name=GROUP, code_version="1", deps=[style_memory])
def gallery(context: dg.AssetExecutionContext, echo: EchoResource,
            observer: dg.ResourceParam[RunObserver]) -> dg.MaterializeResult:
    """HTML gallery and contact sheet, regenerated from the catalog and scores."""
    return _result(_observed(observer, "gallery", _pipeline(context, echo).gallery()))


PIPELINE_ASSETS = [intent, plan, prompt_set, generated_images, *MEDIA_ASSETS, quality_scores, style_memory, gallery]


class WorkLogConfig(dg.Config):
    """What `echo-os commit` records: the message and the minutes spent (0-10000)."""

    message: str
    minutes: int = 0


def _work_log_metadata(entry) -> dict:
    """The entry as materialization metadata: numbers as numbers (plotted on the asset's timeline)."""
    runs = dg.MetadataValue.table(
        records=[dg.TableRecord({"run_id": r.run_id, "job": r.job, "status": r.status,
                                 "started": r.started.isoformat(timespec="seconds") if r.started else "-"})
                 for r in entry.runs],
        schema=dg.TableSchema(columns=[dg.TableColumn("run_id", "string"), dg.TableColumn("job", "string"),
                                       dg.TableColumn("status", "string"), dg.TableColumn("started", "string")]))
    metadata: dict = {
        "entry": entry.id, "message": entry.message, "minutes": dg.MetadataValue.int(entry.minutes),
        "new_artifacts": dg.MetadataValue.int(entry.artifact_count),
        **{f"new_{kind}": dg.MetadataValue.int(n) for kind, n in entry.new_artifacts.items()},
        "run_count": dg.MetadataValue.int(len(entry.runs)), "runs": runs,
        "run_seconds": dg.MetadataValue.float(entry.run_seconds),
        "summary": dg.MetadataValue.md(entry.summary_markdown()),
    }
    if entry.style_memory_version is not None:
        metadata["style_memory_version"] = dg.MetadataValue.int(entry.style_memory_version)
    for key in ("mean_score_before", "mean_score_after", "score_delta"):
        value = getattr(entry, key)
        if value is not None:
            metadata[key] = dg.MetadataValue.float(float(value))
    return metadata


# Downstream of the steps whose results it counts, for lineage (the UI shows it stale after new work);
# its job selects it alone, so a commit never re-runs the graph, and the `default` project (renders,
# no spec) can commit too.
@dg.asset(partitions_def=projects_partitions, group_name=GROUP, code_version="1", kinds={"python"},
          deps=[generated_images, quality_scores, style_memory])
def work_log(context: dg.AssetExecutionContext, config: WorkLogConfig, echo: EchoResource,
             observer: dg.ResourceParam[RunObserver]) -> dg.MaterializeResult:
    """One work log entry (`echo-os commit`): runs, new artifacts per media type, style memory version,
    mean scores before and after, and the time spent since the project's last entry."""
    from echo_pipeline.defs.launch import project_runs
    from echo_pipeline.workflows.work_log import WorkLog

    entry = WorkLog(echo.engine().store).commit(context.partition_key, config.message, config.minutes,
                                                runs=project_runs(context.instance, context.partition_key))
    observer.step_finished("work_log", entry)
    context.log.info(f"work log entry {entry.id}: {entry.artifact_count} new artifact(s), {len(entry.runs)} run(s)")
    return dg.MaterializeResult(metadata=_work_log_metadata(entry), data_version=dg.DataVersion(entry.id))
