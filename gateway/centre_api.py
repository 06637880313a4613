"""The centre API: HTTPS + JSON for city business systems (README.md, "Centre API"; the contract is openapi.json).

The client certificate decides the centre; the debit account decides the bank.
This module holds the routes; validation, policy and storage are the
:class:`~gateway.intake.Intake`'s, and the abuse guards (``[limits] centre_*``)
are in :mod:`gateway.centre_guard`: beyond its token bucket a peer is answered
429 with Retry-After.  Every refusal is counted in
``hpf_gateway_security_events_total`` and logged with the peer.
"""

from __future__ import annotations

import math
from decimal import Decimal
from importlib.resources import files
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.model import FieldError, InvalidInput, parse_booking
from gateway.query_args import QueryArgs
from gateway.store import instructions as q
from gateway.store.batches import BatchConflict
from gateway.store.db import Database
from gateway.tls import PeerIdentity
from gateway.centre_guard import RateLimiter
from gateway.intake import Intake
from gateway.web import JsonApi, JsonText, Problem, json_body, json_text, peer_ip

__all__ = ["ResultsFeed", "CentreApi", "MAX_FEED_WAIT"]

log = Logger()

MAX_FEED_WAIT = 30  # seconds: the most a centre may ask of the results feed (openapi.json); config may lower it


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
            # instruction_id (gateway.intake.RESERVED_IDS), so nothing is lost.
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
        if not isinstance(body, dict) or "instructions" not in body or not set(body) <= {"instructions", "bank_batch"} \
                or not isinstance(body["instructions"], list):
            raise Problem(422, "invalid-instruction", "The batch must be {\"instructions\": [...]}",
                          errors=(FieldError("instructions", "is required and, with bank_batch, the only field"),))
        bank_batch = body.get("bank_batch", False)
        if not isinstance(bank_batch, bool):
            raise Problem(422, "invalid-instruction", "bank_batch must be true or false",
                          errors=(FieldError("bank_batch", "must be a JSON boolean"),))
        raw = body["instructions"]
        if not 1 <= len(raw) <= self.config.limits.max_batch:
            raise Problem(422, "invalid-instruction", "Batch size out of range",
                          errors=(FieldError("instructions", f"must hold 1 to {self.config.limits.max_batch} items"),))
        if bank_batch:
            return await self._bank_batch(centre, raw)
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
        return 200, self._batch_answer(results, positions, outcomes)

    def _batch_answer(self, results: list[str], positions: list[int], outcomes: list[q.IntakeOutcome],
                      extra: str = "") -> JsonText:
        for i, outcome in zip(positions, outcomes):
            status, value = self._outcome(outcome)
            results[i] = (json_text({"index": i, "status": status, "problem": value.to_json()})
                          if isinstance(value, Problem)
                          else f'{{"index":{i},"status":{status},"instruction":{value}}}')
        return JsonText('{"results":[' + ",".join(results) + "]" + extra + "}")

    async def _bank_batch(self, centre: str, raw: list[Any]) -> tuple[int, Any]:
        """``bank_batch: true``: the items go to their bank as ONE bank batch (bdc BDC103, or BDC104
        for collections), taken whole or refused whole (docs/protocols/bdc.md, "Batches"); each
        stays an instruction of its own, with its own state and result on the feed."""
        today = self.intake.today()
        items: list[q.IntakeItem] = []
        errors: list[FieldError] = []
        ids: set[str] = set()
        for i, entry in enumerate(raw):
            try:
                item = self.intake.prepare(centre, entry, today)
            except Problem as p:
                if p.status != 422 and p.status != 403:
                    raise  # 503 (backpressure) as for one instruction
                errors += [FieldError(f"instructions[{i}].{e.field}".rstrip("."), e.reason) for e in p.errors] \
                    or [FieldError(f"instructions[{i}]", p.title)]
                continue
            if item.instruction.instruction_id in ids:
                errors.append(FieldError(f"instructions[{i}].instruction_id", "appears twice in this bank batch"))
            ids.add(item.instruction.instruction_id)
            items.append(item)
        if errors:
            self.metrics.refused.labels("centre_api", "invalid_bank_batch").inc()
            raise Problem(422, "invalid-instruction", "A bank batch is taken whole: some lines are invalid",
                          errors=tuple(errors[:100]))
        check = self.intake.bank_batch
        refusal = check(items) if check is not None else "this gateway has no relay to send a bank batch"
        if refusal is not None:
            self.metrics.refused.labels("centre_api", "invalid_bank_batch").inc()
            raise Problem(422, "invalid-instruction", "These instructions cannot go to their bank as one batch",
                          errors=(FieldError("bank_batch", refusal),))
        try:
            outcomes = await self.intake.store_bank_batch(items)
        except BatchConflict as e:
            raise Problem(409, "conflict", "This bank batch was partly submitted before, or otherwise",
                          errors=(FieldError("instructions", str(e)),)) from None
        batch_ref = outcomes[0].record["bank_ref"]
        extra = ',"bank_batch":' + json_text({"bank": items[0].bank_id, "bank_ref": batch_ref,
                                               "lines": len(items)})
        return 200, self._batch_answer([""] * len(items), list(range(len(items))), outcomes, extra)

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
        after = _ARGS.integer(request, b"after", 0, 0, 2**62)
        limit = _ARGS.integer(request, b"limit", 500, 1, 1000)
        wait = _wait_arg(request, self.config.timeouts.max_feed_wait)
        deadline = self.reactor.seconds() + wait
        while True:
            rows = await self.db.read(q.feed, centre, after, limit)
            remaining = deadline - self.reactor.seconds()
            if rows or remaining <= 0:
                break
            waiter = self.feed.wait(centre)
            # Commits on this node wake us at once; another node's commits (several
            # nodes on one PostgreSQL) are seen by looking again every second.  Alone
            # on SQLite, nothing else commits: the feed sleeps until a commit or the deadline.
            alone = self.config.database.startswith("sqlite")
            timer = self.reactor.callLater(remaining if alone else min(remaining, 1.0), waiter.cancel)
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


_ARGS = QueryArgs(lambda name, reason: Problem(400, "invalid-query", f"{name} {reason}",
                                                errors=(FieldError(name, "out of range or not a number"),)))


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
