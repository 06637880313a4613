"""The ledger's matcher: the three-way check (docs/architecture.md, "The ledger"), pure and deterministic.

(Over 600 lines: one state machine whose rules for each fact kind read and write the same records
and indexes; its inputs are :mod:`~gateway.ledger.match_config`, its records and clock
:mod:`~gateway.ledger.match_records`.)

The daemon feeds every stored copy to :meth:`Matcher.observe` as a
:class:`Fact` and calls :meth:`Matcher.tick` on a timer; both return
:class:`~gateway.ledger.rules.AlertDraft` values, which the daemon stores once
per key.  There is no I/O, no clock and no reactor here: time is the ``now_s``
argument (the ledger's clock, seconds), so a test can replay any history.

What it matches (the rule table, severities and keys are in
:mod:`gateway.ledger.rules`):

* **Instructions** are keyed ``CENTRE/ID``.  Their state copies may arrive in
  any order; the body comes with ``received`` / ``rejected``, the bank's host
  serial with ``succeeded`` / ``failed``.
* **Debit movements** are matched to an instruction by the result's host
  serial (same bank), else by a bank reference found in the summary or remark,
  else by an instruction id found there (same centre, same debit account).
  A *collection* (kind ``collection``: a payer debited, the centre's account
  credited) expects a **credit** on the centre's account instead, matched the
  same ways; a credit is never matched to a transfer nor a debit to a
  collection, and a credit that matches nothing is not an alert.
  A debit that matches nothing yet is *held*: ``unsolicited-debit`` is raised
  only from :meth:`tick`, ``result_deadline_s`` after the ledger saw it, so a
  movement that overtakes its result never alerts.
* **Balance snapshots** are checked pairwise in bank time: the previous
  snapshot plus every movement whose bank time lies between them must give the
  new one (± ``balance_tolerance``).  Bank times have whole seconds: of the
  movements stamped in a snapshot's own second, the snapshot may hold the
  first ones the bank reported (any number of them, none and all included),
  and the next snapshot the rest.  A pair
  is checked once the later snapshot is ``result_deadline_s`` old, so
  movements still on their way are counted.
* **Bookings** are matched by instruction id (same centre) or by host serial.

Order: every check is *monotone* in what is known (once a condition holds,
more facts never unmake it) and deadlines are measured from when the ledger
first saw a thing, so any delivery order of the same facts within the
deadlines yields the same alert keys, except the order of an account's movements
within one second, which says which of them a snapshot of that second holds.  Known limits, by design: a fact that
arrives after the interval or deadline it belonged to was closed (e.g. a
movement more than ``result_deadline_s`` older than a settled snapshot) is not
re-judged; a debit whose host serial and summary point at two different
instructions goes to whichever was known first.

Idempotence and memory: each instruction, movement, booking and account
record remembers the event ids it was built from, so the same fact given twice
is a no-op while the record lives, and each record remembers which alert keys
it has raised.  A record is forgotten once it has been idle for
``Thresholds.retention`` seconds (longer than every deadline, so it is settled
by then).  Duplicate *delivery* of a copy after that is excluded by the
daemon's unique index on ``event_id``; the matcher keeps no global set of
event ids.  Movements are kept per account until the next balance snapshot
settles (or ``result_deadline_s`` when the account has no snapshot at all).
Since retention is a day and more, a record holds only what a later rule
reads (:mod:`~gateway.ledger.match_records`: containers made when first
filled, repeated strings interned, a matched debit's tokens dropped), and
:meth:`Matcher.restore` gives equal keys one string, as the live state has.
"""

from __future__ import annotations

import bisect
import heapq
import json
from typing import Any, Iterator, Mapping

from gateway.copies import KINDS as _KINDS, STATES, Copy, signed_fen as _signed_fen
from gateway.ledger import rules
from gateway.ledger.rules import AlertDraft, forged_copy_alert
from gateway.ledger.match_config import AccountInfo, CentreConditions, CounterpartyInfo, Registry, Thresholds
from gateway.ledger.match_records import (
    StreamClock,
    _Account,
    _append,
    _bank_time,
    _Body,
    _Booking,
    _explained,
    _Instr,
    _Move,
    _remove,
    _t,
    _tokens,
)
from gateway.model import format_amount

__all__ = [
    "Thresholds", "CentreConditions", "AccountInfo", "CounterpartyInfo", "Registry", "Fact", "AlertDraft", "Matcher",
    "StreamClock", "forged_copy_alert", "KINDS", "STATES",
]

KINDS = frozenset(_KINDS)
_FINAL = ("succeeded", "failed", "rejected")
_PROGRESS = ("in_doubt", "accepted", "sent", "received")  # latest first, for messages

SNAPSHOT_VERSION = 1


# -- facts ---------------------------------------------------------------------

# A fact is a copy as gateway.copies reads it: that module validates everything the
# matcher relies on, so Matcher.observe trusts a fact's shape.
Fact = Copy


# -- the matcher ---------------------------------------------------------------------


class Matcher:
    """The ledger's rules as a state machine: facts and time in, alert drafts out.

    Deterministic: the same facts and times give the same alerts in the same
    order, and :meth:`snapshot` / :meth:`restore` in between changes nothing.
    """

    def __init__(self, registry: Registry, thresholds: Thresholds) -> None:
        self.registry = registry
        self.thresholds = thresholds
        self.conditions: Mapping[str, CentreConditions] = {}  # per centre; replaced whole, live
        self._instrs: dict[str, _Instr] = {}
        self._moves: dict[str, _Move] = {}
        self._bookings: dict[str, _Booking] = {}
        self._accounts: dict[str, _Account] = {}
        self._by_ref: dict[str, str] = {}             # bank_ref -> instruction key
        self._by_host: dict[str, str] = {}            # "bank:host" of a result -> instruction key
        self._wait_host: dict[str, list[str]] = {}    # "bank:host" -> unmatched debit keys
        self._wait_token: dict[str, list[str]] = {}   # summary/remark token -> unmatched debit keys
        self._moves_by_host: dict[str, list[str]] = {}   # host -> movement keys (for bookings)
        self._wait_book: dict[str, list[str]] = {}    # host -> booking keys waiting for a movement
        self._deadlines: list[tuple[float, str, str]] = []  # heap of (due_s, what, key)
        self._pending: dict[str, int] = dict.fromkeys(self._DUE, 0)  # deadlines in the heap, by what

    # -- public API ------------------------------------------------------------

    def observe(self, fact: Fact, now_s: float) -> list[AlertDraft]:
        """Take one fact into account; returns the alerts it makes certain now.

        A fact already taken into account returns ``[]``.  Facts may arrive in
        any order; what depends on facts not yet seen waits for :meth:`tick`.
        """
        out: list[AlertDraft] = []
        kind = fact.kind
        if kind == "instruction.state":
            self._on_state(fact, now_s, out)
        elif kind == "bank.movement":
            self._on_movement(fact, now_s, out)
        elif kind == "bank.balance":
            self._on_balance(fact, now_s, out)
        elif kind == "booking":
            self._on_booking(fact, now_s, out)
        elif kind == "bank.unreadable":
            self._emit(None, rules.bank_data_unreadable(fact.bank_id or str(fact.payload.get("bank", "")),
                                                        str(fact.payload.get("part", "")),
                                                        str(fact.payload.get("reason", "")), fact.event_id), out)
        elif kind == "bank.refused":
            size = fact.payload.get("size")
            self._emit(None, rules.bank_message_refused(fact.bank_id or str(fact.payload.get("bank", "")),
                                                        str(fact.payload.get("reason", "")),
                                                        size if isinstance(size, int) else 0, fact.event_id), out)
        elif kind == "centre.refused":
            size = fact.payload.get("size")
            self._emit(None, rules.centre_message_refused(fact.centre_id or str(fact.payload.get("centre", "")),
                                                          str(fact.payload.get("reason", "")),
                                                          size if isinstance(size, int) else 0, fact.event_id), out)
        elif kind == "gateway.clock_step":
            self._emit(None, rules.clock_step(fact.gateway, int(fact.payload["step_us"]), fact.event_id), out)
        elif kind in ("bank.movement_pending", "bank.file", "gateway.restored"):
            pass  # announced, not booked; a file's contents come as their own facts; a restore is on record
        else:
            raise ValueError(f"unknown fact kind {kind!r}")
        return out

    def tick(self, now_s: float) -> list[AlertDraft]:
        """Run every deadline due at ``now_s`` (inclusive); each fires at most once."""
        out: list[AlertDraft] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now_s:
            _, what, key = heapq.heappop(heap)
            self._pending[what] -= 1
            self._DUE[what](self, key, now_s, out)
        return out

    def pending(self) -> dict[str, int]:
        """Deadlines not yet run, by rule (``result``, ``debit``, ``balance``, ``booking``, ``book``,
        ``forget-*``): zero for a rule means every fact it watches has been judged."""
        return dict(self._pending)

    def size(self) -> int:
        """How many records the state holds (what a snapshot costs, in records)."""
        return len(self._instrs) + len(self._moves) + len(self._bookings) + len(self._accounts)

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-able data; :meth:`restore` rebuilds an identical matcher.

        The snapshot shares nothing with the live matcher: it stays as taken.
        """
        def index(d: dict[str, list[str]]) -> dict[str, list[str]]:
            return {k: list(v) for k, v in d.items()}

        return {
            "version": SNAPSHOT_VERSION,
            "instructions": [r.dump() for r in self._instrs.values()],
            "movements": [r.dump() for r in self._moves.values()],
            "bookings": [r.dump() for r in self._bookings.values()],
            "accounts": [r.dump() for r in self._accounts.values()],
            "by_ref": dict(self._by_ref),
            "by_host": dict(self._by_host),
            "wait_host": index(self._wait_host),
            "wait_token": index(self._wait_token),
            "moves_by_host": index(self._moves_by_host),
            "wait_book": index(self._wait_book),
            "deadlines": [list(d) for d in sorted(self._deadlines)],
        }

    def snapshot_json(self) -> str:
        """:meth:`snapshot` as compact JSON text (``separators=(",", ":")``, ``ensure_ascii=True``),
        written record by record: the same text, without first building the whole state again
        as lists.  That copy was about 3.3 times the state's own size and, with the text, the
        ledger's peak memory (bench/README.md, item 41).

        ASCII (a payee's Chinese name escaped), because one such name in a snapshot of
        thousands of records made the whole joined text two bytes a character, and SQLite
        binds a non-ASCII text through a UTF-8 copy besides: writing a snapshot of 4,000
        bench instructions peaked at 32.9 MB of Python memory, 11.7 MB in ASCII, for a text
        1.8 % longer (bench/README.md, item 40).  Snapshots written before are read the same.
        """
        return "".join(self.snapshot_parts())

    def snapshot_parts(self) -> Iterator[str]:
        """The text of :meth:`snapshot_json` in pieces, a record at a time, for a writer that
        need not hold the whole text at once (the ledger compresses it as it comes:
        :func:`gateway.ledger.store.pack_snapshot`)."""
        enc = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
        yield '{"version":' + enc(SNAPSHOT_VERSION)
        for name, records in (("instructions", self._instrs), ("movements", self._moves),
                              ("bookings", self._bookings), ("accounts", self._accounts)):
            yield f',"{name}":['
            for i, r in enumerate(records.values()):
                yield enc(r.dump()) if i == 0 else "," + enc(r.dump())
            yield "]"
        for name in ("by_ref", "by_host", "wait_host", "wait_token", "moves_by_host", "wait_book"):
            yield f',"{name}":{enc(getattr(self, "_" + name))}'
        yield f',"deadlines":{enc(sorted(self._deadlines))}}}'

    @classmethod
    def restore(cls, registry: Registry, thresholds: Thresholds, snap: Mapping[str, Any]) -> "Matcher":
        """A matcher continuing from :meth:`snapshot` output (also after a JSON round trip)."""
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported matcher snapshot version {snap.get('version')!r}")
        m = cls(registry, thresholds)
        m._instrs = {r.key: r for r in map(_Instr.load, snap["instructions"])}
        m._moves = {r.key: r for r in map(_Move.load, snap["movements"])}
        m._bookings = {r.key: r for r in map(_Booking.load, snap["bookings"])}
        m._accounts = {r.key: r for r in map(_Account.load, snap["accounts"])}
        # One string per key, as a live matcher has: JSON gives every mention its own copy,
        # which made a restored state a quarter larger than the one snapshotted.
        same: dict[str, str] = {}
        for records in (m._instrs, m._moves, m._bookings, m._accounts):
            same.update(zip(records, records))
        one = same.get
        for ins in m._instrs.values():
            if ins.debits:
                ins.debits = {one(k, k): v for k, v in ins.debits.items()}
            if ins.bookings:
                ins.bookings = dict.fromkeys(one(k, k) for k in ins.bookings)
        for mv in m._moves.values():
            if mv.instr is not None:
                mv.instr = one(mv.instr, mv.instr)
        for b in m._bookings.values():
            if b.instr is not None:
                b.instr = one(b.instr, b.instr)
        m._by_ref = {k: one(v, v) for k, v in snap["by_ref"].items()}
        m._by_host = {k: one(v, v) for k, v in snap["by_host"].items()}
        for name in ("wait_host", "wait_token", "moves_by_host", "wait_book"):
            setattr(m, "_" + name, {k: [one(x, x) for x in v] for k, v in snap[name].items()})
        what = {w: w for w in cls._DUE}
        m._deadlines = [(float(d), what[w], one(k, k)) for d, w, k in snap["deadlines"]]
        heapq.heapify(m._deadlines)
        for _, what, _ in m._deadlines:
            m._pending[what] += 1
        return m

    # -- plumbing ---------------------------------------------------------------

    def _push(self, due: float, what: str, key: str) -> None:
        heapq.heappush(self._deadlines, (due, what, key))
        self._pending[what] += 1

    @staticmethod
    def _emit(raised: set[str] | None, draft: AlertDraft, out: list[AlertDraft]) -> None:
        if raised is not None:
            if draft.key in raised:
                return
            raised.add(draft.key)
        out.append(draft)

    @staticmethod
    def _once(rec: _Instr | _Move | _Booking, draft: AlertDraft, out: list[AlertDraft]) -> None:
        """An alert about ``rec``, once per key while the record lives (its ``raised`` is made
        with its first alert: most records never raise one)."""
        raised = rec.raised
        if raised is None:
            rec.raised = {draft.key}
        elif draft.key in raised:
            return
        else:
            raised.add(draft.key)
        out.append(draft)

    def _instr(self, centre: str, iid: str, now: float) -> _Instr:
        key = f"{centre}/{iid}"
        ins = self._instrs.get(key)
        if ins is None:
            ins = self._instrs[key] = _Instr(key, centre, iid, now)
            self._push(now + self.thresholds.retention, "forget-i", key)
        return ins

    # -- instructions -----------------------------------------------------------

    # -- per-centre conditions (the configured thresholds where a centre sets none) --------

    def _own(self, centre: str | None) -> CentreConditions | None:
        return self.conditions.get(centre) if centre is not None else None

    def _account_centre(self, account: str | None) -> str | None:
        info = self.registry.accounts.get(account) if account is not None else None
        return info.centre if info is not None else None

    def _large(self, centre: str | None) -> int:
        own = self._own(centre)
        return own.large_amount if own is not None and own.large_amount is not None \
            else self.thresholds.large_amount

    def _result_deadline(self, centre: str | None) -> float:
        own = self._own(centre)
        return own.result_deadline_s if own is not None and own.result_deadline_s is not None \
            else self.thresholds.result_deadline_s

    def _tolerance(self, centre: str | None) -> int:
        own = self._own(centre)
        return own.balance_tolerance if own is not None and own.balance_tolerance is not None \
            else self.thresholds.balance_tolerance

    def _counterparty_check(self, centre: str | None) -> bool:
        own = self._own(centre)
        return own is None or own.unregistered_counterparty is not False

    def _on_state(self, f: Fact, now: float, out: list[AlertDraft]) -> None:
        assert f.centre_id is not None and f.instruction_id is not None and f.state is not None
        ins = self._instr(f.centre_id, f.instruction_id, now)
        eid = f.event_id
        if eid in ins.others or eid in ins.states.values():
            return
        state, p = f.state, f.payload
        ins.last_s = max(ins.last_s, now)
        # ``changed``: something the checks in _resolve depend on is new.
        changed = not ins.states
        if changed:
            # The result deadline runs from the ledger's first sight of the instruction.
            self._push(now + self._result_deadline(f.centre_id), "result", ins.key)
        if state in ins.states:
            ins.repeat(eid)
        else:
            ins.add_state(state, eid)
            if state in _FINAL:
                changed = True
                finals = [s for s in _FINAL if s in ins.states]
                if len(finals) > 1:
                    self._once(ins, rules.conflicting_reports(
                        ins.key, "final states " + " and ".join(finals), ins.events()), out)
        if ins.bank is None:
            ins.set_bank(f.bank_id)
        ref = p.get("bank_ref")
        if ref and self._learn_ref(ins, ref, out):
            changed = True
        if state == "received" or state == "rejected":
            changed = self._learn_body(ins, p["instruction"], state == "rejected", out) or changed
        elif state == "succeeded" or state == "failed":
            # An operator's resolution settles it like a result, without a host serial.
            outcome = p["result"] if "result" in p else p["resolution"]
            changed = self._learn_result(ins, outcome, state, now, out) or changed
        elif state == "in_doubt":
            self._once(ins, rules.in_doubt(ins.key, p.get("reason") or "", ins.events()), out)
        if changed:
            self._resolve(ins, now, out)

    def _learn_ref(self, ins: _Instr, ref: str, out: list[AlertDraft]) -> bool:
        """Record the bank reference; True when it is new."""
        if ins.bank_ref is None:
            ins.bank_ref = ref
            owner = self._by_ref.setdefault(ref, ins.key)
            other = self._instrs.get(owner)
            if owner != ins.key and other is not None:
                # Owned by the first holder, so a third claimant adds no second alert.
                self._once(other, rules.bank_ref_reused(
                    ref, (owner, ins.key), other.events() + ins.events()), out)
            return True
        if ins.bank_ref != ref:
            self._once(ins, rules.conflicting_reports(
                ins.key, f"bank references {ins.bank_ref} and {ref}", ins.events()), out)
        return False

    def _learn_body(self, ins: _Instr, data: Mapping[str, Any], rejected: bool,
                    out: list[AlertDraft]) -> bool:
        """Record what the instruction said; True when it is new."""
        body = _Body.from_payload(data)
        if ins.body is not None:
            if body != ins.body:
                self._once(ins, rules.conflicting_reports(
                    ins.key, "two different instruction bodies", ins.events()), out)
            return False
        ins.body = body
        evidence = ins.events()
        if body.collection:
            # Money into the centre's account under the payer's agreement: no approval
            # and no counterparty register apply (gateway.intake.Intake.policy_refusal).
            return True
        threshold = self._large(ins.centre)
        if body.amount >= threshold:
            self._once(ins, rules.large_amount_instruction(
                ins.key, body.amount, body.approval_ref, rejected=rejected, threshold=threshold,
                evidence=evidence), out)
        if self._counterparty_check(ins.centre) and \
                not self.registry.counterparty_registered(body.cp_account, body.cp_bank):
            self._once(ins, rules.unregistered_counterparty_instruction(
                ins.key, body.cp_account, body.cp_name, rejected=rejected, evidence=evidence), out)
        return True

    def _learn_result(self, ins: _Instr, res: Mapping[str, Any], state: str, now: float,
                      out: list[AlertDraft]) -> bool:
        """Record the bank's result; True when it is new."""
        result = (bool(res["succeeded"]), res.get("host_seq_no") or "")
        if ins.result is not None:
            if result != ins.result:
                self._once(ins, rules.conflicting_reports(
                    ins.key, f"results {ins.result} and {result}", ins.events()), out)
            return False
        ins.result = result
        host = result[1]
        if host:
            hk = f"{ins.bank}:{host}"
            owner = self._by_host.setdefault(hk, ins.key)
            other = self._instrs.get(owner)
            if owner != ins.key and other is not None:
                self._once(other, rules.host_reused(
                    str(ins.bank), host, (owner, ins.key), other.events() + ins.events()), out)
        if state == "succeeded" and ins.success_s is None:
            ins.success_s = now
            self._push(now + self.thresholds.booking_deadline_s, "booking", ins.key)
        return True

    def _resolve(self, ins: _Instr, now: float, out: list[AlertDraft]) -> None:
        """Everything an instruction's new knowledge may settle, in a fixed order."""
        # Debits that were waiting for this instruction.
        cands: list[str] = []
        if ins.result is not None and ins.result[1]:
            cands += self._wait_host.get(f"{ins.bank}:{ins.result[1]}", ())
        if ins.bank_ref:
            cands += self._wait_token.get(ins.bank_ref, ())
        if ins.body is not None:
            for mk in self._wait_token.get(ins.iid, ()):
                m = self._moves[mk]
                if m.centre == ins.centre and m.account == ins.body.debit_account:
                    cands.append(mk)
        for mk in dict.fromkeys(cands):
            m = self._moves[mk]
            if m.instr is None and (ins.body.expects(m.amount) if ins.body is not None else m.amount < 0):
                self._link(m, ins, now, out)
        self._check_debits(ins, out)
        self._check_bookings(ins, out)

    # -- movements ----------------------------------------------------------------

    def _on_movement(self, f: Fact, now: float, out: list[AlertDraft]) -> None:
        p = f.payload
        bank = f.bank_id or p["bank"]
        account = p["account"]
        host = p["host_seq_no"]
        amount = p["amount"]
        cp = p.get("counterparty_account") or ""
        reversal = bool(p.get("reversal", False))
        mkey = f"{bank}:{account}:{host}"
        t = f"{p['value_date']}T{p['time']}"
        m = self._moves.get(mkey)
        if m is not None:
            eid = f.event_id
            if eid == m.event_id or eid in m.others:
                return
            m.repeat(eid)
            m.last_s = max(m.last_s, now)
            if (amount, cp, reversal) != (m.amount, m.cp_account, m.reversal):
                self._once(m, rules.movement_conflict(
                    mkey, account, f"{format_amount(m.amount)} with {m.cp_account or '-'}",
                    f"{format_amount(amount)} with {cp or '-'}", m.events()), out)
                if amount != m.amount:
                    # The gateway keeps both (its dedupe key includes the amount), so
                    # the balance must count both.
                    self._balance_move(bank, account, t, amount, eid, now)
            return

        registry = self.registry
        info = registry.accounts.get(account)
        centre = info.centre if info is not None else (f.centre_id or "")
        tokens = _tokens(p.get("summary") or "", p.get("remark") or "") if amount != 0 else []
        m = _Move(mkey, bank, account, host, amount, cp, p.get("counterparty_bank_code") or "",
                  reversal, centre, t, tokens, f.event_id, now)
        self._moves[mkey] = m
        _append(self._moves_by_host, host, mkey)
        self._push(now + self.thresholds.retention, "forget-m", mkey)
        evidence = (f.event_id,)

        if info is None or info.bank != bank:
            self._once(m, rules.unregistered_account(
                mkey, account, bank, info.bank if info is not None else None, evidence), out)
        if cp and not registry.counterparty_registered(cp, m.cp_bank):
            if amount > 0:
                # Money in from a payer off the register may be a collection's result
                # (its debtor): judged at the result deadline, once it could be matched.
                m.cp_name = p.get("counterparty_name") or ""
                self._push(now + self._result_deadline(self._account_centre(account)), "credit", mkey)
            else:
                self._once(m, rules.unregistered_counterparty_movement(
                    mkey, account, cp, p.get("counterparty_name") or "", amount, evidence), out)
        self._balance_move(bank, account, t, amount, f.event_id, now)
        waiting = self._wait_book.get(host)
        if waiting:
            for bk in list(waiting):
                b = self._bookings[bk]
                if b.account == account:
                    _remove(self._wait_book, host, bk)
                    self._check_booking_movement(b, m, out)

        threshold = self._large(self._account_centre(account))
        if amount < 0:
            m.large_pending = -amount >= threshold
            self._match(m, now, out)
            if m.instr is None or m.large_pending:
                # Held until the result deadline: the instruction may still be on its way.
                self._push(now + self._result_deadline(self._account_centre(account)), "debit", mkey)
        else:
            if amount > 0:
                # A credit: the result of a collection, when one expects it; else (interest,
                # money sent to the centre) nothing to match and no alert.
                self._match(m, now, out)
            if amount >= threshold:
                self._once(m, rules.large_amount_movement(
                    mkey, account, amount, approval_ref=None, threshold=threshold, evidence=evidence), out)

    def _find_instruction(self, m: _Move) -> _Instr | None:
        """The instruction movement ``m`` is the result of, going its way (a debit for a
        transfer, a credit for a collection), or None."""
        def way(ins: _Instr | None) -> bool:
            # A body not yet known: a credit waits for it, a debit is taken (as before).
            if ins is None:
                return False
            return ins.body.expects(m.amount) if ins.body is not None else m.amount < 0

        key = self._by_host.get(f"{m.bank}:{m.host}")
        if key is not None and way(self._instrs.get(key)):
            return self._instrs[key]
        for tok in m.tokens:
            key = self._by_ref.get(tok)
            if key is not None and way(self._instrs.get(key)):
                return self._instrs[key]
        for tok in m.tokens:
            ins = self._instrs.get(f"{m.centre}/{tok}")
            if ins is not None and ins.body is not None and ins.body.debit_account == m.account and way(ins):
                return ins
        return None

    def _match(self, m: _Move, now: float, out: list[AlertDraft]) -> None:
        """Link a movement to its instruction if it is known, else wait for it."""
        ins = self._find_instruction(m)
        if ins is None:
            self._wait(m)
        else:
            self._link(m, ins, now, out)
            self._check_debits(ins, out)

    def _wait(self, m: _Move) -> None:
        m.waiting = True
        _append(self._wait_host, f"{m.bank}:{m.host}", m.key)
        for tok in m.tokens:
            _append(self._wait_token, tok, m.key)

    def _unwait(self, m: _Move) -> None:
        if m.waiting:
            m.waiting = False
            _remove(self._wait_host, f"{m.bank}:{m.host}", m.key)
            for tok in m.tokens:
                _remove(self._wait_token, tok, m.key)

    def _link(self, m: _Move, ins: _Instr, now: float, out: list[AlertDraft]) -> None:
        self._unwait(m)
        m.matched(ins.key)
        ins.add_debit(m.key, m.event_id)
        ins.last_s = max(ins.last_s, now)
        if len(ins.debits) > 1:
            self._once(ins, rules.two_debits(
                ins.key, ins.debits, ins.events() + list(ins.debits.values())), out)

    def _check_debits(self, ins: _Instr, out: list[AlertDraft]) -> None:
        """Compare every debit matched to ``ins`` with what it said and how it ended."""
        body = ins.body
        threshold = self._large(ins.centre)
        for mk in ins.debits or ():
            m = self._moves.get(mk)
            if m is None:
                continue
            diffs: list[str] = []
            if body is not None:
                if m.amount != body.signed():
                    diffs.append(f"amount {format_amount(abs(m.amount))} instead of {format_amount(body.amount)}")
                if m.account != body.debit_account:
                    what = "credit" if body.collection else "debit"
                    diffs.append(f"{what} account {m.account} instead of {body.debit_account}")
                if m.cp_account and m.cp_account != body.cp_account:
                    diffs.append(f"counterparty {m.cp_account} instead of {body.cp_account}")
                if m.cp_bank and body.cp_bank and m.cp_bank != body.cp_bank:
                    diffs.append(f"counterparty bank {m.cp_bank} instead of {body.cp_bank}")
            if "failed" in ins.states:
                diffs.append("the bank reported the instruction failed")
            if "rejected" in ins.states:
                diffs.append("the instruction was rejected and never sent")
            if diffs:
                self._once(ins, rules.result_mismatch(
                    ins.key, mk, diffs, ins.events() + m.events()), out)
            if m.large_pending and body is not None:
                m.large_pending = False
                # An instruction at or above the threshold has its own alert.
                if body.amount < threshold:
                    self._once(m, rules.large_amount_movement(
                        mk, m.account, m.amount, approval_ref=body.approval_ref,
                        threshold=threshold, evidence=m.events()), out)

    # -- balances ------------------------------------------------------------------

    def _account(self, bank: str, account: str) -> _Account:
        key = f"{bank}:{account}"
        a = self._accounts.get(key)
        if a is None:
            a = self._accounts[key] = _Account(bank, account)
        return a

    def _balance_move(self, bank: str, account: str, t: str, amount: int, eid: str, now: float) -> None:
        a = self._account(bank, account)
        if a.base is not None and t < a.base[0]:
            return  # inside an interval already settled: see the module docstring
        if a.base is None and not a.pending and len(a.moves) >= 2 * max(64, a.kept):
            # No snapshot to compare with yet: keep only what a late first
            # snapshot could still need.  Pruning when the list has doubled
            # keeps the cost constant per movement.
            horizon = now - self.thresholds.result_deadline_s
            a.moves = [mv for mv in a.moves if mv[3] >= horizon]
            a.kept = len(a.moves)
        # After any movement of the same second: the order the bank reported them in.
        bisect.insort(a.moves, (t, amount, eid, now), key=_t)

    def _on_balance(self, f: Fact, now: float, out: list[AlertDraft]) -> None:
        p = f.payload
        bank = f.bank_id or p["bank"]
        a = self._account(bank, p["account"])
        eid = f.event_id
        if eid in a.pending_ids or (a.base is not None and a.base[2] == eid):
            return
        t = _bank_time(p.get("as_of"), f.created_us)
        if a.base is not None and t < a.base[0]:
            return  # older than a settled snapshot
        bisect.insort(a.pending, (t, p["balance"], eid, now))
        a.pending_ids.add(eid)
        self._push(now + self.thresholds.result_deadline_s, "balance", a.key)

    def _due_balance(self, akey: str, now: float, out: list[AlertDraft]) -> None:
        a = self._accounts.get(akey)
        if a is None:
            return
        grace = self.thresholds.result_deadline_s
        while a.pending and a.pending[0][3] + grace <= now:
            t, balance, eid, _ = a.pending.pop(0)
            a.pending_ids.discard(eid)
            if a.base is not None:
                if t < a.base[0]:
                    continue
                self._check_interval(a, t, balance, eid, out)
            a.base = (t, balance, eid)
            # Movements stamped at ``t`` stay: they may belong to the next interval.
            del a.moves[:bisect.bisect_left(a.moves, t, key=_t)]
        if not a.pending:
            a.kept = len(a.moves)

    def _check_interval(self, a: _Account, t: str, balance: int, eid: str,
                        out: list[AlertDraft]) -> None:
        assert a.base is not None
        pt, pbal, peid = a.base
        inner = 0
        tie_p: list[int] = []
        tie_s: list[int] = []
        evidence = [peid, eid]
        moves = a.moves
        lo = bisect.bisect_left(moves, pt, key=_t)
        hi = bisect.bisect_right(moves, t, key=_t)
        for i in range(lo, hi):
            mt, amount, meid, _ = moves[i]
            if mt == pt:
                tie_p.append(amount)
            elif mt == t:
                tie_s.append(amount)
            else:
                inner += amount
            evidence.append(meid)
        diff = balance - (pbal + inner)
        if _explained(diff, tie_p, tie_s, same_time=pt == t, tolerance=self._tolerance(self._account_centre(a.account))):
            return
        self._emit(None, rules.balance_break(
            a.bank, a.account, eid, previous=pbal, previous_at=pt, movements=inner + sum(tie_s),
            balance=balance, at=t, evidence=evidence), out)

    # -- bookings ------------------------------------------------------------------

    def _on_booking(self, f: Fact, now: float, out: list[AlertDraft]) -> None:
        p = f.payload
        assert f.centre_id is not None
        centre = f.centre_id
        bkey = f"{centre}/{p['booking_id']}"
        iid = p.get("instruction_id")
        instr_key = f"{centre}/{iid}" if iid else None
        host = p.get("host_seq_no") or None
        amount = _signed_fen(p["amount"])
        b = self._bookings.get(bkey)
        if b is not None:
            eid = f.event_id
            if eid == b.event_id or eid in b.others:
                return
            b.repeat(eid)
            b.last_s = max(b.last_s, now)
            if (instr_key, host, p["account"], amount) != b.content():
                self._once(b, rules.booking_mismatch_booking(
                    bkey, instr_key or b.account, "booked twice with different content",
                    b.events()), out)
            return
        b = self._bookings[bkey] = _Booking(bkey, centre, instr_key, host, p["account"], amount,
                                            f.event_id, now)
        self._push(now + self.thresholds.retention, "forget-b", bkey)
        if iid:
            ins = self._instr(centre, iid, now)
            ins.add_booking(bkey)
            ins.last_s = max(ins.last_s, now)
            self._check_bookings(ins, out)
        elif host:
            for mk in self._moves_by_host.get(host, ()):
                m = self._moves[mk]
                if m.account == b.account:
                    self._check_booking_movement(b, m, out)
                    break
            else:
                _append(self._wait_book, host, bkey)
        else:
            b.matched = True
            self._once(b, rules.booking_mismatch_booking(
                bkey, b.account, "names neither an instruction nor a bank host serial",
                b.events()), out)
        if not b.matched:
            self._push(now + self.thresholds.booking_deadline_s, "book", bkey)

    def _check_booking_movement(self, b: _Booking, m: _Move, out: list[AlertDraft]) -> None:
        b.matched = True
        if b.amount != m.amount:
            self._once(b, rules.booking_mismatch_booking(
                b.key, b.account,
                f"books {format_amount(b.amount)} but movement {m.key} is {format_amount(m.amount)}",
                b.events() + m.events()), out)

    def _check_bookings(self, ins: _Instr, out: list[AlertDraft]) -> None:
        if not ins.bookings:
            return
        books = [self._bookings[bk] for bk in ins.bookings if bk in self._bookings]
        if ins.states:
            for b in books:
                b.matched = True
        problems: list[str] = []
        if len(ins.bookings) > 1:
            problems.append(f"booked {len(ins.bookings)} times")
        body = ins.body
        if body is not None:
            for b in books:
                if b.account != body.debit_account:
                    what = "credit" if body.collection else "debit"
                    problems.append(f"{b.key} books account {b.account}, the {what} was on {body.debit_account}")
                if b.amount != body.signed():  # a collection books money in: positive
                    problems.append(f"{b.key} books {format_amount(b.amount)}, "
                                    f"the instruction is {format_amount(body.signed())}")
        if "failed" in ins.states:
            problems.append("booked although the bank reported failure")
        if "rejected" in ins.states:
            problems.append("booked although the instruction was rejected")
        if problems:
            evidence = ins.events() + [e for b in books for e in b.events()]
            self._once(ins, rules.booking_mismatch_instruction(
                ins.key, "; ".join(problems), evidence), out)

    # -- deadlines -----------------------------------------------------------------

    def _due_result(self, key: str, now: float, out: list[AlertDraft]) -> None:
        ins = self._instrs.get(key)
        if ins is None or not ins.states or ins.final():
            return
        last = next(s for s in _PROGRESS if s in ins.states)
        self._once(ins, rules.missing_result(
            key, last, self.thresholds.result_deadline_s, ins.events()), out)

    def _due_debit(self, mkey: str, now: float, out: list[AlertDraft]) -> None:
        m = self._moves.get(mkey)
        if m is None:
            return
        ins = self._instrs.get(m.instr) if m.instr is not None else None
        if m.instr is None:
            info = self.registry.accounts.get(m.account)
            if info is not None and info.bank == m.bank:
                self._once(m, rules.unsolicited_debit(
                    mkey, m.account, m.host, m.amount, special=info.special,
                    deadline_s=self._result_deadline(info.centre), evidence=m.events()), out)
        if m.large_pending:
            m.large_pending = False
            approval = ins.body.approval_ref if ins is not None and ins.body is not None else None
            self._once(m, rules.large_amount_movement(
                mkey, m.account, m.amount, approval_ref=approval,
                threshold=self._large(self._account_centre(m.account)), evidence=m.events()), out)

    def _due_credit(self, mkey: str, now: float, out: list[AlertDraft]) -> None:
        """A credit from an unregistered counterparty: an alert unless it is the result of a
        collection from that very payer."""
        m = self._moves.get(mkey)
        if m is None or self.registry.counterparty_registered(m.cp_account, m.cp_bank):
            return
        ins = self._instrs.get(m.instr) if m.instr is not None else None
        if ins is not None and ins.body is not None and ins.body.collection \
                and ins.body.cp_account == m.cp_account:
            return
        self._once(m, rules.unregistered_counterparty_movement(
            mkey, m.account, m.cp_account, m.cp_name, m.amount, m.events()), out)

    def _due_booking(self, key: str, now: float, out: list[AlertDraft]) -> None:
        ins = self._instrs.get(key)
        if ins is None or ins.bookings:
            return
        self._once(ins, rules.booking_mismatch_instruction(
            key, f"no booking {self.thresholds.booking_deadline_s:g}s after the bank reported success",
            ins.events()), out)

    def _due_book(self, bkey: str, now: float, out: list[AlertDraft]) -> None:
        b = self._bookings.get(bkey)
        if b is None or b.matched:
            return
        if b.instr is not None:
            problem = f"names instruction {b.instr}, which the ledger never saw"
            subject = b.instr
        else:
            others = [self._moves[mk].account for mk in self._moves_by_host.get(str(b.host), ())]
            subject = b.account
            if others:
                problem = (f"books account {b.account} but the bank's host serial {b.host} "
                           f"is on {', '.join(sorted(set(others)))}")
            else:
                problem = f"names host serial {b.host}, which the ledger never saw"
        self._once(b, rules.booking_mismatch_booking(bkey, subject, problem, b.events()), out)

    def _due_forget_instruction(self, key: str, now: float, out: list[AlertDraft]) -> None:
        ins = self._instrs.get(key)
        if ins is None:
            return
        due = ins.last_s + self.thresholds.retention
        if now < due:
            self._push(due, "forget-i", key)
            return
        del self._instrs[key]
        if ins.bank_ref and self._by_ref.get(ins.bank_ref) == key:
            del self._by_ref[ins.bank_ref]
        if ins.result is not None and ins.result[1]:
            hk = f"{ins.bank}:{ins.result[1]}"
            if self._by_host.get(hk) == key:
                del self._by_host[hk]

    def _due_forget_movement(self, mkey: str, now: float, out: list[AlertDraft]) -> None:
        m = self._moves.get(mkey)
        if m is None:
            return
        due = m.last_s + self.thresholds.retention
        if now < due:
            self._push(due, "forget-m", mkey)
            return
        del self._moves[mkey]
        self._unwait(m)
        _remove(self._moves_by_host, m.host, mkey)

    def _due_forget_booking(self, bkey: str, now: float, out: list[AlertDraft]) -> None:
        b = self._bookings.get(bkey)
        if b is None:
            return
        due = b.last_s + self.thresholds.retention
        if now < due:
            self._push(due, "forget-b", bkey)
            return
        del self._bookings[bkey]
        if b.host:
            _remove(self._wait_book, b.host, bkey)

    _DUE = {
        "result": _due_result,
        "debit": _due_debit,
        "credit": _due_credit,
        "booking": _due_booking,
        "book": _due_book,
        "balance": _due_balance,
        "forget-i": _due_forget_instruction,
        "forget-m": _due_forget_movement,
        "forget-b": _due_forget_booking,
    }

    # Introspection for tests and metrics: how much the matcher is holding.
    def sizes(self) -> dict[str, int]:
        """Record counts, so a long run can show that memory stays bounded."""
        return {
            "instructions": len(self._instrs), "movements": len(self._moves),
            "bookings": len(self._bookings), "accounts": len(self._accounts),
            "account_movements": sum(len(a.moves) for a in self._accounts.values()),
            "deadlines": len(self._deadlines),
        }
