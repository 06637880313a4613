"""The gateway's wall clock steps an hour forwards or backwards under load.

The gateway runs with ``HPF_CLOCK_STEP=±3600@12`` (:mod:`gateway.faults`): twelve
seconds after it starts, its ``time.time`` and Twisted's ``reactor.seconds``
jump by an hour, as when NTP or an operator sets the host's clock; the bank
and the ledger, other machines, keep theirs.  The step must be reported
(``hpf_gateway_clock_step_seconds``), and the run must end as every fault run
does: nothing lost, nothing executed twice, every instruction final once on
the feed and copied once to the ledger, no alert the step should not cause.
The daemons run their timers on the monotonic clock, so neither step holds a timer
back.  The gateway journals the step (``gateway.clock_step``) in the first transaction
stamped on the stepped clock; the ledger raises one ``clock-step`` alert for it and undoes
it on that gateway's times (``matcher.StreamClock``), so its deadlines neither stall for the
hour (backwards) nor fire early (forwards): the test waits for them with the rig's usual
bound (``Rig.ledger_judged``), which a ledger holding the gateway's deadlines back by the
hour does not meet.
"""

from __future__ import annotations

import json

import pytest

from tests.faults.harness import Load, Rig, count_everything, dump, settle, wait_until

pytestmark = pytest.mark.slow

N = 50
STEP_AFTER = 12.0  # past start-up and sign-on on a loaded machine, within the load


@pytest.mark.parametrize("step", [3600.0, -3600.0], ids=["forwards", "backwards"])
def test_a_wall_clock_step_of_an_hour_is_reported_and_loses_and_doubles_nothing(tmp_path, step, request):
    rig = Rig.prepare(tmp_path)
    try:
        rig.start_ledger()
        gw = rig.start_gateway(env={"HPF_CLOCK_STEP": f"{step}@{STEP_AFTER}"})
        bank = rig.start_bank()
        rig.wait_link()
        # 50 over 20 s: from sign-on (3-10 s after start, by the machine's load) to well past the step.
        load = Load(rig.config, [f"CL-{n}" for n in range(N)], interval=0.4, deadline=120)
        load.start()
        wait_until(lambda: abs(rig.metric("hpf_gateway_clock_step_seconds") - step) < 5,
                   "the step reported", STEP_AFTER + 10)
        assert load.is_alive(), "the load ended before the step: nothing was in flight across it"
        load.finish(120)
        feed = settle(rig, load.acknowledged, timeout=60)
        rig.wait_link(timeout=30)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        counts = count_everything(rig, load, feed=feed, stats=rig.bank_stats(), expect_alerts={"clock-step"})
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name, step_s=step)
        print(f"\n{request.node.name}: {counts.line()} step_s={step}")
        counts.assert_exactly_once()
        events = rig.gateway_events()
        journalled = [(e["seq"], json.loads(e["payload"])["step_us"]) for e in events
                      if e["kind"] == "gateway.clock_step"]
        assert len(journalled) == 1 and abs(journalled[0][1] / 1e6 - step) < 5, journalled
        received = [e["seq"] for e in events if e["state"] == "received"]
        # Instructions were taken on both sides of the step: the load was in flight across it.
        assert min(received) < journalled[0][0] < max(received), (journalled, received)
        assert counts.alerts == {"clock-step": 1}, counts.alerts
    finally:
        rig.kill_all()
