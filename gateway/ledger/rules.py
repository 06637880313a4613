"""The ledger's alert vocabulary: rule names, severities and the shape of every alert.

Every alert the ledger raises is built here, so its key, subject, wording and
severity live in one place: the matcher decides *when*, this module *what it
says*.  The rules are listed in docs/architecture.md, "The ledger".

Rule, severity, and when it is raised:

unsolicited-debit (critical on a special account, major on other registered ones)
    a debit on a registered account matches no instruction ``result_deadline_s``
    after the ledger saw it.
missing-result (major)
    no final result ``result_deadline_s`` after the ledger first saw the
    instruction, or the gateway reports it ``in_doubt``.
result-mismatch (major)
    the debit matched to an instruction differs in amount, debit account or
    counterparty, or the instruction failed / was rejected.
duplicate-execution (critical)
    two debits for one instruction; contradictory reports about one
    instruction; one host serial or bank reference reported twice with
    different content.
balance-break (critical)
    a snapshot differs from the previous one plus the movements between them
    by more than ``balance_tolerance``.
unregistered-counterparty (major: money sent, or an instruction the gateway
accepted; minor: money received, or a rejected attempt)
    the counterparty is neither registered nor one of the centres' own accounts.
large-amount (major: money leaving without an approval reference; minor: an
approved instruction or a debit it covers, a rejected attempt, money arriving)
    an instruction or movement at or above ``large_amount``.
booking-mismatch (major)
    a booking differs from the instruction or movement it names, books an
    instruction that failed or was rejected, is one of several for one
    instruction, names nothing the ledger saw, or is missing
    ``booking_deadline_s`` after a success.
unregistered-account (major)
    a movement on an account not on the register (or registered at another bank).
forged-copy (major)
    a copy whose signature fails: raised by the daemon via :func:`forged_copy_alert`.
clock-step (minor)
    a gateway journalled a step of its wall clock (``gateway.clock_step``): its times after
    the step are on another axis, which the ledger's deadlines undo (docs/reliability.md, "Clocks").
journal-fork (critical)
    a gateway sent a new copy with a journal seq the ledger already holds from it: two journals
    under one name (a backup restored without ``hpf-gateway restore``, or a copied store):
    raised by the daemon via :func:`journal_fork_alert`.

Keys (``M`` is a movement, ``BANK:ACCOUNT:HOST``; ``I`` an instruction, ``CENTRE/ID``):
``unsolicited-debit:M``, ``missing-result:I``, ``result-mismatch:I:M``,
``duplicate-execution:I`` (two debits, contradictory reports),
``duplicate-execution:BANK:HOST`` (one host serial for two instructions),
``duplicate-execution:M`` (one movement reported with two contents),
``duplicate-execution:ref:BANK_REF``, ``balance-break:BANK:ACCOUNT:SNAPSHOT_EVENT_ID``,
``unregistered-counterparty:I`` / ``:M``, ``large-amount:I`` / ``:M``,
``booking-mismatch:I``, ``booking-mismatch:booking:CENTRE/BOOKING_ID``,
``unregistered-account:M``, ``forged-copy:GATEWAY:EVENT_ID``, ``clock-step:GATEWAY:EVENT_ID``,
``journal-fork:GATEWAY:SEQ``.

A large debit matched to an instruction that is itself at or above the
threshold raises no second large-amount alert: the instruction's covers it.

Keys are stable: the same situation yields the same key whatever order the
facts arrived in, so the daemon stores each alert once per key.  Evidence is
the sorted tuple of the event ids the alert rests on (event ids are
time-ordered, so sorted is chronological), capped at ``MAX_EVIDENCE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

from gateway.model import format_amount

__all__ = [
    "RULES", "FORGED_COPY", "ALL_RULES", "SEVERITIES", "Severity", "AlertDraft",
    "unsolicited_debit", "missing_result", "in_doubt", "result_mismatch",
    "two_debits", "conflicting_reports", "host_reused", "movement_conflict", "bank_ref_reused",
    "balance_break", "unregistered_counterparty_instruction", "unregistered_counterparty_movement",
    "large_amount_instruction", "large_amount_movement",
    "booking_mismatch_instruction", "booking_mismatch_booking", "unregistered_account",
    "forged_copy_alert", "COPY_REFUSED", "copy_refused_alert", "BANK_DATA_UNREADABLE", "bank_data_unreadable",
    "BANK_MESSAGE_REFUSED", "bank_message_refused", "CENTRE_MESSAGE_REFUSED", "centre_message_refused",
    "CLOCK_STEP", "clock_step", "JOURNAL_FORK", "journal_fork_alert",
]

RULES: tuple[str, ...] = (
    "unsolicited-debit", "missing-result", "result-mismatch", "duplicate-execution",
    "balance-break", "unregistered-counterparty", "large-amount", "booking-mismatch",
    "unregistered-account",
)
FORGED_COPY = "forged-copy"
COPY_REFUSED = "copy-refused"
BANK_DATA_UNREADABLE = "bank-data-unreadable"
BANK_MESSAGE_REFUSED = "bank-message-refused"
CENTRE_MESSAGE_REFUSED = "centre-message-refused"
CLOCK_STEP = "clock-step"
JOURNAL_FORK = "journal-fork"
ALL_RULES = frozenset(RULES) | {FORGED_COPY, COPY_REFUSED, BANK_DATA_UNREADABLE, BANK_MESSAGE_REFUSED,
                                CENTRE_MESSAGE_REFUSED, CLOCK_STEP, JOURNAL_FORK}

Severity = Literal["critical", "major", "minor"]
SEVERITIES: frozenset[str] = frozenset({"critical", "major", "minor"})

# Evidence lists are capped so one pathological account cannot make an alert
# unboundedly large; the summary says when the cap was hit.
MAX_EVIDENCE = 200


@dataclass(frozen=True)
class AlertDraft:
    """An alert the matcher wants raised; the daemon stores it once per ``key``.

    ``subject`` is an instruction (``"C52240/I1"``) or an account number;
    ``evidence`` names the event ids (copies) the alert rests on.
    """

    key: str
    rule: str
    severity: Severity
    subject: str
    summary: str
    evidence: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.rule not in ALL_RULES:
            raise ValueError(f"unknown rule {self.rule!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        if not self.key.startswith(self.rule + ":"):
            raise ValueError("an alert key starts with its rule name")


def _evidence(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(ids)))[:MAX_EVIDENCE]


def _money(fen: int) -> str:
    return format_amount(fen)


def _clean(text: str, limit: int) -> str:
    """Hostile text made safe for a key or a summary: no control characters, bounded."""
    text = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return text


# -- unsolicited-debit ---------------------------------------------------------


def unsolicited_debit(mkey: str, account: str, host_seq_no: str, amount: int, *, special: bool,
                      deadline_s: float, evidence: Iterable[str]) -> AlertDraft:
    """A debit nobody instructed: critical on a special account (挤占挪用), major elsewhere."""
    kind = "special account" if special else "registered account"
    return AlertDraft(
        key=f"unsolicited-debit:{mkey}", rule="unsolicited-debit",
        severity="critical" if special else "major", subject=account,
        summary=(f"debit of {_money(-amount)} on {kind} {account} (host serial {host_seq_no}) "
                 f"matches no instruction {deadline_s:g}s after it was reported"),
        evidence=_evidence(evidence))


# -- missing-result ------------------------------------------------------------


def missing_result(instr_key: str, last_state: str, deadline_s: float,
                   evidence: Iterable[str]) -> AlertDraft:
    """An instruction still without a final result past the ledger's deadline."""
    return AlertDraft(
        key=f"missing-result:{instr_key}", rule="missing-result", severity="major",
        subject=instr_key,
        summary=f"instruction {instr_key} is still {last_state} {deadline_s:g}s after it was seen",
        evidence=_evidence(evidence))


def in_doubt(instr_key: str, reason: str, evidence: Iterable[str]) -> AlertDraft:
    """The gateway itself gave up waiting for the bank's result (state ``in_doubt``)."""
    why = f": {_clean(reason, 200)}" if reason else ""
    return AlertDraft(
        key=f"missing-result:{instr_key}", rule="missing-result", severity="major",
        subject=instr_key, summary=f"the gateway reports instruction {instr_key} in doubt{why}",
        evidence=_evidence(evidence))


# -- result-mismatch -----------------------------------------------------------


def result_mismatch(instr_key: str, mkey: str, differences: Iterable[str],
                    evidence: Iterable[str]) -> AlertDraft:
    """The bank's movement for an instruction is not what the instruction said."""
    return AlertDraft(
        key=f"result-mismatch:{instr_key}:{mkey}", rule="result-mismatch", severity="major",
        subject=instr_key,
        summary=f"movement {mkey} for instruction {instr_key} differs: " + "; ".join(differences),
        evidence=_evidence(evidence))


# -- duplicate-execution -------------------------------------------------------


def two_debits(instr_key: str, mkeys: Iterable[str], evidence: Iterable[str]) -> AlertDraft:
    """More than one debit movement matched to one instruction."""
    keys = sorted(mkeys)
    return AlertDraft(
        key=f"duplicate-execution:{instr_key}", rule="duplicate-execution", severity="critical",
        subject=instr_key,
        summary=f"instruction {instr_key} was executed {len(keys)} times: " + ", ".join(keys),
        evidence=_evidence(evidence))


def conflicting_reports(instr_key: str, what: str, evidence: Iterable[str]) -> AlertDraft:
    """Two copies about one instruction contradict each other (results, bodies, references)."""
    return AlertDraft(
        key=f"duplicate-execution:{instr_key}", rule="duplicate-execution", severity="critical",
        subject=instr_key, summary=f"contradictory reports for instruction {instr_key}: {what}",
        evidence=_evidence(evidence))


def host_reused(bank: str, host_seq_no: str, instr_keys: Iterable[str],
                evidence: Iterable[str]) -> AlertDraft:
    """One bank host serial given as the result of two different instructions."""
    keys = sorted(instr_keys)
    return AlertDraft(
        key=f"duplicate-execution:{bank}:{host_seq_no}", rule="duplicate-execution",
        severity="critical", subject=keys[0],
        summary=f"bank {bank} host serial {host_seq_no} reported for " + " and ".join(keys),
        evidence=_evidence(evidence))


def movement_conflict(mkey: str, account: str, first: str, second: str,
                      evidence: Iterable[str]) -> AlertDraft:
    """One host serial on one account reported twice with different content."""
    return AlertDraft(
        key=f"duplicate-execution:{mkey}", rule="duplicate-execution", severity="critical",
        subject=account,
        summary=f"movement {mkey} reported twice with different content: {first} then {second}",
        evidence=_evidence(evidence))


def bank_ref_reused(bank_ref: str, instr_keys: Iterable[str], evidence: Iterable[str]) -> AlertDraft:
    """One bank reference (SendSeqNo) carried by two different instructions."""
    keys = sorted(instr_keys)
    return AlertDraft(
        key=f"duplicate-execution:ref:{bank_ref}", rule="duplicate-execution", severity="critical",
        subject=keys[0], summary=f"bank reference {bank_ref} used by " + " and ".join(keys),
        evidence=_evidence(evidence))


# -- balance-break -------------------------------------------------------------


def balance_break(bank: str, account: str, snapshot_event: str, *, previous: int, previous_at: str,
                  movements: int, balance: int, at: str, evidence: Iterable[str]) -> AlertDraft:
    """A snapshot that does not follow from the previous one and the movements between."""
    expected = previous + movements
    ids = list(evidence)
    capped = " (evidence truncated)" if len(set(ids)) > MAX_EVIDENCE else ""
    return AlertDraft(
        key=f"balance-break:{bank}:{account}:{snapshot_event}", rule="balance-break",
        severity="critical", subject=account,
        summary=(f"balance of {account} at {at} is {_money(balance)}; the snapshot at {previous_at} "
                 f"({_money(previous)}) plus movements of {_money(movements)} gives "
                 f"{_money(expected)}: off by {_money(balance - expected)}{capped}"),
        evidence=_evidence(ids))


# -- unregistered-counterparty -------------------------------------------------


def unregistered_counterparty_instruction(instr_key: str, cp_account: str, cp_name: str, *,
                                          rejected: bool, evidence: Iterable[str]) -> AlertDraft:
    """An instruction to a counterparty not on the register: an attempt (minor) or a payment (major)."""
    what = "a rejected attempt to pay" if rejected else "an instruction paying"
    return AlertDraft(
        key=f"unregistered-counterparty:{instr_key}", rule="unregistered-counterparty",
        severity="minor" if rejected else "major", subject=instr_key,
        summary=(f"{instr_key} is {what} unregistered counterparty {cp_account} "
                 f"({_clean(cp_name, 60)})"),
        evidence=_evidence(evidence))


def unregistered_counterparty_movement(mkey: str, account: str, cp_account: str, cp_name: str,
                                       amount: int, evidence: Iterable[str]) -> AlertDraft:
    """Money sent to (major) or received from (minor) a counterparty not on the register."""
    if amount < 0:
        what, severity = f"sent {_money(-amount)} to", "major"
    else:
        what, severity = f"received {_money(amount)} from", "minor"
    return AlertDraft(
        key=f"unregistered-counterparty:{mkey}", rule="unregistered-counterparty",
        severity=severity, subject=account,
        summary=f"{account} {what} unregistered counterparty {cp_account} ({_clean(cp_name, 60)})",
        evidence=_evidence(evidence))


# -- large-amount --------------------------------------------------------------


def large_amount_instruction(instr_key: str, amount: int, approval_ref: str | None, *,
                             rejected: bool, threshold: int, evidence: Iterable[str]) -> AlertDraft:
    """An instruction at or above the threshold; major only if it may move money unapproved."""
    if rejected:
        note, severity = "rejected attempt", "minor"
    elif approval_ref:
        note, severity = f"approval {_clean(approval_ref, 64)}", "minor"
    else:
        note, severity = "no approval reference", "major"
    return AlertDraft(
        key=f"large-amount:{instr_key}", rule="large-amount", severity=severity, subject=instr_key,
        summary=(f"instruction {instr_key} for {_money(amount)} is at or above "
                 f"{_money(threshold)} ({note})"),
        evidence=_evidence(evidence))


def large_amount_movement(mkey: str, account: str, amount: int, *, approval_ref: str | None,
                          threshold: int, evidence: Iterable[str]) -> AlertDraft:
    """A movement at or above the threshold: major for a debit without approval, else minor."""
    if amount > 0:
        note, severity = "money arriving", "minor"
    elif approval_ref:
        note, severity = f"approval {_clean(approval_ref, 64)}", "minor"
    else:
        note, severity = "debit without an approved instruction", "major"
    return AlertDraft(
        key=f"large-amount:{mkey}", rule="large-amount", severity=severity, subject=account,
        summary=(f"movement of {_money(amount)} on {account} is at or above "
                 f"{_money(threshold)} ({note})"),
        evidence=_evidence(evidence))


# -- booking-mismatch ----------------------------------------------------------


def booking_mismatch_instruction(instr_key: str, problem: str, evidence: Iterable[str]) -> AlertDraft:
    """The centre's books disagree with the bank about an instruction (or are missing)."""
    return AlertDraft(
        key=f"booking-mismatch:{instr_key}", rule="booking-mismatch", severity="major",
        subject=instr_key, summary=f"booking of {instr_key}: {problem}", evidence=_evidence(evidence))


def booking_mismatch_booking(booking_key: str, subject: str, problem: str,
                             evidence: Iterable[str]) -> AlertDraft:
    """One booking that matches nothing the bank reported, or disagrees with its movement."""
    return AlertDraft(
        key=f"booking-mismatch:booking:{booking_key}", rule="booking-mismatch", severity="major",
        subject=subject, summary=f"booking {booking_key}: {problem}", evidence=_evidence(evidence))


# -- unregistered-account ------------------------------------------------------


def unregistered_account(mkey: str, account: str, bank: str, registered_bank: str | None,
                         evidence: Iterable[str]) -> AlertDraft:
    """A movement on an account the register does not hold (at that bank)."""
    if registered_bank is None:
        why = "is not on the register"
    else:
        why = f"is registered at bank {registered_bank}, not {bank}"
    return AlertDraft(
        key=f"unregistered-account:{mkey}", rule="unregistered-account", severity="major",
        subject=account, summary=f"movement {mkey}: account {account} {why}",
        evidence=_evidence(evidence))


# -- forged-copy (raised by the daemon) ----------------------------------------


def forged_copy_alert(gateway: str, event_id: str, reason: str) -> AlertDraft:
    """The alert for a copy refused because its signature failed.

    ``gateway`` and ``event_id`` come from the refused copy itself, so they are
    hostile: they are bounded and stripped of control characters before they
    reach a key or a summary.
    """
    gw = _clean(str(gateway), 64) or "?"
    ev = _clean(str(event_id), 64) or "?"
    return AlertDraft(
        key=f"forged-copy:{gw}:{ev}", rule="forged-copy", severity="major", subject=gw,
        summary=f"copy {ev} claiming gateway {gw} was refused: {_clean(str(reason), 200)}",
        evidence=(ev,))


def copy_refused_alert(gateway: str, event_id: str, reason: str) -> AlertDraft:
    """The alert for a well-signed copy the ledger could not read and stored as refused.

    Supervision is blind to that fact until someone reads the copy (its trail
    shows it verbatim) and the gateway and ledger agree on the copy format again.
    """
    gw = _clean(str(gateway), 64) or "?"
    ev = _clean(str(event_id), 64) or "?"
    return AlertDraft(
        key=f"copy-refused:{gw}:{ev}", rule=COPY_REFUSED, severity="major", subject=gw,
        summary=f"copy {ev} from gateway {gw} is signed but unreadable, stored as refused: "
                f"{_clean(str(reason), 200)}",
        evidence=(ev,))


def bank_data_unreadable(bank: str, part: str, reason: str, event_id: str) -> AlertDraft:
    """A part of a bank's document (a balance, an entry) the gateway could not read.

    The rest of the document was read and matched; this part's bytes are the
    copy's evidence, and until someone reads them supervision does not know
    what they say.
    """
    b, pt, ev = _clean(str(bank), 16) or "?", _clean(str(part), 120), _clean(str(event_id), 64)
    return AlertDraft(
        key=f"{BANK_DATA_UNREADABLE}:{ev}", rule=BANK_DATA_UNREADABLE, severity="major", subject=b,
        summary=f"bank {b} sent {pt or 'a part'} that could not be read: {_clean(str(reason), 200)}",
        evidence=(ev,))


def bank_message_refused(bank: str, reason: str, size: int, event_id: str) -> AlertDraft:
    """A whole message from a bank that a link refused (it did not decode).

    The link answered it with the protocol's refusal where there is one and went on; whatever
    the bank meant by it (a result, a notice) did not reach supervision, and its bytes (or
    their hash) are the copy's evidence.
    """
    b, ev = _clean(str(bank), 16) or "?", _clean(str(event_id), 64)
    return AlertDraft(
        key=f"{BANK_MESSAGE_REFUSED}:{ev}", rule=BANK_MESSAGE_REFUSED, severity="major", subject=b,
        summary=f"bank {b} sent a message of {int(size)} bytes that was refused: {_clean(str(reason), 200)}",
        evidence=(ev,))


def centre_message_refused(centre: str, reason: str, size: int, event_id: str) -> AlertDraft:
    """A whole message from a centre's bdc software that the gateway's centre listener refused
    (it did not decode, or was not the centre's to send: another node, another centre's account,
    a code the listener does not take).  The listener answered it in protocol; nothing was stored
    for it, and its bytes (or their hash) are the copy's evidence."""
    c, ev = _clean(str(centre), 16) or "?", _clean(str(event_id), 64)
    return AlertDraft(
        key=f"{CENTRE_MESSAGE_REFUSED}:{ev}", rule=CENTRE_MESSAGE_REFUSED, severity="major", subject=c,
        summary=f"centre {c} sent a message of {int(size)} bytes that was refused: {_clean(str(reason), 200)}",
        evidence=(ev,))


def clock_step(gateway: str, step_us: int, event_id: str) -> AlertDraft:
    """A gateway's wall clock was stepped (it journalled ``gateway.clock_step``).

    Nothing is wrong with the money: the ledger measures that gateway's deadlines across the
    step (docs/reliability.md, "Clocks"); but the times on its copies after the step are the
    stepped clock's, so an operator should look at the host's time keeping.
    """
    gw, ev = _clean(str(gateway), 64) or "?", _clean(str(event_id), 64)
    direction = "forwards" if step_us > 0 else "backwards"
    return AlertDraft(
        key=f"{CLOCK_STEP}:{gw}:{ev}", rule=CLOCK_STEP, severity="minor", subject=gw,
        summary=f"gateway {gw}'s wall clock was stepped {direction} by {abs(step_us) / 1e6:.3f} s",
        evidence=(ev,))


def journal_fork_alert(gateway: str, seq: int, event_id: str) -> AlertDraft:
    """A new copy (an event id the ledger does not hold) at a journal seq it holds from that gateway.

    The gateway's journal is not the one the ledger has been copying: a store restored from a
    backup without ``hpf-gateway restore`` (which moves the journal past every seq the lost store
    may have used), or two stores under one name.  The copy is refused and the gateway stays on
    it; keyed by the seq, so its resends raise nothing more.
    """
    gw, ev = _clean(str(gateway), 64) or "?", _clean(str(event_id), 64) or "?"
    return AlertDraft(
        key=f"{JOURNAL_FORK}:{gw}:{int(seq)}", rule=JOURNAL_FORK, severity="critical", subject=gw,
        summary=f"gateway {gw} sent a new event {ev} as journal seq {int(seq)}, which the ledger already "
                f"holds from it: its journal forked (restored or copied); its copies are refused from there on",
        evidence=(ev,))
