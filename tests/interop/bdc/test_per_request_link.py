"""The gateway and the simulated bdc bank as deployed, over real loopback mutual TLS: one
connection per request both ways, outcomes asked with BDC110 when the answer did not carry
them, notices pushed on connections of their own and acknowledged."""

from __future__ import annotations

import pytest_twisted

from tests.integration.harness import DEBIT_B001, start_harness


@pytest_twisted.ensureDeferred
async def test_an_outcome_not_in_the_answer_is_asked_with_bdc110_and_executed_once(tmp_path):
    # The bank executes after 0.3 s: its answer is "not yet" (TxStatus 1 or 2), the outcome
    # comes only from BDC110, and the money in an SBDC100 notice on a connection of its own.
    h = await start_harness(tmp_path, banks={"B001": {"delay": 0.3}}, timeouts={
        "result_timeout": 0.5, "status_query_interval": 0.3, "status_query_attempts": 10})
    try:
        await h.link_up("B001")
        c = h.client()
        for n in range(4):
            status, _ = await c.submit(f"PR-{n}", debit=DEBIT_B001)
            assert status == 202
        finals = [await c.wait_state(f"PR-{n}", {"succeeded"}, timeout=20) for n in range(4)]
        core = h.banks["B001"].core
        assert dict(core.stats()["executions"]) == {f["bank_ref"]: 1 for f in finals}
        assert h.gateway.metrics.status_queries.labels("B001")._value.get() >= 1
        link = h.banks["B001"].link
        assert link.counters["frames_out.Receipt"] >= 4 and link.counters["frames_out.Movement"] >= 1
        assert not core.pending_pushes()  # every notice acknowledged on its connection
        assert link.counters["connections"] >= 8  # a connection per request
    finally:
        await h.stop()
