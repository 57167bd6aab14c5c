"""One message, one delivery: count it, retry it, bound it, publish what happened.

Retries happen here and only here: the Triton client the service builds makes one try per
call, and the S3 client none of its own, so `HISTOPROMPT_INGEST_MAX_ATTEMPTS` is the number
of tries a delivery gets, whatever failed. Between tries tenacity waits
`retry_base_s × 2^(n-1)` plus up to `retry_base_s` of random jitter (at most 30 s), so
replicas that failed together do not retry together.

Across deliveries the DeliveryLog counts (a worker killed mid-slide counts too): a message
delivered more than `HISTOPROMPT_INGEST_MAX_DELIVERIES` times goes to the DLQ as `crash_loop`
without being processed again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from histoprompt.core.errors import HistopromptError
from histoprompt.core.schemas import ErrorInfo, utcnow
from histoprompt.ingest.errors import DeadlineExceededError, SourceRejectedError
from histoprompt.ingest.events import SlideJob, parse_jobs
from histoprompt.ingest.logs import get_logger
from histoprompt.ingest.metrics import IngestMetrics
from histoprompt.ingest.pipeline import SlideOutcome
from histoprompt.ingest.ports import DeliveryLog, Message, Processor, ResultSink
from histoprompt.ingest.publish import dead_letter, publish_outcome
from histoprompt.ingest.settings import IngestSettings

T = TypeVar("T")
RETRY_MAX_WAIT_S = 30.0

# Per message, across its tries: slide id -> its outcome until the result event is out,
# then None. A retry after a failed publish re-sends the event instead of reprocessing the
# slide, whose stored result would make it a duplicate with no event at all.
_Progress = dict[str, SlideOutcome | None]


def _retryable(err: BaseException) -> bool:
    """Transient trouble and bugs are retried; a rejected event or a deadline never is, nor a
    cancellation (tenacity sees BaseExceptions too: a released slide must stay released)."""
    if not isinstance(err, Exception):
        return False
    return not isinstance(err, SourceRejectedError | DeadlineExceededError)


def _code(err: BaseException) -> tuple[str, str]:
    if isinstance(err, HistopromptError):  # transient or not, the project's own code
        return err.code, str(err)
    if isinstance(err, OSError):
        return "io_error", type(err).__name__
    return "internal", f"unexpected {type(err).__name__}"


class MessageHandler:
    """Handles one delivered message at a time per call; many calls may run concurrently."""

    def __init__(
        self,
        settings: IngestSettings,
        sink: ResultSink,
        processor: Processor,
        deliveries: DeliveryLog,
        metrics: IngestMetrics,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.processor = processor
        self.deliveries = deliveries
        self.metrics = metrics
        self.log = get_logger()

    def _retrying(self) -> AsyncRetrying:
        s = self.settings
        return AsyncRetrying(
            stop=stop_after_attempt(s.ingest_max_attempts),
            wait=wait_exponential_jitter(
                initial=s.ingest_retry_base_s, max=RETRY_MAX_WAIT_S, jitter=s.ingest_retry_base_s
            ),
            retry=retry_if_exception(_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _log_retry(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome is not None else None
        code = _code(err)[0] if err is not None else "unknown"
        if code == "internal":
            self.log.error("unexpected error", exc_info=err, extra={"code": code})
        self.log.warning("retrying", extra={"code": code, "attempt": state.attempt_number})

    async def _retried(self, call: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """`call`'s value and the tries it took; the last error is re-raised."""
        retrying = self._retrying()
        async for attempt in retrying:
            # tenacity's attempt swallows the error and its iterator decides: retry, or
            # re-raise it (a cancellation too). Only an attempt that succeeded returns.
            with attempt:
                value = await call()
            outcome = attempt.retry_state.outcome
            if outcome is not None and not outcome.failed:
                return value, attempt.retry_state.attempt_number
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    async def handle(self, msg: Message) -> None:
        """Process `msg` to a result event or a DLQ event; raises only when cancelled."""
        first_seen = utcnow()
        tries = 0
        try:
            delivery, _ = await self._retried(
                lambda: asyncio.to_thread(self.deliveries.arrive, msg)
            )
            first_seen = delivery.first_seen
            if delivery.count > self.settings.ingest_max_deliveries:
                error = ErrorInfo(
                    code="crash_loop",
                    message=f"delivered {delivery.count - 1} times without finishing; "
                    "the worker died each time (killed, out of memory)",
                )
                await self._dead_letter(msg, error, delivery.count - 1, first_seen)
                return
            progress: _Progress = {}
            retrying = self._retrying()
            async for attempt in retrying:
                tries = attempt.retry_state.attempt_number
                with attempt:
                    await self._jobs(msg, progress)
        except SourceRejectedError as err:
            await self._dead_letter(msg, ErrorInfo(code=err.code, message=str(err)), 1, first_seen)
        except DeadlineExceededError as err:
            error = ErrorInfo(code=err.code, message=str(err))
            await self._dead_letter(msg, error, max(tries, 1), first_seen)
        except Exception as err:  # transient past its tries, or a bug: DLQ, never crash-loop
            code, message = _code(err)
            if code == "internal":
                self.log.error("unexpected error", exc_info=err, extra={"code": code})
            error = ErrorInfo(code=code, message=message)
            await self._dead_letter(msg, error, max(tries, 1), first_seen)

    async def _jobs(self, msg: Message, progress: _Progress) -> None:
        delivery = f"{self.settings.ingest_group_id}/{msg.topic}/{msg.partition}/{msg.offset}"
        for job in parse_jobs(msg.value, self.settings):
            if isinstance(job, SlideJob):
                job = dataclasses.replace(job, delivery=delivery)
                await self._process_job(job, msg, progress)

    async def _process(self, job: SlideJob) -> SlideOutcome:
        """The processor's outcome within the slide deadline."""
        deadline = self.settings.ingest_slide_deadline_s
        timeout = asyncio.timeout(deadline)
        try:
            async with timeout:
                return await self.processor.process(job)
        except TimeoutError as err:
            if not timeout.expired():
                raise  # a socket timeout inside, not the deadline
            self.log.warning(
                "slide deadline exceeded", extra={"slide_id": job.slide_id, "seconds": deadline}
            )
            raise DeadlineExceededError(
                f"slide not finished within {deadline:.0f} s (HISTOPROMPT_INGEST_SLIDE_DEADLINE_S)"
            ) from err

    async def _process_job(self, job: SlideJob, msg: Message, progress: _Progress) -> None:
        sid = job.slide_id
        if sid in progress:
            outcome = progress[sid]
            if outcome is None:
                return  # its event went out in an earlier try of this message
        else:
            self.metrics.inflight.inc()
            try:
                outcome = await self._process(job)
            finally:
                self.metrics.inflight.dec()
            progress[sid] = outcome
        await asyncio.to_thread(publish_outcome, self.sink, job, outcome)
        progress[sid] = None
        if outcome.status == "series_instance":
            return  # one instance of a series, not a slide: counted by ingest.series
        self.metrics.slides.labels(status=outcome.status).inc()
        if outcome.status != "skipped_duplicate" and msg.timestamp_ms > 0:
            self.metrics.slide_seconds.observe(max(0.0, time.time() - msg.timestamp_ms / 1000.0))

    async def _dead_letter(
        self, msg: Message, error: ErrorInfo, attempts: int, first_seen: str
    ) -> None:
        """Publish the DLQ event, retried like everything else; the error is logged by code."""
        await self._retried(
            lambda: asyncio.to_thread(
                dead_letter, self.sink, msg, error, attempts, first_seen, self.settings
            )
        )
        self.metrics.slides.labels(status="dlq").inc()
        self.log.warning(
            "dead-lettered",
            extra={"status": "dlq", "code": error.code, "attempt": attempts, "offset": msg.offset},
        )
