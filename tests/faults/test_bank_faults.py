"""Misbehaving banks against the real gateway process: drops, replays, silence (G2, G3, G6).

The gateway (and, where it is counted, the ledger) run as subprocesses; the
bank is either the simulator with its fault knobs or :class:`RawBank`, which
sends the very same bytes twice.
"""

from __future__ import annotations

import datetime as dt

import pytest

from adapters import base as msg
from tests.faults.harness import (
    Load,
    Rig,
    count_everything,
    dump,
    feed_entries,
    instruction_body,
    instruction_state,
    settle,
    wait_until,
)
from tests.faults.rawbank import RawBank
from tests.kit import procs

pytestmark = pytest.mark.slow

B001 = 'bank="B001"'

# Timers small enough that G6's deadlines pass within a test, large enough for loopback.
TINY = {"receipt_timeout": 0.3, "result_timeout": 0.5, "status_query_interval": 0.2,
        "status_query_attempts": 2, "heartbeat_interval": 1.0, "dead_after": 5.0}


def test_a_bank_dropping_the_link_mid_conversation_still_gets_each_instruction_once(tmp_path, request):
    """--drop-rate: the bank takes a frame (an instruction may execute) and drops the link unanswered."""
    rig = Rig.prepare(tmp_path)
    ids = [f"D-{n}" for n in range(20)]
    try:
        _, gw = rig.start_ledger_and_gateway()
        bank = rig.start_bank("--drop-rate", "0.1", "--seed", "11")
        rig.wait_link(timeout=30)
        load = Load(rig.config, ids, interval=0.1)
        load.start()
        load.finish(60)
        feed = settle(rig, ids, timeout=60)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        stats = rig.bank_stats()
        counts = count_everything(rig, load, feed=feed, stats=stats)
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name,
             drops=stats["link"].get("connections_dropped", 0))
        print(f"\ndrop-rate: {counts.line()} drops={stats['link'].get('connections_dropped', 0)} "
              f"bank_duplicates={stats['duplicates']}")
        assert stats["link"].get("connections_dropped", 0) >= 2, stats["link"]
        counts.assert_exactly_once()
    finally:
        rig.kill_all()


def test_replayed_bank_results_and_movements_are_applied_once_and_acknowledged_every_time(tmp_path):
    """G3: the same Result and Movement frames, byte for byte, twice, and again after a kill -9."""
    # RawBank scripts one long-lived connection: bdc's persistent opt-in.
    rig = Rig.prepare(tmp_path, banks={"B001": {"connection": "persistent"}})
    bank = RawBank(rig.config)
    try:
        _, gw = rig.start_ledger_and_gateway()
        bank.connect()
        status, rec, _ = procs.centre_call(rig.config, "POST", "/v1/instructions", instruction_body("R-1"))
        assert status == 202, rec
        ins = bank.expect(msg.Instruction)
        ref = ins.seq_no
        assert ins.reference == "R-1"
        bank.send(msg.Receipt(bank.seq(), ref, ref, "BDC0001"))
        wait_until(lambda: instruction_state(rig.config, "R-1") == "accepted", "R-1 accepted", 10)

        # A late (pushed) result: it must be acknowledged, and only after it is committed.
        result = msg.Result(bank.seq(), ref, ref, True, "H000000000777", "BDC0001")
        now = dt.datetime.now()
        movement = msg.Movement(bank.seq(), (msg.Entry(
            ins.debit_account, "H000000000777", -ins.amount, now.date(), now.time().replace(microsecond=0),
            counterparty_account=ins.creditor_account, counterparty_name=ins.creditor_name,
            counterparty_bank_code=ins.creditor_bank_code, summary="R-1"),))
        result_frame, movement_frame = bank.encode(result), bank.encode(movement)
        acks: list[msg.Ack] = []
        for _ in range(2):  # the frame, then the very same bytes again
            bank.send_raw(result_frame)
            acks.append(bank.expect(msg.Ack, reply_to=result.seq_no))
            bank.send_raw(movement_frame)
            acks.append(bank.expect(msg.Ack, reply_to=movement.seq_no))
        assert instruction_state(rig.config, "R-1") == "succeeded"

        # kill -9, restart: the dedupe is durable, not a cache of the dead process.
        gw.kill()
        bank.close()
        gw = rig.start_gateway()
        bank.connect()
        bank.send_raw(result_frame)
        acks.append(bank.expect(msg.Ack, reply_to=result.seq_no))
        bank.send_raw(movement_frame)
        acks.append(bank.expect(msg.Ack, reply_to=movement.seq_no))
        assert all(a.ok for a in acks) and len(acks) == 6, acks

        feed = feed_entries(rig.config)
        states = [e["state"] for e in feed if e["instruction_id"] == "R-1"]
        wait_until(lambda: len(rig.ledger_copies()) == len(rig.gateway_events()), "the ledger caught up", 20)
        assert rig.stop(gw) == 0
        events = rig.gateway_events()
        movements = [e for e in events if e["kind"] == "bank.movement"]
        succeeded = [e for e in events if e["instruction_id"] == "R-1" and e["state"] == "succeeded"]
        copies = rig.ledger_copies()
        print(f"\nreplay: result sent 3x, movement sent 3x, acks={len(acks)}, feed R-1={states}, "
              f"journal succeeded={len(succeeded)} movements={len(movements)}, "
              f"ledger copies={len(copies)} of {len(events)} events")
        assert states == ["received", "sent", "accepted", "succeeded"]
        assert len(succeeded) == 1 and len(movements) == 1
        assert sorted(c["event_id"] for c in copies) == sorted(e["event_id"] for e in events)
    finally:
        bank.close()
        rig.kill_all()


def test_a_bank_that_confirms_receipt_but_never_settles_leaves_instructions_in_doubt_not_stuck(tmp_path):
    """G6 after a receipt: the result is overdue, status inquiries do not settle it, so: in_doubt."""
    rig = Rig.prepare(tmp_path, timeouts=TINY, ledger=False)
    ids = [f"Q-{n}" for n in range(3)]
    try:
        gw = rig.start_gateway()
        # receipt at once, execution in 600 s: every inquiry is answered "still executing"
        bank = rig.start_bank("--delay", "600")
        rig.wait_link()
        load = Load(rig.config, ids)
        load.start()
        load.finish(20)
        assert load.acknowledged == ids
        wait_until(lambda: all(instruction_state(rig.config, i) == "in_doubt" for i in ids),
                   "every instruction in_doubt", 15)
        in_doubt = rig.metric("hpf_gateway_in_doubt_total", B001)
        queries = rig.metric("hpf_gateway_bank_status_queries_total", B001)
        finals = [e for e in feed_entries(rig.config) if e["state"] == "in_doubt"]
        print(f"\nreceipt-no-result: in_doubt={len(finals)} metric={in_doubt} status_queries={queries}")
        assert in_doubt == len(ids)
        assert queries >= len(ids) * TINY["status_query_attempts"]
        assert sorted(e["instruction_id"] for e in finals) == ids  # once each on the feed
        rig.stop(gw)
        rig.stop(bank)
        assert rig.bank_stats()["received"] == len(ids)
        assert rig.bank_stats()["duplicates"] == 0  # asked, never resent after the receipt (G2)
    finally:
        rig.kill_all()


def test_a_bank_that_never_answers_leaves_instructions_in_doubt_not_stuck(tmp_path):
    """G6 without a receipt: --silent takes nothing and answers nothing but heartbeats."""
    rig = Rig.prepare(tmp_path, timeouts=TINY, ledger=False)
    ids = [f"S-{n}" for n in range(3)]
    try:
        gw = rig.start_gateway()
        bank = rig.start_bank("--silent")
        rig.wait_link()
        load = Load(rig.config, ids)
        load.start()
        load.finish(20)
        assert load.acknowledged == ids
        # What G2 asks for meanwhile: resent (same reference), never executed.
        wait_until(lambda: rig.metric("hpf_gateway_bank_resends_total", B001) >= len(ids),
                   "resends while no receipt", 10)
        deadline_s = (TINY["receipt_timeout"] + TINY["result_timeout"]
                      + TINY["status_query_attempts"] * TINY["status_query_interval"])
        try:
            wait_until(lambda: all(instruction_state(rig.config, i) == "in_doubt" for i in ids),
                       f"every instruction in_doubt (its deadlines add up to {deadline_s:.1f}s)", 5)
        finally:
            states = {i: instruction_state(rig.config, i) for i in ids}
            resends = rig.metric("hpf_gateway_bank_resends_total", B001)
            in_doubt = rig.metric("hpf_gateway_in_doubt_total", B001)
            print(f"\nsilent: states={states} resends={resends} in_doubt_metric={in_doubt}")
        assert rig.metric("hpf_gateway_in_doubt_total", B001) == len(ids)
        rig.stop(gw)
        rig.stop(bank)
        assert rig.bank_stats()["executed"] == 0
    finally:
        rig.kill_all()
