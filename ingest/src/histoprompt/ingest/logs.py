"""Structured JSON logs. Records carry slide_id and codes; never keys or patient data."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

LOGGER = "histoprompt.ingest"
_FIELDS = (
    "slide_id",
    "status",
    "code",
    "n_tiles",
    "seconds",
    "attempt",
    "partition",
    "offset",
    "model_version",
    "format",
    "pyramid_level",
    "gets",
)
# The formatter's own keys: an `extra` of the same name must never overwrite them (a slide's
# pyramid level once replaced the log level).
_RESERVED = frozenset({"ts", "level", "logger", "msg", "error"})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            if name not in _RESERVED and hasattr(record, name):
                doc[name] = getattr(record, name)
        if record.exc_info and record.exc_info[1] is not None:
            doc["error"] = type(record.exc_info[1]).__name__
        return json.dumps(doc, default=str)


def configure(level: str = "INFO") -> logging.Logger:
    """JSON lines on stderr for the service logger (idempotent)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER)
