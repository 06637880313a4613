"""The fault suite's rig: gateway, simulated bank and ledger as real processes, a retrying centre, counting.

A :class:`Rig` is one prepared directory (keys, gateway config, migrated SQLite,
optionally a ledger config and database) and every process started in it, so
that a test can kill everything in ``finally`` with :meth:`Rig.kill_all`.

The counting is done at the three places the promises are about, never in the
gateway's own view of itself:

- the bank: the simulator's stats file, ``executions_by_reference`` per
  centre instruction id (G2: exactly one for every acknowledged instruction);
- the centre: the results feed replayed from ``after=0`` (G5: one final entry
  per instruction, no (instruction, state) twice);
- the ledger: its ``copies`` table read read-only, compared with the gateway's
  ``events`` table (G4: every event once, nothing extra, in order per instruction).

Every wait is bounded; a wait that runs out raises ``AssertionError`` naming
what it waited for.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import tomllib
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.config import GatewayConfig, render_toml
from gateway.model import FINAL_STATES
from gateway.ports import free_port
from gateway.signing import init_signing_key
from gateway.store import schema
from tests.kit import procs
from tests.kit.wait import wait_until

__all__ = [
    "CENTRE",
    "FINAL",
    "JUDGED_RULES",
    "RESULT_DEADLINE",
    "Counts",
    "Load",
    "Rig",
    "count_everything",
    "dump",
    "feed_entries",
    "finals_on_feed",
    "free_port",
    "instruction_body",
    "instruction_state",
    "read_only_engine",
    "restart_after_crash",
    "settle",
    "wait_until",
]

CENTRE = "C52240"
# The rig's ledger judges an instruction with no final result this long after it first saw it
# (``missing-result``), at least: short enough to wait for in every test (see Rig.prepare).
RESULT_DEADLINE = 10.0
# The matcher's deadlines that must all have run before alerts are counted (Rig.ledger_judged).
JUDGED_RULES = ("result", "debit", "balance")
FINAL = frozenset(s.value for s in FINAL_STATES)

# What a centre sees while the gateway is being killed and restarted: retry these.
_TRANSIENT = (ConnectionError, TimeoutError, socket.timeout, ssl.SSLError, HTTPException, OSError)




def read_only_engine(db_file: Path) -> sa.Engine:
    """A SQLAlchemy engine that can only read ``db_file`` (SQLite URI ``mode=ro``)."""
    return sa.create_engine(f"sqlite:///file:{db_file}?mode=ro&uri=true")


@dataclass
class Rig:
    """One prepared directory and the processes running in it (see the module docstring)."""

    tmp: Path
    config: GatewayConfig
    ledger_conf: Path | None = None
    ledger_db: Path | None = None
    ledger_ops: int | None = None
    ledger_proc: procs.Proc | None = None
    result_deadline: float = RESULT_DEADLINE
    started: list[procs.Proc] = field(default_factory=list)
    _tags: Counter[str] = field(default_factory=Counter)

    # -- setting up ----------------------------------------------------------

    @classmethod
    def prepare(cls, tmp: Path, *, timeouts: dict[str, float] | None = None, ledger: bool = True,
                ledger_batch: int | None = None, banks: dict[str, dict[str, Any]] | None = None,
                result_deadline: float | None = None) -> Rig:
        """Keys, gateway config (B001 only is used), migrated SQLite; with ``ledger`` a ledger config too.

        The balance query timer is pushed out of the way so that, once the
        load has settled, the journal stops growing and can be compared.
        The ledger's ``result_deadline`` is short so that its rules judge every
        fact within the test (see :meth:`ledger_judged`), yet past the moment the
        gateway itself asks the bank about an answer it lacks (its
        ``result_timeout`` and two status query intervals), as a deployment sets it.
        """
        timeouts = {"balance_query_interval": 3600.0, **(timeouts or {})}
        if not ledger:
            return cls(tmp, procs.prepare(tmp, timeouts=timeouts, banks=banks))
        keys = tmp / "keys"
        signing_key, signing_pub = init_signing_key(keys)
        ingest, supervisor, ops = free_port(), free_port(), free_port()
        link: dict[str, Any] = {"url": f"https://127.0.0.1:{ingest}", "name": "main",
                                "signing_key": str(signing_key), "signature_alg": "ed25519"}
        if ledger_batch is not None:
            link["batch"] = ledger_batch
        config = procs.prepare(tmp, timeouts=timeouts, ledger=link, banks=banks)
        if result_deadline is None:
            t = config.timeouts
            result_deadline = max(RESULT_DEADLINE, t.result_timeout + 2 * t.status_query_interval)
        data = tomllib.loads(config.path.read_text(encoding="utf-8"))
        ledger_db = tmp / "var" / "ledger.db"
        ledger_data = {
            "ledger": {"name": "main", "database": f"sqlite:///{ledger_db}"},
            "tls": {"certificate": str(keys / "ledger.crt"), "private_key": str(keys / "ledger.key"),
                    "ca": str(keys / "ca.crt")},
            "listen": {"ingest": f"tcp:{ingest}:interface=127.0.0.1",
                       "supervisor": f"tcp:{supervisor}:interface=127.0.0.1",
                       "ops": f"tcp:{ops}:interface=127.0.0.1"},
            "gateways": {"main": {"signing_key": str(signing_pub), "signature_alg": "ed25519"}},
            "supervisors": {"sup1": {}},
            "thresholds": {"large_amount": "1000000.00", "result_deadline": result_deadline,
                           "booking_deadline": 86400.0, "balance_tolerance": "0.00"},
            "accounts": data["accounts"],
            "counterparties": data["counterparties"],
        }
        ledger_conf = tmp / "ledger.toml"
        ledger_conf.write_text(render_toml(ledger_data), encoding="utf-8")
        return cls(tmp, config, ledger_conf, ledger_db, ops, result_deadline=result_deadline)

    def _tag(self, name: str) -> str:
        self._tags[name] += 1
        return f"-{self._tags[name]}"

    # -- processes -----------------------------------------------------------

    def start_gateway(self, crash_at: str | None = None, *, ready: bool = True,
                      env: dict[str, str] | None = None) -> procs.Proc:
        """Start ``hpf-gateway run`` (with ``HPF_CRASH_AT`` when given); wait until it serves."""
        env = {**(env or {}), **({"HPF_CRASH_AT": crash_at} if crash_at else {})}
        gw = procs.gateway(self.config, env=env, tag=self._tag("gateway")).start()
        self.started.append(gw)
        if ready:
            wait_until(lambda: _alive_or_fail(gw) and self._ready(), "the gateway's /readyz", 30)
        return gw

    def _ready(self) -> bool:
        return _http_ok(procs.ops_url(self.config, "/readyz"))

    def start_bank(self, *extra: str, env: dict[str, str] | None = None) -> procs.Proc:
        """Start the simulated bank B001 (it dials the gateway); stats in ``bank-B001.json``."""
        bank = procs.bank(self.config, "B001", *extra, env=env).start()
        self.started.append(bank)
        return bank

    def start_ledger(self, *, ready: bool = True) -> procs.Proc:
        """Start ``hpf-gateway ledger --migrate``; wait until its /readyz answers (with ``ready``)."""
        assert self.ledger_conf is not None, "this rig has no ledger"
        ledger = procs.Proc("ledger", [*procs.HPF, "ledger", "-c", str(self.ledger_conf), "--migrate"],
                            self.tmp / f"ledger{self._tag('ledger')}.log")
        ledger.start()
        self.started.append(ledger)
        self.ledger_proc = ledger
        if ready:
            self.wait_ledger()
        return ledger

    def wait_ledger(self) -> None:
        """Until the ledger this rig started answers its /readyz."""
        ledger = self.ledger_proc
        assert ledger is not None, "no ledger started"
        wait_until(lambda: _alive_or_fail(ledger) and _http_ok(f"http://127.0.0.1:{self.ledger_ops}/readyz"),
                   "the ledger's /readyz", 30)

    def start_ledger_and_gateway(self, crash_at: str | None = None, *,
                                 env: dict[str, str] | None = None) -> tuple[procs.Proc, procs.Proc]:
        """Start the ledger and the gateway side by side; wait until both serve.

        The same two processes as :meth:`start_ledger` then :meth:`start_gateway`,
        started together so that their start-ups overlap (each takes seconds of
        imports); a gateway that finds the ledger not yet listening keeps its
        copies and sends them again (docs/architecture.md), so nothing waits on
        the order.
        """
        ledger = self.start_ledger(ready=False)
        gw = self.start_gateway(crash_at, env=env)
        self.wait_ledger()
        return ledger, gw

    def wait_link(self, timeout: float = 20.0) -> None:
        """Until the gateway reports the B001 link signed on."""
        wait_until(lambda: procs.metric(self.config, "hpf_gateway_bank_link_up", 'bank="B001"') == 1.0,
                   "the B001 link up", timeout, interval=0.1)

    def metric(self, name: str, labels: str = "") -> float:
        return procs.metric(self.config, name, labels)

    def ledger_metric(self, name: str, labels: str = "") -> float:
        """One sample from the ledger's /metrics (0 when absent)."""
        return self.ledger_metrics().get(f"{name}{{{labels}}}" if labels else name, 0.0)

    def ledger_metrics(self) -> dict[str, float]:
        """Every sample of the ledger's /metrics, by ``name{labels}``, read once."""
        text = procs.wait_http(f"http://127.0.0.1:{self.ledger_ops}/metrics", timeout=5)
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                sample, _, value = line.rpartition(" ")
                out[sample] = float(value)
        return out

    def ledger_judged(self, timeout: float | None = None) -> None:
        """Until the ledger's rules have run past their deadline for every fact it holds.

        Read from the ledger's own metrics, all in one scrape: the matcher has
        taken every stored copy (``matched_seq`` = ``journal_seq``), no
        ``result``, ``debit`` or ``balance`` deadline is waiting (each fact's
        deadline has run, alert or not), and every alert raised is written.
        The ``booking`` deadlines (a day: the rig has no centre bookings) and
        the ``forget-*`` housekeeping lie beyond any test and are not waited for.
        Call it once the ledger holds every copy (:func:`settle`).
        """
        why: list[str] = []

        def judged() -> bool:
            m = self.ledger_metrics()
            waiting = {r: m.get(f'hpf_ledger_deadlines_pending{{rule="{r}"}}', 0.0)
                       for r in JUDGED_RULES}
            why[:] = [(f"matched_seq={m.get('hpf_ledger_matched_seq')} "
                       f"journal_seq={m.get('hpf_ledger_journal_seq')} deadlines waiting={waiting} "
                       f"alerts unstored={m.get('hpf_ledger_alerts_unstored')}")]
            return (m.get("hpf_ledger_matched_seq") == m.get("hpf_ledger_journal_seq")
                    and not any(waiting.values()) and m.get("hpf_ledger_alerts_unstored") == 0.0)

        wait_until(judged, "the ledger's rules past every deadline",
                   timeout if timeout is not None else self.result_deadline + 30, interval=0.25,
                   explain=lambda: why[0] if why else "")

    def ledger_alerts(self) -> list[dict[str, Any]]:
        """The ledger's alerts (key, rule, severity), read-only."""
        assert self.ledger_db is not None
        engine = read_only_engine(self.ledger_db)
        try:
            with engine.connect() as c:
                return [dict(r._mapping) for r in c.execute(sa.text(
                    "SELECT key, rule, severity FROM alerts ORDER BY id"))]
        finally:
            engine.dispose()

    def stop(self, proc: procs.Proc, timeout: float = 20.0) -> int:
        """SIGTERM and wait (SIGKILL if it does not stop in time); the exit status."""
        if not proc.alive():
            return proc.popen.returncode if proc.popen else 0
        proc.signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"{proc.name} did not stop within {timeout}s of SIGTERM")

    def kill_all(self) -> None:
        """SIGKILL every process this rig started that still runs (for ``finally``)."""
        for proc in self.started:
            proc.kill()

    # -- reading -------------------------------------------------------------

    @property
    def gateway_db(self) -> Path:
        """The gateway's SQLite file (the prepared layout's; meaningless for a PostgreSQL URL)."""
        return self.config.path.parent / "var" / "gateway.db"

    def bank_stats(self) -> dict[str, Any]:
        return procs.bank_stats(self.config, "B001")

    def gateway_events(self) -> list[dict[str, Any]]:
        """The gateway's journal (seq, event_id, kind, instruction_id, state, payload), read-only."""
        url = self.config.database
        engine = read_only_engine(self.gateway_db) if url.startswith("sqlite") else sa.create_engine(url)
        try:
            with engine.connect() as c:
                e = schema.events
                return [dict(r._mapping) for r in c.execute(
                    sa.select(e.c.seq, e.c.event_id, e.c.kind, e.c.instruction_id, e.c.state, e.c.payload)
                    .order_by(e.c.seq))]
        finally:
            engine.dispose()

    def ledger_copies(self) -> list[dict[str, Any]]:
        """The ledger's copies (seq, gateway_seq, event_id, instruction_id, state), read-only."""
        assert self.ledger_db is not None
        if not self.ledger_db.exists():
            return []
        engine = read_only_engine(self.ledger_db)
        try:
            with engine.connect() as c:
                rows = c.execute(sa.text(
                    "SELECT seq, gateway, gateway_seq, event_id, instruction_id, state FROM copies ORDER BY seq"))
                return [dict(r._mapping) for r in rows]
        finally:
            engine.dispose()


def _http_ok(url: str) -> bool:
    """Whether a plain-HTTP GET of ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _alive_or_fail(proc: procs.Proc) -> bool:
    if not proc.alive():
        raise AssertionError(f"{proc.name} exited with {proc.popen.returncode if proc.popen else '?'}:\n"
                             + proc.text()[-3000:])
    return True


def instruction_body(instruction_id: str, amount: str = "10.00") -> dict[str, Any]:
    """A valid transfer from B001's account to a registered counterparty."""
    return dict(procs.instruction(0, amount), instruction_id=instruction_id)


class Load(threading.Thread):
    """A centre submitting ``ids`` one after another, ``interval`` apart, retrying like a real centre.

    A connection error, a timeout or a 503 means "not known to have been
    stored": the centre sends the SAME instruction_id with the SAME body again
    (the idempotent retry) until it gets a 2xx, a 4xx, or ``deadline`` passes.
    ``answers`` keeps every attempt's outcome per id; ``final_status`` the
    last HTTP status (2xx/4xx) per id.
    """

    def __init__(self, config: GatewayConfig, ids: list[str], *, interval: float = 0.05,
                 deadline: float = 60.0, retry_pause: float = 0.15, port: int | None = None,
                 call_timeout: float = 15.0) -> None:
        super().__init__(daemon=True, name="centre-load")
        self.config = config
        self.port = port  # another way to the centre API (a proxy), else the configured one
        self.call_timeout = call_timeout
        self.ids = ids
        self.interval = interval
        self.deadline = time.monotonic() + deadline
        self.retry_pause = retry_pause
        self.answers: dict[str, list[int | str]] = {i: [] for i in ids}
        self.final_status: dict[str, int] = {}
        self.took: dict[str, float] = {}  # seconds from the first attempt to the final answer
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for instruction_id in self.ids:
                self._submit(instruction_id)
                time.sleep(self.interval)
        except BaseException as e:  # noqa: BLE001 (kept for finish() to raise in the test's thread)
            self.error = e

    def _submit(self, instruction_id: str) -> None:
        body = instruction_body(instruction_id)
        start = time.monotonic()
        while time.monotonic() < self.deadline:
            try:
                status, _, _ = procs.centre_call(self.config, "POST", "/v1/instructions", body,
                                                 timeout=self.call_timeout, port=self.port)
            except _TRANSIENT as e:
                self.answers[instruction_id].append(type(e).__name__)
                time.sleep(self.retry_pause)
                continue
            self.answers[instruction_id].append(status)
            if status == 503:
                time.sleep(self.retry_pause)
                continue
            self.final_status[instruction_id] = status
            self.took[instruction_id] = time.monotonic() - start
            return

    def finish(self, timeout: float) -> None:
        """Join (bounded) and re-raise anything the thread died of."""
        self.join(timeout)
        assert not self.is_alive(), f"the centre load did not finish within {timeout}s"
        if self.error is not None:
            raise self.error

    @property
    def acknowledged(self) -> list[str]:
        """Ids that got a 2xx."""
        return [i for i, s in self.final_status.items() if 200 <= s < 300]

    def retried(self) -> int:
        """Submissions that needed more than one attempt."""
        return sum(1 for a in self.answers.values() if len(a) > 1)


def feed_entries(config: GatewayConfig) -> list[dict[str, Any]]:
    """The whole results feed of the centre, replayed from ``after=0`` page by page."""
    out: list[dict[str, Any]] = []
    after = 0
    for _ in range(1000):  # bounded: far more pages than any test makes
        status, body, _ = procs.centre_call(config, "GET", f"/v1/results?after={after}&limit=1000", timeout=10)
        assert status == 200, body
        out.extend(body["results"])
        if not body["results"]:
            return out
        after = body["next"]
    raise AssertionError("the results feed did not end")


def finals_on_feed(config: GatewayConfig) -> dict[str, str]:
    return {e["instruction_id"]: e["state"] for e in feed_entries(config) if e["state"] in FINAL}


def instruction_state(config: GatewayConfig, instruction_id: str) -> str:
    status, body, _ = procs.centre_call(config, "GET", f"/v1/instructions/{instruction_id}", timeout=10)
    assert status == 200, body
    return str(body["state"])


@dataclass(frozen=True)
class Counts:
    """What a fault test counted, for its assertions and the report."""

    submitted: int
    acknowledged: int          # got a 2xx
    retried: int               # needed more than one attempt
    executed_once: int         # acknowledged and executed exactly once at the bank
    executed_twice: int        # any instruction executed more than once (must be 0)
    lost: int                  # acknowledged and never executed (must be 0)
    executed_unacknowledged: int  # executed though the centre never got a 2xx (must be 0)
    feed_final_once: int       # acknowledged with exactly one final entry on the feed
    feed_duplicates: int       # (instruction, state) pairs on the feed more than once (must be 0)
    feed_missing_final: int    # acknowledged without a final entry (must be 0)
    feed_regressions: int      # instructions whose feed goes back to an earlier state (must be 0)
    gateway_events: int
    journal_duplicates: int    # the same state of an instruction, or the same bank movement, twice (must be 0)
    ledger_copies: int | None
    ledger_missing: int | None
    ledger_extra: int | None
    ledger_duplicates: int | None
    ledger_out_of_order: int | None  # instructions whose copies are not in journal order
    alerts: dict[str, int] | None = None  # the ledger's alerts by rule, once its rules had judged everything
    alerts_unexpected: int | None = None  # alerts of rules the fault should not cause (must be 0)

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.__dict__.items())

    def assert_exactly_once(self) -> None:
        """G1, G2, G4, G5 in numbers: everything acknowledged counted once everywhere."""
        assert self.acknowledged == self.submitted, self.line()
        assert self.executed_twice == 0 and self.lost == 0 and self.executed_unacknowledged == 0, self.line()
        assert self.executed_once == self.acknowledged, self.line()
        assert self.feed_duplicates == 0 and self.feed_missing_final == 0, self.line()
        assert self.feed_regressions == 0 and self.journal_duplicates == 0, self.line()
        assert self.feed_final_once == self.acknowledged, self.line()
        if self.ledger_copies is not None:
            assert self.ledger_missing == 0 and self.ledger_extra == 0, self.line()
            assert self.ledger_duplicates == 0 and self.ledger_out_of_order == 0, self.line()
            assert self.ledger_copies == self.gateway_events, self.line()
        if self.alerts_unexpected is not None:
            assert self.alerts_unexpected == 0, self.line()


# The order states can follow one another in (docs/architecture.md); the feed may skip, never go back.
_RANK = {"received": 0, "rejected": 4, "sent": 1, "accepted": 2, "in_doubt": 3, "succeeded": 4, "failed": 4}


def count_everything(rig: Rig, load: Load, *, feed: list[dict[str, Any]],
                     stats: dict[str, Any], expect_alerts: frozenset[str] | set[str] = frozenset()) -> Counts:
    """Count at the bank (``stats``), on the ``feed`` and at the ledger (if any) against ``load``.

    With the ledger running, its alerts are counted once its rules have judged
    every fact (:meth:`Rig.ledger_judged`); those of a rule in ``expect_alerts``
    (what the fault should cause) are not unexpected.  A stopped ledger's alerts
    are not counted (None): nothing says its deadlines have run.
    """
    acked = set(load.acknowledged)
    by_ref: dict[str, int] = stats.get("executions_by_reference", {})
    executions = {i: by_ref.get(f"{CENTRE}/{i}", 0) for i in load.ids}
    ours = {k.split("/", 1)[1] for k in by_ref if k.startswith(CENTRE + "/")}
    pairs = Counter((e["instruction_id"], e["state"]) for e in feed)
    finals = Counter(e["instruction_id"] for e in feed if e["state"] in FINAL)
    events = rig.gateway_events()
    facts: Counter[tuple[str, ...]] = Counter()
    for e in events:
        if e["kind"] == "instruction.state":
            facts[("state", e["instruction_id"], e["state"])] += 1
        elif e["kind"] == "bank.movement":
            p = json.loads(e["payload"])
            facts[("movement", p["account"], p["host_seq_no"], str(p["amount"]))] += 1
    sequences: dict[str, list[int]] = {}
    for e in feed:
        sequences.setdefault(e["instruction_id"], []).append(_RANK.get(e["state"], 99))
    copies: list[dict[str, Any]] | None = rig.ledger_copies() if rig.ledger_db is not None else None
    missing = extra = dups = disorder = None
    if copies is not None:
        ev_ids = {e["event_id"] for e in events}
        cp_ids = Counter(c["event_id"] for c in copies)
        missing = len(ev_ids - set(cp_ids))
        extra = len(set(cp_ids) - ev_ids)
        dups = sum(n - 1 for n in cp_ids.values() if n > 1)
        per_instruction: dict[str, list[int]] = {}
        for c in copies:  # in the ledger's order
            if c["instruction_id"]:
                per_instruction.setdefault(c["instruction_id"], []).append(c["gateway_seq"])
        disorder = sum(1 for seqs in per_instruction.values() if seqs != sorted(seqs))
    alerts: dict[str, int] | None = None
    unexpected: int | None = None
    if rig.ledger_proc is not None and rig.ledger_proc.alive():
        rig.ledger_judged()
        alerts = dict(Counter(a["rule"] for a in rig.ledger_alerts()))
        unexpected = sum(n for rule, n in alerts.items() if rule not in expect_alerts)
    return Counts(
        submitted=len(load.ids),
        acknowledged=len(acked),
        retried=load.retried(),
        executed_once=sum(1 for i in acked if executions[i] == 1),
        executed_twice=sum(1 for n in by_ref.values() if n > 1),
        lost=sum(1 for i in acked if executions[i] == 0),
        executed_unacknowledged=len(ours - acked),
        feed_final_once=sum(1 for i in acked if finals[i] == 1),
        feed_duplicates=sum(1 for n in pairs.values() if n > 1),
        feed_missing_final=sum(1 for i in acked if finals[i] == 0),
        feed_regressions=sum(1 for ranks in sequences.values() if ranks != sorted(ranks)),
        gateway_events=len(events),
        journal_duplicates=sum(n - 1 for n in facts.values() if n > 1),
        ledger_copies=None if copies is None else len(copies),
        ledger_missing=missing, ledger_extra=extra, ledger_duplicates=dups, ledger_out_of_order=disorder,
        alerts=alerts, alerts_unexpected=unexpected,
    )


def dump(path: Path, counts: Counts, **extra: Any) -> None:
    """Append the counts as one JSON line to ``path`` (the report collects them).

    Tests pass ``fault-counts.jsonl`` in their ``tmp_path``'s parent, pytest's base
    temporary directory.  Under pytest-xdist each worker's base is a ``popen-gwN``
    directory inside the run's: the line goes to the run's file, so that one run
    makes one file whichever worker ran the test (one ``write`` of one line in
    append mode, so workers' lines do not interleave).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and path.parent.name == f"popen-{worker}":
        path = path.parent.parent / path.name
    line = json.dumps(dict(counts.__dict__, **extra)) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


def settle(rig: Rig, ids: list[str], *, timeout: float = 30.0, ledger: bool = True) -> list[dict[str, Any]]:
    """Wait until every id is final on the feed, the bank has nothing executing or unacknowledged,
    and (with ``ledger``) the ledger holds as many copies as the gateway has events; the feed.
    """
    want = set(ids)

    why: list[str] = []

    def done() -> list[dict[str, Any]] | None:
        why[:] = []
        feed = feed_entries(rig.config)
        open_ids = want - {e["instruction_id"] for e in feed if e["state"] in FINAL}
        if open_ids:
            last = {e["instruction_id"]: e["state"] for e in feed}
            why.append("not final: " + ", ".join(f"{i}={last.get(i)}" for i in sorted(open_ids)))
            return None
        stats = rig.bank_stats()
        if stats.get("executing", 1) or stats.get("pending_pushes", 1):
            why.append(f"bank executing={stats.get('executing')} pending_pushes={stats.get('pending_pushes')}")
            return None
        if ledger:
            copies, events = len(rig.ledger_copies()), len(rig.gateway_events())
            if copies != events:
                why.append(f"ledger copies={copies} of {events} events")
                return None
        return feed

    try:
        return wait_until(done, "every instruction final, the bank drained and the ledger caught up",
                          timeout, interval=0.25)
    except AssertionError as e:
        raise AssertionError(f"{e}; {'; '.join(why)}") from None


def restart_after_crash(rig: Rig, gw: procs.Proc, load: Load, *, timeout: float) -> tuple[procs.Proc, int]:
    """Watch ``gw`` while ``load`` runs; when it dies, check it was SIGKILLed and start it again.

    Returns the running gateway and how many times it was restarted.
    """
    restarts = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not gw.alive():
            code = gw.popen.returncode if gw.popen else None
            assert code == -signal.SIGKILL, f"the gateway exited with {code}, not by SIGKILL:\n{gw.text()[-3000:]}"
            restarts += 1
            gw = rig.start_gateway()
        elif not load.is_alive() and restarts:
            return gw, restarts
        time.sleep(0.05)
    return gw, restarts
