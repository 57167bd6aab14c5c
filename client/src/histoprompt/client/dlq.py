"""The dead-letter topic for operators: read its records, and replay them to the incoming
topic at most once each.

A replay re-sends, for each slide of a record, an event for the object as the bucket holds
it now (a fixed slide is a new object version: new etag, new slide_id), or an assembled
series' SeriesReady as it was. It then writes a marker,
`s3://<results-bucket>/dlq/replayed/<partition>/<offset>.json`, and a record with a marker
is never sent again. The marker is written after the send: a replay cut short between the
two sends that record again next time, which costs nothing, since the results store
commits a slide's result only once (a second delivery is `skipped_duplicate`).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from histoprompt.core import names
from histoprompt.core.schemas import DlqEvent, DlqSlide, S3Event, slide_id_for, utcnow

if TYPE_CHECKING:
    from kafka import KafkaProducer
    from minio import Minio

    from histoprompt.client.settings import ClientSettings

MARKERS = "dlq/replayed"


@dataclass(frozen=True)
class DlqRecord:
    """One record of the DLQ topic: where it is, and what it says."""

    partition: int
    offset: int
    event: DlqEvent

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def slide_ids(self) -> list[str]:
        return [s.slide_id for s in self.event.slides]


def marker_key(record: DlqRecord) -> str:
    return f"{MARKERS}/{record.partition}/{record.offset}.json"


def read_records(settings: ClientSettings) -> list[DlqRecord]:
    """Every record the DLQ topic holds now (all partitions, up to their end offsets);
    a value that is not a DlqEvent is skipped."""
    from kafka import TopicPartition

    from histoprompt.client.services import kafka_consumer, kafka_errors

    consumer = kafka_consumer(settings)
    out: list[DlqRecord] = []
    try:
        with kafka_errors(settings, f"reading {names.TOPIC_DLQ}"):
            parts = consumer.partitions_for_topic(names.TOPIC_DLQ) or set()
            tps = [TopicPartition(names.TOPIC_DLQ, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning()
            end = consumer.end_offsets(tps)
            deadline = time.monotonic() + max(30.0, settings.connect_timeout * 6)
            while any(consumer.position(tp) < end[tp] for tp in tps):
                if time.monotonic() > deadline:
                    break
                for records in consumer.poll(timeout_ms=500).values():
                    parsed = (_parsed(r.partition, r.offset, r.value) for r in records)
                    out.extend(r for r in parsed if r is not None)
    finally:
        consumer.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))


def _parsed(partition: int, offset: int, value: bytes | None) -> DlqRecord | None:
    try:
        return DlqRecord(partition, offset, DlqEvent.model_validate_json(value or b""))
    except ValueError:
        return None


def replayed_refs(client: Minio, bucket: str) -> set[str]:
    """`partition:offset` of every record replayed before (one listing of the markers)."""
    from histoprompt.core.results import s3_errors

    refs = set()
    with s3_errors("listing DLQ replay markers"):
        for obj in client.list_objects(bucket, prefix=MARKERS + "/", recursive=True):
            part, _, name = (obj.object_name or "").removeprefix(MARKERS + "/").partition("/")
            refs.add(f"{part}:{name.removesuffix('.json')}")
    return refs


def select(
    records: list[DlqRecord], reason: str | None = None, slide: str | None = None
) -> list[DlqRecord]:
    return [
        r
        for r in records
        if (reason is None or r.event.error.code == reason)
        and (slide is None or slide in r.slide_ids)
    ]


@dataclass(frozen=True)
class Outcome:
    """What a replay did (or, dry, would do) with one slide of one record."""

    record: str
    reason: str
    slide: str
    sent_as: str
    outcome: str

    def row(self) -> dict[str, object]:
        return {
            "record": self.record,
            "reason": self.reason,
            "slide": self.slide,
            "sent_as": self.sent_as,
            "outcome": self.outcome,
        }


def _message(client: Minio, slide: DlqSlide) -> tuple[str, bytes, bytes] | None:
    """(new slide_id, key, value) for the slide as the bucket holds it now; None if gone."""
    from histoprompt.core.errors import NotFoundError
    from histoprompt.core.results import s3_errors

    if slide.series is not None:
        ready = slide.series
        return ready.slide_id, ready.series_key.encode(), ready.to_json()
    try:
        with s3_errors("checking the slide's object"):
            stat = client.stat_object(slide.bucket, slide.key)
    except NotFoundError:
        return None
    etag = (stat.etag or "").strip('"')
    size = int(stat.size or 0)
    sid = slide_id_for(slide.bucket, slide.key, etag)
    value = json.dumps(S3Event.make(slide.bucket, slide.key, size, etag)).encode()
    return sid, sid.encode(), value


def replay(
    settings: ClientSettings,
    client: Minio,
    producer: KafkaProducer | None,
    records: list[DlqRecord],
    done: set[str],
) -> list[Outcome]:
    """Send each record's slides once (see the module doc); `producer` None: a dry run."""
    from histoprompt.client.services import kafka_errors

    out: list[Outcome] = []
    for rec in records:
        code = rec.event.error.code
        if rec.ref in done:
            out += [Outcome(rec.ref, code, s, "-", "already replayed") for s in rec.slide_ids]
            continue
        if not rec.event.slides:
            out.append(Outcome(rec.ref, code, "-", "-", "nothing to replay"))
            continue
        sent: list[str] = []
        for slide in rec.event.slides:
            msg = _message(client, slide)
            if msg is None:
                out.append(Outcome(rec.ref, code, slide.slide_id, "-", "object missing"))
                continue
            sid, key, value = msg
            if producer is not None:
                with kafka_errors(settings, f"publishing to {names.TOPIC_INCOMING}"):
                    producer.send(names.TOPIC_INCOMING, key=key, value=value).get(
                        timeout=settings.connect_timeout * 6
                    )
                sent.append(sid)
            outcome = "sent" if producer is not None else "would send"
            out.append(Outcome(rec.ref, code, slide.slide_id, sid, outcome))
        if producer is not None and sent:
            _mark(client, settings.results_bucket, rec, sent)
    return out


def _mark(client: Minio, bucket: str, record: DlqRecord, sent: list[str]) -> None:
    from histoprompt.core.results import s3_errors

    data = json.dumps({"replayed_at": utcnow(), "sent_as": sent}).encode()
    with s3_errors("writing the DLQ replay marker"):
        client.put_object(
            bucket, marker_key(record), io.BytesIO(data), len(data), content_type="application/json"
        )
