"""Scoring speed: the offline scorers in images/s, and the pipeline's CLIP scoring against open_clip
called directly on the same images, in the same process.

    python bench/scoring.py [--count 64] [--size 512] [--clip-count 64] [--repeats 3] [--no-clip]

1. Renders `--count` procedural images (not timed), then times `QualityAssessor.assess` (technical
   scores incl. the noise estimate, style descriptor, pHash, consistency, uniqueness) and each offline
   scorer alone, in images/s.
2. Creates a random-init ViT-B-32 open_clip model in code (pretrained=None: nothing is downloaded),
   and times the pipeline's CLIP scoring (`ClipScorer.alignment`: preprocess, image embeddings in
   batches, prompt embeddings, CLIPScore) against the same work written directly against open_clip
   (the same preprocess, `model.encode_image` / `model.encode_text` on the same batches, normalise,
   cosine). Prints the ratio (goal <= 1.10) and, for reference, the model forward alone.

The best of `--repeats` interleaved runs counts for each side. Random weights change no timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--clip-count", type=int, default=64, help="images for the CLIP comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-clip", action="store_true")
    args = parser.parse_args()

    from echo_pipeline.render.backends.procedural import ProceduralBackend
    from echo_pipeline.render.requests import RenderRequest
    from echo_pipeline.resonance.embedders import get_embedder
    from echo_pipeline.resonance.quality_assessor import QualityAssessor, phash_hex, technical_scores

    words = ["warm fractal", "cool ocean waves", "neon julia set", "forest voronoi", "galaxy stars",
             "fire mandelbrot", "soft gradient clouds", "geometric lattice"]
    requests = [RenderRequest(prompt=f"{words[i % len(words)]} {i:02d}", seed=1000 + i, width=args.size,
                              height=args.size) for i in range(args.count)]
    started = time.perf_counter()
    images = [r.image for r in ProceduralBackend().render(requests)]
    prompts = [r.prompt for r in requests]
    print(f"rendered {len(images)} procedural images at {args.size}x{args.size} in "
          f"{time.perf_counter() - started:.1f} s (not timed); {os.cpu_count()} CPU cores")

    n = len(images)
    items = [(f"a{i}", im) for i, im in enumerate(images)]
    assessor = QualityAssessor()
    embedder = get_embedder()
    assessor.assess(items[:2])  # warm-up
    rows = [
        ("QualityAssessor.assess (all offline)", best_of(args.repeats, lambda: assessor.assess(items))),
        ("  technical_scores", best_of(args.repeats, lambda: [technical_scores(im) for im in images])),
        ("  style descriptor", best_of(args.repeats, lambda: embedder.embed(images))),
        ("  pHash", best_of(args.repeats, lambda: [phash_hex(im) for im in images])),
    ]
    print("\noffline scorers")
    for name, seconds in rows:
        print(f"{name:40s} {seconds:7.3f} s   {n / seconds:8.1f} images/s   {1000 * seconds / n:6.2f} ms/image")

    if args.no_clip:
        return 0

    import torch

    from echo_pipeline.resonance.clip import ClipScorer

    clip_images = (images * (args.clip_count // n + 1))[: args.clip_count]
    clip_prompts = (prompts * (args.clip_count // n + 1))[: args.clip_count]
    started = time.perf_counter()
    scorer = ClipScorer("ViT-B-32", None, device="cpu", batch_size=args.batch_size).load()
    print(f"\nCLIP: random-init ViT-B-32 (open_clip, pretrained=None) built in {time.perf_counter() - started:.1f} s; "
          f"{len(clip_images)} images, batches of {args.batch_size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    model, preprocess, tokenizer = scorer.model, scorer.preprocess, scorer.tokenizer
    bs = args.batch_size

    def direct() -> list[float]:
        out: list[float] = []
        with torch.no_grad():
            for start in range(0, len(clip_images), bs):
                batch = torch.stack([preprocess(im) for im in clip_images[start:start + bs]])
                img = torch.nn.functional.normalize(model.encode_image(batch), dim=-1)
                txt = torch.nn.functional.normalize(model.encode_text(tokenizer(clip_prompts[start:start + bs])), dim=-1)
                out.extend((100 * (img * txt).sum(-1).clamp(min=0)).tolist())
        return out

    batches = [torch.stack([preprocess(im) for im in clip_images[s:s + bs]]) for s in range(0, len(clip_images), bs)]
    tokens = [tokenizer(clip_prompts[s:s + bs]) for s in range(0, len(clip_images), bs)]

    def forward_only() -> None:
        with torch.no_grad():
            for b, t in zip(batches, tokens, strict=True):
                model.encode_image(b)
                model.encode_text(t)

    def pipeline() -> None:
        scorer.alignment(clip_images, clip_prompts)

    pipeline_scores = scorer.alignment(clip_images[:bs], clip_prompts[:bs])  # warm-up both sides
    direct_scores = direct()[:bs]
    agree = max(abs(a - b) for a, b in zip(pipeline_scores.tolist(), direct_scores, strict=True))
    times = {"pipeline": [], "direct": [], "forward": []}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both sides
        for name, fn in (("pipeline", pipeline), ("direct", direct), ("forward", forward_only)):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    best = {k: min(v) for k, v in times.items()}
    m = len(clip_images)
    print(f"open_clip direct (preprocess + encode)   {best['direct']:7.3f} s   {m / best['direct']:8.1f} images/s   (baseline)")
    print(f"pipeline ClipScorer.alignment            {best['pipeline']:7.3f} s   {m / best['pipeline']:8.1f} images/s   "
          f"ratio to direct {best['pipeline'] / best['direct']:.3f}")
    print(f"model forward only (pre-made batches)    {best['forward']:7.3f} s   {m / best['forward']:8.1f} images/s   "
          f"pipeline / forward {best['pipeline'] / best['forward']:.3f}")
    print(f"scores agree with the direct calls to {agree:.2e} (CLIPScore points)")
    ratio = best["pipeline"] / best["direct"]
    print(f"goal ratio <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'} ({ratio:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
