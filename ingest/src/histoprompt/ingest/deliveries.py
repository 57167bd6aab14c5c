"""Delivery counts that survive the worker: one small object per message in the results bucket.

A message whose processing kills the worker (SIGKILL, the kernel's OOM killer) never reaches
the service's own retry loop: the process is gone, the offset uncommitted, the message comes
back to the next worker, forever. So before a message is processed its count is raised in S3:

    s3://<results-bucket>/pending/deliveries/<group>/<topic>/<partition>/<offset>.json
    {"count": 2, "first_seen": "2026-12-01T22:30:00.000Z"}

A message that arrives with a count above `HISTOPROMPT_INGEST_MAX_DELIVERIES` is dead-lettered
with code `crash_loop` instead of being processed again. The object is deleted once the offset
is committed, and a graceful stop that releases the message un-counts that delivery. Only one
worker owns a partition at a time, so the read-modify-write needs no lock; an object left behind
by a failed delete names an offset that is committed and never read again.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from histoprompt.core.errors import TransientError
from histoprompt.core.s3 import read_object
from histoprompt.core.schemas import utcnow
from histoprompt.ingest.ports import Delivery, Message

if TYPE_CHECKING:
    from minio import Minio

PREFIX = "pending/deliveries"
_MISSING = frozenset({"NoSuchKey", "NoSuchObject"})


class DeliveryRecord(BaseModel):
    """The stored count of one message."""

    model_config = ConfigDict(extra="ignore")

    count: int = Field(ge=0)
    first_seen: str


@contextmanager
def _s3(what: str) -> Iterator[None]:
    """minio and urllib3 failures as TransientError (the message is retried, then DLQ'd)."""
    from minio.error import S3Error
    from urllib3.exceptions import HTTPError

    try:
        yield
    except S3Error as err:
        raise TransientError(f"delivery count: {what}: S3 error", code="s3_error") from err
    except (HTTPError, OSError) as err:
        raise TransientError(
            f"delivery count: {what}: S3 unreachable", code="s3_unavailable"
        ) from err


def delivery_key(group: str, msg: Message) -> str:
    """The count's object key: group, topic, partition and offset (never the message key)."""
    return f"{PREFIX}/{group}/{msg.topic}/{msg.partition}/{msg.offset}.json"


class S3DeliveryLog:
    """DeliveryLog on the results bucket (minio SDK). S3 trouble is a TransientError."""

    def __init__(self, client: Minio, bucket: str, group: str) -> None:
        self._client = client
        self._bucket = bucket
        self._group = group

    def _read(self, key: str) -> DeliveryRecord | None:
        from minio.error import S3Error

        try:
            with _s3("read"):
                data = read_object(self._client, self._bucket, key)
        except TransientError as err:
            cause = err.__cause__
            if isinstance(cause, S3Error) and cause.code in _MISSING:
                return None
            raise
        try:
            return DeliveryRecord.model_validate_json(data)
        except ValueError:
            return None  # unreadable: count afresh rather than block the message

    def _write(self, key: str, record: DeliveryRecord) -> None:
        data = record.model_dump_json().encode()
        with _s3("write"):
            self._client.put_object(
                self._bucket, key, io.BytesIO(data), len(data), content_type="application/json"
            )

    def _remove(self, key: str) -> None:
        with _s3("delete"):
            self._client.remove_object(self._bucket, key)

    def arrive(self, msg: Message) -> Delivery:
        key = delivery_key(self._group, msg)
        old = self._read(key)
        record = DeliveryRecord(
            count=(old.count if old else 0) + 1, first_seen=old.first_seen if old else utcnow()
        )
        self._write(key, record)
        return Delivery(record.count, record.first_seen)

    def release(self, msg: Message) -> None:
        key = delivery_key(self._group, msg)
        old = self._read(key)
        if old is None:
            return
        if old.count <= 1:
            self._remove(key)
        else:
            self._write(key, DeliveryRecord(count=old.count - 1, first_seen=old.first_seen))

    def forget(self, msgs: Sequence[Message]) -> None:
        for msg in msgs:
            self._remove(delivery_key(self._group, msg))
