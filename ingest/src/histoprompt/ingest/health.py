"""HTTP endpoints: /metrics (the given registry), /healthz (liveness), /readyz (readiness)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


@dataclass
class Health:
    """Liveness: the event loop beat recently and the consumer polled recently (it polls on
    while slides run, so neither depends on slide length). Readiness: Triton model known,
    Kafka joined."""

    liveness_timeout_s: float = 120.0
    last_beat: float = field(default_factory=time.monotonic)
    last_poll: float = field(default_factory=time.monotonic)
    ready: bool = False

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def alive(self) -> bool:
        now = time.monotonic()
        oldest = min(self.last_beat, self.last_poll)
        return now - oldest < self.liveness_timeout_s


class MetricsServer:
    """A small threaded HTTP server; `close()` stops it."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(registry: CollectorRegistry, health: Health | None) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
        "/metrics": lambda: (200, generate_latest(registry), CONTENT_TYPE_LATEST),
        "/healthz": lambda: (
            (200, b"ok\n", "text/plain")
            if health is None or health.alive()
            else (503, b"event loop or consumer stalled\n", "text/plain")
        ),
        "/readyz": lambda: (
            (200, b"ready\n", "text/plain")
            if health is None or health.ready
            else (503, b"not ready\n", "text/plain")
        ),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            route = routes.get(self.path.split("?", 1)[0])
            code, body, ctype = route() if route else (404, b"not found\n", "text/plain")
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return None  # scrapes every few seconds would drown the JSON logs

    return Handler


def start_metrics_server(
    port: int, registry: CollectorRegistry, health: Health | None = None, host: str = "127.0.0.1"
) -> MetricsServer:
    """Serve /metrics, /healthz and /readyz on host:port (port 0 picks a free one)."""
    server = ThreadingHTTPServer((host, port), _handler(registry, health))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ingest-metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
