"""The files bdc carries inside ``FILE_LIST``: DATA packing and account-change lines.

DATA on the wire (docs/protocols/bdc.md) is GBK text, zlib-deflated, in upper-case hex.  A
decoder drops whitespace first (captured payloads split the hex into groups), bounds the
inflated size so a small frame cannot expand into gigabytes, and insists on exactly one
complete zlib stream.

Account-change lines (§5.4, SBDC100 notices and BDC113 details) have 23 ``|``-separated
columns, each followed by ``|``.  Only the columns :class:`adapters.base.Entry` has a place
for are kept; the others are written empty or with the constants the samples show.  Read
as deployed systems write them: more than 23 columns (the public centre-side notice bean
has a 24th), a line number of any serial form, amounts as any decimal exact in fen, CurrNo
and CurrIden in either order, bank numbers of any length up to 20.
"""

from __future__ import annotations

import re
import zlib

from adapters.base import AdapterError, Entry

from . import _values as v

__all__ = ["MAX_FILE_TEXT", "pack_data", "unpack_data", "format_entries", "parse_entries"]

MAX_FILE_TEXT = 4 * 1024 * 1024
"""The most bytes of GBK text a FILE_LIST DATA may inflate to."""

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_COLUMNS = 23
_LINE_NO = re.compile(r"[0-9A-Za-z]{1,32}")  # 1, 2, ... or a serial (the public simulator's)
BANK_NO = re.compile(r"[0-9A-Za-z]{1,20}")
"""A bank or branch number in a file column: 12-digit CNAPS codes and shorter bank codes."""
_NULL = "null"  # bank files may write this for an empty value (docs/protocols/bdc.md)


def pack_data(file_text: str) -> str:
    """GBK-encode, deflate and hex ``file_text`` for a DATA field."""
    try:
        raw = file_text.encode("gbk")
    except UnicodeEncodeError:  # callers check per column first; this is the backstop
        raise AdapterError("FILE_LIST DATA: a character cannot be carried in GBK") from None
    if len(raw) > MAX_FILE_TEXT:
        raise AdapterError(f"FILE_LIST DATA: file of {len(raw)} bytes exceeds {MAX_FILE_TEXT}")
    return zlib.compress(raw).hex().upper()


def unpack_data(data: str, *, limit: int = MAX_FILE_TEXT) -> str:
    """The file text in a DATA field; refuses bad hex, a broken stream and zip bombs."""
    compact = "".join(data.split())
    if _HEX.fullmatch(compact) is None:
        raise AdapterError("FILE_LIST DATA: not hexadecimal")
    raw = bytes.fromhex(compact)
    inflater = zlib.decompressobj()
    try:
        # max_length caps the work and memory, whatever the compression ratio.
        out = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise AdapterError("FILE_LIST DATA: not a zlib stream") from None
    if len(out) > limit:
        raise AdapterError(f"FILE_LIST DATA: inflates beyond {limit} bytes")
    if not inflater.eof:
        raise AdapterError("FILE_LIST DATA: truncated zlib stream")
    if inflater.unused_data:
        raise AdapterError("FILE_LIST DATA: bytes after the zlib stream")
    try:
        return out.decode("gbk")
    except UnicodeDecodeError as e:
        raise AdapterError(f"FILE_LIST DATA: bytes invalid in GBK at offset {e.start}") from None


def _column(field: str, value: str, max_len: int) -> str:
    v.text(field, value, max_len)
    if "|" in value:
        raise AdapterError(f"{field}: '|' cannot be carried in a bdc file line")
    if value == _NULL:
        raise AdapterError(f"{field}: the literal 'null' reads back as empty in bdc files")
    try:
        value.encode("gbk")
    except UnicodeEncodeError as e:
        raise AdapterError(f"{field}: character {value[e.start]!r} cannot be carried in GBK") from None
    return value


def _not_null(field: str, value: str) -> str:
    # Bank files use the literal "null" for "no value" in any column, so the
    # decoder reads it as empty: a real value spelled "null" cannot be carried.
    if value == _NULL:
        raise AdapterError(f"{field}: the literal 'null' reads back as empty in bdc files")
    return value


def format_entries(entries: tuple[Entry, ...]) -> str:
    """The §5.4 file for ``entries``: lines joined by ``\\n``, none after the last."""
    lines = []
    for no, e in enumerate(entries, 1):
        f = f"entries[{no - 1}]."
        if not isinstance(e, Entry):
            raise AdapterError(f"entries[{no - 1}]: not an Entry")
        balance = ("" if e.balance_after is None
                   else v.format_amount(f + "balance_after", e.balance_after))
        cols = (
            str(no),
            _not_null(f + "account", v.match(f + "account", e.account, v.ACCOUNT, "must be 1-32 letters or digits")),
            _not_null(f + "host_seq_no", v.serial(f + "host_seq_no", e.host_seq_no, optional=True)),
            "",                                          # txCode: bank-internal
            _column(f + "counterparty_account", e.counterparty_account, v.OTHER_LEN),
            _column(f + "counterparty_name", e.counterparty_name, v.NAME_LEN),
            v.format_amount(f + "amount", e.amount),
            v.format_date(f + "value_date", e.value_date),
            v.format_time(f + "time", e.time),
            balance,                                     # availableAmt
            "",                                          # openBankNo
            _column(f + "remark", e.remark, v.MEMO_LEN),
            "156",
            "1",
            balance,
            "",                                          # overdraft available
            "",                                          # voucherType
            "",                                          # voucherNo
            v.match(f + "counterparty_bank_code", e.counterparty_bank_code, BANK_NO,
                    "must be 1-20 letters or digits", optional=True),
            _column(f + "summary", e.summary, v.MEMO_LEN),
            "Y" if e.reversal else "N",
            "00",
            "000",
        )
        lines.append("|".join(cols) + "|")
    return "\n".join(lines)


def parse_entries(file_text: str) -> tuple[Entry, ...]:
    """The entries of a §5.4 file; lines without a separator (``#END``, blank) are skipped."""
    entries = []
    for number, line in enumerate(file_text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        cut = line.rfind("|")
        if cut < 0:
            continue
        where = f"file line {number}"
        if line[cut + 1:].strip():
            raise AdapterError(f"{where}: text after the last separator")
        cols = [("" if c == _NULL else c) for c in line[:cut].split("|")]
        if len(cols) < _COLUMNS:
            raise AdapterError(f"{where}: {len(cols)} columns, expected at least {_COLUMNS}")
        f = where + " "
        v.match(f + "no", cols[0], _LINE_NO, "must be a line number")
        for index in range(_COLUMNS, len(cols)):  # later additions (a scan-file column): bounded, not kept
            v.text(f"{f}column {index + 1}", cols[index], v.OTHER_LEN)
        # The deployed centre swaps CurrNo and CurrIden in places: either order is CNY.
        if {cols[12], cols[13]} - {"156", "1", ""} or cols[12] == cols[13] != "":
            raise AdapterError(f"{f}CurrNo/CurrIden: only CNY (156, 1) is carried, not "
                               f"{v.show(cols[12])}/{v.show(cols[13])}")
        if cols[20] not in ("Y", "N", ""):
            raise AdapterError(f"{f}redo: must be Y or N, not {v.show(cols[20])}")
        for index, max_len in ((3, v.OTHER_LEN), (9, v.OTHER_LEN), (10, v.OTHER_LEN),
                               (15, v.OTHER_LEN), (16, v.OTHER_LEN), (17, v.OTHER_LEN),
                               (21, v.OTHER_LEN), (22, v.OTHER_LEN)):
            v.text(f"{f}column {index + 1}", cols[index], max_len)  # ignored, but still bounded
        entries.append(Entry(
            account=v.match(f + "acct", cols[1], v.ACCOUNT, "must be 1-32 letters or digits"),
            host_seq_no=v.serial(f + "hostSeqNo", cols[2], optional=True),
            amount=v.parse_amount(f + "amt", cols[6]),
            value_date=v.parse_date(f + "date", cols[7]),
            time=v.parse_time(f + "time", cols[8]),
            counterparty_account=v.text(f + "opponentAcct", cols[4], v.OTHER_LEN),
            counterparty_name=v.text(f + "opponentName", cols[5], v.NAME_LEN),
            counterparty_bank_code=v.match(f + "opponentBankNo", cols[18], BANK_NO,
                                           "must be 1-20 letters or digits", optional=True),
            balance_after=None if cols[14] == "" else v.parse_amount(f + "balance", cols[14]),
            summary=v.text(f + "summary", cols[19], v.MEMO_LEN),
            remark=v.text(f + "remark", cols[11], v.MEMO_LEN),
            reversal=cols[20] == "Y",
        ))
    return tuple(entries)
