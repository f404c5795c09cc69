"""The `gpu` pool: the steps that hold a model (generated_images, the media step, render_prompt,
refine_weakest) claim a slot of it, so an instance runs as many of them at once as the pool's limit
(dagster.yaml: 1, one machine). Distributed on Celery (configs/deploy/), the same steps also go to
the `gpu` queue, which each worker host consumes with concurrency 1: one model step per host.
"""

GPU_POOL = "gpu"
# dagster-celery sends a step to the queue its `dagster-celery/queue` tag names (default `dagster`);
# other executors ignore the tag.
GPU_OP_TAGS = {"dagster-celery/queue": GPU_POOL}
