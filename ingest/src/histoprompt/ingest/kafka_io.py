"""The Kafka EventSource and ResultSink (kafka-python, imported lazily: `--help` stays fast)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from histoprompt.core import names
from histoprompt.core.errors import TransientError
from histoprompt.core.schemas import DlqEvent, ResultEvent
from histoprompt.ingest.logs import get_logger
from histoprompt.ingest.ports import Message, commit_plan
from histoprompt.ingest.settings import IngestSettings

# Every client call is bounded: kafka-python's defaults wait 60 s for a send's metadata and
# 30 s for a commit or an offset lookup, which a broker that is down spends in full.
SEND_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
COMMIT_TIMEOUT_S = 10.0
LAG_TIMEOUT_S = 2.0
METADATA_TIMEOUT_S = 10.0


def _rebalance_listener() -> Any:
    """The rebalance listener: logs what moved. It runs on kafka-python's network thread, so
    it only records; `settle` asks the consumer what it owns when it commits."""
    from kafka import ConsumerRebalanceListener

    class Rebalances(_Rebalances, ConsumerRebalanceListener):  # type: ignore[misc]
        pass

    return Rebalances()


class _Rebalances:
    revocations = 0

    def on_partitions_revoked(self, revoked: set[Any]) -> None:
        self.revocations += 1
        get_logger().info(
            "partitions revoked", extra={"status": "rebalance", "partition": _parts(revoked)}
        )

    def on_partitions_assigned(self, assigned: set[Any]) -> None:
        get_logger().info(
            "partitions assigned", extra={"status": "rebalance", "partition": _parts(assigned)}
        )

    def on_partitions_lost(self, lost: set[Any]) -> None:
        self.on_partitions_revoked(lost)


def _parts(tps: set[Any]) -> list[int]:
    return sorted(tp.partition for tp in tps)


def _await_topic_metadata(consumer: Any, topic: str) -> None:
    """The subscribed topic's partitions, fetched before the first poll joins the group.

    kafka-python joins without waiting for them; a leader that assigns first logs "No
    partition metadata for topic" and hands its group nothing (dpkp/kafka-python#2377; the
    warning showed in a CI run's log). Its public `partitions_for_topic` waits without a
    bound, so this awaits the same refresh on kafka-python's network thread for at most
    METADATA_TIMEOUT_S; a broker that does not answer leaves the join to kafka-python's own
    metadata retries."""
    from kafka.errors import KafkaError

    try:
        future = consumer._cluster.request_update()
        consumer._net.run(consumer._manager.wait_for, future, int(METADATA_TIMEOUT_S * 1000))
    except KafkaError as err:
        get_logger().warning(
            "topic metadata not fetched before the group join",
            extra={"topic": topic, "code": type(err).__name__},
        )


class KafkaEventSource:
    """The incoming topic in the service's consumer group; offsets committed by `settle`.

    While a batch runs the assigned partitions are paused and `keep_alive` goes on polling,
    so a slide longer than max.poll.interval keeps its member in the group (no rebalance,
    no second delivery while the first still runs)."""

    def __init__(self, settings: IngestSettings, topic: str = names.TOPIC_INCOMING) -> None:
        from kafka import KafkaConsumer

        extra: dict[str, Any] = {}
        if settings.ingest_group_instance_id:
            extra["group_instance_id"] = settings.ingest_group_instance_id
        self._consumer = KafkaConsumer(
            group_id=settings.ingest_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.ingest_concurrency,
            max_poll_interval_ms=int(settings.ingest_max_poll_interval_s * 1000),
            session_timeout_ms=int(settings.ingest_session_timeout_s * 1000),
            # kafka-python's default 3 s, or a quarter of a shorter session; the heartbeat is
            # also when it checks max.poll.interval.
            heartbeat_interval_ms=int(min(3.0, settings.ingest_session_timeout_s / 4) * 1000),
            client_id=f"histoprompt-ingest-{socket.gethostname()}",
            **extra,
            **settings.kafka_config(),
        )
        self.rebalances = _rebalance_listener()
        self._consumer.subscribe([topic], listener=self.rebalances)
        _await_topic_metadata(self._consumer, topic)

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Message(m.value, m.key, m.topic, m.partition, m.offset, m.timestamp or 0)
            for batch in polled.values()
            for m in batch
        ]

    def hold(self) -> None:
        self._consumer.pause(*self._consumer.assignment())

    def keep_alive(self, timeout_s: float) -> None:
        polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        # Only partitions assigned since `hold` fetch: put their messages back and hold them.
        for tp, records in polled.items():
            self._consumer.seek(tp, min(r.offset for r in records))
        self.hold()

    def settle(self, batch: Sequence[Message], handled: Sequence[Message]) -> list[Message]:
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata, TopicPartition

        owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        plan = commit_plan(batch, handled, owned)
        committed: list[Message] = []
        try:
            if plan.commit:
                self._consumer.commit(
                    {
                        TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                        for (t, p), o in plan.commit.items()
                    },
                    timeout_ms=int(COMMIT_TIMEOUT_S * 1000),
                )
                committed = [
                    m for m in batch if m.offset < plan.commit.get((m.topic, m.partition), -1)
                ]
        except KafkaError as err:  # CommitFailedError among them
            # A rebalance between the ownership check and the commit: the new owner
            # redelivers; at-least-once holds.
            get_logger().warning("commit failed", extra={"code": type(err).__name__})
        # Position every owned partition of the batch at its next message: a rebalance
        # that kept a partition may have reset it to the committed offset meanwhile.
        nxt = dict(plan.commit) | plan.rewind
        for (topic, partition), offset in nxt.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition), offset)
            except KafkaError:  # IllegalStateError: revoked since the commit
                continue
        self._consumer.resume(*self._consumer.paused())
        return committed

    def lag(self) -> int | None:
        try:
            parts = self._consumer.assignment()
            if not parts:
                # No partitions (lost in a rebalance): 0, so the gauge drops rather than
                # keeping a stale value that sums across replicas would double-count.
                return 0
            ms = int(LAG_TIMEOUT_S * 1000)
            ends = self._consumer.end_offsets(list(parts), timeout_ms=ms)
            return int(
                sum(max(0, ends[tp] - self._consumer.position(tp, timeout_ms=ms)) for tp in parts)
            )
        except Exception as err:  # lag is best-effort; never stop consuming for it
            get_logger().debug("lag unavailable", extra={"code": type(err).__name__})
            return None

    def close(self) -> None:
        self._consumer.close(autocommit=False, timeout_ms=int(CLOSE_TIMEOUT_S * 1000))


class KafkaResultSink:
    """Result and DLQ events, each acknowledged by all in-sync replicas before returning."""

    def __init__(self, settings: IngestSettings) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            acks="all",
            linger_ms=5,
            max_block_ms=int(SEND_TIMEOUT_S * 1000),
            **settings.kafka_config(),
        )

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
