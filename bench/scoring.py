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
`measure` returns the figures as data (bench/run_all.py calls it).
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


WORDS = ["warm fractal", "cool ocean waves", "neon julia set", "forest voronoi", "galaxy stars",
         "fire mandelbrot", "soft gradient clouds", "geometric lattice"]


def render_images(count: int, size: int) -> tuple[list, list[str], float]:
    """`count` procedural images of varied motifs, their prompts, and the seconds it took."""
    from echo_pipeline.render.backends.procedural import ProceduralBackend
    from echo_pipeline.render.requests import RenderRequest

    requests = [RenderRequest(prompt=f"{WORDS[i % len(WORDS)]} {i:02d}", seed=1000 + i, width=size, height=size)
                for i in range(count)]
    started = time.perf_counter()
    images = [r.image for r in ProceduralBackend().render(requests)]
    return images, [r.prompt for r in requests], time.perf_counter() - started


def offline(images: list, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` seconds of `QualityAssessor.assess` and of each offline scorer alone."""
    from echo_pipeline.resonance.embedders import get_embedder
    from echo_pipeline.resonance.quality_assessor import QualityAssessor, phash_hex, technical_scores

    items = [(f"a{i}", im) for i, im in enumerate(images)]
    assessor = QualityAssessor()
    embedder = get_embedder()
    assessor.assess(items[:2])  # warm-up
    return {
        "QualityAssessor.assess (all offline)": best_of(repeats, lambda: assessor.assess(items)),
        "  technical_scores": best_of(repeats, lambda: [technical_scores(im) for im in images]),
        "  style descriptor": best_of(repeats, lambda: embedder.embed(images)),
        "  pHash": best_of(repeats, lambda: [phash_hex(im) for im in images]),
    }


def clip(images: list, prompts: list[str], count: int, repeats: int, batch_size: int) -> dict:
    """The pipeline's CLIP scoring against open_clip called directly, best of `repeats` interleaved
    runs each: seconds for pipeline, direct and forward-only, plus how far the scores differ."""
    import torch

    from echo_pipeline.resonance.clip import ClipScorer

    n = len(images)
    clip_images = (images * (count // n + 1))[:count]
    clip_prompts = (prompts * (count // n + 1))[:count]
    started = time.perf_counter()
    scorer = ClipScorer("ViT-B-32", None, device="cpu", batch_size=batch_size).load()
    built = time.perf_counter() - started
    model, preprocess, tokenizer = scorer.model, scorer.preprocess, scorer.tokenizer
    bs = batch_size

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
    times: dict[str, list[float]] = {"pipeline": [], "direct": [], "forward": []}
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits both sides
        for name, fn in (("pipeline", pipeline), ("direct", direct), ("forward", forward_only)):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    best = {k: min(v) for k, v in times.items()}
    return {"images": count, "batch_size": bs, "built_s": built, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "pipeline_s": best["pipeline"], "direct_s": best["direct"],
            "forward_s": best["forward"], "ratio": best["pipeline"] / best["direct"], "max_score_diff": agree}


def measure(count: int = 64, size: int = 512, clip_count: int = 64, repeats: int = 3,
            batch_size: int = 32, with_clip: bool = True) -> dict:
    """Offline scorers on `count` images (seconds each, best of `repeats`) and, with `with_clip`,
    the CLIP comparison on `clip_count` of them."""
    images, prompts, render_s = render_images(count, size)
    figures: dict = {"images": len(images), "size": size, "render_s": render_s, "cores": os.cpu_count(),
                     "offline_s": offline(images, repeats)}
    if with_clip:
        figures["clip"] = clip(images, prompts, clip_count, repeats, batch_size)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--clip-count", type=int, default=64, help="images for the CLIP comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-clip", action="store_true")
    args = parser.parse_args()

    m = measure(args.count, args.size, args.clip_count, args.repeats, args.batch_size, with_clip=not args.no_clip)
    n = m["images"]
    print(f"rendered {n} procedural images at {args.size}x{args.size} in {m['render_s']:.1f} s (not timed); "
          f"{m['cores']} CPU cores")
    print("\noffline scorers")
    for name, seconds in m["offline_s"].items():
        print(f"{name:40s} {seconds:7.3f} s   {n / seconds:8.1f} images/s   {1000 * seconds / n:6.2f} ms/image")
    if "clip" not in m:
        return 0
    c = m["clip"]
    print(f"\nCLIP: random-init ViT-B-32 (open_clip, pretrained=None) built in {c['built_s']:.1f} s; "
          f"{c['images']} images, batches of {c['batch_size']}, torch {c['torch']}, {c['threads']} threads")
    k = c["images"]
    print(f"open_clip direct (preprocess + encode)   {c['direct_s']:7.3f} s   {k / c['direct_s']:8.1f} images/s   (baseline)")
    print(f"pipeline ClipScorer.alignment            {c['pipeline_s']:7.3f} s   {k / c['pipeline_s']:8.1f} images/s   "
          f"ratio to direct {c['ratio']:.3f}")
    print(f"model forward only (pre-made batches)    {c['forward_s']:7.3f} s   {k / c['forward_s']:8.1f} images/s   "
          f"pipeline / forward {c['pipeline_s'] / c['forward_s']:.3f}")
    print(f"scores agree with the direct calls to {c['max_score_diff']:.2e} (CLIPScore points)")
    print(f"goal ratio <= 1.10: {'met' if c['ratio'] <= 1.10 else 'NOT met'} ({c['ratio']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
