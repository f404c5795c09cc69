"""The suggestion engine: each suggestion follows from numbers in the scores and the memory."""

from __future__ import annotations

import pandas as pd

from echo_pipeline.resonance.memory_system import StyleMemory
from echo_pipeline.resonance.suggestions import suggest


def _scores(rows):
    base = {"sharpness": 70.0, "contrast": 70.0, "colourfulness": 70.0, "entropy": 70.0, "exposure": 70.0,
            "noise": 90.0, "style_consistency": 90.0, "uniqueness": 100.0}
    return pd.DataFrame([base | row for row in rows])


def test_suggestions_follow_from_the_numbers():
    rows = [{"artifact_id": f"w{k}", "total": 85.0} for k in range(6)]
    rows += [{"artifact_id": f"c{k}", "total": 65.0, "colourfulness": 20.0} for k in range(6)]
    rows[-1] |= {"uniqueness": 10.0}  # a near-duplicate
    lineage = pd.DataFrame({"artifact_id": [r["artifact_id"] for r in rows],
                            "prompt": ["warm fractal golden"] * 6 + ["cool fractal"] * 6,
                            "group": ["warm palette"] * 6 + ["cool palette"] * 6})
    memory = StyleMemory(project="p", count=12, learned_modifiers=["golden", "glow"],
                         token_stats={"golden": 1.6, "glow": 1.3, "murky": 0.5}, token_seen={"murky": 4})
    found = suggest("p", _scores(rows), memory, lineage, style_threshold=60.0, duplicate_distance=10)
    texts = [s.text for s in found]
    assert texts[0].startswith("warm palette scores 20.0 points higher (85.0 vs 65.0, 6 vs 6 images)")
    assert any("'glow' x1.30" in t and "golden" not in t.split("(")[1] for t in texts)  # golden is in most prompts
    assert any("'murky' (x0.50)" in t and "drop" in t for t in texts)
    assert any(t.startswith("1 image(s) are near-duplicates") for t in texts)
    assert "colourfulness averages 45.0 of 100, the weakest technical score" in texts  # (6 x 70 + 6 x 20) / 12
    assert not any(t.startswith("sharpness") for t in texts)
    assert any(t.startswith("the weakest 3 image(s) trail the rest by") for t in texts)
    assert any("38 more make it stable" in t for t in texts)


def test_nothing_scored_says_what_to_do():
    empty = pd.DataFrame(columns=["artifact_id", "total", "uniqueness", "style_consistency"])
    (only,) = suggest("p", empty, None, pd.DataFrame(columns=["artifact_id", "prompt", "group"]),
                      style_threshold=60, duplicate_distance=10)
    assert "echo-os batch --project p" in only.text
