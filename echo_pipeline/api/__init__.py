"""The REST API (`echo-os serve`): a thin FastAPI client of the same services and entry points as the CLI."""
