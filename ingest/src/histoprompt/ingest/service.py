"""The consumer service: poll, process up to `ingest_concurrency` messages, settle, repeat.

One asyncio program: `run()` is `asyncio.run(serve())`; the blocking Kafka client runs in
worker threads. `serve()` wires Kafka, S3 and Triton; `consume()` is the loop over any
EventSource / ResultSink / Processor (histoprompt.ingest.ports).

At-least-once: an offset is committed only after its result is in S3 and its result event
(or its DLQ event) is acknowledged. Offsets are committed per partition up to the first
message not handled, so a released message is redelivered.

SIGTERM/SIGINT: stop polling, give in-flight slides until the deadline to finish, release
(cancel, do not commit) the rest, commit what finished, leave the group, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from prometheus_client import CollectorRegistry

from histoprompt.core.errors import TransientError
from histoprompt.core.genesets import load_hallmark
from histoprompt.core.results import ResultStore
from histoprompt.core.s3 import make_minio
from histoprompt.core.schemas import ErrorInfo, utcnow
from histoprompt.ingest.errors import SourceRejectedError
from histoprompt.ingest.events import SlideJob, parse_jobs
from histoprompt.ingest.health import Health, MetricsServer, start_metrics_server
from histoprompt.ingest.logs import get_logger
from histoprompt.ingest.metrics import IngestMetrics, make_metrics
from histoprompt.ingest.pipeline import SlideOutcome, SlideProcessor
from histoprompt.ingest.ports import EventSource, Message, Processor, ResultSink
from histoprompt.ingest.publish import dead_letter, publish_outcome
from histoprompt.ingest.settings import IngestSettings
from histoprompt.wsi.triton import ServedModel, TritonClient

_LAG_EVERY_S = 5.0
_BEAT_EVERY_S = 1.0

# Per message, across its attempts: slide id -> its outcome until the result event is out,
# then None. A retry after a failed publish re-sends the event instead of reprocessing the
# slide, whose stored result would make it a duplicate with no event at all.
_Progress = dict[str, SlideOutcome | None]


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

    def _bind_loop(self) -> asyncio.Event:
        """The stop event of the running loop; set at once if a stop came first."""
        loop = asyncio.get_running_loop()
        if self._stop_event is None or self._loop is not loop:
            self._stop_event = asyncio.Event()
            self._loop = loop
        if self._stopping.is_set():
            self._stop_event.set()
        return self._stop_event

    # -- wiring ------------------------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        return asyncio.run(self.serve())

    async def serve(self) -> int:
        """Wait for the served model, then consume Kafka until stopped. Returns the exit code."""
        from histoprompt.ingest.kafka_io import KafkaEventSource, KafkaResultSink

        s = self.settings
        self._bind_loop()
        if s.ingest_metrics_port:
            self.metrics_server = start_metrics_server(
                s.ingest_metrics_port, self.registry, self.health, s.ingest_metrics_host
            )
        closers: list[Callable[[], object]] = []
        triton: TritonClient | None = None
        try:
            if self._stopping.is_set():
                return 0
            triton = TritonClient(
                s.triton_url,
                s.ingest_triton_timeout_s,
                s.ingest_max_attempts,
                s.ingest_retry_base_s,
            )
            served = await self._wait_for_model(triton)
            if served is None:
                return 0
            self.served = served
            minio = make_minio(s)
            sink = await asyncio.to_thread(KafkaResultSink, s)
            closers.append(sink.close)
            source = await asyncio.to_thread(KafkaEventSource, s)
            closers.append(source.close)
            gene_sets = self.gene_sets if self.gene_sets is not None else list(load_hallmark())
            store = ResultStore(minio, s.results_bucket)
            processor = SlideProcessor(s, minio, store, triton, served, gene_sets, self.metrics)
            self.log.info("consuming", extra={"model_version": served.version, "status": "ready"})
            await self.consume(source, sink, processor)
        finally:
            self.health.ready = False
            # The consumer leaves its group first, so its partitions move to another replica
            # without waiting for this producer's flush.
            for close in reversed(closers):
                await asyncio.to_thread(close)
            if triton is not None:
                await triton.close()
            if self.metrics_server is not None:
                self.metrics_server.close()
            self.log.info("stopped", extra={"status": "stopped"})
        return 0

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

    # -- the loop ----------------------------------------------------------------------------

    async def consume(self, source: EventSource, sink: ResultSink, processor: Processor) -> None:
        """Poll, handle, settle until stopped; ready meanwhile. Closes neither end."""
        self._bind_loop()
        s = self.settings
        beat = asyncio.create_task(self._beat_forever())
        self.health.ready = True
        last_lag = 0.0
        try:
            while not self._stopping.is_set():
                msgs = await asyncio.to_thread(
                    source.poll, s.ingest_concurrency, s.ingest_poll_timeout_s
                )
                if msgs:
                    handled = await self._handle_batch(msgs, sink, processor)
                    await asyncio.to_thread(source.settle, msgs, handled)
                if time.monotonic() - last_lag > _LAG_EVERY_S:
                    lag = await asyncio.to_thread(source.lag)
                    if lag is not None:
                        self.metrics.consumer_lag.set(lag)
                    last_lag = time.monotonic()
        finally:
            self.health.ready = False
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _beat_forever(self) -> None:
        """Liveness means the event loop turns: a slide in flight for minutes is not a stall."""
        every = min(_BEAT_EVERY_S, self.settings.ingest_liveness_timeout_s / 4)
        while True:
            self.health.beat()
            await asyncio.sleep(every)

    async def _handle_batch(
        self, msgs: Sequence[Message], sink: ResultSink, proc: Processor
    ) -> list[Message]:
        """Run the messages concurrently; those handled (committable), in batch order."""
        stop_event = self._bind_loop()
        tasks = {asyncio.create_task(self._handle(m, sink, proc)): m for m in msgs}
        stop = asyncio.create_task(stop_event.wait())
        pending: set[asyncio.Task[None]] = set(tasks)
        try:
            while pending and not stop.done():
                done, _ = await asyncio.wait(pending | {stop}, return_when=asyncio.FIRST_COMPLETED)
                pending -= done
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
        handled: list[Message] = []
        for task, msg in tasks.items():
            if not task.done() or task.cancelled():
                continue
            if task.exception() is None:
                handled.append(msg)
            else:
                self.log.error(
                    "message handler crashed", exc_info=task.exception(), extra={"code": "internal"}
                )
        return handled

    async def _handle(self, msg: Message, sink: ResultSink, proc: Processor) -> None:
        first_seen = utcnow()
        progress: _Progress = {}
        attempt = 1
        while True:
            try:
                for job in parse_jobs(msg.value, self.settings):
                    if isinstance(job, SlideJob):
                        await self._process_job(job, msg, sink, proc, progress)
                return
            except SourceRejectedError as err:
                error = ErrorInfo(code=err.code, message=str(err))
                await self._dead_letter(sink, msg, error, attempt, first_seen)
                return
            except (TransientError, OSError) as err:
                code = getattr(err, "code", "io_error")
                message = str(err) if isinstance(err, TransientError) else type(err).__name__
            except Exception as err:  # a bug must not crash-loop the consumer: DLQ it
                self.log.error("unexpected error", exc_info=err, extra={"code": "internal"})
                code, message = "internal", f"unexpected {type(err).__name__}"
            if attempt >= self.settings.ingest_max_attempts:
                error = ErrorInfo(code=code, message=message)
                await self._dead_letter(sink, msg, error, attempt, first_seen)
                return
            self.log.warning(
                "retrying", extra={"code": code, "attempt": attempt, "offset": msg.offset}
            )
            await asyncio.sleep(self.settings.ingest_retry_base_s * 2 ** (attempt - 1))
            attempt += 1

    async def _process_job(
        self, job: SlideJob, msg: Message, sink: ResultSink, proc: Processor, progress: _Progress
    ) -> None:
        sid = job.slide_id
        if sid in progress:
            outcome = progress[sid]
            if outcome is None:
                return  # its event went out in an earlier attempt of this message
        else:
            self.metrics.inflight.inc()
            try:
                outcome = await proc.process(job)
            finally:
                self.metrics.inflight.dec()
            progress[sid] = outcome
        await asyncio.to_thread(publish_outcome, sink, job, outcome)
        progress[sid] = None
        self.metrics.slides.labels(status=outcome.status).inc()
        if outcome.status != "skipped_duplicate" and msg.timestamp_ms > 0:
            self.metrics.slide_seconds.observe(max(0.0, time.time() - msg.timestamp_ms / 1000.0))

    async def _dead_letter(
        self, sink: ResultSink, msg: Message, error: ErrorInfo, attempts: int, first_seen: str
    ) -> None:
        await asyncio.to_thread(dead_letter, sink, msg, error, attempts, first_seen)
        self.metrics.slides.labels(status="dlq").inc()
        self.log.warning(
            "dead-lettered",
            extra={"status": "dlq", "code": error.code, "attempt": attempts, "offset": msg.offset},
        )
