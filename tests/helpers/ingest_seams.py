"""What unit tests of the ingest service feed its in-memory seams: settings that retry and
poll at once, and incoming-topic messages carrying an S3 upload event."""

from __future__ import annotations

import json
import time
from typing import Any

from histoprompt.core import names
from histoprompt.core.schemas import S3Event
from histoprompt.ingest.ports import Message
from histoprompt.ingest.settings import IngestSettings


def fast_settings(**kw: Any) -> IngestSettings:
    """Bucket `b`, millisecond retries and polls, a free metrics port; `kw` overrides."""
    base: dict[str, Any] = {
        "slides_bucket": "b",
        "ingest_retry_base_s": 0.001,
        "ingest_poll_timeout_s": 0.01,
        "ingest_metrics_port": 0,
    }
    return IngestSettings.model_validate(base | kw)


def event_value(key: str = "x/slide.svs", bucket: str = "b") -> bytes:
    """An S3 upload event of `bucket/key`, as the incoming topic carries it."""
    return json.dumps(S3Event.make(bucket, key, 1, "e")).encode()


def incoming_message(value: bytes | None, offset: int = 0, partition: int = 0) -> Message:
    """`value` on the incoming topic, key `k`, stamped now."""
    return Message(value, b"k", names.TOPIC_INCOMING, partition, offset, int(time.time() * 1000))
