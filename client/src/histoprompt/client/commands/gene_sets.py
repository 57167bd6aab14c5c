"""`histoprompt gene-sets list|show`: the gene sets a query can name."""

from __future__ import annotations

from typing import Annotated

import typer

from histoprompt.client.catalog import complete_gene_set
from histoprompt.client.commands import JsonFlag
from histoprompt.client.state import get_state

app = typer.Typer(
    help=(
        "Gene sets a query can name: bundled MSigDB Hallmarks plus your GMT.\n\n"
        "Example: histoprompt gene-sets show HYPOXIA"
    ),
    no_args_is_help=True,
)


@app.command("list")
def list_sets(
    ctx: typer.Context,
    contains: Annotated[
        str | None, typer.Option("--contains", "-c", help="Only names containing this text.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List gene sets with their sizes and sources.

    \b
    Example: histoprompt gene-sets list --contains INTERFERON
    """
    from histoprompt.client.catalog import gene_set_catalog

    state = get_state(ctx)
    catalog = gene_set_catalog(state.settings())
    needle = (contains or "").upper()
    rows = [
        {"name": name, "genes": len(gs.genes), "description": gs.description}
        for name, gs in catalog.items()
        if needle in name.upper()
    ]
    state.output(as_json).table(rows, ["name", "genes", "description"], title=catalog.source)


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            help="Set name; the HALLMARK_ prefix is optional.", autocompletion=complete_gene_set
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Show one gene set's genes (exit 2 with suggestions for an unknown name).

    \b
    Example: histoprompt gene-sets show E2F_TARGETS
    """
    from histoprompt.client.catalog import gene_set_catalog

    state = get_state(ctx)
    gs = gene_set_catalog(state.settings()).lookup(name)
    out = state.output(as_json)
    if out.json_mode:
        out.json({"name": gs.name, "description": gs.description, "genes": list(gs.genes)})
    else:
        out.line(f"{gs.name} ({len(gs.genes)} genes) {gs.description}".rstrip())
        out.line(" ".join(gs.genes))
