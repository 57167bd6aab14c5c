"""Gene sets a user can name: the bundled Hallmarks plus the HISTOPROMPT_GENE_SETS_GMT file."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from histoprompt.client.settings import ClientSettings
    from histoprompt.core.genesets import GeneSetCollection

__all__ = ["complete_gene_set", "gene_set_catalog"]


def gene_set_catalog(settings: ClientSettings) -> GeneSetCollection:
    """Hallmarks, merged with the user GMT when one is set (the user's set wins a clash)."""
    from histoprompt.core.errors import ConfigError
    from histoprompt.core.genesets import GeneSetCollection, load_hallmark

    hallmark = load_hallmark()
    path = settings.gene_sets_gmt
    if path is None:
        return hallmark
    if not path.is_file():
        raise ConfigError(f"HISTOPROMPT_GENE_SETS_GMT={path} does not exist")
    return hallmark.merged(GeneSetCollection.from_gmt(path))


def complete_gene_set(incomplete: str) -> list[str]:
    """Shell completion for set names: `HALLMARK_E2...` or the short `E2...` form."""
    from histoprompt.core.genesets import load_hallmark

    out = []
    for name in load_hallmark():
        short = name.removeprefix("HALLMARK_")
        if name.startswith(incomplete):
            out.append(name)
        elif short.startswith(incomplete):
            out.append(short)
    return out
