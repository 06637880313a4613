"""The supervision console: a server-rendered web UI on the ledger, behind client certificates.

One leaf resource routes every page.  For each request: the certificate's
identity (:func:`gateway.tls.peer_identity`, as on the supervisor API) becomes
a :class:`~.scope.Viewer` or the request is refused (403, logged and counted);
every POST must come from this site (``Origin``/``Sec-Fetch-Site``) and carry
the CSRF token bound to the identity (:mod:`.csrf`); every answer carries a
strict Content-Security-Policy.  Pages are Jinja2 templates with autoescaping;
reads and writes go through :mod:`.queries`, which applies the viewer's scope.

This module is the frame (identity, CSRF, forms, rendering, routing); the pages
live by area in :mod:`.pages_alerts` (overview, instructions, alerts),
:mod:`.pages_cases` (inquiries, rectifications, conditions) and
:mod:`.pages_reports` (reports, accounts), mixed into :class:`ConsoleResource`;
what they share is in :mod:`.common`, the deadline watch in :mod:`.overdue`.
"""

from __future__ import annotations

import email.parser
import email.policy
import urllib.parse
from typing import TYPE_CHECKING, Any, Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gateway.ledger.console import csrf, queries, rectify
from gateway.ledger.console.common import (
    _ID,
    _LANG_COOKIE,
    _STAFF_STEPS,
    _STEPS,
    CSP,
    PAGE,
    Raw,
    Redirect,
    Refused,
    _arg,
    _pattern,
)
from gateway.ledger.console.i18n import choose_lang, translate
from gateway.ledger.console.pages_alerts import AlertPages
from gateway.ledger.console.pages_cases import CasePages
from gateway.ledger.console.pages_reports import ReportPages
from gateway.ledger.console.scope import Viewer, viewer_for
from gateway.ledger.console.state import Console
from gateway.store.db import StoreUnavailable
from gateway.tls import PeerIdentity, peer_identity

if TYPE_CHECKING:
    pass

__all__ = ["Console", "ConsoleResource"]

log = Logger()


class ConsoleResource(AlertPages, CasePages, ReportPages, Resource):
    """Every console page (one leaf resource: the routes are few and fixed)."""

    isLeaf = True
    listener = "console"

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def render(self, request: Any) -> Any:
        d = Deferred.fromCoroutine(self._dispatch(request))
        d.addErrback(lambda f: log.failure("console.unhandled", f))
        return NOT_DONE_YET

    # -- the request's frame ---------------------------------------------------------

    async def _dispatch(self, request: Any) -> None:
        c = self.console
        lang = "zh-CN"
        route, status = "unknown", 200
        body: Any
        try:
            lang = self._lang(request)
            path = request.path.decode("ascii", "replace")
            method = request.method.decode("ascii", "replace")
            if method == "GET" and path.startswith("/static/"):
                name = path[len("/static/"):]
                if name not in c.static:
                    raise Refused(404, "error.404")
                route = "static"
                ctype = "text/css" if name.endswith(".css") else "text/javascript"
                body = Raw(c.static[name], f"{ctype}; charset=utf-8")
            else:
                identity = self._identity(request)
                viewer = viewer_for(identity, c.config)
                if viewer is None:
                    raise self._deny(request, identity, "not-a-console-user")
                if request.too_large if hasattr(request, "too_large") else False:
                    raise Refused(413, "error.400", "the request is too large")
                if method == "POST":
                    self._check_csrf(request, viewer)
                elif method not in ("GET", "HEAD"):
                    raise Refused(405, "error.400", f"{method} is not allowed")
                route, body = await self._route(request, viewer, method, path, lang)
        except Refused as r:
            status = r.status
            body = self._page(request, None, lang, "error.html", {"status": r.status, "key": r.key,
                                                                    "detail": r.detail})
        except StoreUnavailable as e:
            log.warn("console.store_unavailable", error=str(e))
            status, body = 503, self._page(request, None, lang, "error.html",
                                           {"status": 503, "key": "error.title", "detail": "retry"})
        except Exception:
            log.failure("console.failed")
            status, body = 500, self._page(request, None, lang, "error.html",
                                           {"status": 500, "key": "error.title", "detail": ""})
        if request.finished or request.channel is None:
            return
        c.metrics.api_requests.labels(self.listener, route, str(status)).inc()
        self._send(request, status, body)

    def _identity(self, request: Any) -> PeerIdentity | None:
        try:
            return peer_identity(request.transport)
        except ValueError:
            return None

    def _deny(self, request: Any, identity: PeerIdentity | None, reason: str) -> Refused:
        who = identity.uri if identity is not None else "no hpf:// identity"
        self.console.metrics.denied.labels(self.listener, reason).inc()
        log.warn("ledger.denied", listener=self.listener, peer=who, reason=reason,
                 method=request.method.decode("ascii", "replace"),
                 path=request.path.decode("ascii", "replace")[:200])
        return Refused(403, "error.403", reason)

    def _lang(self, request: Any) -> str:
        query = _arg(request, b"lang")
        cookie = (request.getCookie(_LANG_COOKIE) or b"").decode("ascii", "replace") or None
        accept = (request.getHeader(b"accept-language") or b"").decode("ascii", "replace")
        lang = choose_lang(query, cookie, accept)
        if query == lang and cookie != lang:
            request.addCookie(_LANG_COOKIE, lang.encode(), path=b"/", secure=True, httpOnly=True,
                              sameSite="strict")
        return lang

    def _csrf_cookie(self, request: Any) -> str:
        value = (request.getCookie(csrf.COOKIE) or b"").decode("ascii", "replace")
        if not value or len(value) > 128:
            value = csrf.new_cookie_value()
            request.addCookie(csrf.COOKIE, value.encode(), path=b"/", secure=True, httpOnly=True,
                              sameSite="strict")
            request.getCookie  # noqa: B018 (the new value is used for this page's forms below)
        return value

    def _check_csrf(self, request: Any, viewer: Viewer) -> None:
        origin = request.getHeader(b"origin")
        fetch_site = request.getHeader(b"sec-fetch-site")
        host = request.getHeader(b"host")
        if csrf.cross_site(origin.decode("ascii", "replace") if origin else None,
                           fetch_site.decode("ascii", "replace") if fetch_site else None,
                           host.decode("ascii", "replace") if host else None):
            log.warn("console.cross_site", origin=(origin or b"")[:100].decode("ascii", "replace"),
                     fetch_site=(fetch_site or b"")[:40].decode("ascii", "replace"),
                     host=(host or b"")[:100].decode("ascii", "replace"))
            raise self._deny(request, None, "cross-site")
        cookie = (request.getCookie(csrf.COOKIE) or b"").decode("ascii", "replace")
        token = self._form(request).get("csrf")
        if not csrf.token_ok(self.console.secret, viewer.uri, cookie, token):
            raise self._deny(request, None, "csrf")

    def _form(self, request: Any) -> dict[str, Any]:
        """The POST body's fields (urlencoded or multipart; a file field as (name, type, bytes))."""
        cached = getattr(request, "_hpf_form", None)
        if cached is not None:
            return cached
        ctype = (request.getHeader(b"content-type") or b"").decode("latin-1")
        request.content.seek(0)
        data = request.content.read()
        form: dict[str, Any] = {}
        if ctype.startswith("application/x-www-form-urlencoded"):
            for key, values in urllib.parse.parse_qs(data.decode("utf-8", "replace"), keep_blank_values=True).items():
                form[key] = values if key == "id" else values[0]
        elif ctype.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + data)
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if not name:
                    continue
                payload = part.get_payload(decode=True) or b""
                filename = part.get_filename()
                if filename is not None:  # file fields are lists: an answer takes several files
                    if payload:
                        form.setdefault(name, []).append((filename[:100], part.get_content_type(), payload))
                else:
                    form[name] = payload.decode("utf-8", "replace")
        request._hpf_form = form
        return form

    def _page(self, request: Any, viewer: Viewer | None, lang: str, template: str,
              context: Mapping[str, Any]) -> bytes:
        c = self.console
        token = csrf.token_for(c.secret, viewer.uri, self._csrf_cookie(request)) if viewer else ""
        path = request.path.decode("ascii", "replace")
        query = {k.decode(): v[0].decode("utf-8", "replace") for k, v in request.args.items() if k != b"lang"}
        other = "en" if lang == "zh-CN" else "zh-CN"

        def t(key: str) -> str:
            return translate(key, lang)

        def link(base: str, **params: Any) -> str:
            shown = {k: v for k, v in params.items() if v not in (None, "")}
            return base + ("?" + urllib.parse.urlencode(shown) if shown else "")

        return c.templates.get_template(template).render(
            t=t, lang=lang, viewer=viewer, csrf=token, path=path, link=link,
            other_lang_url=link(path, **query, lang=other), **context).encode("utf-8")

    def _send(self, request: Any, status: int, body: Any) -> None:
        request.setResponseCode(status)
        request.setHeader(b"content-security-policy", CSP.encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"same-origin")  # no-referrer would make forms send Origin: null
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"cross-origin-opener-policy", b"same-origin")
        request.setHeader(b"cache-control", b"no-store")
        if isinstance(body, Redirect):
            request.setResponseCode(303)
            request.setHeader(b"location", body.location.encode("ascii"))
            payload = b""
        elif isinstance(body, Raw):
            request.setHeader(b"content-type", body.content_type.encode("ascii"))
            if body.filename is not None:
                quoted = urllib.parse.quote(body.filename)
                request.setHeader(b"content-disposition", f"attachment; filename*=UTF-8''{quoted}".encode("ascii"))
            payload = body.body
        else:
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            payload = body
        if request.method != b"HEAD":
            request.write(payload)
        request.finish()

    # -- routes ------------------------------------------------------------------------

    async def _route(self, request: Any, viewer: Viewer, method: str, path: str, lang: str) -> tuple[str, Any]:
        page: Callable[[str, Mapping[str, Any]], bytes] = \
            lambda template, ctx: self._page(request, viewer, lang, template, ctx)  # noqa: E731
        parts = [p for p in path.split("/") if p]
        if method == "POST":
            staff_may = (len(parts) == 3 and ((parts[0] == "inquiries" and parts[2] == "answer") or (
                parts[0] == "rectifications" and parts[2] in _STAFF_STEPS)))
            if not viewer.supervisor and not staff_may:
                raise self._deny(request, None, "staff-answer-only")
            form = self._form(request)
            if parts == ["alerts", "ack"]:
                return "ack", await self._ack(viewer, form)
            if parts == ["alerts", "manual"]:
                return "manual", await self._manual(viewer, form)
            if len(parts) == 3 and parts[0] == "alerts" and _ID.fullmatch(parts[1]):
                alert_id = int(parts[1])
                if parts[2] == "note":
                    return "note", await self._note(viewer, alert_id, form)
                if parts[2] == "resolve":
                    return "resolve", await self._resolve(viewer, alert_id, form)
                if parts[2] == "inquiry":
                    return "ask", await self._ask(viewer, alert_id, form)
            if len(parts) == 3 and parts[0] == "inquiries" and _ID.fullmatch(parts[1]) and parts[2] == "answer":
                if viewer.supervisor:
                    raise self._deny(request, None, "staff-only")
                return "answer", await self._answer(viewer, int(parts[1]), form)
            if parts == ["rectifications"]:
                return "rectify-open", await self._open_rectification(viewer, form)
            if len(parts) == 3 and parts[0] == "rectifications" and _ID.fullmatch(parts[1]) \
                    and parts[2] in _STEPS:
                return "rectify-step", await self._rectification_step(request, viewer, int(parts[1]), parts[2],
                                                                      form)
            if parts == ["conditions"]:
                if not viewer.province:
                    raise self._deny(request, None, "province-only")
                return "conditions-set", await self._set_conditions(viewer, form)
            raise Refused(404, "error.404")
        if not parts:
            return "overview", page("overview.html", await self._overview(viewer, lang))
        if parts == ["alerts"]:
            return "alerts", page("alerts.html", await self._inbox(request, viewer))
        if parts == ["instructions"]:
            found = await self._instructions(request, viewer)
            return "instructions", page(found.pop("template", "instructions.html"), found)
        if len(parts) == 2 and parts[0] == "alerts" and _ID.fullmatch(parts[1]):
            return "alert", page("alert.html", await self._alert(viewer, int(parts[1])))
        if parts == ["inquiries"]:
            return "inquiries", page("inquiries.html", await self._inquiries(request, viewer))
        if len(parts) == 2 and parts[0] == "inquiries" and _ID.fullmatch(parts[1]):
            return "inquiry", page("inquiry.html", await self._inquiry(viewer, int(parts[1])))
        if len(parts) == 4 and parts[0] == "inquiries" and _ID.fullmatch(parts[1]) and parts[2] == "attachments" \
                and _ID.fullmatch(parts[3]):
            return "attachment", await self._attachment(viewer, int(parts[1]), int(parts[3]))
        if parts == ["rectifications"]:
            before = _pattern(request, b"before", _ID)
            rows = await self.console.db.read(lambda conn: queries.list_rectifications(
                conn, viewer.centres, before_id=int(before) if before else None, limit=PAGE + 1))
            return "rectifications", page("rectifications.html", {
                "rectifications": rows[:PAGE], "next_before": rows[PAGE - 1]["id"] if len(rows) > PAGE else None,
                "now_us": self._now_us()})
        if len(parts) == 2 and parts[0] == "rectifications" and _ID.fullmatch(parts[1]):
            row = await self.console.db.read(queries.get_rectification, int(parts[1]), viewer.centres)
            if row is None:
                raise Refused(404, "error.404")
            steps = [a for (state, a), (_, who) in rectify.ACTIONS.items()
                     if state == row["state"] and (who == "supervisor") == viewer.supervisor]
            return "rectification", page("rectification.html", {"r": row, "steps": steps, "now_us": self._now_us()})
        if parts == ["reports"]:
            if not viewer.supervisor:
                raise self._deny(request, None, "supervisors-only")
            return "report", await self._report(request, viewer, lang, page)
        if parts == ["accounts"]:
            return "accounts", page("accounts.html", await self._accounts(viewer))
        if parts == ["conditions"]:
            if not viewer.supervisor:
                raise self._deny(request, None, "supervisors-only")
            return "conditions", page("conditions.html", await self._conditions(viewer))
        raise Refused(404, "error.404")
