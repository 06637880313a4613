"""What every console page shares: the limits, the patterns a request's arguments must match, the
answers other than a page (:class:`Refused`, :class:`Redirect`, :class:`Raw`), the readers of
arguments and form fields, and the checks of an answer's attachments."""

from __future__ import annotations

import datetime as _dt
import re
import time
from dataclasses import dataclass
from typing import Any

from adapters.base import decode_all, load_adapter
from gateway.ledger import store
from gateway.ledger.console import queries, rectify
from gateway.ledger.report import REPORT_TZ
from gateway.ledger.rules import ALL_RULES, RULES
from gateway.model import State
from gateway.query_args import QueryArgs

__all__ = ["CSP", "MAX_ATTACHMENT", "MAX_ATTACHMENTS", "MAX_ATTACHMENTS_TOTAL", "ATTACHMENT_TYPES", "PAGE",
           "Refused", "Redirect", "Raw", "describe_frame", "checked_attachments"]


def _now_us() -> int:
    """Now on the wall clock (deadlines and journal times are dates, not durations)."""
    return time.time_ns() // 1000


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
MAX_TEXT = 4000
MAX_ATTACHMENT = 2 * 1024 * 1024   # each file of an answer
MAX_ATTACHMENTS = 5                # files per answer
MAX_ATTACHMENTS_TOTAL = 3 * 1024 * 1024  # all of them (the request body is bounded at gateway.web.MAX_BODY)
ATTACHMENT_TYPES = {"application/pdf": b"%PDF-", "image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff",
                    "text/plain": b""}
PAGE = 50
# Every rule the ledger raises (the matcher's first, then the rest by name) and the console's own.
ALERT_RULES = tuple(RULES) + tuple(sorted(ALL_RULES - set(RULES))) + queries.CONSOLE_RULES
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


def checked_attachments(files: Any) -> list[queries.Attachment]:
    """An answer's files, each of an allowed type (checked by its first bytes, text as UTF-8) and size,
    at most MAX_ATTACHMENTS of them and MAX_ATTACHMENTS_TOTAL together; the names made safe to show."""
    if not isinstance(files, list) or not all(isinstance(f, tuple) for f in files):
        raise Refused(400, "error.400", "the attachment is not a file")
    if len(files) > MAX_ATTACHMENTS or sum(len(f[2]) for f in files) > MAX_ATTACHMENTS_TOTAL:
        raise Refused(400, "error.400", f"at most {MAX_ATTACHMENTS} attachments, "
                                        f"{MAX_ATTACHMENTS_TOTAL // 1024 // 1024} MB together")
    out = []
    for name, ctype, data in files:
        magic = ATTACHMENT_TYPES.get(ctype)
        if magic is None or len(data) > MAX_ATTACHMENT or not data.startswith(magic):
            raise Refused(400, "error.400", "attachments are PDF, PNG, JPEG or text, at most 2 MB each")
        if ctype == "text/plain":
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise Refused(400, "error.400", "a text attachment must be UTF-8") from None
        out.append(("".join(ch for ch in name if ch.isprintable() and ch not in "/\\")[:100] or "attachment",
                    ctype, data))
    return out


# Query arguments are read as the ledger API and the centre API read them (gateway/query_args.py).
_ARGS = QueryArgs(lambda name, reason: Refused(400, "error.400", f"{name} {reason}"))
_arg, _choice, _pattern, _date = _ARGS.text, _ARGS.choice, _ARGS.pattern, _ARGS.date
