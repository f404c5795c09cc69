"""Resonance: score images, learn the project's style, feed both back into generation.

Plain Python (no Dagster, no torch at import time): `embedders` (style vectors), `quality_assessor`
(technical, style-consistency, uniqueness and total scores), `memory_system` (the learned style memory
and the stored score table).
"""

from echo_pipeline.resonance.embedders import StyleDescriptor, available_embedders, get_embedder
from echo_pipeline.resonance.memory_system import (
    MIN_STABLE_IMAGES,
    MemorySnapshot,
    StyleMemory,
    learn_style,
    load_memory,
    load_scores,
    save_memory,
    save_scores,
)
from echo_pipeline.resonance.quality_assessor import (
    QualityAssessor,
    near_duplicates,
    style_consistency,
    technical_scores,
)

__all__ = [
    "MIN_STABLE_IMAGES",
    "MemorySnapshot",
    "QualityAssessor",
    "StyleDescriptor",
    "StyleMemory",
    "available_embedders",
    "get_embedder",
    "learn_style",
    "load_memory",
    "load_scores",
    "near_duplicates",
    "save_memory",
    "save_scores",
    "style_consistency",
    "technical_scores",
]
