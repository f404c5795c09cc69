"""The `echo-os` command line: a thin Typer client of the creative engine."""
