"""The centre role (issue 18 item 8) over real loopback mutual TLS: a centre's bdc software
talks to the gateway (its ``[listen] centre_bdc`` listener) as to the settlement system, one request per connection, with frames
written as the deployed centre writes them (the canonical dialect and the centre's head
profile), and its instructions become the same durable instructions as the HTTPS API's."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater

from adapters.base import (
    BalanceQuery,
    Heartbeat,
    HeartbeatAnswer,
    Instruction,
    Receipt,
    Result,
    SignOn,
    SignOnAnswer,
    StatusQuery,
)
from adapters.bdc.messages import Collection, StatementQuery
from gateway.exchange import ExchangeFailed, StreamTransport
from gateway.listener import when_listening
from gateway.tls import client_options, tls_client_endpoint
from tests.integration.harness import (
    CENTRE,
    DEBIT_B001,
    OTHER_ACCOUNT,
    PAYEE,
    start_harness,
)
from tests.interop.bdc import centre_side as java
from tests.interop.bdc.centre_client import UNIT, centre_codec, head


def transfer(serial: int, *, purpose: str = "allocation", debit: str = DEBIT_B001, node: str = CENTRE,
             amount: int = 12_300) -> Instruction:
    return Instruction(f"52240{dt.date.today():%y%m%d}{serial:09d}", dt.date.today(), node, UNIT, debit,
                       "示例中心归集户", PAYEE["account"], PAYEE["name"], PAYEE["bank_code"], True, True, amount,
                       purpose, "资金划转", f"0817113000000{serial:02d}")


class Centre:
    """The centre's client: a fresh TLS connection per call, as the deployed client makes."""

    def __init__(self, h, port: int, who: tuple[str, str] = ("centre", CENTRE)) -> None:
        self.codec = centre_codec()
        options = client_options(h.pki.cert(*who), h.pki.key(*who), [h.pki.ca_cert])
        self.transport = StreamTransport(tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port), options),
                                         self.codec.framer, reactor, timeout=10.0)

    async def raw(self, message, *, sender: str = CENTRE, receiver: str = "D00000") -> bytes:
        """The answer frame (a refusal of a BDC109 reads as "unconfirmed", as deployed: the
        test reads its head itself)."""
        return await self.transport.request(self.codec.encode(message, sender=sender, receiver=receiver))

    async def call(self, message, *, sender: str = CENTRE, receiver: str = "D00000"):
        return self.codec.decode_answer(await self.raw(message, sender=sender, receiver=receiver), message)


@pytest_twisted.ensureDeferred
async def test_a_centre_speaking_bdc_gets_durable_instructions_relayed_and_answered_in_bdc(tmp_path):
    # The daemon's own listener ([listen] centre_bdc), as a deployment starts it.
    h = await start_harness(tmp_path, banks={"B001": {}}, listen={"centre_bdc": "tcp:0:interface=127.0.0.1"})
    port = await when_listening(h.gateway.listeners["centre_bdc"])
    try:
        await h.link_up("B001")
        centre = Centre(h, port.getHost().port)
        signed = await centre.call(SignOn(f"52240{dt.date.today():%y%m%d}999999999", CENTRE))
        assert isinstance(signed, SignOnAnswer) and signed.ok
        assert isinstance(await centre.call(Heartbeat("52240171130000000099", CENTRE)), HeartbeatAnswer)

        # BDC109 and BDC101, then BDC110 until the outcome is there.
        hosts: set[str] = set()
        for ins in (transfer(1), transfer(2, purpose="withdrawal")):
            first = await centre.call(ins)
            assert isinstance(first, (Receipt, Result)) and first.ref == ins.seq_no
            for _ in range(200):
                answer = await centre.call(StatusQuery(f"52240171130{ins.seq_no[-2:]}0000099", ins.seq_no,
                                                       ins.send_date))
                if isinstance(answer, Result):
                    break
                await deferLater(reactor, 0.1, lambda: None)
            assert isinstance(answer, Result) and answer.succeeded and answer.host_seq_no
            hosts.add(answer.host_seq_no)

        # A BDC109 written byte for byte as the public centre-side code writes it
        # (CenterHeadIn + SingleTransferAccountIn through ParmBean2XMLBean and JAXBUtil:
        # no RefSeqNo, RefAcctNo null, the amount as BigDecimal.toString writes it).
        seq = f"52240{dt.date.today():%y%m%d}000000007"
        head_in = list(zip(java.CENTER_HEAD_IN, (f"{dt.date.today():%Y%m%d}", "101502", seq, UNIT, CENTRE,
                                                 "BDC109", "D00000", "GZ20057304", "522400000000000000001")))
        body_in = list(zip(java.SINGLE_TRANSFER_IN, (
            "1", "18", DEBIT_B001, "示例中心归集户", "2", PAYEE["account"], PAYEE["name"], "1", "0",
            "中国建设银行", PAYEE["bank_code"], java.amount("88.5"), None, "081711300000042", "资金划转")))
        answer = head(await centre.transport.request(java.frame(CENTRE, java.jaxb_xml(head_in, body_in))))
        assert answer["TxCode"] == "BDC109" and answer["TxStatus"] in ("0", "2") and answer["SendNode"] == CENTRE
        status, record = await h.client().request("GET", f"/v1/instructions/{dt.date.today():%Y%m%d}-{seq}")
        assert status == 200 and record["amount"] == "88.50" and record["instruction"]["purpose"] == "allocation"

        # The same durable instruction as the HTTPS API's, under <SendDate>-<SendSeqNo>.
        ins = transfer(1)
        instruction_id = f"{ins.send_date:%Y%m%d}-{ins.seq_no}"
        status, record = await h.client().request("GET", f"/v1/instructions/{instruction_id}")
        assert status == 200 and record["state"] == "succeeded" and record["amount"] == "123.00"
        # The centre sends it again (same serial, same date): the same instruction, executed once.
        again = await centre.call(ins)
        assert isinstance(again, Result) and again.succeeded
        core = h.banks["B001"].link.core
        assert core.executions[record["bank_ref"]] == 1 and set(core.executions.values()) == {1}
        # Same serial and date with another body: refused in protocol, nothing changes.
        clash = head(await centre.raw(dataclasses.replace(ins, amount=99_900)))
        assert (clash["TxStatus"], clash["RtnCode"]) == ("1", "10000") and "another request" in clash["RtnMessage"]

        # Refused in protocol, nothing stored: another centre's account, another centre's node,
        # a code the listener does not take.
        collection = Collection("52240171130000000097", dt.date.today(), CENTRE, UNIT, DEBIT_B001, "示例中心归集户",
                                PAYEE["account"], PAYEE["name"], True, True, 100, "01")
        reasons = []
        for message, sender in ((transfer(3, debit=OTHER_ACCOUNT), CENTRE),
                                (transfer(4, node="C11000"), "C11000"),
                                (collection, CENTRE),
                                (BalanceQuery("52240171130000000098", OTHER_ACCOUNT), CENTRE)):
            fields = head(await centre.raw(message, sender=sender))
            assert (fields["TxStatus"], fields["RtnCode"], fields["SendNode"]) == ("1", "10000", sender), fields
            reasons.append(fields["RtnMessage"])
        # The reason travels in RtnMessage: the intake's own for the foreign account.
        # (The collection's payer is not the centre's: a collection, which needs its agreement, ConAgrNo.)
        assert "debit_account" in reasons[0] and "centre" in reasons[1] and "debtor.agreement_no" in reasons[2]
        assert "not an account of this centre" in reasons[3]

        # BDC123: the newest balance the bank reported to the gateway (it asks every 2 s here).
        for _ in range(100):
            balance = await centre.raw(BalanceQuery("52240171130000000096", DEBIT_B001))
            if head(balance)["TxStatus"] == "0":
                break
            await deferLater(reactor, 0.1, lambda: None)
        answer = centre.codec.decode_answer(balance, BalanceQuery("52240171130000000096", DEBIT_B001))
        core = h.banks["B001"].link.core
        assert answer.account == DEBIT_B001 and answer.account_name == "示例中心归集户"
        # Only debits move this account here: the snapshot lies between the book now and the opening.
        assert core.balance(DEBIT_B001) <= answer.balance <= 10_000_000_000 and answer.as_of is not None

        # BDC113 (no account in the request: ReceiveNode 105000 is the bank of the centre's one
        # account there): the movements its bank notified, our transfers' debits among them.
        today = dt.date.today()
        # (The bank's value dates are its local days, which may be a day ahead of this clock's.)
        query = StatementQuery("52240171130000000095", today - dt.timedelta(days=1), today + dt.timedelta(days=1),
                               "105000")
        for _ in range(100):
            statement = await centre.call(query, receiver="105000")
            if {e.host_seq_no for e in statement.entries} >= hosts:
                break
            await deferLater(reactor, 0.1, lambda: None)
        assert statement.account == DEBIT_B001 and {e.host_seq_no for e in statement.entries} >= hosts
        assert all(e.account == DEBIT_B001 and e.amount < 0 for e in statement.entries)
        assert head(await centre.raw(dataclasses.replace(query, bank_node="313024"),
                                     receiver="313024"))["RtnMessage"].startswith("ReceiveNode")
        for serial in (3, 4):
            status, _ = await h.client().request(
                "GET", f"/v1/instructions/{dt.date.today():%Y%m%d}-{transfer(serial).seq_no}")
            assert status == 404

        # A message that does not decode is refused in protocol and costs nothing else.
        broken = java.frame(CENTRE, java.jaxb_xml(head_in, body_in[:5]))  # the creditor fields missing
        fields = head(await centre.transport.request(broken))
        assert (fields["TxStatus"], fields["TxCode"]) == ("1", "BDC109")
        assert h.gateway.metrics.refused.labels(f"centre_bdc:{CENTRE}", "bad_message")._value.get() == 1
        assert (await centre.call(SignOn(f"52240{dt.date.today():%y%m%d}999999999", CENTRE))).ok

        # A bank's certificate is not a centre's: no answer at all.
        with pytest.raises(ExchangeFailed):
            await Centre(h, port.getHost().port, ("bank", "B001")).call(SignOn("52240171130999999999", CENTRE))
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_the_simulated_bdc_centre_of_the_demo_completes_its_transfers(tmp_path):
    """gateway/simulate/bdc_centre.py, as the demo runs it: BDC001, BDC109 for each transfer
    (to accounts at banks of three protocols), BDC110 until every outcome is there."""
    from gateway.simulate.bdc_centre import run_bdc_centre
    from gateway.simulate.run import centre_options_for

    h = await start_harness(tmp_path, listen={"centre_bdc": "tcp:0:interface=127.0.0.1"})
    try:
        for bank_id in ("B001", "B002"):
            await h.link_up(bank_id)
        port = (await when_listening(h.gateway.listeners["centre_bdc"])).getHost().port
        options = centre_options_for(h.config, CENTRE)
        own = [(n, h.config.accounts[n].name, h.config.banks[h.config.accounts[n].bank].node)
               for n in options["debit_accounts"] if h.config.accounts[n].bank in h.banks]
        report = await run_bdc_centre(
            reactor, port=port, certificate=options["certificate"], private_key=options["private_key"],
            ca=options["ca"], centre_id=CENTRE, unit_no=UNIT, debit_accounts=own,
            counterparties=options["counterparties"], count=4, final_timeout=30.0)
        assert (report.submitted, report.succeeded, report.not_final, report.refused) == (4, 4, 0, 0)
        for bank_id in h.banks:
            assert set(h.banks[bank_id].link.stats()["executions"].values()) <= {1}
    finally:
        await h.stop()
