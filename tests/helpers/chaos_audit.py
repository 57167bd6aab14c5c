"""Counting a chaos run from the real stores, not from logs.

- completed / duplicated: result manifests under `slides/<slide_id>/` in the results
  bucket (one per slide; a second one, or a manifest whose `created` changed between two
  looks, is a duplicate), and result events per slide on the results topic (more than one is
  a duplicate too).
- DLQ: records on the DLQ topic since the run began, each matched to its item by the
  item's key prefix or slide id, poison ones by their reason.
- committed offsets: the consumer group's, from the Kafka admin client. Every message below
  a committed offset must be durable: its slide has a result manifest or a DLQ record, a
  DICOM instance without a manifest (a gateway series' or the truncated file, whose header
  is whole) has its pending object (or its series a claim or a result), a poison message a
  DLQ record. `offset_violations` lists those that are not.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from helpers.chaos_feed import Item
from histoprompt.core import names
from histoprompt.core.schemas import ResultManifest
from histoprompt.stack.feed import TopicWatcher

PENDING_PREFIX = "pending/series/"


def _pending_key(series_key: str, object_key: str) -> str:
    # ingest.series' layout: the auditor reads the store the way an operator would
    digest = hashlib.sha256(object_key.encode()).hexdigest()[:24]
    return f"{PENDING_PREFIX}{series_key}/{digest}.json"


@dataclass
class ItemState:
    done: int = 0
    failed: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    events: int = 0
    dlq: list[str] = field(default_factory=list)


@dataclass
class Audit:
    """Reads the stores for one run's items; `look()` may be called many times."""

    minio: Any
    settings: Any
    items: list[Item]
    group: str
    dlq: TopicWatcher
    results: TopicWatcher
    first_created: dict[str, list[str]] = field(default_factory=dict)
    overwritten: set[str] = field(default_factory=set)

    def _exists(self, key: str) -> bool:
        try:
            self.minio.stat_object(self.settings.results_bucket, key)
        except Exception:  # noqa: BLE001 - absent (or unreadable): not durable
            return False
        return True

    def _manifests(self, slide_id: str) -> list[ResultManifest]:
        bucket = self.settings.results_bucket
        out = []
        for obj in self.minio.list_objects(bucket, prefix=f"slides/{slide_id}/", recursive=True):
            if obj.object_name.endswith("/" + names.RESULT_MANIFEST):
                raw = self.minio.get_object(bucket, obj.object_name)
                try:
                    out.append(ResultManifest.model_validate_json(raw.read()))
                finally:
                    raw.close()
                    raw.release_conn()
        return out

    def look(self) -> dict[int, ItemState]:
        """Each item's state now (results bucket, DLQ and results topics)."""
        self.dlq.poll(0.2)
        self.results.poll(0.2)
        dlq = [json.loads(v) for _, v in self.dlq.seen]
        events = Counter(json.loads(v).get("slide_id") for _, v in self.results.seen)
        out: dict[int, ItemState] = {}
        for item in self.items:
            state = ItemState()
            if item.kind != "poison":
                sid = item.slide_id
                for m in self._manifests(sid):
                    if m.status == "done":
                        state.done += 1
                    else:
                        state.failed.append(m.error.code if m.error else "failed")
                    state.created.append(m.created)
                state.events = events.get(sid, 0)
                now, first = sorted(state.created), self.first_created.get(sid)
                if first is None and now:
                    self.first_created[sid] = now
                elif first and now[: len(first)] != first:
                    self.overwritten.add(sid)  # a manifest was replaced
            for record in dlq:
                raw = json.dumps(record)
                if item.prefix in raw or (item.slide_id and item.slide_id in raw):
                    state.dlq.append(record.get("error", {}).get("code", "?"))
            out[item.n] = state
        return out

    def dlq_codes(self) -> list[str]:
        return sorted(json.loads(v).get("error", {}).get("code", "?") for _, v in self.dlq.seen)

    def committed(self) -> dict[int, int]:
        """The group's committed offsets on the incoming topic, by partition."""
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(**self.settings.kafka_config(), request_timeout_ms=10000)
        try:
            offsets = admin.list_group_offsets(self.group)[self.group]
        finally:
            admin.close()
        return {
            tp.partition: om.offset
            for tp, om in offsets.items()
            if tp.topic == names.TOPIC_INCOMING
        }

    def offset_violations(self, committed: dict[int, int]) -> list[str]:
        """Messages below a committed offset whose item is not durable (see module doc)."""
        states = self.look()
        poison_committed = 0
        bad: list[str] = []
        for item in self.items:
            state = states[item.n]
            resolved = bool(state.done or state.failed or state.dlq)
            for partition, offset, key in item.messages:
                if offset >= committed.get(partition, 0):
                    continue
                if item.kind == "poison":
                    poison_committed += 1
                elif item.kind in ("series_gateway", "truncated"):
                    series = f"series/{item.series_key}/claim.json"
                    pending = _pending_key(item.series_key, key)
                    if not (resolved or self._exists(pending) or self._exists(series)):
                        bad.append(f"{item.prefix} instance {key} @{partition}:{offset}")
                elif item.kind == "series_manifest" and not key.endswith(names.SERIES_MANIFEST):
                    continue  # a member's own event is skipped by design (manifest waits)
                elif not resolved:
                    bad.append(f"{item.prefix} @{partition}:{offset}")
        malformed = sum(1 for c in self.dlq_codes() if c in ("malformed_event", "rejected"))
        if poison_committed > malformed:
            bad.append(f"{poison_committed} poison messages committed, {malformed} in the DLQ")
        return bad


def count(items: list[Item], states: dict[int, ItemState], audit: Audit) -> dict[str, Any]:
    """The run's figures: submitted, completed, failed, duplicated, lost, DLQ."""
    good = [i for i in items if not i.bad]
    completed = sum(1 for i in good if states[i.n].done >= 1)
    duplicated = sum(
        1
        for i in items
        if states[i.n].done + len(states[i.n].failed) > 1
        or states[i.n].events > 1
        or i.slide_id in audit.overwritten
    )
    poison = sum(1 for i in items if i.kind == "poison")
    dlq_codes = audit.dlq_codes()
    malformed = sum(1 for c in dlq_codes if c in ("malformed_event", "rejected"))
    unaccounted = [
        i
        for i in items
        if i.kind != "poison" and not (states[i.n].done or states[i.n].failed or states[i.n].dlq)
    ]
    lost = len(unaccounted) + max(0, poison - malformed)
    missing = [i.prefix for i in unaccounted]
    return {
        "submitted": len(items),
        "bad": len(items) - len(good),
        "completed": completed,
        "failed_results": sum(len(states[i.n].failed) for i in items),
        "failed_codes": dict(Counter(c for i in items for c in states[i.n].failed)),
        "duplicated": duplicated,
        "lost": lost,
        "dlq": len(dlq_codes),
        "dlq_codes": dict(Counter(dlq_codes)),
        "missing": missing,
    }
