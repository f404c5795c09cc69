"""The suggestion engine: concrete next steps for a project, from its scores and style memory.

Each suggestion names its evidence (numbers from the stored scores and the memory), never a hunch:

* **groups that score better**: images grouped by what made them (palette and motif from the
  procedural renderer's lineage, else the style preset); a group whose mean total is at least
  `GROUP_GAP` points above the project's other images (each side with >= `MIN_GROUP` images) is
  worth more of ("warm palettes score 18.0 points higher (84.0 vs 66.0, 12 vs 30 images)");
* **prompt words**: the memory's learned modifiers (lift > 1) not yet in most prompts, to add;
  words with a lift below `LOW_LIFT` (seen in >= `MIN_GROUP` prompts), to drop;
* **near-duplicates**: images whose nearest other image is within the project's duplicate distance;
* **weak components**: a technical component whose project mean is below `WEAK_COMPONENT`;
* **weakest images**: when the weakest 20 % trail the rest by `GROUP_GAP` points or more, the
  feedback loop (`echo-os resonance --project X`) is the next step;
* **style**: consistency below the project's threshold for more than a quarter of the images, and a
  memory with fewer than 50 accepted images (not stable yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from echo_pipeline.resonance.memory_system import MIN_STABLE_IMAGES, StyleMemory, tokenize

GROUP_GAP = 5.0
MIN_GROUP = 3
LOW_LIFT = 0.8
WEAK_COMPONENT = 50.0
TECHNICAL = ("sharpness", "contrast", "colourfulness", "entropy", "exposure", "noise")


@dataclass(frozen=True)
class Suggestion:
    kind: str  # group, words, duplicates, component, refine, style, memory
    text: str


def suggest(project: str, scores: pd.DataFrame, memory: StyleMemory | None, lineage: pd.DataFrame,
            *, style_threshold: float, duplicate_distance: int) -> list[Suggestion]:
    """Suggestions for `project`, most useful first. `lineage`: one row per artifact with columns
    artifact_id, prompt, group (e.g. 'warm palette', a style name) and optionally child (True for an
    img2img child, which the weakest-images suggestion leaves out)."""
    out: list[Suggestion] = []
    scored = scores[np.isfinite(scores["total"].astype(float))]
    if scored.empty:
        return [Suggestion("memory", f"nothing scored yet: echo-os batch --project {project}")]
    frame = scored.merge(lineage, on="artifact_id", how="left")
    out += _groups(frame)
    out += _words(frame, memory)
    dups = scored[(scored["uniqueness"].astype(float) < 100.0 * min(duplicate_distance, 20) / 20.0)]
    if len(dups):
        out.append(Suggestion("duplicates", f"{len(dups)} image(s) are near-duplicates of others (pHash distance "
                                            f"<= {duplicate_distance}); render a new batch or refine them"))
    for component in TECHNICAL:
        if component in scored and np.isfinite(mean := float(scored[component].astype(float).mean())) \
                and mean < WEAK_COMPONENT:
            out.append(Suggestion("component", f"{component} averages {mean:.1f} of 100, the weakest technical score"))
    # The collection's own images: refinement attempts (img2img children) are not part of its weakest set.
    own = frame[~frame["child"].fillna(False).astype(bool)] if "child" in frame else frame
    totals = own["total"].astype(float).sort_values()
    k = max(1, int(np.ceil(0.2 * len(totals))))
    if len(totals) > k and (gap := float(totals.iloc[k:].mean() - totals.iloc[:k].mean())) >= GROUP_GAP:
        out.append(Suggestion("refine", f"the weakest {k} image(s) trail the rest by {gap:.1f} points: "
                                        f"echo-os resonance --project {project} --rounds 3"))
    consistency = scored["style_consistency"].astype(float).dropna()
    if len(consistency) and (below := float((consistency < style_threshold).mean())) > 0.25:
        out.append(Suggestion("style", f"{100 * below:.0f} % of images are below the style threshold "
                                       f"{style_threshold:g}: fix the style or the palette in the spec"))
    if memory is None or memory.count < MIN_STABLE_IMAGES:
        have = memory.count if memory else 0
        out.append(Suggestion("memory", f"the style memory has {have} accepted image(s); {MIN_STABLE_IMAGES - have} "
                                        "more make it stable"))
    return out


def _groups(frame: pd.DataFrame) -> list[Suggestion]:
    found = []
    groups = frame.dropna(subset=["group"]).groupby("group")["total"]
    for name, totals in groups:
        rest = frame.loc[frame["group"] != name, "total"].astype(float)
        if len(totals) < MIN_GROUP or len(rest) < MIN_GROUP:
            continue
        gap = float(totals.mean() - rest.mean())
        if gap >= GROUP_GAP:
            found.append((gap, Suggestion("group", f"{name} scores {gap:.1f} points higher ({totals.mean():.1f} vs "
                                                   f"{rest.mean():.1f}, {len(totals)} vs {len(rest)} images): "
                                                   f"make more of it")))
    return [s for _, s in sorted(found, key=lambda item: -item[0])]


def _words(frame: pd.DataFrame, memory: StyleMemory | None) -> list[Suggestion]:
    if memory is None:
        return []
    prompts = [set(tokenize(p)) for p in frame["prompt"].dropna()]
    share = {w: sum(w in p for p in prompts) / max(1, len(prompts)) for w in memory.learned_modifiers}
    add = [w for w in memory.learned_modifiers if share.get(w, 0.0) < 0.5][:3]
    out = []
    if add:
        lifts = ", ".join(f"'{w}' x{memory.token_stats.get(w, 1.0):.2f}" for w in add)
        out.append(Suggestion("words", f"prompts with these words are accepted more often ({lifts}): add them"))
    drop = [w for w, lift in sorted(memory.token_stats.items(), key=lambda kv: kv[1])
            if lift < LOW_LIFT and memory.token_seen.get(w, 0) >= MIN_GROUP][:3]
    if drop:
        out.append(Suggestion("words", "prompts with " + ", ".join(
            f"'{w}' (x{memory.token_stats[w]:.2f})" for w in drop) + " are accepted less often: drop them"))
    return out
