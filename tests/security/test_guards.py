"""The centre API's guards against slow and greedy clients ([limits] centre_*), over real loopback TLS.

Each test runs the in-process gateway with short limits and proves one guard:
the connection is dropped (or the request refused with 429) within a bounded
time, the refusal is counted in ``hpf_gateway_security_events_total{kind}``
and logged with the peer, and a well-behaved client next to it is served.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from gateway.demo import CENTRE
from gateway.centre_guard import RateLimiter
from gateway.token_bucket import TokenBucket
from gateway.simulate.run import api_url
from gateway.tls import client_options
from gateway.listener import when_listening
from tests.integration.harness import OTHER_CENTRE, Harness, start_harness
from tests.security.support import (Https, capture_logs, client_hello, connect_tcp, connect_tls, counter, settle,
                                    sleep)

# Long enough for a loaded 2-core machine to finish a real handshake, short enough for a fast test.
SHORT = 1.0
LONG = 30.0


def _port(h: Harness) -> int:
    return int(api_url(h.config).rsplit(":", 1)[1])


def _https(h: Harness, centre: str = CENTRE) -> Https:
    return Https(h.pki.cert("centre", centre), h.pki.key("centre", centre), h.pki.ca_cert)


def _centre_tls(h: Harness, centre: str = CENTRE) -> Any:
    return client_options(h.pki.cert("centre", centre), h.pki.key("centre", centre), [h.pki.ca_cert])


@pytest_twisted.async_yield_fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    """``await make(**limits)``: a gateway (no banks) with those [limits]."""
    started: list[Harness] = []

    async def start(**limits: Any) -> Harness:
        h = await start_harness(tmp_path, banks={}, limits=limits)
        await when_listening(h.gateway.listeners["centre_api"])
        started.append(h)
        return h

    yield start
    for h in started:
        await h.stop()


# -- slow clients -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_client_that_sends_nothing_is_dropped_after_the_handshake_timeout(make: Any) -> None:
    h = await make(centre_handshake_timeout=SHORT, centre_request_timeout=LONG, centre_idle_timeout=LONG)
    with capture_logs() as logs:
        silent = await connect_tcp(_port(h))
        await settle(silent, SHORT + 5)
    assert not silent.open, "a silent connection must be dropped"
    assert silent.lost_at - silent.connected_at < SHORT + 3  # not the 30 s idle or request timeouts
    assert counter(h.gateway.metrics, "handshake_timeout") == 1
    [event] = logs.named("centre_api.handshake_timeout")
    assert event["ip"] == "127.0.0.1" and event["kind"] == "handshake_timeout"


@pytest_twisted.ensureDeferred
async def test_a_client_dribbling_its_client_hello_is_dropped_although_bytes_keep_coming(make: Any) -> None:
    h = await make(centre_handshake_timeout=SHORT, centre_request_timeout=LONG, centre_idle_timeout=LONG)
    hello = client_hello()
    slow = await connect_tcp(_port(h))
    sent = 0
    while slow.open and sent < len(hello) and sent < 200:
        slow.transport.write(hello[sent:sent + 1])  # type: ignore[union-attr]
        sent += 1
        await sleep(0.05)
    await settle(slow, SHORT + 5)
    assert not slow.open
    assert sent < len(hello), "the whole ClientHello went through: the test proves nothing"
    assert slow.lost_at - slow.connected_at < SHORT + 3
    assert counter(h.gateway.metrics, "handshake_timeout") == 1


@pytest_twisted.ensureDeferred
async def test_a_client_dribbling_request_headers_after_the_handshake_is_dropped(make: Any) -> None:
    h = await make(centre_handshake_timeout=SHORT, centre_request_timeout=2 * SHORT, centre_idle_timeout=LONG)
    loris = await connect_tls(_port(h), _centre_tls(h))
    loris.transport.write(b"GET /v1/results HTTP/1.1\r\nHost: localhost\r\n")  # type: ignore[union-attr]
    for _ in range(100):
        if not loris.open:
            break
        loris.transport.write(b"X-Slow: 1\r\n")  # type: ignore[union-attr]
        await sleep(0.1)  # every byte would reset an idle timer; the request deadline does not move
    await settle(loris, 5)
    assert not loris.open
    assert loris.handshake, "the handshake should have succeeded: only the request was too slow"
    assert loris.lost_at - loris.connected_at < 2 * SHORT + 3
    assert counter(h.gateway.metrics, "request_timeout") == 1
    assert counter(h.gateway.metrics, "handshake_timeout") == 0
    # A normal request on a fresh connection is still served at once.
    answer = await _https(h).call("GET", api_url(h.config) + "/v1/results")
    assert answer.status == 200


@pytest_twisted.ensureDeferred
async def test_an_idle_keep_alive_connection_is_closed_after_the_configured_idle_timeout(make: Any) -> None:
    h = await make(centre_handshake_timeout=SHORT, centre_request_timeout=SHORT, centre_idle_timeout=SHORT)
    conn = await connect_tls(_port(h), _centre_tls(h))
    conn.transport.write(b"GET /v1/results HTTP/1.1\r\nHost: localhost\r\n\r\n")  # type: ignore[union-attr]
    await conn.got_data.addTimeout(10, reactor)
    assert conn.received.startswith(b"HTTP/1.1 200")
    answered = reactor.seconds()
    await settle(conn, SHORT + 20)  # Twisted closes after idle_timeout (+ up to 15 s to abort)
    assert not conn.open
    assert conn.lost_at - answered < SHORT + 17
    # Answering is not idling: a long poll longer than the idle timeout is answered.
    answer = await _https(h).call("GET", api_url(h.config) + f"/v1/results?wait={3 * SHORT}")
    assert answer.status == 200 and answer.body["results"] == []


# -- connection caps -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connections_from_one_address_are_capped_before_the_handshake(make: Any) -> None:
    h = await make(centre_connections_per_ip=2, centre_handshake_timeout=LONG, centre_request_timeout=LONG)
    with capture_logs() as logs:
        first, second = await connect_tcp(_port(h)), await connect_tcp(_port(h))
        third = await connect_tcp(_port(h))
        await settle(third, 3)
        assert not third.open, "the connection over the cap must be refused"
        await sleep(0.3)
        assert first.open and second.open
        first.close()
        await settle(first, 3)
        await sleep(0.2)  # the server sees the close
        fourth = await connect_tcp(_port(h))
        await settle(fourth, 0.5)
        assert fourth.open, "after one closed, a new connection from the address is taken"
    for probe in (second, fourth):
        probe.close()
    assert counter(h.gateway.metrics, "connection_limit") == 1
    [event] = logs.named("centre_api.connection_limit")
    assert event["ip"] == "127.0.0.1" and event["per"] == "source address"


@pytest_twisted.ensureDeferred
async def test_connections_per_centre_identity_are_capped_and_other_centres_are_not_affected(make: Any) -> None:
    h = await make(centre_connections_per_centre=1)
    with capture_logs() as logs:
        held = await connect_tls(_port(h), _centre_tls(h))
        await sleep(0.3)
        assert held.handshake and held.open
        over = await connect_tls(_port(h), _centre_tls(h))
        await settle(over, 5)
        assert not over.open, "a second connection of the same centre must be refused"
        other = await connect_tls(_port(h), _centre_tls(h, OTHER_CENTRE))
        await settle(other, 0.5)
        assert other.handshake and other.open
    held.close()
    other.close()
    assert counter(h.gateway.metrics, "connection_limit") == 1
    [event] = logs.named("centre_api.connection_limit")
    assert event["peer"] == f"hpf://centre/{CENTRE}"


# -- request rate ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_requests_over_the_centres_rate_get_429_with_retry_after_and_are_counted(make: Any) -> None:
    h = await make(centre_requests_per_second=0.2, centre_request_burst=2)
    url = api_url(h.config) + "/v1/results"
    with capture_logs() as logs:
        answers = [await _https(h).call("GET", url) for _ in range(3)]
        other = await _https(h, OTHER_CENTRE).call("GET", url)
    assert [a.status for a in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.body["type"] == "urn:hpf-gateway:problem:rate-limited" and refused.body["status"] == 429
    assert re.fullmatch(r"[1-9][0-9]*", refused.headers["retry-after"])
    assert 1 <= int(refused.headers["retry-after"]) <= 5  # one token per 5 s at 0.2/s
    assert other.status == 200, "another centre has its own bucket"
    assert counter(h.gateway.metrics, "rate_limited") == 1
    [event] = logs.named("centre_api.rate_limited")
    assert event["peer"] == f"hpf://centre/{CENTRE}" and event["kind"] == "rate_limited"


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=2.0, capacity=3, now=100.0)
    assert [bucket.wait(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.wait(100.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert bucket.wait(100.5) == 0.0
    assert bucket.wait(200.0) == 0.0  # refilled, but never above the burst:
    assert [bucket.wait(200.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_rate_limiter_follows_changed_limits_and_keeps_peers_apart() -> None:
    limiter = RateLimiter()
    assert limiter.take("a", 0.0, 1.0, 1) == 0.0
    assert limiter.take("a", 0.0, 1.0, 1) > 0
    assert limiter.take("b", 0.0, 1.0, 1) == 0.0
    assert limiter.take("a", 0.0, 10.0, 5) == 0.0  # a reload gave more room: a fresh bucket
