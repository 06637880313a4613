"""The adapter contract and the neutral message vocabulary.

A bank adapter is a pure codec: it turns the neutral messages below into the
bytes of one bank protocol and back, and frames a byte stream into messages.
It never touches a socket, a clock or a database.  The gateway's link code
drives any adapter through :class:`Adapter` alone.

Every message has ``seq_no``: the sender's unique serial for that message.
Answers carry ``reply_to``: the ``seq_no`` of the request they answer.  For an
:class:`Instruction` the ``seq_no`` *is* the bank reference (bdc
``SendSeqNo``), reused unchanged on every resend.

Amounts are integer fen.  Dates are :class:`datetime.date`, times
:class:`datetime.time`.  Text is ``str``; an adapter whose wire charset cannot
carry a character raises :class:`AdapterError` at encode time.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import BinaryIO, ClassVar, Iterator, Protocol, Union, runtime_checkable

from adapters._frozen import quick_init

__all__ = [
    "AdapterError",
    "SignOn", "SignOnAnswer", "Heartbeat", "HeartbeatAnswer",
    "Instruction", "StatusQuery", "BalanceQuery", "Ack",
    "Receipt", "Result", "NotFound", "Entry", "Movement", "Balance", "Statement", "Problem", "TxDetail",
    "Message", "OUTBOUND", "INBOUND", "Framer", "Adapter", "decode_all", "check", "to_json", "from_json",
    "load_adapter", "iter_adapter_names", "max_document", "read_bounded",
]


class AdapterError(Exception):
    """Input that is not a valid message of the protocol, or a value the protocol cannot carry.

    The message is a one-line reason fit for a log and an operator.  Adapters
    raise nothing else on bad input.
    """


# -- link control (both directions) -------------------------------------------


@dataclass(frozen=True)
class SignOn:
    """Sign-in request (bdc BDC001).  ``node`` is the sender's node number."""

    seq_no: str
    node: str


@dataclass(frozen=True)
class SignOnAnswer:
    """Answer to :class:`SignOn`; ``ok`` False means the peer refused the session."""

    seq_no: str
    reply_to: str
    node: str
    ok: bool = True
    code: str = ""
    text: str = ""


@dataclass(frozen=True)
class Heartbeat:
    """Line probe (bdc SYS600); either side may send one."""

    seq_no: str
    node: str


@dataclass(frozen=True)
class HeartbeatAnswer:
    """Answer to :class:`Heartbeat`."""

    seq_no: str
    reply_to: str
    node: str


# -- gateway to bank ----------------------------------------------------------


@quick_init
@dataclass(frozen=True)
class Instruction:
    """A single credit transfer for the bank to execute (bdc BDC109).

    ``seq_no`` is the bank reference: unique forever, the same on every resend,
    and the key the bank dedupes on.
    """

    seq_no: str
    send_date: _dt.date
    centre_node: str          # e.g. "C52240": the instructing centre's node
    unit_no: str              # the centre's 15-digit institution code (bdc TxUnitNo)
    debit_account: str
    debit_name: str
    creditor_account: str
    creditor_name: str
    creditor_bank_code: str   # 12-digit CNAPS code
    creditor_personal: bool   # True: a person's account; False: a corporate one
    same_bank: bool           # creditor at the bank that holds the debit account
    amount: int               # fen, > 0
    purpose: str              # one of gateway.model.PURPOSES
    memo: str = ""
    reference: str = ""       # the centre's instruction id, returned in notices
    signature: bytes = b""    # detached signature where the protocol has a place for it


@dataclass(frozen=True)
class StatusQuery:
    """Ask for the outcome of an earlier instruction by its bank reference (bdc BDC110)."""

    seq_no: str
    ref: str                  # the Instruction.seq_no asked about
    ref_date: _dt.date        # its send_date


@dataclass(frozen=True)
class BalanceQuery:
    """Ask for an account's current balance (bdc BDC123)."""

    seq_no: str
    account: str


@dataclass(frozen=True)
class Ack:
    """The gateway's answer to a message the bank pushed (a Movement notice).

    Sent only after what it acknowledges is committed (promise G1).
    """

    seq_no: str
    reply_to: str
    ok: bool = True
    code: str = ""
    text: str = ""


# -- bank to gateway ----------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A part of a bank's document the adapter could not read, or a departure from the
    document's schema it tolerated; what was readable was decoded all the same.

    ``part`` names where (``Stmt[1]/Ntry[3]``, ``Document``); ``raw`` holds the part's bytes
    as received (empty when the problem is the whole document's), so it can be stored and
    alerted on.
    """

    part: str
    reason: str
    raw: bytes = b""


@dataclass(frozen=True)
class Receipt:
    """The bank has taken the instruction ``ref`` and is executing it; no outcome yet."""

    seq_no: str
    reply_to: str
    ref: str
    bank_seq_no: str = ""     # the settlement system's or bank's serial for the request
    problems: tuple[Problem, ...] = ()   # tolerated departures of the document it came in


@dataclass(frozen=True)
class Result:
    """The final outcome of instruction ``ref`` (as an answer to it or to a StatusQuery).

    A Result implies receipt.  ``host_seq_no`` is the bank host serial of the
    execution (empty on failure when the bank gave none).  A result the bank
    pushes after a Receipt is a late answer to the instruction: ``reply_to``
    is then ``ref``, and the gateway acknowledges it once committed.
    """

    seq_no: str
    reply_to: str
    ref: str
    succeeded: bool
    host_seq_no: str = ""
    bank_seq_no: str = ""
    code: str = ""
    text: str = ""
    problems: tuple[Problem, ...] = ()   # tolerated departures of the document it came in


@dataclass(frozen=True)
class NotFound:
    """Answer to a StatusQuery: the bank has no record of ``ref`` (never received)."""

    seq_no: str
    reply_to: str
    ref: str


@dataclass(frozen=True)
class TxDetail:
    """One transaction inside a bank's entry (an ISO 20022 ``TxDtls``): a batch entry has
    several.  ``amount`` is in minor units of the entry's currency, signed like the entry,
    None when the bank gave none for the detail."""

    reference: str = ""
    amount: int | None = None
    counterparty_account: str = ""
    counterparty_name: str = ""
    counterparty_bank_code: str = ""
    summary: str = ""
    remark: str = ""


@dataclass(frozen=True)
class Entry:
    """One account movement: a line of a notice or a statement.

    ``amount`` is signed: negative is a debit from ``account``; it is in minor units of
    ``currency`` (its ISO 4217 exponent: fen for CNY, yen for JPY, fils for BHD).
    ``details`` holds every transaction of a batch entry where the protocol reports them.
    """

    account: str
    host_seq_no: str
    amount: int
    value_date: _dt.date
    time: _dt.time
    counterparty_account: str = ""
    counterparty_name: str = ""
    counterparty_bank_code: str = ""
    balance_after: int | None = None
    summary: str = ""
    remark: str = ""
    reversal: bool = False
    currency: str = "CNY"
    details: tuple[TxDetail, ...] = ()


@dataclass(frozen=True)
class Movement:
    """Movements the bank pushed unasked (bdc SBDC100); answered with an :class:`Ack`.

    ``pending`` entries are announced, not booked: kept as facts, never booked.
    ``problems`` are the parts of the bank's document that could not be read.
    """

    seq_no: str
    entries: tuple[Entry, ...]
    pending: tuple[Entry, ...] = ()
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class Balance:
    """An account balance snapshot (answer to BalanceQuery, or pushed when ``reply_to`` is empty)."""

    seq_no: str
    reply_to: str
    account: str
    balance: int              # ledger balance, fen (may be negative)
    available: int
    overdraft: int = 0
    account_name: str = ""
    status: str = ""
    as_of: _dt.datetime | None = None
    currency: str = "CNY"
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class Statement:
    """A list of movements for a period (bdc BDC113 answer, camt.053)."""

    seq_no: str
    reply_to: str
    account: str
    entries: tuple[Entry, ...]
    opening_balance: int | None = None
    closing_balance: int | None = None
    currency: str = "CNY"                 # of the balances (each entry names its own)
    pending: tuple[Entry, ...] = ()       # announced, not booked: never booked
    problems: tuple[Problem, ...] = ()    # parts of the document that could not be read


Message = Union[
    SignOn, SignOnAnswer, Heartbeat, HeartbeatAnswer, Instruction, StatusQuery, BalanceQuery, Ack,
    Receipt, Result, NotFound, Movement, Balance, Statement,
]

OUTBOUND: tuple[type, ...] = (SignOn, Heartbeat, HeartbeatAnswer, Instruction, StatusQuery,
                              BalanceQuery, Ack)
"""Kinds the gateway sends to a bank."""

INBOUND: tuple[type, ...] = (SignOnAnswer, Heartbeat, HeartbeatAnswer, Receipt, Result, NotFound,
                             Movement, Balance, Statement)
"""Kinds a bank sends to the gateway."""


# -- the contract -------------------------------------------------------------


@runtime_checkable
class Framer(Protocol):
    """Cuts a byte stream into frames.  Fed arbitrary chunks; never sees a transport.

    ``feed`` returns the complete frames now available, each as the exact bytes
    received (header included), so they can be kept as evidence.  A framing
    violation (a lying or oversized length, a bad header) raises
    :class:`AdapterError`; the link must then close.
    """

    def feed(self, data: bytes) -> list[bytes]: ...


@runtime_checkable
class Adapter(Protocol):
    """One bank protocol.  Implementations are registered under the entry-point
    group ``hpf_gateway.adapters`` and instantiated with no arguments; one
    instance serves every link that speaks the protocol, so it keeps no
    per-connection state (that lives in the :class:`Framer`).

    ``max_frame`` is the largest frame body the adapter reads or writes; every
    reader of the adapter's input (framer, ``decode``, ``decode_document``, the
    CLI) holds at most that much of one message and refuses more at once.  An
    adapter whose bare documents (``decode_document``) may be larger than a frame
    says so with a ``max_document`` attribute (see :func:`max_document`).
    """

    name: ClassVar[str]
    max_frame: ClassVar[int]

    def framer(self) -> Framer:
        """A fresh framer for one connection."""

    def encode(self, message: Message, *, sender: str, receiver: str = "") -> bytes:
        """One complete frame (header included) carrying ``message``.

        ``sender`` and ``receiver`` are the two parties' node numbers, for
        protocols whose frames or heads name them.  Raises :class:`AdapterError` when a value cannot be
        carried (a character outside the charset, a field too long).
        """

    def decode(self, frame: bytes) -> Message:
        """The neutral message in one frame as returned by :meth:`Framer.feed`.

        Raises :class:`AdapterError` for anything that is not a well-formed,
        complete message of this protocol.
        """


def _plain(value: object) -> object:
    if isinstance(value, (_dt.date, _dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode("ascii")
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f: _plain(getattr(value, f)) for f in value.__dataclass_fields__}
    return value


def to_json(message: Message | Entry | Problem | TxDetail) -> dict[str, object]:
    """A neutral message as JSON-ready data: dates ISO 8601, bytes base64, amounts integer fen.

    Messages carry their kind (``{"kind": "Result", ...}``); entries do not.
    """
    out = _plain(message)
    assert isinstance(out, dict)
    if not isinstance(message, (Entry, Problem, TxDetail)):
        out = {"kind": type(message).__name__, **out}
    return out


def from_json(data: dict[str, object]) -> Message:
    """The neutral message :func:`to_json` made ``data`` from; ``ValueError`` for anything else.

    For our own records (a simulator's journal), not for input from outside:
    field values are converted by their declared types and not validated further.
    """
    import typing

    kinds = {k.__name__: k for k in (*OUTBOUND, *INBOUND)}
    kind = kinds.get(str(data.get("kind")))
    if kind is None:
        raise ValueError(f"not a neutral message kind: {data.get('kind')!r}")
    return _from_plain(kind, {k: v for k, v in data.items() if k != "kind"}, typing.get_type_hints)


def _from_plain(cls: type, data: dict[str, object], hints_of: object) -> object:
    import base64
    import types
    import typing

    hints = hints_of(cls)  # type: ignore[operator]

    def convert(tp: object, value: object) -> object:
        if value is None:
            return None
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (Union, types.UnionType):
            return convert(next(a for a in args if a is not type(None)), value)
        if typing.get_origin(tp) is tuple:
            return tuple(convert(args[0], v) for v in value)  # type: ignore[union-attr]
        if tp is _dt.datetime:
            return _dt.datetime.fromisoformat(str(value))
        if tp is _dt.date:
            return _dt.date.fromisoformat(str(value))
        if tp is _dt.time:
            return _dt.time.fromisoformat(str(value))
        if tp is bytes:
            return base64.b64decode(str(value))
        if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
            return _from_plain(tp, value, hints_of)  # type: ignore[arg-type]
        return value

    unknown = set(data) - set(hints)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**{k: convert(hints[k], v) for k, v in data.items()})


def decode_all(adapter: Adapter, frame: bytes) -> list[Message]:
    """Every neutral message in one frame.

    Most frames carry one message; a protocol whose documents may carry several
    (an ISO 20022 report with one report per account) gives its adapter a
    ``decode_all`` method, which is used when present.
    """
    many = getattr(adapter, "decode_all", None)
    if many is not None:
        return list(many(frame))
    return [adapter.decode(frame)]


def check(adapter: Adapter, message: Message, *, sender: str, receiver: str = "") -> None:
    """Raise the :class:`AdapterError` that ``adapter.encode`` would raise for ``message``.

    For refusing, before it is stored, what a link could never send.  An adapter that can
    say so without writing the frame gives itself a ``check`` method with ``encode``'s
    arguments, which is used when present; it need not check the frame-size limit.
    Otherwise the message is encoded and the frame dropped.
    """
    cheaper = getattr(adapter, "check", None)
    if cheaper is not None:
        cheaper(message, sender=sender, receiver=receiver)
    else:
        adapter.encode(message, sender=sender, receiver=receiver)


def max_document(adapter: Adapter) -> int:
    """The largest bare document ``adapter.decode_document`` is given: its ``max_document``, else ``max_frame``."""
    return int(getattr(adapter, "max_document", adapter.max_frame))


def read_bounded(stream: BinaryIO, limit: int) -> bytes:
    """All of ``stream`` when it holds at most ``limit`` bytes; else :class:`AdapterError`, having
    read no more than ``limit + 1`` bytes (so a device or a huge file is refused at once)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise AdapterError(f"more than {limit} bytes: larger than the largest document this adapter reads")
    return data


def iter_adapter_names() -> Iterator[str]:
    """Names of the adapters installed under the ``hpf_gateway.adapters`` entry-point group."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="hpf_gateway.adapters"):
        yield ep.name


def load_adapter(name: str) -> Adapter:
    """Instantiate the adapter registered as ``name``; ``KeyError`` names the known ones."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="hpf_gateway.adapters"):
        if ep.name == name:
            return ep.load()()
    raise KeyError(f"no adapter named {name!r}; installed: {', '.join(sorted(iter_adapter_names()))}")
