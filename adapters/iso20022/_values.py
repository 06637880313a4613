"""Checking, rendering and reading single ISO 20022 values (both directions).

Every function takes the field name so that a refusal names it.  Encoders are strict (a value
that would not survive the round trip, or would break a schema facet, is refused); readers
accept everything the official schema accepts for the element (the document has already been
validated) and refuse only what the neutral vocabulary cannot hold.
"""

from __future__ import annotations

import datetime as _dt
import re

from adapters.base import AdapterError
from adapters.bdc._values import match, show

from .iso4217 import exponent

__all__ = [
    "ACCOUNT",
    "BANK_CODE",
    "MAX_FEN",
    "NODE",
    "SERIAL",
    "UNIT_NO",
    "account",
    "chunks",
    "format_amount",
    "format_date",
    "format_datetime",
    "format_time_of_day",
    "match",
    "minor_units",
    "node",
    "parse_amount",
    "parse_date",
    "parse_datetime",
    "serial",
    "show",
    "text",
]

# Identifiers we write: printable ASCII without space, at most 35 (ISO Max35Text).
SERIAL = re.compile(r"[!-~]{1,35}")
NODE = re.compile(r"[A-Za-z0-9._-]{1,35}")
ACCOUNT = re.compile(r"[0-9A-Za-z-]{1,34}")      # Othr/Id is Max34Text
UNIT_NO = re.compile(r"[0-9]{15}")
BANK_CODE = re.compile(r"[0-9]{12}")             # CNAPS bank (branch) code
# C0 and C1 controls, DEL: no text we write carries them (the schemas would, but a payment
# name with a line feed is a mistake upstream, and refusing keeps every round trip exact).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")

MAX_FEN = 10**18 - 1
"""The largest amount in minor units: the schemas' amounts have at most 18 digits in all."""

# xs:decimal lexical space (whitespace is collapsed by the schema, so strip first).
_DECIMAL = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:Z|[+-][0-9]{2}:[0-9]{2})?")
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(Z|([+-])([0-9]{2}):([0-9]{2}))?")


def text(field: str, value: object, max_len: int, *, required: bool = False) -> str:
    """Free text for a MaxNText element: a ``str`` of at most ``max_len`` characters without
    control characters; empty is allowed unless ``required`` (the element is then omitted)."""
    if not isinstance(value, str):
        raise AdapterError(f"{field}: must be text")
    if len(value) > max_len:
        raise AdapterError(f"{field}: longer than {max_len} characters")
    if required and not value:
        raise AdapterError(f"{field}: must not be empty")
    if _CONTROL.search(value) is not None:
        raise AdapterError(f"{field}: contains a control character")
    return value


def serial(field: str, value: object, *, optional: bool = False) -> str:
    if type(value) is str and SERIAL.fullmatch(value) is not None:  # the common case, one C call
        return value
    return match(field, value, SERIAL, "must be 1-35 printable ASCII characters without space",
                 optional=optional)


def node(field: str, value: object) -> str:
    if type(value) is str and NODE.fullmatch(value) is not None:
        return value
    return match(field, value, NODE, "must be 1-35 of A-Z a-z 0-9 . _ -")


def account(field: str, value: object) -> str:
    return match(field, value, ACCOUNT, "must be 1-34 letters, digits or '-'")


# -- amounts ------------------------------------------------------------------------------


def format_amount(field: str, fen: object, *, positive: bool = False) -> str:
    """The magnitude of ``fen`` as an ISO amount with two decimals (the sign travels apart)."""
    if not isinstance(fen, int) or isinstance(fen, bool):
        raise AdapterError(f"{field}: amount must be integer fen")
    if positive and fen <= 0:
        raise AdapterError(f"{field}: amount must be greater than zero")
    fen = abs(fen)
    if fen > MAX_FEN:
        raise AdapterError(f"{field}: amount has more than 18 digits")
    return f"{fen // 100}.{fen % 100:02d}"


def minor_units(field: str, currency: str, allowed: frozenset[str] | None) -> int:
    """The ISO 4217 exponent of ``currency``; refuses a code that is no currency with amounts,
    or one outside ``allowed`` (see :class:`Iso20022Adapter`)."""
    digits = exponent(currency)
    if digits is None:
        raise AdapterError(f"{field}: {show(currency)} is not an ISO 4217 currency with minor units")
    if allowed is not None and currency not in allowed:
        raise AdapterError(f"{field}: currency {show(currency)} is not accepted here "
                           f"(only {', '.join(sorted(allowed))})")
    return digits


def parse_amount(field: str, value: str | None, digits: int = 2) -> int:
    """An xs:decimal amount as minor units of a currency with ``digits`` decimals.

    Digits past the currency's own decimals must be zero (``132.4600`` is 13246 in CNY,
    ``1500.0`` is 1500 in JPY); anything finer is refused rather than rounded.
    """
    m = _DECIMAL.fullmatch((value or "").strip())
    if m is None or not (m.group(2) or m.group(3)):
        raise AdapterError(f"{field}: not a decimal amount, {show(value or '')}")
    whole, frac = m.group(2) or "0", m.group(3) or ""
    if frac[digits:].strip("0"):
        raise AdapterError(f"{field}: amount {show(value or '')} has more than {digits} decimals")
    minor = int(whole) * 10**digits + int((frac[:digits]).ljust(digits, "0") or "0")
    if minor > MAX_FEN:
        raise AdapterError(f"{field}: amount has more than 18 digits")
    return -minor if m.group(1) == "-" else minor


# -- dates and times ------------------------------------------------------------------------


def format_date(field: str, value: object) -> str:
    if not isinstance(value, _dt.date) or isinstance(value, _dt.datetime):
        raise AdapterError(f"{field}: must be a date")
    return value.isoformat()


def parse_date(field: str, value: str | None) -> _dt.date:
    """An xs:date (a time zone suffix is allowed by XSD and ignored: dates are calendar days)."""
    m = _DATE.fullmatch((value or "").strip())
    if m is None:
        raise AdapterError(f"{field}: not a date YYYY-MM-DD, {show(value or '')}")
    try:
        return _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise AdapterError(f"{field}: no such date {show(value or '')}") from None


def _zone(field: str, tz: _dt.tzinfo | None, offset: _dt.timedelta | None) -> str:
    if tz is None:
        return ""
    if offset is None:
        raise AdapterError(f"{field}: time zone without a fixed offset")
    if offset % _dt.timedelta(minutes=1) or abs(offset) > _dt.timedelta(hours=14):
        raise AdapterError(f"{field}: time zone offset must be whole minutes within ±14:00")
    if not offset:
        return "Z"
    sign = "-" if offset < _dt.timedelta(0) else "+"
    minutes = abs(offset) // _dt.timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def format_time_of_day(field: str, value: object) -> str:
    """``HH:MM:SS[.ffffff][zone]`` of a :class:`datetime.time` (exactly what parses back)."""
    if not isinstance(value, _dt.time):
        raise AdapterError(f"{field}: must be a time")
    frac = f".{value.microsecond:06d}" if value.microsecond else ""
    zone = _zone(field, value.tzinfo, value.utcoffset())
    return f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}{frac}{zone}"


def format_datetime(field: str, value: object) -> str:
    """An ISODateTime that parses back to an equal datetime: microseconds when not zero, the
    offset when aware (``Z`` for UTC), nothing when naive (local time, as banks send it)."""
    if not isinstance(value, _dt.datetime):
        raise AdapterError(f"{field}: must be a datetime")
    if value.year < 1:
        raise AdapterError(f"{field}: year out of range")
    frac = f".{value.microsecond:06d}" if value.microsecond else ""
    zone = _zone(field, value.tzinfo, value.utcoffset())
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}{frac}{zone}")


def parse_datetime(field: str, value: str | None) -> _dt.datetime:
    """An xs:dateTime as a datetime: naive without a zone, with a fixed-offset zone otherwise.

    Fractions beyond microseconds are truncated; ``24:00:00`` is the next day's midnight, as
    XSD defines it.
    """
    raw = (value or "").strip()
    m = _DATETIME.fullmatch(raw)
    if m is None:
        raise AdapterError(f"{field}: not a date-time YYYY-MM-DDThh:mm:ss, {show(raw)}")
    tz: _dt.tzinfo | None = None
    if m.group(8) == "Z":
        tz = _dt.UTC
    elif m.group(8):
        hours, minutes = int(m.group(10)), int(m.group(11))
        if hours > 14 or minutes > 59 or (hours == 14 and minutes):
            raise AdapterError(f"{field}: time zone offset out of range, {show(raw)}")
        offset = _dt.timedelta(hours=hours, minutes=minutes)
        tz = _dt.timezone(-offset if m.group(9) == "-" else offset)
    hour = int(m.group(4))
    micro = int((m.group(7) or "")[:6].ljust(6, "0"))
    try:
        if hour == 24 and m.group(5) == "00" and m.group(6) == "00" and not micro:
            day = _dt.datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)), tzinfo=tz)
            return day + _dt.timedelta(days=1)
        return _dt.datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)), hour,
                            int(m.group(5)), int(m.group(6)), micro, tzinfo=tz)
    except (ValueError, OverflowError):
        raise AdapterError(f"{field}: no such date-time {show(raw)}") from None


def chunks(value: str, size: int) -> list[str]:
    """``value`` cut into pieces of at most ``size`` characters (none for empty text)."""
    return [value[i:i + size] for i in range(0, len(value), size)]
