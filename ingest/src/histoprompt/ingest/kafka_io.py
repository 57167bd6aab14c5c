"""The Kafka EventSource and ResultSink (kafka-python, imported lazily: `--help` stays fast)."""

from __future__ import annotations

from collections.abc import Sequence

from histoprompt.core import names
from histoprompt.core.errors import TransientError
from histoprompt.core.schemas import DlqEvent, ResultEvent
from histoprompt.ingest.logs import get_logger
from histoprompt.ingest.ports import Message, commit_plan
from histoprompt.ingest.settings import IngestSettings

SEND_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0


class KafkaEventSource:
    """The incoming topic in the service's consumer group; offsets committed by `settle`."""

    def __init__(self, settings: IngestSettings, topic: str = names.TOPIC_INCOMING) -> None:
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(
            topic,
            group_id=settings.ingest_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.ingest_concurrency,
            max_poll_interval_ms=int(settings.ingest_max_poll_interval_s * 1000),
            **settings.kafka_config(),
        )

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Message(m.value, m.key, m.topic, m.partition, m.offset, m.timestamp or 0)
            for batch in polled.values()
            for m in batch
        ]

    def settle(self, batch: Sequence[Message], handled: Sequence[Message]) -> None:
        from kafka.structs import OffsetAndMetadata, TopicPartition

        plan = commit_plan(batch, handled)
        for (topic, partition), offset in plan.rewind.items():
            # Without the seek a running consumer would go on past the released message.
            self._consumer.seek(TopicPartition(topic, partition), offset)
        if plan.commit:
            self._consumer.commit(
                {
                    TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                    for (t, p), o in plan.commit.items()
                }
            )

    def lag(self) -> int | None:
        try:
            parts = self._consumer.assignment()
            if not parts:
                # No partitions (lost in a rebalance): 0, so the gauge drops rather than
                # keeping a stale value that sums across replicas would double-count.
                return 0
            ends = self._consumer.end_offsets(list(parts))
            return int(sum(max(0, ends[tp] - self._consumer.position(tp)) for tp in parts))
        except Exception as err:  # lag is best-effort; never stop consuming for it
            get_logger().debug("lag unavailable", extra={"code": type(err).__name__})
            return None

    def close(self) -> None:
        self._consumer.close(autocommit=False, timeout_ms=int(CLOSE_TIMEOUT_S * 1000))


class KafkaResultSink:
    """Result and DLQ events, each acknowledged by all in-sync replicas before returning."""

    def __init__(self, settings: IngestSettings) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(acks="all", linger_ms=5, **settings.kafka_config())

    def publish_result(self, event: ResultEvent) -> None:
        self._send(names.TOPIC_RESULTS, event.slide_id.encode(), event.to_json())

    def publish_dlq(self, event: DlqEvent, key: bytes | None) -> None:
        self._send(names.TOPIC_DLQ, key, event.to_json())

    def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        from kafka.errors import KafkaError

        try:
            self._producer.send(topic, key=key, value=value).get(timeout=SEND_TIMEOUT_S)
        except KafkaError as err:
            raise TransientError(f"publishing to {topic} failed", code="kafka_unavailable") from err

    def close(self) -> None:
        self._producer.close(timeout=CLOSE_TIMEOUT_S)
