"""The ledger's two HTTPS+JSON listeners: ingest (gateways) and the supervisor API (read-only).

Ingest (``POST /v1/copies``, ``hpf://gateway/NAME`` certificates of configured
gateways only): every copy is checked before anything is stored — its
envelope (:func:`gateway.copies.read_envelope`), that it claims the gateway
its certificate names, its signature with that gateway's public key, its
content (:func:`gateway.copies.read_content`) and, when it carries the bank's
original frame, that the bank's own bytes say what the copy says
(:func:`gateway.copies.check_raw`).  A bad signature or a bank frame that
disagrees refuses the copy and raises a ``forged-copy`` alert; a well-signed
copy whose content cannot be read is stored as refused (``refused-stored``)
and raises ``copy-refused``, and the copies after it are stored as usual.
The answer per copy is sent only after the commit.

Supervisor API (``hpf://supervisor/NAME`` certificates listed in the config):
reads everything; the only writes are notes and state changes on alerts.
Every other write, and every request by anyone else, is refused with 403,
logged with the peer's identity and counted (``hpf_ledger_denied_total``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import multiprocessing
import os
import re
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from cryptography.hazmat.primitives import serialization
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from gateway.copies import CopyError, Refusal, Unreadable, check_raw, read_content, read_envelope
from gateway.web import Csv, JsonApi, Problem, json_body
from gateway.ledger import store
from gateway.ledger.config import LedgerConfig, PublicSigningKey
from gateway.ledger.matcher import Fact, forged_copy_alert
from gateway.ledger.rules import copy_refused_alert
from gateway.ledger.verify import verify_signature
from gateway.model import FieldError, format_amount
from gateway.tls import PeerIdentity

if TYPE_CHECKING:
    from gateway.ledger.engine import MatchEngine
    from gateway.ledger.metrics import LedgerMetrics

__all__ = [
    "MAX_COPIES", "ParsedCopy", "CopyChecker",
    "CheckPool", "ChecksUnavailable", "Ingest", "IngestApi", "SupervisorApi", "daily_report", "report_csv",
    "REPORT_TZ",
]

log = Logger()

MAX_COPIES = 1000
REPORT_TZ = _dt.timezone(_dt.timedelta(hours=8), "+08:00")
"""The day of the daily report is the business day in China (UTC+8, no daylight saving)."""


# -- copies: the checks before storing (the copy itself is defined in gateway.copies) ------


@dataclass(frozen=True)
class ParsedCopy:
    """A copy fit to store: its row, and what the matcher reads (None for a copy stored as
    refused, see :class:`gateway.copies.Unreadable`)."""

    row: store.CopyRow
    fact: Fact | None = None


class CopyChecker:
    """Shape, signature and bank-frame checks for a gateway's copies (no I/O; thread-safe).

    ``keys`` maps a gateway name to its (signature_alg, public key);
    ``load(name)`` gives an adapter instance (adapters keep no state) or
    raises ``KeyError`` for one not installed here; it is called once per name.
    """

    def __init__(self, keys: Mapping[str, tuple[str, PublicSigningKey]],
                 load: Callable[[str], Any]) -> None:
        self.keys = keys
        self._load = load
        self._adapters: dict[str, Any] = {}

    def check(self, gateway: str, docs: Sequence[Any]) -> list[ParsedCopy | Refusal]:
        """Each document checked (see :mod:`gateway.copies` for what refuses a copy whole and
        what stores it as refused); a :class:`ParsedCopy` is fit to store."""
        alg, key = self.keys[gateway]
        out: list[ParsedCopy | Refusal] = []
        for doc in docs:
            env = read_envelope(doc, expected_alg=alg)
            if isinstance(env, Refusal):
                out.append(env)
                continue
            if env.gateway != gateway:
                out.append(Refusal(env.event_id, f"the copy claims gateway {env.gateway!r} but the "
                                                 f"certificate is hpf://gateway/{gateway}"))
                continue
            if not verify_signature(key, alg, env.signed, env.signature):
                out.append(Refusal(env.event_id, f"the signature does not verify with gateway {gateway}'s "
                                                 "key", forged=True))
                continue
            try:
                copy = read_content(env)
            except CopyError as e:
                out.append(ParsedCopy(store.CopyRow.unreadable(Unreadable(env, str(e)))))
                continue
            if copy.raw is not None and copy.adapter is not None:
                try:
                    adapter = self._adapter(copy.adapter)
                except KeyError:
                    reason = (f"adapter {copy.adapter!r} is not installed at the ledger, so the bank's "
                              "frame cannot be checked")
                    out.append(ParsedCopy(store.CopyRow.unreadable(Unreadable(env, reason))))
                    continue
                disagreement = check_raw(copy, adapter)
                if disagreement is not None:
                    out.append(Refusal(env.event_id, f"the bank's frame disagrees with the copy: "
                                                     f"{disagreement}", forged=True))
                    continue
            out.append(ParsedCopy(store.CopyRow.of(copy), copy))
        return out

    def _adapter(self, name: str) -> Any:
        adapter = self._adapters.get(name)
        if adapter is None:
            adapter = self._adapters[name] = self._load(name)
        return adapter


# -- checking beside the ledger's process ---------------------------------------------

_worker: CopyChecker | None = None


def _start_worker(keys: Mapping[str, tuple[str, bytes]], load: Callable[[str], Any], ledger: int) -> None:
    """In a check process: a :class:`CopyChecker` of its own, from the gateways' PEM keys."""
    from gateway.daemon import die_with_parent, settle_heap

    # Killed with the ledger, however it dies: a worker holds both ends of its task queue,
    # so it would otherwise wait on it for ever once the ledger is gone.
    die_with_parent(signal.SIGKILL, ledger)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the ledger's to handle
    global _worker
    _worker = CopyChecker({name: (alg, serialization.load_pem_public_key(pem))  # type: ignore[misc]
                           for name, (alg, pem) in keys.items()}, load)
    settle_heap()


def _check_in_worker(gateway: str, docs: Sequence[Any]) -> list[ParsedCopy | Refusal]:
    assert _worker is not None, "not a check process"
    return _worker.check(gateway, docs)


def _ready() -> None:
    """Nothing: submitted once per process at start, so that they are spawned before a batch waits."""


class ChecksUnavailable(Exception):
    """A slice of a batch could not be checked (its check process died, or the ledger is
    stopping).  The slices before it may be stored; the gateway sends the whole batch again,
    and those copies are answered ``duplicate``."""


class CheckPool(Service):
    """Checks a gateway's batch of copies with a :class:`CopyChecker`: in ``processes`` worker
    processes, or on a thread of the ledger's own pool when ``processes`` is 0.

    The checks are most of the ledger's work per copy, and its process uses one core (one
    GIL) however many the machine has.  With processes, a batch is cut into slices that
    are checked at once, and :meth:`check` hands back one Deferred per slice, in order, so
    that the slices already checked are stored and matched while the rest are checked.  A
    worker that dies fails the batches it was checking with :class:`ChecksUnavailable`, and
    a fresh pool takes the next.
    """

    name = "check-pool"
    MIN_SLICE = 50

    def __init__(self, checker: CopyChecker, keys: Mapping[str, tuple[str, Any]], processes: int,
                 reactor: Any, threads: ThreadPool, load: Callable[[str], Any]) -> None:
        self.checker = checker
        self.processes = processes
        self.reactor = reactor
        self.threads = threads
        self._init = (_start_worker, ({name: (alg, key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
            for name, (alg, key) in keys.items()}, load))
        self._executor: ProcessPoolExecutor | None = None

    def startService(self) -> None:
        super().startService()
        if self.processes:
            self._executor = self._new_executor()

    def stopService(self) -> None:
        super().stopService()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def pids(self) -> list[int]:
        """The check processes' ids (none when checking on a thread or stopped)."""
        executor = self._executor
        processes = getattr(executor, "_processes", None) or {}
        return sorted(p.pid for p in processes.values() if p.pid is not None)

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn, not fork: a fork of the running reactor process would copy its threads' locks.
        initializer, initargs = self._init
        executor = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=initializer, initargs=(*initargs, os.getpid()))
        for _ in range(self.processes):
            executor.submit(_ready)
        return executor

    def check(self, gateway: str, docs: Sequence[Any]) -> list[Deferred[list[ParsedCopy | Refusal]]]:
        """One Deferred per consecutive slice of ``docs``, in order; together they cover it."""
        if not self.processes:
            return [deferToThreadPool(self.reactor, self.threads, self.checker.check, gateway, docs)]
        size = max(self.MIN_SLICE, -(-len(docs) // (2 * self.processes)))
        return [self._submit(gateway, docs[i:i + size]) for i in range(0, len(docs), size)]

    def _submit(self, gateway: str, docs: Sequence[Any]) -> Deferred[list[ParsedCopy | Refusal]]:
        d: Deferred[list[ParsedCopy | Refusal]] = Deferred()
        executor = self._executor
        if executor is None:
            d.errback(ChecksUnavailable("the ledger is not running; retry"))
            return d
        try:
            future = executor.submit(_check_in_worker, gateway, list(docs))
        except BrokenProcessPool:
            self._replace(executor)
            d.errback(ChecksUnavailable("a check process had died; retry"))
            return d
        future.add_done_callback(lambda f: self.reactor.callFromThread(self._settle, d, f, executor))
        return d

    def _settle(self, d: Deferred[Any], future: Future[Any], executor: ProcessPoolExecutor) -> None:
        if future.cancelled():  # the pool was shut down: the ledger is stopping
            d.errback(ChecksUnavailable("the ledger is stopping; retry"))
            return
        error = future.exception()
        if error is None:
            d.callback(future.result())
        elif isinstance(error, BrokenProcessPool):
            log.error("ledger.check_process_died", error=str(error)[:200])
            self._replace(executor)
            d.errback(ChecksUnavailable("a check process died while checking; retry"))
        else:
            d.errback(error)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if broken is self._executor:
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor() if self.running else None


# -- ingest -------------------------------------------------------------------------


class Ingest:
    """Files a gateway's batch of copies: check off the reactor, store in order, then match.

    One batch per gateway at a time (a lock per gateway), so copies from one
    gateway reach the store in the order they were sent.  The batch is checked
    by the :class:`CheckPool`, in slices when it checks in processes; each slice
    is stored in one commit and matched as soon as it and the slices before it
    are checked.
    """

    def __init__(self, db: store.LedgerDatabase, engine: MatchEngine, checks: CheckPool,
                 metrics: LedgerMetrics) -> None:
        self.db = db
        self.engine = engine
        self.checks = checks
        self.metrics = metrics
        self._locks: dict[str, DeferredLock] = {}

    async def file(self, gateway: str, docs: Sequence[Any]) -> list[dict[str, Any]]:
        """One result per copy, in order, each ``{"event_id", "status", "reason"?}``; after the commit."""
        lock = self._locks.setdefault(gateway, DeferredLock())
        await lock.acquire()
        try:
            return await self._file(gateway, docs)
        finally:
            lock.release()

    async def _file(self, gateway: str, docs: Sequence[Any]) -> list[dict[str, Any]]:
        # On a thread, one batch is checked on one thread: sharing it among threads was
        # measured (bench/README.md, item 13): no more copies per second, 20 % more CPU per copy.
        slices = self.checks.check(gateway, docs)
        results: list[dict[str, Any]] = []
        refused = False
        try:
            for d in slices:
                done = await self._file_checked(gateway, await d, after_refusal=refused)
                refused = refused or any(r["status"] in ("refused", "skipped") for r in done)
                results += done
        finally:
            for d in slices:  # a failed slice fails the batch; the others' failures are its too
                d.addErrback(lambda _: None)
        return results

    async def _file_checked(self, gateway: str, checked: Sequence[ParsedCopy | Refusal], *,
                            after_refusal: bool) -> list[dict[str, Any]]:
        """Store and match one checked slice; ``after_refusal``: an earlier copy of the batch was
        not stored, so none of these may be (the gateway resends from that one on)."""
        # Nothing after the first copy refused whole is stored: the gateway resends from there
        # in journal order (see store.store_copies).  Unreadable copies are not refusals here.
        first_bad = 0 if after_refusal else next(
            (i for i, c in enumerate(checked) if isinstance(c, Refusal)), len(checked))
        parsed = [c for c in checked[:first_bad] if isinstance(c, ParsedCopy)]
        forged = [forged_copy_alert(gateway, c.event_id, c.reason) for c in checked
                  if isinstance(c, Refusal) and c.forged]

        def op(tx: Any) -> tuple[list[store.CopyOutcome], list[dict[str, Any]]]:
            outcomes = store.store_copies(tx, gateway, [p.row for p in parsed])
            drafts = forged + [forged_copy_alert(gateway, o.event_id, o.reason) if o.conflict
                               else copy_refused_alert(gateway, o.event_id, o.reason)
                               for o in outcomes if o.conflict or o.status == "refused-stored"]
            return outcomes, store.store_alerts(tx, [_alert_row(d) for d in drafts])

        outcomes: list[store.CopyOutcome] = []
        if parsed or forged:
            outcomes, new_alerts = await self.db.write(op)
            stored = [o.row for o in outcomes if o.status in ("stored", "refused-stored") and o.row is not None]
            facts = {p.row.event_id: p.fact for p in parsed}
            self.engine.observe(stored, [facts.get(r["event_id"]) for r in stored])
            self.engine.alerts_created(new_alerts)
        else:
            stored = []
        by_id = iter(outcomes)
        results: list[dict[str, Any]] = []
        for i, c in enumerate(checked):
            if after_refusal or i > first_bad:
                event_id = c.event_id if isinstance(c, Refusal) else c.row.event_id
                result = {"event_id": event_id, "status": "skipped",
                          "reason": "after a refused copy; send it again"}
            elif isinstance(c, Refusal):
                result = {"event_id": c.event_id, "status": "refused", "reason": c.reason}
                log.warn("ledger.copy_refused", gateway=gateway, event_id=c.event_id, reason=c.reason,
                         forged=c.forged)
            else:
                o = next(by_id)
                result = {"event_id": o.event_id, "status": o.status}
                if o.status == "refused-stored":
                    result["reason"] = o.reason
                    log.warn("ledger.copy_refused_stored", gateway=gateway, event_id=o.event_id,
                             reason=o.reason[:300])
                elif o.status == "refused":
                    result["reason"] = o.reason
                    log.warn("ledger.copy_refused", gateway=gateway, event_id=o.event_id, reason=o.reason,
                             forged=o.conflict)
            self.metrics.copies.labels(gateway, result["status"]).inc()
            results.append(result)
        if stored:
            self.metrics.gateway_last_seq.labels(gateway).set(max(r["gateway_seq"] for r in stored))
            self.metrics.journal_seq.set(max(r["seq"] for r in stored))
        return results


def _alert_row(draft: Any) -> store.AlertRow:
    return store.AlertRow(draft.key, draft.rule, draft.severity, draft.subject, draft.summary,
                          tuple(draft.evidence))


# -- HTTP plumbing --------------------------------------------------------------------


class _JsonApi(JsonApi):
    """A ledger listener's resource: identity first, then the route; problem+json for errors."""

    log_prefix = "ledger_api"
    failure_title = "The ledger failed to answer; retry later"

    def __init__(self, metrics: LedgerMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def counted(self, route: str, status: int) -> None:
        self.metrics.api_requests.labels(self.listener, route, str(status)).inc()

    def unavailable(self, error: Exception) -> Problem | None:
        if isinstance(error, ChecksUnavailable):
            return Problem(503, "unavailable", "The copies could not be checked; retry", str(error))
        return None

    def deny(self, request: Any, identity: PeerIdentity | None, reason: str, title: str) -> Problem:
        """Log and count a refusal; the 403 problem to answer with."""
        who = identity.uri if identity is not None else "no hpf:// identity"
        self.metrics.denied.labels(self.listener, reason).inc()
        log.warn("ledger.denied", listener=self.listener, peer=who, reason=reason,
                 method=request.method.decode("ascii", "replace"),
                 path=request.path.decode("ascii", "replace")[:200])
        return Problem(403, reason, title)

    def json_body(self, request: Any) -> Any:
        return json_body(request)


# -- ingest listener ------------------------------------------------------------------


class IngestApi(_JsonApi):
    """``POST /v1/copies`` for configured gateways; everything else is 404/405, anyone else 403."""

    listener = "ingest"

    def __init__(self, config: LedgerConfig, ingest: Ingest, engine: MatchEngine,
                 metrics: LedgerMetrics) -> None:
        super().__init__(metrics)
        self.config = config
        self.ingest = ingest
        self.engine = engine

    async def handle(self, request: Any, identity: PeerIdentity | None, method: str,
                     path: str) -> tuple[str, int, Any]:
        if identity is None or identity.role != "gateway" or identity.name not in self.config.gateways:
            raise self.deny(request, identity, "not-a-gateway",
                            "Only the certificates of configured gateways may file copies")
        if path != "/v1/copies":
            raise Problem(404, "not-found", "No such resource")
        if method != "POST":
            raise Problem(405, "method-not-allowed", f"{method} is not allowed on {path}")
        if not self.engine.ready:
            raise Problem(503, "unavailable", "The ledger is catching up after a restart; retry")
        body = self.json_body(request)
        if not isinstance(body, dict) or set(body) != {"copies"} or not isinstance(body["copies"], list) \
                or not 1 <= len(body["copies"]) <= MAX_COPIES:
            raise Problem(422, "invalid-copies", f"The body must be {{\"copies\": [1 to {MAX_COPIES} copies]}}",
                          errors=(FieldError("copies", f"is required, the only field, and holds 1 to "
                                                       f"{MAX_COPIES} copies"),))
        results = await self.ingest.file(identity.name, body["copies"])
        return "copies", 200, {"results": results}


# -- supervisor listener --------------------------------------------------------------

_ALERT_PATH = re.compile(r"/v1/alerts/([0-9]{1,18})")
_ALERT_ACTION = re.compile(r"/v1/alerts/([0-9]{1,18})/(notes|state)")
_TRAIL = re.compile(r"/v1/trail/([A-Za-z0-9_-]{1,16})/([A-Za-z0-9_-]{1,32})")
_BALANCES = re.compile(r"/v1/accounts/([0-9A-Za-z-]{1,32})/balances")
_RULE = re.compile(r"[a-z-]{1,40}")
_READS = ("GET", "HEAD")
MAX_TEXT = 4000


class SupervisorApi(_JsonApi):
    """Read-only access for listed supervisors; notes and alert state changes are the only writes."""

    listener = "supervisor"

    def __init__(self, config: LedgerConfig, db: store.LedgerDatabase, engine: MatchEngine,
                 keys: Mapping[str, tuple[str, PublicSigningKey]], metrics: LedgerMetrics) -> None:
        super().__init__(metrics)
        self.config = config
        self.db = db
        self.engine = engine
        self.keys = keys

    async def handle(self, request: Any, identity: PeerIdentity | None, method: str,
                     path: str) -> tuple[str, int, Any]:
        if identity is None or identity.role != "supervisor" or identity.name not in self.config.supervisors:
            reason = "not-a-supervisor"
            raise self.deny(request, identity, reason, "Only listed supervisors may use this API")
        if method not in _READS:
            action = _ALERT_ACTION.fullmatch(path)
            if method != "POST" or action is None:
                raise self.deny(request, identity, "read-only",
                                "Supervision is read-only: the only writes are notes and state "
                                "changes on alerts")
            alert_id, what = int(action.group(1)), action.group(2)
            if what == "notes":
                return "note", *(await self._note(request, identity, alert_id))
            return "state", *(await self._state(request, identity, alert_id))
        if path == "/v1/alerts":
            return "alerts", 200, await self._alerts(request)
        if m := _ALERT_PATH.fullmatch(path):
            found = await self.db.read(store.get_alert, int(m.group(1)))
            if found is None:
                raise Problem(404, "not-found", "No such alert")
            return "alert", 200, found
        if m := _TRAIL.fullmatch(path):
            return "trail", 200, await self._trail(m.group(1), m.group(2))
        if m := _BALANCES.fullmatch(path):
            return "balances", 200, await self._balances(request, m.group(1))
        if path == "/v1/reports/daily":
            return "daily", 200, await self._daily(request)
        raise Problem(404, "not-found", "No such resource")

    # -- writes: notes and state ---------------------------------------------------

    def _text(self, body: Any, allowed: set[str], field: str) -> str:
        if not isinstance(body, dict):
            raise Problem(422, "invalid-body", "The body must be a JSON object")
        errors = [FieldError(k, "unknown field") for k in sorted(set(body) - allowed)]
        text = body.get(field)
        if not isinstance(text, str) or not text.strip():
            errors.append(FieldError(field, "is required: non-blank text"))
        elif len(text) > MAX_TEXT:
            errors.append(FieldError(field, f"longer than {MAX_TEXT} characters"))
        elif any((ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) <= 0xDFFF
                 for c in text):
            errors.append(FieldError(field, "contains control characters"))
        if errors:
            raise Problem(422, "invalid-body", "The body is invalid", errors=tuple(errors))
        return text

    async def _note(self, request: Any, identity: PeerIdentity, alert_id: int) -> tuple[int, Any]:
        text = self._text(self.json_body(request), {"text"}, "text")
        note = await self.db.write(lambda tx: store.add_note(tx, alert_id, identity.uri, text))
        if note is None:
            raise Problem(404, "not-found", "No such alert")
        log.info("ledger.alert_note", alert_id=alert_id, who=identity.uri)
        return 201, {"alert_id": alert_id, "note": {"id": note["id"], "who": note["who"], "action": "note",
                                                    "text": note["text"], "at": store.iso_us(note["at_us"])}}

    async def _state(self, request: Any, identity: PeerIdentity, alert_id: int) -> tuple[int, Any]:
        body = self.json_body(request)
        reason = self._text(body, {"state", "reason"}, "reason")
        new_state = body.get("state")
        if new_state not in ("acknowledged", "resolved"):
            raise Problem(422, "invalid-body", "The body is invalid",
                          errors=(FieldError("state", 'must be "acknowledged" or "resolved"'),))
        outcome, alert = await self.db.write(
            lambda tx: store.change_state(tx, alert_id, identity.uri, new_state, reason))
        if outcome == "not-found":
            raise Problem(404, "not-found", "No such alert")
        if outcome == "conflict":
            assert alert is not None
            raise Problem(409, "invalid-transition",
                          f"An alert in state {alert['state']} cannot become {new_state}: "
                          "open -> acknowledged -> resolved only")
        log.info("ledger.alert_state", alert_id=alert_id, state=new_state, who=identity.uri)
        self.engine.refresh_alert_gauge()
        return 200, await self.db.read(store.get_alert, alert_id)

    # -- reads -------------------------------------------------------------------------

    async def _alerts(self, request: Any) -> dict[str, Any]:
        state = _arg(request, b"state")
        if state is not None and state not in store.ALERT_STATES:
            raise _bad_query("state", f"must be one of {', '.join(store.ALERT_STATES)}")
        rule = _arg(request, b"rule")
        if rule is not None and not _RULE.fullmatch(rule):
            raise _bad_query("rule", "is not a rule name")
        since = _arg(request, b"since")
        since_us = _since(since) if since is not None else None
        after = _int_arg(request, b"after", 0, 0, 10**18)
        limit = _int_arg(request, b"limit", 100, 1, 1000)
        rows = await self.db.read(lambda c: store.list_alerts(c, state=state, rule=rule, since_us=since_us,
                                                              after_id=after, limit=limit))
        return {"alerts": rows, "next": rows[-1]["id"] if rows else after}

    async def _trail(self, centre_id: str, instruction_id: str) -> dict[str, Any]:
        keys = self.keys

        def read(conn: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            rows, found = store.trail(conn, centre_id, instruction_id)
            return [_trail_item(r, keys) for r in rows], found  # signatures checked off the reactor

        rows, found = await self.db.read(read)
        if not rows:
            raise Problem(404, "not-found", "The ledger holds no copy about this instruction")
        return {"centre_id": centre_id, "instruction_id": instruction_id, "copies": rows, "alerts": found}

    async def _balances(self, request: Any, account: str) -> dict[str, Any]:
        limit = _int_arg(request, b"limit", 100, 1, 1000)
        snaps = await self.db.read(store.balance_history, account, limit)
        tolerance = self.config.thresholds.balance_tolerance
        out = []
        for s in snaps:
            item = {k: v for k, v in s.items() if k not in ("reported", "available", "expected",
                                                           "difference", "net_movement")}
            for key in ("reported", "available", "expected", "difference", "net_movement"):
                if s.get(key) is not None:
                    item[key] = format_amount(s[key])
            if "difference" in s:
                item["continuous"] = abs(s["difference"]) <= tolerance
            out.append(item)
        registered = self.config.accounts.get(account)
        return {"account": account, "registered": registered is not None,
                "bank_id": registered.bank if registered else None,
                "centre_id": registered.centre if registered else None,
                "tolerance": format_amount(tolerance), "snapshots": out,
                "breaks": sum(1 for s in out if s.get("continuous") is False)}

    async def _daily(self, request: Any) -> Any:
        text = _arg(request, b"date")
        if text is None:
            raise _bad_query("date", "is required (YYYY-MM-DD)")
        try:
            day = _dt.date.fromisoformat(text)
            if len(text) != 10:
                raise ValueError
        except ValueError:
            raise _bad_query("date", "must be a date YYYY-MM-DD") from None
        start = _dt.datetime.combine(day, _dt.time(), REPORT_TZ)
        start_us = int(start.timestamp()) * 1_000_000
        end_us = start_us + 86_400 * 1_000_000
        data = await self.db.read(store.daily_rows, start_us, end_us)
        report = daily_report(day, data, self.config)
        accept = (request.getHeader(b"accept") or b"").decode("ascii", "replace").lower()
        if "text/csv" in accept:
            return Csv(report_csv(report))
        return report


def _trail_item(row: Mapping[str, Any], keys: Mapping[str, tuple[str, PublicSigningKey]]) -> dict[str, Any]:
    document = store.copy_document(row)
    found = keys.get(row["gateway"])
    verified = found is not None and verify_signature(found[1], found[0], store.signed_bytes(row),
                                                      row["signature"])
    try:
        payload: Any = json.loads(row["payload"])
    except ValueError:
        payload = row["payload"]
    return {
        "ledger_seq": row["seq"], "gateway": row["gateway"], "seq": row["gateway_seq"],
        "event_id": row["event_id"], "kind": row["kind"], "centre_id": row["centre_id"],
        "instruction_id": row["instruction_id"], "bank_id": row["bank_id"], "account": row["account"],
        "state": row["state"], "created_at": store.iso_us(row["created_us"]), "created_us": row["created_us"],
        "received_at": store.iso_us(row["received_us"]), "payload": payload, "raw": document["raw"],
        "adapter": row["adapter"], "gateway_hash": row["gateway_hash"], "ledger_hash": row["hash"],
        "signature": row["signature"], "signature_alg": row["signature_alg"],
        "signature_verified": verified, "refused": row.get("refused"),
    }


def _arg(request: Any, name: bytes) -> str | None:
    values = request.args.get(name)
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_query(name.decode(), "is not UTF-8") from None


def _int_arg(request: Any, name: bytes, default: int, low: int, high: int) -> int:
    text = _arg(request, name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 19 or not low <= int(text) <= high:
        raise _bad_query(name.decode(), f"must be a whole number from {low} to {high}")
    return int(text)


def _since(text: str) -> int:
    """An RFC 3339 timestamp (with offset), or a date (its start, UTC+8), as microseconds."""
    try:
        if len(text) == 10:
            moment = _dt.datetime.combine(_dt.date.fromisoformat(text), _dt.time(), REPORT_TZ)
        else:
            moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError
    except ValueError:
        raise _bad_query("since", "must be a date YYYY-MM-DD or a timestamp with an offset "
                                  "(2026-11-27T10:00:00+08:00)") from None
    return int(moment.timestamp() * 1_000_000)


def _bad_query(name: str, reason: str) -> Problem:
    return Problem(400, "invalid-query", f"{name} {reason}", errors=(FieldError(name, reason),))


# -- the daily report ------------------------------------------------------------------

_UNMATCHED_RULES = frozenset({"unsolicited-debit", "missing-result", "result-mismatch", "booking-mismatch",
                              "duplicate-execution"})
REPORT_COLUMNS = (
    "centre_id", "bank_id", "account",
    "instructed_count", "instructed_sum", "rejected_count", "rejected_sum",
    "executed_count", "executed_sum", "failed_count", "in_doubt_count",
    "booked_count", "booked_sum", "debit_count", "debit_sum", "credit_count", "credit_sum",
    "closing_balance", "unmatched", "balance_breaks", "alerts",
)
_SUMS = ("instructed_sum", "rejected_sum", "executed_sum", "booked_sum", "debit_sum", "credit_sum")


def daily_report(day: _dt.date, data: Mapping[str, Any], config: LedgerConfig) -> dict[str, Any]:
    """The reconciliation of one business day (UTC+8), per centre, bank and account.

    Sums are CNY strings.  ``instructed``: instructions received that day
    (``rejected`` apart); ``executed``/``failed``/``in_doubt``: results that
    day, summed at the instructed amount; ``booked``: the centre's bookings
    that day, signed as booked (a debit is negative); ``debit``/``credit``:
    the bank's movements; ``closing_balance``: the day's last snapshot;
    ``unmatched``: alerts raised that day for items the three ways do not
    match (unsolicited debit, missing result, result or booking mismatch,
    duplicate execution); ``balance_breaks``: balance-break alerts that day.
    """
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    amounts: Mapping[tuple[str, str], tuple[int | None, str | None, str | None]] = data["instructions"]

    def place(centre: str | None, bank: str | None, account: str | None) -> dict[str, Any]:
        reg = config.accounts.get(account or "")
        key = (centre or (reg.centre if reg else "") or "", bank or (reg.bank if reg else "") or "",
               account or "")
        row = rows.get(key)
        if row is None:
            row = rows[key] = {c: 0 for c in REPORT_COLUMNS[3:]}
            row.update(centre_id=key[0], bank_id=key[1], account=key[2], closing_balance=None)
        return row

    for c in data["copies"]:
        payload = _payload(c["payload"])
        kind = c["kind"]
        row = place(c["centre_id"], c["bank_id"] or payload.get("bank"), c["account"])
        if kind == "instruction.state":
            state = c["state"]
            ins = payload.get("instruction") if isinstance(payload.get("instruction"), dict) else {}
            known = amounts.get((c["centre_id"], c["instruction_id"]))
            amount = _fen(ins.get("amount")) if ins else (known[0] if known else None)
            if state == "received":
                row["instructed_count"] += 1
                row["instructed_sum"] += amount or 0
            elif state == "rejected":
                row["rejected_count"] += 1
                row["rejected_sum"] += amount or 0
            elif state == "succeeded":
                row["executed_count"] += 1
                row["executed_sum"] += amount or 0
            elif state == "failed":
                row["failed_count"] += 1
            elif state == "in_doubt":
                row["in_doubt_count"] += 1
        elif kind == "booking":
            amount = _fen(payload.get("amount"))
            row["booked_count"] += 1
            row["booked_sum"] += amount or 0
        elif kind == "bank.movement":
            amount = payload.get("amount")
            if isinstance(amount, int) and not isinstance(amount, bool):
                if amount < 0:
                    row["debit_count"] += 1
                    row["debit_sum"] += -amount
                else:
                    row["credit_count"] += 1
                    row["credit_sum"] += amount
        elif kind == "bank.balance":
            balance = payload.get("balance")
            if isinstance(balance, int) and not isinstance(balance, bool):
                row["closing_balance"] = balance
    for a in data["alerts"]:
        row = place(a["centre_id"], a["bank_id"], a["account"])
        row["alerts"] += 1
        if a["rule"] in _UNMATCHED_RULES:
            row["unmatched"] += 1
        elif a["rule"] == "balance-break":
            row["balance_breaks"] += 1

    ordered = [rows[k] for k in sorted(rows)]
    totals = {c: sum(r[c] for r in ordered) for c in REPORT_COLUMNS[3:] if c != "closing_balance"}
    for r in ordered + [totals]:
        for c in _SUMS:
            r[c] = format_amount(r[c])
        if r.get("closing_balance") is not None:
            r["closing_balance"] = format_amount(r["closing_balance"])
    return {"date": day.isoformat(), "timezone": "+08:00", "rows": ordered, "totals": totals}


def report_csv(report: Mapping[str, Any]) -> str:
    """The daily report as CSV (RFC 4180): a header, one line per row, then a ``TOTAL`` line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("date",) + REPORT_COLUMNS)
    for row in report["rows"]:
        writer.writerow([report["date"]] + [_cell(row.get(c)) for c in REPORT_COLUMNS])
    totals = dict(report["totals"], centre_id="TOTAL", bank_id="", account="", closing_balance=None)
    writer.writerow([report["date"]] + [_cell(totals.get(c)) for c in REPORT_COLUMNS])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # A cell a spreadsheet would run as a formula is defused (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "@") or (text[:1] == "-" and not _is_amount(text)) else text


def _is_amount(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+(\.[0-9]{1,2})?", text) is not None


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _fen(value: Any) -> int | None:
    from gateway.model import parse_signed_amount

    try:
        return parse_signed_amount(value)
    except ValueError:
        return None
