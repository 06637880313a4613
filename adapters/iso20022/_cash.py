"""camt.052 (account report), camt.053 (statement) and camt.054 (debit/credit notification).

Encoded in version .001.08; read in .001.08 and .001.02.  See the package docstring for the
mapping of Balance, Statement, Movement and Entry.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import replace

from lxml import etree

from adapters import base
from adapters._xml import escape_text as esc
from adapters.base import AdapterError

from . import _values as v
from ._read import Element, Reader, at, children, first, text_at
from ._schema import ISO_PREFIX, LINK_NS

__all__ = [
    "CAMT052",
    "CAMT053",
    "CAMT054",
    "decode_notification",
    "decode_reports",
    "encode_balance",
    "encode_movement",
    "encode_statement",
]

CAMT052 = "camt.052.001.08"
CAMT053 = "camt.053.001.08"
CAMT054 = "camt.054.001.08"

OPENING, CLOSING = "OPBD", "CLBD"
_BALANCE_CODE = re.compile(r"[A-Z]{4}")
_CNAPS = re.compile(r"[0-9]{12}")


# -- encode ---------------------------------------------------------------------------------


def _group_header(seq_no: str, created: str, reply_to: str) -> str:
    v.serial("seq_no", seq_no)
    query = ""
    if reply_to:
        query = f"<OrgnlBizQry><MsgId>{esc(v.serial('reply_to', reply_to))}</MsgId></OrgnlBizQry>"
    return f"<GrpHdr><MsgId>{esc(seq_no)}</MsgId><CreDtTm>{created}</CreDtTm>{query}</GrpHdr>"


def _account(account: str, name: str = "") -> str:
    v.account("account", account)
    nm = f"<Nm>{esc(v.text('account_name', name, 70))}</Nm>" if name else ""
    return f"<Acct><Id><Othr><Id>{account}</Id></Othr></Id><Ccy>CNY</Ccy>{nm}</Acct>"


def _signed(field: str, fen: int, tag: str = "Amt") -> str:
    amount = v.format_amount(field, fen)
    return f'<{tag} Ccy="CNY">{amount}</{tag}><CdtDbtInd>{"DBIT" if fen < 0 else "CRDT"}</CdtDbtInd>'


def _date_only(field: str, date: _dt.date) -> str:
    return f"<Dt><Dt>{v.format_date(field, date)}</Dt></Dt>"


def _cny_only(field: str, currency: object, problems: object = ()) -> None:
    """What the link writes: CNY amounts, and no unreadable parts (those are a reader's)."""
    if currency != "CNY":
        raise AdapterError(f"{field}: the link writes CNY only, not {v.show(str(currency))}")
    if problems:
        raise AdapterError("problems: unreadable parts are a bank file's, never written")


def encode_balance(m: base.Balance, created: str) -> str:
    """A camt.052 report with one ``Bal`` (see the package docstring)."""
    _cny_only("currency", m.currency, m.problems)
    if not m.status.strip():  # a blank Prtry would be read back as no type at all
        raise AdapterError("status: camt.052 needs the balance type (e.g. ITBD)")
    v.text("status", m.status, 35)
    kind = (f"<Cd>{m.status}</Cd>" if _BALANCE_CODE.fullmatch(m.status)
            else f"<Prtry>{esc(m.status)}</Prtry>")
    if m.as_of is None:
        raise AdapterError("as_of: camt.052 needs the balance's date and time")
    if not isinstance(m.overdraft, int) or isinstance(m.overdraft, bool) or m.overdraft < 0:
        raise AdapterError("overdraft: must be integer fen, not negative (it is a credit line)")
    line = ""
    if m.overdraft:
        line = (f'<CdtLine><Incl>false</Incl><Amt Ccy="CNY">'
                f'{v.format_amount("overdraft", m.overdraft)}</Amt></CdtLine>')
    available = ""
    v.format_amount("available", m.available)
    if m.available != m.balance:
        available = f"<Avlbty><Dt><NbOfDays>0</NbOfDays></Dt>{_signed('available', m.available)}</Avlbty>"
    return (f'<Document xmlns="{ISO_PREFIX}{CAMT052}"><BkToCstmrAcctRpt>'
            f"{_group_header(m.seq_no, created, m.reply_to)}"
            f"<Rpt><Id>{esc(m.seq_no)}</Id>{_account(m.account, m.account_name)}"
            f"<Bal><Tp><CdOrPrtry>{kind}</CdOrPrtry></Tp>{line}{_signed('balance', m.balance)}"
            f"<Dt><DtTm>{v.format_datetime('as_of', m.as_of)}</DtTm></Dt>{available}</Bal>"
            f"</Rpt></BkToCstmrAcctRpt></Document>")


def _check_entry(i: str, e: base.Entry) -> None:
    if not isinstance(e, base.Entry):
        raise AdapterError(f"{i}: must be an Entry")
    v.account(f"{i}.account", e.account)
    v.format_amount(f"{i}.amount", e.amount)
    v.format_date(f"{i}.value_date", e.value_date)
    v.format_time_of_day(f"{i}.time", e.time)
    v.text(f"{i}.host_seq_no", e.host_seq_no, 35)
    v.text(f"{i}.counterparty_account", e.counterparty_account, 34)
    v.text(f"{i}.counterparty_name", e.counterparty_name, 140)
    v.text(f"{i}.counterparty_bank_code", e.counterparty_bank_code, 35)
    v.text(f"{i}.summary", e.summary, 140)
    v.text(f"{i}.remark", e.remark, 500)
    if e.balance_after is not None:
        v.format_amount(f"{i}.balance_after", e.balance_after)
    if not isinstance(e.reversal, bool):
        raise AdapterError(f"{i}.reversal: must be a boolean")
    _cny_only(f"{i}.currency", e.currency)
    if e.details:
        raise AdapterError(f"{i}.details: the link writes no batch details")


def _entry(e: base.Entry, status: str = "BOOK") -> str:
    debit = e.amount < 0
    out = ["<Ntry>", _signed("amount", e.amount)]
    if e.reversal:
        out.append("<RvslInd>true</RvslInd>")
    out.append(f"<Sts><Cd>{status}</Cd></Sts>"
               f"<BookgDt><DtTm>{e.value_date.isoformat()}T{v.format_time_of_day('time', e.time)}"
               f"</DtTm></BookgDt><ValDt><Dt>{e.value_date.isoformat()}</Dt></ValDt>")
    if e.host_seq_no:
        out.append(f"<AcctSvcrRef>{esc(e.host_seq_no)}</AcctSvcrRef>")
    # The neutral entry has no transaction code: say only "miscellaneous credit/debit".
    out.append(f"<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>{'MDOP' if debit else 'MCOP'}</Cd>"
               f"<SubFmlyCd>OTHR</SubFmlyCd></Fmly></Domn></BkTxCd>")
    tx = []
    side = "Cdtr" if debit else "Dbtr"   # the counterparty: whom we paid, or who paid us
    parties = ""
    if e.counterparty_name:
        parties += f"<{side}><Pty><Nm>{esc(e.counterparty_name)}</Nm></Pty></{side}>"
    if e.counterparty_account:
        parties += f"<{side}Acct><Id><Othr><Id>{esc(e.counterparty_account)}</Id></Othr></Id></{side}Acct>"
    if parties:
        tx.append(f"<RltdPties>{parties}</RltdPties>")
    if e.counterparty_bank_code:
        system = ("<ClrSysId><Cd>CNAPS</Cd></ClrSysId>"
                  if _CNAPS.fullmatch(e.counterparty_bank_code) else "")
        tx.append(f"<RltdAgts><{side}Agt><FinInstnId><ClrSysMmbId>{system}"
                  f"<MmbId>{esc(e.counterparty_bank_code)}</MmbId></ClrSysMmbId></FinInstnId>"
                  f"</{side}Agt></RltdAgts>")
    if e.summary:
        tx.append(f"<RmtInf><Ustrd>{esc(e.summary)}</Ustrd></RmtInf>")
    if e.balance_after is not None:
        tx.append(f'<SplmtryData><PlcAndNm>BalAftr</PlcAndNm><Envlp><hpf:BalAftr xmlns:hpf="{LINK_NS}" '
                  f'Ccy="CNY">{"-" if e.balance_after < 0 else ""}'
                  f'{v.format_amount("balance_after", e.balance_after)}</hpf:BalAftr></Envlp></SplmtryData>')
    if tx:
        out.append(f"<NtryDtls><TxDtls>{''.join(tx)}</TxDtls></NtryDtls>")
    if e.remark:
        out.append(f"<AddtlNtryInf>{esc(e.remark)}</AddtlNtryInf>")
    out.append("</Ntry>")
    return "".join(out)


def encode_statement(m: base.Statement, created: str, today: _dt.date) -> tuple[str, str]:
    """(definition, document): camt.053 when the statement has an opening or closing balance
    (a camt.053 statement must have one), else a camt.052 report with its entries only."""
    for name in ("opening_balance", "closing_balance"):
        value = getattr(m, name)
        if value is not None:
            v.format_amount(name, value)
    if not isinstance(m.entries, tuple):
        raise AdapterError("entries: must be a tuple")
    _cny_only("currency", m.currency, m.problems)
    if not isinstance(m.pending, tuple):
        raise AdapterError("pending: must be a tuple")
    for name, group in (("entries", m.entries), ("pending", m.pending)):
        for i, e in enumerate(group):
            _check_entry(f"{name}[{i}]", e)
            if e.account != m.account:
                raise AdapterError(f"{name}[{i}].account: differs from the statement's account")
    # Pending entries follow the booked ones, status PDNG: the reader keeps them apart.
    body = "".join(_entry(e) for e in m.entries) + "".join(_entry(e, "PDNG") for e in m.pending)
    header = _group_header(m.seq_no, created, m.reply_to)
    account = _account(m.account)
    if m.opening_balance is None and m.closing_balance is None:
        return CAMT052, (f'<Document xmlns="{ISO_PREFIX}{CAMT052}"><BkToCstmrAcctRpt>{header}'
                         f"<Rpt><Id>{esc(m.seq_no)}</Id>{account}{body}</Rpt>"
                         f"</BkToCstmrAcctRpt></Document>")
    # The neutral statement has no period: date its balances by its first and last entries.
    first_day = m.entries[0].value_date if m.entries else today
    last_day = m.entries[-1].value_date if m.entries else today
    balances = ""
    if m.opening_balance is not None:
        balances += (f"<Bal><Tp><CdOrPrtry><Cd>{OPENING}</Cd></CdOrPrtry></Tp>"
                     f"{_signed('opening_balance', m.opening_balance)}{_date_only('date', first_day)}</Bal>")
    if m.closing_balance is not None:
        balances += (f"<Bal><Tp><CdOrPrtry><Cd>{CLOSING}</Cd></CdOrPrtry></Tp>"
                     f"{_signed('closing_balance', m.closing_balance)}{_date_only('date', last_day)}</Bal>")
    return CAMT053, (f'<Document xmlns="{ISO_PREFIX}{CAMT053}"><BkToCstmrStmt>{header}'
                     f"<Stmt><Id>{esc(m.seq_no)}</Id>{account}{balances}{body}</Stmt>"
                     f"</BkToCstmrStmt></Document>")


def encode_movement(m: base.Movement, created: str) -> str:
    """A camt.054 with one ``Ntfctn`` per run of consecutive entries on the same account, so
    the entries come back in their order."""
    if not isinstance(m.entries, tuple) or not isinstance(m.pending, tuple) or not (m.entries or m.pending):
        raise AdapterError("entries: a camt.054 notification needs at least one entry")
    _cny_only("currency", "CNY", m.problems)
    # Booked entries first, then pending ones (status PDNG): each group keeps its order.
    runs: list[list[tuple[base.Entry, str]]] = []
    tagged = [(f"entries[{i}]", e, "BOOK") for i, e in enumerate(m.entries)]
    tagged += [(f"pending[{i}]", e, "PDNG") for i, e in enumerate(m.pending)]
    for where, e, status in tagged:
        _check_entry(where, e)
        if not runs or runs[-1][0][0].account != e.account:
            runs.append([])
        runs[-1].append((e, status))
    out = [(f'<Document xmlns="{ISO_PREFIX}{CAMT054}"><BkToCstmrDbtCdtNtfctn>'
            f"{_group_header(m.seq_no, created, '')}")]
    for n, run in enumerate(runs, 1):
        out.append(f"<Ntfctn><Id>{n}</Id>{_account(run[0][0].account)}")
        out.extend(_entry(e, status) for e, status in run)
        out.append("</Ntfctn>")
    out.append("</BkToCstmrDbtCdtNtfctn></Document>")
    return "".join(out)


# -- decode ---------------------------------------------------------------------------------


_PENDING = frozenset({"PDNG", "FUTR"})   # announced, not yet (or not yet finally) booked


def _raw(el: Element) -> bytes:
    """An element's bytes as received (namespace declarations it relies on included)."""
    return etree.tostring(el, encoding="utf-8", with_tail=False)


def _status(ntry: Element, r: Reader) -> str:
    """The entry's status: ``<Sts>BOOK</Sts>`` up to .06, ``<Sts><Cd>BOOK</Cd></Sts>`` from .07."""
    t = r.t
    sts = first(ntry, t["Sts"])
    if sts is None:
        return ""
    return (text_at(sts, t["Cd"]) or text_at(sts, t["Prtry"]) or sts.text or "").strip()


def _detail(tx: Element, r: Reader, side: str, where: str, sign: int, currency: str
            ) -> base.TxDetail:
    """One ``TxDtls``: its own amount in the entry's currency (``Amt`` from .03 on,
    ``AmtDtls/TxAmt/Amt`` in every version; None when neither is in that currency, as in a
    foreign-currency transaction), references and counterparty."""
    t = r.t
    amount = None
    for el in (first(tx, t["Amt"]), at(tx, t["AmtDtls"], t["TxAmt"], t["Amt"])):
        if el is not None and (el.get("Ccy") or "").strip() == currency:
            amount = sign * r.amount(f"{where}/Amt", el)
            break
    refs = first(tx, t["Refs"])
    reference = (text_at(refs, t["AcctSvcrRef"]) or text_at(refs, t["EndToEndId"])
                 or text_at(refs, t["TxId"]) or text_at(refs, t["InstrId"]))
    pties = first(tx, t["RltdPties"])
    return base.TxDetail(
        reference=reference.strip(), amount=amount,
        counterparty_account=r.account_id("RltdPties", first(pties, t[side + "Acct"])),
        counterparty_name=r.party_name(first(pties, t[side])),
        counterparty_bank_code=r.agent_code(at(tx, t["RltdAgts"], t[side + "Agt"])),
        summary=" ".join(u.text or "" for u in children(first(tx, t["RmtInf"]), t["Ustrd"])),
        remark=text_at(tx, t["AddtlTxInf"]),
    )


def _read_entry(ntry: Element, account: str, r: Reader, where: str) -> tuple[str, base.Entry]:
    """(status, entry) of one ``Ntry``; the caller decides what the status makes of it."""
    t = r.t
    amount, currency = r.signed_money(f"{where}/Amt", ntry)
    status = _status(ntry, r)
    booked = r.date_choice(f"{where}/BookgDt", first(ntry, t["BookgDt"]))
    valued = r.date_choice(f"{where}/ValDt", first(ntry, t["ValDt"]))
    day = valued if valued is not None else booked
    if day is None:
        raise AdapterError(f"{where}: neither a value date nor a booking date")
    value_date = day.date() if isinstance(day, _dt.datetime) else day
    time = booked.timetz() if isinstance(booked, _dt.datetime) else _dt.time(0)
    side = "Cdtr" if amount < 0 else "Dbtr"
    sign = -1 if amount < 0 else 1
    txs = [tx for dtls in children(ntry, t["NtryDtls"]) for tx in children(dtls, t["TxDtls"])]
    details = tuple(_detail(tx, r, side, f"{where}/TxDtls[{i}]", sign, currency)
                    for i, tx in enumerate(txs, 1))
    tx = txs[0] if txs else None
    host = (text_at(ntry, t["AcctSvcrRef"]) or text_at(tx, t["Refs"], t["AcctSvcrRef"])
            or text_at(ntry, t["NtryRef"]))
    balance_after = None
    for data in children(tx, t["SplmtryData"]):
        found = first(first(data, t["Envlp"]), f"{{{LINK_NS}}}BalAftr")
        if found is not None:
            digits = v.minor_units(f"{where}/BalAftr", found.get("Ccy", ""), r.currencies)
            balance_after = v.parse_amount(f"{where}/BalAftr", found.text, digits)
            break
    reversal = text_at(ntry, t["RvslInd"]).strip() in ("true", "1")
    first_tx = details[0] if details else base.TxDetail()
    entry = base.Entry(
        account=account, host_seq_no=host, amount=amount, value_date=value_date, time=time,
        counterparty_account=first_tx.counterparty_account,
        counterparty_name=first_tx.counterparty_name,
        counterparty_bank_code=first_tx.counterparty_bank_code,
        balance_after=balance_after, summary=first_tx.summary,
        remark=text_at(ntry, t["AddtlNtryInf"]) or first_tx.remark,
        reversal=reversal, currency=currency,
        # Only a batch's details say more than the entry itself; a single one is in the entry.
        details=details if len(details) > 1 else (),
    )
    return status, entry


class _Parts:
    """What one report, statement or notification yields: booked and pending entries, and the
    parts that could not be read (kept with their bytes and the reason)."""

    def __init__(self, r: Reader, account: str) -> None:
        self.r, self.account = r, account
        self.entries: list[base.Entry] = []
        self.pending: list[base.Entry] = []
        self.problems: list[base.Problem] = []

    def problem(self, where: str, reason: str, el: Element | None) -> None:
        self.problems.append(base.Problem(where, reason, _raw(el) if el is not None else b""))

    def entry(self, ntry: Element, where: str) -> None:
        try:
            status, entry = _read_entry(ntry, self.account, self.r, where)
        except AdapterError as e:
            self.problem(where, str(e), ntry)
            return
        if status == "BOOK":
            self.entries.append(entry)
        elif status in _PENDING:
            self.pending.append(entry)
        else:   # INFO and anything unknown: never a movement
            self.problem(where, f"entry status {v.show(status)} is neither booked nor pending", ntry)


def _read_account(report: Element, r: Reader, where: str) -> tuple[str, str, str]:
    """(account, name, currency) of a report's ``Acct``; the currency is empty when absent."""
    t = r.t
    acct = first(report, t["Acct"])
    ccy = first(acct, t["Ccy"])
    currency = (ccy.text or "").strip() if ccy is not None else ""
    if currency:
        v.minor_units(f"{where}/Acct/Ccy", currency, r.currencies)
    account = r.account_id(f"{where}/Acct", acct)
    if not account:
        raise AdapterError(f"{where}/Acct: no account identification")
    return account, text_at(acct, t["Nm"]), currency


def _read_balance(bal: Element, r: Reader, where: str, seq_no: str, reply_to: str,
                  account: str, name: str) -> tuple[str, base.Balance]:
    t = r.t
    kind = at(bal, t["Tp"], t["CdOrPrtry"])
    status = (text_at(kind, t["Cd"]) or text_at(kind, t["Prtry"])).strip()
    balance, currency = r.signed_money(f"{where}/Amt", bal)
    available = balance
    for avail in children(bal, t["Avlbty"]):
        days = text_at(avail, t["Dt"], t["NbOfDays"]).strip()
        if days and int(days) == 0:
            available, other = r.signed_money(f"{where}/Avlbty/Amt", avail)
            if other != currency:
                raise AdapterError(f"{where}/Avlbty/Amt: currency {v.show(other)} differs from "
                                   f"the balance's {currency}")
            break
    overdraft = 0
    line = first(first(bal, t["CdtLine"]), t["Amt"])
    if line is not None:
        overdraft, other = r.money(f"{where}/CdtLine/Amt", line)
        if other != currency:
            raise AdapterError(f"{where}/CdtLine/Amt: currency {v.show(other)} differs from "
                               f"the balance's {currency}")
    when = r.date_choice(f"{where}/Dt", first(bal, t["Dt"]))
    as_of = when if isinstance(when, _dt.datetime) or when is None else _dt.datetime.combine(when, _dt.time(0))
    return status, base.Balance(seq_no=seq_no, reply_to=reply_to, account=account, balance=balance,
                                available=available, overdraft=overdraft, account_name=name,
                                status=status, as_of=as_of, currency=currency)


def decode_reports(doc: Element, r: Reader, definition: str, reply_to: str,
                   problems: tuple[base.Problem, ...] = ()
                   ) -> tuple[str, str, list[base.Message]]:
    """(MsgId, OrgnlBizQry/MsgId, messages) of a camt.052 or camt.053 document.

    Per report or statement: a Statement (always for camt.053; for camt.052 when it has
    entries, pending entries, unreadable parts or no balances) with the first OPBD and CLBD
    amounts as its opening and closing balances, then one Balance for every other ``Bal``
    (all of them when no Statement).  A balance or an entry that cannot be read becomes a
    :class:`~adapters.base.Problem` of the Statement.  ``problems`` are the schema check's:
    a part it set apart goes on its report's Statement, the document's own (part
    ``Document``, such as elements out of order) on the first message.
    """
    t = r.t
    statement = definition.startswith("camt.053")
    root = first(doc, t["BkToCstmrStmt" if statement else "BkToCstmrAcctRpt"])
    hdr = first(root, t["GrpHdr"])
    seq_no = v.serial("GrpHdr/MsgId", text_at(hdr, t["MsgId"]))
    query = text_at(hdr, t["OrgnlBizQry"], t["MsgId"])
    if query:
        reply_to = v.serial("OrgnlBizQry/MsgId", query)
    out: list[base.Message] = []
    for n, report in enumerate(children(root, t["Stmt" if statement else "Rpt"]), 1):
        where = f"{'Stmt' if statement else 'Rpt'}[{n}]"
        account, name, acct_currency = _read_account(report, r, where)
        parts = _Parts(r, account)
        # Parts the schema check set apart belong to the report they were in.
        parts.problems.extend(p for p in problems if p.part.startswith(where + "/"))
        balances = []
        for i, b in enumerate(children(report, t["Bal"]), 1):
            try:
                balances.append(_read_balance(b, r, f"{where}/Bal[{i}]", seq_no, reply_to, account,
                                              name))
            except AdapterError as e:
                parts.problem(f"{where}/Bal[{i}]", str(e), b)
        for i, e in enumerate(children(report, t["Ntry"]), 1):
            parts.entry(e, f"{where}/Ntry[{i}]")
        found = tuple(parts.problems)
        if statement or parts.entries or parts.pending or found or not balances:
            opening = closing = None
            rest = []
            for kind, balance in balances:
                if kind == OPENING and opening is None:
                    opening = balance
                elif kind == CLOSING and closing is None:
                    closing = balance
                else:
                    rest.append(balance)
            # The account's currency, else what its amounts say (the neutral default if none).
            said = [b.currency for b in (opening, closing) if b is not None]
            said += [b.currency for _, b in balances] + [e.currency for e in parts.entries + parts.pending]
            currency = acct_currency or (said[0] if said else "CNY")
            for kind, b in ((OPENING, opening), (CLOSING, closing)):
                if b is not None and b.currency != currency:
                    # One currency per statement's balances: the odd one stays a plain Balance.
                    rest.insert(0, b)
                    if kind == OPENING:
                        opening = None
                    else:
                        closing = None
            out.append(base.Statement(
                seq_no=seq_no, reply_to=reply_to, account=account, entries=tuple(parts.entries),
                opening_balance=opening.balance if opening else None,
                closing_balance=closing.balance if closing else None, currency=currency,
                pending=tuple(parts.pending), problems=found))
            out.extend(rest)
        else:
            out.extend(balance for _, balance in balances)
    return seq_no, reply_to, _with_document_problems(out, problems)


def _with_document_problems(out: list[base.Message], problems: tuple[base.Problem, ...]
                            ) -> list[base.Message]:
    """``out`` with the document's own problems (those of part ``Document``) on its first
    message, so each is stored and alerted once."""
    whole = tuple(p for p in problems if p.part == "Document")
    if whole and out:
        first_message = out[0]
        out[0] = replace(first_message, problems=whole + first_message.problems)  # type: ignore[arg-type]
    return out


def decode_notification(doc: Element, r: Reader, problems: tuple[base.Problem, ...] = ()
                        ) -> tuple[str, base.Movement]:
    """(MsgId, the Movement) of a camt.054: every entry of every notification, in order;
    pending entries apart, unreadable ones as problems."""
    t = r.t
    root = first(doc, t["BkToCstmrDbtCdtNtfctn"])
    seq_no = v.serial("GrpHdr/MsgId", text_at(root, t["GrpHdr"], t["MsgId"]))
    entries: list[base.Entry] = []
    pending: list[base.Entry] = []
    found: list[base.Problem] = list(problems)   # the document's own and the parts set apart
    for n, note in enumerate(children(root, t["Ntfctn"]), 1):
        where = f"Ntfctn[{n}]"
        try:
            account, _, _ = _read_account(note, r, where)
        except AdapterError as e:
            found.append(base.Problem(where, str(e), _raw(note)))
            continue
        parts = _Parts(r, account)
        for i, e in enumerate(children(note, t["Ntry"]), 1):
            parts.entry(e, f"{where}/Ntry[{i}]")
        entries.extend(parts.entries)
        pending.extend(parts.pending)
        found.extend(parts.problems)
    return seq_no, base.Movement(seq_no=seq_no, entries=tuple(entries), pending=tuple(pending),
                                 problems=tuple(found))
