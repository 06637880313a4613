"""The copy, defined once (gateway.copies): what the gateway journals, the ledger reads; refused is not forged.

Events are made by the gateway's own store functions (intake, the relay's
bank batches, the ops listener's manual resolution, the centre API's
booking), copied by :func:`gateway.copies.copy_of`, signed by the gateway's
:class:`~gateway.signing.Signer` and checked by the ledger's
:class:`~gateway.ledger.checks.CopyChecker`: the same path a copy takes in
production, without the sockets between.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from adapters import base
from adapters.base import load_adapter
from gateway import copies, lifecycle
from gateway.clock import ClockWatch
from gateway.copies import KINDS, STATES, Copy, Refusal, Unreadable, copy_of, read, read_copy
from gateway.ledger import store as ledger_store
from gateway.ledger.checks import CopyChecker, ParsedCopy
from gateway.ledger.config import load_public_key
from gateway.ledger.matcher import Matcher, Registry, Thresholds
from gateway.ledger.verify import verify_database
from gateway.model import parse_booking
from gateway.signing import Signer, init_signing_key
from gateway.store import instructions as q
from gateway.store import journal
from gateway.store.db import Database
from tests.kit.ledger import sql
from tests.kit.store import make_instruction

DEBIT = "6200001111222233"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> Any:
    from gateway.store import migrate

    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    migrate.upgrade(url)
    database = Database(reactor, url)
    database.startService()
    yield database
    pytest_twisted.blockon(database.stopService())


@pytest.fixture
def gateway_key(tmp_path: Path) -> tuple[Signer, CopyChecker]:
    key, pub = init_signing_key(tmp_path / "keys")
    return Signer(key), CopyChecker({"main": ("ed25519", load_public_key(pub, "ed25519"))}, load_adapter)


def _bdc(message: Any) -> bytes:
    from adapters.bdc import BdcAdapter

    return BdcAdapter(clock=lambda: dt.datetime(2026, 11, 27, 10, 30, 15)).encode(
        message, sender="105000", receiver="D00000")


async def journal_everything(db: Database) -> list[dict[str, Any]]:
    """Every kind of event and every state change the gateway journals, made by its own code paths."""
    items = [q.IntakeItem(make_instruction(n), "B001") for n in range(1, 6)]
    items.append(q.IntakeItem(make_instruction(6), "B001", refusal="unregistered counterparty"))
    outs = await db.write(lambda tx: q.intake(tx, items))
    refs = [o.record["bank_ref"] for o in outs[:5]]
    await db.write(lambda tx: q.record_sent(tx, "B001", refs))
    result = base.Result(seq_no="00000000000000000001", reply_to=refs[0], ref=refs[0], succeeded=True,
                         host_seq_no="H0001", code="0000", text="ok")
    entry = base.Entry(account=DEBIT, host_seq_no="H0001", amount=-10_000, value_date=dt.date(2026, 11, 27),
                       time=dt.time(10, 30, 15), counterparty_account="6200009999000011")
    movement = _bdc(base.Movement(seq_no="00000000000000000002", entries=(entry,)))
    balance = base.Balance(seq_no="00000000000000000003", reply_to="00000000000000000009", account=DEBIT,
                           balance=99_990_000,
                           available=99_990_000, as_of=dt.datetime(2026, 11, 27, 10, 31))
    # The snapshot as the relay builds it from a Balance (gateway/relay.py, _on_balance).
    snapshot = {"account": balance.account, "balance": balance.balance, "available": balance.available,
                "overdraft": balance.overdraft, "status": balance.status, "as_of": balance.as_of.isoformat()}
    batch: list[Any] = [
        q.BankFact(refs[0], lifecycle.ReceiptConfirmed(), bank_seq_no="D1"),
        q.BankFact(refs[0], lifecycle.ResultReceived(True), host_seq_no="H0001", code="0000", text="ok",
                   raw=_bdc(result)),
        q.BankFact(refs[1], lifecycle.ResultReceived(False), code="E001", text="余额不足"),
        q.BankFact(refs[2], lifecycle.ResultOverdue(), text="no answer to 5 queries"),
        q.BankFact(refs[3], lifecycle.ReceiptConfirmed()),
        q.BankFact(refs[3], lifecycle.NotFoundAtBank(), text="the bank denies it"),
        q.BankFact(refs[4], lifecycle.ResultOverdue()),
        q.Movements(((base.to_json(entry), "C52240"),), movement),
        q.BalanceSnapshot(snapshot, "C52240", _bdc(balance)),
    ]
    answers = await db.write(lambda tx: q.apply_bank_batch(tx, "B001", batch))
    assert not any(isinstance(a, Exception) for a in answers), answers
    for iid, ok in (("I3", True), ("I4", False)):
        await db.write(lambda tx, iid=iid, ok=ok: q.resolve_in_doubt(
            tx, "C52240", iid, succeeded=ok, evidence="statement line 12", operator="ops1"))
    booking = parse_booking("C52240", {"booking_id": "BK1", "instruction_id": "I1", "account": DEBIT,
                                       "amount": "-100.00", "voucher_no": "V1", "booked_on": "2026-11-27"},
                            ceiling_fen=10**12)
    await db.write(lambda tx: q.record_booking(tx, booking))
    # An ISO 20022 notice with an entry the bank announced but has not booked, and a part of
    # another document that could not be read (its bytes kept), as the relay records them.
    from adapters.iso20022 import Iso20022Adapter
    from gateway.store.bank_files import BankFile, record_bank_file

    pending = base.Entry(account=DEBIT, host_seq_no="H0009", amount=5_000, value_date=dt.date(2026, 11, 27),
                         time=dt.time(11, 0, 0))
    notice = Iso20022Adapter().encode(base.Movement(seq_no="N1", entries=(), pending=(pending,)),
                                      sender="B003", receiver="D00000")
    unreadable = ({"part": "Stmt[1]/Ntry[2]", "reason": "Amt has no currency"}, b"<Ntry><Amt>1</Amt></Ntry>")
    await db.write(lambda tx: q.apply_bank_batch(tx, "B003", [
        q.Movements((), notice, pending=((base.to_json(pending), "C52240"),), problems=(unreadable,))]))
    await db.write(lambda tx: record_bank_file(tx, "B003", BankFile.of("camt053_20261127.xml", notice), "in"))
    # A whole message a bank link refused, as the relay records it (gateway/relay.py, refused).
    hostile = b"105000" + b"0" + bytes(9) + (5).to_bytes(4, "big") + b"<bad>"
    refused = q.RefusedMessage({"reason": "body: not XML", "sha256": hashlib.sha256(hostile).hexdigest(),
                                "size": len(hostile)}, hostile)
    await db.write(lambda tx: q.apply_bank_batch(tx, "B001", [refused]))
    # ... and one a centre's bdc software sent to the centre listener (gateway/centre_bdc.py).
    from gateway.refusals import centre_refusal

    await db.write(centre_refusal("C52240", hostile, "bad_message: body: not XML"))
    # The wall clock stepped back an hour: the writer journals the step (gateway/clock.py).
    step = [0]
    db.writer.clock = ClockWatch(wall_ns=lambda: time.time_ns() + step[0])
    step[0] = -3600 * 10**9
    await db.write(lambda tx: None)
    # A store restored from a backup (hpf-gateway restore) journals it and jumps its seqs.
    await db.write(lambda tx: journal.mark_restored(tx, 1000))
    return await db.read(journal.events_after, 0, 10_000)


def signed_copies(signer: Signer, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents the forwarder sends (one batch), parsed back as the ledger's ingest parses a body."""
    adapters = {"B001": "bdc", "B003": "iso20022"}
    return [json.loads(text) for text in signer.sign_batch_json(
        [copy_of(r, "main", adapters[r["bank_id"] or "B001"] if r["raw"] else None) for r in rows])]


@pytest_twisted.ensureDeferred
async def test_every_event_the_gateway_journals_is_a_copy_the_ledger_reads(db, gateway_key):
    signer, checker = gateway_key
    rows = await journal_everything(db)
    assert {r["kind"] for r in rows} == set(KINDS)
    assert {r["state"] for r in rows if r["kind"] == "instruction.state"} == STATES
    assert sum("resolution" in json.loads(r["payload"]) for r in rows) == 2
    assert sum(r["raw"] is not None for r in rows) == 8  # the bank's and centre's frames are checked too
    checked = checker.check("main", signed_copies(signer, rows))
    unread = [(r["kind"], r["state"], c) for r, c in zip(rows, checked)
              if not isinstance(c, ParsedCopy) or c.fact is None]
    assert unread == []
    # ... and the matcher takes every one of them.
    matcher = Matcher(Registry(), Thresholds(large_amount=10**12, result_deadline_s=30, booking_deadline_s=60))
    alerts = []
    for n, c in enumerate(checked):
        assert isinstance(c, ParsedCopy) and c.fact is not None
        alerts += matcher.observe(c.fact, float(n))
    # The part of a bank's document nobody could read is an alert, and so is a refused message;
    # a pending entry and a file are not.
    assert [a.rule for a in alerts if a.rule.startswith(("bank-", "centre-"))] == [
        "bank-data-unreadable", "bank-message-refused", "centre-message-refused"]


@pytest_twisted.ensureDeferred
async def test_what_a_check_process_hands_back_is_every_field_the_check_produced(db, gateway_key):
    """Results cross from a check process packed (gateway.ledger.checks.pack); unpacked, every
    field of every row and fact is the check's own, compared fields or not, and the batch proofs
    the ingest takes from the facts are the ones it would read from the documents."""
    import dataclasses
    import pickle

    from gateway.ledger import checks

    signer, checker = gateway_key
    rows = await journal_everything(db)
    rows[3] = dict(rows[3], kind="bank.teleport")                        # signed, unreadable: stored as refused
    docs = signed_copies(signer, rows)
    docs[5] = dict(docs[5], payload=docs[5]["payload"].replace("B001", "B002"))  # forged
    checked = checker.check("main", docs)
    assert isinstance(checked[5], Refusal) and checked[3].fact is None  # type: ignore[union-attr]
    back = checks.unpack(pickle.loads(pickle.dumps(checks.pack(checked))))

    def fields(x: Any) -> Any:
        if dataclasses.is_dataclass(x):
            return (type(x), {f.name: fields(getattr(x, f.name)) for f in dataclasses.fields(x)})
        return x

    assert [fields(c) for c in back] == [fields(c) for c in checked]
    assert [c.fact.batch for c in back if isinstance(c, ParsedCopy) and c.fact is not None] == [
        copies.batch_proof_of(d) for d, c in zip(docs, checked) if isinstance(c, ParsedCopy) and c.fact is not None]


@pytest_twisted.ensureDeferred
async def test_a_manual_resolution_by_two_operators_is_read_too(db, gateway_key):
    """The resolution may carry more than the reader looks at (a proposer and a confirmer)."""
    signer, checker = gateway_key
    rows = [r for r in await journal_everything(db) if "resolution" in json.loads(r["payload"])]
    for r in rows:
        payload = json.loads(r["payload"])
        payload["resolution"].pop("operator")
        payload["resolution"].update(proposed_by="hpf://operator/ops1", confirmed_by="hpf://operator/ops2")
        r["payload"] = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    out = checker.check("main", signed_copies(signer, rows))
    assert [isinstance(c, ParsedCopy) and c.fact is not None for c in out] == [True, True]
    assert [c.fact.state for c in out] == ["succeeded", "failed"]  # type: ignore[union-attr]


def test_the_gateway_journals_no_kind_the_copy_does_not_define():
    """A new journal write of a kind unknown here would reach the ledger unreadable: define it first."""
    kinds: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        if "ledger" in path.parts:
            continue
        kinds |= set(re.findall(r"""\.event\(\s*["']([^"']+)["']""", path.read_text(encoding="utf-8")))
    assert kinds == set(KINDS)


# -- refused is not forged ---------------------------------------------------------------------


def _sign(doc: dict[str, Any], signer: Signer) -> dict[str, Any]:
    return json.loads(signer.sign_json({k: v for k, v in doc.items() if k not in ("signature", "signature_alg")}))


def _balance(seq: int, **changes: Any) -> dict[str, Any]:
    payload = {"account": DEBIT, "balance": 100, "bank": "B001"}
    doc = {"gateway": "main", "seq": seq, "event_id": f"0000000000{seq:04x}", "kind": "bank.balance",
           "centre_id": "C52240", "instruction_id": None, "bank_id": "B001", "account": DEBIT, "state": None,
           "created_us": 1_795_000_000_000_000 + seq, "payload": json.dumps(payload), "raw": None,
           "adapter": None, "hash": f"{seq:064x}", "signature_alg": "ed25519"}
    doc.update(changes)
    return doc


def test_a_well_signed_unreadable_copy_is_stored_as_refused_and_a_bad_signature_is_forged(gateway_key, tmp_path):
    signer, checker = gateway_key
    other = Signer(init_signing_key(tmp_path / "other")[0])
    unreadable = _sign(_balance(1, kind="bank.rumour"), signer)
    forged = _sign(_balance(2, kind="bank.rumour"), other)
    claims_other = _sign(_balance(3, gateway="north", payload="[]"), signer)
    no_hash = _sign({k: v for k, v in _balance(4).items() if k != "hash"}, signer)
    altered = dict(_sign(_balance(5), signer), payload='{"account":"%s","balance":999}' % DEBIT)
    out = checker.check("main", [unreadable, forged, claims_other, no_hash, altered])
    assert isinstance(out[0], ParsedCopy) and out[0].fact is None
    assert out[0].row.kind == ledger_store.REFUSED and "kind must be one of" in (out[0].row.refused or "")
    assert out[0].row.document is not None and out[0].row.document.encode() == copies.signing_input(unreadable)
    assert isinstance(out[1], Refusal) and out[1].forged and "signature" in out[1].reason
    assert isinstance(out[2], Refusal) and not out[2].forged and "claims gateway" in out[2].reason
    assert isinstance(out[3], Refusal) and not out[3].forged and "missing field(s) hash" in out[3].reason
    assert isinstance(out[4], Refusal) and out[4].forged


def test_reading_in_two_steps_names_what_is_wrong():
    assert isinstance(read(_balance(1, signature="c2ln"), expected_alg="ed25519"), Copy)
    found = read(_balance(1, signature="c2ln", account="6200-0000_1"),
                 expected_alg="ed25519")
    assert isinstance(found, Unreadable) and "account has a bad format" in found.reason
    with pytest.raises(ValueError, match="malformed copy: payload.result .* or payload.resolution"):
        read_copy(_balance(1, kind="instruction.state", state="succeeded", instruction_id="I1",
                           payload=json.dumps({"bank_ref": "R1"})))


def test_one_account_pattern_for_every_account_field():
    """The ledger used to take ``_`` and ``.`` in accounts where the gateway never writes them."""
    for bad in ("6200_0000", "6200.0000", "6" * 33, ""):
        with pytest.raises(ValueError, match="account"):
            read_copy(_balance(1, account=bad, payload=json.dumps({"account": bad, "balance": 1})))
    assert read_copy(_balance(1, account="6200-0000", payload=json.dumps({"account": "6200-0000", "balance": 1})))


@pytest_twisted.inlineCallbacks
def test_a_refused_copy_is_chained_and_verified_and_the_copies_after_it_are_stored(ldb, ledger_url, gateway_key):
    signer, checker = gateway_key
    docs = [_sign(_balance(1), signer), _sign(_balance(2, kind="bank.rumour"), signer), _sign(_balance(3), signer)]
    rows = [c.row for c in checker.check("main", docs)]  # type: ignore[union-attr]
    outcomes = yield ldb.write(lambda tx: ledger_store.store_copies(tx, "main", rows))
    assert [o.status for o in outcomes] == ["stored", "refused-stored", "stored"]
    keys = dict(checker.keys)
    report = verify_database(ledger_url, kind="ledger", keys=keys)
    assert report.ok and report.rows == 3, report.describe()
    [again] = yield ldb.write(lambda tx: ledger_store.store_copies(tx, "main", rows[1:2]))
    assert again.status == "duplicate"
    # Its signed text is kept verbatim: an edit shows, as on any other copy.
    sql(ledger_url, "UPDATE copies SET document = replace(document, 'rumour', 'rumours') WHERE seq = 2")
    report = verify_database(ledger_url, kind="ledger", keys=keys)
    assert (report.problem.seq, report.problem.kind) == (2, "altered"), report.describe()


# -- batches: one signature per batch, every copy provable alone ---------------------------------


def _batch(signer: Signer, n: int, first: int = 1) -> list[dict[str, Any]]:
    return [json.loads(t) for t in signer.sign_batch_json([_balance(seq) for seq in range(first, first + n)])]


def test_one_copy_altered_in_a_batch_is_refused_as_forged_and_only_that_copy(gateway_key):
    signer, checker = gateway_key
    for n in (1, 2, 5, 7, 8):
        for bad in range(n):
            docs = _batch(signer, n)
            docs[bad] = dict(docs[bad], payload='{"account":"%s","balance":999,"bank":"B001"}' % DEBIT)
            out = checker.check("main", docs)
            assert [isinstance(c, Refusal) for c in out] == [i == bad for i in range(n)], (n, bad)
            assert out[bad].forged and "signature" in out[bad].reason  # type: ignore[union-attr]


def test_a_copys_place_and_path_are_covered_by_the_batch_signature(gateway_key, tmp_path):
    signer, checker = gateway_key
    docs = _batch(signer, 6)
    other = _batch(Signer(init_signing_key(tmp_path / "other")[0]), 6)
    tampered = [
        dict(docs[0], batch=dict(docs[0]["batch"], index=1)),          # claims another place
        dict(docs[1], batch=dict(docs[1]["batch"], count=5)),          # claims a smaller batch
        dict(docs[2], batch=dict(docs[2]["batch"], path=docs[2]["batch"]["path"][:-1])),  # path cut
        dict(docs[3], batch=dict(docs[3]["batch"], path=list(reversed(docs[3]["batch"]["path"])))),
        dict(docs[4], signature=docs[4]["signature"][:-4] + "AAA="),   # another signature
        other[5],                                                      # signed by another key
    ]
    out = checker.check("main", tampered)
    assert all(isinstance(c, Refusal) and c.forged for c in out), out
    assert all(isinstance(c, ParsedCopy) for c in checker.check("main", docs))


def test_a_malformed_batch_field_refuses_the_copy_as_malformed(gateway_key):
    signer, checker = gateway_key
    [doc] = _batch(signer, 1)
    for batch in ({}, [], {**doc["batch"], "extra": 1}, {**doc["batch"], "root": "AB" * 32},
                  {**doc["batch"], "index": True}, {**doc["batch"], "index": 1}, {**doc["batch"], "path": ["00"]}):
        [out] = checker.check("main", [dict(doc, batch=batch)])
        assert isinstance(out, Refusal) and not out.forged and "batch" in out.reason, batch


def test_the_ledger_checks_one_signature_per_batch(gateway_key, monkeypatch):
    import gateway.signing as signing

    signer, checker = gateway_key
    calls = []
    real = signing.verify_bytes
    monkeypatch.setattr(signing, "verify_bytes", lambda *a: calls.append(1) or real(*a))
    out = checker.check("main", _batch(signer, 50) + _batch(signer, 30, first=51))
    assert all(isinstance(c, ParsedCopy) for c in out) and len(calls) == 2


def test_copies_signed_alone_are_still_read_beside_batches(gateway_key):
    """Copies signed before batches existed (a ledger's store, a gateway's backlog) still verify."""
    signer, checker = gateway_key
    docs = [_sign(_balance(1), signer), *_batch(signer, 3, first=2), _sign(_balance(5), signer)]
    assert "batch" not in docs[0] and "batch" in docs[1]
    assert all(isinstance(c, ParsedCopy) for c in checker.check("main", docs))
    # A copy signed alone given a batch field (or a batch copy stripped of it) does not verify.
    out = checker.check("main", [dict(docs[0], batch=docs[1]["batch"]),
                                 {k: v for k, v in docs[2].items() if k != "batch"}])
    assert all(isinstance(c, Refusal) and c.forged for c in out)


def test_a_reordered_truncated_or_split_batch_is_found_where_it_breaks(gateway_key):
    signer, _ = gateway_key
    a, b = _batch(signer, 4), _batch(signer, 3, first=5)
    assert copies.batch_break(a + b) is None
    assert copies.batch_break([_sign(_balance(9), signer), *a, _sign(_balance(10), signer)]) is None
    at, why = copies.batch_break([a[0], a[2], a[1], a[3]])
    assert at == 1 and "order" in why
    at, why = copies.batch_break(a[:3] + b)
    assert at == 0 and "cut short" in why
    assert copies.batch_break(a + b[:2])[0] == 4
    assert copies.batch_break(a[1:] + b)[0] == 0                    # its head missing
    assert copies.batch_break(a[:2] + b + a[2:])[0] == 0            # split around another batch
    assert copies.batch_break(a + [a[3]] + b)[0] == 4               # a copy repeated
    assert copies.batch_break(a + b + a)[0] == 7                    # a batch sent twice in one request
