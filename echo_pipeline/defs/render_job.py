"""`echo-os render` as a Dagster run: ad-hoc prompts get the same run history and lineage as batches."""


from typing import Optional

import dagster as dg

from echo_pipeline.defs.resources import EchoResource
from echo_pipeline.render.prompt_engine import PromptSpec


class RenderConfig(dg.Config):
    """The fields of PromptSpec, plus the backend name."""

    prompt: str
    style: Optional[str] = None
    project: str = "default"
    count: int = 1
    seed: Optional[int] = None
    width: int = 512
    height: int = 512
    negative_prompt: str = ""
    constraints: list[str] = []
    steps: int = 30
    cfg_scale: float = 7.0
    sampler: str = "Euler a"
    media_type: str = "image"
    tiling: bool = False
    backend: Optional[str] = None


@dg.op(pool="gpu")
def render_prompt(context: dg.OpExecutionContext, config: RenderConfig, echo: EchoResource) -> dict:
    spec = PromptSpec(**config.model_dump(exclude={"backend"}))
    result = echo.engine().render(spec, config.backend, run_id=context.run.run_id)
    context.add_output_metadata({"new_images": len(result.new), "already_stored": len(result.existing),
                                 "artifact_ids": dg.MetadataValue.json([r.artifact_id for r in result.new])})
    return {"new": [r.artifact_id for r in result.new], "existing": [r.artifact_id for r in result.existing],
            "recovered": result.recovered, "seconds": result.seconds}


@dg.job(description="Render a prompt into a project (what `echo-os render` runs).")
def render_job():
    render_prompt()
