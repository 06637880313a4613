"""Per-adapter narrowing of the portable message set: the suite's one hook.

The conformance suite generates messages from one *portable* set (adapters/README.md,
"The portable set"): what every adapter is expected to carry.  An adapter that documents a
narrower range for some field says so here, in :data:`CONFORMANCE`, keyed by its registered
name: a few overrides of :class:`Profile` fields, each with the reason from the adapter's own
documentation.  An adapter that carries the whole portable set needs no entry.

An adapter installed from another package, which cannot edit this file, may instead give its
class a ``conformance`` attribute holding the same kind of dict; an entry here wins over it.

Profiles only ever *narrow* what is generated (or add characters that must be refused); they
never relax an assertion.  Unknown keys are an error, so a typo cannot silently disable one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from adapters import base
from tests.adapters.framing import Delimited, LengthField

__all__ = ["CONFORMANCE", "ISO_BALANCE_TYPES", "Profile", "profile_for"]


@dataclass(frozen=True)
class Profile:
    """What one adapter carries of the portable set (defaults: all of it).

    ``statement_balances``
        False: :class:`~adapters.base.Statement` opening/closing balances are always None.
    ``pushed_balance``
        False: :class:`~adapters.base.Balance` always answers a query (``reply_to`` non-empty).
    ``balance_as_of_required``
        True: ``Balance.as_of`` is always a datetime, never None.
    ``balance_statuses``
        Non-empty: ``Balance.status`` is one of these (else any portable status text).
    ``reserved_codes`` / ``reserved_texts``
        Values never generated for the ``code`` / ``text`` of SignOnAnswer, Ack and Result
        (the protocol gives them a meaning of its own).
    ``entry_text_forbidden`` / ``entry_text_reserved``
        Characters never generated in, and whole values never generated for, the free-text
        fields of an :class:`~adapters.base.Entry` (counterparty_name, summary, remark); a
        reserved value may also be refused in any identifier of an entry (account, host_seq_no,
        counterparty_account): in a bdc file line every column reads 'null' as empty.
    ``must_refuse``
        Characters ``encode`` must refuse in every text field, beyond those the suite derives
        itself (lone surrogates; what XML 1.0 cannot carry, for an XML body; what the declared
        wire encoding cannot encode).
    ``wire_encoding``
        The text encoding of the body, when the body does not declare it in an XML
        declaration (the suite reads the declaration otherwise; without either, UTF-8 is
        not assumed and the wrong-encoding attacks are skipped).
    ``framing``
        The frame's length field, when the suite cannot infer it (see
        :func:`tests.adapters.framing.infer_length_field`), or
        :class:`~tests.adapters.framing.Delimited` for one document per frame with no header.
    ``kinds``
        Non-empty: the neutral kinds the protocol carries; every other kind must be refused
        at encode (a protocol with no heartbeat, no push, no acknowledgement).
    ``narrow``
        A function taking a portable message to the form the protocol carries (a field it has
        no place for set to what decode reads back, an answer's serial that is the request's):
        every generated message passes through it, and the round trip is exact on the result.
        Text carriers and sentinel cases whose value it removes are left out.
    """

    statement_balances: bool = True
    pushed_balance: bool = True
    balance_as_of_required: bool = False
    balance_statuses: tuple[str, ...] = ()
    reserved_codes: frozenset[str] = frozenset()
    reserved_texts: frozenset[str] = frozenset()
    entry_text_forbidden: str = ""
    entry_text_reserved: frozenset[str] = frozenset()
    must_refuse: str = ""
    wire_encoding: str | None = None
    framing: LengthField | Delimited | None = None
    kinds: tuple[str, ...] = ()
    narrow: Callable[[Any], Any] | None = None


# ExternalBalanceType1Code values (ISO 20022 external code sets): what an iso20022 Balance's
# status means on that adapter (adapters/iso20022/__init__.py, "Balance").
ISO_BALANCE_TYPES: tuple[str, ...] = (
    "CLAV", "CLBD", "FWAV", "INFO", "ITAV", "ITBD", "OPAV", "OPBD", "PRCD", "XPCD",
)

def _bocb2e_narrow(m: Any) -> Any:
    """What bocb2e carries of a portable message (adapters/bocb2e/adapter.py docstring;
    docs/protocols/bocb2e.md, "Neutral messages")."""
    if isinstance(m, base.SignOn):
        return replace(m, node="")                               # b2e0001 names no node
    if isinstance(m, base.Instruction):                          # b2e0009 has no place for these
        return replace(m, centre_node="", unit_no="", creditor_personal=False, purpose="other",
                       reference="", signature=b"",
                       creditor_bank_code="" if m.same_bank else m.creditor_bank_code)
    if isinstance(m, base.StatusQuery):
        return replace(m, ref_date=dt.date.min)                  # b2e0007 asks by insid only
    if isinstance(m, base.SignOnAnswer):
        return replace(m, seq_no=m.reply_to, node="",            # an answer's serial is the trnid
                       code=m.code or ("" if m.ok else "E"))
    if isinstance(m, base.Receipt):
        return replace(m, seq_no=m.reply_to)
    if isinstance(m, base.Result):                               # one bank serial, obssid
        # A refused record always has an rspcod of its own: an empty one becomes "E".
        return replace(m, seq_no=m.reply_to, host_seq_no=m.bank_seq_no if m.succeeded else "",
                       code="" if m.succeeded else (m.code or "E"))
    if isinstance(m, base.Balance):                              # baldat is a date; no status
        as_of = None if m.as_of is None else dt.datetime.combine(m.as_of.date(), dt.time())
        return replace(m, seq_no=m.reply_to, status="", as_of=as_of)
    if isinstance(m, base.Statement):                            # no reversal flag; an empty page
        entries = tuple(replace(e, reversal=False) for e in m.entries)   # names no account
        return replace(m, seq_no=m.reply_to, entries=entries,
                       account=m.account if entries else "")
    return m


def _icbc_narrow(m: Any) -> Any:
    """What ICBC's CMS documents carry of a portable message (adapters/icbc/adapter.py
    docstring; docs/protocols/icbc.md, "Neutral messages")."""
    if isinstance(m, base.Instruction):                          # NC signs; no place for these
        return replace(m, centre_node="", unit_no="", creditor_personal=False, signature=b"",
                       creditor_bank_code="" if m.same_bank else m.creditor_bank_code)
    if isinstance(m, base.StatusQuery):
        return replace(m, ref_date=dt.date.min)                  # QPAYENT asks by QryfSeqno
    if isinstance(m, base.Receipt):
        return replace(m, seq_no=m.reply_to)                     # an answer's serial is fSeqno
    if isinstance(m, base.Result):                               # one serial, QrySerialNo
        return replace(m, seq_no=m.reply_to, host_seq_no=m.bank_seq_no if m.succeeded else "",
                       code="" if m.succeeded else (m.code or "Result6"))
    if isinstance(m, base.Balance):                              # Balance and UsableBalance only
        return replace(m, seq_no=m.reply_to, overdraft=0, account_name="", status="", as_of=None)
    if isinstance(m, base.Statement):                            # no reversal flag, no zero row
        entries = tuple(replace(e, reversal=False, amount=e.amount or 1) for e in m.entries)
        return replace(m, seq_no=m.reply_to, entries=entries)
    return m


def _digits(serial: str) -> str:
    """A serial as the 1-16 digits of a CCB REQUEST_SN (a stable digest of any other value)."""
    if serial.isascii() and serial.isdigit() and len(serial) <= 16:
        return serial
    return str(int.from_bytes(hashlib.sha256(serial.encode()).digest()[:8], "big") % 10 ** 16)


def _ccb_narrow(m: Any) -> Any:
    """What CCB's <TX> documents carry of a portable message (adapters/ccb/codec.py;
    docs/protocols/ccb.md, "Neutral messages"): REQUEST_SNs are 1-16 digits."""
    serials = {f: _digits(getattr(m, f)) for f in ("seq_no", "reply_to", "ref") if hasattr(m, f)}
    m = replace(m, **serials)
    if isinstance(m, base.Instruction):                          # 6W8010 has no place for these
        return replace(m, send_date=dt.date.min, centre_node="", unit_no="", debit_name="-",
                       creditor_personal=False, purpose="other", reference="", signature=b"",
                       creditor_bank_code="" if m.same_bank else m.creditor_bank_code)
    if isinstance(m, base.StatusQuery):
        return replace(m, ref_date=dt.date.min)                  # 6W1503 asks by REQUEST_SN1
    if isinstance(m, (base.Receipt, base.NotFound)):
        return replace(m, seq_no=m.reply_to)                     # an answer's serial is the request's
    if isinstance(m, base.Result):                               # DEAL_RESULT, one serial, no reason
        return replace(m, seq_no=m.reply_to, host_seq_no=m.bank_seq_no if m.succeeded else "",
                       code="" if m.succeeded else "DEAL_RESULT3")
    if isinstance(m, base.Balance):                              # BALANCE and BALANCE1 only
        return replace(m, seq_no=m.reply_to, overdraft=0, account_name="", status="", as_of=None)
    if isinstance(m, base.Statement):                            # 6WY101 rows: no reversal flag,
        entries = tuple(replace(e, reversal=False, remark="",    # remark or counterparty bank
                                counterparty_bank_code="") for e in m.entries)
        return replace(m, seq_no=m.reply_to, entries=entries)
    return m


CONFORMANCE: dict[str, dict[str, Any]] = {
    # adapters/bdc/codec.py docstring and codec.
    "bdc": {
        # BDC113 answers carry detail lines only: "bdc statements carry no opening/closing balance".
        "statement_balances": False,
        # BDC123 is an answer (its head must echo the request serial); bdc pushes no balance.
        "pushed_balance": False,
        # as_of travels as the answer's ReceiveDate/ReceiveTime, which are always written.
        "balance_as_of_required": True,
        # The generic codes and texts are written for an empty code/text and read back as empty.
        "reserved_codes": frozenset({"00000", "10000"}),
        "reserved_texts": frozenset({"成功", "失败"}),
        # Entries travel as '|'-separated file lines in which the literal 'null' means empty.
        "entry_text_forbidden": "|",
        "entry_text_reserved": frozenset({"null"}),
    },
    # adapters/bocb2e/adapter.py and docs/protocols/bocb2e.md: one document per HTTP body.
    "bocb2e": {
        "framing": Delimited(),
        # No heartbeat, acknowledgement, push or "no such transfer" code exists in the sources.
        "kinds": ("SignOn", "SignOnAnswer", "Instruction", "StatusQuery", "BalanceQuery",
                  "Receipt", "Result", "Balance", "Statement"),
        "narrow": _bocb2e_narrow,
        # rspcod: B001/B002 ok, B054/B059/B266 processing, B107/1033 not signed on; a refusal
        # must carry a code of its own.
        "reserved_codes": frozenset({"", "B001", "B002", "B054", "B059", "B266", "B107", "1033"}),
        "statement_balances": False,
        "pushed_balance": False,
    },
    # adapters/icbc/adapter.py and docs/protocols/icbc.md: one CMS document per frame.
    "icbc": {
        "framing": Delimited(),
        # NC has no sign-on, heartbeat, acknowledgement, push or "no such instruction" answer.
        "kinds": ("Instruction", "StatusQuery", "BalanceQuery", "Receipt", "Result", "Balance",
                  "Statement"),
        "narrow": _icbc_narrow,
        "statement_balances": False,
        "pushed_balance": False,
    },
    # adapters/ccb/codec.py and docs/protocols/ccb.md: one <TX> per connection.
    "ccb": {
        "framing": Delimited(),
        # No sign-on (every request carries the password), heartbeat or push; a Statement is
        # one 6WY101 page, with no opening/closing balance.
        "kinds": ("Instruction", "StatusQuery", "BalanceQuery", "Receipt", "Result", "NotFound",
                  "Balance", "Statement"),
        "narrow": _ccb_narrow,
        "pushed_balance": False,
        "statement_balances": False,
    },
    # adapters/iso20022/__init__.py, "Messages".
    "iso20022": {
        # "For this adapter Balance.status is the balance type"; camt.052 Bal needs Dt.
        "balance_statuses": ISO_BALANCE_TYPES,
        "balance_as_of_required": True,
        # NotFound is RJCT with Rsn/Prtry NOTFOUND, "so a Result may not use that code".
        "reserved_codes": frozenset({"NOTFOUND"}),
    },
}
"""Overrides of :class:`Profile` per registered adapter name (see the module docstring)."""


def profile_for(name: str, adapter: object) -> Profile:
    """The profile of adapter ``name``: :data:`CONFORMANCE` first, then the adapter class's
    ``conformance`` attribute, else the whole portable set.  Unknown keys raise ``TypeError``."""
    overrides: Mapping[str, Any] | None = CONFORMANCE.get(name)
    if overrides is None:
        overrides = getattr(type(adapter), "conformance", None) or {}
    known = {f.name for f in fields(Profile)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"conformance profile of adapter {name!r}: unknown keys {sorted(unknown)}; "
                        f"known: {sorted(known)}")
    values = dict(overrides)
    for key in ("reserved_codes", "reserved_texts", "entry_text_reserved"):
        if key in values:
            values[key] = frozenset(values[key])
    if "balance_statuses" in values:
        values["balance_statuses"] = tuple(values["balance_statuses"])
    if "kinds" in values:
        values["kinds"] = tuple(values["kinds"])
    return Profile(**values)
