"""监管报告: report periods, series and the CSV form (pure)."""

from __future__ import annotations

import csv
import datetime as _dt
import io
from typing import Any, Mapping, Sequence

from gateway.model import format_amount

__all__ = ["PERIODS", "period_range", "day_series", "report_csv"]

PERIODS = ("day", "month", "quarter", "year")


def period_range(period: str, day: _dt.date) -> tuple[_dt.date, _dt.date]:
    """The [first, after-last) days of the ``period`` holding ``day``."""
    if period == "day":
        return day, day + _dt.timedelta(days=1)
    if period == "month":
        first = day.replace(day=1)
    elif period == "quarter":
        first = day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    elif period == "year":
        first = day.replace(month=1, day=1)
    else:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    months = {"month": 1, "quarter": 3, "year": 12}[period]
    month = first.month - 1 + months
    return first, first.replace(year=first.year + month // 12, month=month % 12 + 1)


def day_series(days: Mapping[int, Sequence[int]], first: _dt.date, end: _dt.date) -> list[tuple[str, int, int]]:
    """(date, instructions, instructed fen) for every day of the range, zero where none."""
    epoch = _dt.date(1970, 1, 1)
    out = []
    d = first
    while d < end:
        n, fen = days.get((d - epoch).days, (0, 0))
        out.append((d.isoformat(), n, fen))
        d += _dt.timedelta(days=1)
    return out


def report_csv(series: Sequence[tuple[str, int, int]], assessment: Sequence[Mapping[str, Any]]) -> str:
    """The report's two tables as CSV: the days, then the assessment of centres."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(("date", "instructions", "instructed_sum"))
    for day, n, fen in series:
        w.writerow((day, n, format_amount(fen)))
    w.writerow(())
    cols = ("centre", "instructions", "alerts", "per_10k", "ack_hours", "resolve_hours", "overdue_inquiries",
            "overdue_rectifications")
    w.writerow(cols)
    for row in assessment:
        w.writerow(["" if row[c] is None else row[c] for c in cols])
    return out.getvalue()
