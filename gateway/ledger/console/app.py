"""The supervision console: a server-rendered web UI on the ledger, behind client certificates.

One leaf resource routes every page.  For each request: the certificate's
identity (:func:`gateway.tls.peer_identity`, as on the supervisor API) becomes
a :class:`~.scope.Viewer` or the request is refused (403, logged and counted);
every POST must come from this site (``Origin``/``Sec-Fetch-Site``) and carry
the CSRF token bound to the identity (:mod:`.csrf`); every answer carries a
strict Content-Security-Policy.  Pages are Jinja2 templates with autoescaping;
reads and writes go through :mod:`.queries`, which applies the viewer's scope.
"""

from __future__ import annotations

import datetime as _dt
import email.parser
import email.policy
import json
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Callable, Mapping

import jinja2
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from adapters.base import decode_all, load_adapter
from gateway.ledger import store
from gateway.ledger.report import REPORT_TZ, trail_item
from gateway.ledger.config import LedgerConfig, PublicSigningKey
from gateway.ledger.console import charts, csrf, queries, rectify, reports
from gateway.ledger.console.i18n import choose_lang, translate
from gateway.ledger.console.scope import Viewer, centres_of_config, city_of, viewer_for
from gateway.ledger.rules import RULES, SEVERITIES
from gateway.model import State, format_amount, parse_amount
from gateway.query_args import QueryArgs
from gateway.store.db import StoreUnavailable
from gateway.tls import PeerIdentity, peer_identity

if TYPE_CHECKING:
    from gateway.ledger.engine import MatchEngine
    from gateway.ledger.metrics import LedgerMetrics

__all__ = ["Console", "ConsoleResource", "CSP", "MAX_ATTACHMENT", "ATTACHMENT_TYPES"]

log = Logger()


def _now_us() -> int:
    """Now on the wall clock (deadlines and journal times are dates, not durations)."""
    return time.time_ns() // 1000

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
MAX_TEXT = 4000
MAX_ATTACHMENT = 2 * 1024 * 1024
ATTACHMENT_TYPES = {"application/pdf": b"%PDF-", "image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff",
                    "text/plain": b""}
PAGE = 50
ALERT_RULES = tuple(RULES) + ("forged-copy",) + queries.CONSOLE_RULES
_STATES = store.ALERT_STATES
_ID = re.compile(r"[0-9]{1,18}")
_CENTRE = re.compile(r"C[0-9]{5}")
_BANK = re.compile(r"[A-Z0-9]{1,16}")
_ACCOUNT = re.compile(r"[0-9A-Za-z-]{1,32}")
_EVENT = re.compile(r"[0-9A-Za-z_-]{1,64}")
_KEYSET = re.compile(r"[0-9]{1,18}\.[0-9]{1,18}")
INSTRUCTION_STATES = tuple(s.value for s in State)
_STATIC = ("console.css", "console.js")
_LANG_COOKIE = b"hpf-lang"
_STEPS = frozenset(action for _, action in rectify.ACTIONS)
_STAFF_STEPS = frozenset(action for (_, action), (_, who) in rectify.ACTIONS.items() if who == "staff")


class Refused(Exception):
    """An answer other than a page: status and message key (rendered as the error page)."""

    def __init__(self, status: int, key: str, detail: str = "") -> None:
        super().__init__(detail or key)
        self.status, self.key, self.detail = status, key, detail


@dataclass
class Redirect:
    location: str


@dataclass
class Raw:
    body: bytes
    content_type: str
    filename: str | None = None


def _local(us: int | None) -> str:
    """Microseconds as a local (UTC+8) time for people."""
    if us is None:
        return ""
    return _dt.datetime.fromtimestamp(us / 1_000_000, REPORT_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _day_start_us(day: _dt.date) -> int:
    return int(_dt.datetime.combine(day, _dt.time(), REPORT_TZ).timestamp()) * 1_000_000


def _clean_text(text: str | None, field: str, *, required: bool = True) -> str:
    if text is None or not text.strip():
        if required:
            raise Refused(400, "error.400", f"{field} is required")
        return ""
    if len(text) > MAX_TEXT or any((ord(c) < 0x20 and c not in "\r\n\t") or 0x7F <= ord(c) < 0xA0 for c in text):
        raise Refused(400, "error.400", f"{field} is too long or holds control characters")
    return text.strip()


def describe_frame(adapter_name: str | None, raw: bytes | None) -> tuple[str | None, str | None]:
    """The bank's frame decoded by its adapter (one line per message) and as text; None where absent."""
    if raw is None:
        return None, None
    decoded: str | None = None
    if adapter_name:
        try:
            decoded = "\n".join(repr(m) for m in decode_all(load_adapter(adapter_name), raw))
        except Exception as e:  # hostile bytes: say so, never fail the page
            decoded = f"({type(e).__name__}: {str(e)[:200]})"
    text = None
    for encoding in ("utf-8", "gb18030"):  # banks' frames are UTF-8 or GB 18030 (GBK) text
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    if text is None:  # a binary header or broken bytes: what is text stays readable, the rest escaped
        text = raw.decode("utf-8", "backslashreplace")
    return decoded, "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in text)


class Console:
    """The console's state and operations, independent of HTTP: config, database, keys, CSRF secret."""

    def __init__(self, config: LedgerConfig, db: store.LedgerDatabase, engine: MatchEngine,
                 keys: Mapping[str, tuple[str, PublicSigningKey]], metrics: LedgerMetrics,
                 *, secret: bytes | None = None) -> None:
        assert config.console is not None
        self.config = config
        self.db = db
        self.engine = engine
        self.keys = keys
        self.metrics = metrics
        self.secret = secret or secrets.token_bytes(32)
        self.centres = centres_of_config(config)
        self.totals = queries.DailyTotals()
        self.alert_totals = queries.AlertTotals()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("gateway.ledger.console", "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(amount=lambda v: "" if v is None else format_amount(v), local=_local,
                                     pretty=lambda v: json.dumps(v, indent=1, ensure_ascii=False, sort_keys=True))
        self.static = {name: files("gateway.ledger.console").joinpath("static", name).read_bytes()
                       for name in _STATIC}

    def city_name(self, centre: str | None) -> str:
        cities = self.config.console.cities if self.config.console else {}
        key = city_of(centre, cities)
        return cities[key].name if key else ""


class ConsoleResource(Resource):
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
                if filename is not None:
                    if payload:
                        form[name] = (filename[:100], part.get_content_type(), payload)
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
            return "instructions", page("instructions.html", await self._instructions(request, viewer))
        if len(parts) == 2 and parts[0] == "alerts" and _ID.fullmatch(parts[1]):
            return "alert", page("alert.html", await self._alert(viewer, int(parts[1])))
        if parts == ["inquiries"]:
            return "inquiries", page("inquiries.html", await self._inquiries(request, viewer))
        if len(parts) == 2 and parts[0] == "inquiries" and _ID.fullmatch(parts[1]):
            return "inquiry", page("inquiry.html", await self._inquiry(viewer, int(parts[1])))
        if len(parts) == 3 and parts[0] == "inquiries" and _ID.fullmatch(parts[1]) and parts[2] == "attachment":
            return "attachment", await self._attachment(viewer, int(parts[1]))
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

    # -- overview ------------------------------------------------------------------------

    async def _overview(self, viewer: Viewer, lang: str) -> dict[str, Any]:
        c = self.console
        today = _dt.datetime.now(REPORT_TZ).date()
        start = _day_start_us(today)
        data = await c.db.read(queries.overview_counts, viewer.centres, start, start + 86_400_000_000, c.totals)
        head, _ = await c.db.read(store.load_head)
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for centre, bank, state, n in data["states"]:
            row = rows.setdefault((centre, bank), {"centre": centre, "bank": bank, "city": c.city_name(centre),
                                                   "received": 0, "succeeded": 0, "failed": 0,
                                                   "rejected": 0, "in_doubt": 0})
            if state in row:
                row[state] += n
        for (centre, bank), total in data["sums"].items():
            rows.setdefault((centre, bank), {"centre": centre, "bank": bank, "city": c.city_name(centre),
                                             "received": 0, "succeeded": 0, "failed": 0, "rejected": 0,
                                             "in_doubt": 0})["amount"] = total
        by_severity: dict[str, int] = {s: 0 for s in ("critical", "major", "minor")}
        by_rule: dict[str, int] = {}
        for severity, rule, n in data["open"]:
            by_severity[severity] = by_severity.get(severity, 0) + n
            by_rule[rule] = by_rule.get(rule, 0) + n
        chart = charts.bar_chart([(translate(f"severity.{s}", lang), n) for s, n in by_severity.items()],
                                 title=translate("overview.open_by_severity", lang))
        return {"rows": [rows[k] for k in sorted(rows)], "by_severity": by_severity, "by_rule": by_rule,
                "in_doubt": sum(r["in_doubt"] for r in rows.values()),
                "overdue": by_rule.get("missing-result", 0), "balance_breaks": by_rule.get("balance-break", 0),
                "overdue_inquiries": by_rule.get(queries.INQUIRY_OVERDUE, 0),
                "lag": max(0, head - c.engine.applied_seq), "chart": chart, "today": today.isoformat(),
                "behind": data["behind"]}

    # -- instructions ----------------------------------------------------------------------

    async def _instructions(self, request: Any, viewer: Viewer) -> dict[str, Any]:
        """The list behind the overview's counts: by centre, bank, state reached and days, or the
        overdue ones; in scope, paged by keyset."""
        c = self.console
        f = {"centre": _pattern(request, b"centre", _CENTRE), "bank": _pattern(request, b"bank", _BANK),
             "state": _choice(request, b"state", INSTRUCTION_STATES),
             "overdue": _choice(request, b"overdue", ("1",)),
             "from": _date(request, b"from"), "to": _date(request, b"to")}
        from_us = _day_start_us(f["from"]) if f["from"] else None
        to_us = _day_start_us(f["to"]) + 86_400_000_000 if f["to"] else None
        if f["overdue"]:
            before = _pattern(request, b"before", _ID)
            rows = await c.db.read(lambda conn: queries.overdue_instructions(
                conn, viewer.centres, centre=f["centre"], bank=f["bank"],
                before_id=int(before) if before else None, limit=PAGE + 1))
            key = (lambda r: str(r["alert_id"]))
        else:
            before = _pattern(request, b"before", _KEYSET)
            after_row = (int(before.split(".")[0]), int(before.split(".")[1])) if before else None
            rows = await c.db.read(lambda conn: queries.instruction_list(
                conn, viewer.centres, centre=f["centre"], bank=f["bank"], state=f["state"], from_us=from_us,
                to_us=to_us, before=after_row, limit=PAGE + 1))
            key = (lambda r: f"{r['created_us']}.{r['seq']}")
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        filters = {k: (v.isoformat() if isinstance(v, _dt.date) else v) for k, v in f.items()}
        return {"instructions": rows, "filters": filters, "next_before": key(rows[-1]) if more and rows else None,
                "paged": before is not None, "states": INSTRUCTION_STATES, "centres": viewer.visible(c.centres)}

    # -- alerts ----------------------------------------------------------------------------

    async def _inbox(self, request: Any, viewer: Viewer) -> dict[str, Any]:
        c = self.console
        f = {"rule": _choice(request, b"rule", ALERT_RULES), "severity": _choice(request, b"severity", SEVERITIES),
             "state": _choice(request, b"state", _STATES), "centre": _pattern(request, b"centre", _CENTRE),
             "bank": _pattern(request, b"bank", _BANK), "account": _pattern(request, b"account", _ACCOUNT),
             "from": _date(request, b"from"), "to": _date(request, b"to")}
        before = _pattern(request, b"before", _ID)
        rows = await c.db.read(lambda conn: queries.inbox(
            conn, viewer.centres, rule=f["rule"], severity=f["severity"], centre=f["centre"], bank=f["bank"],
            account=f["account"],
            state=f["state"], from_us=_day_start_us(f["from"]) if f["from"] else None,
            to_us=_day_start_us(f["to"]) + 86_400_000_000 if f["to"] else None,
            before_id=int(before) if before else None, limit=PAGE + 1))
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        filters = {k: (v.isoformat() if isinstance(v, _dt.date) else v) for k, v in f.items()}
        return {"alerts": rows, "filters": filters, "next_before": rows[-1]["id"] if more and rows else None,
                "paged": before is not None, "rules": ALERT_RULES, "severities": ("critical", "major", "minor"),
                "states": _STATES, "centres": viewer.visible(c.centres)}

    async def _alert(self, viewer: Viewer, alert_id: int) -> dict[str, Any]:
        c = self.console
        keys = c.keys

        def read(conn: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
            alert = queries.alert_row(conn, alert_id, viewer.centres)
            if alert is None:
                return None
            found = queries.evidence(conn, alert)
            items = []
            for row in found["copies"]:
                item = trail_item(row, keys)  # the signature check of every copy, as the API does it
                item["decoded"], item["raw_text"] = describe_frame(row["adapter"], row["raw"])
                items.append(item)
            found["copies"] = items
            return alert, found

        got = await c.db.read(read)
        if got is None:
            raise Refused(404, "error.404")
        alert, found = got
        instruction = next((i["payload"]["instruction"] for i in found["copies"]
                            if isinstance(i["payload"], dict) and isinstance(i["payload"].get("instruction"), dict)),
                           None)
        timeline = sorted(
            [(i["created_us"], f"{i['kind']} {i['state'] or ''}".strip(), i["gateway"]) for i in found["copies"]]
            + [(n["at_us"], n["action"], n["who"]) for n in found["notes"]]
            + [(j["at_us"], j["action"], j["who"]) for j in found["journal"] if j["action"] not in
               ("note", "acknowledged", "resolved")])
        return {"alert": alert, "evidence_ids": json.loads(alert["evidence"]), "copies": found["copies"],
                "instruction": instruction, "balances": found["balances"], "notes": found["notes"],
                "inquiries": found["inquiries"], "timeline": timeline, "city": c.city_name(alert["centre_id"])}

    async def _ack(self, viewer: Viewer, form: Mapping[str, Any]) -> Redirect:
        ids = [int(i) for i in (form.get("id") or []) if _ID.fullmatch(i)][:PAGE * 4]
        reason = _clean_text(form.get("reason"), "reason")
        changed = await self.console.db.write(
            lambda tx: queries.acknowledge(tx, viewer.uri, ids, reason, viewer.centres))
        log.info("console.acknowledged", who=viewer.uri, alerts=len(changed))
        if changed:
            self.console.engine.refresh_alert_gauge()
        back = form.get("back") or "/alerts"
        return Redirect(back if back.startswith("/alerts") and "//" not in back else "/alerts")

    async def _note(self, viewer: Viewer, alert_id: int, form: Mapping[str, Any]) -> Redirect:
        text = _clean_text(form.get("text"), "text")
        if not await self.console.db.write(lambda tx: queries.note(tx, viewer.uri, alert_id, text, viewer.centres)):
            raise Refused(404, "error.404")
        return Redirect(f"/alerts/{alert_id}")

    async def _resolve(self, viewer: Viewer, alert_id: int, form: Mapping[str, Any]) -> Redirect:
        reason = _clean_text(form.get("reason"), "reason")
        outcome = await self.console.db.write(
            lambda tx: queries.resolve(tx, viewer.uri, alert_id, reason, viewer.centres))
        if outcome == "not-found":
            raise Refused(404, "error.404")
        if outcome == "conflict":
            raise Refused(409, "error.title", "only an acknowledged alert can be resolved")
        self.console.engine.refresh_alert_gauge()
        return Redirect(f"/alerts/{alert_id}")

    async def _manual(self, viewer: Viewer, form: Mapping[str, Any]) -> Redirect:
        event_id = form.get("event_id") or ""
        severity = form.get("severity")
        if not _EVENT.fullmatch(event_id) or severity not in SEVERITIES:
            raise Refused(400, "error.400", "event_id and severity are required")
        summary = _clean_text(form.get("summary"), "summary")
        alert_id = await self.console.db.write(
            lambda tx: queries.raise_manual(tx, viewer.uri, event_id, severity, summary, viewer.centres))
        if alert_id is None:
            raise Refused(404, "error.404", "no such fact in your scope")
        self.console.engine.refresh_alert_gauge()
        return Redirect(f"/alerts/{alert_id}")

    # -- inquiries ---------------------------------------------------------------------------

    async def _ask(self, viewer: Viewer, alert_id: int, form: Mapping[str, Any]) -> Redirect:
        question = _clean_text(form.get("question"), "question")
        days = form.get("days") or ""
        if not days.isdigit() or not 1 <= int(days) <= 90:
            raise Refused(400, "error.400", "the deadline is 1 to 90 days")
        c = self.console
        deadline = _now_us() + int(days) * 86_400_000_000
        inquiry_id = await c.db.write(
            lambda tx: queries.ask(tx, viewer.uri, alert_id, question, deadline, viewer.centres))
        if inquiry_id is None:
            raise Refused(404, "error.404")
        return Redirect(f"/inquiries/{inquiry_id}")

    async def _answer(self, viewer: Viewer, inquiry_id: int, form: Mapping[str, Any]) -> Redirect:
        text = _clean_text(form.get("answer"), "answer")
        attachment = form.get("attachment")
        if attachment is not None:
            if not isinstance(attachment, tuple):
                raise Refused(400, "error.400", "the attachment is not a file")
            name, ctype, data = attachment
            magic = ATTACHMENT_TYPES.get(ctype)
            if magic is None or len(data) > MAX_ATTACHMENT or not data.startswith(magic):
                raise Refused(400, "error.400", "attachments are PDF, PNG, JPEG or text, at most 2 MB")
            if ctype == "text/plain":
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    raise Refused(400, "error.400", "a text attachment must be UTF-8") from None
            attachment = ("".join(ch for ch in name if ch.isprintable() and ch not in "/\\")[:100] or "attachment",
                          ctype, data)
        outcome = await self.console.db.write(
            lambda tx: queries.answer(tx, viewer.uri, inquiry_id, text, attachment, viewer.centres))
        if outcome == "not-found":
            raise Refused(404, "error.404")
        if outcome == "conflict":
            raise Refused(409, "error.title", "this inquiry is already answered")
        return Redirect(f"/inquiries/{inquiry_id}")

    async def _inquiries(self, request: Any, viewer: Viewer) -> dict[str, Any]:
        before = _pattern(request, b"before", _ID)
        state = _choice(request, b"state", ("open", "answered"))
        rows = await self.console.db.read(lambda conn: queries.list_inquiries(
            conn, viewer.centres, state=state, before_id=int(before) if before else None, limit=PAGE + 1))
        now_us = _now_us()
        return {"inquiries": rows[:PAGE], "next_before": rows[PAGE - 1]["id"] if len(rows) > PAGE else None,
                "now_us": now_us, "state": state}

    async def _inquiry(self, viewer: Viewer, inquiry_id: int) -> dict[str, Any]:
        row = await self.console.db.read(queries.get_inquiry, inquiry_id, viewer.centres)
        if row is None:
            raise Refused(404, "error.404")
        row.pop("attachment", None)
        return {"inquiry": row, "now_us": _now_us()}

    async def _attachment(self, viewer: Viewer, inquiry_id: int) -> Raw:
        row = await self.console.db.read(queries.get_inquiry, inquiry_id, viewer.centres)
        if row is None or row["attachment"] is None:
            raise Refused(404, "error.404")
        # Always a download, never rendered in our origin.
        return Raw(row["attachment"], "application/octet-stream", row["attachment_name"])

    # -- reports and accounts ----------------------------------------------------------------

    async def _report(self, request: Any, viewer: Viewer, lang: str, page: Callable[..., bytes]) -> Any:
        c = self.console
        period = _choice(request, b"period", reports.PERIODS) or "month"
        day = _date(request, b"date") or _dt.datetime.now(REPORT_TZ).date()
        centre = _pattern(request, b"centre", _CENTRE)
        if centre is not None and not viewer.sees_centre(centre):
            raise Refused(404, "error.404")
        first, end = reports.period_range(period, day)
        scope = {centre} if centre else viewer.centres
        data = await c.db.read(queries.report_data, scope, _day_start_us(first), _day_start_us(end), c.totals,
                               c.alert_totals)
        series = reports.day_series(data["days"], first, end)
        shown = [centre] if centre else viewer.visible(c.centres)
        table = queries.assessment(data, shown)
        if _arg(request, b"format") == "csv":
            return Raw(reports.report_csv(series, table).encode("utf-8"), "text/csv; charset=utf-8",
                       f"report-{period}-{first.isoformat()}.csv")
        by_bank: dict[str, int] = {}
        for bank, state, n in data["outcomes"]:
            by_bank[f"{bank} {translate('col.' + state, lang)}"] = n
        ack_by_rule: dict[str, list[int]] = {}
        for _, rule, _, acked, ack_us, _, _ in data["responses"]:
            slot = ack_by_rule.setdefault(rule, [0, 0])
            slot[0] += acked
            slot[1] += ack_us
        t = lambda key: translate(key, lang)  # noqa: E731
        return page("report.html", {
            "period": period, "day": day.isoformat(), "first": first.isoformat(), "behind": data["behind"],
            "last": (end - _dt.timedelta(days=1)).isoformat(), "centre": centre, "centres": viewer.visible(c.centres),
            "periods": reports.PERIODS, "series": series, "assessment": table,
            "volume_chart": charts.line_chart([(d, n) for d, n, _ in series], title=t("report.volume")),
            "amount_chart": charts.line_chart([(d, fen / 100) for d, _, fen in series], title=t("report.amount")),
            "rules_chart": charts.pie_chart(sorted(data["rules"]), title=t("report.by_rule")),
            "banks_chart": charts.bar_chart(sorted(by_bank.items()), title=t("report.by_bank")),
            "ack_chart": charts.bar_chart(sorted((r, round(us / n / 3.6e9, 2)) for r, (n, us) in ack_by_rule.items()
                                                 if n),
                                          title=t("report.ack_hours")),
        })

    async def _accounts(self, viewer: Viewer) -> dict[str, Any]:
        c = self.console
        mine = [a for a in c.config.accounts.values() if viewer.sees_centre(a.centre)]

        def read(conn: Any) -> list[dict[str, Any]]:
            return [dict(queries.account_status(conn, a.number), account=a.number, bank=a.bank, centre=a.centre,
                         name=a.name, type=a.type) for a in mine]

        return {"accounts": await c.db.read(read)}

    # -- rectifications ----------------------------------------------------------------------

    def _now_us(self) -> int:
        return _now_us()

    async def _open_rectification(self, viewer: Viewer, form: Mapping[str, Any]) -> Redirect:
        ids = [int(i) for i in (form.get("id") or []) if _ID.fullmatch(i)][:PAGE * 4]
        title = _clean_text(form.get("title"), "title")
        plan_days, due_days = form.get("plan_days") or "", form.get("due_days") or ""
        if not (plan_days.isdigit() and due_days.isdigit() and 1 <= int(plan_days) <= int(due_days) <= 365):
            raise Refused(400, "error.400", "deadlines: 1 <= plan days <= closure days <= 365")
        now = self._now_us()
        rid = await self.console.db.write(lambda tx: queries.open_rectification(
            tx, viewer.uri, ids, title, now + int(plan_days) * 86_400_000_000, now + int(due_days) * 86_400_000_000,
            viewer.centres))
        if rid == "not-found":
            raise Refused(404, "error.404", "choose alerts in your scope")
        if rid == "centres":
            raise Refused(400, "error.400", "a rectification is about the alerts of one centre")
        return Redirect(f"/rectifications/{rid}")

    async def _rectification_step(self, request: Any, viewer: Viewer, rid: int, action: str,
                                  form: Mapping[str, Any]) -> Redirect:
        text = _clean_text(form.get("text"), "text", required=action in ("submit-plan", "progress", "close",
                                                                         "return"))
        outcome = await self.console.db.write(lambda tx: queries.act_on_rectification(
            tx, viewer.uri, rid, action, text, viewer.supervisor, viewer.centres))
        if outcome == "not-found":
            raise Refused(404, "error.404")
        if outcome == "conflict":
            raise self._deny(request, None, f"rectification-{action}-not-allowed")
        return Redirect(f"/rectifications/{rid}")

    # -- conditions --------------------------------------------------------------------------

    async def _conditions(self, viewer: Viewer) -> dict[str, Any]:
        c = self.console
        own = await c.db.read(queries.conditions)
        history = await c.db.read(lambda conn: [queries.journal_for(conn, f"centre/{centre}")
                                                for centre in viewer.visible(c.centres)])
        entries = sorted((dict(j, body=json.loads(j["body"])) for h in history for j in h),
                         key=lambda j: -j["seq"])
        return {"centres": viewer.visible(c.centres), "own": own, "defaults": c.config.thresholds,
                "history": entries[:200]}

    async def _set_conditions(self, viewer: Viewer, form: Mapping[str, Any]) -> Redirect:
        c = self.console
        centre = form.get("centre") or ""
        if centre not in c.centres:
            raise Refused(400, "error.400", "no such centre")
        reason = _clean_text(form.get("reason"), "reason")
        values: dict[str, int | None] = {}
        try:
            for field in ("large_amount", "balance_tolerance"):
                text = (form.get(field) or "").strip()
                values[field] = None if not text else (0 if field == "balance_tolerance" and
                                                       re.fullmatch(r"0(\.0{1,2})?", text) else parse_amount(text))
            deadline = (form.get("result_deadline") or "").strip()
            if deadline and (not re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,3})?", deadline) or float(deadline) <= 0):
                raise ValueError("the result deadline is seconds above 0")
            values["result_deadline_ms"] = round(float(deadline) * 1000) if deadline else None
        except ValueError as e:
            raise Refused(400, "error.400", str(e)) from None
        switch = form.get("unregistered_counterparty") or ""
        if switch not in ("", "on", "off"):
            raise Refused(400, "error.400", "unregistered_counterparty is on, off or default")
        values["unregistered_counterparty"] = None if not switch else int(switch == "on")
        await c.db.write(lambda tx: queries.set_conditions(tx, viewer.uri, centre, values, reason))
        await c.engine.conditions_changed()  # live: the next fact is judged under them
        log.info("console.conditions", who=viewer.uri, centre=centre)
        return Redirect("/conditions")


_ARGS = QueryArgs(lambda name, reason: Refused(400, "error.400", f"{name} {reason}"))
_arg, _choice, _pattern, _date = _ARGS.text, _ARGS.choice, _ARGS.pattern, _ARGS.date


class OverdueWatch(Service):
    """Every ``interval`` seconds, raise an alert for each inquiry and rectification step past its
    deadline (once each)."""

    name = "console-overdue"

    def __init__(self, console: Console, interval: float = 5.0) -> None:
        self.console = console
        self._loop = LoopingCall(self.check)
        self._loop.clock = console.engine.reactor
        self.interval = interval

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def check(self) -> Deferred[Any]:
        c = self.console
        now_us = _now_us()

        async def run() -> None:
            created = await c.db.write(lambda tx: queries.raise_overdue(tx, now_us)
                                       + queries.raise_overdue_rectifications(tx, now_us))
            if created:
                c.engine.alerts_created(created)
            for totals in (c.totals, c.alert_totals):  # the day totals the overview and the reports read
                while await c.db.write(totals.fold):
                    pass

        d = Deferred.fromCoroutine(run())
        d.addErrback(lambda f: log.failure("console.overdue_failed", f))
        return d
