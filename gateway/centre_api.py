"""The centre API: HTTPS + JSON for city business systems (DESIGN.md §6, notes in openapi.json).

The client certificate decides the centre; the debit account decides the bank.
Validation and policy are pure (:class:`Intake.prepare`); storage is one
group-committed write; the answer is sent only after that commit (G1).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from decimal import Decimal
from importlib.resources import files
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from gateway.config import GatewayConfig
from gateway.faults import crash_point
from gateway.metrics import GatewayMetrics
from gateway.model import FieldError, InvalidInput, parse_booking, parse_instruction
from gateway.store import instructions as q
from gateway.store.db import Database, StoreUnavailable
from gateway.tls import peer_identity

__all__ = ["Problem", "Intake", "ResultsFeed", "CentreApi", "make_site", "strict_json"]

log = Logger()

MAX_BODY = 4 * 1024 * 1024
IDLE_TIMEOUT = 75.0
_PROBLEM_TYPE = "urn:hpf-gateway:problem:"


@dataclass(eq=False)
class Problem(Exception):
    """An RFC 9457 problem answer: status, a slug for ``type``, and the bad fields."""

    status: int
    slug: str
    title: str
    detail: str = ""
    errors: tuple[FieldError, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": _PROBLEM_TYPE + self.slug, "title": self.title,
                               "status": self.status}
        if self.detail:
            out["detail"] = self.detail
        if self.errors:
            out["errors"] = [{"field": e.field, "reason": e.reason} for e in self.errors]
        return out


def strict_json(data: bytes) -> Any:
    """Parse a request body, refusing what lenient parsers let through.

    Duplicate keys, NaN/Infinity, invalid UTF-8 and absurd nesting are errors;
    numbers with a fraction are kept exact (Decimal), never floats.
    """

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant, parse_float=Decimal)
    except UnicodeDecodeError:
        raise Problem(400, "invalid-json", "The body is not UTF-8") from None
    except RecursionError:
        raise Problem(400, "invalid-json", "The body nests too deeply") from None
    except ValueError as e:
        raise Problem(400, "invalid-json", "The body is not valid JSON", str(e)[:200]) from None


class Intake:
    """Turns a centre's instruction bodies into stored instructions (validation, authorisation, policy)."""

    def __init__(self, config: GatewayConfig, db: Database, on_stored: Callable[[list[dict[str, Any]]], None],
                 metrics: GatewayMetrics, today: Callable[[], _dt.date] = _dt.date.today,
                 encodable: Callable[[q.IntakeItem], str | None] | None = None,
                 backpressure: Callable[[str, int], str | None] | None = None) -> None:
        self.config = config
        self.encodable = encodable
        self.backpressure = backpressure
        self.db = db
        self.on_stored = on_stored
        self.metrics = metrics
        self.today = today

    def prepare(self, centre_id: str, body: Any) -> q.IntakeItem:
        """Validate one body; raises :class:`Problem` (422, 403).  Pure: touches no storage."""
        cfg = self.config
        try:
            ins = parse_instruction(centre_id, body, ceiling_fen=cfg.limits.max_amount, today=self.today())
        except InvalidInput as e:
            self.metrics.refused.labels("centre_api", "invalid_instruction").inc()
            raise Problem(422, "invalid-instruction", "The instruction is invalid",
                          errors=tuple(e.errors)) from None
        account = cfg.accounts.get(ins.debit_account)
        if account is None or account.centre != centre_id:
            self.metrics.security_events.labels("foreign_account").inc()
            log.warn("centre.foreign_account", centre=centre_id, debit_account=ins.debit_account)
            raise Problem(403, "not-your-account", "The debit account is not one of this centre's",
                          errors=(FieldError("debit_account", "not an account of this centre"),))
        if self.backpressure is not None:
            busy = self.backpressure(account.bank, 1)
            if busy is not None:
                self.metrics.refused.labels("centre_api", "backpressure").inc()
                raise Problem(503, "unavailable", f"Bank {account.bank} cannot take more instructions now",
                              busy, errors=(FieldError("debit_account", f"held at bank {account.bank}"),))
        item = q.IntakeItem(ins, account.bank, self.policy_refusal(ins))
        if item.refusal is None and self.encodable is not None:
            reason = self.encodable(item)
            if reason is not None:
                self.metrics.refused.labels("centre_api", "not_encodable").inc()
                raise Problem(422, "invalid-instruction", "The bank's protocol cannot carry this instruction",
                              errors=(FieldError("", reason),))
        return item

    def policy_refusal(self, ins: Any) -> str | None:
        """Why policy refuses the instruction (stored as rejected), or None."""
        cfg = self.config
        c = ins.creditor
        registered = cfg.counterparties.get(c.account)
        own = cfg.accounts.get(c.account)
        if own is not None and own.centre == ins.centre_id:
            pass  # a move between the centre's own accounts
        elif registered is None or registered.name != c.name or registered.bank_code != c.bank_code:
            return "unregistered counterparty: creditor account, name and bank code must match the register"
        if ins.amount >= cfg.limits.large_amount and not ins.approval_ref:
            return "large amount without approval_ref"
        return None

    @inlineCallbacks
    def store(self, items: Sequence[q.IntakeItem]) -> Any:
        """Commit the items; fires with one :class:`IntakeOutcome` each, after the commit."""
        outcomes = yield self.db.write(lambda tx: q.intake(tx, items))
        crash_point("intake.respond")
        created = [o.record for o in outcomes if o.status == "created"]
        for rec in created:
            self.metrics.instructions.labels(rec["bank_id"], rec["state"]).inc()
        fresh = [rec for rec in created if rec["state"] == "received"]
        if fresh:
            self.on_stored(fresh)
        return outcomes


class ResultsFeed:
    """Wakes long-polling readers of a centre's feed after a commit that touched it."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[Deferred[None]]] = {}

    def wait(self, centre_id: str) -> Deferred[None]:
        d: Deferred[None] = Deferred(lambda d: self._forget(centre_id, d))
        self._waiters.setdefault(centre_id, []).append(d)
        return d

    def _forget(self, centre_id: str, d: Deferred[None]) -> None:
        waiters = self._waiters.get(centre_id, [])
        if d in waiters:
            waiters.remove(d)

    def notify(self, centres: set[str]) -> None:
        for centre in centres:
            for d in self._waiters.pop(centre, []):
                d.callback(None)


class LimitedRequest(Request):
    """A request whose body is bounded: past MAX_BODY the rest is discarded and 413 answered."""

    too_large = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > MAX_BODY:
            self.too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > MAX_BODY:
            self.too_large = True
            return
        if not self.too_large:
            super().handleContentChunk(data)


class CentreApi(Resource):
    """Routes /v1/… for centres.  One leaf resource: the paths are few and fixed."""

    isLeaf = True

    def __init__(self, config: GatewayConfig, intake: Intake, db: Database, feed: ResultsFeed,
                 metrics: GatewayMetrics, reactor: IReactorTime) -> None:
        super().__init__()
        self.config = config
        self.intake = intake
        self.db = db
        self.feed = feed
        self.metrics = metrics
        self.reactor = reactor
        self.accepting = True  # False while shutting down: intake answers 503
        self._openapi = files("gateway").joinpath("openapi.json").read_bytes()

    # -- plumbing ------------------------------------------------------------

    def render(self, request: Request) -> Any:
        d = Deferred.fromCoroutine(self._dispatch(request))
        d.addErrback(lambda f: log.failure("centre_api.unhandled", f))
        return NOT_DONE_YET

    async def _dispatch(self, request: Any) -> None:
        route = "unknown"
        try:
            centre = self._centre(request)
            path = request.path.decode("ascii", "replace")
            method = request.method.decode("ascii", "replace")
            route, handler = self._route(method, path)
            status, body = await handler(request, centre, path)
        except Problem as p:
            status, body = p.status, p
        except StoreUnavailable as e:
            log.warn("centre_api.store_unavailable", error=str(e))
            status, body = 503, Problem(503, "unavailable", "The store cannot take writes now; retry",
                                        str(e)[:200])
        if request.finished or getattr(request, "_disconnected", False) or request.channel is None:
            return
        self.metrics.api_requests.labels(route, str(status)).inc()
        self._send(request, status, body)

    def _send(self, request: Any, status: int, body: Any) -> None:
        request.setResponseCode(status)
        if isinstance(body, Problem):
            request.setHeader(b"content-type", b"application/problem+json")
            if status == 503:
                request.setHeader(b"retry-after", b"1")
            payload = json.dumps(body.to_json(), ensure_ascii=False).encode("utf-8")
        elif isinstance(body, bytes):
            request.setHeader(b"content-type", b"application/json")
            payload = body
        else:
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.write(payload)
        request.finish()

    def _centre(self, request: Any) -> str:
        try:
            identity = peer_identity(request.transport)
        except ValueError:  # a certificate from a trusted CA that names no hpf:// identity
            identity = None
        if identity is None or identity.role != "centre" or identity.name not in self.config.centres:
            who = identity.uri if identity else "no certificate"
            self.metrics.security_events.labels("unauthorised_peer").inc()
            log.warn("centre_api.unauthorised_peer", peer=who)
            raise Problem(403, "unauthorised-peer", "This certificate does not belong to a registered centre")
        return identity.name

    def _route(self, method: str, path: str) -> tuple[str, Any]:
        routes = {
            ("POST", "/v1/instructions"): ("submit", self._submit),
            ("POST", "/v1/instructions/batch"): ("batch", self._batch),
            ("POST", "/v1/bookings"): ("booking", self._booking),
            ("GET", "/v1/results"): ("results", self._results),
            ("GET", "/v1/openapi.json"): ("openapi", self._openapi_doc),
        }
        if (method, path) in routes:
            return routes[(method, path)]
        if path.startswith("/v1/instructions/") and path.count("/") == 3:
            if method == "GET":
                return "get", self._get
            raise Problem(405, "method-not-allowed", f"{method} is not allowed on {path}")
        if any(p == path for _, p in routes):
            raise Problem(405, "method-not-allowed", f"{method} is not allowed on {path}")
        raise Problem(404, "not-found", "No such resource")

    def _body(self, request: Any) -> Any:
        if request.too_large:
            raise Problem(413, "too-large", f"The body is larger than {MAX_BODY} bytes")
        ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            raise Problem(415, "unsupported-media-type", "Send application/json")
        request.content.seek(0)
        return strict_json(request.content.read())

    def _intake_open(self) -> None:
        if not self.accepting:
            raise Problem(503, "unavailable", "The gateway is shutting down; retry on another node")

    # -- handlers --------------------------------------------------------------

    async def _submit(self, request: Any, centre: str, _: str) -> tuple[int, Any]:
        self._intake_open()
        item = self.intake.prepare(centre, self._body(request))
        [outcome] = await self.intake.store([item])
        return self._outcome(outcome)

    def _outcome(self, outcome: q.IntakeOutcome) -> tuple[int, Any]:
        if outcome.status == "conflict":
            return 409, Problem(409, "conflict", "This instruction_id was used with another body",
                                errors=(FieldError("instruction_id", "already used with a different body"),))
        return (202 if outcome.status == "created" else 200), q.public_record(outcome.record)

    async def _batch(self, request: Any, centre: str, _: str) -> tuple[int, Any]:
        self._intake_open()
        body = self._body(request)
        if not isinstance(body, dict) or set(body) != {"instructions"} or not isinstance(body["instructions"], list):
            raise Problem(422, "invalid-instruction", "The batch must be {\"instructions\": [...]}",
                          errors=(FieldError("instructions", "is required and must be the only field"),))
        raw = body["instructions"]
        if not 1 <= len(raw) <= self.config.limits.max_batch:
            raise Problem(422, "invalid-instruction", "Batch size out of range",
                          errors=(FieldError("instructions", f"must hold 1 to {self.config.limits.max_batch} items"),))
        results: list[dict[str, Any] | None] = [None] * len(raw)
        items: list[q.IntakeItem] = []
        positions: list[int] = []
        for i, entry in enumerate(raw):
            try:
                items.append(self.intake.prepare(centre, entry))
                positions.append(i)
            except Problem as p:
                results[i] = {"index": i, "status": p.status, "problem": p.to_json()}
        outcomes = await self.intake.store(items) if items else []
        for i, outcome in zip(positions, outcomes):
            status, value = self._outcome(outcome)
            key = "problem" if isinstance(value, Problem) else "instruction"
            results[i] = {"index": i, "status": status,
                          key: value.to_json() if isinstance(value, Problem) else value}
        return 200, {"results": results}

    async def _booking(self, request: Any, centre: str, _: str) -> tuple[int, Any]:
        """The centre's accounting voucher for a result or a movement, journalled for the ledger."""
        self._intake_open()
        try:
            booking = parse_booking(centre, self._body(request), ceiling_fen=self.config.limits.max_amount)
        except InvalidInput as e:
            raise Problem(422, "invalid-booking", "The booking is invalid", errors=tuple(e.errors)) from None
        account = self.config.accounts.get(booking.account)
        if account is None or account.centre != centre:
            self.metrics.security_events.labels("foreign_account").inc()
            raise Problem(403, "not-your-account", "The account is not one of this centre's",
                          errors=(FieldError("account", "not an account of this centre"),))
        if booking.instruction_id is not None:
            row = await self.db.read(q.get, centre, booking.instruction_id)
            if row is None:
                raise Problem(422, "invalid-booking", "No such instruction for this centre",
                              errors=(FieldError("instruction_id", "no such instruction"),))
        status, body = await self.db.write(lambda tx: q.record_booking(tx, booking))
        if status == "conflict":
            raise Problem(409, "conflict", "This booking_id was used with another body",
                          errors=(FieldError("booking_id", "already used with a different body"),))
        return (202 if status == "created" else 200), body

    async def _get(self, request: Any, centre: str, path: str) -> tuple[int, Any]:
        instruction_id = path.rsplit("/", 1)[1]
        row = await self.db.read(q.get, centre, instruction_id)
        if row is None:
            raise Problem(404, "not-found", "No such instruction for this centre")
        return 200, q.public_record(row)

    async def _results(self, request: Any, centre: str, _: str) -> tuple[int, Any]:
        after = _int_arg(request, b"after", 0, 0, 2**62)
        limit = _int_arg(request, b"limit", 500, 1, 1000)
        wait = _wait_arg(request, self.config.timeouts.max_feed_wait)
        deadline = self.reactor.seconds() + wait
        while True:
            rows = await self.db.read(q.feed, centre, after, limit)
            remaining = deadline - self.reactor.seconds()
            if rows or remaining <= 0:
                break
            waiter = self.feed.wait(centre)
            # Commits on this node wake us at once; another node's commits (several
            # nodes on one PostgreSQL) are seen by looking again every second.
            timer = self.reactor.callLater(min(remaining, 1.0), waiter.cancel)
            gone = request.notifyFinish()
            gone.addBoth(lambda _: waiter.cancel() if not waiter.called else None)
            try:
                await waiter
            except Exception:
                pass  # timed out, or the client went away
            if timer.active():
                timer.cancel()
            if request.channel is None:
                request._disconnected = True
                return 499, None
        return 200, {"results": rows, "next": rows[-1]["cursor"] if rows else after}

    async def _openapi_doc(self, request: Any, centre: str, _: str) -> tuple[int, Any]:
        return 200, self._openapi


def _int_arg(request: Any, name: bytes, default: int, low: int, high: int) -> int:
    values = request.args.get(name)
    if not values:
        return default
    text = values[0].decode("ascii", "replace")
    if not text.isdigit() or not low <= int(text) <= high:
        raise Problem(400, "invalid-query", f"{name.decode()} must be a whole number from {low} to {high}",
                      errors=(FieldError(name.decode(), "out of range or not a number"),))
    return int(text)


def _wait_arg(request: Any, ceiling: float) -> float:
    values = request.args.get(b"wait")
    if not values:
        return 0.0
    try:
        value = Decimal(values[0].decode("ascii"))
        if not value.is_finite() or value < 0:
            raise ValueError
    except Exception:
        raise Problem(400, "invalid-query", "wait must be a number of seconds",
                      errors=(FieldError("wait", "not a non-negative number"),)) from None
    return float(min(value, Decimal(str(ceiling))))


def make_site(api: CentreApi) -> Site:
    """The HTTP site for the centre API, with bounded request bodies."""
    # An idle connection (including one that never finishes its TLS handshake) is
    # dropped after IDLE_TIMEOUT; the longest long-poll is well inside it.
    site = Site(api, requestFactory=LimitedRequest, timeout=IDLE_TIMEOUT)
    site.displayTracebacks = False
    site.noisy = False
    return site
