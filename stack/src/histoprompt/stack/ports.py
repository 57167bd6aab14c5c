"""Free TCP ports on the loopback interface, checked by binding them, never assumed."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from histoprompt.stack.errors import StackError

LOOPBACK = "127.0.0.1"

# Listening ports are taken below the kernel's ephemeral range, so that an outgoing client
# connection cannot grab a port between our bind test and the service's own bind.
_FALLBACK_EPHEMERAL = (32768, 60999)
_LOW_PORT = 20000


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral (outgoing) port range, from /proc when readable."""
    path = Path("/proc/sys/net/ipv4/ip_local_port_range")
    try:
        low, high = (int(v) for v in path.read_text().split())
    except (OSError, ValueError):
        return _FALLBACK_EPHEMERAL
    return low, high


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when `host:port` can be bound right now (TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def allocate_ports(count: int, host: str = LOOPBACK, *, attempts: int = 2000) -> list[int]:
    """`count` distinct ports that were bindable on `host` when chosen.

    All chosen sockets stay bound until every port is picked, so the ports are distinct.
    """
    low_eph, _ = ephemeral_range()
    high = max(_LOW_PORT + 1000, low_eph)
    rng = random.SystemRandom()
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(attempts):
            if len(ports) == count:
                break
            port = rng.randrange(_LOW_PORT, high)
            if port in ports:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            ports.append(port)
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
    if len(ports) < count:
        raise StackError(f"found only {len(ports)} of {count} free ports on {host}")
    return ports


def free_port(host: str = LOOPBACK) -> int:
    """One port that was bindable on `host` when chosen."""
    return allocate_ports(1, host)[0]


_TCP_LISTEN = "0A"


def listening_ports() -> set[int]:
    """TCP ports with a listening socket on this host (any address), from /proc/net/tcp*.

    Unlike a bind test this ignores TIME_WAIT leftovers of closed connections, which do
    not stop a server (they all set SO_REUSEADDR) from binding the port again.
    """
    return {int(fields[1].rsplit(":", 1)[1], 16) for fields in _listen_rows()}


def _listen_rows() -> Iterator[list[str]]:
    """The fields of every listening row of /proc/net/tcp and /proc/net/tcp6."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _TCP_LISTEN:
                yield fields


def _decode_address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address from /proc/net/tcp{,6}: host byte order per 32-bit word."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ipaddress.IPv4Address(words)
    v6 = ipaddress.IPv6Address(words)
    return v6.ipv4_mapped or v6


def listening_addresses(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the given processes listen on."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:
            continue
        inodes.update(link[8:-1] for link in links if link.startswith("socket:["))
    found: set[tuple[str, int]] = set()
    for fields in _listen_rows():
        if fields[9] in inodes:
            host, port = fields[1].rsplit(":", 1)
            found.add((str(_decode_address(host)), int(port, 16)))
    return found


def wait_released(ports: set[int], timeout: float) -> set[int]:
    """Wait until none of `ports` has a listening socket; returns those still listening.

    A stopped service's last helper (e.g. a backend stub that inherited a listening socket)
    can outlive it by a moment; `down` waits for that so the ports are free when it returns.
    """
    deadline = time.monotonic() + timeout
    while True:
        still = ports & listening_ports()
        if not still or time.monotonic() >= deadline:
            return still
        time.sleep(0.1)
