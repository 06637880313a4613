"""The centre API: HTTPS + JSON for city business systems (README.md, "Centre API"; the contract is openapi.json).

The client certificate decides the centre; the debit account decides the bank.
Validation and policy are pure (:class:`Intake.prepare`); storage is one
group-committed write; the answer is sent only after that commit (G1).

Abuse guards (``[limits] centre_*``): :func:`connection_limits` feeds the
shared :class:`gateway.web.ConnectionGuard` (handshake and request deadlines,
connections per source address and per certificate identity, failed
handshakes reported), on every listener of the gateway; :class:`RateLimiter`
gives each peer a token bucket of requests, answering 429 with Retry-After
beyond it.  Every refusal is counted in ``hpf_gateway_security_events_total``
and logged with the peer.
"""

from __future__ import annotations

import datetime as _dt
import math
from decimal import Decimal
from importlib.resources import files
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.config import GatewayConfig, Limits
from gateway.faults import crash_point
from gateway.metrics import GatewayMetrics
from gateway.model import FieldError, InvalidInput, parse_booking, parse_instruction
from gateway.store import instructions as q
from gateway.store.db import Database
from gateway.tls import PeerIdentity
# Problem and strict_json stay importable from here for existing callers; they live in gateway.web.
from gateway.web import ConnectionLimits, JsonApi, JsonText, Problem, json_body, json_text, peer_ip, strict_json

__all__ = ["Problem", "Intake", "ResultsFeed", "CentreApi", "strict_json", "TokenBucket", "RateLimiter",
           "connection_limits"]

log = Logger()

RESERVED_IDS = frozenset({"batch"})  # instruction_ids that name a fixed path under /v1/instructions/
MAX_FEED_WAIT = 30  # seconds: the most a centre may ask of the results feed (openapi.json); config may lower it


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

    def prepare(self, centre_id: str, body: Any, today: _dt.date | None = None) -> q.IntakeItem:
        """Validate one body; raises :class:`Problem` (422, 403).  Pure: touches no storage.

        ``today`` is the intake's date (a batch reads the clock once for all its items).
        """
        cfg = self.config
        try:
            ins = parse_instruction(centre_id, body, ceiling_fen=cfg.limits.max_amount,
                                    today=self.today() if today is None else today)
        except InvalidInput as e:
            self.metrics.refused.labels("centre_api", "invalid_instruction").inc()
            raise Problem(422, "invalid-instruction", "The instruction is invalid",
                          errors=tuple(e.errors)) from None
        if ins.instruction_id in RESERVED_IDS:
            self.metrics.refused.labels("centre_api", "invalid_instruction").inc()
            raise Problem(422, "invalid-instruction", "The instruction is invalid",
                          errors=(FieldError("instruction_id", "is reserved: /v1/instructions/batch is the batch "
                                                               "endpoint, so it could not be read back"),))
        account = cfg.accounts.get(ins.debit_account)
        if account is None or account.centre != centre_id:
            self.metrics.security_events.labels("foreign_account").inc()
            log.warn("centre.foreign_account", kind="foreign_account", centre=centre_id,
                     debit_account=ins.debit_account)
            raise Problem(403, "not-your-account", "The debit account is not one of this centre's",
                          errors=(FieldError("debit_account", "not an account of this centre"),))
        mismatch = self.own_account_mismatch(ins)
        if mismatch:
            self.metrics.refused.labels("centre_api", "invalid_instruction").inc()
            log.warn("centre.own_account_mismatch", centre=centre_id, creditor_account=ins.creditor.account,
                     fields=",".join(e.field for e in mismatch))
            raise Problem(422, "invalid-instruction", "The creditor does not match the centre's own account",
                          errors=mismatch)
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

    def own_account_mismatch(self, ins: Any) -> tuple[FieldError, ...]:
        """For a transfer to one of the centre's own registered accounts, each creditor field that
        differs from the register (a bank code the register lacks cannot be checked, so differs)."""
        c = ins.creditor
        own = self.config.accounts.get(c.account)
        if own is None or own.centre != ins.centre_id:
            return ()
        errors = []
        if c.name != own.name:
            errors.append(FieldError("creditor.name", "is not the registered name of this account of the centre"))
        if not own.bank_code:
            errors.append(FieldError("creditor.bank_code", "this account of the centre has no bank_code in the "
                                                           "register, so a transfer to it cannot be checked"))
        elif c.bank_code != own.bank_code:
            errors.append(FieldError("creditor.bank_code", "is not the registered bank code of this account of "
                                                           "the centre"))
        return tuple(errors)

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


class TokenBucket:
    """A token bucket: ``burst`` tokens at most, refilled at ``rate`` per second.  Pure; the caller gives the time."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there will be one."""
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        """Whether the bucket would be full at ``now`` (so forgetting it changes nothing)."""
        return self.tokens + max(0.0, now - self.stamp) * self.rate >= self.burst


class RateLimiter:
    """One :class:`TokenBucket` per peer key; buckets follow changed limits (SIGHUP)."""

    _PRUNE_ABOVE = 10_000

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float, rate: float, burst: int) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            if len(self._buckets) > self._PRUNE_ABOVE:
                # Full buckets hold no state worth keeping; this bounds memory under key churn.
                self._buckets = {k: b for k, b in self._buckets.items() if not b.full(now)}
            bucket = self._buckets[key] = TokenBucket(rate, burst, now)
        return bucket.take(now)


class CentreApi(JsonApi):
    """Routes /v1/… for centres.  One leaf resource: the paths are few and fixed."""

    listener = "centre_api"
    log_prefix = "centre_api"
    failure_title = "The gateway failed to answer; retry later"

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
        self.limiter = RateLimiter()
        self._openapi = files("gateway").joinpath("openapi.json").read_bytes()

    # -- plumbing ------------------------------------------------------------

    async def handle(self, request: Any, identity: PeerIdentity | None, method: str,
                     path: str) -> tuple[str, int, Any]:
        self._throttle(request, identity)
        centre = self._centre(identity)
        route, handler = self._route(method, path)
        request.hpf_route = route
        status, body = await handler(request, centre, path)
        return route, status, body

    def counted(self, route: str, status: int) -> None:
        self.metrics.api_requests.labels(route, str(status)).inc()

    def _throttle(self, request: Any, identity: PeerIdentity | None) -> None:
        """Charge the peer's token bucket; 429 with Retry-After when it is empty."""
        limits = self.config.limits
        ip = peer_ip(request)
        key = identity.uri if identity is not None else f"ip:{ip}"
        wait = self.limiter.take(key, self.reactor.seconds(), limits.centre_requests_per_second,
                                 limits.centre_request_burst)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            self.metrics.security_event("rate_limited", "centre_api.rate_limited", listener="centre_api",
                                        peer=identity.uri if identity else None, ip=ip,
                                        rate=limits.centre_requests_per_second)
            raise Problem(429, "rate-limited", "Too many requests from this peer; retry later",
                          f"at most {limits.centre_requests_per_second:g} requests per second "
                          f"(bursts of {limits.centre_request_burst})", retry_after=retry)

    def _centre(self, identity: PeerIdentity | None) -> str:
        if identity is None or identity.role != "centre" or identity.name not in self.config.centres:
            who = identity.uri if identity else "no certificate"
            self.metrics.security_events.labels("unauthorised_peer").inc()
            log.warn("centre_api.unauthorised_peer", kind="unauthorised_peer", peer=who)
            raise Problem(403, "unauthorised-peer", "This certificate does not belong to a registered centre")
        return identity.name

    def _route(self, method: str, path: str) -> tuple[str, Any]:
        routes = {
            "/v1/instructions": {"POST": ("submit", self._submit)},
            "/v1/instructions/batch": {"POST": ("batch", self._batch)},
            "/v1/bookings": {"POST": ("booking", self._booking)},
            "/v1/results": {"GET": ("results", self._results)},
            "/v1/openapi.json": {"GET": ("openapi", self._openapi_doc)},
        }
        methods = routes.get(path)
        if methods is None and path.startswith("/v1/instructions/") and path.count("/") == 3:
            # /v1/instructions/{instruction_id}.  A fixed path wins over the template, as in
            # OpenAPI: /v1/instructions/batch takes POST only, and "batch" is never an
            # instruction_id (RESERVED_IDS), so nothing is lost.
            methods = {"GET": ("get", self._get)}
        if methods is None:
            raise Problem(404, "not-found", "No such resource")
        if method not in methods:
            # RFC 9110 §15.5.6: a 405 names the methods the resource does support.
            raise Problem(405, "method-not-allowed", f"{method} is not allowed on {path}",
                          allow=tuple(sorted(methods)))
        return methods[method]

    def _body(self, request: Any) -> Any:
        return json_body(request)

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
        return (202 if outcome.status == "created" else 200), JsonText(q.public_record_json(outcome.record))

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
        # Rendered item by item: an instruction's record is JSON text around its stored body.
        results: list[str] = [""] * len(raw)
        items: list[q.IntakeItem] = []
        positions: list[int] = []
        today = self.intake.today()
        for i, entry in enumerate(raw):
            try:
                items.append(self.intake.prepare(centre, entry, today))
                positions.append(i)
            except Problem as p:
                results[i] = json_text({"index": i, "status": p.status, "problem": p.to_json()})
        outcomes = await self.intake.store(items) if items else []
        for i, outcome in zip(positions, outcomes):
            status, value = self._outcome(outcome)
            results[i] = (json_text({"index": i, "status": status, "problem": value.to_json()})
                          if isinstance(value, Problem)
                          else f'{{"index":{i},"status":{status},"instruction":{value}}}')
        return 200, JsonText('{"results":[' + ",".join(results) + "]}")

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
            log.warn("centre.foreign_account", kind="foreign_account", centre=centre, account=booking.account)
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
        return 200, JsonText(q.public_record_json(row))

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
    """The ``wait`` argument: 0 to MAX_FEED_WAIT seconds (else 400), then capped at ``ceiling`` (config)."""
    values = request.args.get(b"wait")
    if not values:
        return 0.0
    try:
        value = Decimal(values[0].decode("ascii"))
        if not value.is_finite() or not 0 <= value <= MAX_FEED_WAIT:
            raise ValueError
    except Exception:
        raise Problem(400, "invalid-query", f"wait must be a number of seconds from 0 to {MAX_FEED_WAIT}",
                      errors=(FieldError("wait", "out of range or not a number"),)) from None
    return float(min(value, Decimal(str(ceiling))))


def connection_limits(limits: Limits) -> ConnectionLimits:
    """The ``[limits] centre_*`` guards, as every gateway listener applies them."""
    return ConnectionLimits(connections_per_ip=limits.centre_connections_per_ip,
                            connections_per_peer=limits.centre_connections_per_centre,
                            handshake_timeout=limits.centre_handshake_timeout,
                            request_timeout=limits.centre_request_timeout,
                            idle_timeout=limits.centre_idle_timeout)
