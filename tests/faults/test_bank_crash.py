"""kill -9 of the bank between executing and answering: the restarted bank executes nothing twice.

The simulated bank keeps its executed references and balances in a journal
(``simulate bank --state``), as a real bank's host does.  It kills itself at
``simbank.answer`` (an instruction executed and journalled, its answer not yet
written) under load; the gateway, which got no answer, resends the same
reference to the restarted bank, which answers it from its journal.  Counted at
the bank, on the centre's feed and at the ledger as in ``test_crashes``.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import Load, Rig, count_everything, dump, settle, wait_until

pytestmark = pytest.mark.slow

N = 30


def test_bank_killed_between_executing_and_answering_executes_nothing_twice(tmp_path, request):
    rig = Rig.prepare(tmp_path)
    ids = [f"BK-{n}" for n in range(N)]
    state = tmp_path / "bank-B001.state"
    try:
        _, gw = rig.start_ledger_and_gateway()
        bank = rig.start_bank("--state", str(state), env={"HPF_CRASH_AT": "simbank.answer@8"})
        rig.wait_link()
        load = Load(rig.config, ids)
        load.start()
        wait_until(lambda: not bank.alive(), "the bank to kill itself at simbank.answer", 30)
        before = rig.bank_stats()
        bank = rig.start_bank("--state", str(state))  # the same options, no crash point
        load.finish(30)
        feed = settle(rig, load.acknowledged, timeout=40)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        stats = rig.bank_stats()
        counts = count_everything(rig, load, feed=feed, stats=stats)
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name,
             bank_duplicates=stats["duplicates"])
        print(f"\nbank killed at simbank.answer: {counts.line()} bank_duplicates={stats['duplicates']}")
        counts.assert_exactly_once()
        # The reference the bank died answering came again and was answered from the journal.
        assert stats["duplicates"] >= 1, stats
        assert stats["max_executions_per_ref"] == 1, stats
        # The restarted bank's book is its old book plus what it executed since, nothing lost.
        executed = sum(stats["executions"].values())
        assert executed >= max(8, sum((before.get("executions") or {}).values())), (before, stats)
        # Every transfer debits 10.00 from one account; a bank that forgot its book would show less.
        assert stats["failed"] == 0, stats
        assert 10_000_000_000 - stats["balances"]["6200001111222233"] == 1_000 * executed, stats
    finally:
        rig.kill_all()
