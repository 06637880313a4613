"""A collection (kind ``collection``) over real loopback mutual TLS: the centre API takes it,
the relay sends it to the bdc bank holding the credited centre account as BDC102, the
simulated bank debits the payer (one of its other customers) and credits the centre's
account once, and the result is final on the centre's feed (docs/protocols/bdc.md,
"Single collection (BDC102)").  The refusals are the centre API's.
"""

from __future__ import annotations

import json

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
                            timeouts=QUICK_INQUIRY)
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


# The result is late, and the BDC110 inquiry asks soon and often, so the outcome comes in time.
QUICK_INQUIRY = {"result_timeout": 0.5, "status_query_interval": 0.3, "status_query_attempts": 20}

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


@pytest_twisted.ensureDeferred
async def test_collections_as_one_bank_batch_go_out_as_bdc104_and_every_line_is_final(tmp_path):
    payers = {"6222000011113333": "甲有限公司", "6222000011114444": "乙有限公司", "6217000011115555": "丙有限公司"}
    h = await start_harness(tmp_path, banks={"B001": {"customers": dict.fromkeys(payers, OPENING), "delay": 0.4}},
                            timeouts=QUICK_INQUIRY)
    try:
        await h.link_up("B001")
        c = h.client()
        core = h.banks["B001"].core
        before = core.stats()["balances"][DEBIT_B001]
        codes = ["105100000017", "105100000017", "102100000030"]  # two at the collecting bank, one not: FileType 3
        lines = [{"instruction_id": f"CB-{n}", "kind": "collection", "credit_account": DEBIT_B001,
                  "debtor": {"account": acct, "name": name, "bank_code": code, "agreement_no": f"AGR-{n}"},
                  "amount": amount, "purpose": "contribution"}
                 for n, ((acct, name), code, amount) in enumerate(zip(payers.items(), codes, ("10.00", "20.50", "3.05")), 1)]
        # A bank batch is of one kind: a transfer among collections is refused whole.
        mixed = [*lines, {"instruction_id": "CB-9", "debit_account": DEBIT_B001, "amount": "1.00", "purpose": "withdrawal",
                          "creditor": {"account": "6200009999000011", "name": "张三", "bank_code": "105100000017"}}]
        status, body = await c.request("POST", "/v1/instructions/batch", {"instructions": mixed, "bank_batch": True})
        assert status == 422 and "one kind" in json.dumps(body, ensure_ascii=False), body

        status, body = await c.request("POST", "/v1/instructions/batch", {"instructions": lines, "bank_batch": True})
        assert status == 200, body
        refs = [r["instruction"]["bank_ref"] for r in body["results"]]
        finals = [await c.wait_state(f"CB-{n}", {"succeeded", "failed", "in_doubt"}, timeout=30) for n in (1, 2, 3)]
        assert [f["state"] for f in finals] == ["succeeded"] * 3
        [batch_no] = {f["result"]["bank_seq_no"] for f in finals}

        # One BDC104, each line executed once under its line reference; the centre credited.
        assert core.counts["batches"] == 1 and h.banks["B001"].link.counters["frames_in.Batch"] == 1
        assert dict(core.stats()["executions"]) == {f"{batch_no}L{n}": 1 for n in (1, 2, 3)}
        assert not any(ref in core.stats()["executions"] for ref in refs)
        balances = core.stats()["balances"]
        assert balances[DEBIT_B001] == before + 1000 + 2050 + 305
        assert [balances[a] for a in payers] == [OPENING - 1000, OPENING - 2050, OPENING - 305]

        from gateway.store import journal
        events = await h.gateway.db.read(journal.events_after, 0, 10_000)
        files = [json.loads(e["payload"])["name"] for e in events if e["kind"] == "bank.file"]
        assert f"BDC104-{refs[0]}-{batch_no}.exchange" in files and f"BDC108-{batch_no}.exchange" in files
    finally:
        await h.stop()
