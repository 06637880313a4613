"""kill -9 the gateway between sending a bank batch (BDC103) and its result: no line executed twice.

The gateway and the simulated bdc bank B001 run as real processes.  A centre submits one
batch with ``"bank_batch": true``; the gateway SIGKILLs itself (``HPF_CRASH_AT``) either
with the bank's answer taking the batch in hand, before it is recorded
(``bank.batch_answer``: the answer is lost), or just after the request is on the wire
(``bank.sent``: the answer may or may not be recorded by then).  The bank executes the
batch (each line once, 1 s later).  The gateway is started again: a batch whose answer it
lost is sent and unconfirmed, so it must not be sent again blindly; it is asked about by
its serial (BDC110), whose answer names its BatchNo; then BDC107 and BDC108.

Counted at the bank (the simulator's stats) and on the centre's feed replayed from 0:
the bank received the batch request once and executed every line exactly once; every
line has exactly one final entry on the feed, the bank's outcome; and the fault path was
taken (the process died by SIGKILL, the bank was asked about the batch by its serial).
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.faults.harness import CENTRE, FINAL, Rig, feed_entries, wait_until
from tests.kit import procs

pytestmark = pytest.mark.slow

PAYEE = {"account": "6200009999000011", "name": "张三", "bank_code": "105100000017"}


def _batch(n: int) -> dict[str, object]:
    return {"bank_batch": True, "instructions": [
        {"instruction_id": f"KB-{i}", "debit_account": "6200001111222233", "creditor": PAYEE,
         "amount": f"{10 + i}.00", "purpose": "withdrawal"} for i in range(1, n + 1)]}


@pytest.mark.parametrize("point", ["bank.batch_answer", "bank.sent"])
def test_kill_9_after_the_batch_went_out_executes_no_line_twice(tmp_path, point):
    rig = Rig.prepare(tmp_path, ledger=False, timeouts={
        "receipt_timeout": 1.0, "result_timeout": 20.0, "status_query_interval": 0.5,
        "status_query_attempts": 40})
    ids = [f"KB-{i}" for i in range(1, 6)]
    try:
        gw = rig.start_gateway(f"{point}@1")
        bank = rig.start_bank("--delay", "1.0")
        rig.wait_link()
        status, body, _ = procs.centre_call(rig.config, "POST", "/v1/instructions/batch", _batch(len(ids)))
        assert status == 200, body
        assert body["bank_batch"]["lines"] == len(ids)
        batch_ref = body["bank_batch"]["bank_ref"]

        wait_until(lambda: not gw.alive(), "the gateway killing itself after the batch went out", 20)
        assert gw.popen is not None and gw.popen.returncode == -9, gw.text()[-3000:]
        # The batch is on the wire, its lines recorded as sent, no answer recorded.
        gw = rig.start_gateway()

        def all_final():
            feed = feed_entries(rig.config)
            finals = {e["instruction_id"] for e in feed if e["state"] in FINAL}
            return feed if set(ids) <= finals else None

        feed = wait_until(all_final, "every line of the batch final on the feed", 60, interval=0.25)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        stats = rig.bank_stats()

        # At the bank: one batch request, every line executed exactly once.
        by_ref = stats["executions_by_reference"]
        assert {i: by_ref.get(f"{CENTRE}/{i}", 0) for i in ids} == {i: 1 for i in ids}
        assert stats["max_executions_per_ref"] == 1 and stats["max_executions_per_reference"] == 1
        counts = stats["counts"]
        assert counts.get("batches") == 1
        # The fault path: the restarted gateway asked about the batch by its serial (BDC110),
        # never sent it again (the desk counts a repeated batch request as a duplicate).
        if point == "bank.batch_answer":
            assert counts.get("batch_status_queries", 0) >= 1
        assert stats["duplicates"] == 0, stats

        # On the feed: one final entry per line, succeeded, each naming the same BatchNo.
        finals = [e for e in feed if e["state"] in FINAL]
        assert Counter(e["instruction_id"] for e in finals) == {i: 1 for i in ids}
        assert {e["state"] for e in finals} == {"succeeded"}
        assert len({e["result"]["bank_seq_no"] for e in finals}) == 1
        pairs = Counter((e["instruction_id"], e["state"]) for e in feed)
        assert max(pairs.values()) == 1
        assert batch_ref == next(e["bank_ref"] for e in feed if e["instruction_id"] == "KB-1")
    finally:
        rig.kill_all()
