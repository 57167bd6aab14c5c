"""In-memory EventSource and ResultSink: the service without a broker (unit tests, tools).

The source keeps Kafka's delivery rules that the service relies on: per-partition order, a
position that `settle` rewinds to the first released message, commits recorded per partition.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from histoprompt.core import names
from histoprompt.core.errors import TransientError
from histoprompt.core.schemas import DlqEvent, ResultEvent
from histoprompt.ingest.ports import Message, commit_plan


class InMemoryEventSource:
    """Serves `messages` (appendable with `add`) in per-partition offset order."""

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        self._log: dict[tuple[str, int], list[Message]] = {}
        self._position: dict[tuple[str, int], int] = {}
        self._cond = threading.Condition()
        self.committed: dict[tuple[str, int], int] = {}
        self.delivered: list[Message] = []
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
            for m in log:
                if len(out) >= max_records:
                    break
                if m.offset >= self._position[tp]:
                    out.append(m)
                    self._position[tp] = m.offset + 1
        return out

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._pending()), timeout=timeout_s)
            out = self._available(max_records)
            self.delivered.extend(out)
            return out

    def _pending(self) -> int:
        return sum(
            1 for tp, log in self._log.items() for m in log if m.offset >= self._position[tp]
        )

    def settle(self, batch: Sequence[Message], handled: Sequence[Message]) -> None:
        plan = commit_plan(batch, handled)
        with self._cond:
            for tp, offset in plan.rewind.items():
                self._position[tp] = offset
            self.committed.update(plan.commit)
            self._cond.notify_all()

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
