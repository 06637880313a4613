"""A collection (kind ``collection``) over real loopback mutual TLS: the centre API takes it,
the relay sends it to the bdc bank holding the credited centre account as BDC102, the
simulated bank debits the payer (one of its other customers) and credits the centre's
account once, and the result is final on the centre's feed (docs/protocols/bdc.md,
"Single collection (BDC102)").  The refusals are the centre API's.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.integration.harness import (
    DEBIT_B001,
    DEBIT_B002,
    OTHER_ACCOUNT,
    start_harness,
)

PAYER = "6222000011112222"
DEBTOR = {"account": PAYER, "name": "示例有限公司", "bank_code": "105100000017", "agreement_no": "AGR-2026-0001"}
OPENING = 1_000_000_00  # the payer's balance at the bank, fen


def _collection(iid: str, amount: str = "1200.50", *, credit: str = DEBIT_B001, **extra: object) -> dict[str, object]:
    return {"instruction_id": iid, "kind": "collection", "credit_account": credit, "debtor": DEBTOR,
            "amount": amount, "purpose": "contribution", "memo": "12月缴存", **extra}


@pytest.mark.parametrize("delay", [0.0, 0.6])
@pytest_twisted.ensureDeferred
async def test_a_collection_is_sent_as_bdc102_executed_once_and_final_on_the_feed(tmp_path, delay):
    # delay 0.6: the bank answers "taken, no outcome yet" first; the outcome comes by the
    # BDC110 inquiry (or the bank's late answer), exactly as for a BDC109 transfer.
    h = await start_harness(tmp_path, banks={"B001": {"customers": {PAYER: OPENING}, "delay": delay}},
                            timeouts={"result_timeout": 0.5, "status_query_interval": 0.3,
                                      "status_query_attempts": 20})
    try:
        await h.link_up("B001")
        c = h.client()
        core = h.banks["B001"].core
        centre_before = core.stats()["balances"][DEBIT_B001]
        status, body = await c.request("POST", "/v1/instructions", _collection("COL-1"))
        assert status == 202, body
        ref = body["bank_ref"]
        assert body["instruction"]["kind"] == "collection" and body["instruction"]["credit_account"] == DEBIT_B001

        # The same body again is the same instruction; another body under the id is a conflict.
        again, body2 = await c.request("POST", "/v1/instructions", _collection("COL-1"))
        assert again == 200 and body2["bank_ref"] == ref
        conflict, _ = await c.request("POST", "/v1/instructions", _collection("COL-1", "1.00"))
        assert conflict == 409

        final = await c.wait_state("COL-1", {"succeeded", "failed", "in_doubt"}, timeout=30)
        assert final["state"] == "succeeded", final
        assert final["result"]["host_seq_no"]

        # One BDC102, executed once: the payer debited, the centre's account credited.
        stats = core.stats()
        assert stats["executions"][ref] == 1
        assert stats["balances"][PAYER] == OPENING - 120050
        assert stats["balances"][DEBIT_B001] == centre_before + 120050
        assert h.banks["B001"].link.counters["frames_in.Collection"] >= 1
        assert h.banks["B001"].link.counters.get("frames_in.Instruction", 0) == 0

        for _ in range(100):
            status, feed = await c.request("GET", "/v1/results?after=0&limit=1000")
            states = [f["state"] for f in feed["results"] if f["instruction_id"] == "COL-1"]
            if "succeeded" in states:
                break
            await deferLater(reactor, 0.1, lambda: None)
        assert states == ["received", "sent", "accepted", "succeeded"] if delay else \
            states in (["received", "sent", "succeeded"], ["received", "sent", "accepted", "succeeded"])
        if delay:
            assert core.counts["status_queries"] >= 1 or core.counts["pushed.Result"] >= 1
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_a_collection_is_refused_where_it_cannot_be_carried_or_is_not_the_centres(tmp_path):
    h = await start_harness(tmp_path, banks={})
    try:
        c = h.client()
        # B002 speaks bocb2e: no collection message exists there, none is made up.
        status, body = await c.request("POST", "/v1/instructions", _collection("COL-2", credit=DEBIT_B002))
        assert status == 422, body
        assert body["title"] == "The bank's protocol cannot carry this instruction"
        assert "no collection" in body["errors"][0]["reason"] and "bocb2e" in body["errors"][0]["reason"]
        # Another centre's account is not this centre's to credit.
        status, body = await c.request("POST", "/v1/instructions", _collection("COL-3", credit=OTHER_ACCOUNT))
        assert status == 403 and body["errors"][0]["field"] == "credit_account", body
        # Strict: a transfer's field in a collection is unknown.
        status, body = await c.request("POST", "/v1/instructions", _collection("COL-4", debit_account=DEBIT_B001))
        assert status == 422 and {"field": "debit_account", "reason": "unknown field"} in body["errors"], body
        # Nothing stored.
        for iid in ("COL-2", "COL-3", "COL-4"):
            status, _ = await c.request("GET", f"/v1/instructions/{iid}")
            assert status == 404
    finally:
        await h.stop()
