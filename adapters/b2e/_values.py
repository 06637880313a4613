"""Checking and rendering single b2e values (both directions).

Every function takes the wire or neutral field name so that a refusal names it.  The same
rules apply when encoding (a value b2e cannot carry) and decoding (a value we will not
believe), so a message either survives a round trip unchanged or is refused.

The generic helpers (free text, pattern match, dates, bounded quoting) are bdc's: they say
nothing bdc-specific, and sharing them keeps one definition of "text" for every GBK
adapter.  Amounts and times are b2e's own because their limits and wording differ.
"""

from __future__ import annotations

import datetime as _dt
import re

from adapters.base import AdapterError
from adapters.bdc._values import format_date, match, parse_date, parse_time, show, text

__all__ = [
    "ACCOUNT",
    "BANK_CODE",
    "CENTRE_NODE",
    "CODE_LEN",
    "MAX_FEN",
    "MEMO_LEN",
    "MESSAGE_LEN",
    "NAME_LEN",
    "NODE",
    "REFERENCE_LEN",
    "SERIAL",
    "STATUS_LEN",
    "SUMMARY_LEN",
    "TEXT_CHAR",
    "TRANS_CODE",
    "UNIT_NO",
    "account",
    "format_amount",
    "format_date",
    "format_time",
    "match",
    "node",
    "parse_amount",
    "parse_date",
    "parse_time",
    "serial",
    "show",
    "text",
]

# Serials (SerialNo, ReplyTo, HostSerialNo, BankSerialNo, OrigSerialNo): printable ASCII
# without space, at most 32 characters.
SERIAL = re.compile(r"[!-~]{1,32}")
# Party numbers (SendNo, RecvNo, NodeNo): a bank's node or an enterprise customer number.
NODE = re.compile(r"[0-9A-Za-z]{1,20}")
# The instructing HPF centre's node, e.g. C52240.
CENTRE_NODE = re.compile(r"[A-Z0-9]{6}")
ACCOUNT = re.compile(r"[0-9A-Za-z-]{1,32}")
UNIT_NO = re.compile(r"[0-9]{15}")
BANK_CODE = re.compile(r"[0-9]{12}")
TRANS_CODE = re.compile(r"[A-Z]{1,10}")

# Eleven integer digits: 99,999,999,999.99 is the largest amount b2e carries.
_AMOUNT = re.compile(r"(-?)(0|[1-9][0-9]{0,10})\.([0-9]{2})")
MAX_FEN = 99_999_999_999_99
"""The largest absolute amount b2e carries, in fen (DECIMAL(13,2) on the bank's side)."""

# One character of free text as bdc's text() accepts it: no C0/C1 control, DEL, surrogate or
# non-character.  For fast whole-head checks; text() stays the authority that names faults.
TEXT_CHAR = "[^\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]"

# Longest text per kind of field, in characters.
NAME_LEN = 60
MEMO_LEN = 140
REFERENCE_LEN = 60
SUMMARY_LEN = 140
CODE_LEN = 32
MESSAGE_LEN = 256
STATUS_LEN = 16

_ACCOUNT_WHAT = "must be 1-32 letters, digits or '-'"


def serial(field: str, value: object, *, optional: bool = False) -> str:
    """A serial number: 1-32 printable ASCII characters without space (or empty if ``optional``)."""
    return match(field, value, SERIAL, "must be 1-32 printable ASCII characters", optional=optional)


def node(field: str, value: object, *, optional: bool = False) -> str:
    """A party number: 1-20 letters or digits (or empty if ``optional``)."""
    return match(field, value, NODE, "must be 1-20 letters or digits", optional=optional)


def account(field: str, value: object, *, optional: bool = False) -> str:
    """An account number: 1-32 letters, digits or '-' (or empty if ``optional``)."""
    return match(field, value, ACCOUNT, _ACCOUNT_WHAT, optional=optional)


def format_amount(field: str, fen: object, *, positive: bool = False) -> str:
    """Fen as a plain decimal with two places (``-2000.00``); ``positive`` refuses ≤ 0."""
    if type(fen) is not int:  # bool is an int subclass and never an amount
        raise AdapterError(f"{field}: amount must be integer fen")
    if positive and fen <= 0:
        raise AdapterError(f"{field}: amount must be greater than zero")
    if fen < 0:
        if -fen > MAX_FEN:
            raise AdapterError(f"{field}: amount beyond what b2e carries (99999999999.99)")
        return f"-{-fen // 100}.{-fen % 100:02d}"
    if fen > MAX_FEN:
        raise AdapterError(f"{field}: amount beyond what b2e carries (99999999999.99)")
    return f"{fen // 100}.{fen % 100:02d}"


def parse_amount(field: str, value: str, *, positive: bool = False) -> int:
    """A plain decimal with exactly two places as fen; a sign only where ``positive`` is False.

    Each amount has one spelling: no plus sign, no leading zeros, no ``-0.00``.
    """
    m = _AMOUNT.fullmatch(value)
    if m is None:
        raise AdapterError(f"{field}: not a plain amount with two decimals, {show(value)}")
    fen = int(m.group(2)) * 100 + int(m.group(3))
    if m.group(1):
        if positive:
            raise AdapterError(f"{field}: amount must not be negative")
        if fen == 0:
            raise AdapterError(f"{field}: negative zero amount")
        return -fen
    if positive and fen == 0:
        raise AdapterError(f"{field}: amount must be greater than zero")
    return fen


def format_time(field: str, value: object) -> str:
    """A time of day as HHmmss; b2e carries whole seconds of the bank's local time only."""
    if not isinstance(value, _dt.time):
        raise AdapterError(f"{field}: must be a time")
    if value.microsecond or value.tzinfo is not None:
        raise AdapterError(f"{field}: b2e carries whole seconds of local time only")
    return f"{value.hour:02d}{value.minute:02d}{value.second:02d}"
