"""Artifact storage: PNGs with A1111/echo metadata, thumbnails and a parquet catalog on fsspec."""

from echo_pipeline.artifacts.metadata import format_infotext, parse_infotext
from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.artifacts.storage import ArtifactStore

__all__ = ["ArtifactRecord", "ArtifactStore", "format_infotext", "parse_infotext"]
