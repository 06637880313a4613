"""A request's query arguments, read one way by every web layer (centre API, ledger API, console).

Each layer says how it refuses (a problem document, an error page): :class:`QueryArgs` is
given ``refuse(name, reason)`` and raises what it returns, with ``reason`` read after the
argument's name ("limit must be a whole number from 1 to 1000").
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Container
from typing import Any

__all__ = ["QueryArgs"]


class QueryArgs:
    """The first value of each named argument, checked; an absent or empty one is None (or the default)."""

    def __init__(self, refuse: Callable[[str, str], Exception]) -> None:
        self.refuse = refuse

    def text(self, request: Any, name: bytes) -> str | None:
        values = request.args.get(name)
        if not values:
            return None
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise self.refuse(name.decode(), "is not UTF-8") from None

    def integer(self, request: Any, name: bytes, default: int, low: int, high: int) -> int:
        text = self.text(request, name)
        if text is None:
            return default
        if not text.isdigit() or len(text) > 19 or not low <= int(text) <= high:
            raise self.refuse(name.decode(), f"must be a whole number from {low} to {high}")
        return int(text)

    def choice(self, request: Any, name: bytes, allowed: Container[str]) -> str | None:
        value = self.text(request, name)
        if not value:
            return None
        if value not in allowed:
            raise self.refuse(name.decode(), "is not one of the choices")
        return value

    def pattern(self, request: Any, name: bytes, pattern: re.Pattern[str]) -> str | None:
        value = self.text(request, name)
        if not value:
            return None
        if not pattern.fullmatch(value):
            raise self.refuse(name.decode(), "is not valid")
        return value

    def date(self, request: Any, name: bytes) -> _dt.date | None:
        """A calendar date, ``YYYY-MM-DD`` exactly."""
        value = self.text(request, name)
        if not value:
            return None
        try:
            if len(value) != 10:
                raise ValueError
            return _dt.date.fromisoformat(value)
        except ValueError:
            raise self.refuse(name.decode(), "must be a date YYYY-MM-DD") from None
