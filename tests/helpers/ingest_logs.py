"""The ingest service's JSON log lines, captured in memory for assertions."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from histoprompt.ingest.logs import LOGGER, JsonFormatter


@contextmanager
def capture_ingest_logs() -> Iterator[io.StringIO]:
    """Every line the ingest logger writes while open, formatted as the service writes it."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield buf
    finally:
        logger.removeHandler(handler)
