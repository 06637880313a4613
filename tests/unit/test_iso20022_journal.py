"""What the gateway keeps of a bank report it could read only in part: booked entries as
movements, pending ones as pending facts (never movements), unreadable parts with their bytes."""

from __future__ import annotations

import datetime as dt
import json

import pytest_twisted
from sqlalchemy import select

from adapters import base as msg
from gateway.store import schema
from tests.kit.relay import RecordingSession, settle, setup  # noqa: F401  (the fixture)

ACCOUNT = "6200001111222233"


@pytest_twisted.ensureDeferred
async def test_a_statement_read_in_part_journals_each_fact_once_and_never_books_pending(setup):  # noqa: F811
    config, db, clock, d = setup
    session = RecordingSession()
    d.link_up(session)
    booked = msg.Entry(ACCOUNT, "H1", 500, dt.date(2026, 11, 27), dt.time(9, 0))
    pending = msg.Entry(ACCOUNT, "H2", -700, dt.date(2026, 11, 27), dt.time(10, 0))
    problem = msg.Problem("Rpt[1]/Ntry[3]", "Rpt[1]/Ntry[3]/Amt: currency 'EUR' is not accepted here",
                          b"<Ntry><Amt Ccy=\"EUR\">1.00</Amt></Ntry>")
    statement = msg.Statement("S1", "", ACCOUNT, (booked,), pending=(pending,), problems=(problem,))
    d.handle(statement, b"s1")
    d.handle(msg.Statement("S2", "", ACCOUNT, (), pending=(pending,)), b"s2")  # still pending
    await settle(db, d)
    E = schema.events
    rows = await db.read(lambda c: c.execute(select(E.c.kind, E.c.payload, E.c.raw).order_by(E.c.seq)).all())
    kinds = [r.kind for r in rows]
    assert kinds.count("bank.movement") == 1
    assert kinds.count("bank.movement_pending") == 1
    assert kinds.count("bank.unreadable") == 1
    (moved,) = [json.loads(r.payload) for r in rows if r.kind == "bank.movement"]
    assert (moved["host_seq_no"], moved["currency"]) == ("H1", "CNY")
    (waiting,) = [json.loads(r.payload) for r in rows if r.kind == "bank.movement_pending"]
    assert (waiting["host_seq_no"], waiting["amount"]) == ("H2", -700)
    (bad,) = [r for r in rows if r.kind == "bank.unreadable"]
    assert json.loads(bad.payload)["part"] == "Rpt[1]/Ntry[3]"
    assert bytes(bad.raw) == problem.raw
    assert [a.ok for a in session.of(msg.Ack)] == [True, True]
