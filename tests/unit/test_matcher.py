"""The ledger's matcher (gateway/ledger/matcher.py): every rule, both ways, and its properties.

Facts are built as the gateway files them (gateway/copies.py): copies whose
payload is the JSON text of the journal, parsed by ``Fact.from_copy``.  Time is
passed in; nothing here touches a reactor or a clock.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import random
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ledger.matcher import (
    AccountInfo, AlertDraft, CounterpartyInfo, Fact, Matcher, Registry, StreamClock, Thresholds, forged_copy_alert,
)
from gateway.ledger.rules import RULES
from gateway.model import format_amount

CENTRE = "C52240"
BANK = "B001"
SPECIAL = "6200001111222233"        # 归集户, a special account
EXPENSE = "6200001111229999"        # registered, not special
OTHER_BANK_ACCOUNT = "6222002222333344"  # registered at B002
UNKNOWN_ACCOUNT = "6200005555666677"
CP = "6200009999000011"
CP_NAME = "张三"
CP_BANK = "105100000017"
CP2 = "6222008888000022"
UNREGISTERED_CP = "6299990000000099"
DAY = "2026-11-27"

REGISTRY = Registry(
    accounts={
        SPECIAL: AccountInfo(bank=BANK, centre=CENTRE, special=True),
        EXPENSE: AccountInfo(bank=BANK, centre=CENTRE, special=False),
        OTHER_BANK_ACCOUNT: AccountInfo(bank="B002", centre=CENTRE, special=True),
    },
    counterparties={
        CP: CounterpartyInfo(name=CP_NAME, bank_code=CP_BANK),
        CP2: CounterpartyInfo(name="示例房地产开发有限公司", bank_code="102100000030"),
    },
)
LARGE = 100_000_000  # 1,000,000.00 CNY
TH = Thresholds(large_amount=LARGE, result_deadline_s=60.0, booking_deadline_s=300.0)
T0 = 10_000.0
AFTER_ALL = T0 + 5_000.0   # past every deadline of facts observed near T0
START_US = int(_dt.datetime(2026, 11, 27, 10, 0, tzinfo=_dt.timezone(_dt.timedelta(hours=8)))
               .timestamp() * 1_000_000)


# -- building copies ---------------------------------------------------------------


class Journal:
    """One gateway's journal: hands out copies in seq order, exactly shaped as gateway/copies.py says."""

    def __init__(self, gateway: str = "main", prefix: str = "a1b2c3") -> None:
        self.gateway = gateway
        self.prefix = prefix
        self.seq = 0
        self.now_us = START_US

    def copy(self, kind: str, payload: dict[str, Any], *, centre_id: str | None = None,
             instruction_id: str | None = None, bank_id: str | None = None,
             account: str | None = None, state: str | None = None) -> dict[str, Any]:
        self.seq += 1
        self.now_us += 1_000
        return {
            "gateway": self.gateway, "seq": self.seq,
            "event_id": f"{self.now_us:014x}{self.prefix}{self.seq:04x}",
            "kind": kind, "centre_id": centre_id, "instruction_id": instruction_id,
            "bank_id": bank_id, "account": account, "state": state, "created_us": self.now_us,
            "payload": json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True),
            "raw": None, "adapter": "bdc", "hash": "0" * 64,
            "signature": "c2lnbmF0dXJl", "signature_alg": "ed25519",
        }

    def _state(self, iid: str, state: str, payload: dict[str, Any], debit: str) -> dict[str, Any]:
        return self.copy("instruction.state", payload, centre_id=CENTRE, instruction_id=iid,
                         bank_id=BANK, account=debit, state=state)

    def instruction(self, iid: str, amount: int, *, ref: str | None, debit: str = SPECIAL,
                    cp: str = CP, cp_name: str = CP_NAME, cp_bank: str = CP_BANK,
                    approval: str | None = None, rejected: str | None = None) -> dict[str, Any]:
        body = {"instruction_id": iid, "kind": "transfer", "debit_account": debit,
                "creditor": {"account": cp, "name": cp_name, "bank_code": cp_bank},
                "amount": format_amount(amount), "purpose": "withdrawal", "memo": "提取",
                "approval_ref": approval, "requested_date": DAY}
        payload: dict[str, Any] = {"instruction": body, "bank": BANK, "bank_ref": ref}
        if rejected:
            payload["reason"] = rejected
        return self._state(iid, "rejected" if rejected else "received", payload, debit)

    def progress(self, iid: str, state: str, ref: str, *, debit: str = SPECIAL,
                 reason: str = "") -> dict[str, Any]:
        payload: dict[str, Any] = {"bank_ref": ref}
        if reason:
            payload["reason"] = reason
        return self._state(iid, state, payload, debit)

    def result(self, iid: str, ref: str, *, succeeded: bool = True, host: str = "",
               debit: str = SPECIAL) -> dict[str, Any]:
        payload = {"bank_ref": ref, "result": {"succeeded": succeeded, "host_seq_no": host,
                                               "bank_seq_no": "D" + host, "code": "0000" if succeeded else "E001",
                                               "text": "成功" if succeeded else "失败"}}
        return self._state(iid, "succeeded" if succeeded else "failed", payload, debit)

    def movement(self, account: str, host: str, amount: int, *, at: str = "10:02:00",
                 cp: str = CP, cp_name: str = CP_NAME, cp_bank: str = CP_BANK, summary: str = "",
                 remark: str = "", bank: str = BANK, reversal: bool = False) -> dict[str, Any]:
        payload = {"account": account, "host_seq_no": host, "amount": amount, "value_date": DAY,
                   "time": at, "counterparty_account": cp, "counterparty_name": cp_name,
                   "counterparty_bank_code": cp_bank, "balance_after": None, "summary": summary,
                   "remark": remark, "reversal": reversal, "bank": bank}
        return self.copy("bank.movement", payload, centre_id=CENTRE, bank_id=bank, account=account)

    def balance(self, account: str, balance: int, *, at: str = "09:00:00", bank: str = BANK) -> dict[str, Any]:
        payload = {"account": account, "balance": balance, "available": balance, "overdraft": 0,
                   "status": "0", "as_of": f"{DAY}T{at}", "bank": bank}
        return self.copy("bank.balance", payload, centre_id=CENTRE, bank_id=bank, account=account)

    def booking(self, booking_id: str, amount: int, *, iid: str | None = None,
                host: str | None = None, account: str = SPECIAL) -> dict[str, Any]:
        payload = {"booking_id": booking_id, "instruction_id": iid, "host_seq_no": host,
                   "account": account, "amount": format_amount(amount), "voucher_no": "V" + booking_id,
                   "booked_on": DAY}
        return self.copy("booking", payload, centre_id=CENTRE)


def ref_of(n: int) -> str:
    return f"52240261127{n:09d}"


def host_of(n: int) -> str:
    return f"H{n:012d}"


def payment(j: Journal, n: int, amount: int, *, approval: str | None = None,
            at: str | None = None, debit: str = SPECIAL, cp: str = CP) -> dict[str, dict[str, Any]]:
    """A clean payment: received -> sent -> accepted -> succeeded, its debit and its booking."""
    iid, ref, host = f"I{n}", ref_of(n), host_of(n)
    return {
        "received": j.instruction(iid, amount, ref=ref, approval=approval, debit=debit, cp=cp),
        "sent": j.progress(iid, "sent", ref, debit=debit),
        "accepted": j.progress(iid, "accepted", ref, debit=debit),
        "succeeded": j.result(iid, ref, host=host, debit=debit),
        "debit": j.movement(debit, host, -amount, at=at or f"10:{n % 60:02d}:30", summary=iid, cp=cp),
        "booking": j.booking(f"BK{n}", -amount, iid=iid, account=debit),
    }


def world(j: Journal, amount: int = 250_000, **kw: Any) -> list[dict[str, Any]]:
    """Balance before, one clean payment, balance after: the whole of a quiet morning."""
    before = 10_000_000_00
    p = payment(j, 1, amount, **kw)
    return [j.balance(SPECIAL, before, at="09:00:00"), *p.values(),
            j.balance(SPECIAL, before - amount, at="11:00:00")]


def facts(copies: Iterable[dict[str, Any]]) -> list[Fact]:
    return [Fact.from_copy(c) for c in copies]


def run(copies: Iterable[dict[str, Any]], *, thresholds: Thresholds = TH, registry: Registry = REGISTRY,
        step: float = 1.0, final_tick: float | None = AFTER_ALL) -> list[AlertDraft]:
    """Observe every copy (``step`` seconds apart from T0), then tick once past every deadline."""
    m = Matcher(registry, thresholds)
    out: list[AlertDraft] = []
    now = T0
    for f in facts(copies):
        out += m.observe(f, now)
        now += step
    if final_tick is not None:
        out += m.tick(final_tick)
    return out


def rules_of(alerts: Iterable[AlertDraft]) -> list[str]:
    return sorted(a.rule for a in alerts)


def only(alerts: list[AlertDraft], rule: str) -> AlertDraft:
    found = [a for a in alerts if a.rule == rule]
    assert len(found) == 1, alerts
    return found[0]


# -- the clean world ------------------------------------------------------------------


def test_a_clean_payment_with_balances_and_booking_raises_nothing() -> None:
    assert run(world(Journal())) == []


def test_every_rule_named_in_the_design_is_known() -> None:
    assert set(RULES) == {
        "unsolicited-debit", "missing-result", "result-mismatch", "duplicate-execution",
        "balance-break", "unregistered-counterparty", "large-amount", "booking-mismatch",
        "unregistered-account",
    }


# -- unsolicited-debit ----------------------------------------------------------------


def test_unsolicited_debit_on_a_special_account_is_critical_after_the_deadline() -> None:
    j = Journal()
    m = Matcher(REGISTRY, TH)
    debit = Fact.from_copy(j.movement(SPECIAL, "H900", -500_000, summary="手续费以外的支出"))
    assert m.observe(debit, T0) == []          # held: its instruction may still be coming
    assert m.tick(T0 + 59.9) == []
    alerts = m.tick(T0 + 60.0)
    a = only(alerts, "unsolicited-debit")
    assert a.severity == "critical"
    assert a.key == f"unsolicited-debit:{BANK}:{SPECIAL}:H900"
    assert a.subject == SPECIAL and a.evidence == (debit.event_id,)
    assert m.tick(T0 + 10_000) == []           # once


def test_unsolicited_debit_on_a_non_special_account_is_major() -> None:
    j = Journal()
    alerts = run([j.movement(EXPENSE, "H901", -100, cp="")])
    assert only(alerts, "unsolicited-debit").severity == "major"


def test_debit_arriving_before_its_result_is_not_unsolicited_when_the_result_follows_in_time() -> None:
    j = Journal()
    p = payment(j, 1, 250_000)
    p_debit_without_summary = j.movement(SPECIAL, host_of(1), -250_000, at="10:01:30")
    m = Matcher(REGISTRY, TH)
    assert m.observe(Fact.from_copy(p_debit_without_summary), T0) == []
    for i, key in enumerate(("received", "sent", "accepted", "succeeded")):
        assert m.observe(Fact.from_copy(p[key]), T0 + 30 + i) == []
    assert m.observe(Fact.from_copy(p["booking"]), T0 + 40) == []
    assert m.tick(AFTER_ALL) == []


def test_debit_is_matched_by_the_bank_reference_in_its_remark() -> None:
    j = Journal()
    received = j.instruction("I7", 1000, ref=ref_of(7))
    debit = j.movement(SPECIAL, "H-OTHER", -1000, remark=f"HPF{ref_of(7)}")  # no result host at all
    assert "unsolicited-debit" not in rules_of(run([debit, received]))


def test_an_instruction_id_in_the_summary_matches_only_a_debit_on_the_instruction_account() -> None:
    j = Journal()
    received = j.instruction("I1", 1000, ref=ref_of(1))
    elsewhere = j.movement(EXPENSE, "H8", -1000, summary="I1")   # short ids collide easily
    assert rules_of(run([received, elsewhere])) == ["missing-result", "unsolicited-debit"]


def test_a_whole_morning_delivered_backwards_raises_nothing() -> None:
    assert run(list(reversed(world(Journal())))) == []


def test_debit_whose_result_comes_after_the_deadline_is_unsolicited() -> None:
    j = Journal()
    p = payment(j, 1, 250_000)
    m = Matcher(REGISTRY, TH)
    m.observe(Fact.from_copy(j.movement(SPECIAL, host_of(1), -250_000)), T0)
    assert rules_of(m.tick(T0 + 61)) == ["unsolicited-debit"]
    # The late result still links the debit; nothing else is wrong, so nothing more.
    for key in ("received", "sent", "accepted", "succeeded", "booking"):
        assert m.observe(Fact.from_copy(p[key]), T0 + 70) == []


# -- missing-result ---------------------------------------------------------------------


def test_missing_result_fires_from_tick_only_after_the_deadline_and_once() -> None:
    j = Journal()
    p = payment(j, 1, 250_000)
    m = Matcher(REGISTRY, TH)
    for i, key in enumerate(("received", "sent", "accepted")):
        assert m.observe(Fact.from_copy(p[key]), T0 + i) == []
    assert m.tick(T0 + 59.5) == []
    a = only(m.tick(T0 + 60.5), "missing-result")
    assert a.key == f"missing-result:{CENTRE}/I1" and a.severity == "major"
    assert "accepted" in a.summary and len(a.evidence) == 3
    assert m.tick(T0 + 120) == [] and m.tick(AFTER_ALL) == []


def test_pending_deadlines_are_counted_by_rule_until_they_run_and_survive_a_restore() -> None:
    """What hpf_ledger_deadlines_pending exports: the fault suite waits on it before counting alerts."""
    j = Journal()
    p = payment(j, 1, 250_000)
    m = Matcher(REGISTRY, TH)
    for i, key in enumerate(("received", "sent", "accepted", "succeeded")):
        m.observe(Fact.from_copy(p[key]), T0 + i)
    assert m.pending()["result"] == 1 and m.pending()["booking"] == 1
    restored = Matcher.restore(REGISTRY, TH, json.loads(json.dumps(m.snapshot())))
    assert restored.pending() == m.pending()
    m.tick(T0 + 60.5)  # the result deadline runs (no alert: the result came), the booking's not yet
    assert m.pending()["result"] == 0 and m.pending()["booking"] == 1
    m.tick(AFTER_ALL)
    assert m.pending()["booking"] == 0
    assert all(n >= 0 for n in m.pending().values())


def test_missing_result_is_silent_when_the_result_arrives_in_time() -> None:
    j = Journal()
    p = payment(j, 1, 250_000)
    m = Matcher(REGISTRY, TH)
    for i, key in enumerate(("received", "sent", "accepted")):
        m.observe(Fact.from_copy(p[key]), T0 + i)
    m.observe(Fact.from_copy(p["succeeded"]), T0 + 59)
    assert "missing-result" not in rules_of(m.tick(T0 + 61))


def test_in_doubt_raises_missing_result_at_once_and_not_again_at_the_deadline() -> None:
    j = Journal()
    ref = ref_of(1)
    m = Matcher(REGISTRY, TH)
    m.observe(Fact.from_copy(j.instruction("I1", 1000, ref=ref)), T0)
    m.observe(Fact.from_copy(j.progress("I1", "accepted", ref)), T0)
    alerts = m.observe(Fact.from_copy(j.progress("I1", "in_doubt", ref, reason="no answer to 5 queries")), T0 + 1)
    assert only(alerts, "missing-result").summary.endswith("no answer to 5 queries")
    assert m.tick(AFTER_ALL) == []


def test_failed_result_counts_as_a_result() -> None:
    j = Journal()
    ref = ref_of(1)
    copies = [j.instruction("I1", 1000, ref=ref), j.progress("I1", "sent", ref),
              j.result("I1", ref, succeeded=False)]
    assert run(copies) == []


@pytest.mark.parametrize("resolution", [
    {"succeeded": True, "evidence": "statement line 12", "operator": "ops1"},
    {"succeeded": True, "evidence": "statement line 12", "proposed_by": "hpf://operator/ops1",
     "confirmed_by": "hpf://operator/ops2"},
], ids=["one operator", "proposer and confirmer"])
def test_a_manual_resolution_settles_an_in_doubt_instruction_like_a_result(resolution: dict[str, Any]) -> None:
    """The operator's resolution is the final state: the debit it explains is not unsolicited."""
    j = Journal()
    ref = ref_of(1)
    copies = [j.instruction("I1", 250_000, ref=ref), j.progress("I1", "accepted", ref),
              j.progress("I1", "in_doubt", ref, reason="no answer to 5 queries"),
              j._state("I1", "succeeded", {"bank_ref": ref, "resolution": resolution}, SPECIAL),
              j.movement(SPECIAL, host_of(1), -250_000, summary="I1"),
              j.booking("BK1", -250_000, iid="I1")]
    assert rules_of(run(copies)) == ["missing-result"]  # the in_doubt's own, and nothing after it


# -- result-mismatch ---------------------------------------------------------------------


def test_result_mismatch_when_the_debit_amount_differs_from_the_instruction() -> None:
    j = Journal()
    p = payment(j, 1, 250_000)
    p["debit"] = j.movement(SPECIAL, host_of(1), -250_001, summary="I1")
    alerts = run(p.values())
    a = only(alerts, "result-mismatch")
    assert a.key == f"result-mismatch:{CENTRE}/I1:{BANK}:{SPECIAL}:{host_of(1)}"
    assert "amount 2500.01 instead of 2500.00" in a.summary
    assert Fact.from_copy(p["debit"]).event_id in a.evidence


def test_result_mismatch_silent_when_amount_account_and_counterparty_agree() -> None:
    j = Journal()
    assert "result-mismatch" not in rules_of(run(payment(j, 1, 250_000).values()))


def test_result_mismatch_when_the_money_went_to_another_counterparty() -> None:
    j = Journal()
    p = payment(j, 1, 250_000)
    p["debit"] = j.movement(SPECIAL, host_of(1), -250_000, cp=CP2, cp_name="示例房地产开发有限公司",
                            cp_bank="102100000030", summary="I1")
    assert "counterparty 6222008888000022" in only(run(p.values()), "result-mismatch").summary


def test_result_mismatch_when_the_bank_reports_failure_but_debits() -> None:
    j = Journal()
    ref = ref_of(1)
    copies = [j.instruction("I1", 1000, ref=ref), j.progress("I1", "sent", ref),
              j.result("I1", ref, succeeded=False, host="H77"),
              j.movement(SPECIAL, "H77", -1000, summary="I1")]
    a = only(run(copies), "result-mismatch")
    assert "failed" in a.summary


# -- duplicate-execution -----------------------------------------------------------------


def test_duplicate_execution_when_two_debits_match_one_instruction() -> None:
    j = Journal()
    p = payment(j, 1, 250_000)
    second = j.movement(SPECIAL, "H-AGAIN", -250_000, summary="I1", at="10:40:00")
    a = only(run([*p.values(), second]), "duplicate-execution")
    assert a.severity == "critical" and a.key == f"duplicate-execution:{CENTRE}/I1"
    assert Fact.from_copy(second).event_id in a.evidence


def test_the_same_debit_reported_twice_is_one_execution_and_counted_once_in_the_balance() -> None:
    j = Journal()
    copies = world(j)
    # The debit again, now from a statement: a new event id, the same content.
    again = j.movement(SPECIAL, host_of(1), -250_000, at="10:01:30", summary="I1 对账单")
    assert run([*copies, again]) == []


def test_duplicate_execution_when_one_host_serial_comes_back_with_another_amount() -> None:
    j = Journal()
    first = j.movement(SPECIAL, "H5", 100_000, cp=CP)
    second = j.movement(SPECIAL, "H5", 900_000, cp=CP)
    a = only(run([first, second]), "duplicate-execution")
    assert a.key == f"duplicate-execution:{BANK}:{SPECIAL}:H5"


def test_a_conflicting_report_delivered_twice_alerts_once_and_counts_once_in_the_balance() -> None:
    j = Journal()
    first = j.movement(SPECIAL, "H5", 100_000, cp=CP, at="10:00:00")
    second = j.movement(SPECIAL, "H5", 900_000, cp=CP, at="10:00:00")
    # The gateway keeps both (its dedupe key includes the amount), so both are in the balance.
    copies = [j.balance(SPECIAL, 0, at="09:00:00"), first, second, second,
              j.balance(SPECIAL, 1_000_000, at="11:00:00")]
    assert rules_of(run(copies)) == ["duplicate-execution"]


def test_three_instructions_sharing_a_host_serial_raise_one_alert() -> None:
    j = Journal()
    copies = [c for n in (1, 2, 3) for c in (j.instruction(f"I{n}", 1000, ref=ref_of(n)),
                                              j.result(f"I{n}", ref_of(n), host="H9"))]
    dup = [a for a in run(copies) if a.rule == "duplicate-execution"]
    assert [a.key for a in dup] == [f"duplicate-execution:{BANK}:H9"]


def test_duplicate_execution_when_two_instructions_get_the_same_host_serial() -> None:
    j = Journal()
    copies = [j.instruction("I1", 1000, ref=ref_of(1)), j.result("I1", ref_of(1), host="H9"),
              j.instruction("I2", 2000, ref=ref_of(2)), j.result("I2", ref_of(2), host="H9")]
    a = only(run(copies), "duplicate-execution")
    assert a.key == f"duplicate-execution:{BANK}:H9"


# -- balance-break ------------------------------------------------------------------------


def test_balance_break_when_a_snapshot_is_one_fen_off() -> None:
    j = Journal()
    copies = world(j)
    copies[-1] = j.balance(SPECIAL, 10_000_000_00 - 250_000 - 1, at="11:00:00")
    m = Matcher(REGISTRY, TH)
    for i, f in enumerate(facts(copies)):
        assert m.observe(f, T0 + i) == []     # judged only once the interval has settled
    a = only(m.tick(AFTER_ALL), "balance-break")
    assert a.severity == "critical"
    assert a.key == f"balance-break:{BANK}:{SPECIAL}:{Fact.from_copy(copies[-1]).event_id}"
    assert "off by -0.01" in a.summary
    assert Fact.from_copy(copies[5]).event_id in a.evidence     # the debit in between


def test_balance_break_silent_within_tolerance() -> None:
    j = Journal()
    copies = world(j)
    copies[-1] = j.balance(SPECIAL, 10_000_000_00 - 250_000 - 1, at="11:00:00")
    lenient = Thresholds(large_amount=LARGE, result_deadline_s=60, booking_deadline_s=300,
                         balance_tolerance=1)
    assert run(copies, thresholds=lenient) == []


def test_balance_accepts_a_movement_stamped_exactly_at_the_snapshot_time_either_way() -> None:
    for included in (True, False):
        j = Journal()
        p = payment(j, 1, 250_000, at="11:00:00")
        opening = 10_000_000_00
        after = opening - 250_000 if included else opening   # the 11:00 snapshot may lack it
        later = opening - 250_000                            # the 12:00 one has it for sure
        copies = [j.balance(SPECIAL, 10_000_000_00, at="09:00:00"), *p.values(),
                  j.balance(SPECIAL, after, at="11:00:00"), j.balance(SPECIAL, later, at="12:00:00")]
        assert run(copies) == [], included


def _clock(second: int) -> str:
    return f"{10 + second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"


def test_balance_holds_the_first_movements_of_its_own_second_and_the_next_one_the_rest() -> None:
    """A busy account: five credits in the second 10:00:01, the snapshot of that second taken
    after the second of them, the next snapshot after all five (and one more credit)."""
    j = Journal()
    copies = [j.balance(SPECIAL, 1_000, at="10:00:00")]
    credits = [1, 20, 300, 4_000, 50_000]
    for n, amount in enumerate(credits[:2]):
        copies.append(j.movement(SPECIAL, host_of(n), amount, at="10:00:01", cp=SPECIAL))
    copies.append(j.balance(SPECIAL, 1_000 + 21, at="10:00:01"))
    for n, amount in enumerate(credits[2:], 2):
        copies.append(j.movement(SPECIAL, host_of(n), amount, at="10:00:01", cp=SPECIAL))
    copies.append(j.movement(SPECIAL, host_of(9), 600_000, at="10:00:02", cp=SPECIAL))
    copies.append(j.balance(SPECIAL, 1_000 + sum(credits) + 600_000, at="10:00:03"))
    assert "balance-break" not in rules_of(run(copies))


def test_balance_break_when_a_snapshot_holds_movements_of_its_second_out_of_the_banks_order() -> None:
    """Of three credits in its second, a snapshot can hold the first, the first two or all
    three; never the first and the third without the second."""
    for held, breaks in ((1, False), (3, False), (7, False), (5, True), (6, True)):
        j = Journal()
        copies = [j.balance(SPECIAL, 0, at="10:00:00")]
        copies += [j.movement(SPECIAL, host_of(n), 1 << n, at="10:00:01", cp=SPECIAL) for n in range(3)]
        copies.append(j.balance(SPECIAL, held, at="10:00:01"))
        assert ("balance-break" in rules_of(run(copies))) is breaks, held


def test_two_snapshots_in_one_second_differ_by_the_movements_reported_between_them() -> None:
    for (first, second), breaks in (((1, 7), False), ((7, 1), False), ((1, 3), False), ((0, 5), True)):
        j = Journal()
        copies = [j.balance(SPECIAL, 0, at="10:00:00")]
        copies += [j.movement(SPECIAL, host_of(n), 1 << n, at="10:00:01", cp=SPECIAL) for n in range(3)]
        copies += [j.balance(SPECIAL, first, at="10:00:01"), j.balance(SPECIAL, second, at="10:00:01")]
        assert ("balance-break" in rules_of(run(copies))) is breaks, (first, second)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.tuples(st.just("move"), st.integers(-10**6, 10**6).filter(bool), st.booleans()),
                          st.tuples(st.just("snapshot"), st.just(0), st.booleans())), max_size=60),
       st.sampled_from([0.001, 1.0, 30.0]))
def test_an_honest_busy_account_never_breaks_its_balance(ops: list[tuple[str, int, bool]], step: float) -> None:
    """Movements and snapshots of one account as a bank reports them: whole-second times,
    many movements a second, snapshots between any two; the copies arrive in that order,
    at any pace.  No balance-break: this failed while a snapshot had to hold all or none of
    its second's movements."""
    j = Journal()
    balance, second = 5_000_000, 0
    copies = [j.balance(SPECIAL, balance, at=_clock(second))]
    for n, (kind, amount, tick) in enumerate(ops):
        second += tick
        if kind == "move":
            balance += amount
            copies.append(j.movement(SPECIAL, host_of(n), amount, at=_clock(second), cp=SPECIAL))
        else:
            copies.append(j.balance(SPECIAL, balance, at=_clock(second)))
    copies.append(j.balance(SPECIAL, balance, at=_clock(second + 1)))
    assert "balance-break" not in rules_of(run(copies, step=step))


def test_balance_break_when_money_moved_without_a_reported_movement() -> None:
    j = Journal()
    copies = [j.balance(SPECIAL, 500_000, at="09:00:00"), j.balance(SPECIAL, 400_000, at="10:00:00")]
    assert rules_of(run(copies)) == ["balance-break"]


# -- the stream clock: deadlines on the gateway's time -------------------------------------


def test_the_stream_clock_holds_the_ledger_back_by_how_far_the_copies_lag() -> None:
    def us(s: float) -> int:
        return int(s * 1_000_000)

    c = StreamClock()
    assert c.copy("main", us(1000), wall=500.0) == 500.0   # the first copy sets the offset
    assert c.copy("main", us(1001), wall=502.0) == 501.0   # made 1 s later, here 2 s later
    assert c.now(510.0) == 509.0                           # quiet: runs in real time, 1 s back
    assert c.copy("main", us(1002), wall=520.0) == 509.0   # now 18 s behind: never backwards
    assert c.now(528.0) == 510.0
    assert c.copy("main", us(1029), wall=529.0) == 529.0   # caught up
    assert c.copy("north", us(1), wall=530.0) == 530.0     # each gateway has its own offset
    assert c.copy("north", us(3), wall=540.0) == 532.0     # and the one furthest behind counts
    assert c.copy("main", us(1040), wall=541.0) == 533.0


def test_a_gateway_clock_stepped_back_and_journalled_does_not_hold_the_ledger_back() -> None:
    """A gateway's clock steps back an hour between two copies; it journals the step first in the
    transaction that first stamps the stepped time, and the ledger reads its later copies an hour
    on.  Without ``step_s`` the same copies hold every deadline back by the hour."""
    def us(s: float) -> int:
        return int(s * 1_000_000)

    for told in (True, False):
        c = StreamClock()
        assert c.copy("main", us(1000), wall=500.0) == 500.0
        assert c.copy("main", us(1001), wall=501.0) == 501.0
        step = c.copy("main", us(1002 - 3600), wall=502.0, step_s=-3600.0 if told else 0.0)
        assert step == 502.0                                     # reported or seen: no stall
        assert c.copy("main", us(1003 - 3600), wall=503.0) == 503.0
        assert c.now(520.0) == 520.0
        assert c.copy("north", us(7), wall=521.0) == 521.0       # the other gateways are unaffected

    # An unreported step smaller than the skew two nodes may show is not one: copies late.
    c = StreamClock()
    c.copy("main", us(1000), wall=500.0)
    assert c.copy("main", us(999), wall=501.0) == 500.0          # 1 s behind: held 1 s, not re-based


def test_a_gateway_clock_stepped_forwards_then_back_is_undone_both_times() -> None:
    """Forwards an hour, then back (NTP correcting an operator): both journalled, both undone; the
    step back is not mistaken for copies an hour late (which the forward step's floor would make it)."""
    def us(s: float) -> int:
        return int(s * 1_000_000)

    c = StreamClock()
    c.copy("main", us(1000), wall=500.0)
    assert c.copy("main", us(1001 + 3600), wall=501.0, step_s=3600.0) == 501.0
    assert c.copy("main", us(1010 + 3600), wall=510.0) == 510.0
    assert c.copy("main", us(1011), wall=511.0, step_s=-3600.0) == 511.0
    assert c.copy("main", us(1012), wall=530.0) == 512.0         # a real lag still holds it back


def test_the_ledgers_own_time_does_not_step_with_its_host_clock() -> None:
    from gateway.clock import ClockWatch, steady_clock

    wall, mono = [1_000.0], [5.0]
    clock = steady_clock(lambda: wall[0], lambda: mono[0])
    watch = ClockWatch(wall_ns=lambda: int(wall[0] * 1e9), mono_ns=lambda: int(mono[0] * 1e9))
    wall[0], mono[0] = wall[0] + 10 - 3600, mono[0] + 10                # 10 s on, the host stepped back
    assert clock() == 1_010.0
    assert watch.stepped_s() == -3600.0
    reading = watch.read()
    assert reading.step_us == -3600 * 10**6 and reading.before_us == 1_010 * 10**6
    watch.settle(reading)
    wall[0], mono[0] = wall[0] + 0.5, mono[0] + 0.5
    assert watch.read().step_us == 0                                    # recorded once


def _lagging(copies: list[dict[str, Any]], lag_per_copy: float, clock: StreamClock | None,
             until: float) -> list[AlertDraft]:
    """Feed ``copies`` as a ledger falling behind does: each reaches it ``lag_per_copy`` s
    later than the one before, relative to when the gateway made it; the matcher ticks
    every second, on the ledger's own clock (``clock`` None) or on ``clock``."""
    start = copies[0]["created_us"] / 1e6
    arrivals = [(T0 + (c["created_us"] / 1e6 - start) + n * lag_per_copy, c) for n, c in enumerate(copies)]
    m = Matcher(REGISTRY, TH)
    out: list[AlertDraft] = []
    wall = T0
    while wall < until:
        while arrivals and arrivals[0][0] <= wall:
            _, c = arrivals.pop(0)
            now = wall if clock is None else clock.copy(c["gateway"], c["created_us"], wall)
            out += m.observe(Fact.from_copy(c), now)
        out += m.tick(wall if clock is None else clock.now(wall))
        wall += 0.5
    return out


def test_a_ledger_falling_behind_raises_no_missing_result_for_a_result_the_gateway_had_in_time() -> None:
    """The gateway had the result a few milliseconds after the instruction; the ledger, behind
    and falling further, gets it 70 s after (the deadline is 60).  On the ledger's own clock
    that was a missing result; on the stream clock it is not, and an instruction that really
    never ends still alerts once 60 s of the gateway's time have passed."""
    j = Journal()
    p = payment(j, 1, 250_000)
    copies = [p["received"], p["sent"], p["accepted"], p["succeeded"], j.instruction("I2", 1_000, ref=ref_of(2))]
    assert "missing-result" in rules_of(_lagging(copies[:4], 23.5, None, until=T0 + 200))
    alerts = _lagging(copies, 23.5, StreamClock(), until=T0 + 500)
    assert [a.key for a in alerts if a.rule == "missing-result"] == [f"missing-result:{CENTRE}/I2"]


# -- unregistered-counterparty -----------------------------------------------------------


def test_unregistered_counterparty_on_a_debit_is_major_and_on_the_instruction_too() -> None:
    j = Journal()
    p = payment(j, 1, 250_000, cp=UNREGISTERED_CP)
    alerts = [a for a in run(p.values()) if a.rule == "unregistered-counterparty"]
    assert {a.key for a in alerts} == {
        f"unregistered-counterparty:{CENTRE}/I1",
        f"unregistered-counterparty:{BANK}:{SPECIAL}:{host_of(1)}",
    }
    assert {a.severity for a in alerts} == {"major"}


def test_rejected_attempt_to_pay_an_unregistered_counterparty_is_a_minor_alert() -> None:
    j = Journal()
    copy = j.instruction("I1", 1000, ref=None, cp=UNREGISTERED_CP, rejected="counterparty not registered")
    a = only(run([copy]), "unregistered-counterparty")
    assert a.severity == "minor" and "rejected attempt" in a.summary


def test_money_received_from_an_unregistered_counterparty_is_minor() -> None:
    j = Journal()
    a = only(run([j.movement(SPECIAL, "H3", 5_000, cp=UNREGISTERED_CP, cp_name="某单位")]),
             "unregistered-counterparty")
    assert a.severity == "minor"


def test_registered_counterparties_and_own_accounts_raise_nothing() -> None:
    j = Journal()
    copies = [j.movement(SPECIAL, "H3", 5_000, cp=CP2, cp_bank="102100000030"),
              j.movement(SPECIAL, "H4", 6_000, cp=EXPENSE, cp_bank="")]
    assert run(copies) == []


def test_registered_counterparty_account_at_another_bank_code_is_unregistered() -> None:
    j = Journal()
    copy = j.movement(SPECIAL, "H3", 5_000, cp=CP, cp_bank="999999999999")
    assert rules_of(run([copy])) == ["unregistered-counterparty"]


# -- large-amount ----------------------------------------------------------------------------


def test_large_amount_instruction_at_the_threshold_fires_and_one_fen_below_does_not() -> None:
    at = run(payment(Journal(), 1, LARGE).values())
    below = run(payment(Journal(), 1, LARGE - 1).values())
    a = only(at, "large-amount")
    assert a.key == f"large-amount:{CENTRE}/I1" and a.severity == "major"
    assert below == []


def test_large_amount_with_an_approval_reference_is_minor_and_its_debit_is_not_repeated() -> None:
    alerts = run(payment(Journal(), 1, LARGE, approval="SP2026-0042").values())
    a = only(alerts, "large-amount")
    assert a.severity == "minor" and "SP2026-0042" in a.summary


def test_large_amount_movement_at_the_threshold_fires_and_one_fen_below_does_not() -> None:
    j = Journal()
    at = run([j.movement(SPECIAL, "H1", LARGE, cp=CP)])
    below = run([j.movement(SPECIAL, "H2", LARGE - 1, cp=CP)])
    a = only(at, "large-amount")
    assert a.key == f"large-amount:{BANK}:{SPECIAL}:H1" and a.severity == "minor"
    assert below == []


def test_large_unmatched_debit_is_major_and_one_fen_below_is_only_unsolicited() -> None:
    j = Journal()
    at = run([j.movement(SPECIAL, "H1", -LARGE)])
    below = run([j.movement(SPECIAL, "H2", -(LARGE - 1))])
    assert only(at, "large-amount").severity == "major"
    assert rules_of(at) == ["large-amount", "unsolicited-debit"]
    assert rules_of(below) == ["unsolicited-debit"]


# -- booking-mismatch ------------------------------------------------------------------------


def test_booking_mismatch_when_the_booked_amount_differs() -> None:
    j = Journal()
    p = payment(j, 1, 250_000)
    p["booking"] = j.booking("BK1", -205_000, iid="I1")
    a = only(run(p.values()), "booking-mismatch")
    assert a.key == f"booking-mismatch:{CENTRE}/I1" and "-2050.00" in a.summary


def test_booking_mismatch_silent_when_the_booking_matches() -> None:
    assert "booking-mismatch" not in rules_of(run(payment(Journal(), 1, 250_000).values()))


def test_missing_booking_fires_only_after_the_booking_deadline_once() -> None:
    j = Journal()
    p = payment(j, 1, 250_000)
    del p["booking"]
    m = Matcher(REGISTRY, TH)
    for f in facts(p.values()):
        assert m.observe(f, T0) == []
    assert m.tick(T0 + 299) == []
    a = only(m.tick(T0 + 300), "booking-mismatch")
    assert "no booking" in a.summary
    assert m.tick(AFTER_ALL) == []


def test_a_booking_arriving_before_the_instruction_is_fine() -> None:
    j = Journal()
    p = payment(j, 1, 250_000)
    booking = p.pop("booking")
    assert run([booking, *p.values()]) == []


def test_booking_of_an_instruction_that_failed_is_a_mismatch() -> None:
    j = Journal()
    ref = ref_of(1)
    copies = [j.instruction("I1", 1000, ref=ref), j.result("I1", ref, succeeded=False),
              j.booking("BK1", -1000, iid="I1")]
    assert "reported failure" in only(run(copies), "booking-mismatch").summary


def test_booking_naming_an_unknown_instruction_is_a_mismatch_after_the_deadline() -> None:
    j = Journal()
    m = Matcher(REGISTRY, TH)
    assert m.observe(Fact.from_copy(j.booking("BK9", -1000, iid="NOPE")), T0) == []
    assert m.tick(T0 + 299) == []
    a = only(m.tick(T0 + 300), "booking-mismatch")
    assert a.key == f"booking-mismatch:booking:{CENTRE}/BK9"


def test_booking_of_a_credit_by_host_serial_matches_its_movement() -> None:
    j = Journal()
    good = [j.movement(SPECIAL, "H50", 5_000, cp=CP), j.booking("BK50", 5_000, host="H50")]
    bad = [j.booking("BK51", 6_000, host="H51"), j.movement(SPECIAL, "H51", 5_000, cp=CP)]
    assert run(good) == []
    assert only(run(bad), "booking-mismatch").key == f"booking-mismatch:booking:{CENTRE}/BK51"


# -- unregistered-account --------------------------------------------------------------------


def test_unregistered_account_movement_is_major() -> None:
    j = Journal()
    a = only(run([j.movement(UNKNOWN_ACCOUNT, "H1", 5_000, cp=CP)]), "unregistered-account")
    assert a.severity == "major" and a.subject == UNKNOWN_ACCOUNT


def test_account_registered_at_another_bank_is_unregistered_for_this_bank() -> None:
    j = Journal()
    a = only(run([j.movement(OTHER_BANK_ACCOUNT, "H1", 5_000, cp=CP)]), "unregistered-account")
    assert "registered at bank B002" in a.summary


def test_registered_account_movement_raises_no_unregistered_account() -> None:
    j = Journal()
    assert run([j.movement(SPECIAL, "H1", 5_000, cp=CP)]) == []


# -- forged-copy -------------------------------------------------------------------------------


def test_forged_copy_alert_has_a_stable_key_and_no_control_characters() -> None:
    a = forged_copy_alert("main", "0005f3abc", "signature does not verify")
    assert (a.key, a.rule, a.severity, a.evidence) == ("forged-copy:main:0005f3abc", "forged-copy",
                                                        "major", ("0005f3abc",))
    hostile = forged_copy_alert("m\nx" * 100, "e\x00" * 100, "bad\r\n" * 100)
    assert hostile.key.isprintable() and len(hostile.key) < 200 and hostile.summary.isprintable()


# -- parsing copies ------------------------------------------------------------------------------


def test_from_copy_parses_the_payload_string() -> None:
    j = Journal()
    c = j.movement(SPECIAL, "H1", -250_000, summary="I1")
    f = Fact.from_copy(c)
    assert f.kind == "bank.movement" and f.bank_id == BANK and f.seq == 1
    assert f.payload["amount"] == -250_000 and f.payload["summary"] == "I1"


def _mutations() -> list[tuple[str, dict[str, Any]]]:
    j = Journal()
    movement = j.movement(SPECIAL, "H1", -100)
    received = j.instruction("I1", 1000, ref=ref_of(1))
    result = j.result("I1", ref_of(1), host="H1")
    booking = j.booking("BK1", -1000, iid="I1")

    def edit(copy: dict[str, Any], **changes: Any) -> dict[str, Any]:
        out = dict(copy)
        out.update(changes)
        return out

    def edit_payload(copy: dict[str, Any], fn: Any) -> dict[str, Any]:
        p = json.loads(copy["payload"])
        fn(p)
        return edit(copy, payload=json.dumps(p))

    return [
        ("no event id", {k: v for k, v in movement.items() if k != "event_id"}),
        ("unknown kind", edit(movement, kind="bank.rumour")),
        ("seq as string", edit(movement, seq="1")),
        ("seq as bool", edit(movement, seq=True)),
        ("payload already parsed", edit(movement, payload=json.loads(movement["payload"]))),
        ("payload not JSON", edit(movement, payload="{not json")),
        ("payload a list", edit(movement, payload="[1,2]")),
        ("payload with NaN", edit(movement, payload='{"amount": NaN}')),
        ("float amount", edit_payload(movement, lambda p: p.update(amount=-1.5))),
        ("bool amount", edit_payload(movement, lambda p: p.update(amount=True))),
        ("impossible date", edit_payload(movement, lambda p: p.update(value_date="2026-02-30"))),
        ("account disagrees", edit(movement, account=EXPENSE)),
        ("bank disagrees", edit(movement, bank_id="B002")),
        ("control char in id", edit(movement, event_id="abc\ndef")),
        ("overlong account", edit_payload(edit(movement, account=None), lambda p: p.update(account="6" * 33))),
        ("overlong centre", edit(movement, centre_id="C" * 17)),
        ("bad state", edit(received, state="paid")),
        ("body of another instruction", edit(received, instruction_id="I2")),
        ("amount as number", edit_payload(received, lambda p: p["instruction"].update(amount=10.0))),
        ("success flag contradicts state", edit_payload(result, lambda p: p["result"].update(succeeded=False))),
        ("instruction without centre", edit(result, centre_id=None)),
        ("booking amount with three decimals", edit_payload(booking, lambda p: p.update(amount="-1.234"))),
        ("booking without centre", edit(booking, centre_id=None)),
        ("not an object", ["gateway", "main"]),  # type: ignore[list-item]
    ]


@pytest.mark.parametrize("case,copy", _mutations(), ids=[c for c, _ in _mutations()])
def test_from_copy_refuses_a_malformed_copy_with_a_reason(case: str, copy: Any) -> None:
    with pytest.raises(ValueError, match="malformed copy: .+"):
        Fact.from_copy(copy)


# -- idempotence ---------------------------------------------------------------------------------


def test_observing_each_fact_twice_yields_nothing_the_second_time() -> None:
    j = Journal()
    p = payment(j, 1, LARGE, cp=UNREGISTERED_CP)   # alerts on first sight: large, unregistered
    m = Matcher(REGISTRY, TH)
    first: list[AlertDraft] = []
    for f in facts([j.balance(SPECIAL, 5, at="09:00:00"), *p.values()]):
        first += m.observe(f, T0)
        assert m.observe(f, T0 + 1) == []
    assert first, "the scenario must raise something for the test to mean anything"


def test_a_snapshot_does_not_change_when_the_matcher_goes_on() -> None:
    j = Journal()
    copies = world(j)
    m = Matcher(REGISTRY, TH)
    for f in facts(copies[:4]):
        m.observe(f, T0)
    snap = m.snapshot()
    frozen = json.dumps(snap, sort_keys=True)
    for f in facts(copies[4:]):
        m.observe(f, T0 + 1)
    m.tick(T0 + 100)
    assert json.dumps(snap, sort_keys=True) == frozen
    with pytest.raises(ValueError, match="version"):
        Matcher.restore(REGISTRY, TH, dict(snap, version=99))


def test_alert_keys_stay_within_the_ledger_key_column_even_with_the_longest_ids() -> None:
    j = Journal()
    centre, iid, account, host = "C" * 16, "I" * 32, "6" * 32, "H" * 64
    registry = Registry(accounts={account: AccountInfo(BANK, centre, True)}, counterparties={})
    copies = [j.copy("instruction.state", {"instruction": {
                  "instruction_id": iid, "kind": "transfer", "debit_account": account,
                  "creditor": {"account": "7" * 32, "name": "x", "bank_code": CP_BANK},
                  "amount": "1.00", "purpose": "other", "memo": "", "approval_ref": None,
                  "requested_date": DAY}, "bank": BANK, "bank_ref": "9" * 32},
                  centre_id=centre, instruction_id=iid, bank_id="B" * 16, account=account, state="received"),
              j.copy("instruction.state", {"bank_ref": "9" * 32, "result": {"succeeded": True, "host_seq_no": host}},
                     centre_id=centre, instruction_id=iid, bank_id="B" * 16, account=account, state="succeeded"),
              j.copy("bank.movement", {"account": account, "host_seq_no": host, "amount": -200,
                                       "value_date": DAY, "time": "10:00:00", "counterparty_account": "7" * 32},
                     centre_id=centre, bank_id="B" * 16, account=account)]
    alerts = run(copies, registry=registry)
    assert "result-mismatch" in rules_of(alerts)
    assert max(len(a.key) for a in alerts) <= 255


def test_thresholds_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        Thresholds(large_amount=0, result_deadline_s=1, booking_deadline_s=1)
    with pytest.raises(ValueError):
        Thresholds(large_amount=1, result_deadline_s=0, booking_deadline_s=1)
    with pytest.raises(ValueError):
        Thresholds(large_amount=1, result_deadline_s=1, booking_deadline_s=1, balance_tolerance=-1)
    assert Thresholds(1, 10, 20).retention == 60 and Thresholds(1, 10, 20, retention_s=5).retention == 30


# -- generated scenarios --------------------------------------------------------------------------

FAULTS = ("no_result", "in_doubt", "wrong_amount", "extra_debit", "no_booking", "bad_booking",
          "unregistered_cp", "failed", "rejected")


@dataclass
class Scenario:
    """A morning at one bank: payments (some faulty), stray movements, balances before and after."""

    copies: list[dict[str, Any]] = field(default_factory=list)
    expected_rules: set[str] = field(default_factory=set)


@st.composite
def scenarios(draw: st.DrawFn, faulty: bool) -> Scenario:
    j = Journal()
    s = Scenario()
    opening = 50_000_000_00
    moved = 0
    body: list[dict[str, Any]] = []
    n = draw(st.integers(1, 4))
    for i in range(1, n + 1):
        # Large amounts raise (legitimate) alerts, so only faulty scenarios use them.
        amounts = [1, 250_000, LARGE - 1, LARGE, 3 * LARGE] if faulty else [1, 250_000, LARGE - 1]
        amount = draw(st.sampled_from(amounts))
        approval = draw(st.sampled_from([None, f"SP-{i}"]))
        fault = draw(st.sampled_from(FAULTS)) if faulty and draw(st.booleans()) else None
        iid, ref, host, at = f"I{i}", ref_of(i), host_of(i), f"10:{i:02d}:00"
        cp = UNREGISTERED_CP if fault == "unregistered_cp" else CP
        if amount >= LARGE:
            s.expected_rules.add("large-amount")
        if fault == "rejected":
            body.append(j.instruction(iid, amount, ref=None, cp=UNREGISTERED_CP, rejected="unregistered"))
            s.expected_rules.add("unregistered-counterparty")
            continue
        body += [j.instruction(iid, amount, ref=ref, approval=approval, cp=cp),
                 j.progress(iid, "sent", ref), j.progress(iid, "accepted", ref)]
        if fault == "no_result":
            s.expected_rules.add("missing-result")
            continue
        if fault == "in_doubt":
            body.append(j.progress(iid, "in_doubt", ref, reason="no answer"))
            s.expected_rules.add("missing-result")
            continue
        if fault == "failed":
            body.append(j.result(iid, ref, succeeded=False))
            continue
        body.append(j.result(iid, ref, host=host))
        debit = amount + (1 if fault == "wrong_amount" else 0)
        body.append(j.movement(SPECIAL, host, -debit, at=at, summary=iid, cp=cp))
        moved -= debit
        if fault == "wrong_amount":
            s.expected_rules.add("result-mismatch")
            if debit >= LARGE:   # LARGE - 1 instructed, LARGE debited: the movement is large
                s.expected_rules.add("large-amount")
        if fault == "unregistered_cp":
            s.expected_rules.add("unregistered-counterparty")
        if fault == "extra_debit":
            body.append(j.movement(SPECIAL, host + "X", -amount, at=f"10:{i:02d}:30", summary=iid, cp=cp))
            moved -= amount
            s.expected_rules.add("duplicate-execution")
        if fault == "no_booking":
            s.expected_rules.add("booking-mismatch")
        else:
            booked = -amount - (100 if fault == "bad_booking" else 0)
            body.append(j.booking(f"BK{i}", booked, iid=iid))
            if fault == "bad_booking":
                s.expected_rules.add("booking-mismatch")
    if faulty and draw(st.booleans()):
        body.append(j.movement(SPECIAL, "H-STRAY", -77_700, at="10:59:00", summary="无指令"))
        moved -= 77_700
        s.expected_rules.add("unsolicited-debit")
    if faulty and draw(st.booleans()):
        body.append(j.movement(UNKNOWN_ACCOUNT, "H-ELSEWHERE", 1_000, at="10:58:00"))
        s.expected_rules.add("unregistered-account")
    if draw(st.booleans()):  # an employer's contribution arriving
        body.append(j.movement(SPECIAL, "H-IN", 12_345, at="10:57:00", cp=CP2, cp_bank="102100000030"))
        moved += 12_345
    off = 1 if faulty and draw(st.booleans()) else 0
    if off:
        s.expected_rules.add("balance-break")
    s.copies = [j.balance(SPECIAL, opening, at="09:00:00"), *body,
                j.balance(SPECIAL, opening + moved + off, at="11:30:00")]
    return s


def _keys(alerts: Iterable[AlertDraft]) -> set[str]:
    return {a.key for a in alerts}


def _observe_within_window(copies: list[dict[str, Any]]) -> list[AlertDraft]:
    """All facts seen within 30 s (less than any deadline), ticking as we go, then past every deadline."""
    m = Matcher(REGISTRY, TH)
    out: list[AlertDraft] = []
    step = 30.0 / max(len(copies), 1)
    for i, f in enumerate(facts(copies)):
        now = T0 + i * step
        out += m.observe(f, now)
        out += m.tick(now)
    out += m.tick(AFTER_ALL)
    return out


SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios(faulty=False), st.randoms(use_true_random=False))
def test_a_clean_scenario_raises_nothing_in_any_delivery_order(s: Scenario, rnd: random.Random) -> None:
    copies = list(s.copies)
    rnd.shuffle(copies)
    assert _observe_within_window(copies) == []


@SETTINGS
@given(scenarios(faulty=True), st.randoms(use_true_random=False))
def test_a_faulty_scenario_raises_the_same_alert_keys_in_any_delivery_order(
        s: Scenario, rnd: random.Random) -> None:
    canonical = _observe_within_window(s.copies)
    assert {a.rule for a in canonical} == s.expected_rules
    assert len(canonical) == len(_keys(canonical)), "an alert key was returned twice"
    copies = list(s.copies)
    rnd.shuffle(copies)
    assert _keys(_observe_within_window(copies)) == _keys(canonical)


@SETTINGS
@given(scenarios(faulty=True), st.randoms(use_true_random=False), st.data())
def test_restart_from_a_snapshot_mid_stream_yields_exactly_the_alerts_of_an_uninterrupted_run(
        s: Scenario, rnd: random.Random, data: st.DataObject) -> None:
    copies = list(s.copies)
    rnd.shuffle(copies)
    # Some copies are delivered twice (at-least-once delivery), time advances in
    # uneven steps so deadlines fall mid-stream, and ticks come at random.
    ops: list[tuple[str, Any, float]] = []
    now = T0
    for f in facts(copies):
        now += rnd.choice([0.0, 1.0, 7.5, 40.0, 200.0])
        ops.append(("observe", f, now))
        if rnd.random() < 0.3:
            ops.append(("observe", f, now + 0.5))
        if rnd.random() < 0.5:
            ops.append(("tick", None, now))
    ops.append(("tick", None, now + 400.0))
    ops.append(("tick", None, now + 5_000.0))
    cut = data.draw(st.integers(0, len(ops)), label="restart after op")

    def play(m: Matcher, part: list[tuple[str, Any, float]]) -> list[AlertDraft]:
        out: list[AlertDraft] = []
        for op, f, t in part:
            out += m.observe(f, t) if op == "observe" else m.tick(t)
        return out

    straight = play(Matcher(REGISTRY, TH), ops)
    first = Matcher(REGISTRY, TH)
    before = play(first, ops[:cut])
    text = first.snapshot_json()  # what the ledger stores: the same text as the snapshot dumped whole
    assert text == json.dumps(first.snapshot(), separators=(",", ":"), ensure_ascii=True)
    snap = json.loads(text)
    restored = Matcher.restore(REGISTRY, TH, snap)
    assert restored.snapshot_json() == text   # restored whole: nothing lost, nothing added
    after = play(restored, ops[cut:])
    assert before + after == straight
    if now - T0 < TH.retention:   # nothing forgotten and seen again: keys are unique
        assert len(_keys(straight)) == len(straight), "an alert key was returned twice"


# -- memory ---------------------------------------------------------------------------------------


def test_memory_stays_bounded_over_a_long_clean_run() -> None:
    j = Journal()
    m = Matcher(REGISTRY, TH)
    balance = 10 ** 12
    now = T0
    peak = 0
    for n in range(1, 3001):
        at = f"{10 + n // 3600:02d}:{(n // 60) % 60:02d}:{n % 60:02d}"
        p = payment(j, n, 1_000, at=at)
        for f in facts(p.values()):
            assert m.observe(f, now) == []
        balance -= 1_000
        if n % 50 == 0:
            assert m.observe(Fact.from_copy(j.balance(SPECIAL, balance, at=at)), now) == []
        now += 1.0
        assert m.tick(now) == []
        if n > 1500:
            peak = max(peak, m.sizes()["instructions"] + m.sizes()["movements"])
    # Retention is 720 s at one payment a second: about 720 of each, never all 3000.
    assert peak < 2 * 800
    m.tick(now + 10_000)
    sizes = m.sizes()
    assert sizes["instructions"] == sizes["movements"] == sizes["bookings"] == 0
    assert sizes["account_movements"] < 60


# -- settled records: lean, and still raising what later facts show (bench/README.md, item 40) -----

DAY_S = 86_400.0
# conf/ledger.example.toml's booking deadline: a booking may come a day after the payment.
LATE_TH = Thresholds(large_amount=LARGE, result_deadline_s=60.0, booking_deadline_s=DAY_S)


def _settled(j: Journal, n: int, amount: int = 250_000) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Payment ``n`` and its copies up to its debit: final, its debit matched, only its booking to come."""
    p = payment(j, n, amount)
    return p, [p["received"], p["sent"], p["accepted"], p["succeeded"], p["debit"]]


def test_a_settled_instruction_still_raises_what_facts_a_day_later_show() -> None:
    """A booking of another amount a day later, a second debit naming the instruction and its
    first debit re-reported with another amount: every alert names all the events it rests on,
    the instruction's own included, live and from a snapshot taken once it had settled."""
    j = Journal()
    p, lifecycle = _settled(j, 1)
    ids = [c["event_id"] for c in lifecycle]
    key, host = f"{CENTRE}/I1", host_of(1)
    late_booking = j.booking("BK1", -250_100, iid="I1")
    second = j.movement(SPECIAL, host + "X", -250_000, summary="I1")
    again = j.movement(SPECIAL, host, -250_001, summary="I1")
    late = facts([late_booking, second, again, p["received"]])

    m = Matcher(REGISTRY, LATE_TH)
    for f in facts(lifecycle):
        assert m.observe(f, T0) == []
    restored = Matcher.restore(REGISTRY, LATE_TH, json.loads(m.snapshot_json()))
    for matcher in (m, restored):
        t = T0 + DAY_S - 60
        out = [a for f in late for a in matcher.observe(f, t)]
        assert [(a.key, a.evidence) for a in out] == [
            (f"booking-mismatch:{key}", tuple(sorted([*ids[:4], late_booking["event_id"]]))),
            (f"duplicate-execution:{key}", tuple(sorted([*ids, second["event_id"]]))),
            (f"duplicate-execution:{BANK}:{SPECIAL}:{host}", tuple(sorted([ids[4], again["event_id"]]))),
        ]
        assert matcher.tick(t + 120) == []   # its booking deadline ran: the booking had come


def test_a_snapshot_from_before_settled_debits_dropped_their_tokens_restores_the_same_state() -> None:
    """Snapshots written before records were made lean kept a matched debit's summary
    tokens; restoring one gives the state the live matcher has now, which no longer holds them."""
    j = Journal()
    _, lifecycle = _settled(j, 1)
    m = Matcher(REGISTRY, TH)
    for f in facts(lifecycle):
        m.observe(f, T0)
    snap = m.snapshot()
    (move,) = snap["movements"]
    assert move[14] == f"{CENTRE}/I1" and move[10] == []   # matched, its tokens gone
    move[10] = ["I1"]                                      # as the earlier matcher wrote it
    assert Matcher.restore(REGISTRY, TH, snap).snapshot() == m.snapshot()


def test_the_snapshot_text_is_ascii_and_one_written_before_in_utf8_restores_the_same() -> None:
    """A payee's Chinese name is escaped, so the text of a large state is one byte a character
    (bench/README.md, item 40); a snapshot written before, unescaped, is read the same."""
    m = Matcher(REGISTRY, TH)
    for f in facts(world(Journal())):
        m.observe(f, T0)
    text = m.snapshot_json()
    assert text.isascii() and json.loads(text) == m.snapshot()
    before = json.dumps(m.snapshot(), separators=(",", ":"), ensure_ascii=False)
    assert CP_NAME in before
    assert Matcher.restore(REGISTRY, TH, json.loads(before)).snapshot_json() == text


def _held(m: Matcher) -> tuple[int, int]:
    """Objects, and their bytes (``sys.getsizeof``), reachable from the matcher's state (its
    configuration left out)."""
    seen: dict[int, Any] = {}
    stack = [v for k, v in vars(m).items() if k not in ("registry", "thresholds", "conditions")]
    while stack:
        o = stack.pop()
        if o is None or id(o) in seen or isinstance(o, (type, types.ModuleType, types.FunctionType)):
            continue
        seen[id(o)] = o
        stack.extend(gc.get_referents(o))
    return len(seen), sum(sys.getsizeof(o) for o in seen.values())


def test_a_settled_instruction_keeps_few_objects_for_its_retention() -> None:
    """What one more settled instruction (final, its debit matched) adds to the state, which is
    kept for ``retention`` (a booking may come a day later): strings repeated across records
    (centre, bank, state names, accounts, payee) are shared, containers nothing filled are not
    made, the instruction id is read from its key, a matched debit's summary tokens go.  The
    copies are parsed one by one, as the ledger gets them, so each brings its own strings.
    Before records were made lean: 44 objects and 3,584 bytes; after: 29 and 2,354."""
    def held_after(n: int) -> tuple[int, int]:
        j = Journal()
        m = Matcher(REGISTRY, TH)
        for i in range(1, n + 1):
            for f in facts(_settled(j, i)[1]):
                assert m.observe(f, T0) == []
        return _held(m)

    (o1, b1), (o2, b2) = held_after(100), held_after(300)
    objects, size = (o2 - o1) / 200, (b2 - b1) / 200
    assert objects <= 30 and size <= 2_500, (objects, size)


# -- collections: a CREDIT on the centre's account is the result ------------------------------

PAYER = "6222000011112222"   # an employer at the bank: not the centre's, not a registered counterparty
PAYER_NAME = "示例有限公司"
PAYER_BANK = "105100000017"


def collection(j: Journal, iid: str, amount: int, *, ref: str, account: str = SPECIAL) -> dict[str, Any]:
    body = {"instruction_id": iid, "kind": "collection", "credit_account": account,
            "debtor": {"account": PAYER, "name": PAYER_NAME, "bank_code": PAYER_BANK, "agreement_no": "AGR-1"},
            "amount": format_amount(amount), "purpose": "contribution", "memo": "缴存",
            "approval_ref": None, "requested_date": DAY}
    return j._state(iid, "received", {"instruction": body, "bank": BANK, "bank_ref": ref}, account)


def collected(j: Journal, n: int, amount: int, *, credit: int | None = None,
              succeeded: bool = True, credit_host: str | None = None) -> list[dict[str, Any]]:
    """received -> sent -> accepted -> result, then the movement the bank notifies on the
    centre's account (its own host serial: the credit leg, matched by the summary)."""
    iid, ref, host = f"C{n}", ref_of(100 + n), host_of(100 + n)
    moved = amount if credit is None else credit
    return [
        collection(j, iid, amount, ref=ref),
        j.progress(iid, "sent", ref), j.progress(iid, "accepted", ref),
        j.result(iid, ref, succeeded=succeeded, host=host if succeeded else ""),
        j.movement(SPECIAL, credit_host or host_of(900 + n), moved, summary=iid, cp=PAYER, cp_name=PAYER_NAME,
                   cp_bank=PAYER_BANK),
        j.booking(f"BKC{n}", amount, iid=iid, account=SPECIAL),
    ]


def test_a_succeeded_collection_whose_credit_arrives_raises_nothing() -> None:
    j = Journal()
    before = 10_000_000_00
    copies = [j.balance(SPECIAL, before, at="09:00:00"), *collected(j, 1, 250_000),
              j.balance(SPECIAL, before + 250_000, at="11:00:00")]
    assert run(copies) == []
    # In any order: the credit before the instruction is held, then matched.
    assert run(list(reversed(copies))) == []


def test_the_credit_is_matched_by_the_result_host_serial_too() -> None:
    j = Journal()
    assert run(collected(j, 2, 5_000, credit_host=host_of(102))) == []


def test_a_credit_of_another_amount_is_a_result_mismatch() -> None:
    j = Journal()
    alerts = run(collected(j, 3, 250_000, credit=250_001))
    a = only(alerts, "result-mismatch")
    assert a.key == f"result-mismatch:{CENTRE}/C3:{BANK}:{SPECIAL}:{host_of(903)}"
    assert "amount 2500.01 instead of 2500.00" in a.summary


def test_a_credit_for_a_failed_collection_is_a_result_mismatch() -> None:
    j = Journal()
    alerts = run(collected(j, 4, 250_000, succeeded=False))
    assert "the bank reported the instruction failed" in only(alerts, "result-mismatch").summary


def test_a_debit_is_never_taken_as_a_collection_result() -> None:
    # The centre's account DEBITED under the collection's id: not its result, so unsolicited.
    j = Journal()
    copies = collected(j, 5, 250_000)
    copies[4] = j.movement(SPECIAL, host_of(905), -250_000, summary="C5")
    alerts = run(copies)
    assert "unsolicited-debit" in rules_of(alerts)
    assert "result-mismatch" not in rules_of(alerts)


def test_a_credit_from_an_unregistered_payer_that_no_collection_explains_still_alerts() -> None:
    j = Journal()
    alerts = run([j.movement(SPECIAL, host_of(950), 7_000, summary="nothing", cp=PAYER, cp_name=PAYER_NAME,
                             cp_bank=PAYER_BANK)])
    assert rules_of(alerts) == ["unregistered-counterparty"]
    assert PAYER_NAME in alerts[0].summary


def test_a_credit_is_never_taken_as_a_transfer_result() -> None:
    # A transfer's id in the summary of a credit: the transfer's debit is still what it expects.
    j = Journal()
    iid, ref = "I7", ref_of(7)
    copies = [j.instruction(iid, 1_000, ref=ref), j.progress(iid, "sent", ref), j.result(iid, ref, host=host_of(7)),
              j.movement(SPECIAL, host_of(907), 1_000, summary=iid),
              j.movement(SPECIAL, host_of(7), -1_000, summary=iid)]
    assert "result-mismatch" not in rules_of(run(copies))
    assert "two-debits" not in " ".join(rules_of(run(copies)))
