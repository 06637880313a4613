"""gateway/ports.py: free loopback ports below the ephemeral range, per worker block."""

from __future__ import annotations

import os
import socket

import pytest

from gateway import ports


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range(monkeypatch):
    monkeypatch.delenv(ports.PORT_BLOCK_ENV, raising=False)
    got = ports.free_ports(range(20))
    low, high = ports.port_block()
    assert len(set(got.values())) == 20 and high < ports._ephemeral_low()
    for port in got.values():
        assert low <= port <= high
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_block_narrows_the_draw_and_a_taken_port_is_never_chosen(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        monkeypatch.setenv(ports.PORT_BLOCK_ENV, f"{busy}-{busy + 1}")
        if busy + 1 > 65535:
            pytest.skip("the kernel gave the highest port")
        try:
            assert ports.free_port() == busy + 1
        except OSError:
            pytest.skip(f"port {busy + 1} is in use by something else")
        monkeypatch.setenv(ports.PORT_BLOCK_ENV, f"{busy}-{busy + 1}")
        with pytest.raises(OSError, match="no 3 free ports"):
            ports.free_ports("abc")


@pytest.mark.parametrize("spec", ["9000", "80-90", "30000-20000", "x-y", "30000-70000"])
def test_a_malformed_block_is_refused(monkeypatch, spec):
    monkeypatch.setenv(ports.PORT_BLOCK_ENV, spec)
    with pytest.raises(ValueError):
        ports.port_block()


def test_a_process_is_never_given_the_same_port_twice(monkeypatch):
    # Separate draws (the demo's gateway ports, then its ledger's, then a centre's listener) must
    # not collide while none of them is bound yet: a block of 40 ports drawn 40 times, one by one.
    low = 20_000 + (os.getpid() % 100) * 40
    monkeypatch.setenv(ports.PORT_BLOCK_ENV, f"{low}-{low + 39}")
    monkeypatch.setattr(ports, "_GIVEN", set())
    got = []
    for _ in range(40):
        try:
            got.append(ports.free_port())
        except OSError:
            pytest.skip("some port of the block is in use by something else")
    assert len(set(got)) == 40
    with pytest.raises(OSError):
        ports.free_port()
