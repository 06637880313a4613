"""The gateway's domain values: money, instructions, states and event kinds.

Everything here is a frozen value with no I/O.  External input (JSON from a
centre) is turned into these values by :func:`parse_instruction`, which names
every bad field instead of stopping at the first one.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters._frozen import quick_init

__all__ = [
    "FieldError",
    "InvalidInput",
    "Money",
    "parse_amount",
    "format_amount",
    "Creditor",
    "Debtor",
    "COLLECTION_PURPOSES",
    "Instruction",
    "State",
    "FINAL_STATES",
    "PURPOSES",
    "parse_instruction",
    "parse_signed_amount",
    "Booking",
    "parse_booking",
    "mask_account",
    "mask_numbers",
    "canonical_json",
    "deceptive_character",
]


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of an external input."""

    field: str
    reason: str


class InvalidInput(ValueError):
    """External input was refused; ``errors`` names every bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.reason}" for e in errors))
        self.errors = errors


# -- money -------------------------------------------------------------------

# Money travels as a string with at most two decimals and no sign, exponent,
# grouping or whitespace.  Anything else is refused, never rounded.
_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,14})(?:\.([0-9]{1,2}))?")

Money = int
"""An amount of CNY as an integer number of fen (0.01 CNY)."""


def parse_amount(text: Any, ceiling_fen: int | None = None) -> int:
    """Parse a positive CNY amount given as a string into fen.

    Raises ``ValueError`` with a reason a centre can act on.  Floats, JSON
    numbers, exponents, negative values, zero and more than two decimals are
    refused; so is anything above ``ceiling_fen``.
    """
    if not isinstance(text, str):
        raise ValueError("must be a string such as \"1234.56\", not a number")
    m = _AMOUNT.fullmatch(text)
    if m is None:
        if re.fullmatch(r"[0-9]+\.[0-9]{3,}", text):
            raise ValueError("more than two decimals")
        raise ValueError("not a plain decimal amount with at most two decimals")
    yuan, frac = m.group(1), (m.group(2) or "")
    fen = int(yuan) * 100 + int(frac.ljust(2, "0") or "0")
    if fen <= 0:
        raise ValueError("must be greater than zero")
    if ceiling_fen is not None and fen > ceiling_fen:
        raise ValueError(f"above the per-instruction ceiling of {format_amount(ceiling_fen)}")
    return fen


def parse_signed_amount(text: Any, ceiling_fen: int | None = None) -> int:
    """Like :func:`parse_amount`, but a leading ``-`` marks a debit (negative fen)."""
    if isinstance(text, str) and text.startswith("-"):
        return -parse_amount(text[1:], ceiling_fen)
    return parse_amount(text, ceiling_fen)


def format_amount(fen: int) -> str:
    """Render fen as the canonical decimal string (``123456`` -> ``"1234.56"``)."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def mask_account(account: str | None) -> str:
    """Hide all but the last four characters of an account number for logs."""
    if not account:
        return ""
    return "*" * max(len(account) - 4, 0) + account[-4:]


# A run of 8 or more digits standing alone (not inside a word such as a host serial "H9582...").
_LONG_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]{8,}(?![0-9A-Za-z])")


def mask_numbers(text: str) -> str:
    """``text`` with every stand-alone run of 8 or more digits masked as :func:`mask_account` does.

    For free text written for people (an alert's subject and summary) that
    may name account numbers among other things: in logs, any long number is
    hidden rather than risk a full account number.
    """
    return _LONG_NUMBER.sub(lambda m: mask_account(m.group()), text)


# -- instructions ------------------------------------------------------------


class State(str, enum.Enum):
    """Where an instruction is in its lifecycle (docs/architecture.md, "Model and lifecycle")."""

    RECEIVED = "received"
    SENT = "sent"
    ACCEPTED = "accepted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"
    REJECTED = "rejected"


FINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.REJECTED})

PURPOSES = frozenset(
    {"withdrawal", "loan_disbursement", "allocation", "deposit_placement", "refund", "fee", "other"}
)
COLLECTION_PURPOSES = frozenset({"contribution", "loan_repayment", "other"})
"""Purposes of a collection (money into the centre's account): an employer's contribution,
a borrower's repayment by direct debit, anything else."""
KINDS = frozenset({"transfer", "collection"})

_INSTRUCTION_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_BANK_CODE = re.compile(r"[0-9]{12}")
_ACCOUNT = re.compile(r"[0-9A-Za-z-]{1,32}")
_APPROVAL = re.compile(r"[\x21-\x7e]{1,64}")
_FIELDS = frozenset(
    {"instruction_id", "kind", "debit_account", "creditor", "amount", "purpose", "memo",
     "approval_ref", "requested_date"}
)
_CREDITOR_FIELDS = frozenset({"account", "name", "bank_code"})
_COLLECTION_FIELDS = frozenset(
    {"instruction_id", "kind", "credit_account", "debtor", "amount", "purpose", "memo",
     "approval_ref", "requested_date"}
)
_DEBTOR_FIELDS = frozenset({"account", "name", "bank_code", "agreement_no"})
_AGREEMENT = re.compile(r"[\x21-\x7e]{1,64}")
# C0 and C1 controls, DEL, and lone surrogates (which JSON can smuggle in as \\uD800).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Text that displays other than it reads: bidirectional controls (LRM, RLM, ALM, the embeddings,
# overrides and isolates) and zero-width or invisible characters (ZWSP, ZWNJ, ZWJ, WJ, the
# invisible operators, BOM).  A creditor name or memo with one could show a bank clerk or a
# supervisor something else than what the bytes say.
_DECEPTIVE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_SUSPECT = re.compile(f"[{_CONTROL.pattern[1:-1]}{_DECEPTIVE.pattern[1:-1]}]")
"""Either of the two: a value without one needs neither scan."""


def deceptive_character(text: str) -> str | None:
    """Why ``text`` may display other than it reads (its first bidirectional control or
    zero-width character, with its position), or None when it has none."""
    m = _DECEPTIVE.search(text)
    if m is None:
        return None
    return f"contains U+{ord(m.group()):04X} at position {m.start()}: bidirectional controls and " \
           "zero-width characters are refused"


# One encoder each for every call: json.dumps with options builds a new JSONEncoder each time,
# which cost as much as encoding the short values most calls pass (a bank id, a reference, an
# item of a batch's answer).  An encoder keeps no state between calls.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: sorted keys, no spaces, non-ASCII kept as is."""
    return _CANONICAL.encode(value)


def compact_json(value: Any) -> str:
    """``value`` as compact JSON text (no spaces, non-ASCII kept as is, keys in their order)."""
    return _COMPACT.encode(value)


@quick_init
@dataclass(frozen=True)
class Creditor:
    """The payee of an instruction."""

    account: str
    name: str
    bank_code: str  # 12-digit CNAPS code


@dataclass(frozen=True)
class Debtor:
    """The payer of a collection, debited under the multi-party agreement ``agreement_no``."""

    account: str
    name: str
    bank_code: str      # 12-digit CNAPS code
    agreement_no: str   # bdc ConAgrNo


@quick_init
@dataclass(frozen=True)
class Instruction:
    """A centre's instruction as validated; ``(centre_id, instruction_id)`` is unique.

    A ``transfer`` debits the centre's ``debit_account`` and pays ``creditor``.  A
    ``collection`` debits ``debtor`` (then ``debit_account`` is the debtor's account) and
    credits the centre's account ``creditor.account`` (its name and bank code are the
    register's, so ``creditor`` carries the account only).  :attr:`account` is the centre's
    own account either way: the one whose bank executes the instruction.
    """

    centre_id: str
    instruction_id: str
    kind: str
    debit_account: str
    creditor: Creditor
    amount: Money
    purpose: str
    memo: str
    approval_ref: str | None
    requested_date: _dt.date
    debtor: Debtor | None = None

    @property
    def account(self) -> str:
        """The centre's own account: debited by a transfer, credited by a collection."""
        return self.creditor.account if self.kind == "collection" else self.debit_account

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON form: what a centre sent, normalised."""
        if self.kind == "collection":
            assert self.debtor is not None
            d = self.debtor
            return {
                "instruction_id": self.instruction_id,
                "kind": self.kind,
                "credit_account": self.creditor.account,
                "debtor": {"account": d.account, "name": d.name, "bank_code": d.bank_code,
                           "agreement_no": d.agreement_no},
                "amount": format_amount(self.amount),
                "purpose": self.purpose,
                "memo": self.memo,
                "approval_ref": self.approval_ref,
                "requested_date": self.requested_date.isoformat(),
            }
        return {
            "instruction_id": self.instruction_id,
            "kind": self.kind,
            "debit_account": self.debit_account,
            "creditor": {"account": self.creditor.account, "name": self.creditor.name,
                         "bank_code": self.creditor.bank_code},
            "amount": format_amount(self.amount),
            "purpose": self.purpose,
            "memo": self.memo,
            "approval_ref": self.approval_ref,
            "requested_date": self.requested_date.isoformat(),
        }

    def canonical(self) -> str:
        """:meth:`to_json` as canonical JSON text (sorted keys, no spaces, UTF-8 as is).

        The stored body, the fingerprint and the journal payload are all made
        of this one string, computed once per instruction.
        """
        text = self.__dict__.get("_canonical")
        if text is None:
            text = canonical_json(self.to_json())
            object.__setattr__(self, "_canonical", text)
        return text

    def fingerprint(self) -> str:
        """A digest of the canonical body: the same id with another body is a conflict."""
        return hashlib.sha256(self.canonical().encode("utf-8")).hexdigest()

    @classmethod
    def from_json(cls, centre_id: str, data: Mapping[str, Any]) -> "Instruction":
        """Rebuild from :meth:`to_json` output (trusted, already validated)."""
        if data["kind"] == "collection":
            debtor = Debtor(**data["debtor"])
            return cls(
                centre_id=centre_id, instruction_id=data["instruction_id"], kind="collection",
                debit_account=debtor.account, creditor=Creditor(data["credit_account"], "", ""),
                amount=parse_amount(data["amount"]), purpose=data["purpose"], memo=data["memo"],
                approval_ref=data["approval_ref"],
                requested_date=_dt.date.fromisoformat(data["requested_date"]), debtor=debtor)
        return cls(
            centre_id=centre_id,
            instruction_id=data["instruction_id"],
            kind=data["kind"],
            debit_account=data["debit_account"],
            creditor=Creditor(**data["creditor"]),
            amount=parse_amount(data["amount"]),
            purpose=data["purpose"],
            memo=data["memo"],
            approval_ref=data["approval_ref"],
            requested_date=_dt.date.fromisoformat(data["requested_date"]),
        )


def _unknown(data: Mapping[str, Any], known: frozenset[str], prefix: str = "") -> list[FieldError]:
    """An error for each field of ``data`` that is not one of ``known``, in name order (the
    common case, none, is one subset test of the keys)."""
    if data.keys() <= known:
        return []
    return [FieldError(prefix + k, "unknown field") for k in sorted(set(data) - known)]


def _text(errors: list[FieldError], data: Mapping[str, Any], key: str, *, prefix: str = "",
          required: bool = True, pattern: re.Pattern[str] | None = None, max_len: int | None = None,
          what: str = "") -> str | None:
    name = prefix + key
    if key not in data or data[key] is None:
        if required:
            errors.append(FieldError(name, "is required"))
        return None
    value = data[key]
    if not isinstance(value, str):
        errors.append(FieldError(name, "must be a string"))
        return None
    if max_len is not None and len(value) > max_len:
        errors.append(FieldError(name, f"longer than {max_len} characters"))
        return None
    if pattern is not None and not pattern.fullmatch(value):
        errors.append(FieldError(name, what or "has a bad format"))
        return None
    if _SUSPECT.search(value) is None:  # the common case: one scan for both kinds below
        return value
    if _CONTROL.search(value):
        errors.append(FieldError(name, "contains control characters"))
        return None
    lie = deceptive_character(value)
    if lie is not None:
        errors.append(FieldError(name, lie))
        return None
    return value


def parse_instruction(centre_id: str, data: Any, *, ceiling_fen: int, today: _dt.date) -> Instruction:
    """Validate one instruction body from a centre.

    Raises :class:`InvalidInput` naming every bad field; unknown fields are
    errors too, so a typo never silently drops a value.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput([FieldError("", "the instruction must be a JSON object")])
    kind = data.get("kind", "transfer")
    if kind == "collection":
        return _parse_collection(centre_id, data, ceiling_fen=ceiling_fen, today=today)
    errors: list[FieldError] = _unknown(data, _FIELDS)
    instruction_id = _text(errors, data, "instruction_id", pattern=_INSTRUCTION_ID,
                           what="must be 1-32 of A-Z a-z 0-9 _ -")
    # isinstance first: a JSON array or object is unhashable and must be refused, not raise.
    if not isinstance(kind, str) or kind not in KINDS:
        errors.append(FieldError("kind", f"must be one of {sorted(KINDS)}"))
    debit = _text(errors, data, "debit_account", pattern=_ACCOUNT, what="must be 1-32 letters or digits")
    creditor: Creditor | None = None
    raw_creditor = _party(errors, data, "creditor", _CREDITOR_FIELDS)
    if raw_creditor is not None:
        c_account, c_name, c_bank = raw_creditor
        if c_account and c_name and c_bank:
            creditor = Creditor(c_account, c_name, c_bank)
    purpose = data.get("purpose")
    if not isinstance(purpose, str) or purpose not in PURPOSES:
        errors.append(FieldError("purpose", f"must be one of {', '.join(sorted(PURPOSES))}"))
    amount, memo, approval_ref, requested = _common(errors, data, ceiling_fen, today)
    if errors:
        raise InvalidInput(errors)
    assert instruction_id and debit and creditor and amount is not None
    return Instruction(centre_id, instruction_id, kind, debit, creditor, amount, purpose, memo,
                       approval_ref, requested)


def _party(errors: list[FieldError], data: Mapping[str, Any], key: str,
           fields: frozenset[str]) -> tuple[str | None, str | None, str | None] | None:
    """The account, name and bank code of party ``key`` (a transfer's creditor, a collection's
    debtor), each error recorded under ``key.field``; None when ``key`` is not an object."""
    raw = data.get(key)
    if not isinstance(raw, Mapping):
        errors.append(FieldError(key, "is required and must be an object"))
        return None
    prefix = key + "."
    errors.extend(_unknown(raw, fields, prefix))
    account = _text(errors, raw, "account", prefix=prefix, pattern=_ACCOUNT, what="must be 1-32 letters or digits")
    name = _text(errors, raw, "name", prefix=prefix, max_len=60)
    if name is not None and not name.strip():
        errors.append(FieldError(prefix + "name", "must not be blank"))
        name = None
    bank = _text(errors, raw, "bank_code", prefix=prefix, pattern=_BANK_CODE, what="must be a 12-digit CNAPS code")
    return account, name, bank


def _common(errors: list[FieldError], data: Mapping[str, Any], ceiling_fen: int,
            today: _dt.date) -> tuple[int | None, str, str | None, _dt.date]:
    """amount, memo, approval_ref and requested_date, read as every kind reads them."""
    amount: int | None = None
    if "amount" not in data:
        errors.append(FieldError("amount", "is required"))
    else:
        try:
            amount = parse_amount(data["amount"], ceiling_fen)
        except ValueError as e:
            errors.append(FieldError("amount", str(e)))
    memo = _text(errors, data, "memo", required=False, max_len=140) or ""
    approval_ref = _text(errors, data, "approval_ref", required=False, pattern=_APPROVAL,
                         what="must be 1-64 printable ASCII characters")
    requested = today
    if data.get("requested_date") is not None:
        raw_date = data["requested_date"]
        try:
            if not isinstance(raw_date, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw_date):
                raise ValueError
            requested = _dt.date.fromisoformat(raw_date)
        except ValueError:
            errors.append(FieldError("requested_date", "must be a date YYYY-MM-DD"))
        else:
            if requested < today:
                errors.append(FieldError("requested_date", "is in the past"))
    return amount, memo, approval_ref, requested


def _parse_collection(centre_id: str, data: Mapping[str, Any], *, ceiling_fen: int,
                      today: _dt.date) -> Instruction:
    """Validate a ``collection`` body: ``credit_account`` (the centre's, checked against the
    register by the intake), ``debtor`` (account, name, bank_code, agreement_no), amount,
    purpose (:data:`COLLECTION_PURPOSES`), memo, approval_ref, requested_date."""
    errors: list[FieldError] = _unknown(data, _COLLECTION_FIELDS)
    instruction_id = _text(errors, data, "instruction_id", pattern=_INSTRUCTION_ID,
                           what="must be 1-32 of A-Z a-z 0-9 _ -")
    credit = _text(errors, data, "credit_account", pattern=_ACCOUNT, what="must be 1-32 letters or digits")
    debtor: Debtor | None = None
    raw = data.get("debtor")
    party = _party(errors, data, "debtor", _DEBTOR_FIELDS)
    if party is not None:
        d_account, d_name, d_bank = party
        d_agreement = _text(errors, raw, "agreement_no", prefix="debtor.", pattern=_AGREEMENT,
                            what="must be 1-64 printable ASCII characters (the multi-party agreement number)")
        if d_account and d_name and d_bank and d_agreement:
            debtor = Debtor(d_account, d_name, d_bank, d_agreement)
    if credit is not None and debtor is not None and credit == debtor.account:
        errors.append(FieldError("debtor.account", "is the credited account itself"))
    purpose = data.get("purpose")
    if not isinstance(purpose, str) or purpose not in COLLECTION_PURPOSES:
        errors.append(FieldError("purpose", "must be one of " + ", ".join(sorted(COLLECTION_PURPOSES))
                                 + " for a collection"))
    amount, memo, approval_ref, requested = _common(errors, data, ceiling_fen, today)
    if errors:
        raise InvalidInput(errors)
    assert instruction_id and credit and debtor and amount is not None and isinstance(purpose, str)
    return Instruction(centre_id, instruction_id, "collection", debtor.account, Creditor(credit, "", ""),
                       amount, purpose, memo, approval_ref, requested, debtor)


# -- bookings ----------------------------------------------------------------

_BOOKING_FIELDS = frozenset({"booking_id", "instruction_id", "host_seq_no", "account", "amount",
                             "voucher_no", "booked_on"})
_SERIAL = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Booking:
    """A centre's accounting voucher for a result or a movement: the third way of matching.

    Exactly one of ``instruction_id`` (a result of the centre's instruction)
    and ``host_seq_no`` (a movement the bank reported) says what it books.
    ``amount`` is signed fen: negative for a debit of ``account``.
    """

    centre_id: str
    booking_id: str
    instruction_id: str | None
    host_seq_no: str | None
    account: str
    amount: int
    voucher_no: str
    booked_on: _dt.date

    def to_json(self) -> dict[str, Any]:
        return {"booking_id": self.booking_id, "instruction_id": self.instruction_id,
                "host_seq_no": self.host_seq_no, "account": self.account,
                "amount": format_amount(self.amount), "voucher_no": self.voucher_no,
                "booked_on": self.booked_on.isoformat()}

    def fingerprint(self) -> str:
        return hashlib.sha256(canonical_json(self.to_json()).encode("utf-8")).hexdigest()


def parse_booking(centre_id: str, data: Any, *, ceiling_fen: int) -> Booking:
    """Validate a booking body from a centre; :class:`InvalidInput` names every bad field."""
    if not isinstance(data, Mapping):
        raise InvalidInput([FieldError("", "the booking must be a JSON object")])
    errors: list[FieldError] = _unknown(data, _BOOKING_FIELDS)
    booking_id = _text(errors, data, "booking_id", pattern=_INSTRUCTION_ID, what="must be 1-32 of A-Z a-z 0-9 _ -")
    instruction_id = _text(errors, data, "instruction_id", required=False, pattern=_INSTRUCTION_ID,
                           what="must be 1-32 of A-Z a-z 0-9 _ -")
    host_seq_no = _text(errors, data, "host_seq_no", required=False, pattern=_SERIAL,
                        what="must be 1-64 of A-Z a-z 0-9 _ -")
    if (instruction_id is None) == (host_seq_no is None) and "instruction_id" not in {e.field for e in errors}:
        errors.append(FieldError("instruction_id", "give exactly one of instruction_id and host_seq_no"))
    account = _text(errors, data, "account", pattern=_ACCOUNT, what="must be 1-32 letters or digits")
    amount: int | None = None
    if "amount" not in data:
        errors.append(FieldError("amount", "is required"))
    else:
        try:
            amount = parse_signed_amount(data["amount"], ceiling_fen)
        except ValueError as e:
            errors.append(FieldError("amount", str(e)))
    voucher_no = _text(errors, data, "voucher_no", pattern=_SERIAL, what="must be 1-64 of A-Z a-z 0-9 _ -")
    booked_on: _dt.date | None = None
    raw_date = data.get("booked_on")
    if not isinstance(raw_date, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw_date):
        errors.append(FieldError("booked_on", "must be a date YYYY-MM-DD"))
    else:
        try:
            booked_on = _dt.date.fromisoformat(raw_date)
        except ValueError:
            errors.append(FieldError("booked_on", "must be a date YYYY-MM-DD"))
    if errors:
        raise InvalidInput(errors)
    assert booking_id and account and amount is not None and voucher_no and booked_on
    return Booking(centre_id, booking_id, instruction_id, host_seq_no, account, amount, voucher_no, booked_on)
