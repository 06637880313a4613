"""The gateway and the simulated bdc bank as deployed, over real loopback mutual TLS: one
connection per request both ways, outcomes asked with BDC110 when the answer did not carry
them, notices pushed on connections of their own and acknowledged."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

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


def _hostile_notice(adapter, bank_node: str, gateway_node: str) -> bytes:
    """A well-framed SBDC100 whose one notice line has an amount not exact in fen: the
    codec refuses it; everything around it (frame, head, FILE_LIST) is sound."""
    import datetime as dt

    from adapters.base import Entry, Movement
    from adapters.bdc import _files

    entry = Entry(account=DEBIT_B001, host_seq_no="H-HOSTILE-1", amount=-100, value_date=dt.date(2026, 11, 27),
                  time=dt.time(10, 30, 15))
    frame = adapter.encode(Movement("D0000020261127999001", (entry,)), sender=bank_node, receiver=gateway_node)
    good = _files.pack_data(_files.format_entries((entry,)))
    bad = _files.pack_data(_files.format_entries((entry,)).replace("|-1.00|", "|-1.005|"))
    body = frame[20:].replace(good.encode(), bad.encode())
    return frame[:16] + len(body).to_bytes(4, "big") + body


@pytest_twisted.ensureDeferred
async def test_a_hostile_message_is_answered_in_protocol_recorded_alerted_and_costs_no_link(tmp_path):
    """Issue 18 item 3 over real loopback TLS: the bank's own connection to the gateway
    carries a notice that does not decode.  The gateway answers with the protocol's
    refusal, journals a ``bank.refused`` event whose ledger copy raises
    ``bank-message-refused``, and the link goes on (an instruction still completes)."""
    import hashlib

    from adapters.base import AdapterError, load_adapter
    from adapters.bdc import BdcAdapter
    from gateway.ledger.checks import CopyChecker, ParsedCopy
    from gateway.ledger.config import load_public_key
    from gateway.ledger.matcher import Matcher, Registry, Thresholds
    from gateway.copies import copy_of
    from gateway.signing import Signer, init_signing_key
    from gateway.store import journal

    h = await start_harness(tmp_path, banks={"B001": {}})
    try:
        await h.link_up("B001")
        bank = h.banks["B001"]
        canonical = BdcAdapter(echo=False)
        hostile = _hostile_notice(canonical, bank.link.core.node, bank.link.core.gateway_node)
        with pytest.raises(AdapterError):
            canonical.decode(hostile)  # the test's premise: it really does not decode
        answer = await bank.link.push.request(hostile)
        head = answer[20:].decode("gbk")
        assert answer[6:7] == b"0"
        for name, value in (("TxStatus", "1"), ("RtnCode", "10000"), ("TxCode", "SBDC100")):
            assert f'<field name="{name}">{value}</field>' in head
        refused = h.gateway.metrics.refused.labels("bank:B001", "bad_message")._value.get()
        assert refused == 1

        # The link is still up and works: an instruction goes through to its end.
        assert h.gateway.relay.dispatchers["B001"].session is not None
        c = h.client()
        assert (await c.submit("HOSTILE-AFTER"))[0] == 202
        await c.wait_state("HOSTILE-AFTER", {"succeeded"}, timeout=20)

        rows = await h.gateway.db.read(journal.events_after, 0, 10_000)
        (row,) = [r for r in rows if r["kind"] == "bank.refused"]
        payload = json.loads(row["payload"])
        assert row["bank_id"] == "B001" and payload["bank"] == "B001"
        assert payload["sha256"] == hashlib.sha256(hostile).hexdigest() and payload["size"] == len(hostile)
        assert row["raw"] == hostile and "amt" in payload["reason"]
        assert DEBIT_B001 not in row["payload"]

        # The copy the forwarder sends, read and matched by the ledger's own code.
        key, pub = init_signing_key(tmp_path / "ledger-keys")
        checker = CopyChecker({"main": ("ed25519", load_public_key(pub, "ed25519"))}, load_adapter)
        signed = json.loads(Signer(key).sign_json(copy_of(row, "main", "bdc")))
        (parsed,) = checker.check("main", [signed])
        assert isinstance(parsed, ParsedCopy) and parsed.fact is not None
        matcher = Matcher(Registry(), Thresholds(large_amount=10**12, result_deadline_s=30, booking_deadline_s=60))
        alerts = matcher.observe(parsed.fact, 0.0)
        assert [(a.rule, a.subject, a.evidence) for a in alerts] == [
            ("bank-message-refused", "B001", (row["event_id"],))]
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_a_batch_goes_out_as_one_bank_batch_and_every_line_comes_back(tmp_path):
    """Issue 18 item 6 over real loopback TLS: the gateway's per-request link carries a
    BDC103 batch payment (``ExchangeLink.ask``) to the simulated bank, which executes it line
    by line; BDC107 says complete, BDC108's result file gives each line's outcome, and each
    line's money arrives on the feed as SBDC100 notices.  Also BDC102, BDC112 and BDC002."""
    import datetime as dt

    from adapters.base import Result
    from adapters.bdc import messages as bm
    from gateway.store import journal
    from tests.integration.harness import OTHER_ACCOUNT

    h = await start_harness(tmp_path, banks={"B001": {}})
    try:
        await h.link_up("B001")
        link = h.gateway.relay.dispatchers["B001"].session
        today = dt.date.today()
        items = (bm.BatchItem(1, 12_300, "6200009999000011", "张三", branch_code="105100000017",
                              summary="011711300000001", reference="011711300000001"),
                 bm.BatchItem(2, 4_500, OTHER_ACCOUNT, "另一中心归集户", branch_code="105100000017",
                              summary="011711300000002", reference="011711300000002"))
        batch = bm.Batch(link.serials.next(), today, "C52240", "522400000000000", "payment", "02", "3",
                         DEBIT_B001, "示例中心归集户", items, memo="批量提取")
        accepted = await link.ask(batch)
        assert isinstance(accepted, bm.BatchAccepted) and accepted.ok and accepted.batch_no

        status = await link.ask(bm.BatchQuery(link.serials.next(), accepted.batch_no))
        assert (status.state, status.total_num, status.total_amount) == ("complete", 2, 16_800)
        results = await link.ask(bm.BatchResultQuery(link.serials.next(), accepted.batch_no))
        assert [(ln.no, ln.amount, ln.succeeded) for ln in results.lines] == [(1, 12_300, True), (2, 4_500, True)]
        hosts = {ln.host_seq_no for ln in results.lines}

        collected = await link.ask(bm.Collection(
            link.serials.next(), today, "C52240", "522400000000000", DEBIT_B001, "示例中心归集户", OTHER_ACCOUNT,
            "另一中心归集户", False, True, 700, "01", reference="021711300000042"))
        assert isinstance(collected, Result) and collected.succeeded
        branches = await link.ask(bm.BranchQuery(link.serials.next(), "105", ("1000",)))
        assert branches.branches == ()  # the simulated bank was given no branch directory
        assert (await link.ask(bm.SignOff(link.serials.next(), link.gateway_node))).ok

        # Every line's money on the feed: the bank's notices, recorded as movements.
        async def movements():
            rows = await h.gateway.db.read(journal.events_after, 0, 10_000)
            return [r for r in rows if r["kind"] == "bank.movement"]

        for _ in range(100):
            seen = {json.loads(r["payload"]).get("host_seq_no") for r in await movements()}
            if hosts <= seen and collected.host_seq_no in seen:
                break
            await deferLater(reactor, 0.1, lambda: None)
        assert hosts <= seen and collected.host_seq_no in seen
        assert set(h.banks["B001"].link.core.executions.values()) == {1}
    finally:
        await h.stop()
