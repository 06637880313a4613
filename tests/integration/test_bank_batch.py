"""A centre batch sent to its bdc bank as ONE bank batch, over real loopback mutual TLS.

POST /v1/instructions/batch with ``"bank_batch": true`` (gateway/centre_api.py) stores the
lines as instructions and one bank batch; the relay sends it as one BDC103 on a connection
of its own, asks BDC107 until the simulated bank says complete, reads the BDC108 result
file, and every line's own result reaches the centre's feed (docs/protocols/bdc.md,
"Batches").  The refusals are the centre API's.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.integration.harness import DEBIT_B001, DEBIT_B002, PAYEE, start_harness

OTHER_PAYEE = {"account": "6222008888000022", "name": "示例房地产开发有限公司", "bank_code": "102100000030"}


def _line(n: int, amount: str, *, debit: str = DEBIT_B001, creditor: dict[str, str] | None = None,
          purpose: str = "withdrawal") -> dict[str, object]:
    return {"instruction_id": f"BB-{n}", "debit_account": debit, "creditor": creditor or PAYEE,
            "amount": amount, "purpose": purpose, "memo": "批量提取"}


@pytest_twisted.ensureDeferred
async def test_a_centre_batch_goes_out_as_one_bank_batch_and_every_line_is_final_on_the_feed(tmp_path):
    # The bank executes after 0.4 s, so BDC107 first says "processing" and is asked again.
    h = await start_harness(tmp_path, banks={"B001": {"delay": 0.4}}, timeouts={
        "result_timeout": 0.5, "status_query_interval": 0.3, "status_query_attempts": 20})
    try:
        await h.link_up("B001")
        c = h.client()
        lines = [_line(1, "120.00"), _line(2, "45.50", creditor=OTHER_PAYEE), _line(3, "7.05")]
        status, body = await c.request("POST", "/v1/instructions/batch", {"instructions": lines, "bank_batch": True})
        assert status == 200, body
        assert [r["status"] for r in body["results"]] == [202, 202, 202]
        refs = [r["instruction"]["bank_ref"] for r in body["results"]]
        assert body["bank_batch"] == {"bank": "B001", "bank_ref": refs[0], "lines": 3}

        finals = [await c.wait_state(f"BB-{n}", {"succeeded", "failed", "in_doubt"}, timeout=30) for n in (1, 2, 3)]
        assert [f["state"] for f in finals] == ["succeeded"] * 3
        batch_nos = {f["result"]["bank_seq_no"] for f in finals}
        assert len(batch_nos) == 1 and None not in batch_nos  # each line's result names the bank's BatchNo

        # The bank got one batch request and executed each line once, under its own line reference.
        core = h.banks["B001"].core
        [batch_no] = batch_nos
        assert core.counts["batches"] == 1
        assert dict(core.stats()["executions"]) == {f"{batch_no}L{n}": 1 for n in (1, 2, 3)}
        assert not any(ref in core.stats()["executions"] for ref in refs)  # no line went out on its own
        link = h.banks["B001"].link
        assert link.counters["frames_in.BatchQuery"] >= 1 and link.counters["frames_in.BatchResultQuery"] >= 1
        assert link.counters["frames_in.Batch"] == 1

        # Every line's own result on the centre's feed, as a single instruction's.
        for _ in range(100):
            status, feed = await c.request("GET", "/v1/results?after=0&limit=1000")
            done = {(f["instruction_id"], f["state"]) for f in feed["results"]}
            if {(f"BB-{n}", "succeeded") for n in (1, 2, 3)} <= done:
                break
            await deferLater(reactor, 0.1, lambda: None)
        states = [(f["instruction_id"], f["state"]) for f in feed["results"] if f["instruction_id"].startswith("BB-")]
        for n in (1, 2, 3):
            assert [s for i, s in states if i == f"BB-{n}"] == ["received", "sent", "accepted", "succeeded"]
        results = {f["instruction_id"]: f["result"] for f in feed["results"] if f["state"] == "succeeded"}
        assert {results[f"BB-{n}"]["bank_seq_no"] for n in (1, 2, 3)} == {batch_no}
        assert len({results[f"BB-{n}"]["host_seq_no"] for n in (1, 2, 3)}) == 3

        # The exchanges that took the batch and gave its result file, journalled as evidence,
        # and no line's fact carries a frame of its own.
        import json

        from gateway.store import journal
        events = await h.gateway.db.read(journal.events_after, 0, 10_000)
        files = [json.loads(e["payload"])["name"] for e in events if e["kind"] == "bank.file"]
        assert f"BDC103-{refs[0]}-{batch_no}.exchange" in files and f"BDC108-{batch_no}.exchange" in files
        assert not [e for e in events if e["kind"] == "instruction.state" and e["instruction_id"].startswith("BB-")
                    and e["raw"]]

        # The same request again: the same records, nothing sent again.
        status, again = await c.request("POST", "/v1/instructions/batch", {"instructions": lines, "bank_batch": True})
        assert status == 200 and [r["status"] for r in again["results"]] == [200, 200, 200]
        assert again["bank_batch"]["bank_ref"] == refs[0]
        await deferLater(reactor, 0.5, lambda: None)
        assert core.counts["batches"] == 1 and link.counters["frames_in.Batch"] == 1
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_what_cannot_go_as_one_bank_batch_is_refused_whole(tmp_path):
    h = await start_harness(tmp_path, banks={})
    try:
        c = h.client()

        async def post(body):
            return await c.request("POST", "/v1/instructions/batch", body)

        def fields(body):
            return [e["field"] for e in body.get("errors", [])]

        status, body = await post({"instructions": [_line(1, "1.00")], "bank_batch": "yes"})
        assert status == 422 and fields(body) == ["bank_batch"]
        status, body = await post({"instructions": [_line(1, "1.00")], "bank_batch": True, "extra": 1})
        assert status == 422
        # Two debit accounts (and two banks).
        status, body = await post({"instructions": [_line(1, "1.00"), _line(2, "1.00", debit=DEBIT_B002)],
                                   "bank_batch": True})
        assert status == 422 and fields(body) == ["bank_batch"] and "same debit account" in body["errors"][0]["reason"]
        # A bank that does not speak bdc.
        status, body = await post({"instructions": [_line(1, "1.00", debit=DEBIT_B002, creditor=OTHER_PAYEE)],
                                   "bank_batch": True})
        assert status == 422 and "does not speak bdc" in body["errors"][0]["reason"]
        # Two purposes: a batch has one BusType.
        status, body = await post({"instructions": [_line(1, "1.00"), _line(2, "1.00", purpose="refund")],
                                   "bank_batch": True})
        assert status == 422 and "same purpose" in body["errors"][0]["reason"]
        # One invalid line refuses the whole batch, naming the line; nothing is stored.
        status, body = await post({"instructions": [_line(1, "1.00"), _line(2, "-1")], "bank_batch": True})
        assert status == 422 and fields(body) == ["instructions[1].amount"]
        # A line refused by policy (an unregistered payee) refuses the whole batch too.
        stranger = {"account": "6200000000000001", "name": "王五", "bank_code": "105100000017"}
        status, body = await post({"instructions": [_line(1, "1.00"), _line(2, "1.00", creditor=stranger)],
                                   "bank_batch": True})
        assert status == 422 and "refused by policy" in body["errors"][0]["reason"]
        # The same id twice.
        status, body = await post({"instructions": [_line(1, "1.00"), _line(1, "1.00")], "bank_batch": True})
        assert status == 422 and fields(body) == ["instructions[1].instruction_id"]
        for n in (1, 2):
            status, _ = await c.request("GET", f"/v1/instructions/BB-{n}")
            assert status == 404
        # Part of it stored before (here: line 1 alone): refused whole, 409.
        status, _ = await c.request("POST", "/v1/instructions", _line(1, "1.00"))
        assert status == 202
        status, body = await post({"instructions": [_line(1, "1.00"), _line(2, "1.00")], "bank_batch": True})
        assert status == 409
        status, _ = await c.request("GET", "/v1/instructions/BB-2")
        assert status == 404
        # Without bank_batch (or false) each item is its own instruction, as before.
        status, body = await post({"instructions": [_line(3, "1.00")], "bank_batch": False})
        assert status == 200 and "bank_batch" not in body and body["results"][0]["status"] == 202
    finally:
        await h.stop()
