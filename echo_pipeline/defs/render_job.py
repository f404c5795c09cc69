"""`echo-os render` as a Dagster run: ad-hoc prompts get the same run history and lineage as batches.

The op's config is derived from `PromptSpec` (one field per spec field, plus the backend name), so
the run config in the UI is exactly what the user asked for and a new spec field needs no copying.
"""

from typing import Optional

import dagster as dg
from pydantic import create_model

from echo_pipeline.defs.pools import GPU_OP_TAGS, GPU_POOL
from echo_pipeline.defs.resources import EchoResource, ImageBackendResource
from echo_pipeline.render.prompt_engine import PromptSpec
from echo_pipeline.workflows.project_pipeline import RunObserver

RenderConfig = create_model(  # type: ignore[call-overload]  # fields from PromptSpec, typed at runtime
    "RenderConfig", __base__=dg.Config, __doc__="A PromptSpec, plus the backend name.",
    backend=(Optional[str], None),
    **{name: (field.annotation, field) for name, field in PromptSpec.model_fields.items()},
)


@dg.op(pool=GPU_POOL, tags=GPU_OP_TAGS)
def render_prompt(context: dg.OpExecutionContext, config: RenderConfig, echo: EchoResource,
                  image_backend: ImageBackendResource, observer: dg.ResourceParam[RunObserver]) -> None:
    fields = config.model_dump()
    backend = fields.pop("backend")
    spec = PromptSpec.model_validate(fields)
    result = echo.engine().render(spec, image_backend.get(backend), run_id=context.run.run_id,
                                  progress=observer.progress)
    observer.step_finished("render", result)
    context.add_output_metadata({"new_images": len(result.new), "already_stored": len(result.existing),
                                 "recovered": result.recovered, "seconds": round(result.seconds, 2),
                                 "artifact_ids": dg.MetadataValue.json([r.artifact_id for r in result.new])})


@dg.job(description="Render a prompt into a project (what `echo-os render` runs).")
def render_job():
    render_prompt()
