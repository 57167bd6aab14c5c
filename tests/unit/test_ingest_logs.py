"""The ingest service's JSON log lines: the log level is never overwritten by a slide field."""

from __future__ import annotations

import json
import logging

from histoprompt.ingest.logs import JsonFormatter


def _line(**extra: object) -> dict[str, object]:
    record = logging.LogRecord(
        "histoprompt.ingest", logging.INFO, __file__, 1, "slide done", (), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    doc: dict[str, object] = json.loads(JsonFormatter().format(record))
    return doc


def test_pyramid_level_has_its_own_key_and_the_log_level_stays() -> None:
    doc = _line(slide_id="abc", pyramid_level=2, n_tiles=7)
    assert doc["level"] == "info"
    assert doc["pyramid_level"] == 2
    assert doc["slide_id"] == "abc" and doc["n_tiles"] == 7


def test_an_extra_named_level_cannot_replace_the_log_level() -> None:
    doc = _line(level=2)
    assert doc["level"] == "info"
