"""The console's message catalogue: zh-CN by default, English on request (pure).

A message is looked up by its key; a key missing from the catalogue is a bug
(:func:`translate` raises, and a unit test renders every template in both
languages).  The language comes from ``?lang=``, then the ``hpf-lang`` cookie,
then ``Accept-Language``.
"""

from __future__ import annotations

__all__ = ["LANGS", "DEFAULT", "CATALOGUE", "translate", "choose_lang"]

LANGS = ("zh-CN", "en")
DEFAULT = "zh-CN"

CATALOGUE: dict[str, tuple[str, str]] = {
    "title": ("住房公积金资金监管", "HPF fund supervision"),
    "nav.overview": ("总览", "Overview"),
    "nav.alerts": ("数据预警", "Alerts"),
    "nav.inquiries": ("意见反馈", "Inquiries"),
    "nav.conditions": ("预警条件设置", "Alert conditions"),
    "nav.reports": ("监管报告", "Reports"),
    "nav.accounts": ("银行账户管理", "Bank accounts"),
    "who.province": ("省级监管", "Province supervisor"),
    "who.city": ("市级监管", "City supervisor"),
    "who.staff": ("中心经办", "Centre staff"),
    "lang.other": ("English", "中文"),
    "overview.today": ("今日（北京时间）", "Today (UTC+8)"),
    "overview.by_centre_bank": ("按中心和银行的指令", "Instructions by centre and bank"),
    "overview.open_by_severity": ("未处理预警（按级别）", "Open alerts by severity"),
    "overview.in_doubt": ("结果未明", "In doubt"),
    "overview.overdue": ("逾期未回结果", "Overdue results"),
    "overview.match_lag": ("比对滞后（条）", "Match lag (copies)"),
    "overview.balance_breaks": ("余额不符", "Balance breaks"),
    "overview.overdue_inquiries": ("逾期意见反馈", "Overdue inquiries"),
    "totals.behind": ("指令统计正在补算，尚有以下条数的副本未计入：",
                      "The instruction totals are still catching up; copies not counted yet:"),
    "col.centre": ("中心", "Centre"),
    "col.city": ("城市", "City"),
    "col.bank": ("银行", "Bank"),
    "col.account": ("账户", "Account"),
    "col.instructions": ("指令数", "Instructions"),
    "col.amount": ("金额（元）", "Amount (CNY)"),
    "col.succeeded": ("成功", "Succeeded"),
    "col.failed": ("失败", "Failed"),
    "col.rejected": ("拒绝", "Rejected"),
    "col.in_doubt": ("未明", "In doubt"),
    "col.id": ("编号", "No."),
    "col.rule": ("规则", "Rule"),
    "col.severity": ("级别", "Severity"),
    "col.state": ("状态", "State"),
    "col.subject": ("对象", "Subject"),
    "col.summary": ("摘要", "Summary"),
    "col.created": ("时间", "Raised"),
    "col.deadline": ("期限", "Deadline"),
    "col.question": ("问题", "Question"),
    "col.answer": ("答复", "Answer"),
    "col.who": ("操作人", "By"),
    "col.reason": ("原因", "Reason"),
    "filter.all": ("全部", "All"),
    "filter.from": ("起始日期", "From"),
    "filter.to": ("截止日期", "To"),
    "filter.apply": ("筛选", "Filter"),
    "page.next": ("下一页", "Next page"),
    "page.first": ("第一页", "First page"),
    "alerts.none": ("没有符合条件的预警", "No alert matches"),
    "alerts.ack_selected": ("确认所选预警", "Acknowledge selected"),
    "alerts.select_all": ("全选", "Select all"),
    "alerts.reason": ("处理说明", "Reason"),
    "alert.evidence": ("证据", "Evidence"),
    "alert.instruction": ("支付指令", "Instruction"),
    "alert.copies": ("副本（网关签名）", "Copies (signed by the gateway)"),
    "alert.decoded": ("银行原始报文（解析）", "Bank's original frame (decoded)"),
    "alert.raw": ("银行原始报文（原文）", "Bank's original frame (raw)"),
    "alert.signature_ok": ("签名有效", "Signature verified"),
    "alert.signature_bad": ("签名无效", "Signature does NOT verify"),
    "alert.balances": ("余额", "Balances"),
    "alert.expected": ("应有余额", "Expected"),
    "alert.reported": ("银行余额", "Reported"),
    "alert.difference": ("差额", "Difference"),
    "alert.timeline": ("时间线", "Timeline"),
    "alert.notes": ("处理记录", "Notes"),
    "alert.add_note": ("添加备注", "Add note"),
    "alert.acknowledge": ("确认", "Acknowledge"),
    "alert.resolve": ("办结", "Resolve"),
    "alert.ask": ("向中心发送意见反馈", "Send the centre an inquiry"),
    "alert.deadline_days": ("期限（天）", "Deadline (days)"),
    "alert.raise_manual": ("人工预警", "Raise a manual alert"),
    "alert.event_id": ("事实编号（副本 event_id）", "Fact (copy event id)"),
    "alert.submit": ("提交", "Submit"),
    "inquiry.answer": ("答复", "Answer"),
    "inquiry.attachment": ("附件（PDF、PNG、JPEG、TXT；至多 5 个，每个不超过 2 MB，合计不超过 3 MB）",
                           "Attachments (PDF, PNG, JPEG, TXT; at most 5, each at most 2 MB, 3 MB together)"),
    "inquiry.attachments": ("附件", "Attachments"),
    "inquiry.none": ("没有意见反馈", "No inquiry"),
    "inquiry.overdue": ("已逾期", "Overdue"),
    "state.open": ("待处理", "open"),
    "state.acknowledged": ("已确认", "acknowledged"),
    "state.resolved": ("已办结", "resolved"),
    "state.answered": ("已答复", "answered"),
    "severity.critical": ("严重", "critical"),
    "severity.major": ("重要", "major"),
    "severity.minor": ("一般", "minor"),
    "nav.instructions": ("支付指令", "Instructions"),
    "col.at": ("时间", "At"),
    "col.instruction": ("指令号", "Instruction"),
    "col.reached": ("所达状态", "State reached"),
    "col.now": ("当前状态", "State now"),
    "col.creditor": ("对方户名", "Counterparty"),
    "col.alert": ("预警", "Alert"),
    "col.received": ("受理", "Received"),
    "filter.overdue": ("仅逾期未回结果", "Overdue results only"),
    "unmatched.title": ("待比对副本", "Copies awaiting the match"),
    "unmatched.hint": ("已入账本、比对引擎尚未处理的副本，等待最久的在前；比对后即从本表消失。",
                       "Copies filed in the ledger that the matcher has not taken yet, the longest waiting first; "
                       "each leaves this list once matched."),
    "unmatched.none": ("没有待比对的副本：比对没有滞后。", "No copy awaits the match: the matcher is not behind."),
    "col.kind": ("类型", "Kind"),
    "col.waited": ("已等待（秒）", "Waiting (s)"),
    "col.gateway": ("网关", "Gateway"),
    "instructions.hint": ("每行是一条指令在所选日期内到达某一状态（与总览的计数一致）。",
                          "Each row is an instruction reaching a state within the days chosen (as the overview counts them)."),
    "instructions.overdue_hint": ("每行是一条结果逾期未回、预警尚未处理的指令（与总览的计数一致）。",
                                  "Each row is an instruction whose result is overdue and whose alert is still open "
                                  "(as the overview counts them)."),
    "instructions.none": ("没有符合条件的指令", "No instruction matches"),
    "istate.received": ("受理", "Received"),
    "istate.sent": ("已发送", "Sent"),
    "istate.accepted": ("银行已受理", "Accepted by the bank"),
    "istate.succeeded": ("成功", "Succeeded"),
    "istate.failed": ("失败", "Failed"),
    "istate.in_doubt": ("结果未明", "In doubt"),
    "istate.rejected": ("拒绝", "Rejected"),
    "nav.rectifications": ("问题纠正", "Rectifications"),
    "rect.open": ("对所选预警发起问题纠正", "Open a rectification for the selected alerts"),
    "rect.title": ("问题", "Problem"),
    "rect.plan_days": ("整改方案期限（天）", "Plan due in (days)"),
    "rect.due_days": ("整改完成期限（天）", "Closure due in (days)"),
    "rect.none": ("没有问题纠正", "No rectification"),
    "rect.plan": ("整改方案", "Plan"),
    "rect.evidence": ("整改结果证据", "Closing evidence"),
    "rect.plan_due": ("方案期限", "Plan due"),
    "rect.done_due": ("完成期限", "Closure due"),
    "rect.history": ("办理过程", "History"),
    "rect.text": ("说明", "Text"),
    "rect.state.awaiting-plan": ("待提交方案", "awaiting plan"),
    "rect.state.plan-submitted": ("方案待审批", "plan submitted"),
    "rect.state.in-progress": ("整改中", "in progress"),
    "rect.state.closed": ("已关闭", "closed"),
    "rect.action.submit-plan": ("提交整改方案", "Submit the plan"),
    "rect.action.approve": ("批准方案", "Approve the plan"),
    "rect.action.return": ("退回方案", "Return the plan"),
    "rect.action.progress": ("报告进展", "Report progress"),
    "rect.action.close": ("关闭（附证据）", "Close (with evidence)"),
    "report.title": ("监管报告", "Supervision report"),
    "report.period": ("周期", "Period"),
    "report.period.day": ("日报", "daily"),
    "report.period.month": ("月报", "monthly"),
    "report.period.quarter": ("季报", "quarterly"),
    "report.period.year": ("年报", "yearly"),
    "report.date": ("日期", "Date"),
    "report.show": ("生成", "Show"),
    "report.csv": ("下载 CSV", "Download CSV"),
    "report.print": ("打印版", "Printable"),
    "report.volume": ("每日指令笔数", "Instructions per day"),
    "report.amount": ("每日指令金额（元）", "Instructed amount per day (CNY)"),
    "report.by_rule": ("预警按规则", "Alerts by rule"),
    "report.by_bank": ("结果按银行", "Outcomes by bank"),
    "report.ack_hours": ("平均确认用时（小时，按规则）", "Mean hours to acknowledge, by rule"),
    "report.assessment": ("考核", "Assessment of centres"),
    "report.alerts": ("预警数", "Alerts"),
    "report.per_10k": ("每万笔预警", "Alerts per 10,000"),
    "report.ack": ("平均确认（小时）", "Mean to acknowledge (h)"),
    "report.resolve": ("平均办结（小时）", "Mean to resolve (h)"),
    "report.overdue_inquiries": ("逾期意见反馈", "Overdue inquiries"),
    "report.overdue_rectifications": ("逾期整改步骤", "Overdue rectification steps"),
    "accounts.name": ("户名", "Name"),
    "accounts.type": ("类型", "Type"),
    "accounts.reported": ("银行最新余额", "Latest bank balance"),
    "accounts.expected": ("账本应有余额", "Balance the ledger expects"),
    "accounts.last_movement": ("最近一笔交易", "Last movement"),
    "accounts.alerts": ("未办结预警", "Alerts not resolved"),
    "conditions.large_amount": ("大额阈值（元）", "Large-amount threshold (CNY)"),
    "conditions.balance_tolerance": ("余额容差（元）", "Balance tolerance (CNY)"),
    "conditions.result_deadline": ("结果期限（秒）", "Result deadline (s)"),
    "conditions.unregistered_counterparty": ("未登记收付款方预警", "Unregistered-counterparty alerts"),
    "conditions.default": ("默认", "default"),
    "conditions.on": ("开", "on"),
    "conditions.off": ("关", "off"),
    "conditions.history": ("变更历史", "History"),
    "conditions.save": ("保存", "Save"),
    "error.title": ("无法完成", "Cannot do that"),
    "error.403": ("无权访问", "Not allowed"),
    "error.404": ("未找到", "Not found"),
    "error.400": ("请求无效", "Invalid request"),
    "error.back": ("返回总览", "Back to the overview"),
}


def translate(key: str, lang: str) -> str:
    """The message ``key`` in ``lang`` (``KeyError`` for an unknown key: a bug)."""
    zh, en = CATALOGUE[key]
    return en if lang == "en" else zh


def choose_lang(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The page's language: an explicit choice first, then the browser's preference, else zh-CN."""
    for choice in (query, cookie):
        if choice in LANGS:
            return choice
    best: tuple[float, str] | None = None
    for part in (accept_language or "")[:200].split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        tag = tag.strip().lower()
        lang = "zh-CN" if tag.startswith("zh") else "en" if tag.startswith("en") else None
        if lang is not None and q > 0 and (best is None or q > best[0]):
            best = (q, lang)
    return best[1] if best else DEFAULT
