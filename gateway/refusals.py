"""Refused messages, journalled the one way for every party that sends the gateway messages.

A whole message a bank link refused (``bank.refused``, from :meth:`gateway.relay.BankDispatcher.refused`)
and one a centre's bdc software sent to the centre listener (``centre.refused``, from
:mod:`gateway.centre_bdc`) are the same kind of fact: the party, the reason with every long
number masked (a reason may quote a field), the message's SHA-256 and size and, when it is
short enough (:data:`gateway.copies.MAX_REFUSED_RAW`), its bytes as the event's raw.  Their
copies raise the ledger's ``bank-message-refused`` / ``centre-message-refused`` alerts
(``gateway/ledger/rules.py``).  A party sending bad messages by the thousand does not flood the
journal or the ledger: :class:`RefusalGate` lets at most :data:`REFUSED_JOURNAL_CAP` through per
party and :data:`REFUSED_JOURNAL_WINDOW` seconds; the rest are still refused, logged and counted
by the caller.  :func:`refuse_message` is what every bank edge (``links`` for the framed
sessions, ``exchange`` for request/answer) does with a well-framed message that does not decode,
so that neither edge imports the other to reach it.  No clock of its own, no I/O but a log line.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.logger import Logger

from adapters.base import AdapterError

from gateway.copies import MAX_REFUSED_RAW
from gateway.model import mask_numbers

__all__ = ["REFUSED_JOURNAL_CAP", "REFUSED_JOURNAL_WINDOW", "RefusalGate", "centre_refusal", "refused_event",
           "refuse_message"]

log = Logger()

REFUSED_JOURNAL_CAP = 100
"""Refused messages journalled per party and window (the rest are only counted)."""
REFUSED_JOURNAL_WINDOW = 3600.0


class RefusalGate:
    """How many of one party's refused messages may still be journalled in the current window."""

    def __init__(self, cap: int = REFUSED_JOURNAL_CAP, window: float = REFUSED_JOURNAL_WINDOW) -> None:
        self.cap, self.window = cap, window
        self._since = float("-inf")
        self._count = 0

    def admit(self, now: float) -> bool:
        """True when a refused message at ``now`` is to be journalled (and counts it)."""
        if now - self._since >= self.window:
            self._since, self._count = now, 0
        if self._count >= self.cap:
            return False
        self._count += 1
        return True


def refused_event(frame: bytes, reason: str, **party: str) -> tuple[dict[str, Any], bytes | None]:
    """The journal payload and raw bytes of a refused message: ``party`` (``bank=`` or
    ``centre=``), the masked reason, SHA-256 and size, and the bytes when short enough."""
    frame = bytes(frame)
    payload: dict[str, Any] = {"reason": mask_numbers(reason)[:2000], "sha256": hashlib.sha256(frame).hexdigest(),
                               "size": len(frame), **party}
    return payload, (frame if len(frame) <= MAX_REFUSED_RAW else None)


def centre_refusal(centre: str, frame: bytes, reason: str) -> Any:
    """The write op (``tx -> event id``) journalling a message of ``centre`` that the centre
    listener refused, as ``centre.refused`` (the bank's counterpart is written with the bank's
    other facts: :class:`gateway.store.instructions.RefusedMessage`)."""
    payload, raw = refused_event(frame, reason, centre=centre)
    return lambda tx: tx.event("centre.refused", payload, centre_id=centre, raw=raw)


def refuse_message(link: Any, frame: bytes, error: AdapterError) -> bytes | None:
    """Record one well-framed message that did not decode; the protocol's refusal to send back.

    Counted (``refused{reason=bad_message}``, or ``answer_refused`` for an answer saying the
    call itself failed) and logged; a bad message is also journalled through the
    dispatcher's ``refused(frame, reason)`` (``bank.refused``).  The refusal frame comes from
    the adapter's optional ``refusal(frame, sender=, seq_no=)`` and is None when the protocol
    has none for it.
    """
    bank = link.bank.id
    kind = "answer_refused" if hasattr(error, "tx_code") else "bad_message"
    link.metrics.refused.labels(f"bank:{bank}", kind).inc()
    log.warn("link." + kind, bank=bank, reason=str(error), frame_bytes=len(frame))
    if kind == "bad_message":
        # Journalled too, so the copy raises the ledger's bank-message-refused alert.  (An
        # answer saying the call failed is the protocol working, not a bad message.)
        record = getattr(link.dispatcher, "refused", None)
        if record is not None:
            record(frame, str(error))
    refusal = getattr(link.adapter, "refusal", None)
    if refusal is None or kind != "bad_message":
        return None
    return refusal(frame, sender=link.gateway_node, seq_no=link.dispatcher.next_seq())
