"""Free-port allocation: ports are bind-tested, distinct, and busy ports are skipped."""

from __future__ import annotations

import socket

from histoprompt.stack.ports import (
    allocate_ports,
    ephemeral_range,
    free_port,
    listening_ports,
    port_is_free,
)
from histoprompt.stack.ports_layout import StackPorts


def test_allocated_ports_are_distinct_and_bindable() -> None:
    ports = allocate_ports(20)
    assert len(set(ports)) == 20
    low, _ = ephemeral_range()
    for port in ports:
        assert port < low  # below the outgoing-connection range
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_busy_port_is_reported_busy() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        assert not port_is_free(busy)
        assert busy in listening_ports()
        assert busy not in allocate_ports(50)
    assert busy not in listening_ports()
    assert port_is_free(free_port())


def test_stack_ports_keep_a_given_ingest_port() -> None:
    ports = StackPorts.allocate(ingest_metrics=free_port())
    values = list(ports.model_dump().values())
    assert len(set(values)) == len(values)
    fixed = StackPorts.allocate(ingest_metrics=ports.ingest_metrics)
    assert fixed.ingest_metrics == ports.ingest_metrics


def test_wait_released_returns_once_the_listener_closes() -> None:
    import threading

    from histoprompt.stack.ports import wait_released

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    assert wait_released({port}, 0.2) == {port}
    threading.Timer(0.3, sock.close).start()
    assert wait_released({port}, 5.0) == set()
