"""The simulated bank misbehaving on purpose: each offence, its evidence, its schedule.

Every offence must leave exactly the bank-side evidence the supervision ledger
rule of the same name looks for, at the transfers :func:`fault_schedule` names,
and never without the option.  The last test feeds a faulty bank's output to
the real matcher and counts the alerts.
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import (
    Ack,
    Balance,
    BalanceQuery,
    Entry,
    Message,
    Movement,
    Receipt,
    Result,
    iter_adapter_names,
    load_adapter,
)
from gateway.simulate.bank import CODE_INSUFFICIENT_FUNDS, BankCore
from gateway.simulate.bank_faults import (
    BANK_FAULTS,
    FAULT_AMOUNT_RANGE,
    FAULT_BALANCE_DRIFT,
    FAULT_COUNTERPARTY_ACCOUNT,
    FAULT_COUNTERPARTY_BANK_CODE,
    FAULT_COUNTERPARTY_NAME,
    FAULT_MISMATCH_EXTRA,
    FAULT_OFF_REGISTER_ACCOUNT,
    FAULT_SUMMARIES,
    Offence,
    fault_schedule,
    offences_in,
    parse_faults,
)
from tests.kit.bank_peer import make_instruction

DEBIT = "6200001111222233"
OWN_CREDIT = "6200004444555566"
OPENING = 10**9
T0 = 1_735_700_000.0  # 2025-01-01 10:53:20 CST


def core(faults: set[str] | frozenset[str] = frozenset(), **options: Any) -> BankCore:
    kwargs: dict[str, Any] = {"node": "105000", "accounts": {DEBIT: OPENING, OWN_CREDIT: 0},
                              "faults": frozenset(faults)}
    kwargs.update(options)
    return BankCore(**kwargs)


def ref(i: int) -> str:
    return f"52240250101{i:09d}"


def of(messages: list[Message], kind: type) -> list[Any]:
    return [m for m in messages if isinstance(m, kind)]


def entries(messages: list[Message]) -> list[Entry]:
    return [e for m in of(messages, Movement) for e in m.entries]


def transfer(bank: BankCore, i: int, now: float = T0, **fields: Any) -> list[Message]:
    return bank.receive(make_instruction(ref(i), amount=fields.pop("amount", 10_000), **fields), now)


def balance_answer(bank: BankCore, account: str = DEBIT, now: float = T0) -> int:
    (answer,) = bank.receive(BalanceQuery(seq_no="B1", account=account), now)
    assert isinstance(answer, Balance)
    assert answer.available == answer.balance
    return answer.balance


# -- names, parsing, validation -----------------------------------------------------


def test_the_fault_names_are_the_bank_side_ledger_rules_in_a_fixed_order() -> None:
    assert BANK_FAULTS == ("unsolicited-debit", "result-mismatch", "duplicate-execution", "balance-break",
                           "unregistered-counterparty", "unregistered-account")


@pytest.mark.parametrize("text,expected", [
    ("unsolicited-debit,result-mismatch,balance-break",
     {"unsolicited-debit", "result-mismatch", "balance-break"}),
    (" duplicate-execution , unregistered-account ", {"duplicate-execution", "unregistered-account"}),
    ("balance-break,balance-break", {"balance-break"}),
    ("", set()), ("  ", set()),
    ("all", set(BANK_FAULTS)),
])
def test_fault_lists_parse_to_sets_of_names(text: str, expected: set[str]) -> None:
    assert parse_faults(text) == frozenset(expected)


@pytest.mark.parametrize("text", ["unsolicited", "balance-break,overdraft", "result-mismatch,,balance-break",
                                  "balance-break,", "Balance-Break"])
def test_unknown_or_empty_fault_names_are_refused_naming_the_known_ones(text: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_faults(text)
    assert all(name in str(e.value) for name in BANK_FAULTS)


@pytest.mark.parametrize("options", [
    {"faults": frozenset({"overdraft"})},
    {"faults": frozenset({"balance-break"}), "fault_every": 0},
    {"faults": frozenset({"balance-break"}), "fault_every": -5},
    {"fault_every": 2.5}, {"fault_every": True}, {"fault_seed": "x"},
    {"faults": frozenset({"unregistered-account"}), "accounts": {FAULT_OFF_REGISTER_ACCOUNT: 0}},
    {"faults": frozenset({"unregistered-counterparty"}), "accounts": {FAULT_COUNTERPARTY_ACCOUNT: 0}},
])
def test_bad_fault_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        core(**options)


def test_a_bare_string_is_not_taken_as_a_set_of_faults() -> None:
    with pytest.raises(TypeError):
        BankCore(node="105000", accounts={DEBIT: 1}, faults="balance-break")  # type: ignore[arg-type]


def test_the_made_up_accounts_are_refused_only_when_their_fault_is_enabled() -> None:
    core(faults={"balance-break"}, accounts={FAULT_OFF_REGISTER_ACCOUNT: 0, FAULT_COUNTERPARTY_ACCOUNT: 0})


# -- the schedule -------------------------------------------------------------------


def test_the_schedule_spreads_the_enabled_offences_evenly_over_each_run() -> None:
    assert fault_schedule(BANK_FAULTS, 50) == {
        "unsolicited-debit": 1, "result-mismatch": 9, "duplicate-execution": 17, "balance-break": 26,
        "unregistered-counterparty": 34, "unregistered-account": 42}
    demo = {"unsolicited-debit", "result-mismatch", "balance-break"}
    assert fault_schedule(demo, 50) == {"unsolicited-debit": 1, "result-mismatch": 17, "balance-break": 34}
    assert fault_schedule(demo) == fault_schedule(demo, 50)
    assert fault_schedule({"balance-break"}, 7) == {"balance-break": 1}
    assert fault_schedule(set(), 50) == {}
    # Fewer transfers per run than offences: some share a transfer.
    assert fault_schedule(BANK_FAULTS, 4) == {
        "unsolicited-debit": 1, "result-mismatch": 1, "duplicate-execution": 2, "balance-break": 3,
        "unregistered-counterparty": 3, "unregistered-account": 4}


def test_a_demo_of_n_transfers_commits_each_offence_a_predictable_number_of_times() -> None:
    demo = {"unsolicited-debit", "result-mismatch", "balance-break"}
    assert offences_in(demo, 50, 0) == {"unsolicited-debit": 0, "result-mismatch": 0, "balance-break": 0}
    assert offences_in(demo, 50, 16) == {"unsolicited-debit": 1, "result-mismatch": 0, "balance-break": 0}
    assert offences_in(demo, 50, 200) == {"unsolicited-debit": 4, "result-mismatch": 4, "balance-break": 4}
    assert offences_in(demo, 50, 217) == {"unsolicited-debit": 5, "result-mismatch": 5, "balance-break": 4}
    with pytest.raises(ValueError):
        offences_in(demo, 50, -1)


@settings(max_examples=60, deadline=None)
@given(faults=st.sets(st.sampled_from(BANK_FAULTS)), every=st.integers(1, 9), n=st.integers(0, 40))
def test_the_bank_commits_exactly_what_the_schedule_predicts(faults: set[str], every: int, n: int) -> None:
    bank = core(faults, fault_every=every)
    offsets = fault_schedule(faults, every)
    for k in range(1, n + 1):
        bank.take_offences()
        transfer(bank, k, T0 + k)
        due = [f for f in BANK_FAULTS if f in offsets and k >= offsets[f] and (k - offsets[f]) % every == 0]
        assert [o.fault for o in bank.take_offences()] == due
        assert list(bank.offences_due(k)) == due
    committed = {f: c for f, c in offences_in(faults, every, n).items() if c}
    assert bank.stats()["faults"]["committed"] == committed
    assert bank.stats()["faults"]["booked_transfers"] == n


def test_failed_executions_do_not_advance_the_schedule() -> None:
    bank = core({"unsolicited-debit"}, fault_every=2, accounts={DEBIT: 10_000, OWN_CREDIT: 0})
    (refused,) = transfer(bank, 1, amount=20_000)
    assert refused.code == CODE_INSUFFICIENT_FUNDS
    assert bank.take_offences() == []
    out = transfer(bank, 2, amount=5_000)  # booked transfer 1: the offset of the only fault
    assert [o.fault for o in bank.take_offences()] == ["unsolicited-debit"]
    assert len(of(out, Movement)) == 2


def test_resends_do_not_advance_the_schedule_or_commit_again() -> None:
    bank = core({"unregistered-account"}, fault_every=2)
    first = transfer(bank, 1)
    assert len(of(first, Movement)) == 2
    for _ in range(3):
        again = transfer(bank, 1)
        assert of(again, Movement) == []
    assert bank.stats()["faults"]["booked_transfers"] == 1
    assert bank.offences["unregistered-account"] == 1


# -- each offence and its evidence --------------------------------------------------


def test_without_faults_the_bank_commits_no_offence_whatever_it_executes() -> None:
    bank = core()
    for i in range(1, 121):
        out = transfer(bank, i, T0 + i, amount=1_000 + i,
                       creditor_account=OWN_CREDIT if i % 3 == 0 else "6200009999000011")
        result = of(out, Result)[0]
        (movement,) = of(out, Movement)
        assert movement.entries[0].host_seq_no == result.host_seq_no
        assert all(e.summary == f"W{ref(i)[-8:]}" for e in movement.entries)
        assert all(e.account in (DEBIT, OWN_CREDIT) for e in movement.entries)
    assert balance_answer(bank) == bank.balance(DEBIT)
    stats = bank.stats()
    assert stats["max_executions_per_ref"] == 1
    assert stats["duplicate_executions_committed"] == 0
    assert stats["faults"]["committed"] == {} and stats["faults"]["balance_drift"] == {}
    assert stats["faults"]["off_book_balances"] == {}
    assert bank.take_offences() == []
    paid_out = sum(1_000 + i for i in range(1, 121) if i % 3)
    assert bank.balance(DEBIT) + bank.balance(OWN_CREDIT) == OPENING - paid_out


def test_unsolicited_debit_is_a_fresh_debit_naming_no_instruction() -> None:
    bank = core({"unsolicited-debit"}, fault_every=5)
    ins = make_instruction(ref(1), amount=25_000)
    out = bank.receive(ins, T0)
    result, own, extra = out
    assert isinstance(result, Result) and result.succeeded
    assert isinstance(own, Movement) and isinstance(extra, Movement)
    (debit,) = extra.entries
    low, high = FAULT_AMOUNT_RANGE
    assert debit.account == DEBIT and -high < debit.amount <= -low
    assert re.fullmatch(r"H[0-9]{12}", debit.host_seq_no)
    assert debit.host_seq_no not in (result.host_seq_no, own.entries[0].host_seq_no)
    assert debit.summary == FAULT_SUMMARIES["unsolicited-debit"] and debit.remark == ""
    assert not re.search(r"[A-Za-z0-9]", debit.summary), "the summary must name no reference"
    # Paid to a counterparty the gateway let through: the instruction's creditor.
    assert (debit.counterparty_account, debit.counterparty_name, debit.counterparty_bank_code) == (
        ins.creditor_account, ins.creditor_name, ins.creditor_bank_code)
    assert bank.balance(DEBIT) == OPENING - 25_000 + debit.amount == debit.balance_after
    assert bank.executions[ref(1)] == 1
    (offence,) = bank.take_offences()
    assert offence == Offence("unsolicited-debit", 1, ref(1), DEBIT, debit.host_seq_no, debit.amount, T0)
    for i in range(2, 6):  # not again until transfer 6
        assert len(of(transfer(bank, i), Movement)) == 1
    assert len(of(transfer(bank, 6), Movement)) == 2


def test_unsolicited_debit_to_an_own_account_books_the_credit_leg_too() -> None:
    bank = core({"unsolicited-debit"})
    out = transfer(bank, 1, amount=1_000, creditor_account=OWN_CREDIT)
    debit, credit = of(out, Movement)[1].entries
    assert debit.account == DEBIT and credit.account == OWN_CREDIT and credit.amount == -debit.amount
    assert bank.balance(DEBIT) + bank.balance(OWN_CREDIT) == OPENING


def test_result_mismatch_books_another_amount_than_instructed_and_reports_success() -> None:
    bank = core({"result-mismatch"}, fault_every=3)
    out = transfer(bank, 1, amount=25_000)
    result, movement = out
    assert isinstance(result, Result) and result.succeeded and result.code == "00000"
    (debit,) = movement.entries
    assert debit.amount == -(25_000 + FAULT_MISMATCH_EXTRA)
    assert debit.host_seq_no == result.host_seq_no
    assert bank.balance(DEBIT) == OPENING - 25_100 == debit.balance_after
    assert bank.executions[ref(1)] == 1
    assert [o.amount for o in bank.take_offences()] == [-25_100]
    # Transfers 2 and 3 are booked right; transfer 4 wrong again.
    assert [e.amount for i in (2, 3, 4) for e in entries(transfer(bank, i, amount=10_000))] == [
        -10_000, -10_000, -10_100]


def test_result_mismatch_on_an_own_transfer_credits_the_wrong_amount_as_well() -> None:
    bank = core({"result-mismatch"})
    debit, credit = entries(transfer(bank, 1, amount=1_000, creditor_account=OWN_CREDIT))
    assert (debit.amount, credit.amount) == (-1_100, 1_100)


def test_duplicate_execution_books_twice_under_two_serials_and_the_result_names_the_first() -> None:
    bank = core({"duplicate-execution"}, fault_every=4)
    out = transfer(bank, 1, amount=25_000)
    result, first, second = out
    assert isinstance(result, Result) and result.succeeded
    (d1,), (d2,) = first.entries, second.entries
    assert d1.amount == d2.amount == -25_000
    assert result.host_seq_no == d1.host_seq_no != d2.host_seq_no
    assert d2.summary == d1.summary == f"W{ref(1)[-8:]}" and d2.remark == d1.remark
    assert (d1.balance_after, d2.balance_after) == (OPENING - 25_000, OPENING - 50_000)
    assert bank.balance(DEBIT) == OPENING - 50_000
    assert bank.executions[ref(1)] == 2
    stats = bank.stats()
    assert stats["duplicate_executions_committed"] == 1
    assert stats["max_executions_per_ref"] == 2 and stats["max_executions_per_reference"] == 2
    # A resend still gets the first outcome, and is not executed a third time.
    (again,) = transfer(bank, 1, amount=25_000)
    assert isinstance(again, Result) and again.host_seq_no == d1.host_seq_no
    assert bank.executions[ref(1)] == 2
    for i in (2, 3, 4):
        transfer(bank, i)
    assert bank.stats()["max_executions_per_ref"] == 2
    assert bank.stats()["duplicate_executions_committed"] == 1
    transfer(bank, 5)
    assert bank.executions[ref(5)] == 2 and bank.stats()["duplicate_executions_committed"] == 2


def test_duplicate_execution_after_a_receipt_pushes_both_notices_after_the_result() -> None:
    bank = core({"duplicate-execution"}, delay=5.0)
    (receipt,) = transfer(bank, 1)
    assert isinstance(receipt, Receipt)
    result, first, second = bank.tick(T0 + 5)
    assert isinstance(result, Result) and result.reply_to == ref(1)
    assert bank.pending_pushes() == [result, first, second]
    assert bank.executions[ref(1)] == 2


def test_balance_break_makes_every_later_answer_drift_from_a_right_book() -> None:
    bank = core({"balance-break"}, fault_every=3)
    assert balance_answer(bank) == OPENING
    transfer(bank, 1, amount=1_000)  # booked transfer 1: the offence
    assert bank.balance(DEBIT) == OPENING - 1_000
    assert balance_answer(bank) == OPENING - 1_000 + FAULT_BALANCE_DRIFT
    assert bank.reported_balance(DEBIT) == OPENING - 1_000 + FAULT_BALANCE_DRIFT
    transfer(bank, 2, amount=1_000)
    transfer(bank, 3, amount=1_000)
    # Still off by the same drift: continuity holds again until the next offence.
    assert balance_answer(bank) == OPENING - 3_000 + FAULT_BALANCE_DRIFT
    (movement,) = of(transfer(bank, 4, amount=1_000), Movement)
    assert movement.entries[0].balance_after == OPENING - 4_000  # notices carry the true book
    assert balance_answer(bank) == OPENING - 4_000 + 2 * FAULT_BALANCE_DRIFT
    assert balance_answer(bank, OWN_CREDIT) == 0  # only the transfer's debit account drifts
    stats = bank.stats()
    assert stats["balances"][DEBIT] == OPENING - 4_000
    assert stats["faults"]["balance_drift"] == {DEBIT: 2 * FAULT_BALANCE_DRIFT}
    assert [o.amount for o in bank.take_offences()] == [FAULT_BALANCE_DRIFT, 2 * FAULT_BALANCE_DRIFT]
    assert bank.pending_pushes() == [m for m in bank.pending_pushes() if isinstance(m, Movement)]


def test_unregistered_counterparty_credits_the_account_from_a_made_up_payer() -> None:
    bank = core({"unregistered-counterparty"})
    _, _, notice = transfer(bank, 1, amount=1_000)
    (credit,) = notice.entries
    low, high = FAULT_AMOUNT_RANGE
    assert credit.account == DEBIT and low <= credit.amount < high
    assert (credit.counterparty_account, credit.counterparty_name, credit.counterparty_bank_code) == (
        FAULT_COUNTERPARTY_ACCOUNT, FAULT_COUNTERPARTY_NAME, FAULT_COUNTERPARTY_BANK_CODE)
    assert credit.summary == FAULT_SUMMARIES["unregistered-counterparty"]
    assert bank.balance(DEBIT) == OPENING - 1_000 + credit.amount == credit.balance_after
    assert balance_answer(bank) == bank.balance(DEBIT)


def test_unregistered_account_books_on_an_account_the_bank_does_not_hold() -> None:
    bank = core({"unregistered-account"}, fault_every=2)
    _, _, notice = transfer(bank, 1, amount=1_000)
    (entry,) = notice.entries
    low, high = FAULT_AMOUNT_RANGE
    assert entry.account == FAULT_OFF_REGISTER_ACCOUNT and low <= entry.amount < high
    assert entry.counterparty_account == "" and entry.balance_after == entry.amount
    assert bank.balance(FAULT_OFF_REGISTER_ACCOUNT) is None
    assert bank.receive(BalanceQuery(seq_no="B", account=FAULT_OFF_REGISTER_ACCOUNT), T0) == []
    assert bank.balance(DEBIT) == OPENING - 1_000
    transfer(bank, 2)
    (second,) = entries(transfer(bank, 3))[1:]
    assert second.balance_after == entry.amount + second.amount
    stats = bank.stats()
    assert FAULT_OFF_REGISTER_ACCOUNT not in stats["balances"]
    assert stats["faults"]["off_book_balances"] == {FAULT_OFF_REGISTER_ACCOUNT: entry.amount + second.amount}


def test_offence_notices_stay_pending_until_the_gateway_acknowledges_them() -> None:
    bank = core(set(BANK_FAULTS), fault_every=1)
    out = transfer(bank, 1)
    notices = of(out, Movement)
    # Own notice, unsolicited debit, duplicate, unregistered counterparty, unregistered account.
    assert len(notices) == 5
    assert bank.pending_pushes() == notices
    bank.receive(Ack(seq_no="A0", reply_to=notices[1].seq_no, ok=False, code="X"), T0)
    assert bank.pending_pushes() == notices
    for i, n in enumerate(notices):
        bank.receive(Ack(seq_no=f"A{i + 1}", reply_to=n.seq_no), T0)
    assert bank.pending_pushes() == []
    assert len({n.seq_no for n in notices}) == 5
    hosts = [e.host_seq_no for e in entries(out)]
    assert len(set(hosts)) == len(hosts)


def test_offences_sharing_a_transfer_compose() -> None:
    """With every offence on one transfer the duplicate repeats the wrong amount."""
    bank = core({"result-mismatch", "duplicate-execution"}, fault_every=1)
    first, second = entries(transfer(bank, 1, amount=5_000))
    assert first.amount == second.amount == -5_100
    assert bank.balance(DEBIT) == OPENING - 10_200


def test_seeded_amounts_reproduce_and_depend_on_the_fault_seed() -> None:
    def amounts(seed: int) -> list[int]:
        bank = core({"unsolicited-debit", "unregistered-counterparty", "unregistered-account"},
                    fault_every=1, fault_seed=seed)
        for i in range(1, 11):
            transfer(bank, i)
        return [o.amount for o in bank.take_offences()]

    assert amounts(1) == amounts(1)
    assert amounts(1) != amounts(2)
    assert len(set(amounts(1))) > 20


@pytest.mark.parametrize("adapter_name", sorted(iter_adapter_names()))
def test_every_offence_notice_crosses_the_wire_of_every_adapter(adapter_name: str) -> None:
    from tests.adapters.profiles import profile_for

    adapter = load_adapter(adapter_name)
    profile = profile_for(adapter_name, adapter)
    if profile.kinds and "Movement" not in profile.kinds:
        pytest.skip(f"{adapter_name} is poll-only: no notice is pushed; movements come in statements")
    bank = core(set(BANK_FAULTS), fault_every=1)
    for notice in of(transfer(bank, 1), Movement):
        frame = adapter.encode(notice, sender="105000", receiver="D00000")
        assert adapter.decode(frame) == notice


def test_stats_describe_the_faults_and_are_json() -> None:
    bank = core({"balance-break", "unsolicited-debit"}, fault_every=10, fault_seed=3)
    transfer(bank, 1)
    stats = json.loads(json.dumps(bank.stats(), ensure_ascii=False))
    assert stats["faults"]["enabled"] == ["unsolicited-debit", "balance-break"]
    assert stats["faults"]["every"] == 10 and stats["faults"]["seed"] == 3
    assert stats["faults"]["schedule"] == {"unsolicited-debit": 1, "balance-break": 6}
    assert stats["faults"]["committed"] == {"unsolicited-debit": 1}


# -- properties ---------------------------------------------------------------------

_steps = st.lists(
    st.tuples(st.sampled_from(["pay-out", "pay-own", "resend", "balance", "ack"]),
              st.integers(1, 30_000)),
    max_size=40,
)


@settings(max_examples=120, deadline=None)
@given(faults=st.sets(st.sampled_from(BANK_FAULTS)), every=st.integers(1, 6), steps=_steps,
       delay=st.sampled_from([0.0, 2.0]))
def test_every_fen_is_notified_and_only_the_balance_answers_lie(
        faults: set[str], every: int, steps: list[tuple[str, int]], delay: float) -> None:
    """Whatever the offences, the notices account for the whole book (an account's
    opening plus its entries is its balance) and a Balance answer differs from the
    book by exactly the drift of the balance-break offences committed on it."""
    opening = {DEBIT: 200_000, OWN_CREDIT: 0}
    bank = core(faults, fault_every=every, accounts=dict(opening), delay=delay)
    notified: Counter[str] = Counter()
    last_after: dict[str, int | None] = {}
    sent: dict[str, tuple[int, bool]] = {}  # ref -> (amount, paid out of the bank)
    succeeded: set[str] = set()

    def take(out: list[Message]) -> None:
        succeeded.update(r.ref for r in of(out, Result) if r.succeeded)
        for e in entries(out):
            notified[e.account] += e.amount
            last_after[e.account] = e.balance_after

    now = T0
    for i, (op, amount) in enumerate(steps):
        now += 1
        if op in ("pay-out", "pay-own"):
            creditor = OWN_CREDIT if op == "pay-own" else "6200009999000011"
            take(bank.receive(make_instruction(ref(i), amount=amount, creditor_account=creditor), now))
            sent.setdefault(ref(i), (amount, op == "pay-out"))
        elif op == "resend" and sent:
            take(bank.receive(make_instruction(list(sent)[-1], amount=amount), now))
        elif op == "balance":
            answered = of(bank.receive(BalanceQuery(seq_no=f"B{i}", account=DEBIT), now), Balance)
            expected = bank.balance(DEBIT) + bank.offences["balance-break"] * FAULT_BALANCE_DRIFT
            assert [b.balance for b in answered] == [expected]
        else:
            for pushed in bank.pending_pushes()[:2]:
                bank.receive(Ack(seq_no=f"A{i}", reply_to=pushed.seq_no), now)
        take(bank.tick(now))
    take(bank.tick(now + 10))
    for account, start in opening.items():
        assert bank.balance(account) == start + notified[account]
        if account in last_after:
            assert last_after[account] == bank.balance(account)
    off_book = bank.stats()["faults"]["off_book_balances"]
    assert off_book.get(FAULT_OFF_REGISTER_ACCOUNT, 0) == notified[FAULT_OFF_REGISTER_ACCOUNT]
    assert set(notified) <= {DEBIT, OWN_CREDIT, FAULT_OFF_REGISTER_ACCOUNT}
    breaks = bank.offences["balance-break"]
    assert bank.reported_balance(DEBIT) == bank.balance(DEBIT) + breaks * FAULT_BALANCE_DRIFT
    booked = bank.stats()["faults"]["booked_transfers"]
    assert {f: c for f, c in bank.offences.items() if c} == {
        f: c for f, c in offences_in(faults, every, booked).items() if c}
    duplicates = bank.stats()["duplicate_executions_committed"]
    assert sum(bank.executions.values()) == bank.stats()["received"] + duplicates
    assert all(n <= 2 for n in bank.executions.values())
    if "duplicate-execution" not in faults:
        assert bank.stats()["max_executions_per_ref"] <= 1 and duplicates == 0
    if not faults:
        # Money is conserved: only transfers paid out of the bank leave it.
        paid_out = sum(amount for r, (amount, out) in sent.items() if out and r in succeeded)
        assert bank.balance(DEBIT) + bank.balance(OWN_CREDIT) == sum(opening.values()) - paid_out
        assert bank.balance(DEBIT) >= 0


# -- at the ledger ------------------------------------------------------------------


def test_the_ledger_matcher_raises_exactly_one_alert_per_offence() -> None:
    """A faulty bank's messages, copied as the gateway copies them, raise the rule of each offence
    and nothing else, as many times as the schedule says."""
    from gateway.ledger.matcher import (
        AccountInfo,
        CounterpartyInfo,
        Fact,
        Matcher,
        Registry,
        Thresholds,
    )
    from gateway.model import format_amount

    bank = core(set(BANK_FAULTS), fault_every=6)
    registry = Registry(accounts={DEBIT: AccountInfo("B001", "C52240", True)},
                        counterparties={"6200009999000011": CounterpartyInfo("张三", "105100000017")})
    matcher = Matcher(registry, Thresholds(large_amount=10**10, result_deadline_s=30, booking_deadline_s=10**6))
    seq = itertools.count(1)
    alerts: list[Any] = []

    def copy(kind: str, now: float, payload: dict[str, Any], *, account: str | None, iid: str | None = None,
             state: str | None = None) -> None:
        n = next(seq)
        fact = Fact(gateway="main", seq=n, event_id=f"E{n:08d}", kind=kind,
                    centre_id="C52240" if account == DEBIT else None, instruction_id=iid, bank_id="B001",
                    account=account, state=state, created_us=int(now * 1e6), payload=payload)
        alerts.extend(matcher.observe(fact, now))

    def relay(out: list[Message], iid: str, now: float) -> None:
        for m in out:
            if isinstance(m, Result):
                copy("instruction.state", now, {"bank_ref": m.ref, "result": {
                    "succeeded": m.succeeded, "host_seq_no": m.host_seq_no, "bank_seq_no": m.bank_seq_no,
                    "code": m.code, "text": m.text}}, account=DEBIT, iid=iid, state="succeeded")
            elif isinstance(m, Balance):
                assert m.as_of is not None
                copy("bank.balance", now, {"bank": "B001", "account": m.account, "balance": m.balance,
                                           "available": m.available, "overdraft": 0, "status": "0",
                                           "as_of": m.as_of.isoformat()}, account=m.account)
            elif isinstance(m, Movement):
                for e in m.entries:
                    copy("bank.movement", now, {
                        "bank": "B001", "account": e.account, "host_seq_no": e.host_seq_no, "amount": e.amount,
                        "value_date": e.value_date.isoformat(), "time": e.time.isoformat(),
                        "counterparty_account": e.counterparty_account, "counterparty_name": e.counterparty_name,
                        "counterparty_bank_code": e.counterparty_bank_code, "balance_after": e.balance_after,
                        "summary": e.summary, "remark": e.remark, "reversal": e.reversal}, account=e.account)

    now = T0
    for i in range(1, 13):
        now += 10
        ins = make_instruction(ref(i), amount=10_000 + i)
        body = {"instruction_id": ins.reference, "kind": "transfer", "debit_account": DEBIT,
                "creditor": {"account": ins.creditor_account, "name": ins.creditor_name,
                             "bank_code": ins.creditor_bank_code},
                "amount": format_amount(ins.amount), "purpose": ins.purpose, "memo": ins.memo,
                "approval_ref": None, "requested_date": "2025-01-01"}
        copy("instruction.state", now, {"instruction": body, "bank": "B001", "bank_ref": ins.seq_no},
             account=DEBIT, iid=ins.reference, state="received")
        relay(bank.receive(ins, now), ins.reference, now)
        now += 5
        relay(bank.receive(BalanceQuery(seq_no=f"B{i}", account=DEBIT), now), "", now)
    alerts.extend(matcher.tick(now + 1_000))
    assert Counter(a.rule for a in alerts) == offences_in(BANK_FAULTS, 6, 12) == {f: 2 for f in BANK_FAULTS}


def test_value_dates_of_offences_are_the_bank_local_date() -> None:
    bank = core({"unregistered-account"})
    (entry,) = entries(transfer(bank, 1, now=T0))[1:]
    assert entry.value_date == datetime.date(2025, 1, 1) and str(entry.time) == "10:53:20"


def test_the_link_logs_each_offence_with_the_account_masked() -> None:
    from twisted.internet.testing import MemoryReactorClock
    from twisted.logger import globalLogPublisher

    from gateway.simulate.bank_link import BankLink

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        link = BankLink(MemoryReactorClock(), core({"unregistered-account", "balance-break"}, fault_every=1),
                        load_adapter("bdc"),
                        bank_id="B001")
        link.receive(make_instruction(ref(1)))
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = [(e["fault"], e["account"], e["transfer"]) for e in events
              if e.get("log_format", "").startswith("bank.offence")]
    assert logged == [("balance-break", "************2233", 1), ("unregistered-account", "************9999", 1)]
