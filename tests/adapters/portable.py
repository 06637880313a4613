"""The portable message set: Hypothesis strategies and fixed extremes for every neutral kind.

"Portable" means within what every adapter documents as carriable; adapters/README.md ("The
portable set") is the prose version of this module and must be kept in step with it.  A
:class:`~tests.adapters.profiles.Profile` narrows it for one adapter.

Values, in short: serials are 1-32 printable ASCII characters other than space and ``|``;
nodes six of ``A-Z 0-9``; accounts 1-32 of ``0-9 A-Z a-z -``; amounts integer fen up to
99,999,999,999.99 (signed where the field is); dates any :class:`datetime.date`; times and
date-times naive (the bank's local time) in whole seconds; text any character that GBK can
encode other than controls (C0, C1, DEL), at most: names 60 (not blank), memo/summary/remark
140, reference 35, code 32, text 256, account name 60, balance status 16.
"""

from __future__ import annotations

import datetime as dt
import string
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from adapters import base
from gateway.model import PURPOSES
from tests.adapters.profiles import Profile

__all__ = [
    "CEILING", "KINDS", "KIND_NAMES", "MAX_SIGNATURE", "PORTABLE_CHARS", "SENTINELS", "Portable",
    "TextCarrier",
]

CEILING = 99_999_999_999_99
"""The largest amount in the portable set: 99,999,999,999.99 in fen (a DECIMAL(13,2) in yuan)."""
MAX_SIGNATURE = 16 * 1024
"""The largest Instruction.signature in the portable set, in bytes."""

KINDS: tuple[type, ...] = tuple(dict.fromkeys(base.OUTBOUND + base.INBOUND))
"""Every neutral message kind, each once."""
KIND_NAMES: tuple[str, ...] = tuple(k.__name__ for k in KINDS)

NAME_LEN, MEMO_LEN, REFERENCE_LEN, CODE_LEN, TEXT_LEN = 60, 140, 35, 32, 256
ACCOUNT_NAME_LEN, STATUS_LEN, ENTRY_NAME_LEN, ENTRY_TEXT_LEN = 60, 16, 60, 140
SERIAL_LEN, ACCOUNT_LEN = 32, 32
IDENTIFIERS = ("seq_no", "reply_to", "ref", "bank_seq_no", "host_seq_no", "account",
               "debit_account", "creditor_account")
"""The identifier fields (serials and accounts) of the neutral messages."""

SERIAL_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "|")
NODE_CHARS = string.ascii_uppercase + string.digits
ACCOUNT_CHARS = string.ascii_letters + string.digits + "-"


def _portable(c: str) -> bool:
    if unicodedata.category(c) in ("Cc", "Cs") or c in "\ufffe\uffff":
        return False
    try:
        c.encode("gbk")
    except UnicodeEncodeError:
        return False
    return True


PORTABLE_CHARS: tuple[str, ...] = tuple(chr(c) for c in range(0x20, 0x10000) if _portable(chr(c)))
"""Every character the portable set's text may hold (GBK-encodable, no controls)."""

_CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)      # all in GBK
_MARKUP = st.sampled_from("<>&'\"]]>;# ")                              # what XML must escape
_CHAR = st.one_of(_CJK, st.sampled_from(PORTABLE_CHARS), _MARKUP,
                  st.characters(min_codepoint=0x20, max_codepoint=0x7E))


def _text(max_size: int, *, min_size: int = 0, forbidden: str = "") -> st.SearchStrategy[str]:
    """Portable text, now and then exactly ``max_size`` Chinese characters long."""
    char = _CHAR.filter(lambda c: c not in forbidden) if forbidden else _CHAR
    return st.one_of(st.text(char, min_size=min_size, max_size=max_size),
                     st.text(_CJK, min_size=max_size, max_size=max_size))


def _fill(pattern: str, size: int) -> str:
    """``pattern`` repeated to exactly ``size`` characters (for the fixed extremes)."""
    return (pattern * (size // len(pattern) + 1))[:size]


def _fixed(chars: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=chars, min_size=min_size, max_size=max_size)


SENTINELS = ("null", "NULL", "Null", "None", "nil", "-", "0")
"""Identifier values that legacy formats tend to read as "no value".  They are portable serials
and accounts, checked for every adapter by a fixed test (test_sentinel_identifiers_round_trip)
rather than left to chance, so the generated identifiers leave them out."""

serials = _fixed(SERIAL_CHARS, 1, SERIAL_LEN).filter(lambda s: s not in SENTINELS)
opt_serials = st.one_of(st.just(""), serials)
nodes = _fixed(NODE_CHARS, 6, 6)
accounts = _fixed(ACCOUNT_CHARS, 1, ACCOUNT_LEN).filter(lambda s: s not in SENTINELS)
opt_accounts = st.one_of(st.just(""), accounts)
bank_codes = _fixed(string.digits, 12, 12)
unit_nos = _fixed(string.digits, 15, 15)
positive = st.one_of(st.sampled_from([1, CEILING]), st.integers(1, CEILING))
signed = st.one_of(st.sampled_from([0, 1, -1, CEILING, -CEILING]), st.integers(-CEILING, CEILING))
dates = st.dates()
times = st.times().map(lambda t: t.replace(microsecond=0))
datetimes = st.datetimes().map(lambda d: d.replace(microsecond=0))


@st.composite
def _answers(draw: st.DrawFn, kind: type, codes: st.SearchStrategy[str],
             texts: st.SearchStrategy[str], more: dict[str, st.SearchStrategy[Any]]) -> Any:
    """A SignOnAnswer or Ack: an accepting answer carries no code of its own; a refusal may."""
    ok = draw(st.booleans())
    values = {name: draw(s) for name, s in more.items()}
    return kind(seq_no=draw(serials), reply_to=draw(serials), ok=ok,
                code="" if ok else draw(codes), text=draw(texts), **values)


@st.composite
def _answers_about(draw: st.DrawFn, kind: type, fields: dict[str, st.SearchStrategy[Any]]) -> Any:
    """A Receipt or Result: the answer to the instruction itself (or its outcome pushed late)
    has reply_to == ref; the answer to a StatusQuery has the query's serial as reply_to."""
    ref = draw(serials)
    reply_to = ref if draw(st.booleans()) else draw(serials.filter(lambda s: s != ref))
    values = {name: draw(s) for name, s in fields.items()}
    return kind(seq_no=draw(serials), reply_to=reply_to, ref=ref, **values)


class TextCarrier:
    """One free-text field of one kind: ``build(text)`` is a portable message with ``text``
    in that field and every other field fixed."""

    def __init__(self, label: str, build: Callable[[str], base.Message]) -> None:
        self.label = label
        self.build = build

    def __repr__(self) -> str:
        return f"TextCarrier({self.label})"


class Portable:
    """The portable set as narrowed by ``profile``: a strategy and two fixed extremes per kind."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        p = profile
        excluded_entry = p.entry_text_reserved
        self.names = _text(NAME_LEN, min_size=1).filter(lambda s: s.strip() != "")
        self.codes = _text(CODE_LEN).filter(lambda s: s not in p.reserved_codes)
        self.texts = _text(TEXT_LEN).filter(lambda s: s not in p.reserved_texts)
        self.entry_names = _text(ENTRY_NAME_LEN, forbidden=p.entry_text_forbidden).filter(
            lambda s: s not in excluded_entry)
        self.entry_texts = _text(ENTRY_TEXT_LEN, forbidden=p.entry_text_forbidden).filter(
            lambda s: s not in excluded_entry)
        self.statuses = (st.sampled_from(p.balance_statuses) if p.balance_statuses
                         else _text(STATUS_LEN))
        self.kinds: tuple[str, ...] = p.kinds or KIND_NAMES
        self.narrow: Callable[[Any], Any] = p.narrow or (lambda m: m)
        self._strategies: dict[str, st.SearchStrategy[Any]] = {
            "SignOn": st.builds(base.SignOn, seq_no=serials, node=nodes),
            "SignOnAnswer": self._answer(base.SignOnAnswer, node=nodes),
            "Heartbeat": st.builds(base.Heartbeat, seq_no=serials, node=nodes),
            "HeartbeatAnswer": st.builds(base.HeartbeatAnswer, seq_no=serials, reply_to=serials,
                                         node=nodes),
            "Instruction": self._instruction(),
            "StatusQuery": st.builds(base.StatusQuery, seq_no=serials, ref=serials, ref_date=dates),
            "BalanceQuery": st.builds(base.BalanceQuery, seq_no=serials, account=accounts),
            "Ack": self._answer(base.Ack),
            "Receipt": self._about(base.Receipt, bank_seq_no=opt_serials),
            "Result": self._about(base.Result, succeeded=st.booleans(), host_seq_no=opt_serials,
                                  bank_seq_no=opt_serials, code=self.codes, text=self.texts),
            "NotFound": self._not_found(),
            "Movement": st.builds(base.Movement, seq_no=serials,
                                  entries=st.lists(self.entries(), min_size=1, max_size=4).map(tuple)),
            "Balance": self._balance(),
            "Statement": self._statement(),
        }
        assert set(self._strategies) == set(KIND_NAMES)

    # -- strategies ---------------------------------------------------------------------

    def strategy(self, kind: str) -> st.SearchStrategy[Any]:
        """Portable messages of ``kind`` (a neutral class name), as the profile narrows them."""
        return self._strategies[kind].map(self.narrow)

    def _answer(self, kind: type, **more: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return _answers(kind, self.codes, self.texts, more)

    def _about(self, kind: type, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return _answers_about(kind, fields)

    def _not_found(self) -> st.SearchStrategy[base.NotFound]:
        # NotFound answers a StatusQuery: reply_to is the query's serial, never the reference.
        return st.tuples(serials, serials, serials).filter(lambda t: t[1] != t[2]).map(
            lambda t: base.NotFound(seq_no=t[0], reply_to=t[1], ref=t[2]))

    def _instruction(self) -> st.SearchStrategy[base.Instruction]:
        @st.composite
        def draw_one(draw: st.DrawFn) -> base.Instruction:
            same_bank = draw(st.booleans())
            # A same-bank transfer may leave the creditor's bank code empty; a cross-bank one not.
            code = draw(st.one_of(st.just(""), bank_codes) if same_bank else bank_codes)
            return base.Instruction(
                seq_no=draw(serials), send_date=draw(dates), centre_node=draw(nodes),
                unit_no=draw(unit_nos), debit_account=draw(accounts), debit_name=draw(self.names),
                creditor_account=draw(accounts), creditor_name=draw(self.names),
                creditor_bank_code=code, creditor_personal=draw(st.booleans()),
                same_bank=same_bank, amount=draw(positive),
                purpose=draw(st.sampled_from(sorted(PURPOSES))), memo=draw(_text(MEMO_LEN)),
                reference=draw(_text(REFERENCE_LEN)), signature=draw(st.binary(max_size=300)))
        return draw_one()

    def entries(self, account: st.SearchStrategy[str] = accounts) -> st.SearchStrategy[base.Entry]:
        """Portable entries; ``account`` fixes the account (a statement's)."""
        return st.builds(
            base.Entry, account=account, host_seq_no=serials, amount=signed, value_date=dates,
            time=times, counterparty_account=opt_accounts, counterparty_name=self.entry_names,
            counterparty_bank_code=st.one_of(st.just(""), bank_codes),
            balance_after=st.one_of(st.none(), signed), summary=self.entry_texts,
            remark=self.entry_texts, reversal=st.booleans())

    def _balance(self) -> st.SearchStrategy[base.Balance]:
        p = self.profile
        reply_to = serials if not p.pushed_balance else st.one_of(st.just(""), serials)
        as_of = datetimes if p.balance_as_of_required else st.one_of(st.none(), datetimes)
        # An overdraft is a credit line: never negative.
        return st.builds(base.Balance, seq_no=serials, reply_to=reply_to, account=accounts,
                         balance=signed, available=signed, overdraft=st.integers(0, CEILING),
                         account_name=_text(ACCOUNT_NAME_LEN), status=self.statuses, as_of=as_of)

    def _statement(self) -> st.SearchStrategy[base.Statement]:
        opening = st.one_of(st.none(), signed) if self.profile.statement_balances else st.none()

        @st.composite
        def draw_one(draw: st.DrawFn) -> base.Statement:
            account = draw(accounts)
            lines = draw(st.lists(self.entries(st.just(account)), max_size=4))
            return base.Statement(seq_no=draw(serials), reply_to=draw(serials), account=account,
                                  entries=tuple(lines), opening_balance=draw(opening),
                                  closing_balance=draw(opening))
        return draw_one()

    # -- fixed extremes -----------------------------------------------------------------

    def minimal(self, kind: str) -> base.Message:
        """The smallest portable message of ``kind``: 0.01 amounts, one-character serials and
        accounts, empty optional text, the earliest date."""
        return self._extreme(kind, small=True)

    def maximal(self, kind: str) -> base.Message:
        """The largest portable message of ``kind``: every text at its longest (Chinese and
        markup characters), the amount ceiling, 32-character serials, a 16 KiB signature,
        the latest date and time."""
        return self._extreme(kind, small=False)

    def _extreme(self, kind: str, *, small: bool) -> base.Message:
        p = self.profile

        def text(size: int, pattern: str = "公积金&<中心>'\"") -> str:
            return "" if small else _fill(pattern, size)

        def entry_text(size: int) -> str:
            return text(size, "".join(c for c in "张三&<李四>'|" if c not in p.entry_text_forbidden))

        serial = "1" if small else _fill("SQ&<>'\"20250304-", SERIAL_LEN)
        other = "2" if small else _fill("RP&<>'\"20250305-", SERIAL_LEN)
        query = "3" if small else _fill("QY&<>'\"20250306-", SERIAL_LEN)
        account = "6" if small else _fill("6217-0000ABCDxyz", ACCOUNT_LEN)
        node = "C00000" if small else "ZZ9999"
        day = dt.date(1, 1, 1) if small else dt.date(9999, 12, 31)
        moment = dt.time(0, 0, 0) if small else dt.time(23, 59, 59)
        amount = 1 if small else CEILING
        code = "E" if small else _fill("错误码E", CODE_LEN)
        name = "张" if small else _fill("中国建设银行股份有限公司&<分行>", NAME_LEN)
        entry = base.Entry(
            account=account, host_seq_no=serial, amount=-amount, value_date=day, time=moment,
            counterparty_account="" if small else account, counterparty_name=entry_text(ENTRY_NAME_LEN),
            counterparty_bank_code="" if small else "105100000017",
            balance_after=None if small else -CEILING, summary=entry_text(ENTRY_TEXT_LEN),
            remark=entry_text(ENTRY_TEXT_LEN), reversal=not small)
        entries = (entry,) if small else tuple(
            replace(entry, amount=amount if i % 2 else -amount, reversal=bool(i % 3)) for i in range(20))
        status = (p.balance_statuses[0] if p.balance_statuses
                  else ("" if small else _fill("冻结&<止付>", STATUS_LEN)))
        as_of = (dt.datetime(1, 1, 1) if small else dt.datetime(9999, 12, 31, 23, 59, 59))
        if small and not p.balance_as_of_required:
            as_of = None
        build: dict[str, Callable[[], base.Message]] = {
            "SignOn": lambda: base.SignOn(serial, node),
            "SignOnAnswer": lambda: base.SignOnAnswer(serial, other, node, ok=small, code="" if small else code,
                                                      text=text(TEXT_LEN)),
            "Heartbeat": lambda: base.Heartbeat(serial, node),
            "HeartbeatAnswer": lambda: base.HeartbeatAnswer(serial, other, node),
            "Instruction": lambda: base.Instruction(
                seq_no=serial, send_date=day, centre_node=node, unit_no="0" * 15 if small else "9" * 15,
                debit_account=account, debit_name=name, creditor_account=account, creditor_name=name,
                creditor_bank_code="" if small else "105100000017", creditor_personal=small,
                same_bank=small, amount=amount, purpose="withdrawal" if small else "other",
                memo=text(MEMO_LEN), reference=text(REFERENCE_LEN),
                signature=b"" if small else bytes(range(256)) * (MAX_SIGNATURE // 256)),
            "StatusQuery": lambda: base.StatusQuery(serial, other, day),
            "BalanceQuery": lambda: base.BalanceQuery(serial, account),
            "Ack": lambda: base.Ack(serial, other, ok=small, code="" if small else code, text=text(TEXT_LEN)),
            # The small answers answer the instruction itself (reply_to == ref), the large
            # ones a StatusQuery (reply_to is the query's serial).
            "Receipt": lambda: base.Receipt(serial, other if small else query, other,
                                            bank_seq_no="" if small else serial),
            "Result": lambda: base.Result(serial, other if small else query, other,
                                          succeeded=not small, host_seq_no="" if small else serial,
                                          bank_seq_no="" if small else serial,
                                          code="" if small else code, text=text(TEXT_LEN)),
            "NotFound": lambda: base.NotFound(serial, query, other),
            "Movement": lambda: base.Movement(serial, entries),
            "Balance": lambda: base.Balance(
                serial, "" if small and p.pushed_balance else other, account,
                balance=-amount, available=amount, overdraft=0 if small else CEILING,
                account_name=text(ACCOUNT_NAME_LEN), status=status, as_of=as_of),
            "Statement": lambda: base.Statement(
                serial, other, account, () if small else entries,
                opening_balance=None if small or not p.statement_balances else -CEILING,
                closing_balance=None if small or not p.statement_balances else CEILING),
        }
        return self.narrow(build[kind]())

    # -- text carriers --------------------------------------------------------------------

    def text_carriers(self) -> list[TextCarrier]:
        """Every free-text field of the portable set, each in an otherwise fixed message."""
        instruction = self.minimal("Instruction")
        assert isinstance(instruction, base.Instruction)
        entry = base.Entry("6", "1", 100, dt.date(2025, 3, 4), dt.time(9, 30))
        balance = self.minimal("Balance")
        out = [TextCarrier(f"Instruction.{f}", lambda t, f=f: replace(instruction, **{f: t}))
               for f in ("debit_name", "creditor_name", "memo", "reference")]
        out += [
            TextCarrier("SignOnAnswer.text", lambda t: base.SignOnAnswer("1", "2", "C00000", ok=False,
                                                                         code="E1", text=t)),
            TextCarrier("SignOnAnswer.code", lambda t: base.SignOnAnswer("1", "2", "C00000", ok=False,
                                                                         code=t)),
            TextCarrier("Ack.text", lambda t: base.Ack("1", "2", ok=False, code="E1", text=t)),
            TextCarrier("Ack.code", lambda t: base.Ack("1", "2", ok=False, code=t)),
            TextCarrier("Result.code", lambda t: base.Result("1", "2", "2", False, code=t)),
            TextCarrier("Result.text", lambda t: base.Result("1", "2", "2", False, code="E1", text=t)),
            TextCarrier("Balance.account_name", lambda t: replace(balance, account_name=t)),
        ]
        if not self.profile.balance_statuses:
            out.append(TextCarrier("Balance.status", lambda t: replace(balance, status=t)))
        out += [TextCarrier(f"Entry.{f}", lambda t, f=f: base.Movement("1", (replace(entry, **{f: t}),)))
                for f in ("counterparty_name", "summary", "remark")]
        if self.profile.kinds or self.profile.narrow:
            # A statement carries entries where no movement does: the same fields, there.
            if "Movement" not in self.kinds and "Statement" in self.kinds:
                out += [TextCarrier(f"Statement.entries.{f}", lambda t, f=f: base.Statement(
                    "1", "2", "6", (replace(entry, **{f: t}),))) for f in
                    ("counterparty_name", "summary", "remark")]
            probe = "张三&<李四>"
            kept = []
            for carrier in out:
                built = carrier.build(probe)
                if type(built).__name__ in self.kinds and _holds(self.narrow(built), probe):
                    kept.append(TextCarrier(carrier.label,
                                            lambda t, b=carrier.build: self.narrow(b(t))))
            out = kept
        return out

    # -- identifier sentinels ---------------------------------------------------------------

    def sentinel_cases(self) -> list[tuple[str, base.Message, bool]]:
        """(label, message, may_refuse) with each of :data:`SENTINELS` in each identifier field
        (serials and accounts) of the portable set, every other field as in the minimal
        message.  ``may_refuse`` is True where the profile reserves the value (encode may then
        refuse it, but never alter it)."""
        builders: dict[str, Callable[[str], base.Message]] = {}
        for kind in KIND_NAMES:
            m = self.minimal(kind)
            for f in IDENTIFIERS:
                if hasattr(m, f):
                    builders[f"{kind}.{f}"] = lambda v, m=m, f=f: replace(m, **{f: v})
        entry = base.Entry("6", "1", -100, dt.date(2025, 3, 4), dt.time(9, 30),
                           counterparty_account="7")
        for f in ("account", "host_seq_no", "counterparty_account"):
            builders[f"Movement.entries[0].{f}"] = (
                lambda v, f=f: base.Movement("1", (replace(entry, **{f: v}),)))
            builders[f"Statement.entries[0].{f}"] = (
                lambda v, f=f: base.Statement("1", "2", v if f == "account" else entry.account,
                                              (replace(entry, **{f: v}),)))
        reserved = self.profile.entry_text_reserved
        cases = [(f"{label}={value}", build(value),
                  ".entries[0]." in label and value in reserved)
                 for label, build in builders.items() for value in SENTINELS]
        if not (self.profile.kinds or self.profile.narrow):
            return cases
        # Only cases the profile's protocol carries, with the sentinel still in its field.
        out = []
        for label, message, may_refuse in cases:
            if type(message).__name__ not in self.kinds:
                continue
            narrowed = self.narrow(message)
            path, value = label.split("=", 1)
            if _field(narrowed, path.split(".", 1)[1]) == value:
                out.append((label, narrowed, may_refuse))
        return out


def _holds(message: Any, text: str) -> bool:
    """Whether ``text`` is the value of some field of ``message`` or of one of its entries."""
    for name in getattr(message, "__dataclass_fields__", {}):
        value = getattr(message, name)
        if value == text or (isinstance(value, tuple) and any(_holds(e, text) for e in value)):
            return True
    return False


def _field(message: Any, path: str) -> Any:
    """The value at ``path`` (``ref``, ``entries[0].account``) of ``message``."""
    for part in path.split("."):
        if part.endswith("]"):
            name, index = part[:-1].split("[")
            message = getattr(message, name)[int(index)]
        else:
            message = getattr(message, part)
    return message
