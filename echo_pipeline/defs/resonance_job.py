"""`echo-os resonance` as a Dagster run: the feedback loop (workflows/feedback_loop.py) over one
project, with the same run history, busy checks and interrupts as every other run."""

from typing import Optional

import dagster as dg

from echo_pipeline.defs.pools import GPU_OP_TAGS, GPU_POOL
from echo_pipeline.defs.resources import EchoResource, ImageBackendResource
from echo_pipeline.workflows.feedback_loop import WEAKEST_FRACTION, run_feedback_loop
from echo_pipeline.workflows.project_pipeline import RunObserver


class ResonanceConfig(dg.Config):
    project: str
    rounds: int = 3
    target: Optional[float] = None
    fraction: float = WEAKEST_FRACTION


@dg.op(pool=GPU_POOL, tags=GPU_OP_TAGS)
def refine_weakest(context: dg.OpExecutionContext, config: ResonanceConfig, echo: EchoResource,
                   image_backend: ImageBackendResource, observer: dg.ResourceParam[RunObserver]) -> None:
    engine = echo.engine()
    spec = engine.projects.load(config.project)
    report = run_feedback_loop(engine, spec.slug, image_backend.get(spec.backend, spec.model), rounds=config.rounds,
                               target=config.target, fraction=config.fraction, run_id=context.run.run_id,
                               notify=context.log.info)
    observer.step_finished("resonance", report)
    context.add_output_metadata({
        "start_mean": report.start_mean, "final_mean": round(report.final_mean, 2),
        "improvement_pct": round(report.improvement_pct, 2), "rounds": len(report.rounds),
        "kept": sum(r.kept for r in report.rounds), "tried": sum(r.tried for r in report.rounds),
        "stopped": report.stopped, "report": report.report_path,
    })


@dg.job(description="Refine a project's weakest images until they score better (what `echo-os resonance` runs).")
def resonance_job():
    refine_weakest()
