"""E8: a consumer that lost its partitions reports lag 0, so its gauge drops instead of
keeping its last value (which the rules' and dashboard's sums would double-count)."""

from __future__ import annotations

from typing import Any

from histoprompt.ingest.kafka_io import KafkaEventSource


class _Consumer:
    def __init__(self, parts: set[Any], ends: dict[Any, int], positions: dict[Any, int]) -> None:
        self._parts, self._ends, self._positions = parts, ends, positions

    def assignment(self) -> set[Any]:
        return self._parts

    # kafka-python's signatures, timeouts included: a fake that refused them made lag() None.
    def end_offsets(self, parts: list[Any], timeout_ms: int | None = None) -> dict[Any, int]:
        return {p: self._ends[p] for p in parts}

    def position(self, part: Any, timeout_ms: int | None = None) -> int:
        return self._positions[part]


def _source(consumer: _Consumer) -> KafkaEventSource:
    source = object.__new__(KafkaEventSource)
    source._consumer = consumer  # type: ignore[attr-defined]
    return source


def test_lag_of_assigned_partitions() -> None:
    consumer = _Consumer({"p0", "p1"}, {"p0": 10, "p1": 5}, {"p0": 4, "p1": 5})
    assert _source(consumer).lag() == 6


def test_no_partitions_means_zero_lag_not_unknown() -> None:
    """None would leave the gauge at its last value; 0 resets it."""
    assert _source(_Consumer(set(), {}, {})).lag() == 0
