"""Speed of the procedural backend: every motif at 512x512, against a baseline from the same run.

Run by hand (not a test):  python bench/procedural_speed.py [--size 512] [--seeds 4] [--threads 1]

For each motif family it renders `--seeds` different prompts/seeds (the cost of a fractal depends on
the view a seed picks), times each full `render()` call (parameters, drawing, effects, sRGB encode;
PNG encoding not included) and prints the mean and worst seconds, the ratio of the mean to the
baseline, and whether the worst case is under the 0.5 s target (scaled by pixel count for other sizes).

Baseline: the time Pillow takes to encode one 512x512 RGB PNG (default settings) of a smooth
gradient with a little noise, measured in the same process, so the ratios compare across machines.

Threads are pinned to one (BLAS/OpenMP) before NumPy is imported: the target is "one core".
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (default 1: one core)")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import numpy as np
    from PIL import Image

    from echo_pipeline.render.backends.procedural import ProceduralBackend
    from echo_pipeline.render.requests import RenderRequest

    size = args.size
    target = 0.5 * (size * size) / (512 * 512)

    # ---- baseline: PNG-encode a 512x512 RGB image with Pillow
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:512, 0:512]
    grad = np.stack([x / 2, y / 2, (x + y) / 4], -1) + rng.normal(0, 4, (512, 512, 3))
    img = Image.fromarray(np.clip(grad, 0, 255).astype(np.uint8), "RGB")
    times = []
    for _ in range(7):
        t = time.perf_counter()
        img.save(io.BytesIO(), format="PNG")
        times.append(time.perf_counter() - t)
    baseline = statistics.median(times)

    prompts = {
        "fractal": "fractal {i}",
        "flow": "flow field {i}",
        "waves": "waves {i}",
        "landscape": "mountain landscape {i}",
        "geometric": "geometric pattern {i}",
        "city": "cyberpunk cityscape, neon noir, rain-slick streets, glowing signs, cinematic {i}",
        "nebula": "nebula {i}",
    }
    backend = ProceduralBackend()
    # warm-up: imports, first-call allocations
    list(backend.render([RenderRequest(prompt="fractal", seed=0, width=64, height=64)]))

    print(f"baseline (Pillow PNG encode, 512x512 RGB): {baseline * 1000:.1f} ms   threads={args.threads}")
    print(f"size {size}x{size}, {args.seeds} seeds per motif, target <= {target:.2f} s per image\n")
    print(f"{'motif':<11}{'mean s':>8}{'worst s':>9}{'x baseline':>12}  kinds seen                       under target")
    all_ok = True
    for motif, template in prompts.items():
        secs, kinds = [], []
        for i in range(args.seeds):
            request = RenderRequest(prompt=template.format(i=i + 1), seed=1000 + i, width=size, height=size)
            t = time.perf_counter()
            (out,) = list(backend.render([request]))
            secs.append(time.perf_counter() - t)
            assert out.info["motif"] == motif, (motif, out.info["motif"])
            kinds.append(str(out.info.get("kind")))
        mean, worst = statistics.mean(secs), max(secs)
        ok = worst <= target
        all_ok &= ok
        print(f"{motif:<11}{mean:>8.3f}{worst:>9.3f}{mean / baseline:>12.1f}  {','.join(kinds)[:32]:<32} "
              f"{'yes' if ok else 'NO'}")
    print("\nall motifs under target" if all_ok else "\nsome motifs are over target")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
