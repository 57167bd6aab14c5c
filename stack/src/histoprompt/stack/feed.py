"""Feed the local stack from outside: upload slides, publish their S3 events, watch topics.

The path a scanner gateway with bucket notifications takes. Used by the ingest demo, the
integration tests and the benchmarks; Kafka and S3 clients only (no ingest import).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from histoprompt.core import names
from histoprompt.core.schemas import (
    DlqEvent,
    ResultEvent,
    S3Event,
    SeriesInstance,
    SeriesManifest,
    slide_id_for,
)

if TYPE_CHECKING:
    from minio import Minio

    from histoprompt.core.settings import ConnectionSettings


@dataclass(frozen=True)
class Uploaded:
    """The object whose event triggers processing (a series: its manifest)."""

    bucket: str
    key: str
    etag: str
    size: int
    member_keys: tuple[str, ...] = ()

    @property
    def slide_id(self) -> str:
        return slide_id_for(self.bucket, self.key, self.etag)


def put_bytes(client: Minio, bucket: str, key: str, data: bytes) -> Uploaded:
    res = client.put_object(bucket, key, io.BytesIO(data), len(data))
    return Uploaded(bucket, key, (res.etag or "").strip('"'), len(data))


def put_file(client: Minio, bucket: str, key: str, path: Path) -> Uploaded:
    res = client.fput_object(bucket, key, str(path))
    return Uploaded(bucket, key, (res.etag or "").strip('"'), path.stat().st_size)


def upload_series(
    client: Minio, bucket: str, prefix: str, paths: Sequence[Path], *, skip: Iterable[int] = ()
) -> Uploaded:
    """Instances as `<prefix>/instance-NNNN.dcm`, then manifest.json last.

    `skip`: instance indices listed in the manifest but not uploaded (a broken series).
    """
    skipped = set(skip)
    members = []
    for i, path in enumerate(paths):
        key = f"{prefix.strip('/')}/instance-{i:04d}.dcm"
        if i not in skipped:
            put_file(client, bucket, key, path)
        members.append(SeriesInstance(key=key, size=path.stat().st_size))
    data = SeriesManifest(instances=members).model_dump_json(by_alias=True).encode()
    up = put_bytes(client, bucket, f"{prefix.strip('/')}/{names.SERIES_MANIFEST}", data)
    return Uploaded(up.bucket, up.key, up.etag, up.size, tuple(m.key for m in members))


def event_bytes(up: Uploaded, event_name: str = "s3:ObjectCreated:Put") -> bytes:
    return json.dumps(S3Event.make(up.bucket, up.key, up.size, up.etag, event_name)).encode()


def make_producer(settings: ConnectionSettings) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(acks="all", **settings.kafka_config())


def publish(producer: Any, value: bytes, key: bytes | None = None) -> None:
    producer.send(names.TOPIC_INCOMING, key=key, value=value).get(timeout=30)


def publish_upload(producer: Any, up: Uploaded, *, with_members: bool = True) -> None:
    """The notifications a bucket would send: members first (skipped), then the slide."""
    if with_members:
        for key in up.member_keys:
            member = Uploaded(up.bucket, key, "0", 0)
            publish(producer, event_bytes(member), key.encode())
    publish(producer, event_bytes(up), up.key.encode())


class TopicWatcher:
    """Reads a topic from its end at creation time (no consumer group)."""

    def __init__(self, settings: ConnectionSettings, topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._consumer = KafkaConsumer(enable_auto_commit=False, **settings.kafka_config())
        parts = self._consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        self._consumer.seek_to_end(*tps)
        for tp in tps:
            self._consumer.position(tp)  # resolve the end offset now, not at first poll
        self.seen: list[tuple[bytes | None, bytes]] = []

    def poll(self, timeout_s: float = 0.5) -> list[tuple[bytes | None, bytes]]:
        got = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        new = [(m.key, m.value) for batch in got.values() for m in batch]
        self.seen.extend(new)
        return new

    def wait_for(
        self, done: Callable[[list[tuple[bytes | None, bytes]]], bool], timeout_s: float
    ) -> list[tuple[bytes | None, bytes]]:
        deadline = time.monotonic() + timeout_s
        while not done(self.seen) and time.monotonic() < deadline:
            self.poll()
        return self.seen

    def close(self) -> None:
        self._consumer.close()


def results_of(seen: list[tuple[bytes | None, bytes]]) -> list[ResultEvent]:
    return [ResultEvent.model_validate_json(v) for _, v in seen]


def dlq_of(seen: list[tuple[bytes | None, bytes]]) -> list[DlqEvent]:
    return [DlqEvent.model_validate_json(v) for _, v in seen]


def skip_group_to_end(settings: ConnectionSettings, group_id: str) -> None:
    """Commit the incoming topic's end offsets for `group_id`: a new group starts from now."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(group_id=group_id, enable_auto_commit=False, **settings.kafka_config())
    try:
        parts = consumer.partitions_for_topic(names.TOPIC_INCOMING) or {0}
        tps = [TopicPartition(names.TOPIC_INCOMING, p) for p in sorted(parts)]
        ends = consumer.end_offsets(tps)
        consumer.commit({tp: OffsetAndMetadata(ends[tp], "", -1) for tp in tps})
    finally:
        consumer.close()
