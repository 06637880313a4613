"""Checking and rendering single bdc values (both directions).

Every function takes the bdc field name so that a refusal names it.  The same rules apply
when encoding (a value we cannot carry) and decoding (a value we will not believe), so a
message either survives a round trip unchanged or is refused.
"""

from __future__ import annotations

import datetime as _dt
import functools
import re

from adapters.base import AdapterError

NODE = re.compile(r"[A-Z0-9]{6}")
# Serials (SendSeqNo, ReceiveSeqNo, HostSeqNo, BDCSeqNo, ...): printable ASCII without space
# or '|' (they also travel in '|'-separated files); ≤32 is the longest the protocol shows.
SERIAL = re.compile(r"[!-{}~]{1,32}")
ACCOUNT = re.compile(r"[0-9A-Za-z-]{1,32}")
UNIT_NO = re.compile(r"[0-9]{15}")
BANK_CODE = re.compile(r"[0-9]{12}")
TX_CODE = re.compile(r"[A-Z0-9]{1,10}")
# Amounts as deployed systems write them (Java BigDecimal.toString): "0", "-5", "1.5",
# "12.30", "1000000", "1E+3"; read exactly, refused when not a whole number of fen.
_AMOUNT_IN = re.compile(r"([+-]?)([0-9]{1,20})(?:\.([0-9]{1,20}))?(?:[Ee]([+-]?[0-9]{1,2}))?")
_DATE = re.compile(r"[0-9]{8}")
_TIME = re.compile(r"[0-9]{6}")
# C0 and C1 controls, DEL, surrogates and non-characters: no bdc text field carries them,
# and refusing CR/LF here is also what keeps '|'-file lines intact.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")

MAX_FEN = 10**18 - 1
"""The largest amount bdc carries: NUMERIC(18,2) in the Centre's schema (16 integer digits)."""

# Longest text per kind of field, in characters (the Centre's column sizes where known).
NAME_LEN = 60
MEMO_LEN = 140
REFERENCE_LEN = 60
CODE_LEN = 32
MESSAGE_LEN = 256
STATUS_LEN = 16
OTHER_LEN = 64


def show(value: str) -> str:
    """A bounded, quoted rendering of untrusted text for an error message."""
    return repr(value[:40] + ("…" if len(value) > 40 else ""))


def text(field: str, value: object, max_len: int, *, required: bool = False) -> str:
    """Free text: a ``str`` of at most ``max_len`` characters without control characters."""
    if not isinstance(value, str):
        raise AdapterError(f"{field}: must be text")
    if len(value) > max_len:
        raise AdapterError(f"{field}: longer than {max_len} characters")
    if required and not value.strip():
        raise AdapterError(f"{field}: must not be empty")
    if _CONTROL.search(value) is not None:
        raise AdapterError(f"{field}: contains a control character")
    return value


def match(field: str, value: object, pattern: re.Pattern[str], what: str, *,
          optional: bool = False) -> str:
    """``value`` if it matches ``pattern`` in full (or is empty and ``optional``)."""
    if not isinstance(value, str):
        raise AdapterError(f"{field}: must be text")
    if optional and value == "":
        return value
    if pattern.fullmatch(value) is None:
        raise AdapterError(f"{field}: {what}, not {show(value)}")
    return value


def node(field: str, value: object) -> str:
    return match(field, value, NODE, "must be a 6-character node number")


def serial(field: str, value: object, *, optional: bool = False) -> str:
    return match(field, value, SERIAL, "must be 1-32 printable ASCII characters", optional=optional)


def format_amount(field: str, fen: object, *, positive: bool = False) -> str:
    """Fen rendered as a plain decimal with two places (``-2000.00``)."""
    if not isinstance(fen, int) or isinstance(fen, bool):
        raise AdapterError(f"{field}: amount must be integer fen")
    if positive and fen <= 0:
        raise AdapterError(f"{field}: amount must be greater than zero")
    if abs(fen) > MAX_FEN:
        raise AdapterError(f"{field}: amount beyond what bdc carries")
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def parse_amount(field: str, value: str, *, positive: bool = False) -> int:
    """Any plain decimal (or Java BigDecimal exponent form) exact in fen, as fen.

    ``0``, ``-5``, ``2000``, ``1.5``, ``12.30`` and ``1E+3`` are all read; a value with a
    non-zero third decimal is refused (it is not a whole number of fen), never rounded.
    A sign is refused where ``positive``.
    """
    m = _AMOUNT_IN.fullmatch(value)
    if m is None:
        raise AdapterError(f"{field}: not a decimal amount, {show(value)}")
    sign, whole, frac, exp = m.group(1), m.group(2), m.group(3) or "", int(m.group(4) or 0)
    digits = whole + frac
    scale = len(frac) - exp - 2  # decimal places beyond fen
    if scale > 0:
        digits, cut = digits[:-scale] or "0", digits[-scale:]
        if cut.strip("0"):
            raise AdapterError(f"{field}: not a whole number of fen, {show(value)}")
        fen = int(digits)
    else:
        fen = int(digits) * 10 ** -scale
    if sign == "-":
        if positive and fen:
            raise AdapterError(f"{field}: amount must not be negative")
        fen = -fen
    if positive and fen <= 0:
        raise AdapterError(f"{field}: amount must be greater than zero")
    if abs(fen) > MAX_FEN:
        raise AdapterError(f"{field}: amount beyond what bdc carries")
    return fen


def format_date(field: str, value: object) -> str:
    if not isinstance(value, _dt.date) or isinstance(value, _dt.datetime):
        raise AdapterError(f"{field}: must be a date")
    return f"{value.year:04d}{value.month:02d}{value.day:02d}"


def parse_date(field: str, value: str) -> _dt.date:
    """A yyyyMMdd date; refusals name ``field``."""
    try:
        return _date(value)
    except ValueError as e:
        raise AdapterError(f"{field}: {e}, {show(value)}") from None


@functools.lru_cache(maxsize=4096)  # dates repeat across messages; validating one is not free
def _date(value: str) -> _dt.date:
    if _DATE.fullmatch(value) is None:
        raise ValueError("not a date yyyyMMdd")
    try:
        return _dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise ValueError("no such date") from None


def format_time(field: str, value: object) -> str:
    """A time of day as HHmmss; bdc carries whole seconds of local time only."""
    if not isinstance(value, _dt.time):
        raise AdapterError(f"{field}: must be a time")
    if value.microsecond or value.tzinfo is not None:
        raise AdapterError(f"{field}: bdc carries whole seconds of local time only")
    return f"{value.hour:02d}{value.minute:02d}{value.second:02d}"


def parse_time(field: str, value: str) -> _dt.time:
    """An HHmmss time of day; refusals name ``field``."""
    try:
        return _time(value)
    except ValueError as e:
        raise AdapterError(f"{field}: {e}, {show(value)}") from None


@functools.lru_cache(maxsize=4096)
def _time(value: str) -> _dt.time:
    if _TIME.fullmatch(value) is None:
        raise ValueError("not a time HHmmss")
    try:
        return _dt.time(int(value[:2]), int(value[2:4]), int(value[4:]))
    except ValueError:
        raise ValueError("no such time") from None
