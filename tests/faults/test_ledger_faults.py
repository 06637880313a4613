"""The supervision ledger down for a whole run, then back: the backlog grows, drains, and every event lands once (G4)."""

from __future__ import annotations

from pathlib import Path

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


def _state(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
    return state, int(ppid)


def _children(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is ``pid``."""
    return [int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and (s := _state(int(e.name))) is not None and s[1] == pid and s[0] != "Z"]


def test_a_ledger_killed_with_sigkill_takes_its_check_processes_with_it(tmp_path):
    """The check processes hold both ends of their task queue, so nothing tells them the ledger
    is gone: without the parent-death signal they would wait for ever, orphaned."""
    rig = Rig.prepare(tmp_path)
    try:
        ledger = rig.start_ledger()
        workers = wait_until(lambda: len(c := _children(ledger.pid)) >= 2 and c, "two check processes", 15)
        ledger.kill()
        wait_until(lambda: all((s := _state(w)) is None or s[0] == "Z" for w in workers),
                   "the check processes gone", 10)
    finally:
        rig.kill_all()
