"""The consumer service: poll, process up to `ingest_concurrency` messages, commit, repeat.

At-least-once: an offset is committed only after its result is in S3 and its result event
(or its DLQ event) is acknowledged by Kafka. Offsets are committed per partition up to the
first message not handled, so a released message is redelivered.

SIGTERM/SIGINT: stop polling, give in-flight slides until the deadline to finish, release
(cancel, do not commit) the rest, commit what finished, leave the group, exit 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from histoprompt.core import names
from histoprompt.core.errors import TransientError
from histoprompt.core.results import ResultStore
from histoprompt.core.s3 import make_minio
from histoprompt.core.schemas import DlqEvent, ErrorInfo, ResultEvent, utcnow
from histoprompt.ingest.errors import SourceRejectedError
from histoprompt.ingest.events import SlideJob, parse_jobs
from histoprompt.ingest.health import Health, MetricsServer, start_metrics_server
from histoprompt.ingest.logs import get_logger
from histoprompt.ingest.metrics import IngestMetrics, make_metrics
from histoprompt.ingest.pipeline import SlideProcessor
from histoprompt.ingest.settings import IngestSettings
from histoprompt.wsi.triton import ServedModel, TritonClient

_SEND_TIMEOUT_S = 30.0
_LAG_EVERY_S = 5.0


def hallmark_names() -> list[str]:
    """The default prompts: every bundled MSigDB Hallmark set."""
    from histoprompt.core.genesets import load_hallmark

    return list(load_hallmark())


@dataclass
class _Handled:
    msg: Any
    ok: bool


class IngestService:
    """Build with settings; `run()` blocks until stopped (signal or `request_stop`)."""

    def __init__(
        self,
        settings: IngestSettings,
        registry: CollectorRegistry | None = None,
        gene_sets: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics: IngestMetrics = make_metrics(self.registry)
        self.health = Health(liveness_timeout_s=settings.ingest_liveness_timeout_s)
        self.gene_sets = gene_sets
        self.log = get_logger()
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self.served: ServedModel | None = None
        self.metrics_server: MetricsServer | None = None

    # -- stopping ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Thread- and signal-safe: finish or release in-flight work, then return from run()."""
        if not self._stopping.is_set():
            self._deadline = time.monotonic() + self.settings.ingest_shutdown_deadline_s
            self._stopping.set()
        loop, ev = self._loop, self._stop_event
        if loop is not None and ev is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ev.set)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.log.info("stop requested", extra={"code": signal.Signals(signum).name})
        self.request_stop()

    # -- main loop ---------------------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        from kafka import KafkaConsumer, KafkaProducer

        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        if self.settings.ingest_metrics_port:
            self.metrics_server = start_metrics_server(
                self.settings.ingest_metrics_port,
                self.registry,
                self.health,
                self.settings.ingest_metrics_host,
            )
        loop = asyncio.new_event_loop()
        self._loop = loop
        consumer = producer = None
        triton: TritonClient | None = None
        try:
            self._stop_event = loop.run_until_complete(_make_event())
            if self._stopping.is_set():
                return 0
            triton = loop.run_until_complete(self._make_triton())
            served = loop.run_until_complete(self._wait_for_model(triton))
            if served is None:
                return 0
            self.served = served
            minio = make_minio(self.settings)
            store = ResultStore(minio, self.settings.results_bucket)
            kafka_cfg = self.settings.kafka_config()
            producer = KafkaProducer(acks="all", linger_ms=5, **kafka_cfg)
            consumer = KafkaConsumer(
                names.TOPIC_INCOMING,
                group_id=self.settings.ingest_group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.settings.ingest_concurrency,
                max_poll_interval_ms=int(self.settings.ingest_max_poll_interval_s * 1000),
                **kafka_cfg,
            )
            processor = SlideProcessor(
                self.settings,
                minio,
                store,
                triton,
                served,
                self.gene_sets if self.gene_sets is not None else hallmark_names(),
                self.metrics,
            )
            self.health.ready = True
            self.log.info(
                "consuming",
                extra={"model_version": served.version, "status": "ready"},
            )
            self._consume(loop, consumer, producer, processor)
        finally:
            self.health.ready = False
            if consumer is not None:
                consumer.close(autocommit=False)
            if producer is not None:
                producer.close(timeout=5)
            if triton is not None:
                loop.run_until_complete(triton.close())
            loop.close()
            self._loop = None
            if self.metrics_server is not None:
                self.metrics_server.close()
            self.log.info("stopped", extra={"status": "stopped"})
        return 0

    async def _make_triton(self) -> TritonClient:
        s = self.settings
        return TritonClient(
            s.triton_url, s.ingest_triton_timeout_s, s.ingest_max_attempts, s.ingest_retry_base_s
        )

    async def _wait_for_model(self, triton: TritonClient) -> ServedModel | None:
        """Readiness waits for the served model; liveness keeps beating meanwhile."""
        delay = self.settings.ingest_retry_base_s
        while not self._stopping.is_set():
            self.health.beat()
            try:
                if await triton.ready():
                    return await triton.served_model()
            except TransientError as err:
                self.log.warning("model not ready", extra={"code": err.code})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        return None

    def _consume(
        self, loop: asyncio.AbstractEventLoop, consumer: Any, producer: Any, proc: SlideProcessor
    ) -> None:
        last_lag = 0.0
        while not self._stopping.is_set():
            self.health.beat()
            polled = consumer.poll(
                timeout_ms=int(self.settings.ingest_poll_timeout_s * 1000),
                max_records=self.settings.ingest_concurrency,
            )
            msgs = [m for batch in polled.values() for m in batch]
            if msgs:
                handled = loop.run_until_complete(self._handle_all(msgs, producer, proc))
                self._commit(consumer, msgs, handled)
            if time.monotonic() - last_lag > _LAG_EVERY_S:
                self._update_lag(consumer)
                last_lag = time.monotonic()

    async def _handle_all(self, msgs: list[Any], producer: Any, proc: SlideProcessor) -> set[int]:
        """Run the messages concurrently; ids of those handled (committable)."""
        assert self._stop_event is not None
        tasks = {asyncio.create_task(self._handle(m, producer, proc)): id(m) for m in msgs}
        stop = asyncio.create_task(self._stop_event.wait())
        pending: set[asyncio.Task[Any]] = set(tasks)
        try:
            while pending and not stop.done():
                _, pending = await asyncio.wait(
                    pending | {stop}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(stop)
            if pending:
                remaining = max(0.0, self._deadline - time.monotonic() - 1.0)
                _, pending = await asyncio.wait(pending, timeout=remaining)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                if pending:
                    self.log.warning(
                        "released in-flight slides at the shutdown deadline",
                        extra={"status": "released", "n_tiles": len(pending)},
                    )
        finally:
            stop.cancel()
        handled = set()
        for task, mid in tasks.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                handled.add(mid)
            elif task.done() and not task.cancelled() and task.exception() is not None:
                self.log.error(
                    "message handler crashed",
                    exc_info=task.exception(),
                    extra={"code": "internal"},
                )
        return handled

    async def _handle(self, msg: Any, producer: Any, proc: SlideProcessor) -> None:
        first_seen = utcnow()
        attempt = 1
        while True:
            try:
                jobs = parse_jobs(msg.value, self.settings)
                for job in jobs:
                    if isinstance(job, SlideJob):
                        await self._process_job(job, msg, producer, proc)
                return
            except SourceRejectedError as err:
                await self._dead_letter(msg, producer, err.code, str(err), attempt, first_seen)
                return
            except (TransientError, OSError) as err:
                code = getattr(err, "code", "io_error")
                message = str(err) if isinstance(err, TransientError) else type(err).__name__
            except Exception as err:  # a bug must not crash-loop the consumer: DLQ it
                self.log.error("unexpected error", exc_info=err, extra={"code": "internal"})
                code, message = "internal", f"unexpected {type(err).__name__}"
            if attempt >= self.settings.ingest_max_attempts:
                await self._dead_letter(msg, producer, code, message, attempt, first_seen)
                return
            self.log.warning(
                "retrying", extra={"code": code, "attempt": attempt, "offset": msg.offset}
            )
            await asyncio.sleep(self.settings.ingest_retry_base_s * 2 ** (attempt - 1))
            attempt += 1

    async def _process_job(
        self, job: SlideJob, msg: Any, producer: Any, proc: SlideProcessor
    ) -> None:
        self.metrics.inflight.inc()
        try:
            outcome = await proc.process(job)
        finally:
            self.metrics.inflight.dec()
        if outcome.event is not None:
            await asyncio.to_thread(
                self._send,
                producer,
                names.TOPIC_RESULTS,
                job.slide_id.encode(),
                outcome.event.to_json(),
            )
        self.metrics.slides.labels(status=outcome.status).inc()
        if outcome.status != "skipped_duplicate" and msg.timestamp and msg.timestamp > 0:
            self.metrics.slide_seconds.observe(max(0.0, time.time() - msg.timestamp / 1000.0))

    async def _dead_letter(
        self, msg: Any, producer: Any, code: str, message: str, attempts: int, first_seen: str
    ) -> None:
        try:
            original: Any = json.loads(msg.value) if msg.value is not None else None
        except (ValueError, UnicodeDecodeError):
            original = (msg.value or b"").decode("utf-8", errors="replace")
        event = DlqEvent(
            original=original,
            error=ErrorInfo(code=code, message=message),
            attempts=attempts,
            first_seen=first_seen,
            last_seen=utcnow(),
        )
        await asyncio.to_thread(self._send, producer, names.TOPIC_DLQ, msg.key, event.to_json())
        self.metrics.slides.labels(status="dlq").inc()
        self.log.warning(
            "dead-lettered",
            extra={"status": "dlq", "code": code, "attempt": attempts, "offset": msg.offset},
        )

    @staticmethod
    def _send(producer: Any, topic: str, key: bytes | None, value: bytes) -> None:
        from kafka.errors import KafkaError

        try:
            producer.send(topic, key=key, value=value).get(timeout=_SEND_TIMEOUT_S)
        except KafkaError as err:
            raise TransientError(f"publishing to {topic} failed", code="kafka_unavailable") from err

    def _commit(self, consumer: Any, msgs: list[Any], handled: set[int]) -> None:
        from kafka.structs import OffsetAndMetadata, TopicPartition

        offsets: dict[Any, Any] = {}
        by_tp: dict[Any, list[Any]] = {}
        for m in msgs:
            by_tp.setdefault(TopicPartition(m.topic, m.partition), []).append(m)
        for tp, ms in by_tp.items():
            ms.sort(key=lambda m: m.offset)
            upto = None
            for m in ms:
                if id(m) not in handled:
                    # Redeliver from here: seek back so a running consumer sees it again.
                    consumer.seek(tp, m.offset)
                    break
                upto = m.offset
            if upto is not None:
                offsets[tp] = OffsetAndMetadata(upto + 1, "", -1)
        if offsets:
            consumer.commit(offsets)

    def _update_lag(self, consumer: Any) -> None:
        try:
            parts = consumer.assignment()
            if not parts:
                return
            ends = consumer.end_offsets(list(parts))
            lag = sum(max(0, ends[tp] - consumer.position(tp)) for tp in parts)
            self.metrics.consumer_lag.set(lag)
        except Exception as err:  # lag is best-effort; never stop consuming for it
            self.log.debug("lag unavailable", extra={"code": type(err).__name__})


async def _make_event() -> asyncio.Event:
    return asyncio.Event()


def publish_result(producer: Any, event: ResultEvent) -> None:
    """Publish one result event (used by tools and tests that replay results)."""
    IngestService._send(producer, names.TOPIC_RESULTS, event.slide_id.encode(), event.to_json())


StopHook = Callable[[], None]
