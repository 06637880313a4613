"""SBDC100 account-change notices pushed to centres' bdc software, store and forward.

The deployed settlement system pushes every movement of a centre's accounts to the centre's
own listener (``centerIp``/``centerPort``) as SBDC100 notices, one request per connection,
answered with an empty body (TxStatus ``0``).  Here the gateway does it for every centre with
``[centres.X] bdc_notify``: the movements are the journal's ``bank.movement`` events of that
centre (whichever bank and protocol reported them), already durable; what is pushed is kept as
a per-centre delivery cursor (``deliveries`` row ``sbdc100:<centre>``, the same table the ledger
forwarder keeps its cursor in), moved forward only after the centre's TxStatus ``0``.

- **Never lost:** a notice not acknowledged (no connection, no answer within the timeout, a
  refusal, an answer that does not read) is sent again, the same lines under the same
  SendSeqNo, after a back-off (``retry_first`` doubling up to ``retry_max``), for as long as
  it takes; a restart resumes from the cursor.
- **Duplicates:** at least once.  A notice is sent again only when its acknowledgement was not
  seen (lost answer, crash between answer and cursor write, or two nodes pushing while a lease
  changes hands); it then carries the same lines and SendSeqNo.  The deployed centre skips a
  line whose (acct, amt, opponentAcct, opponentName, hostSeqNo) it already stored and answers
  ``0`` either way (docs/protocols/bdc.md), so such a repeat is harmless to it.
- A notice carries at most ``batch`` lines, in journal order.  Its SendSeqNo (the settlement
  system's serial) is ``N`` + the journal seq of its first line, 19 digits: unique, the same on
  every resend.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from adapters import base
from adapters.base import AdapterError
from gateway.exchange import ExchangeFailed, StreamTransport
from gateway.store import journal, schema

__all__ = ["NoticePusher", "cursor_name", "entry_of", "movements_after"]

log = Logger()


def cursor_name(centre: str) -> str:
    """The delivery cursor of a centre's notices (``deliveries.target``)."""
    return f"sbdc100:{centre}"


def entry_of(p: dict[str, Any]) -> base.Entry:
    """A journalled ``bank.movement`` payload as the neutral Entry the bdc codec writes."""
    return base.Entry(
        account=p["account"], host_seq_no=p.get("host_seq_no") or "", amount=int(p["amount"]),
        value_date=_dt.date.fromisoformat(p["value_date"]), time=_dt.time.fromisoformat(p["time"]),
        counterparty_account=p.get("counterparty_account") or "",
        counterparty_name=p.get("counterparty_name") or "",
        counterparty_bank_code=p.get("counterparty_bank_code") or "",
        balance_after=p.get("balance_after"), summary=p.get("summary") or "",
        remark=p.get("remark") or "", reversal=bool(p.get("reversal")))


def movements_after(conn: Any, centre: str, after: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """``(seq, payload)`` of the centre's ``bank.movement`` events with seq > ``after``, oldest first."""
    E = schema.events
    rows = conn.execute(
        select(E.c.seq, E.c.payload).where(E.c.centre_id == centre, E.c.kind == "bank.movement", E.c.seq > after)
        .order_by(E.c.seq).limit(limit)).all()
    return [(int(seq), json.loads(payload)) for seq, payload in rows]


class NoticePusher(Service):
    """One push loop per centre with ``bdc_notify`` (see the module docstring).

    ``transport_for(centre, endpoint)`` gives the :class:`StreamTransport` that dials the
    centre (TLS, peer checked); ``adapter`` is the canonical bdc codec.
    """

    def __init__(self, config: Callable[[], Any], db: Any, adapter: Any, clock: Any, metrics: Any,
                 transport_for: Callable[[str, str], StreamTransport], *, interval: float = 1.0,
                 batch: int = 100, retry_first: float = 1.0, retry_max: float = 60.0) -> None:
        self.config, self.db, self.adapter, self.clock, self.metrics = config, db, adapter, clock, metrics
        self.transport_for = transport_for
        self.interval, self.batch, self.retry_first, self.retry_max = interval, batch, retry_first, retry_max
        self._loops: dict[str, Deferred[None]] = {}
        self.pushed: dict[str, int] = {}  # lines acknowledged, per centre (this process)
        self.cursors: dict[str, int] = {}  # the journal seq each centre has acknowledged up to

    def startService(self) -> None:
        super().startService()
        cfg = self.config()
        for centre_id, centre in cfg.centres.items():
            if centre.bdc_notify:
                d = Deferred.fromCoroutine(self._run(centre_id))
                d.addErrback(lambda f, c=centre_id: None if f.check(CancelledError)
                             else log.failure("centre_notify.loop_failed", f, centre=c))
                self._loops[centre_id] = d

    def stopService(self) -> None:
        super().stopService()
        for d in self._loops.values():
            d.cancel()
        self._loops.clear()

    async def _sleep(self, seconds: float) -> None:
        await deferLater(self.clock, seconds, lambda: None)

    async def _run(self, centre: str) -> None:
        while True:
            try:
                cursor = await self.db.read(journal.delivered, cursor_name(centre))
                break
            except CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.failure("centre_notify.read_failed", centre=centre)
                await self._sleep(self.retry_max)
        self.cursors[centre] = cursor
        delay = self.retry_first
        while self.running:
            try:
                rows = await self.db.read(movements_after, centre, cursor, self.batch)
            except CancelledError:
                raise
            except Exception:  # noqa: BLE001 (the store failing: try again later, lose nothing)
                log.failure("centre_notify.read_failed", centre=centre)
                await self._sleep(self.retry_max)
                continue
            if not rows:
                await self._sleep(self.interval)
                continue
            entries = tuple(entry_of(p) for _, p in rows if p.get("currency", "CNY") == "CNY")
            last = rows[-1][0]
            why = await self._push(centre, rows[0][0], entries) if entries else None
            if why is None:
                try:
                    await self.db.write(lambda tx, seq=last: journal.mark_delivered(tx, cursor_name(centre), seq))
                except CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 (pushed but not recorded: pushed again, harmless)
                    why = f"acknowledged, but the cursor was not written: {e}"[:200]
            if why is not None:
                self.metrics.refused.labels(f"centre_bdc:{centre}", "notice_not_acknowledged").inc()
                log.warn("centre_notify.not_acknowledged", centre=centre, first_seq=rows[0][0], lines=len(entries),
                         reason=why, retry_in=delay)
                await self._sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            delay = self.retry_first
            cursor = self.cursors[centre] = last
            self.pushed[centre] = self.pushed.get(centre, 0) + len(entries)

    async def _push(self, centre: str, first_seq: int, entries: tuple[base.Entry, ...]) -> str | None:
        """Send one notice; None when the centre acknowledged it, else why not."""
        cfg = self.config()
        entry = cfg.centres.get(centre)
        if entry is None or not entry.bdc_notify:
            return "the centre has no bdc_notify any more (reload)"
        notice = base.Movement(f"N{first_seq:019d}", entries)
        try:
            frame = self.adapter.encode(notice, sender=cfg.node, receiver=centre)
            answer = self.adapter.decode_answer(
                await self.transport_for(centre, entry.bdc_notify).request(frame), notice)
        except (ExchangeFailed, AdapterError) as e:
            return str(e)[:200]
        if not isinstance(answer, base.Ack) or not answer.ok:
            return f"refused: {getattr(answer, 'code', '')} {getattr(answer, 'text', '')}"[:200]
        return None
