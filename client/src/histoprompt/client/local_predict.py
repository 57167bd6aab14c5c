"""Adapter from `histoprompt predict` to the ingest package's local slide pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from histoprompt.client.errors import ClientError

if TYPE_CHECKING:
    from histoprompt.client.settings import ClientSettings
    from histoprompt.client.slides import SlideFiles

__all__ = ["LocalPrediction", "predict_local"]

INSTALL_HINT = (
    "`histoprompt predict` runs the ingest service's slide reader, tiler and Triton batcher "
    "locally: pip install histoprompt-ingest (in this repo: uv sync --all-packages)"
)


@dataclass(frozen=True)
class LocalPrediction:
    rows: list[dict[str, Any]]
    n_tiles: int
    seconds: float


def predict_local(
    settings: ClientSettings, slide: SlideFiles, gene_sets: list[str]
) -> LocalPrediction:
    """Tile and score a local slide with histoprompt.ingest; ClientError when it is missing."""
    import importlib

    try:
        importlib.import_module("histoprompt.ingest")
    except ImportError as err:
        raise ClientError(INSTALL_HINT) from err
    raise ClientError(f"{INSTALL_HINT}; the installed histoprompt-ingest has no local pipeline yet")
