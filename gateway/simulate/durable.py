"""A simulated bank that survives ``kill -9``: its core's inputs written ahead to a file, replayed at start.

:class:`~gateway.simulate.bank.BankCore` is pure and deterministic: the same
inputs in the same order (each with its ``now``) give the same balances,
executed references, serials and outcomes.  So instead of snapshotting state,
:class:`DurableBankCore` appends every input that changes the core to a
journal file and fsyncs it *before* acting on it; a restarted simulator
replays the file into a fresh core and is the bank it was, as a real bank's
host is after a restart.  What the bank had executed it still knows: a resent
reference is answered with its original outcome, never executed again, and
notices the gateway never acknowledged are pushed again at the next sign-on.

The first line of the file is a header with the core's options (including
``first_serial``); a restart with other options is refused, because the
replay would build a different bank.  A last line cut short by a kill was
never acted on (the write precedes the action) and is dropped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from adapters import base
from adapters.base import Message
from gateway.simulate.bank import BankCore
from gateway.simulate.bdc_desk import BdcDesk
from gateway.simulate.bdc_desk import from_json as desk_from_json

__all__ = ["DurableBankCore", "JournalMismatch"]

_VERSION = 1


class JournalMismatch(ValueError):
    """The journal was written by a bank with other options, or is not a bank journal."""


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in sorted(options.items()):
        if isinstance(v, (set, frozenset)):
            v = sorted(v)
        elif isinstance(v, Mapping):
            v = dict(sorted(v.items()))
        elif k == "tz":
            v = str(v)
        out[k] = v
    return out


class DurableBankCore(BankCore):
    """A :class:`BankCore` whose every state-changing input is journalled to ``path`` first.

    ``options`` are :class:`BankCore`'s keyword arguments.  When ``path``
    exists, its inputs are replayed (its header's ``first_serial`` wins over
    the one given, so serials continue where they were); otherwise the file is
    created with a header.  ``replayed`` says how many inputs were replayed.
    """

    def __init__(self, path: Path, **options: Any) -> None:
        self._file = None
        self._depth = 0
        self.path = Path(path)
        self.replayed = 0
        records: list[dict[str, Any]] = []
        if self.path.exists() and self.path.stat().st_size:
            header, records = self._read()
            given = _jsonable({k: v for k, v in options.items() if k != "first_serial"})
            if header.get("options") != given:
                raise JournalMismatch(f"{self.path}: written by a bank with other options; "
                                      f"start with the same options or a new state file")
            options["first_serial"] = header["first_serial"]
            super().__init__(**options)
        else:
            super().__init__(**options)
            header = {"journal": "hpf-simulated-bank", "version": _VERSION,
                      "first_serial": self._serial,
                      "options": _jsonable({k: v for k, v in options.items() if k != "first_serial"})}
            self._append(header, create=True)
        # The bdc desk's requests share this journal (input ``desk``): it must exist before the replay.
        self.desk = BdcDesk(self)
        self._depth = 1  # replaying: nothing is written again
        try:
            for record in records:
                self._apply(record)
                self.replayed += 1
        finally:
            self._depth = 0
        # What was executed before the restart is history, not news for the edge's log.
        self.take_executed()
        self.take_offences()

    # -- the journal -------------------------------------------------------------

    def _read(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        lines = self.path.read_bytes().split(b"\n")
        if lines and lines[-1] != b"":
            lines = lines[:-1]  # cut short by a kill before its fsync: never acted on
        try:
            rows = [json.loads(line) for line in lines if line]
        except ValueError as e:
            raise JournalMismatch(f"{self.path}: not a simulated bank's journal ({e})") from None
        if not rows or rows[0].get("journal") != "hpf-simulated-bank" or rows[0].get("version") != _VERSION:
            raise JournalMismatch(f"{self.path}: not a simulated bank's journal")
        return rows[0], rows[1:]

    def _append(self, record: dict[str, Any], *, create: bool = False) -> None:
        if self._file is None:
            # Bank state holds account data: readable by its owner only.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "ab", buffering=0)
        self._file.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
        os.fsync(self._file.fileno())
        if create:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _record(self, op: str, now: float | None = None, arg: Any = None) -> bool:
        """Write one input ahead of acting on it; False when nested inside another input or replaying."""
        if self._depth:
            return False
        self._append({"op": op, "now": now, "arg": arg})
        return True

    def _apply(self, record: dict[str, Any]) -> None:
        op, now, arg = record["op"], record["now"], record["arg"]
        if op == "receive":
            super().receive(base.from_json(arg), now)
        elif op == "tick":
            super().tick(now)
        elif op == "heartbeat":
            super().heartbeat()
        elif op == "next_seq_no":
            super().next_seq_no()
        elif op == "discard_push":
            super().discard_push(arg)
        elif op == "desk":
            self.desk.take(desk_from_json(arg), now)
        else:
            raise JournalMismatch(f"{self.path}: unknown input {op!r}")

    def close(self) -> None:
        """Close the journal file (the core stays usable; the next input reopens it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- the inputs that change the core -------------------------------------------

    def _journalled(self, op: str, now: float | None, arg: Any, call: Any) -> Any:
        nested = not self._record(op, now, arg)
        if nested:
            return call()
        self._depth += 1
        try:
            return call()
        finally:
            self._depth -= 1

    def journalled(self, op: str, now: float | None, arg: Any, call: Any) -> Any:
        """Journal input ``op`` (another part of this bank's, e.g. its bdc desk) before ``call``
        acts on it; replayed through :meth:`_apply`."""
        return self._journalled(op, now, arg, call)

    def receive(self, message: Message, now: float) -> list[Message]:
        return self._journalled("receive", now, base.to_json(message), lambda: super(DurableBankCore, self)
                                .receive(message, now))

    def tick(self, now: float) -> list[Message]:
        # Ticks with nothing due change nothing: not worth a write.
        if self.next_due() is None or self.next_due() > now:  # type: ignore[operator]
            return super().tick(now)
        return self._journalled("tick", now, None, lambda: super(DurableBankCore, self).tick(now))

    def heartbeat(self) -> Any:
        return self._journalled("heartbeat", None, None, lambda: super(DurableBankCore, self).heartbeat())

    def next_seq_no(self) -> str:
        return self._journalled("next_seq_no", None, None, lambda: super(DurableBankCore, self).next_seq_no())

    def discard_push(self, seq_no: str) -> bool:
        return self._journalled("discard_push", None, seq_no,
                                lambda: super(DurableBankCore, self).discard_push(seq_no))
