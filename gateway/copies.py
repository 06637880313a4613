"""A copy of a journal event: the one definition the gateway writes and the ledger reads.

(Over 600 lines on purpose: the copy, its JSON, its validation per kind and its signature input are
one definition, read by the gateway, the ledger and the matcher alike; split, they would drift.)

**The copy.**  One JSON object per journal event, with exactly the fields
:data:`SIGNED_FIELDS` plus ``signature``; a field without a value is
``null``, never left out:

- ``gateway`` (the sender's ``hpf://gateway/NAME``), ``seq`` (its journal
  seq), ``event_id``, ``hash`` (the journal row's hash: carried for the
  record, not recomputed by the ledger; ``hpf-gateway verify`` checks the
  gateway's chain);
- ``kind`` (:data:`KINDS`), ``centre_id``, ``instruction_id``, ``bank_id``,
  ``account``, ``state`` (an instruction state, for ``instruction.state``),
  ``created_us`` (microseconds since the epoch, UTC);
- ``payload``: the journal's JSON text as stored (a string, parsed by the
  reader); ``raw``: the bank's own frame in canonical base64, with its
  ``adapter``;
- ``signature_alg`` and ``signature`` (base64): over :func:`signing_input`,
  the copy's content -- the copy without ``signature`` and ``batch`` as
  canonical JSON (sorted keys, no whitespace, non-ASCII as itself) -- for a
  copy signed alone; over its batch's Merkle root for a copy signed in a
  batch, which then carries ``batch`` (root, count, its index and inclusion
  path: :mod:`gateway.signing` defines both).  The forwarder signs in
  batches; the ledger reads both forms, so copies signed alone before
  batches existed (stored, or still in a gateway's backlog) stay readable.

**A batch arrives whole and in order.**  The copies of one batch come in one
request, together, index 0 to count - 1 (:func:`batch_break`): a batch
reordered or cut short refuses the first copy out of place (or the first of a
short batch), so nothing from there on is stored.  One copy altered in a batch
fails only its own path; the others still verify.

The writer (:func:`copy_of`, the gateway's forwarder) writes only that form
(and ``batch`` when it signs in batches).
The reader (:func:`read_envelope`, :func:`read_copy`, the ledger's ingest and
its matcher) is strict about the envelope and about every payload field the
ledger relies on, and tolerant of payload fields it does not read: a
payload may carry more than is listed here (a manual resolution's
``proposed_by``/``confirmed_by``, say) and is still read.

**Refused is not forged.**  The ledger reads a copy in two steps, the
*envelope* (:func:`read_envelope`: the field set, the sender, its place in
the sender's journal -- ``seq``, ``event_id``, ``hash`` -- and the signature
input) and the *content* (:func:`read_content`: kind, state, identifiers,
payload, the bank's frame).  What a failure does depends on what still holds:

- **Refused whole** (nothing stored, nothing after it in the batch stored,
  the gateway sends it again and stays on it: that is the alarm): an
  envelope that does not read, a signature that does not verify
  (``forged-copy``), a copy claiming another gateway, an event id already
  stored with other content (``forged-copy``) or a seq out of the sender's
  journal order (the ledger's store checks those two), and a bank frame
  that contradicts the copy (``forged-copy``).  Such a copy is not the
  gateway's, or not in its journal's order, or not what the bank said:
  keeping it would let it into the ledger's chain as if it were a fact.
- **Stored as refused** (:class:`Unreadable`): the envelope reads, the
  signature verifies, the copy is in the sender's order, but the content
  does not read (an unknown kind or state, a payload field the ledger relies
  on missing or malformed, an adapter the ledger does not have).  The
  gateway signed it, so it is a fact about what the gateway journalled: the
  ledger keeps it verbatim in its own hash chain (``verify`` walks it and
  re-checks its signature), raises ``copy-refused``, answers
  ``refused-stored``, and the copies behind it are stored as usual.

Pure: no I/O, no reactor.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters._frozen import quick_init
from gateway.model import State, format_amount, parse_amount
from gateway.signing import BatchProof, canonical
from gateway.tls import IDENTITY_NAME

__all__ = [
    "SIGNED_FIELDS", "FIELDS", "KINDS", "STATES", "MAX_PAYLOAD", "MAX_REFUSED_RAW", "ACCOUNT",
    "copy_of", "signing_input", "Envelope", "Copy", "Unreadable", "Refusal", "CopyError",
    "read", "read_envelope", "read_copy", "read_content", "check_raw", "signed_fen", "batch_break",
    "batch_proof_of",
]

SIGNED_FIELDS = ("gateway", "seq", "event_id", "kind", "centre_id", "instruction_id", "bank_id",
                 "account", "state", "created_us", "payload", "raw", "adapter", "hash", "signature_alg")
"""Every field of a copy but ``signature`` and ``batch``: its content, what the gateway signs (alone, or as
a Merkle leaf of its batch)."""
FIELDS = frozenset(SIGNED_FIELDS) | {"signature", "batch"}
"""Every field a copy may have: ``batch`` only on a copy signed in a batch."""
KINDS = ("instruction.state", "bank.movement", "bank.balance", "booking", "bank.movement_pending",
         "bank.unreadable", "bank.file", "bank.refused", "centre.refused", "gateway.clock_step",
         "gateway.restored")
"""``bank.movement_pending``: an entry the bank announced and has not booked (never matched as a
movement); ``bank.unreadable``: a part of a bank's document that could not be read, its bytes as
``raw``; ``bank.file``: a file exchanged with a bank (host-to-host), its bytes as ``raw``;
``bank.refused``: a whole message a bank link refused (it did not decode; the link went on),
its SHA-256 and size in the payload and, up to :data:`MAX_REFUSED_RAW` bytes, the bytes as ``raw``;
``centre.refused``: the same of a message a centre's bdc software sent to the gateway's centre
listener (``gateway/centre_bdc.py``), with ``centre_id`` instead of ``bank_id``;

``gateway.clock_step``: the gateway's wall clock was stepped by ``step_us`` (its ``before_us``: the
time it would have shown without the step); every event after it is stamped on the stepped clock
(:mod:`gateway.clock`); ``gateway.restored``: the store was restored from a backup that ended at
journal seq ``backup_seq``, and the journal jumps ``skip`` seqs past it (``hpf-gateway restore``)."""
MAX_REFUSED_RAW = 64 * 1024
"""The most bytes of a refused message kept as ``raw``; a longer one is kept as its hash only."""

#: Kinds whose ``raw`` is the bank's whole frame, checked against the copy by :func:`check_raw`.
FRAME_KINDS = frozenset({"instruction.state", "bank.movement", "bank.balance", "bank.movement_pending"})
STATES = frozenset(s.value for s in State)
MAX_PAYLOAD = 1024 * 1024

# One pattern per kind of identifier, as the gateway's own config and intake write them.
EVENT_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
CENTRE = re.compile(r"[A-Za-z0-9_-]{1,16}")
INSTRUCTION = re.compile(r"[A-Za-z0-9_-]{1,32}")
BANK = re.compile(r"[A-Z0-9]{1,16}")
ACCOUNT = re.compile(r"[0-9A-Za-z-]{1,32}")
SERIAL = re.compile(r"[A-Za-z0-9_.-]{1,64}")   # bank references and host serials, as banks write them
ADAPTER = re.compile(r"[a-z0-9_]{1,32}")
HEX64 = re.compile(r"[0-9a-f]{64}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?")
_INT64 = 2**63 - 1
_MAX_FEN = 10 ** 17
_MAX_TEXT = 1024

signing_input = canonical
"""A copy's content: what its signature covers when signed alone, its Merkle leaf when signed in
a batch (:func:`gateway.signing.canonical`)."""


# -- writing ---------------------------------------------------------------------


def copy_of(row: Mapping[str, Any], gateway: str, adapter: str | None) -> dict[str, Any]:
    """The unsigned copy of one journal row (``signature_alg`` and ``signature`` are the signer's)."""
    raw = row.get("raw")
    return {
        "gateway": gateway, "seq": row["seq"], "event_id": row["event_id"], "kind": row["kind"],
        "centre_id": row["centre_id"], "instruction_id": row["instruction_id"], "bank_id": row["bank_id"],
        "account": row["account"], "state": row["state"], "created_us": row["created_us"],
        "payload": row["payload"], "raw": base64.b64encode(raw).decode("ascii") if raw else None,
        "adapter": adapter if raw else None, "hash": row["hash"],
    }


# -- reading ---------------------------------------------------------------------


class CopyError(ValueError):
    """A copy's content is not what this module defines; the message names the first bad field."""


@dataclass(frozen=True)
class Refusal:
    """A copy refused whole (see the module docstring); ``forged`` when a forged-copy alert is due."""

    event_id: str
    reason: str
    forged: bool = False


@dataclass(frozen=True)
class Envelope:
    """What a copy says about itself: sender, place in the sender's journal, signature.

    ``signed`` is :func:`signing_input` of the document; ``document`` is the
    copy as received; ``batch`` its batch proof when it was signed in a batch.
    """

    gateway: str
    seq: int
    event_id: str
    hash: str
    signature: str
    signature_alg: str
    signed: bytes = field(repr=False)
    document: Mapping[str, Any] = field(repr=False, compare=False)
    batch: BatchProof | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Unreadable:
    """A well-signed copy whose content the ledger cannot read: stored as refused, alerted."""

    envelope: Envelope
    reason: str

    @property
    def event_id(self) -> str:
        return self.envelope.event_id


@quick_init
@dataclass(frozen=True)
class Copy:
    """A copy whose every field the ledger relies on is valid; the matcher's fact.

    ``payload`` is the parsed payload; the rest are the copy's fields, with
    ``raw`` decoded and ``host_seq_no`` the bank serial it carries (for trails).
    """

    gateway: str
    seq: int
    event_id: str
    kind: str
    centre_id: str | None
    instruction_id: str | None
    bank_id: str | None
    account: str | None
    state: str | None
    created_us: int
    payload: Mapping[str, Any]
    payload_text: str = field(default="", repr=False, compare=False)
    raw: bytes | None = field(default=None, repr=False, compare=False)
    adapter: str | None = field(default=None, compare=False)
    hash: str = field(default="", compare=False)
    signature: str | None = field(default=None, repr=False, compare=False)
    signature_alg: str | None = field(default=None, compare=False)
    host_seq_no: str | None = field(default=None, compare=False)
    signed: bytes = field(default=b"", repr=False, compare=False)
    batch: BatchProof | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_copy(cls, doc: Any) -> "Copy":
        """:func:`read_copy` (raises :class:`CopyError`)."""
        return read_copy(doc)


def _bad(reason: str) -> CopyError:
    return CopyError(f"malformed copy: {reason}")


def _shown(doc: Any) -> str:
    event_id = doc.get("event_id") if isinstance(doc, Mapping) else None
    return event_id if isinstance(event_id, str) and EVENT_ID.fullmatch(event_id) else "?"


_ENVELOPE_FIELDS = FIELDS - {"batch"}
_CONTENT_FIELDS = frozenset(SIGNED_FIELDS)


def _fields(doc: Any, *, signature: bool) -> None:
    if not isinstance(doc, Mapping):
        raise _bad("a copy is a JSON object")
    want = _ENVELOPE_FIELDS if signature else _CONTENT_FIELDS
    if want <= doc.keys() <= FIELDS:
        return
    missing = sorted(want - set(doc))
    unknown = sorted(set(doc) - FIELDS)
    if missing or unknown:
        parts = ([f"missing field(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
        raise _bad("; ".join(parts))


def read_envelope(doc: Any, *, expected_alg: str) -> Envelope | Refusal:
    """The envelope of one received copy, or why it is refused whole.  Pure."""
    shown = _shown(doc)
    try:
        _fields(doc, signature=True)
        gateway = doc["gateway"]
        if not isinstance(gateway, str) or not IDENTITY_NAME.fullmatch(gateway):
            raise _bad("gateway is not a gateway name")
        if shown == "?":
            raise _bad("event_id is not valid")
        seq = _int(doc, "seq", "", minimum=1, maximum=_INT64)
        gateway_hash = doc["hash"]
        if not isinstance(gateway_hash, str) or not HEX64.fullmatch(gateway_hash):
            raise _bad("hash must be 64 lowercase hex digits")
        signature = doc["signature"]
        if not isinstance(signature, str) or not 0 < len(signature) <= 512:
            raise _bad("signature must be base64 text")
        if doc["signature_alg"] != expected_alg:
            raise _bad(f"signature_alg must be {expected_alg!r}, the one configured for this gateway")
        batch = _batch(doc)
        try:
            signed = signing_input(doc)
        except (TypeError, ValueError):  # not JSON values only, or lone surrogates
            raise _bad("a field holds a value with no canonical JSON form") from None
    except CopyError as e:
        return Refusal(shown, "malformed: " + str(e).removeprefix("malformed copy: "))
    assert seq is not None
    return Envelope(gateway, seq, shown, gateway_hash, signature, expected_alg, signed, doc, batch)


def _batch(doc: Mapping[str, Any]) -> BatchProof | None:
    if "batch" not in doc:
        return None
    try:
        return BatchProof.parse(doc["batch"])
    except ValueError as e:
        raise _bad(str(e)) from None


def batch_proof_of(doc: Any) -> BatchProof | None:
    """A received copy's batch proof, or None when it has no readable one (:func:`read_envelope`
    refuses a copy whose ``batch`` does not read; an envelope it reads has this proof)."""
    proof = doc.get("batch") if isinstance(doc, Mapping) else None
    try:
        return BatchProof.parse(proof) if proof is not None else None
    except ValueError:
        return None


def batch_break(docs: Sequence[Any], proofs: Sequence[BatchProof | None] | None = None) -> tuple[int, str] | None:
    """The first place where the batches in one request are not whole and in order, and why;
    None when they all are.

    Consecutive copies with the same ``batch.root`` are one batch; it must run from index 0
    to ``count - 1`` with none missing, repeated or moved, and a root may not come back after
    another batch.  The position named is the first copy out of place, or the first copy of
    a batch cut short (nothing after the first break is stored, so one is enough).  Copies
    without a (readable) ``batch`` are not batches here: :func:`read_envelope` judges them.
    ``proofs``: each copy's :func:`batch_proof_of`, when the caller has them already (the
    ledger's checks read them with the envelopes); read from ``docs`` otherwise.  Pure.
    """
    seen: set[str] = set()
    root: str | None = None
    start = expected = count = 0
    if proofs is None:
        proofs = [batch_proof_of(doc) for doc in docs]
    for i, b in enumerate(proofs):
        if b is not None and b.root == root:
            if b.index != expected:
                return i, f"out of its batch's order: index {b.index} where {expected} was due"
            expected += 1
            continue
        if root is not None and expected != count:
            return start, f"its batch of {count} copies arrived with only {expected}: cut short"
        root = None
        if b is None:
            continue
        if b.root in seen:
            return i, "its batch already came earlier in this request: out of order"
        if b.index != 0:
            return i, f"out of its batch's order: index {b.index} where 0 was due"
        seen.add(b.root)
        root, start, expected, count = b.root, i, 1, b.count
    if root is not None and expected != count:
        return start, f"its batch of {count} copies arrived with only {expected}: cut short"
    return None


def read(doc: Any, *, expected_alg: str) -> Copy | Unreadable | Refusal:
    """A received copy read in both steps (the signature is the caller's to verify, on
    ``signed``, before trusting either of the first two answers)."""
    env = read_envelope(doc, expected_alg=expected_alg)
    if isinstance(env, Refusal):
        return env
    try:
        return read_content(env)
    except CopyError as e:
        return Unreadable(env, str(e))


def read_copy(doc: Any) -> Copy:
    """Parse and validate a whole copy (envelope shape and content; the signature is the caller's).

    Raises :class:`CopyError` naming the first bad field.  ``signature`` may
    be absent (an unsigned copy, as :func:`copy_of` writes it).
    """
    _fields(doc, signature=False)
    gateway = _text(doc, "gateway", "", pattern=IDENTITY_NAME)
    if _text(doc, "event_id", "", pattern=EVENT_ID) is None:
        raise _bad("event_id is not valid")
    seq = _int(doc, "seq", "", minimum=1, maximum=_INT64)
    gateway_hash = _text(doc, "hash", "", pattern=HEX64)
    signature = doc.get("signature")
    if signature is not None and not isinstance(signature, str):
        raise _bad("signature must be base64 text")
    alg = doc["signature_alg"]
    if alg is not None and not isinstance(alg, str):
        raise _bad("signature_alg must be a string")
    assert gateway is not None and seq is not None and gateway_hash is not None
    return read_content(Envelope(gateway, seq, doc["event_id"], gateway_hash, signature or "", alg or "",
                                 b"", doc, _batch(doc)))


def read_content(env: Envelope) -> Copy:
    """The content of a copy whose envelope was read (raises :class:`CopyError`)."""
    doc, gateway, seq, gateway_hash = env.document, env.gateway, env.seq, env.hash
    event_id = env.event_id
    kind = doc["kind"]
    if kind not in KINDS:
        raise _bad(f"kind must be one of {', '.join(KINDS)}")
    centre_id = _text(doc, "centre_id", "", pattern=CENTRE, optional=True)
    instruction_id = _text(doc, "instruction_id", "", pattern=INSTRUCTION, optional=True)
    bank_id = _text(doc, "bank_id", "", pattern=BANK, optional=True)
    account = _text(doc, "account", "", pattern=ACCOUNT, optional=True)
    state = doc["state"]
    if state is not None and state not in STATES:
        raise _bad(f"state must be one of {', '.join(sorted(STATES))} or null")
    created_us = _int(doc, "created_us", "", minimum=1, maximum=_INT64)
    payload_text = doc["payload"]
    if not isinstance(payload_text, str) or len(payload_text) > MAX_PAYLOAD:
        raise _bad("payload must be the JSON text as stored (a string of at most 1 MiB)")
    payload = _decode(payload_text)
    raw: bytes | None = None
    if doc["raw"] is not None:
        text = doc["raw"]
        if not isinstance(text, str) or len(text) > 2 * MAX_PAYLOAD:
            raise _bad("raw must be base64 text of at most 1 MiB of bytes")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("raw is not valid base64") from None
        if base64.b64encode(raw).decode("ascii") != text:
            raise _bad("raw is not canonical base64")
    adapter = _text(doc, "adapter", "", pattern=ADAPTER, optional=True)

    if kind == "instruction.state":
        if centre_id is None or instruction_id is None or state is None or bank_id is None:
            raise _bad("an instruction.state copy needs centre_id, instruction_id, bank_id and state")
        _check_instruction(state, instruction_id, account, payload)
    elif kind in ("bank.movement", "bank.balance", "bank.movement_pending", "bank.unreadable", "bank.file",
                  "bank.refused"):
        if state is not None:
            raise _bad(f"a {kind} copy has no state")
        p_bank = _text(payload, "bank", "payload.", pattern=BANK, optional=True)
        if bank_id is None and p_bank is None:
            raise _bad(f"a {kind} copy needs bank_id")
        if bank_id is not None and p_bank is not None and p_bank != bank_id:
            raise _bad("payload.bank differs from bank_id")
        if kind == "bank.unreadable":
            _check_unreadable(payload)
        elif kind == "bank.refused":
            _check_refused(payload, raw)
        elif kind == "bank.file":
            _check_file(payload, raw)
        else:
            if _text(payload, "account", "payload.", pattern=ACCOUNT) != account and account is not None:
                raise _bad("payload.account differs from account")
            (_check_balance if kind == "bank.balance" else _check_movement)(payload)
    elif kind == "centre.refused":
        if centre_id is None or bank_id is not None or state is not None:
            raise _bad("a centre.refused copy needs centre_id, and has no bank_id or state")
        p_centre = _text(payload, "centre", "payload.", pattern=CENTRE, optional=True)
        if p_centre is not None and p_centre != centre_id:
            raise _bad("payload.centre differs from centre_id")
        _check_refused(payload, raw)
    elif kind == "gateway.restored":
        if (centre_id, instruction_id, bank_id, account, state, raw) != (None,) * 6:
            raise _bad("a gateway.restored copy names nothing but the restore")
        _int(payload, "backup_seq", "payload.", minimum=0, maximum=_INT64)
        _int(payload, "skip", "payload.", minimum=1, maximum=_INT64)
    elif kind == "gateway.clock_step":
        if (centre_id, instruction_id, bank_id, account, state, raw) != (None,) * 6:
            raise _bad("a gateway.clock_step copy names nothing but the step")
        step = _int(payload, "step_us", "payload.", minimum=-_INT64, maximum=_INT64)
        _int(payload, "before_us", "payload.", minimum=1, maximum=_INT64)
        if not step:
            raise _bad("payload.step_us must not be 0")
    else:  # booking
        if centre_id is None:
            raise _bad("a booking copy needs centre_id")
        if state is not None:
            raise _bad("a booking copy has no state")
        _check_booking(payload)
    assert created_us is not None
    return Copy(gateway=gateway, seq=seq, event_id=event_id, kind=kind, centre_id=centre_id,
                instruction_id=instruction_id, bank_id=bank_id, account=account, state=state,
                created_us=created_us, payload=payload, payload_text=payload_text, raw=raw, adapter=adapter,
                hash=gateway_hash, signature=env.signature or None, signature_alg=env.signature_alg or None,
                host_seq_no=_host_seq_no(kind, payload), signed=env.signed, batch=env.batch)


def _decode(text: str) -> dict[str, Any]:
    from gateway.web import strict_json  # duplicate keys, NaN, floats refused as for every body

    try:
        value = strict_json(text.encode("utf-8"))
    except Exception:
        raise _bad("payload is not valid JSON") from None
    if not isinstance(value, dict):
        raise _bad("payload must be a JSON object")
    return value


def _host_seq_no(kind: str, payload: Mapping[str, Any]) -> str | None:
    value: Any = None
    if kind in ("bank.movement", "booking"):
        value = payload.get("host_seq_no")
    elif kind == "instruction.state" and isinstance(payload.get("result"), Mapping):
        value = payload["result"].get("host_seq_no")
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


# -- fields ----------------------------------------------------------------------


def _int(d: Mapping[str, Any], key: str, where: str, *, minimum: int | None = None,
         maximum: int = _MAX_FEN - 1, optional: bool = False) -> int | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"{where}{key} must be an integer")
    if minimum is not None and v < minimum:
        raise _bad(f"{where}{key} must be at least {minimum}")
    if abs(v) > maximum:
        raise _bad(f"{where}{key} is out of range")
    return v


def _text(d: Mapping[str, Any], key: str, where: str, *, pattern: re.Pattern[str] | None = None,
          optional: bool = False, empty: bool = False, max_len: int = _MAX_TEXT) -> str | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise _bad(f"{where}{key} must be a string")
    if v == "" and empty:
        return v
    if len(v) > max_len:
        raise _bad(f"{where}{key} is longer than {max_len} characters")
    if pattern is not None and not pattern.fullmatch(v):
        raise _bad(f"{where}{key} has a bad format")
    return v


def _obj(d: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    v = d.get(key)
    if not isinstance(v, dict):
        raise _bad(f"{where}{key} must be an object")
    return v


def signed_fen(text: str) -> int:
    """A signed money string ("-1234.56") in fen; the sign is the only addition to parse_amount."""
    if text.startswith("-"):
        return -parse_amount(text[1:])
    return parse_amount(text)


def _check_instruction(state: str, instruction_id: str, account: str | None, p: Mapping[str, Any]) -> None:
    _text(p, "bank_ref", "payload.", pattern=SERIAL, optional=True)
    if state in ("received", "rejected"):
        body = _obj(p, "instruction", "payload.")
        w = "payload.instruction."
        if _text(body, "instruction_id", w, pattern=INSTRUCTION) != instruction_id:
            raise _bad("payload.instruction.instruction_id differs from instruction_id")
        # The copy's account is the centre's: debited by a transfer, credited by a collection
        # (whose payer, the debtor, is the counterparty).
        collection = body.get("kind") == "collection"
        own = "credit_account" if collection else "debit_account"
        if _text(body, own, w, pattern=ACCOUNT) != account and account is not None:
            raise _bad(f"payload.instruction.{own} differs from account")
        party = "debtor" if collection else "creditor"
        cp = _obj(body, party, w)
        _text(cp, "account", f"{w}{party}.", pattern=ACCOUNT)
        _text(cp, "name", f"{w}{party}.", max_len=200, empty=True)
        _text(cp, "bank_code", f"{w}{party}.", max_len=32, empty=True)
        if collection:
            _text(cp, "agreement_no", f"{w}{party}.", max_len=64)
        try:
            parse_amount(body.get("amount"))
        except ValueError as e:
            raise _bad(f"{w}amount: {e}") from None
        _text(body, "approval_ref", w, optional=True, max_len=64)
    elif state in ("succeeded", "failed"):
        # A bank's result, or an operator's resolution of an in-doubt instruction.
        key = "result" if "result" in p or "resolution" not in p else "resolution"
        if not isinstance(p.get(key), dict):
            raise _bad("payload.result (the bank's) or payload.resolution (an operator's) must be an object")
        outcome = p[key]
        if not isinstance(outcome.get("succeeded"), bool) or outcome["succeeded"] != (state == "succeeded"):
            raise _bad(f"payload.{key}.succeeded must be {str(state == 'succeeded').lower()}")
        if key == "result":
            _text(outcome, "host_seq_no", "payload.result.", pattern=SERIAL, empty=True, optional=True)
        else:
            _text(outcome, "evidence", "payload.resolution.", optional=True, max_len=4000)
    elif state == "in_doubt":
        _text(p, "reason", "payload.", optional=True)


def _check_movement(p: Mapping[str, Any]) -> None:
    w = "payload."
    _text(p, "host_seq_no", w, pattern=SERIAL)
    _int(p, "amount", w)
    date = _text(p, "value_date", w, pattern=_DATE)
    time = _text(p, "time", w, pattern=_TIME)
    try:
        _dt.datetime.fromisoformat(f"{date}T{time}")
    except ValueError:
        raise _bad("payload.value_date/time is not a real date and time") from None
    _text(p, "counterparty_account", w, pattern=ACCOUNT, optional=True, empty=True)
    _text(p, "counterparty_name", w, optional=True, max_len=200)
    _text(p, "counterparty_bank_code", w, optional=True, max_len=32)
    _int(p, "balance_after", w, optional=True)
    _text(p, "summary", w, optional=True)
    _text(p, "remark", w, optional=True)
    if not isinstance(p.get("reversal", False), bool):
        raise _bad("payload.reversal must be true or false")


def _check_unreadable(p: Mapping[str, Any]) -> None:
    _text(p, "part", "payload.", max_len=200)
    _text(p, "reason", "payload.", max_len=2000)


def _check_refused(p: Mapping[str, Any], raw: bytes | None) -> None:
    import hashlib

    _text(p, "reason", "payload.", max_len=2000)
    digest = _text(p, "sha256", "payload.", pattern=HEX64)
    size = _int(p, "size", "payload.", minimum=0, maximum=2 * MAX_PAYLOAD)
    if raw is not None and (len(raw) != size or hashlib.sha256(raw).hexdigest() != digest):
        raise _bad("raw is not the message the payload names (size or SHA-256 differ)")


def _check_file(p: Mapping[str, Any], raw: bytes | None) -> None:
    import hashlib

    if p.get("direction") not in ("in", "out"):
        raise _bad("payload.direction must be in or out")
    _text(p, "name", "payload.", max_len=255)
    digest = _text(p, "sha256", "payload.", pattern=re.compile(r"[0-9a-f]{64}"))
    size = _int(p, "size", "payload.", minimum=0, maximum=2 * MAX_PAYLOAD)
    if raw is None or len(raw) != size or hashlib.sha256(raw).hexdigest() != digest:
        raise _bad("raw is not the file the payload names (size or SHA-256 differ)")


def _check_balance(p: Mapping[str, Any]) -> None:
    _int(p, "balance", "payload.")
    as_of = _text(p, "as_of", "payload.", optional=True, max_len=40)
    if as_of is not None:
        try:
            _dt.datetime.fromisoformat(as_of)
        except ValueError:
            raise _bad("payload.as_of is not an ISO date-time") from None


def _check_booking(p: Mapping[str, Any]) -> None:
    w = "payload."
    _text(p, "booking_id", w, pattern=SERIAL)
    _text(p, "instruction_id", w, pattern=INSTRUCTION, optional=True)
    _text(p, "host_seq_no", w, pattern=SERIAL, optional=True)
    _text(p, "account", w, pattern=ACCOUNT)
    amount = _text(p, "amount", w, max_len=24)
    assert amount is not None
    try:
        signed_fen(amount)
    except ValueError as e:
        raise _bad(f"payload.amount: {e}") from None


# -- the bank's own frame ----------------------------------------------------------


_DECODED: dict[tuple[str, bytes], tuple[Any, ...] | str] = {}
_DECODED_MAX = 16
"""The last frames :func:`check_raw` decoded, by adapter and bytes: the movements of one
statement page each carry the whole page as their ``raw`` (a Bank of China page holds up to
50), and decoding it once per movement made a page cost the square of its length.  Decoding
is a pure function of the bytes, so the answer is the same; the oldest goes first."""


def check_raw(copy: Copy, adapter: Any) -> str | None:
    """Whether the bank's original frame says what the copy says; the disagreement, or None.

    - a result (``payload.result``): the frame holds a Result for the copy's
      ``bank_ref`` with the same ``succeeded`` and ``host_seq_no``;
    - any other instruction state: the frame is about the copy's ``bank_ref``;
    - a movement: the frame holds an entry on the account with the copy's
      ``host_seq_no`` and the same signed ``amount``;
    - a balance: the frame holds that account's balance with the same ``balance``.
    """
    from adapters.base import AdapterError, Balance, Movement, Result, Statement, decode_all

    payload = copy.payload
    assert copy.raw is not None
    if copy.kind not in FRAME_KINDS:
        return None  # a part of a document or a whole file: bytes kept as evidence, not a frame
    key = (copy.adapter, copy.raw)
    decoded = _DECODED.get(key)
    if decoded is None:
        try:
            decoded = tuple(decode_all(adapter, copy.raw))
        except AdapterError as e:
            decoded = f"raw is not a valid {copy.adapter} frame ({str(e)[:120]})"
        except Exception as e:  # an adapter bug must not take ingest down; fail closed
            decoded = f"raw cannot be decoded by {copy.adapter} ({type(e).__name__})"
        if len(_DECODED) >= _DECODED_MAX:
            del _DECODED[next(iter(_DECODED))]
        _DECODED[key] = decoded
    if isinstance(decoded, str):
        return decoded
    messages = decoded
    if copy.kind == "instruction.state":
        ref = payload.get("bank_ref")
        about = [m for m in messages if getattr(m, "ref", None) == ref]
        if not about:
            return f"the bank's frame is not about bank_ref {ref!r}"
        result = payload.get("result")
        if isinstance(result, Mapping):
            results = [m for m in about if isinstance(m, Result)]
            if not results:
                return "the bank's frame carries no result"
            for m in results:
                if m.succeeded == result.get("succeeded") and m.host_seq_no == result.get("host_seq_no"):
                    return None
            m = results[0]
            return (f"the bank says succeeded={m.succeeded} host_seq_no={m.host_seq_no!r}, the copy says "
                    f"succeeded={result.get('succeeded')} host_seq_no={result.get('host_seq_no')!r}")
        return None
    if copy.kind in ("bank.movement", "bank.movement_pending"):
        entries = [e for m in messages if isinstance(m, (Movement, Statement))
                   for e in (m.entries if copy.kind == "bank.movement" else m.pending)]
        account, host = payload.get("account"), payload.get("host_seq_no")
        same = [e for e in entries if e.account == account and e.host_seq_no == host]
        if not same:
            return f"the bank's frame has no entry {host!r} on that account"
        if all(e.amount != payload.get("amount") for e in same):
            return (f"the bank says amount {format_amount(same[0].amount)}, the copy says "
                    f"{payload.get('amount')!r} (fen) for entry {host!r}")
        return None
    if copy.kind == "bank.balance":
        balances = [m for m in messages if isinstance(m, Balance) and m.account == payload.get("account")]
        if not balances:
            return "the bank's frame has no balance for that account"
        if all(b.balance != payload.get("balance") for b in balances):
            return (f"the bank says balance {format_amount(balances[0].balance)}, the copy says "
                    f"{payload.get('balance')!r} (fen)")
        return None
    return None  # a booking is the centre's: nothing of the bank's to compare
