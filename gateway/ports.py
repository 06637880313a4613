"""Free loopback ports for the demo, the simulators and the tests, chosen so nothing else takes them.

A port found free by binding port 0 is one of the kernel's ephemeral ports: between the moment
it is chosen and the moment the process meant to listen on it binds, the kernel may hand the
same number to any outgoing connection (a database session, a bank link) as its local port,
and the listener then fails with "address in use", or a client reaches a stranger. So ports
are drawn at random from below the ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``;
32768 when it cannot be read), which the kernel never hands out by itself, each one checked by
binding it, all held until every one is chosen, and never one this process was given before (a
port handed out and not yet bound looks free to the next draw).

``HPF_PORT_BLOCK=LOW-HIGH`` narrows the draw: the test suite gives each of its parallel
workers a block of its own (tests/conftest.py), so two workers never draw the same port, and
the processes a test starts inherit it.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterable
from typing import TypeVar

__all__ = ["PORT_BLOCK_ENV", "free_port", "free_ports", "port_block"]

K = TypeVar("K")

PORT_BLOCK_ENV = "HPF_PORT_BLOCK"
_LOWEST = 10_000  # below: ports that well-known local services tend to use
_GIVEN: set[int] = set()  # every port this process handed out (its listeners may not be up yet)


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_block() -> tuple[int, int]:
    """The ports to draw from, inclusive: ``HPF_PORT_BLOCK`` or everything between 10000 and the
    ephemeral range.  ``ValueError`` for a malformed ``HPF_PORT_BLOCK``."""
    spec = os.environ.get(PORT_BLOCK_ENV)
    if spec:
        low_s, sep, high_s = spec.partition("-")
        low, high = int(low_s), int(high_s)
        if not sep or not 1024 <= low < high <= 65535:
            raise ValueError(f"{PORT_BLOCK_ENV} must be LOW-HIGH within 1024..65535, got {spec!r}")
        return low, high
    return _LOWEST, max(_LOWEST + 1000, _ephemeral_low() - 1)


def free_ports(names: Iterable[K]) -> dict[K, int]:
    """A distinct port free on 127.0.0.1 for each name, drawn from :func:`port_block`."""
    wanted = list(names)
    low, high = port_block()
    rng = random.SystemRandom()
    held: list[socket.socket] = []
    chosen: list[int] = []
    try:
        for _ in range(50 * len(wanted) + 100):
            if len(chosen) == len(wanted):
                break
            port = rng.randint(low, high)
            if port in chosen or port in _GIVEN:
                continue
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
            chosen.append(port)
        else:
            if len(chosen) < len(wanted):
                raise OSError(f"no {len(wanted)} free ports on 127.0.0.1 in {low}-{high}")
    finally:
        for s in held:
            s.close()
    _GIVEN.update(chosen)
    return dict(zip(wanted, chosen))


def free_port() -> int:
    """One port free on 127.0.0.1, drawn from :func:`port_block`."""
    return free_ports([0])[0]
