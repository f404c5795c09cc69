"""ECHO.OS v2: Intent -> Plan -> Task -> Visual -> Reflect.

Domain packages (workflows, render, artifacts, resonance) are plain Python and never import Dagster;
`echo_pipeline.defs` is the thin Dagster layer; `echo_pipeline.cli` and `echo_pipeline.api` (the REST API)
are thin clients of the same services; `echo_pipeline.media` makes the media files. ARCHITECTURE.md
says what may import what.
"""

__version__ = "2.0.0"
