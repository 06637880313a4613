"""The simulated SFTP bank's own reports (gateway/simulate/sftp_bank.py, no sockets, a Clock):
an intraday camt.052 for each account whose balance changed, and at the turn of the bank's day
a camt.053 per account that the gateway's reader reads back as the day's statement."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from twisted.internet.task import Clock

from adapters import base
from adapters.iso20022 import Iso20022Adapter
from gateway.simulate.bank import BankCore
from gateway.simulate.bank_link import BankLink
from gateway.simulate.sftp_bank import BankFiles
from tests.kit.bank_peer import make_instruction

PAYER, OTHER = "6200001111222233", "6200001111999999"
# 2026-12-07 23:59:50 in China (UTC+8): ten seconds before the bank's day turns.
LATE = dt.datetime(2026, 12, 7, 15, 59, 50, tzinfo=dt.UTC).timestamp()


def _bank(tmp: Path) -> tuple[BankFiles, Clock, Path]:
    clock = Clock()
    clock.advance(LATE)
    core = BankCore(node="313000", accounts={PAYER: 1_000_000, OTHER: 500_000}, gateway_node="D00000")
    link = BankLink(clock, core, Iso20022Adapter(), bank_id="B003")
    incoming, outgoing = tmp / "to-bank", tmp / "from-bank"
    incoming.mkdir()
    outgoing.mkdir()
    return BankFiles(link, Iso20022Adapter(), incoming, outgoing, node="313000", gateway_node="D00000"), clock, outgoing


def _read(path: Path) -> list[base.Message]:
    return Iso20022Adapter().decode_document(path.read_bytes())


def test_changed_balances_are_reported_and_the_day_closes_with_a_statement(tmp_path: Path) -> None:
    files, clock, out = _bank(tmp_path)
    assert files.report() == 2                      # never reported: both accounts
    assert files.report() == 0                      # nothing changed: nothing written
    payment = make_instruction("31300026120700000001", debit_account=PAYER, amount=25_000)
    (files.incoming / "pain001-1.xml").write_bytes(
        files.adapter.encode_document(payment, sender="D00000", receiver="313000"))
    assert files.poll() == 1
    clock.advance(1)
    assert files.link.core.balance(PAYER) == 975_000
    assert files.report() == 1                      # the payer's balance changed; the other's did not
    [latest] = sorted(out.glob("camt052-*.xml"), key=lambda p: p.stat().st_mtime_ns)[-1:]
    [balance] = _read(latest)
    assert isinstance(balance, base.Balance) and balance.account == PAYER and balance.balance == 975_000
    assert balance.status == "ITBD" and balance.as_of == dt.datetime(2026, 12, 7, 23, 59, 51)
    assert not list(out.glob("camt053-*.xml"))
    # The bank's day turns: the next report first closes the day.
    clock.advance(10)
    files.report()
    statements = {m.account: m for p in out.glob("camt053-*.xml") for m in _read(p)}
    assert set(statements) == {PAYER, OTHER}
    day = statements[PAYER]
    assert isinstance(day, base.Statement)
    assert (day.opening_balance, day.closing_balance) == (1_000_000, 975_000)
    assert [e.amount for e in day.entries] == [-25_000]
    assert (statements[OTHER].opening_balance, statements[OTHER].closing_balance, statements[OTHER].entries) \
        == (500_000, 500_000, ())
    assert files.day == dt.date(2026, 12, 8) and files.entries == {} and files.opening[PAYER] == 975_000
