"""The lineage record stored with every artifact (PNG `echo` chunk and catalog row)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from echo_pipeline import __version__
from echo_pipeline.render.backends.base import BackendDescription
from echo_pipeline.render.requests import RenderRequest

RECORD_SCHEMA = 1


class ArtifactRecord(BaseModel):
    """Everything needed to explain, reproduce and trace an image."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = RECORD_SCHEMA
    artifact_id: str
    project: str = Field(description="project slug (the Dagster partition key)")
    request: RenderRequest
    backend: BackendDescription
    info: dict[str, Any] = Field(default_factory=dict, description="backend-specific lineage details")
    parent_id: str | None = None
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    code_version: str = __version__
    run_id: str | None = Field(default=None, description="Dagster run that produced it, when there was one")
    sha256: str = Field(default="", description="sha256 of the stored PNG bytes")
    width: int = 0
    height: int = 0

    @property
    def seed(self) -> int:
        return self.request.seed
