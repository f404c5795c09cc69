"""ECHO.OS v2: Intent -> Plan -> Task -> Visual -> Reflect.

Domain packages (workflows, render, artifacts, resonance) are plain Python and never import Dagster;
`echo_pipeline.defs` is the thin Dagster layer and `echo_pipeline.cli` (and the REST API to come) are
thin clients of the same services. ARCHITECTURE.md says what may import what.
"""

__version__ = "2.0.0"
