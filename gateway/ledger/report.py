"""What the ledger reports: the trail of an instruction's copies and the daily reconciliation.

Shared by the supervisor API and the console.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import re
from typing import Any, Mapping

from gateway.clock import BUSINESS_TZ
from gateway.ledger import store
from gateway.ledger.config import LedgerConfig, PublicSigningKey
from gateway.model import format_amount

__all__ = ["REPORT_TZ", "REPORT_COLUMNS", "trail_item", "daily_report", "report_csv"]

REPORT_TZ = BUSINESS_TZ
"""The day of the daily report is the business day in China (UTC+8, no daylight saving): the
gateway's business date of each copy's journal time (:func:`gateway.clock.business_date`)."""


def trail_item(row: Mapping[str, Any], keys: Mapping[str, tuple[str, PublicSigningKey]]) -> dict[str, Any]:
    """One stored copy as the trail shows it, its signature checked again."""
    document = store.copy_document(row)
    found = keys.get(row["gateway"])
    verified = found is not None and store.verify_row(found[1], found[0], row)
    try:
        payload: Any = json.loads(row["payload"])
    except ValueError:
        payload = row["payload"]
    return {
        "ledger_seq": row["seq"], "gateway": row["gateway"], "seq": row["gateway_seq"],
        "event_id": row["event_id"], "kind": row["kind"], "centre_id": row["centre_id"],
        "instruction_id": row["instruction_id"], "bank_id": row["bank_id"], "account": row["account"],
        "state": row["state"], "created_at": store.iso_us(row["created_us"]), "created_us": row["created_us"],
        "received_at": store.iso_us(row["received_us"]), "payload": payload, "raw": document["raw"],
        "adapter": row["adapter"], "gateway_hash": row["gateway_hash"], "ledger_hash": row["hash"],
        "signature": row["signature"], "signature_alg": row["signature_alg"], "batch": document.get("batch"),
        "signature_verified": verified, "refused": row.get("refused"),
    }


_UNMATCHED_RULES = frozenset({"unsolicited-debit", "missing-result", "result-mismatch", "booking-mismatch",
                              "duplicate-execution"})
REPORT_COLUMNS = (
    "centre_id", "bank_id", "account",
    "instructed_count", "instructed_sum", "rejected_count", "rejected_sum",
    "executed_count", "executed_sum", "failed_count", "in_doubt_count",
    "booked_count", "booked_sum", "debit_count", "debit_sum", "credit_count", "credit_sum",
    "closing_balance", "unmatched", "balance_breaks", "alerts",
)
_SUMS = ("instructed_sum", "rejected_sum", "executed_sum", "booked_sum", "debit_sum", "credit_sum")


def daily_report(day: _dt.date, data: Mapping[str, Any], config: LedgerConfig) -> dict[str, Any]:
    """The reconciliation of one business day (UTC+8), per centre, bank and account.

    Sums are CNY strings.  ``instructed``: instructions received that day
    (``rejected`` apart); ``executed``/``failed``/``in_doubt``: results that
    day, summed at the instructed amount; ``booked``: the centre's bookings
    that day, signed as booked (a debit is negative); ``debit``/``credit``:
    the bank's movements; ``closing_balance``: the day's last snapshot;
    ``unmatched``: alerts raised that day for items the three ways do not
    match (unsolicited debit, missing result, result or booking mismatch,
    duplicate execution); ``balance_breaks``: balance-break alerts that day.
    """
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    amounts: Mapping[tuple[str, str], tuple[int | None, str | None, str | None]] = data["instructions"]

    def place(centre: str | None, bank: str | None, account: str | None) -> dict[str, Any]:
        reg = config.accounts.get(account or "")
        key = (centre or (reg.centre if reg else "") or "", bank or (reg.bank if reg else "") or "",
               account or "")
        row = rows.get(key)
        if row is None:
            row = rows[key] = {c: 0 for c in REPORT_COLUMNS[3:]}
            row.update(centre_id=key[0], bank_id=key[1], account=key[2], closing_balance=None)
        return row

    for c in data["copies"]:
        payload = store._loads(c["payload"])
        kind = c["kind"]
        row = place(c["centre_id"], c["bank_id"] or payload.get("bank"), c["account"])
        if kind == "instruction.state":
            state = c["state"]
            ins = payload.get("instruction") if isinstance(payload.get("instruction"), dict) else {}
            known = amounts.get((c["centre_id"], c["instruction_id"]))
            amount = store._amount_or_none(ins.get("amount")) if ins else (known[0] if known else None)
            if state == "received":
                row["instructed_count"] += 1
                row["instructed_sum"] += amount or 0
            elif state == "rejected":
                row["rejected_count"] += 1
                row["rejected_sum"] += amount or 0
            elif state == "succeeded":
                row["executed_count"] += 1
                row["executed_sum"] += amount or 0
            elif state == "failed":
                row["failed_count"] += 1
            elif state == "in_doubt":
                row["in_doubt_count"] += 1
        elif kind == "booking":
            amount = store._amount_or_none(payload.get("amount"))
            row["booked_count"] += 1
            row["booked_sum"] += amount or 0
        elif kind == "bank.movement":
            amount = payload.get("amount")
            if isinstance(amount, int) and not isinstance(amount, bool):
                if amount < 0:
                    row["debit_count"] += 1
                    row["debit_sum"] += -amount
                else:
                    row["credit_count"] += 1
                    row["credit_sum"] += amount
        elif kind == "bank.balance":
            balance = payload.get("balance")
            if isinstance(balance, int) and not isinstance(balance, bool):
                row["closing_balance"] = balance
    for a in data["alerts"]:
        row = place(a["centre_id"], a["bank_id"], a["account"])
        row["alerts"] += 1
        if a["rule"] in _UNMATCHED_RULES:
            row["unmatched"] += 1
        elif a["rule"] == "balance-break":
            row["balance_breaks"] += 1

    ordered = [rows[k] for k in sorted(rows)]
    totals = {c: sum(r[c] for r in ordered) for c in REPORT_COLUMNS[3:] if c != "closing_balance"}
    for r in ordered + [totals]:
        for c in _SUMS:
            r[c] = format_amount(r[c])
        if r.get("closing_balance") is not None:
            r["closing_balance"] = format_amount(r["closing_balance"])
    return {"date": day.isoformat(), "timezone": "+08:00", "rows": ordered, "totals": totals}


def report_csv(report: Mapping[str, Any]) -> str:
    """The daily report as CSV (RFC 4180): a header, one line per row, then a ``TOTAL`` line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("date",) + REPORT_COLUMNS)
    for row in report["rows"]:
        writer.writerow([report["date"]] + [_cell(row.get(c)) for c in REPORT_COLUMNS])
    totals = dict(report["totals"], centre_id="TOTAL", bank_id="", account="", closing_balance=None)
    writer.writerow([report["date"]] + [_cell(totals.get(c)) for c in REPORT_COLUMNS])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # A cell a spreadsheet would run as a formula is defused (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "@") or (text[:1] == "-" and not _is_amount(text)) else text


def _is_amount(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+(\.[0-9]{1,2})?", text) is not None
