"""In-memory EventSource, ResultSink and DeliveryLog: the service without a broker or a
bucket (unit tests, tools).

The source keeps Kafka's delivery rules that the service relies on: per-partition order, a
position that `settle` rewinds to the first released message, commits recorded per partition,
held (paused) partitions, and a rebalance: `revoke` takes a partition away (its offsets are no
longer this member's to commit), `assign` gives it back from its committed offset.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from histoprompt.core import names
from histoprompt.core.errors import TransientError
from histoprompt.core.schemas import DlqEvent, ResultEvent, utcnow
from histoprompt.ingest.ports import Delivery, Message, commit_plan


class InMemoryEventSource:
    """Serves `messages` (appendable with `add`) in per-partition offset order."""

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        self._log: dict[tuple[str, int], list[Message]] = {}
        self._position: dict[tuple[str, int], int] = {}
        self._cond = threading.Condition()
        self.committed: dict[tuple[str, int], int] = {}
        self.delivered: list[Message] = []
        self.revoked: set[tuple[str, int]] = set()
        self.held = False
        self.keep_alives = 0
        self.closed = False
        for m in messages:
            self.add(m)

    def add(self, message: Message) -> None:
        with self._cond:
            tp = (message.topic, message.partition)
            self._log.setdefault(tp, []).append(message)
            self._log[tp].sort(key=lambda m: m.offset)
            self._position.setdefault(tp, message.offset)
            self._position[tp] = min(self._position[tp], message.offset)
            self._cond.notify_all()

    def _available(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        for tp, log in sorted(self._log.items()):
            if tp in self.revoked:
                continue
            for m in log:
                if len(out) >= max_records:
                    break
                if m.offset >= self._position[tp]:
                    out.append(m)
                    self._position[tp] = m.offset + 1
        return out

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        with self._cond:
            if self.held:
                self._cond.wait(timeout=timeout_s)
                return []
            self._cond.wait_for(lambda: bool(self._pending()), timeout=timeout_s)
            out = self._available(max_records)
            self.delivered.extend(out)
            return out

    def _pending(self) -> int:
        return sum(
            1
            for tp, log in self._log.items()
            if tp not in self.revoked
            for m in log
            if m.offset >= self._position[tp]
        )

    def hold(self) -> None:
        with self._cond:
            self.held = True

    def keep_alive(self, timeout_s: float) -> None:
        with self._cond:
            self.keep_alives += 1
            self._cond.wait(timeout=timeout_s)

    def revoke(self, topic: str, partition: int) -> None:
        """A rebalance gave the partition to another member."""
        with self._cond:
            self.revoked.add((topic, partition))

    def assign(self, topic: str, partition: int) -> None:
        """A rebalance gave the partition back: delivery resumes at its committed offset."""
        with self._cond:
            tp = (topic, partition)
            self.revoked.discard(tp)
            first = min((m.offset for m in self._log.get(tp, [])), default=0)
            self._position[tp] = self.committed.get(tp, first)
            self._cond.notify_all()

    def settle(self, batch: Sequence[Message], handled: Sequence[Message]) -> list[Message]:
        with self._cond:
            owned = {(m.topic, m.partition) for m in batch} - self.revoked
            plan = commit_plan(batch, handled, owned)
            for tp, offset in plan.rewind.items():
                self._position[tp] = offset
            self.committed.update(plan.commit)
            self.held = False
            self._cond.notify_all()
        return [m for m in batch if m.offset < plan.commit.get((m.topic, m.partition), -1)]

    def lag(self) -> int | None:
        with self._cond:
            return self._pending()

    def close(self) -> None:
        self.closed = True


@dataclass
class InMemoryResultSink:
    """Records what was published. `fail_next` publishes raise TransientError first, as a
    broker that does not acknowledge in time would."""

    results: list[ResultEvent] = field(default_factory=list)
    dlq: list[tuple[bytes | None, DlqEvent]] = field(default_factory=list)
    fail_next: int = 0
    closed: bool = False

    def _ack(self, topic: str) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise TransientError(f"publishing to {topic} failed", code="kafka_unavailable")

    def publish_result(self, event: ResultEvent) -> None:
        self._ack(names.TOPIC_RESULTS)
        self.results.append(event)

    def publish_dlq(self, event: DlqEvent, key: bytes | None) -> None:
        self._ack(names.TOPIC_DLQ)
        self.dlq.append((key, event))

    def close(self) -> None:
        self.closed = True


class InMemoryDeliveryLog:
    """Delivery counts in a dict (a worker killed in a test is simulated by not forgetting)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, int, int], tuple[int, str]] = {}

    def arrive(self, msg: Message) -> Delivery:
        key = (msg.topic, msg.partition, msg.offset)
        with self._lock:
            count, first = self.counts.get(key, (0, utcnow()))
            self.counts[key] = (count + 1, first)
            return Delivery(count + 1, first)

    def release(self, msg: Message) -> None:
        key = (msg.topic, msg.partition, msg.offset)
        with self._lock:
            count, first = self.counts.get(key, (0, ""))
            if count <= 1:
                self.counts.pop(key, None)
            else:
                self.counts[key] = (count - 1, first)

    def forget(self, msgs: Sequence[Message]) -> None:
        with self._lock:
            for m in msgs:
                self.counts.pop((m.topic, m.partition, m.offset), None)
