"""The supervision ledger down for a whole run, then back: the backlog grows, drains, and every event lands once (G4)."""

from __future__ import annotations

import pytest

from tests.faults.harness import Load, Rig, count_everything, dump, settle, wait_until

pytestmark = pytest.mark.slow


def test_a_ledger_down_for_the_whole_run_gets_every_event_exactly_once_when_it_returns(tmp_path, request):
    rig = Rig.prepare(tmp_path)
    ids = [f"G-{n}" for n in range(20)]
    try:
        gw = rig.start_gateway()  # the ledger is configured but not running
        bank = rig.start_bank()
        rig.wait_link()
        load = Load(rig.config, ids, interval=0.1)
        load.start()
        early = wait_until(lambda: rig.metric("hpf_gateway_ledger_backlog"), "a ledger backlog", 15)
        load.finish(30)
        settle(rig, ids, timeout=20, ledger=False)
        # The backlog is measured at each (backed-off) delivery attempt: it must keep growing.
        late = wait_until(lambda: (v := rig.metric("hpf_gateway_ledger_backlog")) > early and v,
                          f"the backlog to grow past {early}", 20)
        failures = rig.metric("hpf_gateway_ledger_failures_total")
        events_while_down = len(rig.gateway_events())
        assert rig.ledger_copies() == []

        ledger = rig.start_ledger()
        wait_until(lambda: len(rig.ledger_copies()) == len(rig.gateway_events()), "the backlog delivered", 40,
                   interval=0.25)
        wait_until(lambda: rig.metric("hpf_gateway_ledger_backlog") == 0, "the backlog metric at 0", 10)
        feed = settle(rig, ids, timeout=10)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        rig.stop(ledger)
        counts = count_everything(rig, load, feed=feed, stats=rig.bank_stats())
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name, backlog_early=early,
             backlog_late=late, failures=failures)
        print(f"\nledger down: backlog {early:g} -> {late:g} (events while down {events_while_down}, "
              f"failed deliveries {failures:g}) -> 0; {counts.line()}")
        assert failures >= 1
        counts.assert_exactly_once()
    finally:
        rig.kill_all()
