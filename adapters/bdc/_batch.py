"""The batch files bdc carries in FILE_LIST (docs/protocols/bdc.md, "Batches").

Request files (BDC103/104) separate fields with ``@|$``; the result file (BDC108) with
``|``.  In both every field, the last included, is followed by the separator; lines are
joined with ``\\n`` and none follows the last.  Reading cuts a line at its last separator,
keeps empty fields, reads the literal ``null`` as empty and skips lines without a
separator (a ``#END`` trailer).  The column layouts depend on the batch kind and its
FileType (1 all same-bank, 2 all other-bank, 3 mixed).
"""

from __future__ import annotations

import datetime as _dt

from adapters.base import AdapterError

from . import _values as v
from ._files import BANK_NO
from .messages import BatchItem, BatchLine

__all__ = ["BATCH_SEP", "layout", "format_batch", "parse_batch", "format_results", "parse_results"]

BATCH_SEP = "@|$"
_RESULT_SEP = "|"
_NULL = "null"
MAX_LINES = 100_000

# (kind, same-bank file) -> column names, in order (docs/protocols/bdc.md, "Batches").  BatchItem field per column below.
_LAYOUTS = {
    ("payment", True): ("no", "amt", "CrAcctNo", "CrAcctName", "summary", "RefAcctNo", "RefSeqNo1",
                        "RefSeqNo2", "CapAmt", "IntAmt"),
    ("payment", False): ("no", "amt", "CrAcctNo", "CrAcctName", "CrChgNo", "CrBankChgNo", "address",
                         "summary", "RefAcctNo", "RefSeqNo1", "RefSeqNo2", "CapAmt", "IntAmt"),
    ("collection", True): ("no", "amt", "DeAcctNo", "DeAcctName", "summary", "RefAcctNo", "RefSeqNo"),
    ("collection", False): ("no", "amt", "DeAcctNo", "DeAcctName", "ChgNo", "BankChgNo", "address",
                            "ConAgrNo", "summary", "RefAcctNo", "RefSeqNo"),
}
_FIELD = {"CrAcctNo": "account", "DeAcctNo": "account", "CrAcctName": "name", "DeAcctName": "name",
          "CrChgNo": "branch_code", "ChgNo": "branch_code", "CrBankChgNo": "bank_branch_code",
          "BankChgNo": "bank_branch_code", "address": "address", "ConAgrNo": "agreement_no",
          "summary": "summary", "RefAcctNo": "ref_account", "RefSeqNo1": "reference",
          "RefSeqNo": "reference", "RefSeqNo2": "reference2"}
_LIMITS = {"account": v.OTHER_LEN, "name": v.NAME_LEN, "address": v.MEMO_LEN, "agreement_no": v.OTHER_LEN,
           "summary": v.MEMO_LEN, "ref_account": v.OTHER_LEN, "reference": v.REFERENCE_LEN,
           "reference2": v.REFERENCE_LEN}


def layout(kind: str, file_type: str) -> tuple[str, ...]:
    if kind not in ("payment", "collection"):
        raise AdapterError(f"kind: must be payment or collection, not {v.show(str(kind))}")
    if file_type not in ("1", "2", "3"):
        raise AdapterError(f"FileType: must be 1, 2 or 3, not {v.show(str(file_type))}")
    return _LAYOUTS[(kind, file_type == "1")]


def _value(where: str, value: object, max_len: int, sep: str) -> str:
    v.text(where, value, max_len)
    assert isinstance(value, str)
    if sep in value or "|" in value:
        raise AdapterError(f"{where}: a separator cannot be carried in a bdc file line")
    if value == _NULL:
        raise AdapterError(f"{where}: the literal 'null' reads back as empty in bdc files")
    try:
        value.encode("gbk")
    except UnicodeEncodeError as e:
        raise AdapterError(f"{where}: character {value[e.start]!r} cannot be carried in GBK") from None
    return value


def format_batch(kind: str, file_type: str, items: tuple[BatchItem, ...]) -> str:
    """The batch request file for ``items``; payments carry each amount as principal
    (``CapAmt``), the interest column empty."""
    columns = layout(kind, file_type)
    if not isinstance(items, tuple) or not 1 <= len(items) <= MAX_LINES:
        raise AdapterError(f"items: a batch holds 1 to {MAX_LINES} lines")
    lines, seen = [], set()
    for i, item in enumerate(items):
        w = f"items[{i}]."
        if not isinstance(item, BatchItem):
            raise AdapterError(f"items[{i}]: not a BatchItem")
        if type(item.no) is not int or not 1 <= item.no <= MAX_LINES or item.no in seen:
            raise AdapterError(f"{w}no: must be a distinct line number from 1")
        seen.add(item.no)
        if kind == "collection" and item.reference2:
            raise AdapterError(f"{w}reference2: a collection line has no RefSeqNo2")
        if kind == "payment" and item.agreement_no:
            raise AdapterError(f"{w}agreement_no: a payment line has no ConAgrNo")
        if file_type == "1" and (item.branch_code or item.bank_branch_code or item.address
                                 or item.agreement_no):
            raise AdapterError(f"{w}: a same-bank file (FileType 1) has no branch, address or agreement")
        amount = v.format_amount(w + "amount", item.amount, positive=True)
        v.match(w + "account", item.account, v.ACCOUNT, "must be 1-32 letters or digits")
        cols = []
        for name in columns:
            if name == "no":
                cols.append(str(item.no))
            elif name in ("amt", "CapAmt"):
                cols.append(amount)
            elif name == "IntAmt":
                cols.append("")
            elif name in ("CrChgNo", "ChgNo"):
                cols.append(v.match(w + "branch_code", item.branch_code, v.BANK_CODE,
                                    "must be a 12-digit branch code"))
            elif name in ("CrBankChgNo", "BankChgNo"):
                cols.append(v.match(w + "bank_branch_code", item.bank_branch_code, BANK_NO,
                                    "must be 1-20 letters or digits", optional=True))
            else:
                field = _FIELD[name]
                cols.append(_value(w + field, getattr(item, field), _LIMITS[field], BATCH_SEP))
        if not item.name.strip():
            raise AdapterError(f"{w}name: must not be empty")
        lines.append(BATCH_SEP.join(cols) + BATCH_SEP)
    return "\n".join(lines)


def _split(text: str, sep: str) -> list[tuple[int, list[str]]]:
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        cut = line.rfind(sep)
        if cut < 0:
            continue
        if line[cut + len(sep):].strip():
            raise AdapterError(f"file line {number}: text after the last separator")
        out.append((number, [("" if c == _NULL else c) for c in line[:cut].split(sep)]))
        if len(out) > MAX_LINES + 1:
            raise AdapterError(f"file: more than {MAX_LINES} lines")
    return out


def _count(where: str, value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise AdapterError(f"{where}: must be a count, not {v.show(value)}")
    return int(value)


def parse_batch(kind: str, file_type: str, text: str) -> tuple[BatchItem, ...]:
    """The lines of a batch request file.  A line with a non-zero interest amount, or a
    principal other than its amount, is refused (one principal leg is all a line carries
    here)."""
    columns = layout(kind, file_type)
    items, seen = [], set()
    for number, cols in _split(text, BATCH_SEP):
        w = f"file line {number} "
        if len(cols) < len(columns):
            raise AdapterError(f"{w}: {len(cols)} columns, expected {len(columns)}")
        row = dict(zip(columns, cols))
        no = _count(w + "no", row["no"])
        if no in seen or no == 0:
            raise AdapterError(f"{w}no: {no} is not a fresh line number")
        seen.add(no)
        amount = v.parse_amount(w + "amt", row["amt"], positive=True)
        if "CapAmt" in row:
            if row["IntAmt"] and v.parse_amount(w + "IntAmt", row["IntAmt"]) != 0:
                raise AdapterError(f"{w}IntAmt: an interest leg is not supported")
            if row["CapAmt"] and v.parse_amount(w + "CapAmt", row["CapAmt"]) != amount:
                raise AdapterError(f"{w}CapAmt: differs from amt (only a principal leg is carried)")
        values: dict[str, str] = {}
        for name in columns:
            field = _FIELD.get(name)
            if field is None:
                continue
            if field == "branch_code":
                values[field] = v.match(w + name, row[name], v.BANK_CODE, "must be a 12-digit branch code")
            elif field == "bank_branch_code":
                values[field] = v.match(w + name, row[name], BANK_NO, "must be 1-20 letters or digits",
                                        optional=True)
            else:
                values[field] = v.text(w + name, row[name], _LIMITS[field])
        v.match(w + "account", values["account"], v.ACCOUNT, "must be 1-32 letters or digits")
        v.text(w + "name", values["name"], v.NAME_LEN, required=True)
        items.append(BatchItem(no=no, amount=amount, **values))
    if not items:
        raise AdapterError("file: a batch holds at least one line")
    return tuple(items)


# -- the result file (BDC108) ------------------------------------------------------

_SUMMARY_COLUMNS = 14
_LINE_COLUMNS = 16


def format_results(date: _dt.date, unit_no: str, batch_no: str, lines: tuple[BatchLine, ...],
                   summary: str = "") -> str:
    """The BDC108 result file: the ``$`` summary line, then a line per item.  Category and
    type (columns 4 and 5, meaning not shown) are written empty; CurrNo 156, CurrIden 1."""
    ok = [ln for ln in lines if ln.succeeded]
    bad = [ln for ln in lines if not ln.succeeded]

    def total(group: list[BatchLine]) -> str:
        return v.format_amount("total", sum(ln.amount for ln in group))

    head = ["$" + v.format_date("date", date), v.match("unit_no", unit_no, v.UNIT_NO, "must be 15 digits"),
            v.serial("batch_no", batch_no), "", "", "156", "1", str(len(lines)), total(list(lines)),
            str(len(ok)), total(ok), str(len(bad)), total(bad), _value("summary", summary, v.MEMO_LEN, "|")]
    out = ["|".join(head) + "|"]
    for i, ln in enumerate(lines):
        w = f"lines[{i}]."
        if not isinstance(ln, BatchLine):
            raise AdapterError(f"lines[{i}]: not a BatchLine")
        cols = [str(ln.no), "156", "1", v.format_amount(w + "amount", ln.amount),
                v.match(w + "debit_account", ln.debit_account, v.ACCOUNT, "must be 1-32 letters or digits"),
                _value(w + "debit_name", ln.debit_name, v.NAME_LEN, "|"), "",
                v.match(w + "credit_account", ln.credit_account, v.ACCOUNT, "must be 1-32 letters or digits"),
                _value(w + "credit_name", ln.credit_name, v.NAME_LEN, "|"), "",
                _value(w + "code", ln.code, v.CODE_LEN, "|"), _value(w + "text", ln.text, v.MESSAGE_LEN, "|"),
                "" if ln.host_date is None else v.format_date(w + "host_date", ln.host_date),
                v.serial(w + "host_seq_no", ln.host_seq_no, optional=True),
                _value(w + "receipt_no", ln.receipt_no, v.OTHER_LEN, "|"), ""]
        if type(ln.no) is not int or ln.no < 1:
            raise AdapterError(f"{w}no: must be a line number from 1")
        out.append("|".join(cols) + "|")
    return "\n".join(out)


def parse_results(text: str) -> tuple[dict[str, object], tuple[BatchLine, ...]]:
    """(the summary line's values, the item lines) of a BDC108 result file.

    Number formats vary by bank (``10`` and ``10.00`` alike).  The summary is kept as the
    bank wrote it; each item's result is its own line, keyed by ``no``.
    """
    rows = _split(text, _RESULT_SEP)
    if not rows or not rows[0][1] or not rows[0][1][0].startswith("$"):
        raise AdapterError("result file: the first line must be the '$' summary line")
    number, head = rows[0]
    if len(head) < _SUMMARY_COLUMNS:
        raise AdapterError(f"file line {number}: summary has {len(head)} columns, expected {_SUMMARY_COLUMNS}")
    w = "result summary "
    summary: dict[str, object] = {
        "date": v.parse_date(w + "date", head[0][1:]),
        "unit_no": v.match(w + "TxUnitNo", head[1], v.UNIT_NO, "must be 15 digits", optional=True),
        "batch_no": v.serial(w + "batchNo", head[2]),
        "total_num": _count(w + "totalNum", head[7]),
        "total_amount": v.parse_amount(w + "totalAmt", head[8]),
        "succeeded_num": _count(w + "succNum", head[9]),
        "succeeded_amount": v.parse_amount(w + "succAmt", head[10]),
        "failed_num": _count(w + "failNum", head[11]),
        "failed_amount": v.parse_amount(w + "failAmt", head[12]),
        "summary": v.text(w + "summary", head[13], v.MEMO_LEN),
    }
    for index in (3, 4, 5, 6):
        v.text(f"{w}column {index + 1}", head[index], v.STATUS_LEN)  # not kept, still bounded
    lines, seen = [], set()
    for number, cols in rows[1:]:
        w = f"file line {number} "
        if len(cols) < _LINE_COLUMNS:
            raise AdapterError(f"{w}: {len(cols)} columns, expected {_LINE_COLUMNS}")
        no = _count(w + "no", cols[0])
        if no in seen:
            raise AdapterError(f"{w}no: {no} appears twice")
        seen.add(no)
        for index in (1, 2, 6, 9, 15):
            v.text(f"{w}column {index + 1}", cols[index], v.OTHER_LEN)
        lines.append(BatchLine(
            no=no, amount=v.parse_amount(w + "amt", cols[3]),
            debit_account=v.text(w + "DeAcctNo", cols[4], v.OTHER_LEN),
            debit_name=v.text(w + "DeAcctName", cols[5], v.NAME_LEN),
            credit_account=v.text(w + "CrAcctNo", cols[7], v.OTHER_LEN),
            credit_name=v.text(w + "CrAcctName", cols[8], v.NAME_LEN),
            code=v.text(w + "rtnCode", cols[10], v.CODE_LEN, required=True),
            text=v.text(w + "rtnMsg", cols[11], v.MESSAGE_LEN),
            host_date=v.parse_date(w + "hostDate", cols[12]) if cols[12] else None,
            host_seq_no=v.serial(w + "hostSeqNo", cols[13], optional=True),
            receipt_no=v.text(w + "receiptNo", cols[14], v.OTHER_LEN)))
    return summary, tuple(lines)
