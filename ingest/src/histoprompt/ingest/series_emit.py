"""The series assembler's emitter: a SeriesReady onto the incoming topic, acknowledged by all
replicas (kafka-python, imported when first used)."""

from __future__ import annotations

from typing import Any

from histoprompt.core import names
from histoprompt.ingest.settings import IngestSettings


class KafkaEmitter:
    """Publishes SeriesReady values on the incoming topic, acknowledged by all replicas."""

    def __init__(self, settings: IngestSettings) -> None:
        self._settings = settings
        self._producer: Any = None

    def __call__(self, key: bytes, value: bytes) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        from histoprompt.core.errors import TransientError

        if self._producer is None:
            self._producer = KafkaProducer(acks="all", **self._settings.kafka_config())
        try:
            self._producer.send(names.TOPIC_INCOMING, key=key, value=value).get(timeout=30)
        except KafkaError as err:
            raise TransientError(
                "publishing a series to the incoming topic failed", code="kafka_unavailable"
            ) from err

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
