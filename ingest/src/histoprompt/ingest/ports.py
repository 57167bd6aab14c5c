"""The service's seams: where messages come from, where events go, what handles a slide,
and where deliveries are counted.

`EventSource` and `ResultSink` have a Kafka implementation (histoprompt.ingest.kafka_io) and
an in-memory one (histoprompt.ingest.memory_io); `DeliveryLog` an S3 one
(histoprompt.ingest.deliveries) and an in-memory one; `Processor` is SlideProcessor's shape.
Their methods block (Kafka's client does): the service calls them through
`asyncio.to_thread`, one at a time for a given source.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from histoprompt.core.schemas import DlqEvent, ResultEvent

if TYPE_CHECKING:
    from histoprompt.ingest.events import SlideJob
    from histoprompt.ingest.pipeline import SlideOutcome


@dataclass(frozen=True)
class Message:
    """One polled record. `timestamp_ms` <= 0 when the broker gave none."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int = 0


@dataclass(frozen=True)
class CommitPlan:
    """Per (topic, partition): the next offset to commit, and where to rewind for redelivery."""

    commit: dict[tuple[str, int], int]
    rewind: dict[tuple[str, int], int]


def commit_plan(
    batch: Iterable[Message],
    handled: Iterable[Message],
    owned: Collection[tuple[str, int]] | None = None,
) -> CommitPlan:
    """Commit each partition up to its first unhandled message; rewind to that message.

    A message after an unhandled one is not committed even if handled: at-least-once means
    a released message is redelivered, and the ones behind it with it. With `owned`, a
    partition outside it (revoked by a rebalance while the batch ran) is neither committed
    nor rewound: its new owner delivers it again from the group's committed offset.
    """
    done = {(m.topic, m.partition, m.offset) for m in handled}
    by_tp: dict[tuple[str, int], list[Message]] = {}
    for m in batch:
        by_tp.setdefault((m.topic, m.partition), []).append(m)
    commit: dict[tuple[str, int], int] = {}
    rewind: dict[tuple[str, int], int] = {}
    for tp, msgs in by_tp.items():
        if owned is not None and tp not in owned:
            continue
        for m in sorted(msgs, key=lambda m: m.offset):
            if (m.topic, m.partition, m.offset) not in done:
                rewind[tp] = m.offset
                break
            commit[tp] = m.offset + 1
    return CommitPlan(commit, rewind)


class EventSource(Protocol):
    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """Up to `max_records` messages, waiting at most `timeout_s` for the first."""
        ...

    def hold(self) -> None:
        """Pause fetching from every assigned partition: a batch is in flight."""
        ...

    def keep_alive(self, timeout_s: float) -> None:
        """Poll without taking messages while held, so the group keeps this member (Kafka's
        max.poll.interval) however long the batch runs. Messages of partitions assigned
        meanwhile are put back (position rewound) and held too."""
        ...

    def settle(self, batch: Sequence[Message], handled: Sequence[Message]) -> list[Message]:
        """Commit `batch` per partition up to its first message not in `handled` (released),
        on the partitions this member still owns; position every owned partition of the
        batch at its next message; resume fetching. Released messages are delivered again by
        a later poll. Returns the messages whose offsets were committed."""
        ...

    def lag(self) -> int | None:
        """Messages behind the end over the assigned partitions; None when unknown."""
        ...

    def close(self) -> None:
        """Leave without committing; bounded in time."""
        ...


class ResultSink(Protocol):
    def publish_result(self, event: ResultEvent) -> None:
        """Publish on the results topic keyed by slide id; raises TransientError when the
        broker does not acknowledge in time."""
        ...

    def publish_dlq(self, event: DlqEvent, key: bytes | None) -> None:
        """Publish on the DLQ topic with the original message's key; acknowledged like
        `publish_result`."""
        ...

    def close(self) -> None:
        """Flush and close; bounded in time."""
        ...


class Processor(Protocol):
    async def process(self, job: SlideJob) -> SlideOutcome:
        """Handle one slide: its result in S3 (or its recorded failure), or a duplicate."""
        ...


@dataclass(frozen=True)
class Delivery:
    """How often a message has been delivered to a worker (this delivery included), counted
    durably: a worker killed mid-slide (SIGKILL, out of memory) counts too."""

    count: int
    first_seen: str


class DeliveryLog(Protocol):
    def arrive(self, msg: Message) -> Delivery:
        """Count this delivery of `msg` before it is processed."""
        ...

    def release(self, msg: Message) -> None:
        """Un-count this delivery: `msg` was released uncommitted on a graceful stop."""
        ...

    def forget(self, msgs: Sequence[Message]) -> None:
        """Drop the counts of messages whose offsets are committed."""
        ...
