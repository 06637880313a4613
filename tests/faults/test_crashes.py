"""kill -9 under load at each crash point, restart, and count at the bank, the feed and the ledger.

The gateway, the simulated bank B001 and the supervision ledger run as real
processes.  The gateway is started with ``HPF_CRASH_AT=POINT@N`` and SIGKILLs
itself the Nth time it reaches POINT (:mod:`gateway.faults`) while a centre
submits instructions; it is restarted with the same config and without the
crash point.  The centre retries whatever it got no answer for with the same
instruction_id and body.  Then, per the promises of docs/architecture.md:

- every instruction the centre got a 2xx for executed exactly once at the bank (G1, G2);
- every instruction has exactly one final state on the results feed replayed from 0 (G5);
- every journal event is at the ledger exactly once, in order per instruction (G4);
- no bank fact was journalled twice (G3).

Each test also proves that its fault path was really taken (the retry that got
200, the resend the bank answered as a duplicate, the re-pushed result, the
copies the ledger answered ``duplicate``), so a crash point that stopped
firing would fail the test instead of passing it vacuously.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import (
    Load,
    Rig,
    count_everything,
    dump,
    restart_after_crash,
    settle,
)

pytestmark = pytest.mark.slow

N = 30  # instructions per run: a few tens, submitted over ~1.5 s


# point -> (crash at the Nth time, bank simulator options chosen so the point is on the path)
SCENARIOS = {
    # synchronous bank: the result answers the instruction at once
    "intake.commit": ("intake.commit@8", ()),
    "intake.respond": ("intake.respond@8", ()),
    # the bank answers only after 1 s and sends no receipt first: a crash right after the
    # send leaves the instruction on the wire without any answer, so it must be resent
    "bank.sent": ("bank.sent@8", ("--delay", "1.0", "--reply-within", "2.0")),
    # receipt first, the result pushed 0.3 s later and kept by the bank until acknowledged
    "bank.result": ("bank.result@8", ("--delay", "0.3")),
    "ledger.forward": ("ledger.forward@3", ()),
}

# The alerts a crash point may cause at the ledger: the gateway dies holding results the bank
# pushed, and they come again only once it is back and the bank pushes them again, which can be
# past the ledger's result deadline (missing-result, for those instructions).
EXPECTED_ALERTS = {"bank.result": frozenset({"missing-result"})}


@pytest.mark.parametrize("point", list(SCENARIOS))
def test_kill_9_at_each_crash_point_loses_and_doubles_nothing(tmp_path, point, request):
    crash_at, bank_args = SCENARIOS[point]
    # A pushed result exists only on bdc's persistent opt-in (as deployed, bdc asks BDC110).
    rig = Rig.prepare(tmp_path, banks={"B001": {"connection": "persistent"}} if point == "bank.result" else None)
    ids = [f"K-{n}" for n in range(N)]
    try:
        _, gw = rig.start_ledger_and_gateway(crash_at)
        bank = rig.start_bank(*bank_args)
        rig.wait_link()
        load = Load(rig.config, ids)
        load.start()
        gw, restarts = restart_after_crash(rig, gw, load, timeout=45)
        assert restarts == 1, f"{crash_at} never fired (restarts={restarts})"
        load.finish(30)
        feed = settle(rig, load.acknowledged, timeout=40)
        duplicates_at_ledger = rig.ledger_metric("hpf_ledger_copies_total", 'gateway="main",status="duplicate"')
        assert rig.stop(gw) == 0
        rig.stop(bank)
        stats = rig.bank_stats()
        counts = count_everything(rig, load, feed=feed, stats=stats,
                                  expect_alerts=EXPECTED_ALERTS.get(point, frozenset()))
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name,
             bank_duplicates=stats["duplicates"], ledger_duplicates_answered=duplicates_at_ledger)
        print(f"\n{point}: {counts.line()} bank_duplicates={stats['duplicates']} "
              f"ledger_duplicates_answered={duplicates_at_ledger}")
        counts.assert_exactly_once()

        # The fault path was really taken:
        if point == "intake.commit":
            # the transaction died uncommitted: the retry created the instruction (202)
            assert any(a[0] != 202 and a[-1] == 202 for a in load.answers.values()), load.answers
        elif point == "intake.respond":
            # committed, no answer: the retry found it stored (200, the same record)
            assert any(a[-1] == 200 for a in load.answers.values()), load.answers
        elif point == "bank.sent":
            # resent with the same reference after the restart, answered without executing again
            assert stats["duplicates"] >= 1, stats
        elif point == "bank.result":
            # the result the gateway died holding was pushed again and acknowledged this time
            assert "bank.repush" in bank.text()
            assert stats["counts"].get("acks_refused", 0) == 0
        elif point == "ledger.forward":
            # copies the ledger had stored went again: answered duplicate, stored once
            assert duplicates_at_ledger >= 1
    finally:
        rig.kill_all()
