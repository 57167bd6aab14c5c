"""Kafka (real KRaft broker): topics exist; a consumer group commits offsets and a new
consumer in the same group resumes right after them."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from histoprompt.core.names import ALL_TOPICS, TOPIC_INCOMING
from histoprompt.stack import StackHandle

pytestmark = pytest.mark.integration


def _consumer(stack: StackHandle, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=1,
        **stack.settings.kafka_config(),
    )


def _take(consumer: KafkaConsumer, n: int, timeout_s: float = 30.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500, max_records=n - len(got)).values():
            got.extend(r.value for r in records)
    return got


def test_design_topics_exist_with_partitions(stack: StackHandle) -> None:
    admin = KafkaAdminClient(**stack.settings.kafka_config())
    try:
        topics = {t["name"]: t for t in admin.describe_topics(list(ALL_TOPICS))}
    finally:
        admin.close()
    assert set(topics) == set(ALL_TOPICS)
    assert len(topics[TOPIC_INCOMING]["partitions"]) == 4
    assert all(t["error_code"] == 0 for t in topics.values())


def test_consumer_group_resumes_after_committed_offset(stack: StackHandle) -> None:
    topic = f"stack-test-{uuid.uuid4().hex[:8]}"
    group = f"group-{uuid.uuid4().hex[:8]}"
    messages = [f"message-{i}".encode() for i in range(10)]
    producer = KafkaProducer(**stack.settings.kafka_config(), acks="all")
    try:
        for value in messages:
            producer.send(topic, value=value, key=b"k")
        producer.flush(timeout=30)
    finally:
        producer.close()

    first = _consumer(stack, topic, group)
    try:
        head = _take(first, 4)
        assert head == messages[:4]
        first.commit()
        committed = first.committed(TopicPartition(topic, 0))
    finally:
        first.close()
    assert committed == 4

    # A restarted consumer of the same group must neither re-read nor skip a message.
    second = _consumer(stack, topic, group)
    try:
        tail = _take(second, 6)
        assert tail == messages[4:]
        assert second.poll(timeout_ms=1000) == {}
    finally:
        second.close()
