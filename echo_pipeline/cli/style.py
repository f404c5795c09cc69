"""`echo-os style`: list, show and create style presets."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from echo_pipeline.cli.common import console, engine, print_json

app = typer.Typer(help="Style presets: built-in ones and your own.", no_args_is_help=True)


@app.command("list")
def list_styles(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False) -> None:
    """List all styles."""
    styles = engine(ctx).styles.list()
    if as_json:
        print_json([s.model_dump() for s in styles])
        return
    table = Table(title=f"{len(styles)} styles")
    for column in ("name", "source", "prompt", "negative prompt"):
        table.add_column(column)
    for s in styles:
        table.add_row(s.name, s.source, s.prompt, s.negative_prompt)
    console.print(table)


@app.command("show")
def show_style(ctx: typer.Context, name: str, as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False) -> None:
    """Show one style and what it does to a prompt."""
    style = engine(ctx).styles.get(name)
    example, negative = style.apply("warm fractal")
    if as_json:
        print_json(style.model_dump() | {"example": {"prompt": example, "negative_prompt": negative}})
        return
    console.print(f"[bold]{style.name}[/bold] ({style.source})")
    console.print(f"prompt:          {style.prompt}")
    console.print(f"negative prompt: {style.negative_prompt or '-'}")
    console.print(f"example:         'warm fractal' -> {example!r}")


@app.command("create")
def create_style(
    ctx: typer.Context,
    name: str,
    description: Annotated[str, typer.Argument(help="Words the style adds; put {prompt} where the prompt goes, "
                                               "otherwise they are appended.")],
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt the style adds.")] = "",
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite your own style of that name.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Create a user style (kept in configs/styles/user.json; built-in presets are never edited)."""
    library = engine(ctx).styles
    style = library.create(name, description, negative, replace=replace)
    if as_json:
        print_json(style.model_dump())
    else:
        console.print(f"Created style {style.name!r} in {library.user_file}")
