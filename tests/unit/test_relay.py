"""The relay's rules on the pure Outbox: resend without receipt, inquire, in_doubt, the window (G1, G2, G6).

No database, no reactor: a :class:`~tests.faults.relay_world.Node` carries
the outbox's effects out the way the driver does, committing claims at once
unless told to hold them, and keeps what went to the bank.  The driver itself (store, link, timer) is
tested in tests/integration/test_relay_driver.py.
"""

from __future__ import annotations

import pytest

from adapters import base as msg
from gateway import lifecycle
from gateway.outbox import Ack, Foreign, Open, Outcome, Phase, Send
from tests.faults.relay_world import NODE_SCHEDULE as SCHEDULE
from tests.faults.relay_world import Node


def test_without_a_receipt_the_instruction_is_resent_with_the_same_reference() -> None:
    node = Node()
    node.up()
    node.submit("R1")
    assert node.sent_refs() == ["R1"]
    node.wait(9.9)
    assert node.sent_refs() == ["R1"]
    node.wait(0.2)
    assert node.sent == [(0.0, "R1"), (10.0, "R1")]


def test_after_a_receipt_the_gateway_only_asks_and_finally_goes_in_doubt() -> None:
    node = Node()
    node.up()
    node.submit("R1")
    node.hear(msg.Receipt("BANK1", "R1", "R1"))
    node.commit()
    assert node.acks == []  # a receipt answers our send: nothing to acknowledge
    node.wait(200)
    assert node.sent_refs() == ["R1"], "never resent after the receipt"
    assert [at for at, _, _ in node.queries] == [30.0, 35.0, 40.0, 45.0, 50.0]
    [overdue] = node.commit()
    assert isinstance(overdue.event, lifecycle.ResultOverdue) and "5 status inquiries" in overdue.text
    assert node.states["R1"] == "in_doubt" and node.ob.entries == {}
    # a late result still settles it, and is acknowledged once committed, not before
    late = msg.Result("BANK2", "R1", "R1", True, "H1")
    node.hear(late)
    assert node.acks == []
    node.commit()
    assert node.states["R1"] == "succeeded" and node.acks == [Ack(late)]


def test_the_window_bounds_instructions_awaiting_receipt() -> None:
    node = Node(window=3)
    node.up()
    node.submit(*[f"R{i}" for i in range(5)])
    assert node.sent_refs() == ["R0", "R1", "R2"]
    node.hear(msg.Receipt("B1", "R0", "R0"))
    assert node.sent_refs() == ["R0", "R1", "R2", "R3"]


def test_one_claim_at_a_time_and_what_queues_meanwhile_goes_in_the_next() -> None:
    node = Node(window=10)
    node.hold_claims = True
    node.up()
    node.submit("R1")
    node.submit("R2", "R3")
    assert [c.refs for c in node.claims] == [("R1",)] and node.sent == []
    node.commit_claim()
    assert [c.refs for c in node.claims] == [("R2", "R3")]
    node.commit_claim()
    assert node.sent_refs() == ["R1", "R2", "R3"]  # commit order


def test_a_relinked_session_gets_everything_without_a_receipt_again_in_order() -> None:
    node = Node()
    node.up()
    node.submit("R0", "R1", "R2")
    node.hear(msg.Receipt("B", "R1", "R1"))
    node.down()
    node.sent.clear()
    node.up()
    assert node.sent_refs() == ["R0", "R2"]


def test_a_claim_that_commits_after_the_link_changed_sends_nothing_and_goes_again() -> None:
    node = Node()
    node.hold_claims = True
    node.up()
    node.submit("R1")
    node.down()
    node.up()  # a new session while the first claim commits
    node.commit_claim()
    assert node.sent == [], "a claim made for the old link sends nothing"
    [again] = node.claims  # claimed again, for the link that is up now
    assert again.refs == ("R1",) and again.link == node.ob.link
    node.commit_claim()
    assert node.sent_refs() == ["R1"]


def test_a_failed_claim_is_retried_after_a_pause_not_at_once() -> None:
    node = Node()
    node.hold_claims = True
    node.up()
    node.submit("R1")
    claim = node.claims.pop()
    node.run(node.ob.claim_failed(claim, node.now))
    assert node.claims == [] and node.ob.next_deadline() == pytest.approx(SCHEDULE.claim_retry)
    node.wait(SCHEDULE.claim_retry)
    assert [c.refs for c in node.claims] == [("R1",)]


def test_a_result_for_another_banks_reference_is_refused() -> None:
    node = Node()
    node.up()
    forged = msg.Result("X1", "ZZ", "ZZ", True, "H1")
    node.hear(forged)
    assert node.acks == []  # nothing before the store has answered
    [record] = node.records
    node.records.clear()
    node.run(node.ob.recorded(record, Outcome.UNKNOWN))
    assert node.acks == [Foreign(forged, "ZZ")]


def test_an_answered_result_is_not_acknowledged_and_a_pushed_one_is_after_commit() -> None:
    node = Node()
    node.up()
    node.submit("R1", "R2")
    node.hear(msg.Result("B1", "R1", "R1", True, "H1"))  # the answer to our send
    node.hear(msg.Receipt("B2", "R2", "R2"))
    pushed = msg.Result("B3", "R2", "R2", False)
    node.hear(pushed)
    assert node.acks == []
    node.commit()
    assert node.acks == [Ack(pushed)]
    assert node.states == {"R1": "succeeded", "R2": "failed"} and node.ob.entries == {}


def test_a_contradicting_result_is_refused_after_commit() -> None:
    node = Node()
    node.up()
    node.submit("R1")
    node.hear(msg.Receipt("B1", "R1", "R1"))
    contra = msg.Result("B2", "R1", "R1", False)
    node.hear(contra)
    node.run(node.ob.recorded(node.records.pop(), Outcome.CONFLICT, "succeeded"))
    assert node.acks == [Ack(contra, ok=False, code="E409", text="contradicts the recorded outcome")]


def test_an_instruction_the_bank_never_confirms_goes_in_doubt_instead_of_being_resent_forever() -> None:
    node = Node()
    node.up()
    node.submit("R1")
    node.wait(60)
    assert [at for at, _ in node.sent] == [0.0, 10.0, 20.0]
    [overdue] = node.commit()
    assert isinstance(overdue.event, lifecycle.ResultOverdue) and "no receipt" in overdue.text
    assert node.states["R1"] == "in_doubt"
    node.wait(60)
    assert len(node.sent) == 3, "no resends once in doubt"


def test_not_found_before_a_receipt_sends_again_and_after_a_receipt_goes_in_doubt() -> None:
    node = Node()
    node.up()
    node.submit("R1", "R2")
    node.hear(msg.NotFound("B1", "Gx", "R1"))
    assert node.sent_refs() == ["R1", "R2", "R1"] and node.records == []
    node.hear(msg.Receipt("B2", "R2", "R2"))
    node.hear(msg.NotFound("B3", "Gy", "R2"))
    node.commit()
    assert node.states["R2"] == "in_doubt"


def test_inquiries_wait_for_the_link_and_go_at_once_when_it_is_back() -> None:
    node = Node()
    node.up()
    node.submit("R1")
    node.hear(msg.Receipt("B1", "R1", "R1"))
    node.down()
    node.wait(100)
    assert node.queries == [] and node.records[-1:] and isinstance(node.records[-1].event, lifecycle.ReceiptConfirmed)
    assert node.ob.next_deadline() is None, "nothing to do while the link is down"
    node.up()
    assert [(at, ref) for at, ref, _ in node.queries] == [(100.0, "R1")]


def test_a_loaded_instruction_keeps_its_history() -> None:
    node = Node()
    node.run(node.ob.loaded([Open("R1", {}, accepted=True, sends=1), Open("R2", {}, sends=2)], 0.0))
    node.hold_claims = True
    node.up()
    assert node.claims[0].refs == ("R2",)
    sends = node.ob.claimed(node.claims.pop(), 0.0)
    assert sends == [Send("R2", {}, resend=True)]
    assert node.ob.phase("R1") is Phase.AWAITING_RESULT


def test_an_idle_outbox_has_no_deadline() -> None:
    node = Node()
    assert node.ob.next_deadline() is None
    node.up()
    node.submit("R1")
    node.hear(msg.Result("B1", "R1", "R1", True))
    node.commit()
    assert node.ob.entries == {} and node.ob.next_deadline() is None


def test_refused_bank_messages_are_journalled_up_to_a_cap_per_window_then_only_counted() -> None:
    """A bank flooding bad messages cannot flood the journal and the ledger's alerts."""
    from pathlib import Path

    from twisted.internet.task import Clock

    from gateway.config import load_config
    from gateway.metrics import GatewayMetrics
    from gateway.relay import REFUSED_JOURNAL_CAP, REFUSED_JOURNAL_WINDOW, BankDispatcher

    config = load_config(Path(__file__).resolve().parents[2] / "conf" / "gateway.example.toml", check_files=False)
    bank = next(iter(config.banks.values()))
    clock, metrics = Clock(), GatewayMetrics()
    d = BankDispatcher(bank, config, None, clock, metrics)  # type: ignore[arg-type]
    recorded: list = []
    d._record = lambda item, done: recorded.append(item)  # type: ignore[method-assign]
    for _ in range(REFUSED_JOURNAL_CAP + 5):
        d.refused(b"C52240" + b"0" * 10 + b"6200001111222233 frame", "amt: 6200001111222233 is bad")
    assert len(recorded) == REFUSED_JOURNAL_CAP
    assert metrics.refused.labels(f"bank:{bank.id}", "bad_message_unjournalled")._value.get() == 5
    assert "6200001111222233" not in recorded[0].payload["reason"] and recorded[0].raw.endswith(b"frame")
    clock.advance(REFUSED_JOURNAL_WINDOW)
    d.refused(b"x", "again")
    assert len(recorded) == REFUSED_JOURNAL_CAP + 1
