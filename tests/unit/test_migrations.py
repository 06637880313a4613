"""Upgrades: a database made by an earlier schema, with data in it, migrates and keeps working."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor

from gateway.ledger.verify import verify_database
from gateway.store import instructions as q
from gateway.store import migrate
from gateway.store.db import GENESIS, Database, chain_hash, make_engine
from tests.kit.store import make_instruction


@pytest.fixture
def old_database(tmp_path):
    """A database at revision 0002 (the release before link leases) holding two journalled instructions."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.GATEWAY.upgrade(url, target="0002")
    engine = make_engine(url)
    prev = GENESIS
    with engine.begin() as conn:
        for n in (1, 2):
            ins = make_instruction(n)
            body = json.dumps(ins.to_json(), separators=(",", ":"), ensure_ascii=False, sort_keys=True)
            conn.execute(sa.text(
                "insert into instructions (centre_id, instruction_id, bank_id, debit_account, amount, body, "
                "fingerprint, state, bank_ref, sends, created_us, updated_us) values "
                "('C52240', :iid, 'B001', :acct, :amount, :body, :fp, 'received', :ref, 0, 1, 1)"),
                dict(iid=ins.instruction_id, acct=ins.debit_account, amount=ins.amount, body=body,
                     fp=ins.fingerprint(), ref=f"5224026112700000000{n}"))
            row = dict(event_id=f"{n:024x}", kind="instruction.state", centre_id="C52240",
                       instruction_id=ins.instruction_id, bank_id="B001", account=ins.debit_account,
                       state="received", payload=json.dumps({"instruction": ins.to_json()}), raw=None,
                       created_us=1_000_000 + n)
            row["hash"] = prev = chain_hash(prev, row)
            conn.execute(sa.text(
                "insert into events (event_id, kind, centre_id, instruction_id, bank_id, account, state, "
                "payload, raw, created_us, hash) values (:event_id, :kind, :centre_id, :instruction_id, "
                ":bank_id, :account, :state, :payload, :raw, :created_us, :hash)"), row)
    engine.dispose()
    return url


@pytest_twisted.ensureDeferred
async def test_an_older_database_with_data_migrates_and_its_journal_continues(old_database):
    before, after = migrate.upgrade(old_database)
    assert (before, after) == ("0002", migrate.head_revision())
    db = Database(reactor, old_database)
    db.startService()
    try:
        old = await db.read(q.get, "C52240", "I1")
        assert old["state"] == "received" and old["bank_ref"].endswith("1")
        [out] = await db.write(lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(3), "B001")]))
        assert out.status == "created"
        feed = await db.read(q.feed, "C52240", 0, 10)
        assert [r["instruction_id"] for r in feed] == ["I1", "I2", "I3"]
    finally:
        await db.stopService()
    report = verify_database(old_database, kind="gateway")
    assert report.ok, report.describe()  # the new row chains onto the migrated journal


def test_a_database_newer_than_this_release_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("update alembic_version set version_num = '9999'"))
    with pytest.raises(migrate.SchemaMismatch, match="newer than this release"):
        migrate.check_current(engine)
    with pytest.raises(migrate.SchemaMismatch, match="newer than this release"):
        migrate.upgrade(url)
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_a_ledger_with_copies_migrates_to_refused_copies_and_its_chain_continues(tmp_path):
    """Ledger L0001 -> L0002 -> head: the stored copies keep their hashes, and a refused copy and
    batch-signed copies chain after them."""
    from gateway.ledger import store as ledger_store
    from tests.kit.ledger import GATEWAY_KEY, gateway_signer, make_copy, row_of, sign, sign_batch

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger_store.MIGRATIONS.upgrade(url, target="L0001")
    engine = make_engine(url)
    prev = GENESIS
    with engine.begin() as conn:
        for n in (1, 2):
            values = row_of(make_copy(n, instruction_id=f"I{n}")).values()
            values.pop("refused")
            values.pop("document")
            values.pop("batch")
            values.update(seq=n, received_us=1_000_000 + n)
            values["hash"] = prev = ledger_store.ledger_chain_hash(
                prev, n, values["received_us"], ledger_store.copy_document(values))
            conn.execute(sa.insert(sa.table("copies", *[sa.column(c) for c in values])).values(**values))
        conn.execute(sa.text("insert into ledger_head (id, seq, hash) values (1, 2, :h)"), {"h": prev})
    engine.dispose()
    assert ledger_store.MIGRATIONS.upgrade(url, target="L0002") == ("L0001", "L0002")
    keys = {"main": ("ed25519", GATEWAY_KEY.public_key())}
    # ... and on to L0005 (batch-signed copies): the copies signed alone keep their hashes and
    # still verify, and a refused copy and a batch of copies signed together chain after them.
    assert ledger_store.MIGRATIONS.upgrade(url)[0] == "L0002"
    assert verify_database(url, kind="ledger", keys=keys).ok

    from gateway.copies import Unreadable, read

    unreadable = read(sign(dict(make_copy(3), kind="bank.rumour")), expected_alg="ed25519")
    assert isinstance(unreadable, Unreadable)
    batch = [row_of(d) for d in sign_batch(gateway_signer(tmp_path), [make_copy(4), make_copy(5)])]
    db = ledger_store.LedgerDatabase(reactor, url)
    db.startService()
    try:
        out = await db.write(lambda tx: ledger_store.store_copies(
            tx, "main", [ledger_store.CopyRow.unreadable(unreadable), *batch]))
        assert [(o.status, o.seq) for o in out] == [("refused-stored", 3), ("stored", 4), ("stored", 5)]
    finally:
        await db.stopService()
    report = verify_database(url, kind="ledger", keys=keys)
    assert report.ok and report.rows == 5, report.describe()
