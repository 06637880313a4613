"""The ledger's two HTTPS+JSON listeners: ingest (gateways) and the supervisor API (read-only).

Ingest (``POST /v1/copies``, ``hpf://gateway/NAME`` certificates of configured
gateways only): every copy is checked before anything is stored
(:mod:`gateway.ledger.checks`) and filed by :class:`~gateway.ledger.ingest.Ingest`;
the answer per copy is sent only after the commit.  The body is
``{"copies": [...], "head_seq": N}``: ``head_seq`` (optional; gateways before it
send none) is the newest seq of the sender's journal when it sent the batch, so
the matcher's deadlines wait for copies the gateway has and the ledger has not
(:class:`~gateway.ledger.match_records.StreamClock`).  It is not signed: a
gateway's certificate vouches for it, and a false one can hold deadlines back by
at most ``[thresholds] gateway_behind_hold``.

Supervisor API (``hpf://supervisor/NAME`` certificates listed in the config):
reads everything; the only writes are notes and state changes on alerts.
Every other write, and every request by anyone else, is refused with 403,
logged with the peer's identity and counted (``hpf_ledger_denied_total``).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import TYPE_CHECKING, Any, Mapping

from twisted.logger import Logger

from gateway.ledger import store
from gateway.ledger.checks import ChecksUnavailable
from gateway.ledger.config import LedgerConfig, PublicSigningKey
from gateway.ledger.ingest import Ingest
from gateway.ledger.report import REPORT_TZ, daily_report, report_csv, trail_item
from gateway.model import FieldError, format_amount
from gateway.query_args import QueryArgs
from gateway.tls import PeerIdentity
from gateway.web import Csv, JsonApi, Problem, json_body

if TYPE_CHECKING:
    from gateway.ledger.engine import MatchEngine
    from gateway.ledger.metrics import LedgerMetrics

__all__ = ["MAX_COPIES", "IngestApi", "SupervisorApi"]

log = Logger()

MAX_COPIES = 1000
MAX_SEQ = 2**63 - 1
"""The largest journal seq (a signed 64-bit column on both sides); a ``head_seq`` above it is not one."""


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
        if not isinstance(body, dict) or not set(body) <= {"copies", "head_seq"} \
                or not isinstance(body.get("copies"), list) or not 1 <= len(body["copies"]) <= MAX_COPIES:
            raise Problem(422, "invalid-copies", f"The body must be {{\"copies\": [1 to {MAX_COPIES} copies]}}",
                          errors=(FieldError("copies", f"is required, the only field besides head_seq, and holds "
                                                       f"1 to {MAX_COPIES} copies"),))
        head_seq = body.get("head_seq")
        if "head_seq" in body and (type(head_seq) is not int or not 0 <= head_seq <= MAX_SEQ):
            # A bool is an int to Python, 1.0 a Decimal to strict_json: neither is a seq.
            raise Problem(422, "invalid-copies", "head_seq must be a journal seq",
                          errors=(FieldError("head_seq", f"when given, an integer from 0 to {MAX_SEQ}: the "
                                                         "newest seq of the sender's journal"),))
        results = await self.ingest.file(identity.name, body["copies"], head_seq)
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
        state = _ARGS.text(request, b"state")
        if state is not None and state not in store.ALERT_STATES:
            raise _bad_query("state", f"must be one of {', '.join(store.ALERT_STATES)}")
        rule = _ARGS.text(request, b"rule")
        if rule is not None and not _RULE.fullmatch(rule):
            raise _bad_query("rule", "is not a rule name")
        since = _ARGS.text(request, b"since")
        since_us = _since(since) if since is not None else None
        after = _ARGS.integer(request, b"after", 0, 0, 10**18)
        limit = _ARGS.integer(request, b"limit", 100, 1, 1000)
        rows = await self.db.read(lambda c: store.list_alerts(c, state=state, rule=rule, since_us=since_us,
                                                              after_id=after, limit=limit))
        return {"alerts": rows, "next": rows[-1]["id"] if rows else after}

    async def _trail(self, centre_id: str, instruction_id: str) -> dict[str, Any]:
        keys = self.keys

        def read(conn: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            rows, found = store.trail(conn, centre_id, instruction_id)
            return [trail_item(r, keys) for r in rows], found  # signatures checked off the reactor

        rows, found = await self.db.read(read)
        if not rows:
            raise Problem(404, "not-found", "The ledger holds no copy about this instruction")
        return {"centre_id": centre_id, "instruction_id": instruction_id, "copies": rows, "alerts": found}

    async def _balances(self, request: Any, account: str) -> dict[str, Any]:
        limit = _ARGS.integer(request, b"limit", 100, 1, 1000)
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
        day = _ARGS.date(request, b"date")
        if day is None:
            raise _bad_query("date", "is required (YYYY-MM-DD)")
        start = _dt.datetime.combine(day, _dt.time(), REPORT_TZ)
        start_us = int(start.timestamp()) * 1_000_000
        end_us = start_us + 86_400 * 1_000_000
        data = await self.db.read(store.daily_rows, start_us, end_us)
        report = daily_report(day, data, self.config)
        accept = (request.getHeader(b"accept") or b"").decode("ascii", "replace").lower()
        if "text/csv" in accept:
            return Csv(report_csv(report))
        return report


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


_ARGS = QueryArgs(_bad_query)
