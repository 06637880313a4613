"""A simulated city centre: a load generator for the gateway's centre API.

:func:`run_centre` submits instructions at a steady rate over HTTPS with the
centre's client certificate (single ``POST /v1/instructions`` or the batch
API), follows ``GET /v1/results`` from the feed's tail as it was at the start,
and measures for each of its instructions the time from submission to the
first final state on the feed.  It ends with a :class:`CentreReport`: counts
by outcome, refusals by HTTP status, duplicate finals (which must be 0: G5
allows each outcome once) and exact latency percentiles.

The arithmetic is pure and has no reactor: :class:`TokenBucket` (pacing),
:func:`percentile` (nearest rank), :class:`RateMeter`, :class:`LoadBook` (what
was submitted, answered and seen final) and :func:`make_instruction`.
:class:`CentreRun` is the Twisted edge that drives them.

"Final" here means what a centre can act on: ``succeeded``, ``failed``,
``rejected`` and ``in_doubt``.  An ``in_doubt`` instruction that is later
resolved to ``succeeded``/``failed`` is a legitimate second change (DESIGN
§5), counted under its new state and not as a duplicate; any other second
final state for the same instruction is a duplicate.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import random
import re
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from OpenSSL import SSL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer

from gateway.model import PURPOSES, InvalidInput, parse_amount, parse_instruction
from gateway.tls import FixedCreatorPolicy, client_options, identity_from_certificate, load_certificates

__all__ = [
    "FINAL_STATES",
    "CentreLoad",
    "CentreLoadError",
    "CentreReport",
    "CentreRun",
    "FeedPage",
    "GatewayTLSPolicy",
    "LoadBook",
    "RateMeter",
    "TokenBucket",
    "default_id_prefix",
    "make_instruction",
    "parse_feed_page",
    "percentile",
    "run_centre",
]

log = Logger()

#: States after which a centre has an answer it can act on (see the module docstring).
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "rejected", "in_doubt"})
_RESOLVED = frozenset({"succeeded", "failed"})  # what an in_doubt instruction may still become
_PURPOSES = tuple(sorted(PURPOSES))
_ID_PREFIX = re.compile(r"[A-Za-z0-9_-]{0,24}")
_ID_DIGITS = 8
_MAX_SEQUENCE = 10**_ID_DIGITS - 1  # ids stay ``prefix + 8 digits``, at most 32 characters

_TICK_S = 0.02  # how often the pacer looks at the bucket
_BURST_S = 0.25  # how much unused rate may be caught up at once
_LIVE_LATENCIES = 10_000  # the status line's percentiles cover the most recent finals
_RATE_WINDOW_S = 5.0
_MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a batch answer of 1000 records is well under 1 MiB
_USER_AGENT = b"hpf-gateway-centre-sim/1"


class CentreLoadError(Exception):
    """The run could not start (the gateway's feed could not be read)."""


# -- pure parts -------------------------------------------------------------------


class TokenBucket:
    """Paces submissions to ``rate`` per second without sleeping.

    Tokens accrue continuously at ``rate`` up to ``capacity``; :meth:`take`
    spends them.  Over any interval the amount taken is at most
    ``initial + rate * elapsed`` and never more than ``capacity`` at once, so
    a stall (all requests outstanding) is caught up by at most one burst.
    Time is passed in, so this is pure and testable without a clock.
    """

    def __init__(self, rate: float, capacity: float, *, now: float, initial: float = 0.0) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError("rate must be a positive number")
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self._tokens = min(initial, capacity)
        self._at = now

    def available(self, now: float) -> float:
        """Tokens that could be spent at ``now``."""
        self._refill(now)
        return self._tokens

    def take(self, n: int, now: float) -> bool:
        """Spend ``n`` tokens if there are that many; else spend none and return False."""
        self._refill(now)
        # A hair of tolerance so that float accrual (0.02 s * 50/s) does not
        # leave a request waiting one extra tick for 1e-15 of a token.
        if self._tokens + 1e-9 < n:
            return False
        self._tokens -= n
        return True

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of values sorted ascending; None if empty.

    Nearest rank: the smallest value such that at least ``p`` % of the values
    are at or below it (rank ``ceil(p/100 * n)``, at least 1).  Exact: the
    rank is computed with fractions, so ``p=99`` of 100 values is the 99th.
    """
    if not 0 <= p <= 100:
        raise ValueError("p must be within 0..100")
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, math.ceil(Fraction(str(p)) * n / 100))
    return sorted_values[rank - 1]


class RateMeter:
    """A rate over the last ``window`` seconds, from samples of a growing total."""

    def __init__(self, window: float = _RATE_WINDOW_S) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, now: float, total: int) -> float:
        """Record ``total`` at ``now``; return the per-second rate over the window."""
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        t0, v0 = self._samples[0]
        return (total - v0) / (now - t0) if now > t0 else 0.0


def default_id_prefix(now: float) -> str:
    """A prefix that keeps instruction ids of runs started in different seconds apart."""
    return f"L{int(now):x}-"


def make_instruction(
    n: int,
    *,
    id_prefix: str,
    rng: random.Random,
    debit_accounts: Sequence[str],
    counterparties: Sequence[tuple[str, str, str]],
    amount_fen: tuple[int, int],
) -> dict[str, Any]:
    """Instruction body number ``n`` of a run: id ``{id_prefix}{n:08d}``, the rest drawn from ``rng``.

    The same ``rng`` state gives the same bodies, so a seeded run is
    reproducible.  The amount is uniform in fen over ``amount_fen``
    (inclusive) and rendered as the API's decimal string.
    """
    if not 1 <= n <= _MAX_SEQUENCE:
        raise ValueError(f"instruction number {n} is outside 1..{_MAX_SEQUENCE}")
    account, name, bank_code = rng.choice(counterparties)
    fen = rng.randint(*amount_fen)
    return {
        "instruction_id": f"{id_prefix}{n:0{_ID_DIGITS}d}",
        "kind": "transfer",
        "debit_account": rng.choice(debit_accounts),
        "creditor": {"account": account, "name": name, "bank_code": bank_code},
        "amount": f"{fen // 100}.{fen % 100:02d}",
        "purpose": rng.choice(_PURPOSES),
        "memo": f"hpf-gateway load test #{n}",
    }


@dataclass(frozen=True)
class FeedPage:
    """One answer of ``GET /v1/results``: (instruction_id, state) pairs, oldest first, and the next cursor."""

    events: tuple[tuple[str, str], ...]
    next: int


def parse_feed_page(status: int, body: Any, after: int) -> FeedPage:
    """Validate a results-feed answer; ``ValueError`` says what is wrong with it.

    The gateway is an external party here too: a page must be a 200 JSON
    object with a ``results`` list of objects carrying string
    ``instruction_id`` and ``state``, and an integer ``next`` not behind
    ``after`` (a feed that went backwards would replay events and fake
    duplicates).
    """
    if status != 200:
        raise ValueError(f"HTTP status {status}")
    if not isinstance(body, Mapping):
        raise ValueError("the answer is not a JSON object")
    results, nxt = body.get("results"), body.get("next")
    if not isinstance(results, list):
        raise ValueError("results is not a list")
    if not isinstance(nxt, int) or isinstance(nxt, bool) or nxt < after:
        raise ValueError(f"next {nxt!r} is not a cursor at or after {after}")
    events = []
    for i, item in enumerate(results):
        if not isinstance(item, Mapping):
            raise ValueError(f"results[{i}] is not an object")
        iid, state = item.get("instruction_id"), item.get("state")
        if not isinstance(iid, str) or not isinstance(state, str):
            raise ValueError(f"results[{i}] lacks a string instruction_id and state")
        events.append((iid, state))
    if events and nxt == after:
        raise ValueError("results were given but next did not advance")
    return FeedPage(tuple(events), nxt)


@dataclass(frozen=True)
class CentreReport:
    """What a load run achieved.

    ``accepted`` counts 2xx answers; ``refused_by_status`` the rest by HTTP
    status, 0 meaning no HTTP answer (connection error, timeout, or still
    unanswered when the run ended).  ``final`` counts this run's instructions
    seen in a final state on the feed, split by their last final state;
    ``not_final`` the accepted ones never seen final; ``duplicate_finals``
    the times an instruction reached a final state again (must be 0).
    ``elapsed_s`` runs from the start of submission (after the feed's tail
    was read) to the end of the run.  ``final_per_s`` is ``final`` over the seconds from the first submission
    to the last final; the ``p*_ms`` are nearest-rank percentiles of
    submission-to-final latency, None when nothing became final.
    """

    submitted: int
    accepted: int
    refused_by_status: dict[int, int]
    final: int
    succeeded: int
    failed: int
    rejected: int
    in_doubt: int
    not_final: int
    duplicate_finals: int
    elapsed_s: float
    final_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def refused(self) -> int:
        """All non-2xx answers."""
        return sum(self.refused_by_status.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (status codes become string keys)."""
        return {
            "submitted": self.submitted,
            "accepted": self.accepted,
            "refused": self.refused,
            "refused_by_status": {str(k): v for k, v in sorted(self.refused_by_status.items())},
            "final": self.final,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "rejected": self.rejected,
            "in_doubt": self.in_doubt,
            "not_final": self.not_final,
            "duplicate_finals": self.duplicate_finals,
            "elapsed_s": round(self.elapsed_s, 3),
            "final_per_s": round(self.final_per_s, 2),
            "p50_ms": _round(self.p50_ms),
            "p95_ms": _round(self.p95_ms),
            "p99_ms": _round(self.p99_ms),
        }

    def summary(self) -> str:
        """A human-readable table, one fact a line."""

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} ms"

        refused = ", ".join(
            f"{'no answer' if k == 0 else k}: {v}" for k, v in sorted(self.refused_by_status.items())
        )
        rows = [
            ("submitted", f"{self.submitted}"),
            ("accepted (2xx)", f"{self.accepted}"),
            ("refused", f"{self.refused}" + (f"  ({refused})" if refused else "")),
            ("final", f"{self.final}"),
            ("  succeeded", f"{self.succeeded}"),
            ("  failed", f"{self.failed}"),
            ("  rejected", f"{self.rejected}"),
            ("  in doubt", f"{self.in_doubt}"),
            ("not final", f"{self.not_final}"),
            ("duplicate finals", f"{self.duplicate_finals}" + ("  << must be 0" if self.duplicate_finals else "")),
            ("elapsed", f"{self.elapsed_s:.1f} s"),
            ("throughput", f"{self.final_per_s:.1f} final/s"),
            ("submit to final p50", ms(self.p50_ms)),
            ("submit to final p95", ms(self.p95_ms)),
            ("submit to final p99", ms(self.p99_ms)),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


class LoadBook:
    """The ledger of one run: what was submitted when, how it was answered, when it became final.

    Pure: times are passed in.  Answers and feed events may come in either
    order (the feed can report an outcome before the POST's answer arrives).
    Feed events for ids this run did not submit are ignored.
    """

    def __init__(self) -> None:
        self._submitted_at: dict[str, float] = {}
        self._status: dict[str, int] = {}
        self._final: dict[str, str] = {}
        self._latencies_ms: list[float] = []
        self._recent_ms: deque[float] = deque(maxlen=_LIVE_LATENCIES)
        self._accepted = 0
        self._refused: Counter[int] = Counter()
        self._outcomes: Counter[str] = Counter()
        self._waiting = 0  # accepted, not yet final
        self.duplicate_finals = 0
        self.first_submit: float | None = None
        self.last_final: float | None = None

    # inputs

    def submitted(self, instruction_id: str, at: float) -> None:
        """Record that ``instruction_id`` was sent at ``at``; each id only once."""
        if instruction_id in self._submitted_at:
            raise ValueError(f"{instruction_id} submitted twice in one run")
        self._submitted_at[instruction_id] = at
        if self.first_submit is None:
            self.first_submit = at

    def answered(self, instruction_id: str, status: int) -> None:
        """Record the HTTP status its submission got (0: no answer); the first answer counts."""
        if instruction_id not in self._submitted_at:
            raise ValueError(f"{instruction_id} was not submitted")
        if instruction_id in self._status:
            return
        self._status[instruction_id] = status
        if 200 <= status < 300:
            self._accepted += 1
            if instruction_id not in self._final:
                self._waiting += 1
        else:
            self._refused[status] += 1

    def seen(self, instruction_id: str, state: str, at: float) -> bool:
        """Record a state change seen on the feed at ``at``; True if it counted as a final.

        The first final state records the latency; an in_doubt instruction
        resolved to succeeded/failed moves to that outcome; any other final
        state of an instruction already final counts as a duplicate.
        """
        submitted_at = self._submitted_at.get(instruction_id)
        if submitted_at is None or state not in FINAL_STATES:
            return False
        previous = self._final.get(instruction_id)
        if previous is None:
            self._final[instruction_id] = state
            self._outcomes[state] += 1
            latency = (at - submitted_at) * 1000.0
            self._latencies_ms.append(latency)
            self._recent_ms.append(latency)
            self.last_final = at if self.last_final is None else max(self.last_final, at)
            status = self._status.get(instruction_id)
            if status is not None and 200 <= status < 300:
                self._waiting -= 1
            return True
        if previous == "in_doubt" and state in _RESOLVED:
            self._final[instruction_id] = state
            self._outcomes[previous] -= 1
            self._outcomes[state] += 1
            return True
        self.duplicate_finals += 1
        return False

    # views

    @property
    def submitted_count(self) -> int:
        return len(self._submitted_at)

    @property
    def accepted(self) -> int:
        return self._accepted

    @property
    def final(self) -> int:
        return len(self._final)

    @property
    def unanswered(self) -> int:
        """Submissions with no answer recorded yet."""
        return len(self._submitted_at) - len(self._status)

    @property
    def waiting(self) -> int:
        """Accepted submissions not yet seen final."""
        return self._waiting

    def settled(self) -> bool:
        """Every submission is answered and every accepted one is final."""
        return self.unanswered == 0 and self._waiting == 0

    def status_line(self, final_rate: float) -> str:
        """One line of live status; the percentiles cover the most recent finals."""
        recent = sorted(self._recent_ms)
        p50, p99 = percentile(recent, 50), percentile(recent, 99)
        refused = sum(self._refused.values())
        by_status = " ".join(f"{k or 'conn'}:{v}" for k, v in sorted(self._refused.items()))
        o = self._outcomes
        return (
            f"submitted {self.submitted_count} | 2xx {self._accepted}"
            f" | refused {refused}{f' ({by_status})' if by_status else ''}"
            f" | final {self.final}: ok {o['succeeded']} failed {o['failed']}"
            f" rejected {o['rejected']} in_doubt {o['in_doubt']}"
            f" | {final_rate:.1f} final/s"
            f" | p50 {_ms(p50)} p99 {_ms(p99)}"
        )

    def report(self, *, elapsed_s: float) -> CentreReport:
        """The run's report; exact percentiles over every recorded latency."""
        latencies = sorted(self._latencies_ms)
        span = (
            self.last_final - self.first_submit
            if self.last_final is not None and self.first_submit is not None
            else 0.0
        )
        o = self._outcomes
        return CentreReport(
            submitted=self.submitted_count,
            accepted=self._accepted,
            refused_by_status=dict(sorted(self._refused.items())),
            final=self.final,
            succeeded=o["succeeded"],
            failed=o["failed"],
            rejected=o["rejected"],
            in_doubt=o["in_doubt"],
            not_final=self._waiting,
            duplicate_finals=self.duplicate_finals,
            elapsed_s=elapsed_s,
            final_per_s=self.final / span if span > 0 else 0.0,
            p50_ms=percentile(latencies, 50),
            p95_ms=percentile(latencies, 95),
            p99_ms=percentile(latencies, 99),
        )


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


# -- options ----------------------------------------------------------------------


@dataclass(frozen=True)
class CentreLoad:
    """The options of one load run, validated on construction (``ValueError``).

    ``count`` and ``duration`` both bound the submissions (whichever comes
    first; neither: until :meth:`CentreRun.stop`).  ``batch`` 0 sends single
    POSTs, N sends the batch API with up to N instructions a request.
    ``rate`` is instructions per second either way.  After the last
    submission the run waits up to ``final_timeout`` seconds for every
    accepted instruction to become final.  ``amount_range`` is inclusive,
    as decimal strings (or Decimals).
    """

    base_url: str
    certificate: Path
    private_key: Path
    ca: Path
    centre_id: str
    debit_accounts: tuple[str, ...]
    counterparties: tuple[tuple[str, str, str], ...]
    count: int | None = None
    rate: float = 10.0
    duration: float | None = None
    batch: int = 0
    amount_range: tuple[str, str] = ("1.00", "5000.00")
    seed: int = 0
    id_prefix: str = "L-"
    final_timeout: float = 60.0
    max_outstanding: int = 64
    request_timeout: float = 30.0
    feed_wait: float = 5.0
    startup_timeout: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "debit_accounts", tuple(self.debit_accounts))
        object.__setattr__(self, "counterparties", tuple(tuple(c) for c in self.counterparties))
        object.__setattr__(self, "amount_range", tuple(str(a) for a in self.amount_range))
        for name in ("certificate", "private_key", "ca"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        url = urlsplit(self.base_url)
        if url.scheme != "https" or not url.hostname or url.query or url.fragment:
            raise ValueError(f"base_url must be https://HOST[:PORT], got {self.base_url!r}")
        if not (isinstance(self.rate, (int, float)) and math.isfinite(self.rate) and self.rate > 0):
            raise ValueError("rate must be a positive number of instructions per second")
        if self.count is not None and not 1 <= self.count <= _MAX_SEQUENCE:
            raise ValueError(f"count must be within 1..{_MAX_SEQUENCE}")
        for name in ("duration", "final_timeout", "request_timeout", "startup_timeout"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        if not 0 <= self.feed_wait <= 30:
            raise ValueError("feed_wait must be within 0..30 seconds")
        if not 0 <= self.batch <= 1000:
            raise ValueError("batch must be 0 (single POSTs) or 1..1000")
        if self.max_outstanding < 1:
            raise ValueError("max_outstanding must be at least 1")
        if not _ID_PREFIX.fullmatch(self.id_prefix):
            raise ValueError("id_prefix must be at most 24 of A-Z a-z 0-9 _ -")
        if not self.debit_accounts or not self.counterparties:
            raise ValueError("give at least one debit account and one counterparty")
        if len(self.amount_range) != 2:
            raise ValueError("amount_range is (lowest, highest)")
        lo, hi = self.amount_fen  # parses, raising ValueError for a bad amount
        if lo > hi:
            raise ValueError("amount_range: the lowest amount is above the highest")
        self._check_bodies()

    @property
    def amount_fen(self) -> tuple[int, int]:
        """``amount_range`` in fen."""
        lo, hi = (parse_amount(a) for a in self.amount_range)
        return lo, hi

    @property
    def request_size(self) -> int:
        """Instructions per request."""
        return self.batch or 1

    def _check_bodies(self) -> None:
        # Let the gateway's own validation judge the accounts and counterparties
        # now, rather than have every request of the run refused with 422.
        rng = random.Random(0)
        amounts = self.amount_fen
        pairs = [(d, self.counterparties[0]) for d in self.debit_accounts]
        pairs += [(self.debit_accounts[0], c) for c in self.counterparties]
        for debit, counterparty in pairs:
            body = make_instruction(1, id_prefix=self.id_prefix, rng=rng, debit_accounts=(debit,),
                                    counterparties=(counterparty,), amount_fen=amounts)
            try:
                parse_instruction(self.centre_id, body, ceiling_fen=amounts[1], today=_dt.date.min)
            except InvalidInput as e:
                raise ValueError(f"debit account {debit!r} / counterparty {counterparty!r}: {e}") from None


# -- TLS --------------------------------------------------------------------------


@implementer(IOpenSSLClientConnectionCreator)
class _GatewayOnly:
    """Client TLS that also requires the server to be ``hpf://gateway/*``.

    The chain is verified against the CA by the options (gateway.tls); this
    adds the identity check that stands in for hostname verification, so a
    bank or ledger certificate from the same CA cannot receive instructions.
    """

    def __init__(self, options: CertificateOptions) -> None:
        self._options = options

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802,N803
        connection = self._options.clientConnectionForTLS(tlsProtocol)

        def verify(conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
            if not ok:
                return False
            if depth != 0:
                return True
            try:
                identity = identity_from_certificate(cert.to_cryptography())
            except Exception as e:  # an exception must not escape into OpenSSL
                log.warn("centre_sim.gateway_identity_refused", error=str(e))
                return False
            if identity.role != "gateway":
                log.warn("centre_sim.gateway_identity_refused", peer=identity.uri)
                return False
            return True

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


class GatewayTLSPolicy(FixedCreatorPolicy):
    """The ``Agent`` TLS policy of a centre: present our certificate, accept only the gateway.

    The gateway is recognised by its ``hpf://gateway/NAME`` certificate
    chaining to ``ca``, whatever host name the URL uses.
    """

    def __init__(self, certificate: Path, private_key: Path, ca: Path) -> None:
        super().__init__(_GatewayOnly(client_options(certificate, private_key, [ca])))


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
        limit = self.load.count if self.load.count is not None else _MAX_SEQUENCE
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
        ids = [b["instruction_id"] for b in bodies]
        for iid in ids:
            self.book.submitted(iid, now)
        if load.batch:
            d = Deferred.fromCoroutine(self._post("/v1/instructions/batch", {"instructions": bodies}, ids))
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
    amount_range: tuple[str | Decimal, str | Decimal] = ("1.00", "5000.00"),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    id_prefix: str | None = None,
    final_timeout: float = 60.0,
    max_outstanding: int = 64,
    request_timeout: float = 30.0,
    feed_wait: float = 5.0,
    startup_timeout: float = 10.0,
) -> CentreReport:
    """Run a simulated centre against the gateway at ``base_url`` and report.

    See :class:`CentreLoad` for the options; ``id_prefix`` defaults to one
    derived from the start time, so repeated runs do not reuse ids.
    ``progress`` is called about once a second with a one-line status.
    Raises ``ValueError`` for bad options or files and
    :class:`CentreLoadError` when the feed cannot be read at the start;
    once running, connection errors are counted, never raised.
    """
    load = CentreLoad(
        base_url=base_url, certificate=Path(certificate), private_key=Path(private_key), ca=Path(ca),
        centre_id=centre_id, debit_accounts=tuple(debit_accounts),
        counterparties=tuple(tuple(c) for c in counterparties),  # type: ignore[misc]
        count=count, rate=rate, duration=duration, batch=batch,
        amount_range=(str(amount_range[0]), str(amount_range[1])), seed=seed,
        id_prefix=default_id_prefix(reactor.seconds()) if id_prefix is None else id_prefix,
        final_timeout=final_timeout, max_outstanding=max_outstanding, request_timeout=request_timeout,
        feed_wait=feed_wait, startup_timeout=startup_timeout,
    )
    return await CentreRun(reactor, load, progress).run()
