"""histoprompt.ingest: Kafka S3 events -> WSI tiles read by ranged GETs -> Triton -> results.

No torch here. Entry point: `histoprompt-ingest run` (histoprompt.ingest.cli:app).
"""

from __future__ import annotations

__all__ = ["IngestSettings"]


def __getattr__(name: str) -> object:
    # Lazy, so `histoprompt-ingest --help` and light imports stay fast.
    if name == "IngestSettings":
        from histoprompt.ingest.settings import IngestSettings

        return IngestSettings
    raise AttributeError(name)
