"""A simulated city centre: a load generator for the gateway's centre API.

:func:`run_centre` submits instructions at a steady rate over HTTPS with the
centre's client certificate (single ``POST /v1/instructions`` or the batch
API), follows ``GET /v1/results`` from the feed's tail as it was at the start,
and measures for each of its instructions the time from submission to the
first final state on the feed.  It ends with a :class:`CentreReport`: counts
by outcome, refusals by HTTP status, duplicate finals (which must be 0: G5
allows each outcome once) and exact latency percentiles, overall and, given
which bank holds each debit account, per bank.

The arithmetic is pure and has no reactor (:mod:`gateway.simulate.centre_load`:
pacing, the book, the report, the options); :class:`CentreRun` here is the
Twisted edge that drives it.

"Final" here means what a centre can act on: ``succeeded``, ``failed``,
``rejected`` and ``in_doubt``.  An ``in_doubt`` instruction that is later
resolved to ``succeeded``/``failed`` is a legitimate second change (DESIGN
§5), counted under its new state and not as a duplicate; any other second
final state for the same instruction is a duplicate.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from gateway.simulate.centre_load import (
    MAX_SEQUENCE,
    CentreLoad,
    CentreReport,
    LoadBook,
    RateMeter,
    default_id_prefix,
    make_instruction,
    parse_feed_page,
)
from gateway.token_bucket import TokenBucket
from gateway.tls import ExpectPeer, FixedCreatorPolicy, client_options, identity_from_certificate, load_certificates

__all__ = [
    "CentreLoadError",
    "CentreRun",
    "GatewayTLSPolicy",
    "run_centre",
]

log = Logger()

_TICK_S = 0.02  # how often the pacer looks at the bucket
_BURST_S = 0.25  # how much unused rate may be caught up at once
_MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a batch answer of 1000 records is well under 1 MiB
_USER_AGENT = b"hpf-gateway-centre-sim/1"


class CentreLoadError(Exception):
    """The run could not start (the gateway's feed could not be read)."""


# -- TLS --------------------------------------------------------------------------


class GatewayTLSPolicy(FixedCreatorPolicy):
    """The ``Agent`` TLS policy of a centre: present our certificate, accept only the gateway.

    The gateway is recognised by its ``hpf://gateway/NAME`` certificate
    chaining to ``ca``, whatever host name the URL uses.
    """

    def __init__(self, certificate: Path, private_key: Path, ca: Path) -> None:
        super().__init__(ExpectPeer(client_options(certificate, private_key, [ca]), "gateway", None))


# -- HTTP -------------------------------------------------------------------------


class _AnswerTooLargeError(Exception):
    pass


class _BoundedBody(Protocol):
    """Collects a response body, giving up past ``limit`` bytes."""

    def __init__(self, finished: Deferred[bytes], limit: int) -> None:
        self._finished = finished
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.done = False

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.done:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.done = True
            self._finished.errback(_AnswerTooLargeError(f"answer larger than {self._limit} bytes"))
            if self.transport is not None:
                self.transport.stopProducing()
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        if self.done:
            return
        self.done = True
        if reason.check(ResponseDone):
            self._finished.callback(b"".join(self._chunks))
        else:
            self._finished.errback(reason)


def _read_bounded(response: IResponse, limit: int) -> Deferred[bytes]:
    protocol: _BoundedBody

    def cancel(_: Deferred[bytes]) -> None:
        protocol.done = True
        if protocol.transport is not None:
            protocol.transport.stopProducing()

    finished: Deferred[bytes] = Deferred(cancel)
    protocol = _BoundedBody(finished, limit)
    response.deliverBody(protocol)
    return finished


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Any  # parsed JSON, or None when the answer was not JSON


# -- the run ----------------------------------------------------------------------


class CentreRun:
    """One load run against a gateway; build, then ``await run()`` once.

    Reads the certificate, key and CA on construction (``ValueError`` /
    ``InsecureKeyError`` from gateway.tls for bad files, ``ValueError`` when
    the certificate is not ``hpf://centre/<centre_id>``).  :meth:`stop` ends
    the run early (e.g. on Ctrl-C); ``run()`` then returns the report so far.
    """

    def __init__(self, reactor: Any, load: CentreLoad,
                 progress: Callable[[str], None] | None = None) -> None:
        identity = identity_from_certificate(load_certificates(load.certificate)[0])
        if identity.role != "centre" or identity.name != load.centre_id:
            raise ValueError(f"{load.certificate} is {identity.uri}, not hpf://centre/{load.centre_id}")
        self.load = load
        self.book = LoadBook()
        self._reactor = reactor
        self._progress = progress
        self._base = load.base_url.rstrip("/")
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        # One connection per outstanding submission plus the feed's long poll.
        self._pool.maxPersistentPerHost = load.max_outstanding + 2
        self._agent = Agent(reactor, contextFactory=GatewayTLSPolicy(load.certificate, load.private_key, load.ca),
                            connectTimeout=min(10.0, load.request_timeout), pool=self._pool)
        self._rng = random.Random(load.seed)
        self._amount_fen = load.amount_fen
        self._next_n = 1
        self._cursor = 0
        self._outstanding: set[Deferred[None]] = set()
        self._submitting = False
        self._finished = False
        self._started = False
        self._running = False  # past the tail read, until finished
        self._stop_requested = False
        self._done: Deferred[None] = Deferred()
        self._ticker: LoopingCall | None = None
        self._progress_loop: LoopingCall | None = None
        self._timers: list[Any] = []
        self._feed: Deferred[None] | None = None
        self._bucket: TokenBucket | None = None
        self._meter = RateMeter()
        self._t0 = 0.0
        self._t_end = 0.0
        self._log_counts: Counter[str] = Counter()

    # public

    async def run(self) -> CentreReport:
        """Submit, follow the feed, and return the report when the run ends."""
        if self._started:
            raise RuntimeError("a CentreRun runs once")
        self._started = True
        try:
            self._cursor = await self._read_tail()
            self._t0 = self._reactor.seconds()
            self._running = True
            if self._stop_requested:
                self._finish()
            else:
                self._begin()
            await self._done
        finally:
            await self._teardown()
        if self._progress is not None:
            self._emit_progress()
        return self.book.report(elapsed_s=max(0.0, self._t_end - self._t0))

    def stop(self) -> None:
        """End the run now: no more submissions, no more waiting for finals."""
        self._stop_requested = True
        if self._running:
            self._finish()

    # start and end

    def _begin(self) -> None:
        load = self.load
        now = self._reactor.seconds()
        capacity = max(load.request_size, load.rate * _BURST_S)
        self._bucket = TokenBucket(load.rate, capacity, now=now, initial=load.request_size)
        self._meter.sample(now, 0)  # so the first status line has a rate since the start
        self._submitting = True
        self._feed = Deferred.fromCoroutine(self._follow_feed())
        self._feed.addErrback(lambda f: None if f.check(CancelledError) else log.failure("centre_sim.feed_crashed", f))
        if load.duration is not None:
            self._timers.append(self._reactor.callLater(load.duration, self._end_submission))
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self._reactor
        self._ticker.start(_TICK_S, now=True).addErrback(lambda f: log.failure("centre_sim.pacer_crashed", f))
        if self._progress is not None:
            self._progress_loop = LoopingCall(self._emit_progress)
            self._progress_loop.clock = self._reactor
            self._progress_loop.start(1.0, now=False)

    def _end_submission(self) -> None:
        if not self._submitting:
            return
        self._submitting = False
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if not self._finished:
            self._timers.append(self._reactor.callLater(self.load.final_timeout, self._finish))
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._finished or self._submitting or self._outstanding:
            return
        if self.book.settled():
            self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._submitting = False
        self._t_end = self._reactor.seconds()
        for loop in (self._ticker, self._progress_loop):
            if loop is not None and loop.running:
                loop.stop()
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        if not self._done.called:
            self._done.callback(None)

    async def _teardown(self) -> None:
        self._finish()
        if self._feed is not None:
            self._feed.cancel()
        for d in list(self._outstanding):
            d.cancel()  # their submissions are recorded as unanswered (status 0)
        await self._pool.closeCachedConnections()

    # submitting

    def _tick(self) -> None:
        try:
            self._submit_due()
        except Exception:
            # Never let the pacer die silently; end submission and report.
            log.failure("centre_sim.pacer_failed")
            self._end_submission()

    def _remaining(self) -> int:
        limit = self.load.count if self.load.count is not None else MAX_SEQUENCE
        return limit - (self._next_n - 1)

    def _submit_due(self) -> None:
        if not self._submitting or self._bucket is None:
            return
        now = self._reactor.seconds()
        while len(self._outstanding) < self.load.max_outstanding:
            remaining = self._remaining()
            if remaining <= 0:
                self._end_submission()
                return
            size = min(self.load.request_size, remaining)
            if not self._bucket.take(size, now):
                return
            self._send(size, now)
        if self._remaining() <= 0:
            self._end_submission()

    def _send(self, size: int, now: float) -> None:
        load = self.load
        bodies = [
            make_instruction(n, id_prefix=load.id_prefix, rng=self._rng, debit_accounts=load.debit_accounts,
                             counterparties=load.counterparties, amount_fen=self._amount_fen)
            for n in range(self._next_n, self._next_n + size)
        ]
        self._next_n += size
        if load.bank_batch:  # one bank batch has one purpose (bdc: one BusType)
            for b in bodies:
                b["purpose"] = bodies[0]["purpose"]
        ids = [b["instruction_id"] for b in bodies]
        banks = load.account_banks or {}
        for b in bodies:
            self.book.submitted(b["instruction_id"], now, banks.get(b["debit_account"]))
        if load.batch:
            request: dict[str, Any] = {"instructions": bodies}
            if load.bank_batch:
                request["bank_batch"] = True
            d = Deferred.fromCoroutine(self._post("/v1/instructions/batch", request, ids))
        else:
            d = Deferred.fromCoroutine(self._post("/v1/instructions", bodies[0], ids))
        self._outstanding.add(d)

        def done(result: Any) -> None:
            self._outstanding.discard(d)
            if isinstance(result, Failure) and not result.check(CancelledError):
                log.failure("centre_sim.submit_crashed", result)
            self._maybe_finish()

        d.addBoth(done)

    async def _post(self, path: str, body: Any, ids: list[str]) -> None:
        try:
            answer = await self._request(b"POST", path, body, self.load.request_timeout)
        except CancelledError:
            self._answer_all(ids, 0)
            return
        except Exception as e:
            self._note("request_failed", status=0, path=path, error=repr(e)[:300])
            self._answer_all(ids, 0)
            return
        if not self.load.batch or answer.status != 200:
            if not 200 <= answer.status < 300:
                self._note_refusal(answer)
            self._answer_all(ids, answer.status)
            return
        results = answer.body.get("results") if isinstance(answer.body, Mapping) else None
        if not isinstance(results, list) or len(results) != len(ids):
            self._note("malformed_batch_answer", status=answer.status, path=path)
            results = [None] * len(ids)
        for i, iid in enumerate(ids):
            item = results[i]
            status = item.get("status") if isinstance(item, Mapping) and item.get("index") == i else None
            if not isinstance(status, int) or isinstance(status, bool):
                status = 0
            if not 200 <= status < 300:
                self._note_refusal(_Answer(status, item.get("problem") if isinstance(item, Mapping) else None))
            self.book.answered(iid, status)

    def _answer_all(self, ids: list[str], status: int) -> None:
        for iid in ids:
            self.book.answered(iid, status)

    # following the feed

    def _feed_path(self, after: int, wait: float) -> str:
        return f"/v1/results?after={after}&wait={wait:g}&limit=1000"

    async def _read_tail(self) -> int:
        """The feed's current end, so that events from before this run are skipped."""
        deadline = self._reactor.seconds() + self.load.startup_timeout
        cursor = 0
        while True:
            try:
                while True:
                    answer = await self._request(b"GET", self._feed_path(cursor, 0), None,
                                                 self.load.request_timeout)
                    page = parse_feed_page(answer.status, answer.body, cursor)
                    if not page.events:
                        return page.next
                    cursor = page.next
            except Exception as e:
                error = e
            if self._stop_requested or self._reactor.seconds() >= deadline:
                raise CentreLoadError(f"cannot read the results feed at {self._base}: {error!r}")
            self._note("feed_unreachable", error=repr(error)[:300])
            await deferLater(self._reactor, 0.5)

    async def _follow_feed(self) -> None:
        wait = self.load.feed_wait
        while not self._finished:
            try:
                answer = await self._request(b"GET", self._feed_path(self._cursor, wait), None,
                                             wait + self.load.request_timeout)
                page = parse_feed_page(answer.status, answer.body, self._cursor)
            except CancelledError:
                return
            except Exception as e:
                self._note("feed_error", error=repr(e)[:300])
                try:
                    await deferLater(self._reactor, 0.5)
                except CancelledError:
                    return
                continue
            now = self._reactor.seconds()
            for iid, state in page.events:
                self.book.seen(iid, state, now)
            self._cursor = page.next
            self._maybe_finish()

    # plumbing

    async def _request(self, method: bytes, path: str, body: Any, timeout: float) -> _Answer:
        headers = Headers({b"accept": [b"application/json"], b"user-agent": [_USER_AGENT]})
        producer = None
        if body is not None:
            payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            headers.addRawHeader(b"content-type", b"application/json")
            producer = FileBodyProducer(BytesIO(payload))
        d: Deferred[Any] = self._agent.request(method, (self._base + path).encode("ascii"), headers, producer)

        def read(response: IResponse) -> Deferred[tuple[int, Headers, bytes]]:
            return _read_bounded(response, _MAX_ANSWER_BYTES).addCallback(
                lambda data: (response.code, response.headers, data))

        d.addCallback(read)
        d.addTimeout(timeout, self._reactor)
        status, response_headers, data = await d
        ctype = (response_headers.getRawHeaders(b"content-type") or [b""])[0].split(b";")[0].strip().lower()
        parsed: Any = None
        if ctype in (b"application/json", b"application/problem+json"):
            try:
                parsed = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                parsed = None
        return _Answer(status, parsed)

    def _note_refusal(self, answer: _Answer) -> None:
        problem = answer.body if isinstance(answer.body, Mapping) else {}
        self._note(f"refused.{answer.status}", event="refused", status=answer.status,
                   problem=str(problem.get("type", ""))[:100], title=str(problem.get("title", ""))[:200],
                   errors=json.dumps(problem.get("errors", ""), ensure_ascii=False)[:300])

    def _note(self, key: str, *, event: str | None = None, **fields: Any) -> None:
        # Log the 1st, 10th, 100th... occurrence of each kind: a failing gateway
        # at 2000/s must not turn the log into the bottleneck.
        self._log_counts[key] += 1
        n = self._log_counts[key]
        if str(n).rstrip("0") == "1":
            log.warn(f"centre_sim.{event or key}", occurrences=n, **fields)

    def _emit_progress(self) -> None:
        if self._progress is None:
            return
        rate = self._meter.sample(self._reactor.seconds(), self.book.final)
        try:
            self._progress(self.book.status_line(rate))
        except Exception:
            log.failure("centre_sim.progress_failed")


async def run_centre(
    reactor: Any,
    *,
    base_url: str,
    certificate: Path,
    private_key: Path,
    ca: Path,
    centre_id: str,
    debit_accounts: Sequence[str],
    counterparties: Sequence[tuple[str, str, str]],
    count: int | None = None,
    rate: float = 10.0,
    duration: float | None = None,
    batch: int = 0,
    bank_batch: bool = False,
    amount_range: tuple[str | Decimal, str | Decimal] = ("1.00", "5000.00"),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    id_prefix: str | None = None,
    final_timeout: float = 60.0,
    max_outstanding: int = 64,
    request_timeout: float = 30.0,
    feed_wait: float = 5.0,
    startup_timeout: float = 10.0,
    account_banks: Mapping[str, str] | None = None,
) -> CentreReport:
    """Run a simulated centre against the gateway at ``base_url`` and report.

    See :class:`CentreLoad` for the options; ``id_prefix`` defaults to one
    derived from the start time, so repeated runs do not reuse ids.
    ``progress`` is called about once a second with a one-line status.
    ``account_banks`` (debit account -> bank id) makes the report give the
    latency per bank as well.
    Raises ``ValueError`` for bad options or files and
    :class:`CentreLoadError` when the feed cannot be read at the start;
    once running, connection errors are counted, never raised.
    """
    load = CentreLoad(
        base_url=base_url, certificate=Path(certificate), private_key=Path(private_key), ca=Path(ca),
        centre_id=centre_id, debit_accounts=tuple(debit_accounts),
        counterparties=tuple(tuple(c) for c in counterparties),  # type: ignore[misc]
        count=count, rate=rate, duration=duration, batch=batch, bank_batch=bank_batch,
        amount_range=(str(amount_range[0]), str(amount_range[1])), seed=seed,
        id_prefix=default_id_prefix(reactor.seconds()) if id_prefix is None else id_prefix,
        final_timeout=final_timeout, max_outstanding=max_outstanding, request_timeout=request_timeout,
        feed_wait=feed_wait, startup_timeout=startup_timeout, account_banks=account_banks,
    )
    return await CentreRun(reactor, load, progress).run()
