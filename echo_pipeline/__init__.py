"""ECHO.OS v2: Intent -> Plan -> Task -> Visual -> Reflect.

Domain packages (workflows, render, artifacts, resonance) are plain Python and never import Dagster;
`echo_pipeline.defs` is the thin Dagster layer and `echo_pipeline.cli` / `echo_pipeline.api` are thin
clients of the same services.
"""

__version__ = "2.0.0"
