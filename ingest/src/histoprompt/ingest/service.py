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

SIGTERM/SIGINT: stop polling, give in-flight slides until the deadline less a close budget
to finish, release (cancel, do not commit) the rest, commit what finished, leave the group,
exit 0. Every step after the release is bounded by what is left of the deadline, and calls
still blocked on a dead service at the deadline are abandoned (histoprompt.ingest.shutdown):
the process exits within HISTOPROMPT_INGEST_SHUTDOWN_DEADLINE_S whatever is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TypeVar

from prometheus_client import CollectorRegistry

from histoprompt.core.errors import ServiceUnavailableError, TransientError
from histoprompt.core.genesets import load_hallmark
from histoprompt.core.preflight import check_all
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
from histoprompt.ingest.shutdown import Watchdog, run_bounded
from histoprompt.wsi.triton import ServedModel, TritonClient

T = TypeVar("T")

_LAG_EVERY_S = 5.0
_BEAT_EVERY_S = 1.0
_KEEP_ALIVE_POLL_S = 0.1
# One try per request: the handler's per-delivery retries are the only ones (handler.py).
_ONE_TRY = 1
_S3_CONNECT_TIMEOUT_S = 10.0
# Of the shutdown deadline, what settling, leaving the group and closing the clients get
# (at most half of it): in-flight slides are released this long before the deadline.
_CLOSE_BUDGET_S = 5.0
# The least time a shutdown step gets, even past the deadline (it may well be instant).
_MIN_STEP_S = 0.1


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
        self._watchdog: Watchdog | None = None

    # -- stopping ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Thread- and signal-safe: finish or release in-flight work, then return from run()."""
        if not self._stopping.is_set():
            self._deadline = time.monotonic() + self.settings.ingest_shutdown_deadline_s
            self._stopping.set()
            if self._watchdog is not None:
                self._watchdog.arm(self._deadline)
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
        """Serve until stopped. With `install_signals` (a process of its own) the exit is
        forced at the deadline: in-process callers (tests) get their threads left instead."""
        if install_signals:
            self._watchdog = Watchdog()
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        # The watchdog stays armed past this return: the interpreter's own exit (threads of
        # a client whose close was abandoned) is part of the deadline too.
        return run_bounded(self.serve(), self._exit_by, hard_exit=install_signals)

    def _exit_by(self) -> float:
        """When leaving must be done: the deadline once stopping, else a close budget away."""
        if self._stopping.is_set():
            return self._deadline
        return time.monotonic() + self._close_budget()

    def _close_budget(self) -> float:
        return min(_CLOSE_BUDGET_S, self.settings.ingest_shutdown_deadline_s / 2)

    async def _blocking(self, what: str, call: Callable[[], T]) -> T | None:
        """`call()` in a thread; while stopping, bounded by what is left of the deadline
        (then None, and the call is abandoned to the exit: see histoprompt.ingest.shutdown)."""
        left = None
        if self._stopping.is_set():
            left = max(_MIN_STEP_S, self._deadline - time.monotonic())
        try:
            return await asyncio.wait_for(asyncio.to_thread(call), left)
        except TimeoutError:
            self.log.warning(
                "abandoned at the shutdown deadline", extra={"status": "abandoned", "code": what}
            )
            return None

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
            await self._refused_at_start()
            triton = TritonClient(
                s.triton_url,
                s.ingest_triton_timeout_s,
                _ONE_TRY,
                s.ingest_retry_base_s,
                tls=s.triton_grpc_options(),
            )
            served = await self._wait_for_model(triton)
            if served is None:
                return 0
            self.served = served
            minio = make_minio(s, connect_timeout=_S3_CONNECT_TIMEOUT_S, retries=0)
            # A broker that is down holds each constructor for its bootstrap timeout (30 s).
            sink = await self._unless_stopped(lambda: KafkaResultSink(s))
            if sink is None:
                return 0
            closers.append(sink.close)
            source = await self._unless_stopped(lambda: KafkaEventSource(s))
            if source is None:
                return 0
            closers.append(source.close)
            gene_sets = self.gene_sets if self.gene_sets is not None else list(load_hallmark())
            store = ResultStore(minio, s.results_bucket)
            processor = SlideProcessor(s, minio, store, triton, served, gene_sets, self.metrics)
            deliveries = S3DeliveryLog(minio, s.results_bucket, s.ingest_group_id)
            self.log.info("consuming", extra={"model_version": served.version, "status": "ready"})
            await self.consume(source, sink, processor, deliveries)
        finally:
            self.health.ready = False
            if not self._stopping.is_set():  # a crash: leave within a deadline too
                self.request_stop()
            # The consumer leaves its group first, so its partitions move to another replica
            # without waiting for this producer's flush.
            for close in reversed(closers):
                await self._blocking("close", close)
            if triton is not None:
                with contextlib.suppress(TimeoutError):
                    left = max(_MIN_STEP_S, self._deadline - time.monotonic())
                    await asyncio.wait_for(triton.close(), left)
            if self.metrics_server is not None:
                self.metrics_server.close()
            self.log.info("stopped", extra={"status": "stopped"})
        return 0

    async def _refused_at_start(self) -> None:
        """Raise PermissionDeniedError when a service refuses our credentials or we refuse its
        certificate: no retry fixes that, so the process ends before it consumes anything.
        An unreachable service is left to the usual waiting and retries."""
        try:
            await asyncio.to_thread(check_all, self.settings, ("kafka", "s3", "triton"))
        except ServiceUnavailableError as err:
            self.log.warning("start-up check inconclusive", extra={"code": err.code})

    async def _unless_stopped(self, call: Callable[[], T]) -> T | None:
        """`call()` in a thread, or None when a stop comes first (the call is abandoned)."""
        stop = asyncio.create_task(self._bind_loop().wait())
        work = asyncio.ensure_future(asyncio.to_thread(call))
        try:
            await asyncio.wait({stop, work}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if work.done():
            return work.result()
        work.cancel()
        return None

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
                    lag = await self._blocking("lag", source.lag)
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
        committed = await self._blocking("settle", lambda: source.settle(msgs, handled)) or []
        # A delivery this process ends, committed or not, was no crash: only deliveries cut
        # short by the worker's death stay counted.
        done = {(m.partition, m.offset) for m in committed}
        released = [m for m in msgs if (m.partition, m.offset) not in done]
        try:
            await self._blocking("delivery_count", lambda: _update(log, committed, released))
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
                    left = self._deadline - time.monotonic() - self._close_budget()
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


def _update(log: DeliveryLog, committed: Sequence[Message], released: Sequence[Message]) -> None:
    log.forget(committed)
    for m in released:
        log.release(m)
