"""`status` checks: each service's reachability and key figures, each check independent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from histoprompt.core import names

if TYPE_CHECKING:
    from histoprompt.client.settings import ClientSettings

__all__ = ["PROMQL", "Check", "run_checks"]

# Metric names of docs/architecture.md ("6. Metrics"); `or vector(0)`: no data yet = zero.
PROMQL: dict[str, str] = {
    "tiles/s": "sum(rate(histoprompt_ingest_tiles_total[5m])) or vector(0)",
    "slides/h": ('sum(increase(histoprompt_ingest_slides_total{status="done"}[1h])) or vector(0)'),
    "p95 slide s": (
        "histogram_quantile(0.95, sum by (le) (rate(histoprompt_ingest_slide_seconds_bucket[1h])))"
    ),
    "errors (1h)": (
        'sum(increase(histoprompt_ingest_slides_total{status="failed"}[1h])) or vector(0)'
    ),
    "DLQ (total)": 'sum(histoprompt_ingest_slides_total{status="dlq"}) or vector(0)',
    "in flight": "sum(histoprompt_ingest_inflight_slides) or vector(0)",
}


@dataclass
class Check:
    """One service: up or down, a one-line detail, and figures for the table."""

    service: str
    ok: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)
    # The service refused our credentials, or we its certificate (exit 4, not 3).
    refused: bool = False


def _guard(service: str, fn: Callable[[], Check]) -> Check:
    from histoprompt.client.errors import translate
    from histoprompt.core.errors import PermissionDeniedError

    try:
        return fn()
    except Exception as exc:
        err = translate(exc)
        detail = err.message if err else f"{type(exc).__name__}: {exc}"
        return Check(service, False, detail, refused=isinstance(err, PermissionDeniedError))


def check_triton(settings: ClientSettings) -> Check:
    from histoprompt.client.services import triton_client, triton_errors

    client = triton_client(settings)
    try:
        with triton_errors(settings, "Triton"):
            live = client.is_server_ready(client_timeout=settings.connect_timeout)
            index = client.get_model_repository_index(as_json=True)
    finally:
        client.close()
    models = {
        str(m["name"]): f"{m.get('version', '-')}:{m.get('state', 'UNKNOWN')}"
        for m in index.get("models", [])
    }
    ready = [n for n, v in models.items() if v.endswith(":READY")]
    wanted = [names.MODEL_PATCH_EMBED, names.MODEL_SLIDE_EMBED, names.MODEL_PATHWAY_QUERY]
    missing = [m for m in wanted if m not in ready]
    detail = f"{settings.triton_url} ready={live}, {len(ready)}/{len(models)} models ready"
    if missing:
        detail += f"; not ready: {', '.join(missing)}"
    # Without its models Triton cannot serve the pipeline: that counts as down.
    return Check("triton", bool(live) and not missing, detail, {"models": models})


def _committed_offsets(settings: ClientSettings) -> dict[Any, Any]:
    """The ingest group's committed offsets; empty when the group has not committed yet."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    ms = int(settings.connect_timeout * 1000)
    admin = KafkaAdminClient(
        **settings.kafka_config(), request_timeout_ms=ms * 3, bootstrap_timeout_ms=ms
    )
    try:
        group = settings.ingest_group_id
        offsets: dict[Any, Any] = admin.list_group_offsets({group: None}).get(group, {})
        return offsets
    except KafkaError:
        # No such group yet (or no coordinator before the first commit): lag is unknown.
        return {}
    finally:
        admin.close()


def check_kafka(settings: ClientSettings) -> Check:
    from kafka import TopicPartition

    from histoprompt.client.consumers import START_WORKER, describe_group
    from histoprompt.client.services import kafka_consumer, kafka_errors

    with kafka_errors(settings, "Kafka"):
        consumer = kafka_consumer(settings)
        try:
            topics = consumer.topics()
            lag: int | None = None
            parts = consumer.partitions_for_topic(names.TOPIC_INCOMING) or set()
            tps = [TopicPartition(names.TOPIC_INCOMING, p) for p in parts]
            ends = consumer.end_offsets(tps) if tps else {}
        finally:
            consumer.close()
        committed = _committed_offsets(settings)
    group = describe_group(settings)
    if committed:
        lag = sum(max(0, end - committed[tp].offset) for tp, end in ends.items() if tp in committed)
    ours = sorted(t for t in topics if t in names.ALL_TOPICS)
    missing = sorted(set(names.ALL_TOPICS) - set(ours))
    detail = f"{settings.kafka_bootstrap} topics {len(ours)}/{len(names.ALL_TOPICS)}"
    detail += f", lag({settings.ingest_group_id})={'-' if lag is None else lag}"
    detail += f", ingest workers {len(group.members)}"
    if not group.members:
        detail += f" (start one: {START_WORKER})"
    if missing:
        detail += f"; missing: {', '.join(missing)}"
    members = [
        {
            "client_id": m.client_id,
            "host": m.host,
            "instance": m.group_instance_id,
            "partitions": list(m.partitions),
        }
        for m in group.members
    ]
    figures = {"topics": ours, "lag": lag, "group_state": group.state, "members": members}
    return Check("kafka", True, detail, figures)


def check_s3(settings: ClientSettings) -> Check:
    from histoprompt.client.services import minio_client
    from histoprompt.core.results import s3_errors

    client = minio_client(settings)
    with s3_errors(f"S3 at {settings.s3_endpoint}"):
        buckets = sorted(b.name for b in client.list_buckets())
    wanted = [settings.slides_bucket, settings.results_bucket, settings.models_bucket]
    missing = [b for b in wanted if b not in buckets]
    detail = f"{settings.s3_endpoint} buckets {len(wanted) - len(missing)}/{len(wanted)}"
    if missing:
        detail += f"; missing: {', '.join(missing)}"
    return Check("s3", not missing, detail, {"buckets": buckets})


def check_prometheus(settings: ClientSettings) -> Check:
    import httpx

    from histoprompt.core.errors import ServiceUnavailableError

    figures: dict[str, Any] = {}
    url = settings.prometheus_url.rstrip("/") + "/api/v1/query"
    try:
        with httpx.Client(timeout=settings.connect_timeout) as http:
            for label, promql in PROMQL.items():
                resp = http.get(url, params={"query": promql})
                resp.raise_for_status()
                result = resp.json()["data"]["result"]
                value = float(result[0]["value"][1]) if result else None
                figures[label] = None if value is None or value != value else round(value, 3)
    except httpx.HTTPError as err:
        raise ServiceUnavailableError(
            f"Prometheus at {settings.prometheus_url}: {type(err).__name__}"
        ) from err
    return Check("prometheus", True, settings.prometheus_url, figures)


def run_checks(settings: ClientSettings) -> list[Check]:
    """Every service check, in parallel so a dead service costs one timeout, not four."""
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    checks: dict[str, Callable[[ClientSettings], Check]] = {
        "triton": check_triton,
        "kafka": check_kafka,
        "s3": check_s3,
        "prometheus": check_prometheus,
    }
    with ThreadPoolExecutor(len(checks)) as pool:
        futures = [pool.submit(_guard, name, partial(fn, settings)) for name, fn in checks.items()]
        return [f.result() for f in futures]
