"""The pure parts of a simulated centre's load run: pacing, ids, the book, the report, the options.

No reactor: the pacing is a :class:`gateway.token_bucket.TokenBucket`; :func:`percentile` (nearest rank),
:class:`RateMeter`, :class:`LoadBook` (what was submitted, answered and seen
final), :func:`make_instruction` and :class:`CentreLoad`.  The Twisted edge
that drives them is :class:`gateway.simulate.centre.CentreRun`.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
import re
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.model import PURPOSES, InvalidInput, parse_amount, parse_instruction

__all__ = [
    "FINAL_STATES",
    "MAX_SEQUENCE",
    "CentreLoad",
    "CentreReport",
    "FeedPage",
    "LatencySummary",
    "LoadBook",
    "RateMeter",
    "default_id_prefix",
    "make_instruction",
    "parse_feed_page",
    "percentile",
]

#: States after which a centre has an answer it can act on (see the module docstring).
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "rejected", "in_doubt"})
_RESOLVED = frozenset({"succeeded", "failed"})  # what an in_doubt instruction may still become
_PURPOSES = tuple(sorted(PURPOSES))
_ID_PREFIX = re.compile(r"[A-Za-z0-9_-]{0,24}")
_ID_DIGITS = 8
MAX_SEQUENCE = 10**_ID_DIGITS - 1  # ids stay ``prefix + 8 digits``, at most 32 characters
_LIVE_LATENCIES = 10_000  # the status line's percentiles cover the most recent finals
_RATE_WINDOW_S = 5.0


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
    if not 1 <= n <= MAX_SEQUENCE:
        raise ValueError(f"instruction number {n} is outside 1..{MAX_SEQUENCE}")
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
class LatencySummary:
    """Submission-to-final latencies of a set of instructions: how many, nearest-rank
    percentiles and the largest, in milliseconds (None when there are none)."""

    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, latencies_ms: Iterable[float]) -> LatencySummary:
        """The summary of ``latencies_ms`` (any order)."""
        ordered = sorted(latencies_ms)
        return cls(len(ordered), percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99),
                   ordered[-1] if ordered else None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"final": self.count, "p50_ms": _round(self.p50_ms), "p95_ms": _round(self.p95_ms),
                "p99_ms": _round(self.p99_ms), "max_ms": _round(self.max_ms)}


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

    When the run knew which bank holds each debit account (``CentreLoad.account_banks``),
    ``submitted_by_bank`` counts the submissions per bank and ``latencies_ms_by_bank`` holds
    every latency per bank, ascending: banks differ by protocol (one that pushes its results
    against one the gateway must poll on the bank's own cadence), and one overall percentile
    hides which is which.  :meth:`latency` summarises any set of banks.
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
    submitted_by_bank: Mapping[str, int] = field(default_factory=dict)
    latencies_ms_by_bank: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    @property
    def refused(self) -> int:
        """All non-2xx answers."""
        return sum(self.refused_by_status.values())

    def latency(self, banks: Iterable[str] | None = None) -> LatencySummary:
        """Latencies of the instructions sent to ``banks`` together (None: every bank the run
        knew); banks with no final instruction add nothing."""
        chosen = self.latencies_ms_by_bank if banks is None else {b: self.latencies_ms_by_bank.get(b, ())
                                                                  for b in banks}
        return LatencySummary.of(v for values in chosen.values() for v in values)

    def by_bank(self) -> dict[str, dict[str, Any]]:
        """Per bank: submitted, final, and the latency percentiles (JSON-ready)."""
        return {bank: {"submitted": self.submitted_by_bank.get(bank, 0), **self.latency([bank]).to_json()}
                for bank in sorted(set(self.submitted_by_bank) | set(self.latencies_ms_by_bank))}

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
            "by_bank": self.by_bank(),
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
        for bank, b in self.by_bank().items():
            rows.append((f"  bank {bank}", f"{b['final']} of {b['submitted']} final, p50 {ms(b['p50_ms'])}, "
                                           f"p99 {ms(b['p99_ms'])}"))
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
        self._bank_of: dict[str, str] = {}
        self._submitted_by_bank: Counter[str] = Counter()
        self._latencies_by_bank: dict[str, list[float]] = {}
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

    def submitted(self, instruction_id: str, at: float, bank: str | None = None) -> None:
        """Record that ``instruction_id`` was sent at ``at``, for ``bank`` if known; each id only once."""
        if instruction_id in self._submitted_at:
            raise ValueError(f"{instruction_id} submitted twice in one run")
        self._submitted_at[instruction_id] = at
        if bank is not None:
            self._bank_of[instruction_id] = bank
            self._submitted_by_bank[bank] += 1
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
            bank = self._bank_of.get(instruction_id)
            if bank is not None:
                self._latencies_by_bank.setdefault(bank, []).append(latency)
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
            submitted_by_bank=dict(sorted(self._submitted_by_bank.items())),
            latencies_ms_by_bank={bank: tuple(sorted(v)) for bank, v in sorted(self._latencies_by_bank.items())},
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
    ``bank_batch`` asks for each batch request to go to the bank as one bank batch
    (``"bank_batch": true``, docs/protocols/bdc.md): it needs ``batch`` and exactly one debit
    account, of a bdc bank, and every line of a request gets the first line's purpose.
    ``rate`` is instructions per second either way.  After the last
    submission the run waits up to ``final_timeout`` seconds for every
    accepted instruction to become final.  ``amount_range`` is inclusive,
    as decimal strings (or Decimals).  ``account_banks`` (debit account ->
    bank id, as the gateway's ``[accounts]`` say) lets the report give the
    latency per bank; when given, it must name every debit account.
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
    bank_batch: bool = False
    amount_range: tuple[str, str] = ("1.00", "5000.00")
    seed: int = 0
    id_prefix: str = "L-"
    final_timeout: float = 60.0
    max_outstanding: int = 64
    request_timeout: float = 30.0
    feed_wait: float = 5.0
    startup_timeout: float = 10.0
    account_banks: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "debit_accounts", tuple(self.debit_accounts))
        if self.account_banks is not None:
            object.__setattr__(self, "account_banks", dict(self.account_banks))
            unmapped = [a for a in self.debit_accounts if a not in self.account_banks]
            if unmapped:
                raise ValueError(f"account_banks names no bank for debit account(s) {', '.join(unmapped)}")
        object.__setattr__(self, "counterparties", tuple(tuple(c) for c in self.counterparties))
        object.__setattr__(self, "amount_range", tuple(str(a) for a in self.amount_range))
        for name in ("certificate", "private_key", "ca"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        url = urlsplit(self.base_url)
        if url.scheme != "https" or not url.hostname or url.query or url.fragment:
            raise ValueError(f"base_url must be https://HOST[:PORT], got {self.base_url!r}")
        if not (isinstance(self.rate, (int, float)) and math.isfinite(self.rate) and self.rate > 0):
            raise ValueError("rate must be a positive number of instructions per second")
        if self.count is not None and not 1 <= self.count <= MAX_SEQUENCE:
            raise ValueError(f"count must be within 1..{MAX_SEQUENCE}")
        for name in ("duration", "final_timeout", "request_timeout", "startup_timeout"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        if not 0 <= self.feed_wait <= 30:
            raise ValueError("feed_wait must be within 0..30 seconds")
        if not 0 <= self.batch <= 1000:
            raise ValueError("batch must be 0 (single POSTs) or 1..1000")
        if self.bank_batch and (not self.batch or len(self.debit_accounts) != 1):
            raise ValueError("bank_batch needs batch (1..1000) and exactly one debit account")
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
