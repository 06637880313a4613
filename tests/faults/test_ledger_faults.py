"""The supervision ledger down for a whole run, then back: the backlog grows, drains, and every event lands once (G4)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.ledger.verify import verify_main
from gateway.store import schema
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
        counts = count_everything(rig, load, feed=feed, stats=rig.bank_stats())  # alerts too: the ledger runs
        rig.stop(ledger)
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


def _journal_an_event_this_ledger_cannot_read(url: str) -> str:
    """Before the gateway starts: an event of a kind this ledger does not know (a gateway newer
    than its ledger), chained into the journal as the gateway's writer would; its event id."""
    from gateway.store.db import GENESIS, chain_hash, make_engine

    engine = make_engine(url)
    now_us = int(time.time() * 1_000_000)
    row = {"event_id": f"{now_us:014x}abcdef0001", "kind": "bank.rumour", "centre_id": "C52240", "instruction_id": None,
               "bank_id": "B001", "account": None, "state": None, "payload": '{"said":"maybe"}', "raw": None, "created_us": now_us}
    try:
        with engine.begin() as conn:
            head = schema.chain_head
            prev = conn.execute(sa.select(head.c.hash).where(head.c.id == 1)).scalar()
            row["hash"] = chain_hash(prev or GENESIS, row)
            conn.execute(sa.insert(schema.events).values(**row))
            if prev is None:
                conn.execute(sa.insert(head).values(id=1, hash=row["hash"]))
            else:
                conn.execute(sa.update(head).where(head.c.id == 1).values(hash=row["hash"]))
    finally:
        engine.dispose()
    return str(row["event_id"])


def test_a_copy_the_ledger_cannot_read_is_kept_there_as_refused_and_never_stalls_the_rest(tmp_path):
    """Issue 16 item 2: the forwarder used to retry such a copy for ever, and every later copy waited."""
    rig = Rig.prepare(tmp_path)
    unreadable = _journal_an_event_this_ledger_cannot_read(rig.config.database)
    ids = [f"U-{n}" for n in range(5)]
    try:
        ledger, gw = rig.start_ledger_and_gateway()
        bank = rig.start_bank()
        rig.wait_link()
        load = Load(rig.config, ids, interval=0.05)
        load.start()
        load.finish(30)
        settle(rig, ids, timeout=30)  # every event at the ledger, the unreadable one first
        wait_until(lambda: rig.metric("hpf_gateway_ledger_backlog") == 0, "the backlog metric at 0", 10)
        assert rig.metric("hpf_gateway_ledger_copies_total", 'status="refused-stored"') == 1
        assert rig.ledger_db is not None
        engine = read_only_engine(rig.ledger_db)
        try:
            with engine.connect() as c:
                refused = c.execute(sa.text("SELECT event_id, kind, refused FROM copies WHERE refused IS NOT NULL"
                                            )).all()
                alerts = c.execute(sa.text("SELECT rule, evidence FROM alerts WHERE rule = 'copy-refused'")).all()
        finally:
            engine.dispose()
        assert [(r.event_id, r.kind) for r in refused] == [(unreadable, "refused")]
        assert "kind must be one of" in refused[0].refused
        assert [(a.rule, json.loads(a.evidence)) for a in alerts] == [("copy-refused", [unreadable])]
        assert verify_main(str(rig.ledger_conf)) == 0  # the chain holds, signatures re-verified
        assert rig.stop(gw) == 0
        rig.stop(bank)
        rig.stop(ledger)
    finally:
        rig.kill_all()
