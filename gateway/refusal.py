"""A well-framed bank message that does not decode: counted, logged, journalled, answered.

Shared by every bank edge (``links`` for the framed TCP sessions, ``exchange`` for the
request/answer ones), so that neither edge imports the other to reach it.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from adapters.base import AdapterError

__all__ = ["refuse_message"]

log = Logger()


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
