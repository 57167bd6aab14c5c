"""Who consumes the incoming topic: the ingest consumer group's members, from Kafka's admin API.

`submit --wait` refuses to wait on a group with no member (nothing would ever answer), and
`status` lists the members with their hosts and partitions.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from histoprompt.core import names
from histoprompt.core.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from histoprompt.client.settings import ClientSettings

__all__ = [
    "START_WORKER",
    "GroupMember",
    "GroupState",
    "describe_group",
    "require_members",
]

# The one-line hint: how a user starts a worker against the local stack.
START_WORKER = "histoprompt-ingest run --env-file stack.env"
_POLL_S = 0.5


class GroupMember(BaseModel):
    """One consumer in the group: kafka-python's DescribeGroups member, assignment decoded."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    member_id: str
    client_id: str = ""
    client_host: str = ""
    group_instance_id: str | None = None
    partitions: tuple[int, ...] = ()

    @property
    def host(self) -> str:
        return self.client_host.lstrip("/")


class GroupState(BaseModel):
    """The group's state (`Stable`, `Empty`, `Dead`, ...) and its members."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    group_id: str
    state: str = "Dead"
    members: tuple[GroupMember, ...] = Field(default_factory=tuple)


def _member(raw: dict[str, Any]) -> GroupMember:
    assignment = raw.get("member_assignment") or {}
    parts: list[int] = []
    if isinstance(assignment, dict):
        for entry in assignment.get("assigned_partitions") or []:
            if entry.get("topic") == names.TOPIC_INCOMING:
                parts.extend(int(p) for p in entry.get("partitions") or [])
    return GroupMember.model_validate(raw | {"partitions": tuple(sorted(parts))})


def parse_group(group_id: str, described: dict[str, Any]) -> GroupState:
    """kafka-python's `describe_groups` answer for one group as a GroupState."""
    raw = described.get(group_id) or {}
    members = tuple(_member(m) for m in raw.get("members") or [])
    return GroupState(
        group_id=group_id, state=str(raw.get("group_state") or "Dead"), members=members
    )


def describe_group(settings: ClientSettings) -> GroupState:
    """The ingest group (HISTOPROMPT_INGEST_GROUP_ID) now. A group Kafka has never seen, or
    a broker without a coordinator yet, has no members."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import CoordinatorNotAvailableError, GroupIdNotFoundError

    from histoprompt.client.services import kafka_errors

    group = settings.ingest_group_id
    ms = int(settings.connect_timeout * 1000)
    with kafka_errors(settings, "describing the ingest consumer group"):
        admin = KafkaAdminClient(
            **settings.kafka_config(),
            request_timeout_ms=ms * 3,
            bootstrap_timeout_ms=ms,
            client_id="histoprompt-cli",
        )
        try:
            described: dict[str, Any] = admin.describe_groups([group])
        except (CoordinatorNotAvailableError, GroupIdNotFoundError):
            described = {}
        finally:
            admin.close()
    return parse_group(group, described)


def require_members(settings: ClientSettings, timeout_s: float = 5.0) -> GroupState:
    """The group once it has a member; ServiceUnavailableError (exit 3) naming the command that
    starts a worker when none joins within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = describe_group(settings)
        if state.members:
            return state
        if time.monotonic() + _POLL_S > deadline:
            raise ServiceUnavailableError(
                f"no ingest worker consumes {names.TOPIC_INCOMING} (consumer group "
                f"{settings.ingest_group_id} has no members); start one: {START_WORKER}"
            )
        time.sleep(_POLL_S)
