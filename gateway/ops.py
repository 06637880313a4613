"""The ops listener (loopback): metrics, health, readiness, status, and the operator's two actions.

``GET /status`` (links, queues, ledger backlog, instructions by state),
``GET /instructions/{centre}/{id}`` (the record and its whole journal trail)
and ``POST /instructions/{centre}/{id}/resolve`` (an audited manual
resolution of an in-doubt instruction).  The resolution goes through the
running daemon's writer, so the journal stays one hash chain and the result
reaches the centre's feed and the ledger like any other fact.  Keep this
listener on loopback: whoever reaches it acts as the operator.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from prometheus_client.twisted import MetricsResource
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gateway import lifecycle
from gateway.centre_api import strict_json
from gateway.store import instructions as q

__all__ = ["make_ops_site", "TextCheck"]

log = Logger()


class TextCheck(Resource):
    """A plain-text health or readiness answer: 200 when the check passes, 503 when not."""

    isLeaf = True

    def __init__(self, check: Callable[[], tuple[bool, str]]) -> None:
        super().__init__()
        self._check = check

    def render_GET(self, request: Any) -> bytes:
        ok, text = self._check()
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return text.encode() + b"\n"


class _Json(Resource):
    """Async JSON handlers: ``handler(request, parts) -> (status, body)``."""

    isLeaf = True

    def __init__(self, get: Any = None, post: Any = None) -> None:
        super().__init__()
        self._get, self._post = get, post

    def render_GET(self, request: Any) -> Any:
        return self._run(self._get, request)

    def render_POST(self, request: Any) -> Any:
        return self._run(self._post, request)

    def _run(self, handler: Any, request: Any) -> Any:
        if handler is None:
            request.setResponseCode(405)
            return b'{"error": "method not allowed"}'
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]

        async def go() -> None:
            try:
                status, body = await handler(request, parts)
            except Exception as e:
                log.failure("ops.failed")
                status, body = 500, {"error": f"{type(e).__name__}: {e}"[:300]}
            if request.channel is None:
                return
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            request.write(json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8"))
            request.finish()

        Deferred.fromCoroutine(go())
        return NOT_DONE_YET


def make_ops_site(gateway: Any, ready: Callable[[], tuple[bool, str]]) -> Site:
    """The ops site of one gateway (see the module docstring)."""

    async def status(request: Any, parts: list[str]) -> tuple[int, Any]:
        states = await gateway.db.read(q.count_by_state)
        links = {bank_id: {"up": d.session is not None, **d.counts()}
                 for bank_id, d in gateway.relay.dispatchers.items()}
        backlog = gateway.metrics.ledger_backlog._value.get() if gateway.forwarder is not None else None
        return 200, {"ready": ready()[0], "links": links, "instructions": states,
                     "in_doubt": states.get("in_doubt", 0), "ledger_backlog": backlog,
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
        return 200, {"instruction": q.public_record(row), "trail": trail}

    async def resolve(request: Any, parts: list[str]) -> tuple[int, Any]:
        if len(parts) != 3 or parts[2] != "resolve":
            return 404, {"error": "use POST /instructions/CENTRE/ID/resolve"}
        request.content.seek(0)
        body = strict_json(request.content.read())
        outcome, evidence = body.get("outcome"), body.get("evidence")
        operator = body.get("operator") or "unknown"
        if outcome not in ("succeeded", "failed") or not isinstance(evidence, str) or not evidence.strip():
            return 422, {"error": "give outcome succeeded|failed and a non-empty evidence text"}
        try:
            done = await gateway.db.write(lambda tx: q.resolve_in_doubt(
                tx, parts[0], parts[1], succeeded=outcome == "succeeded", evidence=evidence[:1000],
                operator=str(operator)[:64]))
        except lifecycle.IllegalTransition as e:
            return 409, {"error": f"not in doubt: {e}"}
        if not done.known:
            return 404, {"error": "no such instruction"}
        log.warn("instruction.resolved_manually", centre=parts[0], instruction_id=parts[1], outcome=outcome,
                 operator=operator)
        gateway.metrics.instructions.labels(done.record["bank_id"], done.record["state"]).inc()
        return 200, {"instruction": q.public_record(done.record)}

    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=gateway.metrics.registry))
    root.putChild(b"healthz", TextCheck(lambda: (True, "ok")))
    root.putChild(b"readyz", TextCheck(ready))
    root.putChild(b"status", _Json(get=status))
    root.putChild(b"instructions", _Json(get=show, post=resolve))
    site = Site(root)
    site.noisy = False
    return site
