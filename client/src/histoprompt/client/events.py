"""Reading result events from `histoprompt.slides.results` and publishing S3 events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from histoprompt.core import names

if TYPE_CHECKING:
    from kafka import KafkaConsumer

    from histoprompt.client.settings import ClientSettings
    from histoprompt.core.schemas import ResultEvent

__all__ = ["ResultFollower", "event_row", "publish_s3_event"]


def event_row(ev: ResultEvent) -> dict[str, Any]:
    """One table row for a result event."""
    return {
        "slide": ev.slide_id,
        "status": ev.status,
        "tiles": ev.n_tiles,
        "seconds": round(ev.seconds.total, 2),
        "model": f"{ev.model.name}:{ev.model.version}",
        "error": ev.error.code if ev.error else None,
    }


class ResultFollower:
    """All partitions of the results topic, from the start or from now (no consumer group)."""

    def __init__(self, settings: ClientSettings, from_beginning: bool) -> None:
        from kafka import TopicPartition

        from histoprompt.client.services import kafka_consumer, kafka_errors

        self._settings = settings
        self._consumer: KafkaConsumer = kafka_consumer(settings)
        with kafka_errors(settings, f"reading {names.TOPIC_RESULTS}"):
            parts = self._consumer.partitions_for_topic(names.TOPIC_RESULTS) or set()
            self._tps = [TopicPartition(names.TOPIC_RESULTS, p) for p in sorted(parts)]
            self._consumer.assign(self._tps)
            if from_beginning:
                self._consumer.seek_to_beginning()
            else:
                self._consumer.seek_to_end()
            # Resolve positions now, so events published after this call are never missed.
            for tp in self._tps:
                self._consumer.position(tp)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> ResultFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self, timeout_s: float) -> list[ResultEvent]:
        """Events that arrive within `timeout_s`; malformed values are skipped."""
        from histoprompt.client.services import kafka_errors
        from histoprompt.core.schemas import ResultEvent

        out: list[ResultEvent] = []
        with kafka_errors(self._settings, f"reading {names.TOPIC_RESULTS}"):
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        for records in batches.values():
            for rec in records:
                try:
                    out.append(ResultEvent.model_validate_json(rec.value))
                except ValueError:
                    continue
        return out

    def backlog(self) -> list[ResultEvent]:
        """Everything up to the end offsets as of now (for `watch --once`)."""
        from histoprompt.client.services import kafka_errors

        with kafka_errors(self._settings, f"reading {names.TOPIC_RESULTS}"):
            end = self._consumer.end_offsets(self._tps)
        events: list[ResultEvent] = []
        deadline = time.monotonic() + max(30.0, self._settings.connect_timeout * 6)
        while any(self._consumer.position(tp) < end[tp] for tp in self._tps):
            if time.monotonic() > deadline:
                break
            events.extend(self.poll(0.5))
        return events

    def wait_for(self, slide_id: str, timeout_s: float) -> ResultEvent | None:
        """The first result event for `slide_id`, or None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            for ev in self.poll(min(1.0, left)):
                if ev.slide_id == slide_id:
                    return ev
        return None

    def stream(self) -> Iterator[ResultEvent]:
        """Events as they arrive, until the caller stops (Ctrl-C)."""
        while True:
            yield from self.poll(1.0)


def publish_s3_event(settings: ClientSettings, bucket: str, key: str, size: int, etag: str) -> None:
    """Publish the AWS/MinIO-format notification the bucket would have sent (key = object key)."""
    from histoprompt.client.services import kafka_errors, kafka_producer
    from histoprompt.core.schemas import S3Event

    producer = kafka_producer(settings)
    try:
        with kafka_errors(settings, f"publishing to {names.TOPIC_INCOMING}"):
            value = json.dumps(S3Event.make(bucket, key, size, etag)).encode()
            producer.send(names.TOPIC_INCOMING, key=key.encode(), value=value).get(
                timeout=settings.connect_timeout * 6
            )
            producer.flush()
    finally:
        producer.close()
