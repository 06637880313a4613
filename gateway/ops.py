"""The ops listener: metrics, health, readiness, status, and the operators' one write.

Reads, open to whoever reaches the listener: ``GET /metrics``, ``/healthz``,
``/readyz``, ``/status`` (links, queues, ledger backlog, instructions by
state) and ``/instructions/{centre}/{id}`` (the record and its whole trail).

The write, ``POST /instructions/{centre}/{id}/resolve``, settles an in-doubt
instruction by hand and takes two distinct operators: the first call
proposes an outcome with evidence (202, nothing journalled), a call by
another operator with the same outcome confirms it (200), and only then is
the resolution journalled, naming both.  It goes through the running
daemon's writer, so the journal stays one hash chain and the result reaches
the centre's feed and the ledger like any other fact.  Proposals live in the
running daemon only: a restart forgets them (nothing was journalled).

Every write is authenticated by :class:`Operators` (a client certificate
naming ``hpf://operator/NAME`` bound to that operator's anchor, on a TLS ops
listener; or ``Authorization: Bearer TOKEN`` with the operator's token file)
and the operator recorded is the authenticated one, never a name from the
body.  A write whose ``Host`` or ``Origin`` names another host than the
listener's own (a browser page on another site, DNS rebinding) or whose body
is not ``application/json`` is refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from prometheus_client.twisted import MetricsResource
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gateway import lifecycle
from gateway.config import GatewayConfig, endpoint_interface
from gateway.store import instructions as q
from gateway.tls import check_key_file, peer_identity, resolve_credential
from gateway.web import ConnectionLimits, Problem, TextCheck, guarded_site, json_body

__all__ = ["make_ops_site", "Operators", "Proposal"]

log = Logger()

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_MIN_TOKEN = 16


class Operators:
    """Who may write on the ops listener, and how each proves it (``[operators]``).

    Token files are read once, here (``InsecureKeyError`` when one is
    readable by others; ``ValueError`` when shorter than 16 characters).
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.names = frozenset(config.operators)
        self._tokens: list[tuple[str, bytes]] = []
        for name, operator in config.operators.items():
            if operator.token_file is None:
                continue
            path = resolve_credential(operator.token_file)
            check_key_file(path)
            token = path.read_bytes().strip()
            if len(token) < _MIN_TOKEN:
                raise ValueError(f"operators.{name}.token_file: the token must be at least {_MIN_TOKEN} characters")
            self._tokens.append((name, token))

    def authenticate(self, request: Any) -> str | None:
        """The operator who made ``request``, or ``None`` when it proves no one."""
        try:
            identity = peer_identity(request.transport)
        except ValueError:
            identity = None
        if identity is not None and identity.role == "operator" and identity.name in self.names:
            return identity.name  # bound to that operator's own anchor in the handshake
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return None
        found = None
        for name, expected in self._tokens:  # every one compared, in constant time each
            if hmac.compare_digest(token.strip(), expected):
                found = name
        return found


@dataclass(frozen=True)
class Proposal:
    """A manual resolution proposed by one operator, awaiting another's confirmation."""

    outcome: str
    evidence: str
    proposer: str

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "evidence": self.evidence, "proposed_by": self.proposer}


def _host_name(value: str) -> str:
    """The host of a ``Host`` header value (port and IPv6 brackets taken off)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _own_hosts(config: GatewayConfig) -> frozenset[str] | None:
    """The host names a write may address; ``None``: any (a TLS listener on every interface)."""
    interface = endpoint_interface(config.ops) or ""
    if config.ops_tls and (not interface or ipaddress.ip_address(interface).is_unspecified):
        return None  # client certificates are the guard; the host name is the deployment's
    return _LOOPBACK_NAMES | ({interface.lower()} if interface else set())


class _Json(Resource):
    """Async JSON handlers: ``handler(request, parts) -> (status, body)``; problems become ``{"error": ...}``."""

    isLeaf = True

    def __init__(self, get: Any = None, post: Any = None) -> None:
        super().__init__()
        self._get, self._post = get, post

    def render_GET(self, request: Any) -> Any:  # noqa: N802
        return self._run(self._get, request)

    def render_POST(self, request: Any) -> Any:  # noqa: N802
        return self._run(self._post, request)

    def _run(self, handler: Any, request: Any) -> Any:
        if handler is None:
            request.setResponseCode(405)
            return b'{"error": "method not allowed"}'
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]

        async def go() -> None:
            headers: dict[bytes, bytes] = {}
            try:
                status, body = await handler(request, parts)
            except Problem as p:
                status, body = p.status, {"error": p.title + (f": {p.detail}" if p.detail else "")}
                if p.status == 401:
                    headers[b"www-authenticate"] = b'Bearer realm="hpf-gateway ops"'
            except Exception as e:
                log.failure("ops.failed")
                status, body = 500, {"error": f"{type(e).__name__}: {e}"[:300]}
            if request.channel is None:
                return
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            for name, value in headers.items():
                request.setHeader(name, value)
            request.write(json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8"))
            request.finish()

        Deferred.fromCoroutine(go())
        return NOT_DONE_YET


def make_ops_site(gateway: Any, ready: Callable[[], tuple[bool, str]],
                  limits: Callable[[], ConnectionLimits] = ConnectionLimits) -> Any:
    """The ops listener's factory for one gateway (see the module docstring), guarded like every listener.

    Raises like :class:`Operators` for an unusable token file.
    """
    operators = Operators(gateway.config)
    hosts = _own_hosts(gateway.config)
    proposals: dict[tuple[str, str], Proposal] = {}

    def refuse(kind: str, request: Any, problem: Problem, **fields: Any) -> Problem:
        gateway.metrics.security_event(kind, f"ops.{kind}", listener="ops",
                                       path=request.path.decode("ascii", "replace")[:200], **fields)
        return problem

    def writer(request: Any) -> str:
        """The authenticated operator of a write; raises a problem for anything else."""
        host = (request.getHeader(b"host") or b"").decode("ascii", "replace")
        origin = (request.getHeader(b"origin") or b"").decode("ascii", "replace")
        if hosts is not None and _host_name(host) not in hosts:
            raise refuse("foreign_host", request, Problem(403, "foreign-host", f"Host {host[:100]!r} is not this "
                                                          "listener"), host=host[:100])
        if origin and (origin == "null" or _host_name(urlsplit(origin).netloc) != _host_name(host)):
            raise refuse("foreign_origin", request, Problem(403, "foreign-origin", "Writes from a web page of "
                                                            "another origin are refused"), origin=origin[:100])
        operator = operators.authenticate(request)
        if operator is None:
            raise refuse("unauthenticated_operator", request,
                         Problem(401, "unauthenticated", "Authenticate as an operator: a client certificate "
                                 "naming hpf://operator/NAME, or Authorization: Bearer with your token"))
        return operator

    async def status(request: Any, parts: list[str]) -> tuple[int, Any]:
        states = await gateway.db.read(q.count_by_state)
        links = {bank_id: {"up": d.session is not None, **d.counts()}
                 for bank_id, d in gateway.relay.dispatchers.items()}
        backlog = gateway.metrics.ledger_backlog._value.get() if gateway.forwarder is not None else None
        return 200, {"ready": ready()[0], "links": links, "instructions": states,
                     "in_doubt": states.get("in_doubt", 0), "ledger_backlog": backlog,
                     "awaiting_confirmation": len(proposals),
                     "writer": {"queued": gateway.db.writer.queued, "commits": gateway.db.writer.commits,
                                "operations": gateway.db.writer.operations,
                                "busy_s": round(gateway.db.writer.busy_s, 3)}}

    async def show(request: Any, parts: list[str]) -> tuple[int, Any]:
        if len(parts) != 2:
            return 404, {"error": "use /instructions/CENTRE/ID"}
        row = await gateway.db.read(q.get, parts[0], parts[1])
        if row is None:
            return 404, {"error": "no such instruction"}
        trail = await gateway.db.read(q.trail, parts[0], parts[1])
        out: dict[str, Any] = {"instruction": q.public_record(row), "trail": trail}
        pending = proposals.get((parts[0], parts[1]))
        if pending is not None:
            out["proposal"] = pending.to_json()
        return 200, out

    async def resolve(request: Any, parts: list[str]) -> tuple[int, Any]:
        if len(parts) != 3 or parts[2] != "resolve":
            return 404, {"error": "use POST /instructions/CENTRE/ID/resolve"}
        operator = writer(request)
        body = json_body(request)  # 415 unless application/json; strict
        outcome = body.get("outcome") if isinstance(body, dict) else None
        evidence = body.get("evidence") if isinstance(body, dict) else None
        if outcome not in ("succeeded", "failed") or not isinstance(evidence, str) or not evidence.strip():
            return 422, {"error": "give outcome succeeded|failed and a non-empty evidence text"}
        key = (parts[0], parts[1])
        row = await gateway.db.read(q.get, *key)
        if row is None:
            return 404, {"error": "no such instruction"}
        if row["state"] != "in_doubt":
            proposals.pop(key, None)
            return 409, {"error": f"not in doubt: the instruction is {row['state']}"}
        pending = proposals.get(key)
        if pending is None or pending.proposer == operator:
            # A first proposal, or its proposer restating it: nothing is journalled yet.
            proposals[key] = Proposal(outcome, evidence[:1000], operator)
            log.warn("instruction.resolution_proposed", centre=key[0], instruction_id=key[1], outcome=outcome,
                     operator=operator)
            return 202, {"proposal": proposals[key].to_json(),
                         "awaiting": "confirmation by another operator (the same call, the same outcome)"}
        if pending.outcome != outcome:
            return 409, {"error": f"{pending.proposer} proposed {pending.outcome}: confirm that outcome, or have "
                                  f"{pending.proposer} propose again", "proposal": pending.to_json()}
        try:
            done = await gateway.db.write(lambda tx: q.resolve_in_doubt(
                tx, key[0], key[1], succeeded=outcome == "succeeded", evidence=pending.evidence,
                operator=pending.proposer, confirmed_by=operator, confirmation=evidence[:1000]))
        except lifecycle.IllegalTransition as e:
            proposals.pop(key, None)
            return 409, {"error": f"not in doubt: {e}"}
        proposals.pop(key, None)
        if not done.known:
            return 404, {"error": "no such instruction"}
        log.warn("instruction.resolved_manually", centre=key[0], instruction_id=key[1], outcome=outcome,
                 operator=pending.proposer, confirmed_by=operator)
        gateway.metrics.instructions.labels(done.record["bank_id"], done.record["state"]).inc()
        return 200, {"instruction": q.public_record(done.record),
                     "resolution": {**pending.to_json(), "confirmed_by": operator}}

    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=gateway.metrics.registry))
    root.putChild(b"healthz", TextCheck(lambda: (True, "ok")))
    root.putChild(b"readyz", TextCheck(ready))
    root.putChild(b"status", _Json(get=status))
    root.putChild(b"instructions", _Json(get=show, post=resolve))
    return guarded_site(root, limits, gateway.reactor, gateway.metrics.security_event, listener="ops",
                        tls=gateway.config.ops_tls)
