"""The ingest consumer joins its group with the incoming topic's partitions in hand.

kafka-python joins without waiting for them; a group leader that assigned before they
arrived handed out nothing (dpkp/kafka-python#2377; its warning showed in a CI run's log).
Checked against the real broker, for several fresh groups."""

from __future__ import annotations

import time
import uuid

import pytest

from histoprompt.core.names import TOPIC_INCOMING
from histoprompt.ingest.kafka_io import KafkaEventSource
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack import StackHandle

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_histoprompt_env")]


def test_a_new_member_knows_the_topic_before_it_joins_and_is_assigned_all_of_it(
    stack: StackHandle,
) -> None:
    for _ in range(3):
        group = f"join-{uuid.uuid4().hex[:8]}"
        settings = IngestSettings.load(stack.env_file, ingest_group_id=group)
        source = KafkaEventSource(settings)
        try:
            consumer = source._consumer
            # Before the first poll (the join): the metadata the leader assigns from.
            known = consumer._cluster.partitions_for_topic(TOPIC_INCOMING)
            assert known, f"no partition metadata for {TOPIC_INCOMING} before the join"
            deadline = time.monotonic() + 30.0
            while not consumer.assignment() and time.monotonic() < deadline:
                source.poll(1, 0.5)
            assert {tp.partition for tp in consumer.assignment()} == set(known)
        finally:
            source.close()
