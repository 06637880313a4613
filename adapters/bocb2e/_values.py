"""Values of the bocb2e wire: yuan amounts, dates and times, identifiers, bounded text.

Tolerant reader, strict writer: amounts are read as any decimal text exact in fen
(``5000``, ``1``, ``12.3``, ``12.30``, ``12.300``) and written as ``yuan.fen`` with two
decimals; dates are read as ``YYYYMMDD`` or ``YYYY-MM-DD`` and written ``YYYYMMDD``.
"""

from __future__ import annotations

import datetime as dt
import re

from adapters.base import AdapterError

__all__ = ["MAX_FEN", "SERIAL", "ACCOUNT", "format_yuan", "parse_yuan", "parse_date",
           "format_date", "parse_time", "format_time", "show", "serial", "account", "text"]

MAX_FEN = 99_999_999_999_99
_YUAN = re.compile(r"([+-]?)([0-9]{1,13})(?:\.([0-9]{0,6}))?")
SERIAL = re.compile(r"[!-~]{1,32}")
ACCOUNT = re.compile(r"[0-9A-Za-z-]{1,32}")
_DATE = re.compile(r"([0-9]{4})-?([0-9]{2})-?([0-9]{2})")
_TIME = re.compile(r"([0-9]{2}):?([0-9]{2}):?([0-9]{2})")
_NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def show(value: object, limit: int = 40) -> str:
    """A hostile value quoted for a log line, bounded."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_yuan(field: str, value: str, *, signed: bool = False, positive: bool = False) -> int:
    """Yuan text (a decimal, at most two significant decimals) as integer fen."""
    m = _YUAN.fullmatch(value.strip())
    if m is None:
        raise AdapterError(f"{field}: not an amount: {show(value)}")
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    if frac[2:].strip("0"):
        raise AdapterError(f"{field}: more than two decimals: {show(value)}")
    fen = int(whole) * 100 + int((frac + "00")[:2])
    if sign == "-":
        if not signed:
            raise AdapterError(f"{field}: negative amount {show(value)}")
        fen = -fen
    if abs(fen) > MAX_FEN:
        raise AdapterError(f"{field}: amount {show(value)} exceeds 99999999999.99")
    if positive and fen <= 0:
        raise AdapterError(f"{field}: amount must be above zero")
    return fen


def format_yuan(field: str, fen: object, *, signed: bool = False, positive: bool = False) -> str:
    """Integer fen as canonical yuan text (``123456`` -> ``1234.56``)."""
    if type(fen) is not int:
        raise AdapterError(f"{field}: amount must be integer fen")
    if abs(fen) > MAX_FEN or (fen < 0 and not signed) or (positive and fen <= 0):
        raise AdapterError(f"{field}: amount {fen} fen out of range")
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def parse_date(field: str, value: str, pattern: re.Pattern[str] = _DATE) -> dt.date:
    """A date as ``YYYYMMDD`` or ``YYYY-MM-DD`` (or as ``pattern`` reads it: year, month, day)."""
    m = pattern.fullmatch(value.strip())
    try:
        if m is None:
            raise ValueError
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise AdapterError(f"{field}: not a date: {show(value)}") from None


def format_date(value: dt.date) -> str:
    return f"{value.year:04d}{value.month:02d}{value.day:02d}"


def parse_time(field: str, value: str) -> dt.time:
    m = _TIME.fullmatch(value.strip())
    try:
        if m is None:
            raise ValueError
        return dt.time(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise AdapterError(f"{field}: not a time: {show(value)}") from None


def format_time(value: dt.time) -> str:
    return f"{value.hour:02d}{value.minute:02d}{value.second:02d}"


def serial(field: str, value: object, *, optional: bool = False) -> str:
    if not isinstance(value, str) or not (SERIAL.fullmatch(value) or (optional and value == "")):
        raise AdapterError(f"{field}: must be 1-32 printable ASCII characters: {show(value)}")
    return value


def account(field: str, value: object, *, optional: bool = False) -> str:
    if not isinstance(value, str) or not (ACCOUNT.fullmatch(value) or (optional and value == "")):
        raise AdapterError(f"{field}: must be 1-32 letters, digits or '-': {show(value)}")
    return value


def text(field: str, value: object, limit: int, *, required: bool = False) -> str:
    if not isinstance(value, str):
        raise AdapterError(f"{field}: must be text")
    if len(value) > limit:
        raise AdapterError(f"{field}: longer than {limit} characters")
    if _NOT_TEXT.search(value):
        raise AdapterError(f"{field}: holds a control character")
    if required and not value.strip():
        raise AdapterError(f"{field}: must not be blank")
    return value
