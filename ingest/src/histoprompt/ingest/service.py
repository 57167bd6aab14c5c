"""The consumer service: poll, process up to `ingest_concurrency` messages, settle, repeat.

One asyncio program: `run()` is `asyncio.run(serve())`; the blocking Kafka client runs in
worker threads. `serve()` wires Kafka, S3 and Triton; `consume()` is the loop over any
EventSource / ResultSink / Processor / DeliveryLog (histoprompt.ingest.ports); one message
is handled by histoprompt.ingest.handler (delivery count, retries, slide deadline, events).

While a batch runs its partitions are held (paused) and the loop keeps polling, so the group
keeps this member however long a slide takes (no rebalance, no second delivery meanwhile).

At-least-once: an offset is committed only after its result is in S3 and its result event
(or its DLQ event) is acknowledged, and only on partitions this member still owns. Offsets are
committed per partition up to the first message not handled, so a released message is
redelivered.

Liveness (/healthz): the event loop beats every second and every poll beats too, so a slide
of any length keeps the worker alive and a wedged loop or consumer does not.

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
from histoprompt.ingest.deliveries import S3DeliveryLog
from histoprompt.ingest.handler import MessageHandler
from histoprompt.ingest.health import Health, MetricsServer, start_metrics_server
from histoprompt.ingest.logs import get_logger
from histoprompt.ingest.metrics import IngestMetrics, make_metrics
from histoprompt.ingest.pipeline import SlideProcessor
from histoprompt.ingest.ports import DeliveryLog, EventSource, Message, Processor, ResultSink
from histoprompt.ingest.settings import IngestSettings
from histoprompt.wsi.triton import ServedModel, TritonClient

_LAG_EVERY_S = 5.0
_BEAT_EVERY_S = 1.0
_KEEP_ALIVE_POLL_S = 0.1
# One try per request: the handler's per-delivery retries are the only ones (handler.py).
_ONE_TRY = 1
_S3_CONNECT_TIMEOUT_S = 10.0


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
                s.triton_url, s.ingest_triton_timeout_s, _ONE_TRY, s.ingest_retry_base_s
            )
            served = await self._wait_for_model(triton)
            if served is None:
                return 0
            self.served = served
            minio = make_minio(s, connect_timeout=_S3_CONNECT_TIMEOUT_S, retries=0)
            sink = await asyncio.to_thread(KafkaResultSink, s)
            closers.append(sink.close)
            source = await asyncio.to_thread(KafkaEventSource, s)
            closers.append(source.close)
            gene_sets = self.gene_sets if self.gene_sets is not None else list(load_hallmark())
            store = ResultStore(minio, s.results_bucket)
            processor = SlideProcessor(s, minio, store, triton, served, gene_sets, self.metrics)
            deliveries = S3DeliveryLog(minio, s.results_bucket, s.ingest_group_id)
            self.log.info("consuming", extra={"model_version": served.version, "status": "ready"})
            await self.consume(source, sink, processor, deliveries)
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
            self.health.polled()
            try:
                if await triton.ready():
                    return await triton.served_model()
            except TransientError as err:
                self.log.warning("model not ready", extra={"code": err.code})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        return None

    # -- the loop ----------------------------------------------------------------------------

    async def consume(
        self,
        source: EventSource,
        sink: ResultSink,
        processor: Processor,
        deliveries: DeliveryLog | None = None,
    ) -> None:
        """Poll, handle, settle until stopped; ready meanwhile. Closes neither end.
        Without `deliveries` the counts live in memory (they then do not survive a crash)."""
        from histoprompt.ingest.memory_io import InMemoryDeliveryLog

        self._bind_loop()
        s = self.settings
        deliveries = deliveries if deliveries is not None else InMemoryDeliveryLog()
        handler = MessageHandler(s, sink, processor, deliveries, self.metrics)
        beat = asyncio.create_task(self._beat_forever())
        self.health.ready = True
        last_lag = 0.0
        try:
            while not self._stopping.is_set():
                msgs = await asyncio.to_thread(
                    source.poll, s.ingest_concurrency, s.ingest_poll_timeout_s
                )
                self.health.polled()
                if msgs:
                    await self._run_batch(msgs, source, handler, deliveries)
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

    async def _run_batch(
        self,
        msgs: Sequence[Message],
        source: EventSource,
        handler: MessageHandler,
        log: DeliveryLog,
    ) -> None:
        """Hold the partitions, handle the batch while polling on, settle, un-hold."""
        await asyncio.to_thread(source.hold)
        handled = await self._handle_batch(msgs, source, handler)
        committed = await asyncio.to_thread(source.settle, msgs, handled)
        # A delivery this process ends, committed or not, was no crash: only deliveries cut
        # short by the worker's death stay counted.
        done = {(m.partition, m.offset) for m in committed}
        released = [m for m in msgs if (m.partition, m.offset) not in done]
        try:
            await asyncio.to_thread(log.forget, committed)
            for m in released:
                await asyncio.to_thread(log.release, m)
        except TransientError as err:  # a stale count costs at most an early crash_loop
            self.log.warning("delivery count not updated", extra={"code": err.code})

    def _keep_alive_every(self) -> float:
        s = self.settings
        return max(
            0.05, min(1.0, s.ingest_max_poll_interval_s / 4, s.ingest_liveness_timeout_s / 4)
        )

    async def _handle_batch(
        self, msgs: Sequence[Message], source: EventSource, handler: MessageHandler
    ) -> list[Message]:
        """Run the messages concurrently, polling on; those handled (committable), in order."""
        stop_event = self._bind_loop()
        tasks = {asyncio.create_task(handler.handle(m)): m for m in msgs}
        stop = asyncio.create_task(stop_event.wait())
        pending: set[asyncio.Task[None]] = set(tasks)
        every = self._keep_alive_every()
        try:
            while pending:
                if stop.done():
                    left = self._deadline - time.monotonic() - 1.0
                    if left <= 0:
                        break
                    wait_s = min(every, left)
                else:
                    wait_s = every
                done, _ = await asyncio.wait(
                    pending | {stop}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                )
                pending -= done
                if pending:
                    await asyncio.to_thread(source.keep_alive, _KEEP_ALIVE_POLL_S)
                    self.health.polled()
            if pending:
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
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
