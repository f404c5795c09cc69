"""Media costs against the per-image render time, all measured in the same run.

Run by hand (not a test):  python bench/media_rates.py [--size 512] [--frames 24] [--repeat 3]

Baseline: one procedural image render of the same prompt and size (the median of `--repeat`), what
every figure below is a ratio of. Then, on one core (BLAS/OpenMP threads pinned to 1, the backend
in-process), the median of `--repeat` runs of:

* texture: a material texture render plus its derived maps and seam measure (what `--type texture` adds);
* video frame: seconds per frame of a `--frames` video (motion auto: fractals zoom, others walk),
  frames only, then the MP4 + GIF encode per frame;
* mesh: build (extrude or height field) + GLB + OBJ + the 512 px preview render, from a stored
  concept image and texture;
* interactive: the live view's numpy render plus the HTML page.

Each row prints seconds and the ratio to the per-image baseline of its prompt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = "1"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    from echo_pipeline.media import mesh as mesh_mod
    from echo_pipeline.media import video as video_mod
    from echo_pipeline.media.interactive import interactive_page
    from echo_pipeline.media.texture_maps import derive_maps, seam_measure
    from echo_pipeline.render.backends.procedural import ProceduralBackend, animate
    from echo_pipeline.render.backends.procedural.live import render_view, view_from_params
    from echo_pipeline.render.requests import RenderRequest
    from echo_pipeline.workflows.video_maker import procedural_keyframes

    size, repeat = args.size, args.repeat
    backend = ProceduralBackend(workers=1)

    def image(prompt: str, seed: int = 11, tiling: bool = False):
        request = RenderRequest(prompt=prompt, seed=seed, width=size, height=size, tiling=tiling)
        (rendered,) = list(backend.render([request]))
        return rendered

    image("warm fractal", 0)  # warm-up: imports and first-call allocations
    rows: list[tuple[str, float, float]] = []

    def row(name: str, seconds: float, baseline: float) -> None:
        rows.append((name, seconds, baseline))

    # -- textures
    texture_base = _median(lambda: image("sword texture", tiling=True), repeat)

    def texture() -> None:
        rendered = image("sword texture", tiling=True)
        derive_maps(rendered.image, kind="metal")
        seam_measure(rendered.image)

    row("texture + maps + seam (sword texture)", _median(texture, repeat), texture_base)

    # -- video frames
    for prompt in ("warm fractal", "cool flow field"):
        still = _median(lambda prompt=prompt: image(prompt), repeat)
        request = RenderRequest(prompt=prompt, seed=11, width=size, height=size)
        _, keyframes = procedural_keyframes(request, 3)
        frames = animate.frame_params(keyframes, args.frames, motion="auto")
        sample = frames[:: max(1, len(frames) // 6)]  # six frames spread over the clip
        per_frame = _median(lambda sample=sample: [animate.render_frame(p, size, size) for p in sample],
                            repeat) / len(sample)
        row(f"video frame ({prompt}, motion auto)", per_frame, still)
        pictures = [animate.render_frame(p, size, size) for p in frames]
        encode = _median(lambda pictures=pictures: (video_mod.encode_mp4(pictures, 12),
                                                    video_mod.encode_gif(pictures, 12)), 1) / len(pictures)
        row(f"  MP4 + GIF encode per frame ({prompt})", encode, still)

    # -- meshes
    concept_base = _median(lambda: image("concept art of sword design, forged steel, game asset design, clean "
                                         "silhouette, neutral background"), repeat)
    concept = image("concept art of sword design, forged steel, game asset design, clean silhouette, "
                    "neutral background").image
    steel = image("sword texture", tiling=True).image

    def model() -> None:
        result = mesh_mod.build_mesh(concept, steel, method="auto")
        mesh_mod.export_glb(result)
        mesh_mod.export_obj(result)
        mesh_mod.render_preview(result, size=(512, 512))

    method = mesh_mod.build_mesh(concept, steel, method="auto")
    row(f"mesh ({method.method}, {method.stats['triangles']} triangles) + GLB + OBJ + preview",
        _median(model, repeat), concept_base)

    # -- interactive
    fractal = image("Ruzgar warm fractal")
    fractal_base = _median(lambda: image("Ruzgar warm fractal"), repeat)
    view = view_from_params(fractal.info["params"], size, size)
    row(f"interactive page + live view render ({view.motif})",
        _median(lambda: (render_view(view), interactive_page(view, title="bench", record={})), repeat), fractal_base)

    print(f"size {size}x{size}, one core, median of {repeat}; ratio = seconds / one image render of the same prompt\n")
    print(f"{'what':<62}{'seconds':>9}{'image s':>9}{'ratio':>8}")
    for name, seconds, baseline in rows:
        print(f"{name:<62}{seconds:>9.3f}{baseline:>9.3f}{seconds / baseline:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
