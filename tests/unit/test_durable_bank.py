"""A simulated bank that survives kill -9: its journal replayed gives the same bank, with no I/O but a file."""

from __future__ import annotations

import datetime as _dt
import os
import stat

import pytest

from adapters import base
from gateway.simulate.bank import BankCore
from gateway.simulate.durable import DurableBankCore, JournalMismatch

ACCOUNTS = {"6200001111222233": 1_000_000, "6200001111222244": 500_000}
OPTIONS = dict(node="B001", accounts=ACCOUNTS, gateway_node="D00000", failure_rate=0.3, seed=7,
               faults=frozenset({"balance-break", "unsolicited-debit"}), fault_every=3)


def _instruction(n: int, amount: int = 1_000) -> base.Instruction:
    return base.Instruction(
        seq_no=f"D00000{n:014d}", send_date=_dt.date(2026, 12, 7), centre_node="C52240", unit_no="1" * 15,
        debit_account="6200001111222233", debit_name="centre", creditor_account="6222020000000001",
        creditor_name="张三", creditor_bank_code="102100099996", creditor_personal=True, same_bank=False,
        amount=amount, purpose="withdrawal", memo="提取", reference=f"I-{n}")


def _drive(core: BankCore, start: int, count: int, now: float) -> list[base.Message]:
    out: list[base.Message] = []
    out += core.receive(base.SignOn(seq_no="S1", node="D00000"), now)
    for n in range(start, start + count):
        out += core.receive(_instruction(n, 1_000 + n), now + n)
        out += core.receive(base.Heartbeat(seq_no=f"HB{n}", node="D00000"), now + n)
    out += core.receive(base.BalanceQuery(seq_no="Q1", account="6200001111222233"), now + 100)
    out += core.tick(now + 200)
    core.heartbeat()
    return out


def _state(core: BankCore) -> dict:
    s = core.stats()
    s.pop("counts")  # duplicate/heartbeat tallies of this process's own traffic
    return {**s, "next": core.next_seq_no(), "pending": [m.seq_no for m in core.pending_pushes()]}


def test_replayed_journal_is_the_same_bank(tmp_path):
    path = tmp_path / "bank.state"
    live = DurableBankCore(path, first_serial=1000, **OPTIONS)
    twin = BankCore(first_serial=1000, **OPTIONS)  # the same inputs, never journalled
    assert _drive(live, 1, 12, 1_000.0) == _drive(twin, 1, 12, 1_000.0)
    live.close()

    again = DurableBankCore(path, first_serial=99_999, **OPTIONS)  # the header's serial wins
    assert again.replayed > 12
    assert _state(again) == _state(twin)
    assert again.stats()["faults"]["committed"], "the offences were replayed too"


def test_a_resent_reference_after_restart_is_answered_not_executed_again(tmp_path):
    path = tmp_path / "bank.state"
    first = DurableBankCore(path, first_serial=1, **OPTIONS)
    (answer,) = [m for m in first.receive(_instruction(1), 10.0) if isinstance(m, base.Result)]
    balance = first.balance("6200001111222233")
    first.close()  # the process dies here, before the answer reached the gateway

    restarted = DurableBankCore(path, first_serial=1, **OPTIONS)
    (again,) = [m for m in restarted.receive(_instruction(1), 20.0) if isinstance(m, base.Result)]
    assert (again.ref, again.succeeded, again.host_seq_no, again.code) == \
           (answer.ref, answer.succeeded, answer.host_seq_no, answer.code)
    assert restarted.executions[_instruction(1).seq_no] == 1
    assert restarted.duplicates[_instruction(1).seq_no] == 1
    assert restarted.balance("6200001111222233") == balance


def test_unacknowledged_notices_are_pending_again_after_restart(tmp_path):
    path = tmp_path / "bank.state"
    core = DurableBankCore(path, first_serial=1, **{**OPTIONS, "faults": frozenset(), "failure_rate": 0.0})
    out = core.receive(_instruction(1), 1.0)
    movement = next(m for m in out if isinstance(m, base.Movement))
    core.close()
    restarted = DurableBankCore(path, first_serial=1, **{**OPTIONS, "faults": frozenset(), "failure_rate": 0.0})
    assert [m.seq_no for m in restarted.pending_pushes()] == [movement.seq_no]
    restarted.receive(base.Ack(seq_no="A1", reply_to=movement.seq_no), 2.0)
    restarted.close()
    assert DurableBankCore(path, first_serial=1, **{**OPTIONS, "faults": frozenset(),
                                                    "failure_rate": 0.0}).pending_pushes() == []


def test_a_line_cut_short_by_a_kill_is_dropped(tmp_path):
    path = tmp_path / "bank.state"
    core = DurableBankCore(path, first_serial=1, **OPTIONS)
    core.receive(_instruction(1), 1.0)
    core.close()
    with open(path, "ab") as f:
        f.write(b'{"op":"receive","now":2.0,"arg":{"kind":"Instr')  # no newline: the kill came mid-write
    restarted = DurableBankCore(path, first_serial=1, **OPTIONS)
    assert restarted.replayed == 1
    assert sum(restarted.executions.values()) == 1


def test_other_options_are_refused(tmp_path):
    path = tmp_path / "bank.state"
    DurableBankCore(path, first_serial=1, **OPTIONS).close()
    with pytest.raises(JournalMismatch, match="other options"):
        DurableBankCore(path, first_serial=1, **{**OPTIONS, "failure_rate": 0.5})
    path.write_bytes(b'{"something": "else"}\n')
    with pytest.raises(JournalMismatch, match="not a simulated bank"):
        DurableBankCore(path, first_serial=1, **OPTIONS)


def test_the_journal_is_readable_by_its_owner_only(tmp_path):
    old = os.umask(0)
    try:
        DurableBankCore(tmp_path / "bank.state", first_serial=1, **OPTIONS).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "bank.state").stat().st_mode) == 0o600


def test_from_json_reverses_to_json_for_every_kind_a_gateway_sends():
    for message in (_instruction(3), base.StatusQuery(seq_no="Q", ref="R", ref_date=_dt.date(2026, 1, 2)),
                    base.BalanceQuery(seq_no="B", account="62"), base.Ack(seq_no="A", reply_to="M", ok=False),
                    base.SignOn(seq_no="S", node="D00000"), base.Heartbeat(seq_no="H", node="D00000")):
        assert base.from_json(base.to_json(message)) == message
    with pytest.raises(ValueError):
        base.from_json({"kind": "Nonsense"})
