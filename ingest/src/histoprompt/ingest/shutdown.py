"""Exit within the shutdown deadline, whatever is down.

A blocking client call (kafka-python waiting up to 60 s for metadata of a broker that is
gone, an S3 read on a server that stopped answering, a gRPC call) cannot be cancelled: the
asyncio task awaiting it is, but its worker thread runs on. `asyncio.run` then joins every
such thread before returning, and the interpreter joins them again at exit, so one call to a
dead service held a stopped worker for over a minute after it had released its slides.

`run_bounded` runs the service's coroutine on a loop whose thread pool it owns: after the
coroutine returns it gives the pool's threads until the deadline, and a process that still
has threads blocked then exits at once (`os._exit`, after the logs are flushed). That is
safe because nothing it abandons is committed: an offset is committed only after its
result and event are durable, so an abandoned call's message is delivered again.

`Watchdog` is the last resort for a wedged event loop: armed at SIGTERM, it ends the process
`margin_s` after the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from histoprompt.ingest.logs import get_logger

# Past the deadline, the watchdog's grace for an orderly exit already under way.
WATCHDOG_MARGIN_S = 2.0
# Exit code when the watchdog ends a wedged process (EX_SOFTWARE): never seen in an orderly
# stop, so a supervisor can tell the two apart.
WATCHDOG_EXIT = 70


def _hard_exit(code: int) -> None:
    logging.shutdown()  # flush the JSON log lines first: they say what was abandoned
    os._exit(code)


def _cancel_tasks(loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
    """Cancel what is left on the loop (the series ticker, say); wait at most `timeout_s`."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for t in tasks:
        t.cancel()
    loop.run_until_complete(asyncio.wait(tasks, timeout=max(0.05, timeout_s)))


def _join(pool: ThreadPoolExecutor, until: float) -> int:
    """Join the pool's threads until `until` (monotonic); the number still running."""
    pool.shutdown(wait=False, cancel_futures=True)
    threads = list(pool._threads)  # noqa: SLF001 - no public way to join with a timeout
    for t in threads:
        t.join(max(0.0, until - time.monotonic()))
    return sum(t.is_alive() for t in threads)


def run_bounded(
    main: Coroutine[Any, Any, int], deadline: Callable[[], float], hard_exit: bool
) -> int:
    """`asyncio.run(main)`, except that leaving takes no longer than `deadline()` (a
    monotonic time, read once `main` returns). With `hard_exit` a process whose threads are
    still blocked then exits at once; without it (in-process tests) they are left running."""
    loop = asyncio.new_event_loop()
    pool = ThreadPoolExecutor(thread_name_prefix="ingest-io")
    loop.set_default_executor(pool)
    code = 1
    try:
        code = loop.run_until_complete(main)
    finally:
        until = deadline()
        try:
            _cancel_tasks(loop, until - time.monotonic())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            stuck = _join(pool, until)
            loop.close()
    if stuck:
        get_logger().warning(
            "abandoned blocked calls at the shutdown deadline",
            extra={"status": "abandoned", "n_tiles": stuck},
        )
        if hard_exit:
            _hard_exit(code)
    return code


class Watchdog:
    """Ends the process `margin_s` after a deadline, should it still be running then."""

    def __init__(self, margin_s: float = WATCHDOG_MARGIN_S) -> None:
        self.margin_s = margin_s
        self._timer: threading.Timer | None = None

    def arm(self, deadline: float) -> None:
        if self._timer is not None:
            return
        wait = max(0.0, deadline - time.monotonic()) + self.margin_s
        self._timer = threading.Timer(wait, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        get_logger().error(
            "shutdown deadline passed; exiting", extra={"status": "abandoned", "code": "wedged"}
        )
        _hard_exit(WATCHDOG_EXIT)
