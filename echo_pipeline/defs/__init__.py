"""The Dagster layer: thin definitions over the plain-Python pipeline in echo_pipeline.workflows."""
