"""The gateway's wall clock steps an hour forwards or backwards under load.

The gateway runs with ``HPF_CLOCK_STEP=±3600@12`` (:mod:`gateway.faults`): twelve
seconds after it starts, its ``time.time`` and Twisted's ``reactor.seconds``
jump by an hour, as when NTP or an operator sets the host's clock; the bank
and the ledger, other machines, keep theirs.  The step must be reported
(``hpf_gateway_clock_step_seconds``), and the run must end as every fault run
does: nothing lost, nothing executed twice, every instruction final once on
the feed and copied once to the ledger, no alert the step should not cause.
The daemons run their timers on the monotonic clock, so neither step holds a timer
back.  Backwards, the ledger's deadlines for that gateway are held back by the step
(xfail, see docs/reliability.md, "Clocks"); the counts are written without the alerts.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import Load, Rig, count_everything, dump, settle, wait_until

pytestmark = pytest.mark.slow

N = 60
STEP_AFTER = 12.0  # past start-up and sign-on on a loaded machine, within the load


BACKWARDS_HOLDS_THE_LEDGER = (
    "the gateway's timers run on the monotonic clock and it loses, doubles and delays nothing, but "
    "the ledger runs its deadlines on each gateway's time (matcher.StreamClock): a gateway stepped "
    "back by an hour holds that gateway's deadlines back by the hour, so its rules cannot judge "
    "within the test")


@pytest.mark.parametrize("step", [3600.0, pytest.param(-3600.0, marks=pytest.mark.xfail(
    strict=True, raises=AssertionError, reason=BACKWARDS_HOLDS_THE_LEDGER))], ids=["forwards", "backwards"])
def test_a_wall_clock_step_of_an_hour_is_reported_and_loses_and_doubles_nothing(tmp_path, step, request):
    rig = Rig.prepare(tmp_path)
    try:
        ledger = rig.start_ledger()
        gw = rig.start_gateway(env={"HPF_CLOCK_STEP": f"{step}@{STEP_AFTER}"})
        bank = rig.start_bank()
        rig.wait_link()
        load = Load(rig.config, [f"CL-{n}" for n in range(N)], interval=0.2, deadline=120)
        load.start()
        wait_until(lambda: abs(rig.metric("hpf_gateway_clock_step_seconds") - step) < 5,
                   "the step reported", STEP_AFTER + 10)
        assert load.is_alive(), "the load ended before the step: nothing was in flight across it"
        load.finish(120)
        feed = settle(rig, load.acknowledged, timeout=60)
        rig.wait_link(timeout=30)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        try:
            rig.ledger_judged()
            judged = ""
        except AssertionError as e:
            judged = str(e)
            rig.stop(ledger)  # its alerts cannot be counted: the other five numbers still are
        counts = count_everything(rig, load, feed=feed, stats=rig.bank_stats())
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name, step_s=step)
        print(f"\n{request.node.name}: {counts.line()} step_s={step}")
        counts.assert_exactly_once()
        assert not judged, judged
    finally:
        rig.kill_all()
