"""A centre's existing bdc software, simulated: what the deployed centre does, against the
gateway's ``[listen] centre_bdc`` listener (docs/protocols/bdc.md, "The centre role").

It signs on (BDC001), sends each instruction as a BDC109 single transfer (and, when asked,
BDC102 single collections between its own accounts) on a connection of
its own, and, as the deployed centre does with any answer that is not a success, asks BDC110
(by its SendSeqNo and date) until the outcome is there.  SendSeqNo is the deployed form:
the node's 5 digits, YYMMDD, then 9 digits (here the seconds of the day times 1000 plus the
item number, so runs later the same day do not reuse one).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater

from adapters import base
from adapters.bdc import BdcAdapter
from adapters.bdc.codec import AnswerRefused, CentreProfile
from adapters.bdc.messages import Collection
from gateway.exchange import ExchangeFailed, StreamTransport
from gateway.tls import client_options, tls_client_endpoint

__all__ = ["BdcCentreReport", "run_bdc_centre"]


@dataclass
class BdcCentreReport:
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    not_final: int = 0
    refused: int = 0      # answers that were the protocol's refusal (nothing stored)
    queries: int = 0
    collections: int = 0  # of the submitted, BDC102 single collections
    hosts: set[str] = field(default_factory=set)  # the host serials of the succeeded ones

    def summary(self) -> str:
        return (f"bdc centre: submitted {self.submitted}, succeeded {self.succeeded}, failed {self.failed}, "
                f"not final {self.not_final}, BDC110 queries {self.queries}")


async def run_bdc_centre(reactor: Any, *, port: int, certificate: Path, private_key: Path, ca: Path,
                         centre_id: str, unit_no: str, debit_accounts: Sequence[tuple[str, str, str]],
                         counterparties: Sequence[tuple[str, str, str]], count: int,
                         final_timeout: float = 60.0, query_every: float = 0.5,
                         collections: int = 0, collect: tuple[tuple[str, str, str], tuple[str, str]] | None = None,
                         ) -> BdcCentreReport:
    """Send ``count`` BDC109 transfers and follow each to its outcome with BDC110.

    ``debit_accounts`` are (account, name, bank node) of the centre; ``counterparties`` are
    (account, name, 12-digit bank code).  With ``collections`` and ``collect`` = ((payer
    account, name, its 12-digit bank code), (collecting account, name)), also that many BDC102
    single collections between the centre's own accounts.  Fails (ExchangeFailed) when the
    listener cannot be reached at all.
    """
    codec = BdcAdapter(echo=False, centres={centre_id: CentreProfile(unit_no, "", "")})
    transport = StreamTransport(
        tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                            client_options(certificate, private_key, [ca])),
        codec.framer, reactor, timeout=10.0)
    now = _dt.datetime.now()
    today = now.date()
    stem = f"{centre_id[1:]}{now:%y%m%d}"
    first = (now.hour * 3600 + now.minute * 60 + now.second) * 1000

    async def call(message: Any) -> Any:
        frame = await transport.request(codec.encode(message, sender=centre_id, receiver="D00000"))
        return codec.decode_answer(frame, message)

    report = BdcCentreReport()
    signed = await call(base.SignOn(f"{stem}999999999", centre_id))
    if not signed.ok:
        raise ExchangeFailed(f"sign-on refused: {signed.code} {signed.text}")
    pending: dict[str, Any] = {}

    def settled(answer: Any) -> bool:
        if isinstance(answer, base.Result):
            report.succeeded += answer.succeeded
            report.failed += not answer.succeeded
            if answer.succeeded and answer.host_seq_no:
                report.hosts.add(answer.host_seq_no)
            return True
        return False

    for n in range(count + 1, count + 1 + (collections if collect else 0)):
        assert collect is not None
        (payer, payer_name, payer_bank), (into, into_name) = collect
        serial = f"{stem}{first + n:09d}"
        same = any(a == into and node[:3] == payer_bank[:3] for a, _, node in debit_accounts)
        c = Collection(serial, today, centre_id, unit_no, into, into_name, payer, payer_name, False, same,
                       2_000 + n, "18", debtor_bank_code="" if same else payer_bank, memo="资金归集",
                       reference=f"02{now:%y%m%d}{first + n:07d}")
        answer = await call(c)
        report.submitted += 1
        report.collections += 1
        if not (isinstance(answer, base.Result) and answer.succeeded and settled(answer)):
            pending[serial] = c
    for n in range(1, count + 1):
        account, name, node = debit_accounts[n % len(debit_accounts)]
        payee, payee_name, bank_code = counterparties[n % len(counterparties)]
        serial = f"{stem}{first + n:09d}"
        ins = base.Instruction(serial, today, centre_id, unit_no, account, name, payee, payee_name, bank_code,
                               True, bank_code[:3] == node[:3], 1_000 + n, "allocation", "资金划转",
                               f"18{now:%y%m%d}{first + n:07d}")
        answer = await call(ins)
        report.submitted += 1
        if not (isinstance(answer, base.Result) and answer.succeeded and settled(answer)):
            pending[serial] = ins  # not a success: as deployed, asked with BDC110
    deadline = reactor.seconds() + final_timeout
    query = 0
    while pending and reactor.seconds() < deadline:
        for serial, ins in list(pending.items()):
            query += 1
            report.queries += 1
            try:
                answer = await call(base.StatusQuery(f"{stem}8{query:08d}", serial, ins.send_date))
            except AnswerRefused:  # a failed query: the gateway stored nothing under that serial
                del pending[serial]
                report.refused += 1
                continue
            if settled(answer):
                del pending[serial]
        if pending:
            await deferLater(reactor, query_every, lambda: None)
    report.not_final = len(pending)
    return report
