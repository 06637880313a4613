"""The console's 监管报告 reports with the 考核 assessment, and 银行账户管理 the accounts."""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any, Callable

from twisted.logger import Logger

from gateway.ledger.console import charts, report_queries, reports
from gateway.ledger.console.common import (
    _CENTRE,
    Raw,
    Refused,
    _arg,
    _choice,
    _date,
    _day_start_us,
    _pattern,
)
from gateway.ledger.console.i18n import translate
from gateway.ledger.console.scope import Viewer
from gateway.ledger.report import REPORT_TZ

if TYPE_CHECKING:
    from gateway.ledger.console.state import Console

log = Logger()


class ReportPages:
    """A part of :class:`~gateway.ledger.console.app.ConsoleResource` (its pages of one area)."""

    console: Console
    _deny: Callable[..., Refused]

    # -- reports and accounts ----------------------------------------------------------------

    async def _report(self, request: Any, viewer: Viewer, lang: str, page: Callable[..., bytes]) -> Any:
        c = self.console
        period = _choice(request, b"period", reports.PERIODS) or "month"
        day = _date(request, b"date") or _dt.datetime.now(REPORT_TZ).date()
        centre = _pattern(request, b"centre", _CENTRE)
        if centre is not None and not viewer.sees_centre(centre):
            raise Refused(404, "error.404")
        first, end = reports.period_range(period, day)
        scope = {centre} if centre else viewer.centres
        data = await c.db.read(report_queries.report_data, scope, _day_start_us(first), _day_start_us(end), c.totals,
                               c.alert_totals)
        series = reports.day_series(data["days"], first, end)
        shown = [centre] if centre else viewer.visible(c.centres)
        table = report_queries.assessment(data, shown)
        if _arg(request, b"format") == "csv":
            return Raw(reports.report_csv(series, table).encode("utf-8"), "text/csv; charset=utf-8",
                       f"report-{period}-{first.isoformat()}.csv")
        by_bank: dict[str, int] = {}
        for bank, state, n in data["outcomes"]:
            by_bank[f"{bank} {translate('col.' + state, lang)}"] = n
        ack_by_rule: dict[str, list[int]] = {}
        for _, rule, _, acked, ack_us, _, _ in data["responses"]:
            slot = ack_by_rule.setdefault(rule, [0, 0])
            slot[0] += acked
            slot[1] += ack_us
        t = lambda key: translate(key, lang)  # noqa: E731
        return page("report.html", {
            "period": period, "day": day.isoformat(), "first": first.isoformat(), "behind": data["behind"],
            "last": (end - _dt.timedelta(days=1)).isoformat(), "centre": centre, "centres": viewer.visible(c.centres),
            "periods": reports.PERIODS, "series": series, "assessment": table,
            "volume_chart": charts.line_chart([(d, n) for d, n, _ in series], title=t("report.volume")),
            "amount_chart": charts.line_chart([(d, fen / 100) for d, _, fen in series], title=t("report.amount")),
            "rules_chart": charts.pie_chart(sorted(data["rules"]), title=t("report.by_rule")),
            "banks_chart": charts.bar_chart(sorted(by_bank.items()), title=t("report.by_bank")),
            "ack_chart": charts.bar_chart(sorted((r, round(us / n / 3.6e9, 2)) for r, (n, us) in ack_by_rule.items()
                                                 if n),
                                          title=t("report.ack_hours")),
        })

    async def _accounts(self, viewer: Viewer) -> dict[str, Any]:
        c = self.console
        mine = [a for a in c.config.accounts.values() if viewer.sees_centre(a.centre)]

        def read(conn: Any) -> list[dict[str, Any]]:
            return [dict(report_queries.account_status(conn, a.number), account=a.number, bank=a.bank, centre=a.centre,
                         name=a.name, type=a.type) for a in mine]

        return {"accounts": await c.db.read(read)}
