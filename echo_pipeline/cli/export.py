"""`echo-os export`: a project's images in formats other tools read (`export nft`: an NFT collection).

The store is only read (it may be read-only or full); `workflows/nft_export.py` chooses the tokens
and `artifacts/nft.py` writes the files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from echo_pipeline.cli.common import console, display_path, engine, err_console, print_json
from echo_pipeline.textsafe import safe_text

if TYPE_CHECKING:
    from echo_pipeline.workflows.nft_export import NftExport

app = typer.Typer(help="Export a project's images for other tools.", no_args_is_help=True)

SHOWN_ROWS = 20  # token and skipped tables: the first rows, then a count of the rest


@app.command("nft")
def nft(
    ctx: typer.Context,
    project: Annotated[str, typer.Option("--project", "-p", help="Project name, slug or prefix.")],
    out: Annotated[str, typer.Option("--out", help="Local folder to write the collection into (new or empty; "
                                     "see --overwrite).")],
    base_uri: Annotated[Optional[str], typer.Option(
        "--base-uri", help="Where the images will live, ending with '/': ipfs://<CID>/, ar://<id>/ or https://... "
        "(default: HashLips' placeholder ipfs://NewUriToReplace/; export again once images/ is uploaded).")] = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", help="At most N tokens (1-10000), the best first.")] = None,
    only_accepted: Annotated[bool, typer.Option(
        "--only-accepted", help="Only images the project's style memory accepted.")] = False,
    min_score: Annotated[Optional[float], typer.Option(
        "--min-score", help="Leave out images whose total score is below S (0-100, default 50: what the style "
                            "memory accepts; 0 also admits unscored images).")] = None,
    allow_duplicates: Annotated[bool, typer.Option(
        "--allow-duplicates", help="Keep near-duplicates (pHash distance <= 10 bits); identical pixels are "
                                   "never exported twice.")] = False,
    start: Annotated[int, typer.Option("--start", help="The first token id: 1 (default) or 0.")] = 1,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier export in --out (only a folder holding one).")] = False,
    name: Annotated[Optional[str], typer.Option(
        "--name", help="Collection name, in each token's name '<name> #<n>' (default: the project's).")] = None,
    description: Annotated[Optional[str], typer.Option(
        "--description", help="Every token's description (default: the project's name and intent).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
) -> None:
    """Export a project as an NFT collection: images/<n>.png, metadata/<n>.json (ERC-721 / OpenSea),
    _metadata.json and provenance.json with the provenance hash.

    Tokens are numbered from 1 in order of total score (best first); images below --min-score,
    near-duplicates of a better token and (with --only-accepted) images the style memory did not
    accept are skipped, each with its reason. The collection is written to a temporary folder beside
    --out and renamed into place when complete.
    """
    from echo_pipeline.workflows.nft_export import export_nft

    result = export_nft(engine(ctx), project, out, base_uri=base_uri, limit=limit, start=start,
                        only_accepted=only_accepted, min_score=min_score, allow_duplicates=allow_duplicates,
                        overwrite=overwrite, name=name, description=description)
    if as_json:
        print_json(result.to_dict())
        return
    _print_summary(result)


def _print_summary(result: NftExport) -> None:
    collection, selection = result.collection, result.selection
    console.print(Text.assemble((safe_text(result.collection_name), "bold"),
                                f": {len(collection.tokens)} token(s) from {selection.images} image(s), "
                                f"ids {collection.start}-{collection.start + len(collection.tokens) - 1}, "
                                "best score first"))
    tokens = Table(title="tokens")
    for column in ("token", "artifact", "score", "dna"):
        tokens.add_column(column, no_wrap=True, justify="right" if column in ("token", "score") else "left")
    for entry in collection.tokens[:SHOWN_ROWS]:
        score = "-" if entry["total"] is None else f"{entry['total']:.1f}"
        tokens.add_row(str(entry["token_id"]), entry["artifact_id"], score, entry["dna"][:16] + "…")
    console.print(tokens)
    if len(collection.tokens) > SHOWN_ROWS:
        console.print(f"… and {len(collection.tokens) - SHOWN_ROWS} more (provenance.json lists all)")
    if selection.skipped:
        counts = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in selection.counts().items())
        skipped = Table(title=f"skipped: {counts}")
        skipped.add_column("artifact", no_wrap=True)
        skipped.add_column("reason", no_wrap=True)
        skipped.add_column("why", overflow="fold")
        for item in selection.skipped[:SHOWN_ROWS]:
            skipped.add_row(item.artifact_id, item.reason, Text(safe_text(item.detail)))
        console.print(skipped)
        if len(selection.skipped) > SHOWN_ROWS:
            console.print(f"… and {len(selection.skipped) - SHOWN_ROWS} more (provenance.json lists all)")
    if selection.not_examined:
        console.print(f"{selection.not_examined} more candidate(s) not examined: --limit reached")
    console.print(Text(f"provenance:    {collection.provenance_hash}"), soft_wrap=True)
    console.print(Text(f"written to:    {safe_text(display_path(collection.out_dir))}"), soft_wrap=True)
    if collection.placeholder:
        err_console.print(Text(f"note: image URIs use the placeholder {collection.base_uri}; upload images/ and "
                               "export again with --base-uri ipfs://<CID>/ --overwrite (the provenance hash "
                               "stays the same)"), highlight=False, soft_wrap=True)
