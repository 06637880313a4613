"""The gateway's wall clock steps back an hour across midnight (China time) under load.

The gateway starts with its clock a few seconds after a midnight in China
(``HPF_CLOCK_START``, ahead of the real time so every certificate is valid) and
twelve seconds later steps back an hour, into the day before
(``HPF_CLOCK_STEP=-3600@12``); the bank and the ledger keep the real time.  An
instruction's business date is taken once, from its intake's journal time
(:func:`gateway.clock.business_date`): so the instructions taken before the step
are dated the new day and those after it the day before, each in its bank
reference and in the ledger's daily report alike.  No instruction is counted
on two days or on none, the two days' reports together count each once, and
the run is counted as every fault run is (``clock-step`` the only alert).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import pytest

from gateway.clock import BUSINESS_TZ
from gateway.ledger import store as ledger_store
from gateway.ledger.config import load_ledger_config
from gateway.ledger.report import daily_report
from tests.faults.harness import (
    Load,
    Rig,
    count_everything,
    dump,
    read_only_engine,
    settle,
    wait_until,
)

pytestmark = pytest.mark.slow

N = 50
STEP_AFTER = 12.0  # past start-up and sign-on on a loaded machine, within the load


def _midnight_ahead() -> float:
    """A midnight in China at least two hours from now (seconds since the epoch)."""
    now = dt.datetime.now(BUSINESS_TZ)
    day = (now + dt.timedelta(hours=2)).date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(0, 0), BUSINESS_TZ).timestamp()


def _report(rig: Rig, day: dt.date) -> Counter[str]:
    """The ledger's daily report of ``day``: instructions counted, by centre (read-only)."""
    assert rig.ledger_conf is not None and rig.ledger_db is not None
    start = dt.datetime.combine(day, dt.time(0, 0), BUSINESS_TZ)
    bounds = (int(start.timestamp() * 1e6), int((start + dt.timedelta(days=1)).timestamp() * 1e6))
    engine = read_only_engine(rig.ledger_db)
    try:
        with engine.connect() as c:
            data = ledger_store.daily_rows(c, *bounds)
    finally:
        engine.dispose()
    report = daily_report(day, data, load_ledger_config(rig.ledger_conf))
    rows = report["rows"]
    return Counter({r["centre_id"]: int(r["instructed_count"]) for r in rows if int(r["instructed_count"])})


def test_a_step_back_across_midnight_dates_each_instruction_once(tmp_path, request):
    midnight = _midnight_ahead()
    rig = Rig.prepare(tmp_path)
    try:
        rig.start_ledger()
        env = {"HPF_CLOCK_START": str(midnight + 1.0), "HPF_CLOCK_STEP": f"-3600@{STEP_AFTER}"}
        gw = rig.start_gateway(env=env)
        bank = rig.start_bank()
        rig.wait_link()
        load = Load(rig.config, [f"MN-{n}" for n in range(N)], interval=0.4, deadline=120)  # 20 s: past the step, quiet or not
        load.start()
        wait_until(lambda: rig.metric("hpf_gateway_clock_step_seconds") < -3500, "the step reported",
                   STEP_AFTER + 10)
        assert load.is_alive(), "the load ended before the step: nothing was taken across it"
        load.finish(120)
        feed = settle(rig, load.acknowledged, timeout=60)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        counts = count_everything(rig, load, feed=feed, stats=rig.bank_stats(), expect_alerts={"clock-step"})
        dump(tmp_path.parent / "fault-counts.jsonl", counts, test=request.node.name, step_s=-3600.0)
        print(f"\n{request.node.name}: {counts.line()}")
        counts.assert_exactly_once()
        assert counts.alerts == {"clock-step": 1}, counts.alerts

        new_day = dt.datetime.fromtimestamp(midnight, BUSINESS_TZ).date()
        day_before = new_day - dt.timedelta(days=1)
        events = rig.gateway_events()
        step_at = next(e["seq"] for e in events if e["kind"] == "gateway.clock_step")
        received = {e["instruction_id"]: e for e in events
                    if e["kind"] == "instruction.state" and e["state"] == "received"}
        dated: dict[str, dt.date] = {}
        for iid, e in received.items():
            created = next(r for r in rig.ledger_copies() if r["event_id"] == e["event_id"])
            assert created["gateway_seq"] == e["seq"]
            ref = json.loads(e["payload"])["bank_ref"]
            day = dt.datetime.strptime(ref[5:11], "%y%m%d").date()
            dated[iid] = day
            # Before the step the new day, after it the day before: the journal's order says which.
            assert day == (new_day if e["seq"] < step_at else day_before), (iid, e["seq"], step_at, ref)
        by_day = Counter(dated.values())
        assert by_day[new_day] and by_day[day_before], by_day  # the load spanned the step
        assert sum(by_day.values()) == N

        # The ledger's daily reports: each instruction on the day its reference says, once.
        reports = {d: _report(rig, d) for d in (day_before - dt.timedelta(days=1), day_before, new_day,
                                                new_day + dt.timedelta(days=1))}
        assert reports[day_before]["C52240"] == by_day[day_before], reports
        assert reports[new_day]["C52240"] == by_day[new_day], reports
        assert sum(sum(r.values()) for r in reports.values()) == N, reports
    finally:
        rig.kill_all()
