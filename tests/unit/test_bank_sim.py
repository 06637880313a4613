"""The simulated bank's pure core: execution, dedupe, outcomes, notices, fault knobs."""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import (
    Ack, Balance, BalanceQuery, Heartbeat, HeartbeatAnswer, Movement, NotFound, Receipt, Result,
    SignOn, SignOnAnswer, StatusQuery,
)
from gateway.simulate.bank import (
    CODE_HOST_DECLINED, CODE_INSUFFICIENT_FUNDS, CODE_INVALID_AMOUNT, CODE_OK, CODE_SIGN_ON_REFUSED,
    CODE_UNKNOWN_ACCOUNT, BankCore, parse_opening_balance,
)
from tests.kit.bank_peer import make_instruction

DEBIT = "6200001111222233"
OWN_CREDIT = "6200004444555566"
T0 = 1_735_700_000.0  # 2025-01-01 10:53:20 CST


def core(**options: object) -> BankCore:
    kwargs: dict[str, object] = {"node": "105000", "accounts": {DEBIT: 1_000_000, OWN_CREDIT: 0}}
    kwargs.update(options)
    return BankCore(**kwargs)  # type: ignore[arg-type]


def ref(i: int) -> str:
    return f"52240250101{i:09d}"


def only(messages: list, kind: type) -> list:
    return [m for m in messages if isinstance(m, kind)]


# -- execution and balances ------------------------------------------------------


def test_transfer_debits_the_account_and_answers_with_a_host_serial() -> None:
    bank = core()
    out = bank.receive(make_instruction(ref(1), amount=25_000), T0)
    result, movement = out
    assert isinstance(result, Result)
    assert result.succeeded and result.code == CODE_OK
    assert result.ref == ref(1) and result.reply_to == ref(1)
    assert re.fullmatch(r"H[0-9]{12}", result.host_seq_no)
    assert result.bank_seq_no
    assert bank.balance(DEBIT) == 975_000
    assert bank.executions[ref(1)] == 1


def test_movement_notice_carries_the_signed_debit_with_balance_after() -> None:
    bank = core()
    ins = make_instruction(ref(1), amount=25_000, reference="W0001", memo="提取")
    result, movement = bank.receive(ins, T0)
    assert isinstance(movement, Movement)
    (entry,) = movement.entries
    assert entry.account == DEBIT
    assert entry.amount == -25_000
    assert entry.host_seq_no == result.host_seq_no
    assert entry.balance_after == 975_000
    assert entry.counterparty_account == ins.creditor_account
    assert entry.counterparty_name == ins.creditor_name
    assert entry.counterparty_bank_code == ins.creditor_bank_code
    assert entry.summary == "W0001" and entry.remark == "提取"
    assert str(entry.value_date) == "2025-01-01" and str(entry.time) == "10:53:20"


def test_transfer_to_an_own_account_credits_it_and_notifies_both_legs() -> None:
    bank = core()
    _, movement = bank.receive(make_instruction(ref(1), amount=40_000, creditor_account=OWN_CREDIT), T0)
    assert bank.balance(DEBIT) == 960_000
    assert bank.balance(OWN_CREDIT) == 40_000
    debit, credit = movement.entries
    assert (debit.account, debit.amount) == (DEBIT, -40_000)
    assert (credit.account, credit.amount, credit.balance_after) == (OWN_CREDIT, 40_000, 40_000)
    assert credit.counterparty_account == DEBIT
    assert credit.host_seq_no != debit.host_seq_no


def test_insufficient_funds_fails_without_moving_money_or_notifying() -> None:
    bank = core()
    out = bank.receive(make_instruction(ref(1), amount=1_000_001), T0)
    (result,) = out
    assert not result.succeeded and result.code == CODE_INSUFFICIENT_FUNDS
    assert result.host_seq_no == ""
    assert bank.balance(DEBIT) == 1_000_000
    assert bank.pending_pushes() == []
    assert bank.executions[ref(1)] == 1
    assert bank.stats()["failed"] == 1


def test_unknown_debit_account_fails_with_its_code() -> None:
    bank = core()
    (result,) = bank.receive(make_instruction(ref(1), debit_account="999"), T0)
    assert not result.succeeded and result.code == CODE_UNKNOWN_ACCOUNT


def test_non_positive_amount_fails_with_its_code() -> None:
    bank = core()
    (result,) = bank.receive(make_instruction(ref(1), amount=0), T0)
    assert not result.succeeded and result.code == CODE_INVALID_AMOUNT
    assert bank.balance(DEBIT) == 1_000_000


# -- dedupe ----------------------------------------------------------------------


def test_resent_instruction_gets_the_original_outcome_and_is_not_executed_twice() -> None:
    bank = core()
    ins = make_instruction(ref(1), amount=25_000)
    first = bank.receive(ins, T0)[0]
    again = bank.receive(ins, T0 + 10)
    assert len(again) == 1
    second = again[0]
    assert isinstance(second, Result)
    assert (second.succeeded, second.host_seq_no, second.bank_seq_no, second.code) == (
        first.succeeded, first.host_seq_no, first.bank_seq_no, first.code)
    assert second.seq_no != first.seq_no
    assert bank.balance(DEBIT) == 975_000
    assert bank.executions[ref(1)] == 1
    assert bank.duplicates[ref(1)] == 1
    assert len(bank.pending_pushes()) == 1  # no second notice


def test_resent_failed_instruction_stays_failed_when_funds_have_since_arrived() -> None:
    bank = core(accounts={DEBIT: 100, OWN_CREDIT: 50_000})
    ins = make_instruction(ref(1), amount=10_000)
    assert bank.receive(ins, T0)[0].code == CODE_INSUFFICIENT_FUNDS
    refill = make_instruction(ref(2), debit_account=OWN_CREDIT, creditor_account=DEBIT, amount=50_000)
    assert bank.receive(refill, T0 + 1)[0].succeeded
    again = bank.receive(ins, T0 + 2)[0]
    assert not again.succeeded and again.code == CODE_INSUFFICIENT_FUNDS
    assert bank.balance(DEBIT) == 50_100
    assert bank.executions[ref(1)] == 1


def test_same_reference_with_other_content_is_counted_and_not_executed() -> None:
    bank = core()
    bank.receive(make_instruction(ref(1), amount=25_000), T0)
    answer = bank.receive(make_instruction(ref(1), amount=99_000), T0 + 1)[0]
    assert answer.succeeded
    assert bank.balance(DEBIT) == 975_000
    assert bank.stats()["conflicting_resends"] == 1
    assert bank.executions[ref(1)] == 1


def test_executions_are_also_counted_per_centre_reference() -> None:
    """One centre instruction sent under two bank references shows up as two executions."""
    bank = core()
    bank.receive(make_instruction(ref(1), reference="W42"), T0)
    bank.receive(make_instruction(ref(2), reference="W42"), T0)
    stats = bank.stats()
    assert stats["max_executions_per_ref"] == 1
    assert stats["max_executions_per_reference"] == 2
    assert stats["executions_by_reference"] == {"C52240/W42": 2}


_ops = st.lists(
    st.tuples(st.sampled_from(["send", "query", "tick", "ack"]), st.integers(0, 4), st.floats(0, 3)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=_ops, delay=st.sampled_from([0.0, 1.0, 2.5]), reply_within=st.sampled_from([0.0, 2.0]),
       failure_rate=st.sampled_from([0.0, 0.5]))
def test_any_mix_of_resends_and_queries_executes_each_reference_at_most_once(
        ops: list[tuple[str, int, float]], delay: float, reply_within: float, failure_rate: float) -> None:
    bank = core(accounts={DEBIT: 30_000, OWN_CREDIT: 0}, delay=delay, reply_within=reply_within,
                failure_rate=failure_rate, seed=7)
    now = T0
    first_outcome: dict[str, tuple[bool, str, str]] = {}
    for op, i, dt in ops:
        now += dt
        out: list = []
        if op == "send":
            out = bank.receive(make_instruction(ref(i), amount=10_000), now)
        elif op == "query":
            out = bank.receive(StatusQuery(seq_no=f"Q{i}{now}", ref=ref(i), ref_date=make_instruction().send_date), now)
        elif op == "tick":
            out = bank.tick(now)
        else:
            for pushed in bank.pending_pushes()[:1]:
                bank.receive(Ack(seq_no="A1", reply_to=pushed.seq_no), now)
        for m in only(out, Result):
            key = (m.succeeded, m.host_seq_no, m.code)
            assert first_outcome.setdefault(m.ref, key) == key, "an outcome changed"
    bank.tick(now + 10)
    assert all(n == 1 for n in bank.executions.values())
    assert bank.stats()["max_executions_per_ref"] <= 1
    # A bank without faults never misbehaves on purpose.
    assert bank.stats()["duplicate_executions_committed"] == 0
    assert bank.stats()["faults"]["committed"] == {} and bank.take_offences() == []
    assert bank.reported_balance(DEBIT) == bank.balance(DEBIT)
    assert sum(bank.executions.values()) == bank.stats()["received"]
    # Money is conserved: three debits of 100.00 at most fit in 300.00.
    assert bank.balance(DEBIT) >= 0
    assert bank.balance(DEBIT) + 10_000 * bank.stats()["succeeded"] == 30_000


# -- failure rate ----------------------------------------------------------------


def _outcomes(seed: int, order: list[int]) -> dict[str, bool]:
    bank = core(accounts={DEBIT: 10**12}, failure_rate=0.3, seed=seed)
    return {r.ref: r.succeeded for i in order for r in only(bank.receive(make_instruction(ref(i)), T0), Result)}


def test_failure_rate_is_reproducible_with_the_same_seed_whatever_the_order() -> None:
    forward = _outcomes(11, list(range(300)))
    assert forward == _outcomes(11, list(range(300)))
    assert forward == _outcomes(11, list(reversed(range(300))))
    failed = sum(not ok for ok in forward.values())
    assert 50 <= failed <= 130  # about 30 % of 300
    assert forward != _outcomes(12, list(range(300)))


def test_host_declined_transfers_move_no_money() -> None:
    bank = core(failure_rate=1.0)
    (result,) = bank.receive(make_instruction(ref(1)), T0)
    assert not result.succeeded and result.code == CODE_HOST_DECLINED
    assert bank.balance(DEBIT) == 1_000_000


# -- status queries and delayed execution ------------------------------------------


def test_status_query_for_an_unknown_reference_is_not_found() -> None:
    bank = core()
    (answer,) = bank.receive(StatusQuery(seq_no="Q1", ref=ref(9), ref_date=make_instruction().send_date), T0)
    assert isinstance(answer, NotFound)
    assert (answer.reply_to, answer.ref) == ("Q1", ref(9))


def test_status_query_after_execution_returns_the_stored_outcome() -> None:
    bank = core()
    first = bank.receive(make_instruction(ref(1)), T0)[0]
    (answer,) = bank.receive(StatusQuery(seq_no="Q1", ref=ref(1), ref_date=make_instruction().send_date), T0)
    assert isinstance(answer, Result) and answer.reply_to == "Q1"
    assert (answer.succeeded, answer.host_seq_no) == (True, first.host_seq_no)


def test_slow_execution_answers_with_a_receipt_then_pushes_the_result() -> None:
    bank = core(delay=5.0)
    ins = make_instruction(ref(1), amount=25_000)
    (receipt,) = bank.receive(ins, T0)
    assert isinstance(receipt, Receipt) and receipt.ref == ref(1) and receipt.reply_to == ref(1)
    assert bank.next_due() == T0 + 5
    query = StatusQuery(seq_no="Q1", ref=ref(1), ref_date=ins.send_date)
    assert isinstance(bank.receive(query, T0 + 1)[0], Receipt)
    assert isinstance(bank.receive(ins, T0 + 2)[0], Receipt)  # resend while executing
    assert bank.tick(T0 + 4.9) == []
    assert bank.balance(DEBIT) == 1_000_000
    result, movement = bank.tick(T0 + 5)
    assert isinstance(result, Result) and result.reply_to == ref(1) and result.succeeded
    assert result.bank_seq_no == receipt.bank_seq_no
    assert isinstance(movement, Movement)
    assert bank.next_due() is None
    assert bank.pending_pushes() == [result, movement]
    answer = bank.receive(replace(query, seq_no="Q2"), T0 + 6)[0]
    assert isinstance(answer, Result) and answer.host_seq_no == result.host_seq_no
    assert bank.executions[ref(1)] == 1
    assert bank.tick(T0 + 100) == []


def test_execution_within_reply_time_answers_the_instruction_itself_when_done() -> None:
    bank = core(delay=1.0, reply_within=3.0)
    assert bank.receive(make_instruction(ref(1)), T0) == []
    result, movement = bank.tick(T0 + 1)
    assert isinstance(result, Result) and result.reply_to == ref(1)
    assert bank.pending_pushes() == [movement]  # an answer is not a push


def test_pushes_stay_pending_until_acked_and_a_refused_ack_keeps_them() -> None:
    bank = core(delay=2.0)
    bank.receive(make_instruction(ref(1)), T0)
    result, movement = bank.tick(T0 + 2)
    assert bank.pending_pushes() == [result, movement]
    # Reconnect: the same pushes come again.
    assert bank.pending_pushes() == [result, movement]
    bank.receive(Ack(seq_no="A1", reply_to=movement.seq_no, ok=False, code="X"), T0 + 3)
    bank.receive(Ack(seq_no="A2", reply_to="no-such-push"), T0 + 3)
    assert bank.pending_pushes() == [result, movement]
    bank.receive(Ack(seq_no="A3", reply_to=movement.seq_no), T0 + 3)
    assert bank.pending_pushes() == [result]
    bank.receive(Ack(seq_no="A4", reply_to=result.seq_no), T0 + 4)
    assert bank.pending_pushes() == []
    counts = bank.stats()["counts"]
    assert (counts["acks"], counts["acks_refused"], counts["acks_unknown"]) == (2, 1, 1)


# -- link control, balances, knobs -------------------------------------------------


def test_sign_on_is_accepted_only_from_the_configured_gateway_node() -> None:
    bank = core(gateway_node="D00000")
    (ok,) = bank.receive(SignOn(seq_no="S1", node="D00000"), T0)
    assert isinstance(ok, SignOnAnswer) and ok.ok and ok.reply_to == "S1" and ok.node == "105000"
    (refused,) = bank.receive(SignOn(seq_no="S2", node="C52240"), T0)
    assert not refused.ok and refused.code == CODE_SIGN_ON_REFUSED


def test_heartbeat_is_answered() -> None:
    bank = core()
    (answer,) = bank.receive(Heartbeat(seq_no="P1", node="D00000"), T0)
    assert isinstance(answer, HeartbeatAnswer) and answer.reply_to == "P1"
    assert bank.receive(HeartbeatAnswer(seq_no="P2", reply_to=bank.heartbeat().seq_no, node="D00000"), T0) == []


def test_balance_query_reports_the_current_balance_and_unknown_accounts_get_no_answer() -> None:
    bank = core(account_names={DEBIT: "示例中心归集户"})
    bank.receive(make_instruction(ref(1), amount=1_000), T0)
    (balance,) = bank.receive(BalanceQuery(seq_no="B1", account=DEBIT), T0 + 1)
    assert isinstance(balance, Balance)
    assert (balance.balance, balance.available, balance.account_name) == (999_000, 999_000, "示例中心归集户")
    assert balance.as_of == datetime.datetime(2025, 1, 1, 10, 53, 21)  # bank local time, no zone
    assert bank.receive(BalanceQuery(seq_no="B2", account="42"), T0) == []
    assert bank.stats()["counts"]["balance_queries_unknown_account"] == 1


def test_silent_bank_answers_no_instruction_and_executes_nothing() -> None:
    bank = core(silent=True)
    assert bank.receive(make_instruction(ref(1)), T0) == []
    assert bank.tick(T0 + 100) == []
    assert bank.executions == {}
    assert isinstance(bank.receive(StatusQuery(seq_no="Q", ref=ref(1), ref_date=make_instruction().send_date), T0)[0],
                      NotFound)
    assert isinstance(bank.receive(Heartbeat(seq_no="P", node="D00000"), T0)[0], HeartbeatAnswer)


def test_without_result_pushes_a_slow_outcome_is_only_told_on_request() -> None:
    bank = core(delay=5.0, push_results=False)
    ins = make_instruction(ref(1))
    assert isinstance(bank.receive(ins, T0)[0], Receipt)
    (movement,) = bank.tick(T0 + 5)
    assert isinstance(movement, Movement)
    assert bank.pending_pushes() == [movement]
    (answer,) = bank.receive(StatusQuery(seq_no="Q", ref=ref(1), ref_date=ins.send_date), T0 + 6)
    assert isinstance(answer, Result) and answer.succeeded


def test_a_push_the_link_cannot_carry_can_be_discarded() -> None:
    bank = core()
    _, movement = bank.receive(make_instruction(ref(1)), T0)
    assert bank.discard_push(movement.seq_no)
    assert not bank.discard_push(movement.seq_no)
    assert bank.pending_pushes() == []
    assert bank.stats()["counts"]["pushes_discarded"] == 1


def test_unexpected_message_kinds_are_counted_and_not_answered() -> None:
    bank = core()
    assert bank.receive(Receipt(seq_no="X", reply_to="Y", ref="Z"), T0) == []
    assert bank.stats()["counts"]["unexpected.Receipt"] == 1


def test_drop_rate_is_seeded_and_bounded() -> None:
    first_draw = core(drop_rate=0.5, seed=3).draw_drop()
    a, b = core(drop_rate=0.5, seed=3), core(drop_rate=0.5, seed=3)
    seq_a = [a.draw_drop() for _ in range(200)]
    assert seq_a == [b.draw_drop() for _ in range(200)]
    assert 60 <= sum(seq_a) <= 140
    assert first_draw == seq_a[0]
    assert not any(core().draw_drop() for _ in range(50))
    always = core(drop_rate=1.0)
    assert all(always.draw_drop() for _ in range(50))


def test_own_serials_are_unique_and_short_and_host_serials_have_their_form() -> None:
    bank = core(accounts={DEBIT: 10**12, OWN_CREDIT: 0})
    seq_nos: list[str] = []
    hosts: list[str] = []
    for i in range(200):
        for m in bank.receive(make_instruction(ref(i), amount=1, creditor_account=OWN_CREDIT), T0):
            seq_nos.append(m.seq_no)
            if isinstance(m, Movement):
                hosts.extend(e.host_seq_no for e in m.entries)
    seq_nos.append(bank.heartbeat().seq_no)
    assert len(set(seq_nos)) == len(seq_nos)
    assert all(len(s) <= 20 for s in seq_nos)
    assert len(set(hosts)) == len(hosts) == 400
    assert all(re.fullmatch(r"H[0-9]{12}", h) for h in hosts)


def test_restarted_bank_gets_serials_past_the_previous_run() -> None:
    before = core(first_serial=BankCore.serial_start_for(T0))
    used = [before.next_seq_no() for _ in range(5000)]
    after = core(first_serial=BankCore.serial_start_for(T0 + 1))
    assert after.next_seq_no() not in used


def test_outcomes_made_are_handed_out_once_for_logging() -> None:
    bank = core(delay=1.0)
    bank.receive(make_instruction(ref(1)), T0)
    assert bank.take_executed() == []
    bank.tick(T0 + 1)
    bank.receive(make_instruction(ref(1)), T0 + 2)  # a resend makes no new outcome
    (outcome,) = bank.take_executed()
    assert outcome.ref == ref(1) and outcome.succeeded and outcome.executed_at == T0 + 1
    assert bank.take_executed() == []
    assert bank.outcome(ref(1)) == outcome


def test_stats_are_json_and_summarise_the_run() -> None:
    bank = core(delay=1.0)
    bank.receive(make_instruction(ref(1)), T0)
    bank.receive(make_instruction(ref(1)), T0)
    bank.receive(make_instruction(ref(2), amount=10**9), T0)
    bank.tick(T0 + 1)
    stats = json.loads(json.dumps(bank.stats()))
    assert stats["received"] == 2 and stats["executed"] == 2
    assert stats["succeeded"] == 1 and stats["failed"] == 1 and stats["duplicates"] == 1
    assert stats["executions"] == {ref(1): 1, ref(2): 1}
    assert stats["balances"] == {DEBIT: 990_000, OWN_CREDIT: 0}
    assert stats["pending_pushes"] == 3  # result 1, movement 1, result 2
    assert stats["duplicate_executions_committed"] == 0
    assert stats["faults"] == {"enabled": [], "every": 50, "seed": 0, "schedule": {}, "booked_transfers": 1,
                               "committed": {}, "balance_drift": {}, "off_book_balances": {}}
    assert "executions" not in bank.stats(per_reference=False)


@pytest.mark.parametrize("text,expected", [("6200=1000000.00", ("6200", 100_000_000)),
                                           ("A-1=0", ("A-1", 0)), ("X=12.5", ("X", 1250))])
def test_opening_balances_parse_to_fen(text: str, expected: tuple[str, int]) -> None:
    assert parse_opening_balance(text) == expected


@pytest.mark.parametrize("text", ["6200", "=1.00", "6200=-1", "6200=1.005", "6200=1e3", "6200= 1"])
def test_bad_opening_balances_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_opening_balance(text)


@pytest.mark.parametrize("options", [{"failure_rate": 1.5}, {"drop_rate": -0.1}, {"delay": -1},
                                     {"node": "1050001"}, {"accounts": {DEBIT: -1}},
                                     {"accounts": {DEBIT: 1.5}}, {"first_serial": 0},
                                     {"faults": frozenset({"no-such-fault"})}, {"fault_every": 0}])
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        core(**options)
