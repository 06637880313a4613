"""The simulated centre (gateway/simulate/centre.py): pacing, counting, latency, and a run over TLS.

The pure parts are tested without a reactor.  The run is tested against a
small fake gateway (twisted.web over loopback TLS with the development PKI)
that serves the two endpoints the generator uses and scripts each
instruction's states, including a duplicate final, an in-doubt resolution, a
refusal and a dropped connection.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from gateway.model import parse_instruction
from gateway.pki import DevPki
from gateway.simulate.centre import CentreLoadError, CentreRun, run_centre
from gateway.simulate.centre_load import (
    CentreLoad,
    CentreReport,
    LatencySummary,
    LoadBook,
    RateMeter,
    default_id_prefix,
    make_instruction,
    parse_feed_page,
    percentile,
)
from gateway.token_bucket import TokenBucket
from gateway.tls import peer_identity, server_options, tls_server_factory

reactor: Any = _reactor

DEBIT = "6200001111222233"
COUNTERPARTY = ("6200009999000011", "张三", "105100000017")


# -- pacing -----------------------------------------------------------------------


def test_bucket_paces_greedy_taking_to_the_rate() -> None:
    bucket = TokenBucket(100.0, 25.0, now=0.0, initial=1.0)
    taken = 0
    for i in range(501):  # 10 s of 20 ms ticks
        now = i * 0.02
        while bucket.take(1, now):
            taken += 1
        assert taken <= 1 + 100 * now + 1e-6
    assert 1000 <= taken <= 1001


def test_bucket_catches_up_a_stall_by_one_burst_at_most() -> None:
    bucket = TokenBucket(100.0, 25.0, now=0.0, initial=1.0)
    assert bucket.take(1, 0.0)
    taken = 0
    while bucket.take(1, 10.0):  # nothing taken for 10 s
        taken += 1
    assert taken == 25
    assert not bucket.take(1, 10.0)


def test_bucket_spends_nothing_when_a_whole_batch_is_not_there() -> None:
    bucket = TokenBucket(100.0, 50.0, now=0.0, initial=50.0)
    assert bucket.take(50, 0.0)
    assert not bucket.take(50, 0.25)
    assert bucket.available(0.25) == pytest.approx(25.0)
    assert bucket.take(50, 0.5)
    sends = sum(bucket.take(50, 0.5 + i * 0.01) for i in range(1, 201))  # the next 2 s
    assert sends == 4


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan, math.inf])
def test_bucket_refuses_a_rate_that_is_not_positive_and_finite(rate: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, 1.0, now=0.0)


def test_rate_meter_reports_the_rate_over_its_window() -> None:
    meter = RateMeter(window=5.0)
    rates = [meter.sample(float(t), 10 * t) for t in range(0, 4)]
    assert rates == [0.0, 10.0, 10.0, 10.0]
    for t in range(4, 20):  # the rate drops to 2/s; the old samples leave the window
        rate = meter.sample(float(t), 30 + 2 * (t - 3))
    assert rate == pytest.approx(2.0)


# -- percentiles ------------------------------------------------------------------


@pytest.mark.parametrize(("p", "expected"), [(0, 15), (5, 15), (30, 20), (40, 20), (50, 35), (100, 50)])
def test_percentile_is_nearest_rank(p: float, expected: float) -> None:
    assert percentile([15, 20, 35, 40, 50], p) == expected


def test_percentile_of_1_to_100_is_the_value_of_that_rank() -> None:
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 95, 99, 99.5, 100)] == [50, 95, 99, 100, 100]
    assert percentile(list(range(1, 1001)), 99.9) == 999  # exact rank, no float drift


def test_percentile_of_nothing_is_none_and_p_is_bounded() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=200), st.integers(1, 100))
def test_percentile_is_the_smallest_value_covering_p_percent(values: list[int], p: int) -> None:
    values.sort()
    v = percentile(values, p)
    n = len(values)
    assert sum(x <= v for x in values) * 100 >= p * n
    assert sum(x < v for x in values) * 100 < p * n


# -- instructions -----------------------------------------------------------------


def _bodies(seed: int, count: int, amount_fen: tuple[int, int] = (100, 500_000)) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        make_instruction(n, id_prefix="T-", rng=rng, debit_accounts=[DEBIT, "6222002222333344"],
                         counterparties=[COUNTERPARTY, ("6222008888000022", "示例房地产开发有限公司", "102100000030")],
                         amount_fen=amount_fen)
        for n in range(1, count + 1)
    ]


def test_generated_instructions_are_valid_unique_and_reproducible() -> None:
    bodies = _bodies(7, 300)
    assert bodies == _bodies(7, 300)
    assert bodies != _bodies(8, 300)
    assert [b["instruction_id"] for b in bodies[:2]] == ["T-00000001", "T-00000002"]
    assert len({b["instruction_id"] for b in bodies}) == 300
    for b in bodies:
        ins = parse_instruction("C52240", b, ceiling_fen=500_000, today=_dt.date.today())
        assert 100 <= ins.amount <= 500_000
    assert len({b["purpose"] for b in bodies}) > 3  # purposes vary


def test_generated_amounts_cover_the_range_bounds_exactly() -> None:
    assert {b["amount"] for b in _bodies(1, 20, (12345, 12345))} == {"123.45"}
    amounts = {b["amount"] for b in _bodies(1, 400, (1, 3))}
    assert amounts == {"0.01", "0.02", "0.03"}


def test_default_id_prefix_leaves_room_for_the_sequence_number() -> None:
    prefix = default_id_prefix(1_732_700_000.7)
    assert len(prefix) + 8 <= 32
    assert prefix != default_id_prefix(1_732_700_001.0)


# -- the feed ---------------------------------------------------------------------


def test_feed_page_is_read_into_ids_states_and_next() -> None:
    page = parse_feed_page(200, {"results": [{"cursor": 5, "instruction_id": "a", "state": "sent"},
                                             {"cursor": 6, "instruction_id": "b", "state": "failed"}],
                                 "next": 6}, 4)
    assert page.events == (("a", "sent"), ("b", "failed"))
    assert page.next == 6
    assert parse_feed_page(200, {"results": [], "next": 4}, 4).events == ()


@pytest.mark.parametrize(("status", "body"), [
    (503, {"results": [], "next": 4}),
    (200, [1]),
    (200, {"results": {}, "next": 4}),
    (200, {"results": [], "next": 3}),
    (200, {"results": [], "next": True}),
    (200, {"results": [], "next": "9"}),
    (200, {"results": [{"instruction_id": "a"}], "next": 5}),
    (200, {"results": ["a"], "next": 5}),
    (200, {"results": [{"instruction_id": "a", "state": "sent"}], "next": 4}),
])
def test_a_feed_page_that_is_not_as_the_api_says_is_refused(status: int, body: Any) -> None:
    with pytest.raises(ValueError):
        parse_feed_page(status, body, 4)


# -- the book ---------------------------------------------------------------------


def _book_with(ids: list[str], at: float = 0.0) -> LoadBook:
    book = LoadBook()
    for iid in ids:
        book.submitted(iid, at)
    return book


def test_book_counts_answers_and_outcomes_and_ignores_others_ids() -> None:
    book = _book_with(["a", "b", "c", "d", "e"])
    for iid, status in [("a", 202), ("b", 202), ("c", 200), ("d", 422), ("e", 0)]:
        book.answered(iid, status)
    assert book.seen("a", "received", 0.1) is False
    assert book.seen("a", "succeeded", 0.2) is True
    assert book.seen("b", "failed", 0.3) is True
    assert book.seen("zz", "succeeded", 0.3) is False  # not this run's
    assert not book.settled()
    book.seen("c", "rejected", 0.4)
    assert book.settled()
    report = book.report(elapsed_s=1.0)
    assert (report.submitted, report.accepted, report.refused_by_status) == (5, 3, {0: 1, 422: 1})
    assert (report.final, report.succeeded, report.failed, report.rejected, report.in_doubt) == (3, 1, 1, 1, 0)
    assert (report.not_final, report.duplicate_finals) == (0, 0)
    assert report.final_per_s == pytest.approx(3 / 0.4)


def test_a_second_final_for_the_same_instruction_is_a_duplicate() -> None:
    book = _book_with(["a", "b"])
    book.answered("a", 202)
    book.answered("b", 202)
    book.seen("a", "succeeded", 1.0)
    book.seen("a", "succeeded", 2.0)
    book.seen("b", "rejected", 1.0)
    book.seen("b", "failed", 2.0)
    report = book.report(elapsed_s=2.0)
    assert report.duplicate_finals == 2
    assert (report.final, report.succeeded, report.rejected, report.failed) == (2, 1, 1, 0)


def test_an_in_doubt_instruction_resolved_later_moves_outcome_without_a_duplicate() -> None:
    book = _book_with(["a", "b"])
    book.answered("a", 202)
    book.answered("b", 202)
    book.seen("a", "in_doubt", 1.0)
    book.seen("a", "succeeded", 5.0)
    book.seen("b", "in_doubt", 1.0)
    book.seen("b", "in_doubt", 2.0)  # in doubt twice is a duplicate
    report = book.report(elapsed_s=5.0)
    assert (report.final, report.succeeded, report.in_doubt, report.duplicate_finals) == (2, 1, 1, 1)
    assert report.p99_ms == pytest.approx(1000.0)  # latency is to the first final state


def test_a_final_seen_before_the_answer_still_settles_the_instruction() -> None:
    book = _book_with(["a"])
    book.seen("a", "succeeded", 0.5)
    assert not book.settled()  # unanswered
    book.answered("a", 202)
    assert book.settled()
    assert book.report(elapsed_s=1.0).not_final == 0


def test_accepted_instructions_never_seen_final_are_not_final() -> None:
    book = _book_with(["a", "b"])
    book.answered("a", 202)
    book.answered("b", 202)
    book.seen("a", "succeeded", 0.5)
    assert not book.settled()
    assert book.report(elapsed_s=1.0).not_final == 1


def test_latency_percentiles_are_exact_over_all_finals() -> None:
    book = LoadBook()
    for i in range(1, 101):
        book.submitted(f"i{i}", 10.0)
        book.answered(f"i{i}", 202)
        book.seen(f"i{i}", "succeeded", 10.0 + i / 1000)  # latencies 1..100 ms, in order
    report = book.report(elapsed_s=1.0)
    assert (report.p50_ms, report.p95_ms, report.p99_ms) == pytest.approx((50.0, 95.0, 99.0))


def test_an_id_is_submitted_once_and_answered_once() -> None:
    book = _book_with(["a"])
    with pytest.raises(ValueError):
        book.submitted("a", 1.0)
    with pytest.raises(ValueError):
        book.answered("b", 202)
    book.answered("a", 503)
    book.answered("a", 202)  # a late second answer changes nothing
    assert book.report(elapsed_s=0.0).refused_by_status == {503: 1}


def test_status_line_and_report_show_the_counts() -> None:
    book = _book_with(["a", "b", "c"])
    book.answered("a", 202)
    book.answered("b", 202)
    book.answered("c", 503)
    book.seen("a", "succeeded", 0.012)
    book.seen("b", "succeeded", 0.040)
    book.seen("b", "succeeded", 0.050)
    line = book.status_line(12.5)
    assert "\n" not in line
    for part in ("submitted 3", "2xx 2", "refused 1 (503:1)", "final 2", "ok 2", "12.5 final/s", "p50 12 ms",
                 "p99 40 ms"):
        assert part in line, part
    report = book.report(elapsed_s=0.05)
    as_json = report.to_json()
    assert json.loads(json.dumps(as_json)) == as_json
    assert as_json["refused_by_status"] == {"503": 1} and as_json["duplicate_finals"] == 1
    summary = report.summary()
    assert "duplicate finals" in summary and "must be 0" in summary and "503: 1" in summary
    assert len(summary.splitlines()) >= 10


def test_report_of_a_run_with_no_finals_has_no_percentiles() -> None:
    report = LoadBook().report(elapsed_s=0.0)
    assert (report.p50_ms, report.final_per_s) == (None, 0.0)
    assert report.to_json()["p99_ms"] is None
    assert "-" in report.summary()


def test_latency_is_given_per_bank_when_the_run_knows_each_accounts_bank() -> None:
    """A bank that pushes its results and one polled on its own cadence differ by a second:
    the report keeps each bank's latencies apart, and the overall figures stay as they were."""
    book = LoadBook()
    for i in range(1, 101):
        book.submitted(f"p{i}", 0.0, "B001")
        book.answered(f"p{i}", 202)
        book.seen(f"p{i}", "succeeded", i / 1000)  # 1..100 ms
        book.submitted(f"q{i}", 0.0, "B002")
        book.answered(f"q{i}", 202)
        book.seen(f"q{i}", "succeeded", 2.0 + i / 1000)  # 2,001..2,100 ms
    book.submitted("r", 0.0, "B002")
    book.answered("r", 422)  # refused: submitted to the bank's account, never final
    book.submitted("u", 0.0)  # no bank known: counted overall only
    book.answered("u", 202)
    book.seen("u", "failed", 0.5)
    report = book.report(elapsed_s=3.0)
    assert report.final == 201 and report.p50_ms == pytest.approx(500.0)  # overall: every final, "u" too
    assert report.submitted_by_bank == {"B001": 100, "B002": 101}
    assert report.latency(["B001"]) == LatencySummary(100, pytest.approx(50.0), pytest.approx(95.0),
                                                      pytest.approx(99.0), pytest.approx(100.0))
    assert (report.latency(["B002"]).p50_ms, report.latency(["B002"]).p99_ms) == pytest.approx((2050.0, 2099.0))
    both = report.latency(["B001", "B002", "B009"])  # a bank with nothing final adds nothing
    assert both.count == 200 and both.p50_ms == pytest.approx(100.0) and both.p99_ms == pytest.approx(2098.0)
    assert report.latency() == both
    by_bank = report.to_json()["by_bank"]
    assert by_bank["B002"] == {"submitted": 101, "final": 100, "p50_ms": pytest.approx(2050.0),
                               "p95_ms": pytest.approx(2095.0), "p99_ms": pytest.approx(2099.0),
                               "max_ms": pytest.approx(2100.0)}
    assert set(by_bank) == {"B001", "B002"}
    assert "bank B002" in report.summary()


def test_a_run_without_account_banks_reports_no_bank() -> None:
    report = _book_with(["a"]).report(elapsed_s=0.0)
    assert report.to_json()["by_bank"] == {} and report.latency().count == 0


# -- options ----------------------------------------------------------------------


def _load(**overrides: Any) -> CentreLoad:
    options: dict[str, Any] = dict(
        base_url="https://127.0.0.1:8443", certificate="c.crt", private_key="c.key", ca="ca.crt",
        centre_id="C52240", debit_accounts=[DEBIT], counterparties=[COUNTERPARTY], count=10, rate=5.0,
    )
    options.update(overrides)
    return CentreLoad(**options)


def test_load_options_are_normalised() -> None:
    load = _load(amount_range=("0.01", "10"), batch=20)
    assert load.amount_fen == (1, 1000)
    assert load.request_size == 20
    assert _load().request_size == 1
    assert isinstance(load.debit_accounts, tuple)


@pytest.mark.parametrize("overrides", [
    {"base_url": "http://127.0.0.1:8443"},
    {"base_url": "https://"},
    {"rate": 0},
    {"rate": math.inf},
    {"count": 0},
    {"duration": -1.0},
    {"batch": 1001},
    {"batch": -1},
    {"max_outstanding": 0},
    {"feed_wait": 31},
    {"id_prefix": "x" * 25},
    {"id_prefix": "a/b"},
    {"debit_accounts": []},
    {"debit_accounts": ["62 00"]},
    {"counterparties": [("6200009999000011", "张三", "10510000001")]},
    {"counterparties": [("6200009999000011", " ", "105100000017")]},
    {"amount_range": ("10.00", "1.00")},
    {"amount_range": ("0", "1.00")},
    {"amount_range": ("1.001", "2")},
    {"account_banks": {"6222002222333344": "B002"}},  # the run's debit account is not named
])
def test_bad_load_options_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _load(**overrides)


def test_a_run_refuses_a_certificate_of_another_centre(dev_pki: DevPki) -> None:
    load = _load(certificate=dev_pki.cert("centre", "C11000"), private_key=dev_pki.key("centre", "C11000"),
                 ca=dev_pki.ca_cert)
    with pytest.raises(ValueError, match="C11000"):
        CentreRun(reactor, load)


# -- a run against a fake gateway over loopback TLS ---------------------------------

Plan = Callable[[int], tuple[int | str, list[str]]]


def standard_plan(n: int) -> tuple[int | str, list[str]]:
    """Instruction n's HTTP answer and the states the fake then puts on the feed."""
    if n % 10 == 3:
        return 422, []
    if n % 10 == 5:
        return 202, ["received", "sent", "accepted", "failed"]
    if n % 10 == 7:
        return 202, ["rejected"]
    if n == 2:
        return 202, ["received", "succeeded", "succeeded"]  # the duplicate the generator must count
    if n == 4:
        return 202, ["received", "in_doubt", "succeeded"]  # resolved: not a duplicate
    if n == 9:
        return 202, ["in_doubt"]
    return 202, ["received", "sent", "accepted", "succeeded"]


class FakeGateway(Resource):
    """The centre API's POST /v1/instructions[/batch] and GET /v1/results, scripted by a plan."""

    isLeaf = True  # noqa: N815 (twisted.web API)

    def __init__(self, plan: Plan, *, old_events: int = 0, step: float = 0.02) -> None:
        super().__init__()
        self.plan = plan
        self.step = step
        self.events: list[tuple[str, str]] = [(f"OLD{i}", "succeeded") for i in range(old_events)]
        self.peers: set[str] = set()
        self.batch_sizes: list[int] = []
        self.feed_requests: list[tuple[int, float]] = []
        self.invalid: list[Any] = []
        self.transports: set[Any] = set()
        self._waiters: list[tuple[Request, int, Any]] = []
        self._timers: list[Any] = []

    def render(self, request: Request) -> Any:
        self.transports.add(request.transport)
        identity = peer_identity(request.transport)
        self.peers.add(identity.uri if identity else "none")
        if request.method == b"GET" and request.path == b"/v1/results":
            return self._feed(request)
        if request.method == b"POST" and request.getHeader(b"content-type") == b"application/json":
            body = json.loads(request.content.read())
            if request.path == b"/v1/instructions":
                status, out = self._take(body)
                if status == "abort":
                    request.transport.abortConnection()
                    return NOT_DONE_YET
                return self._json(request, status, out)
            if request.path == b"/v1/instructions/batch":
                self.batch_sizes.append(len(body["instructions"]))
                results = []
                for i, item in enumerate(body["instructions"]):
                    status, out = self._take(item)
                    key = "instruction" if status in (200, 202) else "problem"
                    results.append({"index": i, "status": status, key: out})
                return self._json(request, 200, {"results": results})
        return self._json(request, 404, {"type": "urn:hpf-gateway:problem:not-found", "title": "no", "status": 404})

    def _take(self, body: Any) -> tuple[Any, Any]:
        try:
            parse_instruction("C52240", body, ceiling_fen=10**12, today=_dt.date.today())
        except Exception:
            self.invalid.append(body)
            return 400, {"type": "urn:hpf-gateway:problem:invalid-json", "title": "bad", "status": 400}
        iid = body["instruction_id"]
        status, states = self.plan(int(iid[-8:]))
        if status == 422:
            return 422, {"type": "urn:hpf-gateway:problem:invalid-instruction", "title": "invalid", "status": 422,
                         "errors": [{"field": "amount", "reason": "scripted"}]}
        for i, state in enumerate(states):
            self._timers.append(reactor.callLater(self.step * (i + 1), self._emit, iid, state))
        first = states[0] if states and states[0] == "rejected" else "received"
        return status, {"instruction_id": iid, "state": first}

    def _emit(self, iid: str, state: str) -> None:
        self.events.append((iid, state))
        waiters, self._waiters = self._waiters, []
        for request, after, timer in waiters:
            if timer.active():
                timer.cancel()
            self._answer_feed(request, after)

    def _feed(self, request: Request) -> Any:
        after = int(request.args[b"after"][0])
        wait = float(request.args.get(b"wait", [b"0"])[0])
        self.feed_requests.append((after, wait))
        if len(self.events) > after or wait == 0:
            return self._answer_feed(request, after)
        timer = reactor.callLater(wait, self._expire, request)
        self._timers.append(timer)
        self._waiters.append((request, after, timer))
        request.notifyFinish().addErrback(lambda _: self._forget(request))
        return NOT_DONE_YET

    def _expire(self, request: Request) -> None:
        for entry in list(self._waiters):
            if entry[0] is request:
                self._waiters.remove(entry)
                self._answer_feed(request, entry[1])

    def _forget(self, request: Request) -> None:
        self._waiters = [w for w in self._waiters if w[0] is not request]

    def _answer_feed(self, request: Request, after: int) -> Any:
        rows = [{"cursor": c, "event_id": f"E{c}", "instruction_id": iid, "state": state,
                 "at": "2024-11-27T00:00:00+00:00"}
                for c, (iid, state) in enumerate(self.events[after:after + 1000], start=after + 1)]
        return self._json(request, 200, {"results": rows, "next": rows[-1]["cursor"] if rows else after})

    def _json(self, request: Request, status: int, body: Any) -> Any:
        request.setResponseCode(status)
        ctype = b"application/json" if status < 400 else b"application/problem+json"
        request.setHeader(b"content-type", ctype)
        payload = json.dumps(body).encode()
        if request.startedWriting or request.finished:
            return NOT_DONE_YET
        request.write(payload)
        request.finish()
        return NOT_DONE_YET

    def close(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()


class _Served:
    def __init__(self, pki: DevPki, fake: FakeGateway, role: str = "gateway", name: str = "main") -> None:
        options = server_options(pki.cert(role, name), pki.key(role, name), [pki.ca_cert])
        site = Site(fake)
        site.noisy = False
        self.fake = fake
        self.port = reactor.listenTCP(0, tls_server_factory(site, options), interface="127.0.0.1")
        self.url = f"https://127.0.0.1:{self.port.getHost().port}"

    async def close(self) -> None:
        self.fake.close()
        await self.port.stopListening()

    async def drop(self) -> None:
        """Stop listening and cut every connection: the gateway is gone."""
        await self.close()
        for transport in self.fake.transports:
            transport.abortConnection()


def _client(pki: DevPki, url: str, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = dict(
        base_url=url, certificate=pki.cert("centre", "C52240"), private_key=pki.key("centre", "C52240"),
        ca=pki.ca_cert, centre_id="C52240", debit_accounts=[DEBIT], counterparties=[COUNTERPARTY],
        rate=400.0, seed=3, id_prefix="T1-", final_timeout=10.0, feed_wait=1.0, request_timeout=5.0,
        startup_timeout=2.0,
    )
    options.update(overrides)
    return options


@pytest_twisted.ensureDeferred
async def test_run_counts_outcomes_refusals_latency_and_a_duplicate_final(dev_pki: DevPki) -> None:
    def plan(n: int) -> tuple[int | str, list[str]]:
        return ("abort", []) if n == 11 else standard_plan(n)

    served = _Served(dev_pki, FakeGateway(plan, old_events=1500))
    lines: list[str] = []
    try:
        report = await run_centre(reactor, **_client(dev_pki, served.url, count=40, progress=lines.append))
    finally:
        await served.close()
    fake = served.fake
    assert fake.invalid == []
    assert fake.peers == {"hpf://centre/C52240"}  # the centre's certificate was presented
    # The tail is read without waiting (0, 1000, 1500: 1500 old events), then followed from there.
    assert [a for a, w in fake.feed_requests if w == 0][:3] == [0, 1000, 1500]
    assert min(a for a, w in fake.feed_requests if w > 0) == 1500
    assert isinstance(report, CentreReport)
    # 1..40: 4 refused with 422 (n%10 == 3), n=11 lost its connection, the rest accepted.
    assert (report.submitted, report.accepted, report.refused_by_status) == (40, 35, {0: 1, 422: 4})
    assert (report.final, report.failed, report.rejected, report.in_doubt) == (35, 4, 4, 1)
    assert report.succeeded == 26  # n=4 counted here after its in-doubt spell
    assert (report.not_final, report.duplicate_finals) == (0, 1)
    # Every first final comes at least one step (20 ms) after the fake got the instruction.
    assert report.p50_ms is not None and report.p95_ms is not None and report.p99_ms is not None
    assert 20.0 <= report.p50_ms <= report.p95_ms <= report.p99_ms < 5000
    assert report.final_per_s > 0
    assert report.elapsed_s < 5  # ended when all were final, not at final_timeout
    assert lines and "submitted 40" in lines[-1] and "final 35" in lines[-1]


@pytest_twisted.ensureDeferred
async def test_batch_mode_sends_the_batch_api_and_counts_each_item(dev_pki: DevPki) -> None:
    served = _Served(dev_pki, FakeGateway(standard_plan))
    try:
        report = await run_centre(reactor, **_client(dev_pki, served.url, count=20, batch=8, id_prefix="T2-"))
    finally:
        await served.close()
    assert sorted(served.fake.batch_sizes) == [4, 8, 8]  # sent concurrently: any arrival order
    assert (report.submitted, report.accepted, report.refused_by_status) == (20, 18, {422: 2})
    assert (report.final, report.succeeded, report.failed, report.rejected, report.in_doubt) == (18, 13, 2, 2, 1)
    assert (report.not_final, report.duplicate_finals) == (0, 1)


@pytest_twisted.ensureDeferred
async def test_a_run_told_each_accounts_bank_reports_latency_per_bank(dev_pki: DevPki) -> None:
    served = _Served(dev_pki, FakeGateway(lambda n: (202, ["received", "succeeded"])))
    other = "6222002222333344"
    try:
        report = await run_centre(reactor, **_client(dev_pki, served.url, count=30, id_prefix="T7-",
                                                     debit_accounts=[DEBIT, other],
                                                     account_banks={DEBIT: "B001", other: "B002"}))
    finally:
        await served.close()
    by_bank = report.to_json()["by_bank"]
    assert set(by_bank) == {"B001", "B002"}
    assert sum(b["submitted"] for b in by_bank.values()) == report.submitted == 30
    assert sum(b["final"] for b in by_bank.values()) == report.final == 30
    assert all(b["p50_ms"] >= 20.0 for b in by_bank.values())  # two steps of the fake, at least one


@pytest_twisted.ensureDeferred
async def test_accepted_instructions_that_never_finish_end_the_run_at_final_timeout(dev_pki: DevPki) -> None:
    def plan(n: int) -> tuple[int | str, list[str]]:
        return (202, ["received"]) if n == 2 else (202, ["succeeded"])

    served = _Served(dev_pki, FakeGateway(plan))
    try:
        report = await run_centre(reactor, **_client(dev_pki, served.url, count=5, final_timeout=0.4,
                                                     id_prefix="T3-"))
    finally:
        await served.close()
    assert (report.accepted, report.final, report.not_final, report.duplicate_finals) == (5, 4, 1, 0)
    assert 0.4 <= report.elapsed_s < 3


@pytest_twisted.ensureDeferred
async def test_duration_bounds_the_submissions_at_the_rate(dev_pki: DevPki) -> None:
    served = _Served(dev_pki, FakeGateway(lambda n: (202, ["succeeded"])))
    try:
        report = await run_centre(reactor, **_client(dev_pki, served.url, rate=50.0, duration=0.4, id_prefix="T4-"))
    finally:
        await served.close()
    # At most 1 (initial token) + 50/s * 0.4 s, and a loaded machine may send fewer.
    assert 5 <= report.submitted <= 22
    assert report.final == report.accepted == report.submitted
    assert report.not_final == 0


@pytest_twisted.ensureDeferred
async def test_stop_ends_an_unbounded_run_with_a_report(dev_pki: DevPki) -> None:
    served = _Served(dev_pki, FakeGateway(lambda n: (202, ["succeeded"])))
    load = CentreLoad(**_client(dev_pki, served.url, rate=100.0, id_prefix="T5-"))
    run = CentreRun(reactor, load)
    reactor.callLater(0.3, run.stop)
    try:
        report = await run.run()
    finally:
        await served.close()
    assert report.submitted > 0
    assert report.submitted == report.accepted + sum(report.refused_by_status.values())
    assert report.elapsed_s < 3


@pytest_twisted.ensureDeferred
async def test_a_server_that_is_not_the_gateway_is_never_sent_instructions(dev_pki: DevPki) -> None:
    fake = FakeGateway(standard_plan)
    served = _Served(dev_pki, fake, role="bank", name="B001")  # same CA, wrong party
    try:
        with pytest.raises(CentreLoadError):
            await run_centre(reactor, **_client(dev_pki, served.url, count=5, startup_timeout=0.3))
    finally:
        await served.close()
    assert fake.feed_requests == [] and fake.batch_sizes == [] and fake.peers == set()


@pytest_twisted.ensureDeferred
async def test_a_gateway_that_goes_away_mid_run_is_counted_not_fatal(dev_pki: DevPki) -> None:
    served = _Served(dev_pki, FakeGateway(lambda n: (202, ["succeeded"])))
    run = CentreRun(reactor, CentreLoad(**_client(dev_pki, served.url, rate=100.0, count=60, final_timeout=0.5,
                                                  id_prefix="T6-")))
    result = Deferred.fromCoroutine(run.run())
    await deferLater(reactor, 0.2, lambda: None)
    await served.drop()
    report = await result
    assert report.submitted == 60
    assert report.refused_by_status.get(0, 0) > 0  # refused with "no answer", not raised
    assert report.submitted == report.accepted + sum(report.refused_by_status.values())
