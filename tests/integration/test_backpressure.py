"""Backpressure: bounded queues per bank; a full queue or a long-dead link gets 503, not unbounded work."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.integration.harness import DEBIT_B002, PAYEE, start_harness


@pytest_twisted.ensureDeferred
async def test_a_full_bank_queue_answers_503_naming_the_bank_and_stores_nothing_more(tmp_path):
    h = await start_harness(tmp_path, banks={}, limits={"max_queue_per_bank": 3})
    try:
        c = h.client()
        statuses = [(await c.submit(f"Q-{n}"))[0] for n in range(3)]
        status, problem = await c.submit("Q-3")
        assert statuses == [202, 202, 202]
        assert status == 503 and "B001" in problem["title"] and "3 instructions queued" in problem["detail"]
        # another bank is unaffected
        other = {"account": "6222008888000022", "name": "示例房地产开发有限公司", "bank_code": "102100000030"}
        assert (await c.submit("Q-OTHER", debit=DEBIT_B002, creditor=other))[0] == 202
        # the batch API answers per item
        body = {"instructions": [{"instruction_id": "Q-B", "debit_account": "6200001111222233",
                                  "creditor": PAYEE, "amount": "1.00", "purpose": "withdrawal"}]}
        _, out = await c.request("POST", "/v1/instructions/batch", body)
        assert out["results"][0]["status"] == 503
        _, feed = await c.request("GET", "/v1/results?after=0")
        assert {r["instruction_id"] for r in feed["results"]} == {"Q-0", "Q-1", "Q-2", "Q-OTHER"}
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_a_link_down_too_long_answers_503_until_it_is_back(tmp_path):
    h = await start_harness(tmp_path, banks={}, timeouts={"refuse_when_link_down_for": 0.3})
    try:
        c = h.client()
        await deferLater(reactor, 0.4, lambda: None)
        status, problem = await c.submit("DOWN-1")
        assert status == 503 and "down" in problem["detail"]
        h.start_bank("B001")
        await h.link_up("B001")
        assert (await c.submit("DOWN-2"))[0] == 202
    finally:
        await h.stop()
