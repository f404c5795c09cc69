"""Model-backend overhead, each against a baseline measured in the same run:

1. diffusers: `echo-os batch` of N images (default 32) for a project whose spec names the diffusers
   backend and a tiny SD pipeline built in code, against the bare diffusers pipeline called on the
   same model with the same prompts, seeds, sampler, steps and batch size (goal: ratio <= 1.10).
   Both include loading the model and run warm (imports done, the Dagster instance set up). The
   batch also stores PNGs and thumbnails, scores the images, updates the style memory and the
   gallery: the ratio is everything the pipeline adds to the model's own work.
2. ComfyUI: our client (`ComfyUIBackend.render`) against the loopback ComfyUI server used by the
   protocol tests, compared with a minimal client of the same server (POST /prompt, poll
   /history, GET /view with bare httpx): the added latency per image.

    python bench/backend_overhead.py [--count 32] [--size 64] [--steps 8] [--comfyui-images 20]

Everything happens in temporary folders; nothing is downloaded. `measure` returns the figures as
data (bench/run_all.py calls it).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # echo_pipeline_tests: the tiny model builder and the loopback server
from workspace import cpu_seconds  # noqa: E402  (bench/workspace.py)


def bare_diffusers(model: Path, requests: list, batch_size: int) -> tuple[float, float]:
    """Seconds to load the pipeline and render `requests` with diffusers alone (same seeds, sampler),
    and the CPU seconds that took."""
    import torch
    from diffusers import AutoPipelineForText2Image, EulerAncestralDiscreteScheduler

    from echo_pipeline.render.backends.diffusion import _dtype_option

    started, cpu = time.perf_counter(), cpu_seconds()
    pipe = AutoPipelineForText2Image.from_pretrained(str(model), safety_checker=None, **_dtype_option(torch.float32))
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        first = chunk[0]
        pipe(prompt=[r.prompt for r in chunk], negative_prompt=[r.negative_prompt for r in chunk],
             generator=[torch.Generator("cpu").manual_seed(r.seed) for r in chunk],
             num_inference_steps=first.steps, guidance_scale=first.cfg_scale, width=first.width, height=first.height)
    return time.perf_counter() - started, cpu_seconds() - cpu


def diffusers_overhead(work: Path, count: int, size: int, steps: int) -> dict:
    from echo_pipeline.defs import launch
    from echo_pipeline.render.backends.registry import create_backend
    from echo_pipeline.settings import Settings
    from echo_pipeline.workflows.creative_engine import CreativeEngine
    from echo_pipeline.workflows.visual_planner import plan_project, task_prompt_specs
    from echo_pipeline_tests.tiny_models import build_tiny_sd

    model = build_tiny_sd(work / "tiny-sd")
    settings = Settings.load()
    engine = CreativeEngine(settings)
    spec = engine.projects.create("Bench Diffusers", "warm fractal, no human forms", count=count, width=size,
                                  height=size, backend="diffusers", model=str(model), steps=steps)
    backend = create_backend("diffusers", settings.backend_config("diffusers", str(model)))
    requests = [backend.prepare(r) for ps in task_prompt_specs(plan_project(spec), spec, batch=0)
                for r in engine.plan_requests(ps)]
    # Both sides run warm: torch, diffusers and Dagster imported, Dagster's instance set up by a
    # first tiny procedural batch (bench/cold_render.py measures the cold start).
    import diffusers  # noqa: F401
    import torch  # noqa: F401

    warm = engine.projects.create("Warm Up", "warm fractal", count=1, width=64, height=64)
    launch.plan(settings, warm.name, warm.intent)
    launch.batch(settings, warm.slug)
    launch.plan(settings, spec.name, spec.intent)
    started, cpu = time.perf_counter(), cpu_seconds()
    outcome = launch.batch(settings, spec.slug)
    pipeline, pipeline_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    assert len(outcome.result.new) == count, outcome.result
    batch_size = int(outcome.result.new[0].info["batch_size"])  # the same batches on both sides
    bare, bare_cpu = bare_diffusers(model, requests, batch_size)
    return {"images": count, "size": size, "steps": steps, "batch_size": batch_size, "bare_s": bare,
            "pipeline_s": pipeline, "ratio": pipeline / bare, "bare_cpu_s": bare_cpu, "pipeline_cpu_s": pipeline_cpu}


def minimal_comfyui_client(url: str, graph_for, n: int) -> float:
    """The floor for any client of this server: post, poll history, fetch the image."""
    import httpx

    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=30) as http:
        for k in range(n):
            prompt_id = str(uuid.uuid4())
            http.post("/prompt", json={"prompt": graph_for(k), "client_id": "bench", "prompt_id": prompt_id})
            while True:
                entry = http.get(f"/history/{prompt_id}").json().get(prompt_id)
                if entry and entry.get("outputs"):
                    break
                time.sleep(0.002)
            image = next(iter(entry["outputs"].values()))["images"][0]
            http.get("/view", params=image).raise_for_status()
    return time.perf_counter() - started


def comfyui_latency(images: int, size: int) -> dict:
    from echo_pipeline.render.backends.base import BackendConfig
    from echo_pipeline.render.backends.comfyui import ComfyUIBackend, fill
    from echo_pipeline.render.requests import RenderRequest
    from echo_pipeline_tests.comfyui_server import running_comfyui_server

    with running_comfyui_server() as (url, _state):
        backend = ComfyUIBackend(BackendConfig(comfyui_url=url))
        requests = [backend.prepare(RenderRequest(prompt="warm fractal", seed=k, width=size, height=size, steps=4))
                    for k in range(images)]
        list(backend.render(requests[:1]))  # connect and warm up both paths once
        started = time.perf_counter()
        list(backend.render(requests))
        ours = time.perf_counter() - started
        workflow = backend.workflow("txt2img")
        checkpoint = backend.checkpoint()
        backend.close()

        def graph_for(k: int) -> dict:
            return fill(workflow, backend.placeholder_values(requests[k], checkpoint=checkpoint))

        minimal_comfyui_client(url, graph_for, 1)
        floor = minimal_comfyui_client(url, graph_for, images)
    return {"images": images, "ours_s": ours, "minimal_s": floor, "added_ms_per_image": 1000 * (ours - floor) / images}


def measure(count: int = 32, size: int = 64, steps: int = 8, comfyui_images: int = 20) -> dict[str, dict]:
    """Both comparisons in a throw-away workspace: {"diffusers": ..., "comfyui": ...} (comfyui
    left out when `comfyui_images` is 0)."""
    from workspace import isolated_workspace  # bench/workspace.py

    with isolated_workspace(HF_HUB_OFFLINE="1") as work:
        figures = {"diffusers": diffusers_overhead(work, count, size, steps)}
        if comfyui_images:
            figures["comfyui"] = comfyui_latency(comfyui_images, size)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--comfyui-images", type=int, default=20)
    args = parser.parse_args()

    m = measure(args.count, args.size, args.steps, args.comfyui_images)
    d = m["diffusers"]
    print(f"diffusers, {d['images']} images {d['size']}x{d['size']}, {d['steps']} steps, batch {d['batch_size']}:")
    print(f"  bare diffusers pipeline   {d['bare_s']:7.2f} s")
    print(f"  echo-os batch (Dagster)   {d['pipeline_s']:7.2f} s")
    print(f"  ratio                     {d['ratio']:7.3f}   (goal <= 1.10)")
    print(f"  CPU seconds               {d['pipeline_cpu_s']:7.2f} against {d['bare_cpu_s']:.2f} bare "
          f"(ratio {d['pipeline_cpu_s'] / d['bare_cpu_s']:.3f})")
    if c := m.get("comfyui"):
        print(f"ComfyUI client, {c['images']} images against the loopback server:")
        print(f"  ComfyUIBackend.render     {c['ours_s']:7.2f} s")
        print(f"  minimal httpx client      {c['minimal_s']:7.2f} s")
        print(f"  added latency per image   {c['added_ms_per_image']:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
