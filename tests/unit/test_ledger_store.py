"""The ledger's store and ``verify`` on SQLite and PostgreSQL, and the pure copy checks.

Copies are built and signed here exactly as gateway/copies.py says a gateway does;
tampering is done behind the store's back with plain SQL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from twisted.internet import reactor

from adapters.base import load_adapter
from gateway.config import ConfigError
from gateway.copies import Refusal, check_raw, read_copy, read_envelope
from gateway.ledger import store
from gateway.ledger.checks import CopyChecker, ParsedCopy
from gateway.ledger.config import load_ledger_config
from gateway.ledger.verify import verify_database, verify_main
from gateway.store.db import Database, make_engine
from tests.kit.ledger import (
    DEBIT,
    GATEWAY_KEY,
    file,
    gateway_signer,
    make_copy,
    movement_frame,
    movement_payload,
    public_keys,
    result_frame,
    result_payload,
    row_of,
    sign,
    sign_batch,
    sql,
)

# -- schema -------------------------------------------------------------------------------


def test_ledger_migrations_build_exactly_the_schema_in_code(ledger_url):
    """The ledger's Alembic revisions and gateway.ledger.store agree, in their own version table."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(ledger_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": "ledger_alembic_version"})
        diff = compare_metadata(context, store.metadata)
    store.MIGRATIONS.check_current(engine)
    engine.dispose()
    assert diff == []


def test_ledger_schema_check_refuses_a_gateway_database(tmp_path):
    from gateway.store import migrate

    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    migrate.upgrade(url)
    with pytest.raises(migrate.SchemaMismatch, match="hpf-gateway ledger --migrate"):
        store.MIGRATIONS.check_current(make_engine(url))


# -- copies ---------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_stored_copies_get_dense_ledger_seqs_and_an_intact_chain(ldb, ledger_url):
    outcomes = yield file(ldb, [make_copy(1), make_copy(2, instruction_id="I2"), make_copy(5, instruction_id="I3")])
    assert [(o.status, o.seq) for o in outcomes] == [("stored", 1), ("stored", 2), ("stored", 3)]
    head = yield ldb.read(store.load_head)
    assert head[0] == 3
    report = verify_database(ledger_url, kind="ledger", keys=public_keys())
    assert report.ok and report.rows == 3, report.describe()


@pytest.mark.parametrize("payload", [None, {"account": DEBIT, "balance": 100, "note": "张三 \u2028 \\ \"quoted\""}])
def test_the_checked_bytes_are_the_bytes_the_stored_row_gives_back(payload):
    """The chain hashes a copy with the bytes the ingest check already built; the verifier rebuilds
    them from the stored row.  They must be the same bytes, or every chain would break."""
    kind = dict(kind="bank.balance", state=None, instruction_id=None) if payload else {}
    doc = make_copy(7, payload=payload, raw="报文 <x/>".encode("gbk"), adapter="bdc", **kind)
    row = row_of(doc)
    assert row.signed == store.canonical_bytes(store.copy_document(row.values()))


@pytest_twisted.inlineCallbacks
def test_the_same_copy_again_is_a_duplicate_and_changes_nothing(ldb, ledger_url):
    first = make_copy(1)
    yield file(ldb, [first])
    [again] = yield file(ldb, [first])
    assert (again.status, again.seq) == ("duplicate", 1)
    rows = yield ldb.read(store.copies_after, 0, 10)
    assert len(rows) == 1
    assert verify_database(ledger_url, kind="ledger").ok


@pytest_twisted.inlineCallbacks
def test_an_event_id_reused_with_other_content_is_refused_as_a_conflict(ldb):
    first = make_copy(1)
    yield file(ldb, [first])
    other = make_copy(2, event_id=first["event_id"], instruction_id="I9")
    [o] = yield file(ldb, [other])
    assert o.status == "refused" and o.conflict
    [o2] = yield file(ldb, [first], gateway="other")  # same bytes, filed under another gateway
    assert o2.status == "refused" and o2.conflict


@pytest_twisted.inlineCallbacks
def test_a_lower_seq_with_a_new_event_id_is_refused_but_a_gap_is_fine(ldb):
    yield file(ldb, [make_copy(10)])
    [late] = yield file(ldb, [make_copy(7, instruction_id="I7")])
    assert late.status == "refused" and "out of order" in late.reason and not late.conflict
    [gap] = yield file(ldb, [make_copy(20, instruction_id="I20")])
    assert gap.status == "stored"
    heads = yield ldb.read(store.gateway_heads)
    assert heads == {"main": 20}


# -- alerts -----------------------------------------------------------------------------


def draft(key: str, *evidence: str, rule: str = "missing-result", subject: str = "C52240/I1") -> store.AlertRow:
    return store.AlertRow(f"{rule}:{key}", rule, "major", subject, f"summary of {key}", tuple(evidence))


@pytest_twisted.inlineCallbacks
def test_alerts_are_stored_once_per_key_placed_by_evidence_and_saved_with_the_state(ldb):
    c = make_copy(1)
    yield file(ldb, [c])
    created = yield ldb.write(lambda tx: store.store_alerts(tx, [draft("C52240/I1", c["event_id"])],
                                                          state=(1, '{"v":1}')))
    again = yield ldb.write(lambda tx: store.store_alerts(tx, [draft("C52240/I1", c["event_id"]),
                                                               draft("C52240/I2", rule="large-amount",
                                                                     subject="C52240/I2")]))
    assert len(created) == 1 and [a["key"] for a in again] == ["large-amount:C52240/I2"]
    a = created[0]
    assert (a["centre_id"], a["bank_id"], a["account"]) == ("C52240", "B001", DEBIT)
    state = yield ldb.read(store.load_state)
    assert state == (1, '{"v":1}')
    listed = yield ldb.read(lambda conn: store.list_alerts(conn, state="open", rule="missing-result",
                                                           since_us=None, after_id=0, limit=10))
    assert [x["evidence"] for x in listed] == [[c["event_id"]]]


@pytest_twisted.inlineCallbacks
def test_alert_state_goes_open_acknowledged_resolved_only_and_records_who_and_why(ldb):
    [a] = yield ldb.write(lambda tx: store.store_alerts(tx, [draft("x")]))
    who = "hpf://supervisor/sup1"
    skip = yield ldb.write(lambda tx: store.change_state(tx, a["id"], who, "resolved", "skip"))
    assert skip[0] == "conflict"
    ack = yield ldb.write(lambda tx: store.change_state(tx, a["id"], who, "acknowledged", "looking"))
    back = yield ldb.write(lambda tx: store.change_state(tx, a["id"], who, "acknowledged", "again"))
    done = yield ldb.write(lambda tx: store.change_state(tx, a["id"], who, "resolved", "explained"))
    note = yield ldb.write(lambda tx: store.add_note(tx, a["id"], who, "called the bank"))
    missing = yield ldb.write(lambda tx: store.change_state(tx, 999, who, "acknowledged", "?"))
    assert [ack[0], back[0], done[0], missing[0]] == ["changed", "conflict", "changed", "not-found"]
    assert note is not None
    alert = yield ldb.read(store.get_alert, a["id"])
    assert alert["state"] == "resolved"
    assert [(n["who"], n["action"], n["text"]) for n in alert["notes"]] == [
        (who, "acknowledged", "looking"), (who, "resolved", "explained"), (who, "note", "called the bank")]


# -- verify: the ledger's chain ----------------------------------------------------------


@pytest.fixture
def chained(ldb, ledger_url) -> str:
    """Five stored copies (ledger seqs 1-5)."""
    pytest_twisted.blockon(file(ldb, [make_copy(n, instruction_id=f"I{n}") for n in range(1, 6)]))
    return ledger_url


def test_verify_names_an_altered_ledger_payload(chained):
    sql(chained, "UPDATE copies SET payload = replace(payload, '100.00', '900.00') WHERE seq = 3")
    report = verify_database(chained, kind="ledger")
    assert (report.problem.seq, report.problem.kind) == (3, "altered"), report.describe()


def test_verify_names_a_deleted_ledger_row_as_a_gap_and_a_hash_break(chained):
    sql(chained, "DELETE FROM copies WHERE seq = 2")
    report = verify_database(chained, kind="ledger")
    assert (report.problem.seq, report.problem.kind) == (3, "deleted"), report.describe()
    assert "2..2" in report.problem.detail and "gap" in report.problem.detail


def test_verify_names_rows_deleted_at_the_tail_by_the_chain_head(chained):
    sql(chained, "DELETE FROM copies WHERE seq >= 4")
    report = verify_database(chained, kind="ledger")
    assert (report.problem.seq, report.problem.kind) == (4, "deleted"), report.describe()


def test_verify_names_a_row_appended_behind_the_ledgers_back(chained):
    sql(chained, "INSERT INTO copies SELECT 6, gateway, gateway_seq + 10, event_id || 'x', kind, centre_id, "
                 "instruction_id, bank_id, account, state, created_us, payload, raw, adapter, gateway_hash, "
                 "signature, signature_alg, host_seq_no, received_us, hash, refused, document, batch FROM copies WHERE seq = 5")
    report = verify_database(chained, kind="ledger")
    assert (report.problem.seq, report.problem.kind) == (6, "inserted"), report.describe()


def test_verify_names_a_row_inserted_in_the_middle_with_the_rest_renumbered(chained):
    sql(chained, "UPDATE copies SET seq = seq + 100 WHERE seq >= 3")
    sql(chained, "UPDATE copies SET seq = seq - 99 WHERE seq >= 100")
    sql(chained, "INSERT INTO copies SELECT 3, gateway, gateway_seq, event_id || 'x', kind, centre_id, "
                 "instruction_id, bank_id, account, state, created_us, payload, raw, adapter, gateway_hash, "
                 "signature, signature_alg, host_seq_no, received_us, hash, refused, document, batch FROM copies WHERE seq = 2")
    report = verify_database(chained, kind="ledger")
    assert (report.problem.seq, report.problem.kind) == (3, "inserted"), report.describe()


def test_verify_with_keys_catches_an_edit_whose_chain_was_recomputed(chained):
    engine = make_engine(chained)
    with engine.begin() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(store.copies).order_by(store.copies.c.seq)).mappings()]
        prev = store.GENESIS
        for r in rows:
            if r["seq"] == 2:
                r["payload"] = r["payload"].replace("100.00", "900.00")
            r["hash"] = prev = store.ledger_chain_hash(prev, r["seq"], r["received_us"], store.copy_document(r))
            conn.execute(sa.update(store.copies).where(store.copies.c.seq == r["seq"])
                         .values(payload=r["payload"], hash=r["hash"]))
        conn.execute(sa.update(store.ledger_head).values(hash=prev))
    engine.dispose()
    assert verify_database(chained, kind="ledger").ok  # the chain alone is fooled
    report = verify_database(chained, kind="ledger", keys=public_keys())
    assert (report.problem.seq, report.problem.kind) == (2, "signature"), report.describe()


@pytest.fixture
def batch_chained(ldb, ledger_url, tmp_path) -> str:
    """Two copies signed alone (ledger seqs 1-2), then five signed as one batch (3-7)."""
    alone = [make_copy(n, instruction_id=f"I{n}") for n in (1, 2)]
    batch = sign_batch(gateway_signer(tmp_path), [make_copy(n, instruction_id=f"I{n}") for n in range(3, 8)])
    pytest_twisted.blockon(file(ldb, alone + batch))
    return ledger_url


def _recompute(url: str, seq: int, **changes: Any) -> None:
    """Change row ``seq`` and recompute the whole chain over it, as an attacker with the database would."""
    engine = make_engine(url)
    with engine.begin() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(store.copies).order_by(store.copies.c.seq)).mappings()]
        prev = store.GENESIS
        for r in rows:
            if r["seq"] == seq:
                r.update(changes)
            r["hash"] = prev = store.ledger_chain_hash(prev, r["seq"], r["received_us"], store.copy_document(r))
            conn.execute(sa.update(store.copies).where(store.copies.c.seq == r["seq"])
                         .values(hash=r["hash"], **(changes if r["seq"] == seq else {})))
        conn.execute(sa.update(store.ledger_head).values(hash=prev))
    engine.dispose()


def test_batch_signed_copies_are_stored_chained_and_each_verified_alone(batch_chained):
    from gateway.ledger.report import trail_item

    report = verify_database(batch_chained, kind="ledger", keys=public_keys())
    assert report.ok and report.rows == 7, report.describe()
    engine = make_engine(batch_chained)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(store.copies).order_by(store.copies.c.seq)).mappings()]
    engine.dispose()
    assert [r["batch"] is not None for r in rows] == [False] * 2 + [True] * 5
    # One copy taken alone, as the API's trail and the console's evidence show it, is checked alone.
    items = [trail_item(r, public_keys()) for r in rows]
    assert [i["signature_verified"] for i in items] == [True] * 7
    assert items[4]["batch"]["index"] == 2 and items[4]["batch"]["count"] == 5 and items[0]["batch"] is None
    other = {"main": ("ed25519", ed25519.Ed25519PrivateKey.generate().public_key())}
    assert not trail_item(rows[4], other)["signature_verified"]


@pytest.mark.parametrize("change", ["payload", "place"])
def test_verify_with_keys_catches_an_edit_of_a_batch_signed_copy_whose_chain_was_recomputed(batch_chained, change):
    engine = make_engine(batch_chained)
    with engine.connect() as conn:
        row = dict(conn.execute(sa.select(store.copies).where(store.copies.c.seq == 5)).mappings().one())
    engine.dispose()
    if change == "payload":
        changes = {"payload": row["payload"].replace("100.00", "900.00")}
    else:  # the copy claims another place in its batch
        changes = {"batch": row["batch"].replace('"index":2', '"index":3')}
    _recompute(batch_chained, 5, **changes)
    assert verify_database(batch_chained, kind="ledger").ok  # the chain alone is fooled
    report = verify_database(batch_chained, kind="ledger", keys=public_keys())
    assert (report.problem.seq, report.problem.kind) == (5, "signature"), report.describe()


@pytest_twisted.ensureDeferred
async def test_a_copy_resent_in_another_batch_is_a_duplicate(ldb, tmp_path):
    signer = gateway_signer(tmp_path)
    first = sign_batch(signer, [make_copy(n, instruction_id=f"I{n}") for n in (1, 2, 3)])
    again = sign_batch(signer, [make_copy(n, instruction_id=f"I{n}") for n in (2, 3, 4)])
    assert again[0]["batch"]["root"] != first[0]["batch"]["root"]
    await file(ldb, first)
    outcomes = await file(ldb, again)
    assert [o.status for o in outcomes] == ["duplicate", "duplicate", "stored"]


# -- verify: the gateway's chain ---------------------------------------------------------


@pytest.fixture
def gateway_chain(database_url) -> str:
    """Five gateway journal events written by the gateway's own store."""
    db = Database(reactor, database_url)
    db.startService()
    try:
        for n in range(1, 6):
            pytest_twisted.blockon(db.write(lambda tx, n=n: tx.event(
                "bank.balance", {"account": DEBIT, "balance": n * 100}, account=DEBIT, raw=b"frame%d" % n)))
    finally:
        pytest_twisted.blockon(db.stopService())
    return database_url


def test_verify_accepts_an_intact_gateway_journal_and_names_an_edit(gateway_chain):
    assert verify_database(gateway_chain, kind="gateway").ok
    sql(gateway_chain, "UPDATE events SET raw = :raw WHERE seq = 4", raw=b"forged")
    report = verify_database(gateway_chain, kind="gateway")
    assert (report.problem.seq, report.problem.kind) == (4, "altered"), report.describe()


def test_verify_names_a_deleted_gateway_event(gateway_chain):
    sql(gateway_chain, "DELETE FROM events WHERE seq = 3")
    report = verify_database(gateway_chain, kind="gateway")
    assert (report.problem.seq, report.problem.kind) == (4, "deleted"), report.describe()


def test_verify_names_an_inserted_gateway_event(gateway_chain):
    sql(gateway_chain, "UPDATE events SET seq = seq + 100 WHERE seq >= 3")
    sql(gateway_chain, "UPDATE events SET seq = seq - 99 WHERE seq >= 100")
    sql(gateway_chain, "INSERT INTO events (seq, event_id, kind, payload, raw, created_us, hash) "
                       "VALUES (3, 'fake', 'bank.balance', '{}', NULL, 1, :h)", h="f" * 64)
    report = verify_database(gateway_chain, kind="gateway")
    assert (report.problem.seq, report.problem.kind) == (3, "inserted"), report.describe()


def test_verify_main_exits_1_on_a_broken_chain_and_0_on_an_intact_one(gateway_chain, capsys):
    assert verify_main(database=gateway_chain, kind="gateway") == 0
    sql(gateway_chain, "DELETE FROM events WHERE seq = 2")
    assert verify_main(database=gateway_chain, kind="gateway") == 1
    assert "BROKEN at seq 3 (deleted)" in capsys.readouterr().out
    assert verify_main() == 2


# -- the copy checks (pure) -------------------------------------------------------------


def test_a_copy_must_have_every_field_and_no_other():
    doc = make_copy(1)
    missing = {k: v for k, v in doc.items() if k != "adapter"}
    extra = dict(doc, note="hi")
    assert "missing field(s) adapter" in read_envelope(missing, expected_alg="ed25519").reason
    assert "unknown field(s) note" in read_envelope(extra, expected_alg="ed25519").reason
    assert "signature_alg" in read_envelope(doc, expected_alg="ecdsa-p256-sha256").reason


def test_raw_must_be_canonical_base64_so_the_signature_covers_exact_bytes():
    doc = make_copy(1, raw=b"\xfb\xff")
    doc = sign(dict(doc, raw=doc["raw"].rstrip("=")))
    with pytest.raises(ValueError, match="base64"):
        read_copy(doc)
    # Well signed but unreadable: stored as refused, verbatim, not refused whole.
    [out] = CopyChecker(public_keys(), load_adapter).check("main", [doc])
    assert isinstance(out, ParsedCopy) and out.fact is None and "base64" in (out.row.refused or "")


def test_a_bad_signature_is_a_forged_refusal_and_another_gateways_claim_is_not():
    checker = CopyChecker(public_keys(), load_adapter)
    good = make_copy(1)
    tampered = dict(good, payload=good["payload"].replace("100.00", "900.00"))
    other_key = make_copy(2, key=ed25519.Ed25519PrivateKey.generate())
    claims_other = make_copy(3, gateway="north")
    out = checker.check("main", [good, tampered, other_key, claims_other])
    assert isinstance(out[0], ParsedCopy)
    assert [(o.forged, "signature" in o.reason) for o in out[1:3]] == [(True, True), (True, True)]
    assert isinstance(out[3], Refusal) and not out[3].forged and "claims gateway" in out[3].reason


def test_ecdsa_p256_signatures_verify_with_the_configured_key():
    key = ec.generate_private_key(ec.SECP256R1())
    checker = CopyChecker({"main": ("ecdsa-p256-sha256", key.public_key())}, load_adapter)
    out = checker.check("main", [make_copy(1, key=key, alg="ecdsa-p256-sha256")])
    assert isinstance(out[0], ParsedCopy)


def test_the_banks_own_frame_must_agree_with_the_result_the_gateway_reports():
    frame = result_frame(4, "H0004")
    honest = read_copy(make_copy(4, state="succeeded", payload=result_payload(4, "H0004"), raw=frame,
                                 adapter="bdc"))
    lying = read_copy(make_copy(4, state="succeeded", payload=result_payload(4, "H9999"), raw=frame,
                                adapter="bdc"))
    other_ref = read_copy(make_copy(5, state="succeeded", payload=result_payload(5, "H0004"), raw=frame,
                                    adapter="bdc"))
    bdc = load_adapter("bdc")
    assert check_raw(honest, bdc) is None
    assert "host_seq_no='H0004'" in check_raw(lying, bdc)
    assert "not about bank_ref" in check_raw(other_ref, bdc)


def test_the_banks_own_frame_must_agree_with_a_movements_amount():
    frame = movement_frame("H0007", -10_000)
    checker = CopyChecker(public_keys(), load_adapter)
    honest = make_copy(7, kind="bank.movement", state=None, instruction_id=None,
                       payload=movement_payload("H0007", -10_000), raw=frame, adapter="bdc")
    lying = make_copy(8, kind="bank.movement", state=None, instruction_id=None,
                      payload=movement_payload("H0007", -100), raw=frame, adapter="bdc")
    garbage = make_copy(9, kind="bank.movement", state=None, instruction_id=None,
                        payload=movement_payload("H0009", -100), raw=b"not a frame", adapter="bdc")
    out = checker.check("main", [honest, lying, garbage])
    assert isinstance(out[0], ParsedCopy)
    assert out[1].forged and "amount" in out[1].reason
    assert out[2].forged and "not a valid bdc frame" in out[2].reason


# -- config ---------------------------------------------------------------------------------


def _write_config(tmp_path: Path, extra: str = "", alg: str = "ed25519", key: Any = None) -> Path:
    key = key or GATEWAY_KEY
    (tmp_path / "gw.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    text = f"""
[ledger]
name = "main"
database = "sqlite:///ledger.db"
[tls]
certificate = "x.crt"
private_key = "x.key"
ca = "ca.crt"
[listen]
ingest = "tcp:0:interface=127.0.0.1"
supervisor = "tcp:0:interface=127.0.0.1"
ops = "tcp:0:interface=127.0.0.1"
[gateways.main]
signing_key = "gw.pub"
signature_alg = "{alg}"
{extra}
"""
    path = tmp_path / "ledger.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_names_unknown_keys_and_a_key_of_the_wrong_type(tmp_path):
    for name in ("x.crt", "x.key", "ca.crt"):
        (tmp_path / name).write_text("-")
    path = _write_config(tmp_path, "[thresholds]\nlarge_amount = \"0.50\"\nresult_deadlin = 3\n",
                         alg="ecdsa-p256-sha256")
    with pytest.raises(ConfigError) as e:
        load_ledger_config(path)
    problems = "\n".join(e.value.problems)
    assert "thresholds.result_deadlin: unknown key (did you mean \"result_deadline\"?)" in problems
    assert "gateways.main.signing_key" in problems and "ECDSA P-256" in problems


def test_config_check_processes_defaults_to_two_and_is_bounded(tmp_path):
    assert load_ledger_config(_write_config(tmp_path, ""), check_files=False).check_processes == 2
    for bad, why in (("-1", "must be from 0 to 16, not -1"), ("17", "must be from 0 to 16, not 17"),
                     ('"2"', "must be an integer")):
        path = _write_config(tmp_path, "")
        path.write_text(path.read_text().replace("[ledger]\n", f"[ledger]\ncheck_processes = {bad}\n"))
        with pytest.raises(ConfigError) as e:
            load_ledger_config(path, check_files=False)
        assert f"ledger.check_processes: {why}" in "\n".join(e.value.problems)
    path.write_text(path.read_text().replace('check_processes = "2"', "check_processes = 0"))
    assert load_ledger_config(path, check_files=False).check_processes == 0


def test_config_gateway_behind_hold_defaults_to_two_minutes_and_is_bounded(tmp_path):
    """How long deadlines wait for copies a gateway said it had: a finite number of seconds above
    0 and at most an hour (longer is the freeze of every deadline that the bound prevents)."""
    assert load_ledger_config(_write_config(tmp_path, ""), check_files=False).thresholds.gateway_behind_hold == 120.0
    path = _write_config(tmp_path, "[thresholds]\ngateway_behind_hold = 600\n")
    assert load_ledger_config(path, check_files=False).thresholds.gateway_behind_hold == 600.0
    for bad, why in (("0", "must be a finite number greater than 0, not 0"),
                     ("-5.0", "must be a finite number greater than 0, not -5.0"),
                     ("nan", "must be a finite number greater than 0"),
                     ("true", "must be a number of seconds, not true"),
                     ('"120"', "must be a number of seconds"),
                     ("3600.5", "must be at most 3600 seconds, not 3600.5")):
        path = _write_config(tmp_path, f"[thresholds]\ngateway_behind_hold = {bad}\n")
        with pytest.raises(ConfigError) as e:
            load_ledger_config(path, check_files=False)
        assert f"thresholds.gateway_behind_hold: {why}" in "\n".join(e.value.problems), bad


def test_config_loads_resolving_paths_against_its_directory(tmp_path):
    path = _write_config(tmp_path, "[supervisors.sup1]\n[thresholds]\nbalance_tolerance = \"0.00\"\n")
    config = load_ledger_config(path, check_files=False)
    assert config.database == f"sqlite:///{tmp_path / 'ledger.db'}"
    assert config.gateways["main"].signing_key == tmp_path / "gw.pub"
    assert set(config.supervisors) == {"sup1"} and config.thresholds.balance_tolerance == 0


def test_config_checks_shared_with_the_gateways_hold_for_the_ledger(tmp_path):
    """[tls], [accounts] and the deadlines in [limits] are checked by the gateway config's own
    checks: the ledger's accounts name banks and centres it does not define, by well-formed ids."""
    path = _write_config(tmp_path, '[limits]\nhandshake_timeout = 61.0\nrequest_timeout = 60.0\n'
                                   '[accounts.6200001111222233]\nbank = "b1"\ncentre = "C5224"\n'
                                   'name = "中心归集户"\ntype = "collection"\n'
                                   '[accounts.6200001111222244]\nbank = "B9"\ncentre = "C99999"\n'
                                   'name = "另一户"\ntype = "collection"\n')
    path.write_text(path.read_text().replace('ca = "ca.crt"\n', 'ca = "ca.crt"\ncrl = "x.crl"\n'))
    with pytest.raises(ConfigError) as e:
        load_ledger_config(path, check_files=False)
    problems = "\n".join(e.value.problems)
    assert "limits.handshake_timeout: must not be above limits.request_timeout (60)" in problems
    assert "accounts.6200001111222233.bank: must be 1-16 of A-Z 0-9" in problems
    assert "accounts.6200001111222233.centre: must be C and 5 digits" in problems
    assert "tls.crl: unknown key" in problems
    assert "6200001111222244" not in problems   # named, not defined here: well-formed is enough


def test_copies_sharing_one_frame_have_it_decoded_once_with_the_same_verdicts():
    """A statement page's movements each carry the whole page: decoded once, not once per movement."""
    from gateway import copies

    copies._DECODED.clear()   # what earlier tests decoded must not count here
    real = load_adapter("bdc")

    class Counting:
        """The real bdc adapter, counting how often a frame is decoded."""

        calls = 0

        def decode(self, frame):
            Counting.calls += 1
            return real.decode(frame)

    frame = result_frame(41, "H0041")
    copies = [read_copy(make_copy(41, state="succeeded", payload=result_payload(41, host), raw=frame,
                                  adapter="bdc")) for host in ("H0041", "H9999", "H0041")]
    verdicts = [check_raw(c, Counting()) for c in copies]
    assert verdicts[0] is None and verdicts[2] is None and "host_seq_no='H0041'" in verdicts[1]
    assert Counting.calls == 1
    junk = [read_copy(make_copy(n, kind="bank.movement", state=None, instruction_id=None,
                                payload=movement_payload("H0042", -100), raw=b"not a frame 42", adapter="bdc"))
            for n in (42, 43)]
    assert [check_raw(c, Counting()) for c in junk] == [check_raw(junk[0], real)] * 2
    assert Counting.calls == 2


def test_a_snapshot_is_packed_as_it_is_written_and_read_back_whole_as_is_a_plain_one():
    """pack_snapshot compresses the matcher's pieces as they come (never the whole text at once);
    load_state gives the JSON text back, packed or stored plain before packing existed."""
    parts = ['{"version":1', ',"instructions":[']
    parts += [("," if n else "") + json.dumps({"key": f"C52240/I{n}", "payee": "\u5f20\u4e09", "n": n})
              for n in range(2000)]
    parts += ["]}"]
    text = "".join(parts)
    packed = store.pack_snapshot(iter(parts))
    assert packed.startswith(store.PACKED) and packed.isascii()
    assert len(packed) * 5 < len(text)
    assert store.unpack_snapshot(packed) == text
    assert store.unpack_snapshot(text) == text   # a plain snapshot is read as it is
    with pytest.raises(ValueError):
        store.unpack_snapshot(store.PACKED + "not base64!")
