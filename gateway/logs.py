"""Logging: ``twisted.logger`` is the event bus; this observer renders its events with structlog.

Log events are named facts with fields: ``log.info("instruction.sent", bank=..., ref=...)``
(a format string whose first word is the event name also works).  Any field whose name
says it holds an account number is masked to its last four digits, and in every other
text of every event (fields, request paths and query strings, Twisted's own lines such as
the web access log, error messages and tracebacks) every stand-alone run of 8 or more
digits is, so logs never carry full account numbers whoever wrote the event.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

import structlog
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogBeginner
from zope.interface import implementer

from gateway.model import mask_account, mask_numbers

__all__ = ["StructlogObserver", "start_logging"]

_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+")
_LEVELS = {LogLevel.debug: "debug", LogLevel.info: "info", LogLevel.warn: "warning",
           LogLevel.error: "error", LogLevel.critical: "critical"}
_SKIP = {"log_logger", "log_source", "log_io", "log_format", "log_level", "log_namespace",
         "log_time", "log_failure", "log_trace", "log_observer", "log_legacy", "log_text", "message",
         "system", "format", "isError", "time", "log_system", "printed", "why", "failure"}


def _plain(value: Any) -> Any:
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value[:64].hex()
    return mask_numbers(str(value))


@implementer(ILogObserver)
class StructlogObserver:
    """Renders twisted.logger events as JSON lines (or coloured console lines on a terminal)."""

    def __init__(self, out: TextIO | None = None, *, console: bool | None = None,
                 min_level: LogLevel = LogLevel.info) -> None:
        self._out = out or sys.stdout
        console = self._out.isatty() if console is None else console
        renderer: Any = structlog.dev.ConsoleRenderer(colors=True) if console \
            else structlog.processors.JSONRenderer(ensure_ascii=False)
        self._render = renderer
        self._min = min_level

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level", LogLevel.info)
        if level < self._min:
            return
        fmt = event.get("log_format") or ""
        first = fmt.split(" ", 1)[0]
        # Our events are named facts ("instruction.final bank={bank}"); anything
        # else (Twisted's own sentences, legacy log.msg) is rendered as text.
        name = first if _EVENT_NAME.fullmatch(first) else mask_numbers(formatEvent(event)[:300])
        out: dict[str, Any] = {"event": name, "level": _LEVELS.get(level, "info"),
                               "timestamp": event.get("log_time"), "logger": event.get("log_namespace")}
        for key, value in event.items():
            if key in _SKIP or key.startswith("log_"):
                continue
            if "account" in key.lower() and value:
                out[key] = mask_account(str(value))
            else:
                out[key] = _plain(value)
        failure = event.get("log_failure")
        if failure is not None:
            out["error"] = mask_numbers(failure.getErrorMessage())
            out["error_type"] = failure.type.__name__ if failure.type else ""
            if level >= LogLevel.error:
                out["traceback"] = mask_numbers(failure.getTraceback())
        try:
            line = self._render(None, out["level"], out)
        except Exception as e:  # never let logging take the daemon down
            line = f'{{"event": "log.render_failed", "error": "{type(e).__name__}"}}'
        self._out.write(line + "\n")
        self._out.flush()


def start_logging(out: TextIO | None = None, *, console: bool | None = None,
                  min_level: LogLevel = LogLevel.info) -> StructlogObserver:
    """Send all twisted.logger events (and the stdlib's, via Twisted) through structlog."""
    observer = StructlogObserver(out, console=console, min_level=min_level)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    return observer
