"""ISO 20022 files over SFTP, against a real twisted.conch SFTP server on 127.0.0.1.

The gateway uploads a pain.001, the "bank" (the test) drops a pain.002 and a camt.053 into the
inbox, the poller collects each once with its name, hash and bytes, and the adapter reads them.
A server whose host key is not the configured one is refused before anything is sent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys
from twisted.internet import defer, reactor

from adapters import base
from adapters.iso20022 import Iso20022Adapter
from gateway import sftp
from gateway.simulate.sftp_bank import ssh_factory
from gateway.store.bank_files import record_bank_file
from tests.kit.bank_peer import make_instruction
from tests.kit.relay import setup  # noqa: F401  (the store fixture)

DATA = Path(__file__).resolve().parents[1] / "data" / "iso20022"
USER = "hpfgw"


def _key() -> keys.Key:
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture
def bank(tmp_path):
    """A conch SFTP server on 127.0.0.1 with outbox (ours to fill) and inbox (the bank's)."""
    home = tmp_path / "bank"
    (home / "in").mkdir(parents=True)
    (home / "out").mkdir()
    host_key, client_key = _key(), _key()
    f = ssh_factory(home, host_key, USER, client_key)  # the SFTP bank simulator's server
    port = reactor.listenTCP(0, f, interface="127.0.0.1")
    yield home, port.getHost().port, host_key, client_key
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def _connect(port: int, host_key: keys.Key, client_key: keys.Key) -> defer.Deferred:
    d = sftp.connect(reactor, "127.0.0.1", port, user=USER, client_key=client_key,
                     host_key=host_key.public(), timeout=10)
    return d.addTimeout(20, reactor)


@pytest_twisted.ensureDeferred
async def test_pain001_up_statuses_and_statements_down_each_collected_once(bank) -> None:
    home, port, host_key, client_key = bank
    adapter = Iso20022Adapter()
    s = await _connect(port, host_key, client_key)
    try:
        ins = make_instruction()
        frame = adapter.encode(ins, sender="D00000", receiver="105000")
        document = frame[frame.index(b"<Document"):frame.rindex(b"</Document>") + len(b"</Document>")]
        await s.upload("out", "pain001-0001.xml", document)
        assert (home / "out" / "pain001-0001.xml").read_bytes() == document
        assert not list((home / "out").glob("*.part"))

        # The bank answers with files of its own in the inbox.
        statement = (DATA / "real" / "genkgo-camt__camt053.v4.xml").read_bytes()
        status = (DATA / "real" / "hbci4java__test-pain-parse-0020110-03.xml").read_bytes()
        (home / "in" / "camt053-0001.xml").write_bytes(statement)
        (home / "in" / "pain002-0001.xml").write_bytes(status)
        (home / "in" / "half.xml.part").write_bytes(b"<Doc")      # still being written

        journal: list[sftp.BankFile] = []
        refused: list[tuple[str, str]] = []

        def keep(f: sftp.BankFile) -> defer.Deferred:
            journal.append(f)
            return defer.succeed(None)

        poller = sftp.InboxPoller("in", lambda n, h: any((f.name, f.sha256) == (n, h) for f in journal),
                                  keep, lambda n, r: refused.append((n, r)))
        first = await poller.poll(s)
        assert [f.name for f in first] == ["camt053-0001.xml", "pain002-0001.xml"]
        assert first[0].data == statement and first[0].sha256 == hashlib.sha256(statement).hexdigest()
        assert await poller.poll(s) == []        # nothing new: nothing collected twice
        (home / "in" / "camt053-0002.xml").write_bytes(statement.replace(b"<MsgId>", b"<MsgId>2", 1))
        assert [f.name for f in await poller.poll(s)] == ["camt053-0002.xml"]
        assert refused == []
        messages = Iso20022Adapter.for_operator_files().decode_document(first[0].data)
        assert any(isinstance(m, base.Statement) and m.entries for m in messages)
    finally:
        s.close()


@pytest_twisted.ensureDeferred
async def test_a_file_over_the_bound_is_refused_unread_and_the_others_collected(bank) -> None:
    home, port, host_key, client_key = bank
    (home / "in" / "a-big.xml").write_bytes(b"x" * 5000)
    (home / "in" / "b-small.xml").write_bytes(b"<ok/>")
    s = await _connect(port, host_key, client_key)
    try:
        got: list[sftp.BankFile] = []
        refused: list[tuple[str, str]] = []
        poller = sftp.InboxPoller("in", lambda n, h: False, lambda f: defer.succeed(got.append(f)),
                                  lambda n, r: refused.append((n, r)), max_bytes=1000)
        await poller.poll(s)
        assert [f.name for f in got] == ["b-small.xml"]
        assert refused and refused[0][0] == "a-big.xml" and "exceeds the limit" in refused[0][1]
    finally:
        s.close()


@pytest_twisted.ensureDeferred
async def test_a_server_with_another_host_key_is_refused(bank) -> None:
    home, port, host_key, client_key = bank
    with pytest.raises(sftp.SftpError, match="host key is not the one configured"):
        await _connect(port, _key(), client_key)


@pytest_twisted.ensureDeferred
async def test_a_client_key_the_bank_does_not_know_gets_no_session(bank) -> None:
    home, port, host_key, client_key = bank
    with pytest.raises(sftp.SftpError, match="no more authentication methods"):
        await _connect(port, host_key, _key())


def test_file_names_with_paths_or_leading_dots_are_refused() -> None:
    for bad in ("../etc/passwd", ".hidden", "a/b", "", "x" * 201):
        with pytest.raises(sftp.SftpError):
            sftp._check_name(bad)
    assert sftp._check_name("pain001-0001.xml") == "pain001-0001.xml"


@pytest_twisted.ensureDeferred
async def test_a_collected_file_is_journalled_with_its_name_hash_and_bytes(setup) -> None:  # noqa: F811
    import json

    from sqlalchemy import select

    from gateway.store import schema

    config, db, clock, d = setup
    f = sftp.BankFile.of("camt053-0001.xml", (DATA / "real" / "genkgo-camt__camt053.v4.xml").read_bytes())
    await db.write(lambda tx: record_bank_file(tx, "B001", f, "in"))
    E = schema.events
    (row,) = await db.read(lambda c: c.execute(
        select(E.c.kind, E.c.payload, E.c.raw, E.c.bank_id).where(E.c.kind == "bank.file")).all())
    payload = json.loads(row.payload)
    assert (payload["name"], payload["sha256"], payload["direction"]) == (f.name, f.sha256, "in")
    assert bytes(row.raw) == f.data and row.bank_id == "B001"
    with pytest.raises(ValueError):
        record_bank_file(None, "B001", f, "sideways")


def test_known_hosts_pins_the_keys_named_for_the_host_and_port_and_refuses_none(tmp_path) -> None:
    from twisted.conch.client.knownhosts import KnownHostsFile
    from twisted.python.filepath import FilePath

    a, b, other = _key(), _key(), _key()
    path = tmp_path / "known_hosts"
    path.write_text(f"# the bank's keys\n[127.0.0.1]:2222 {a.public().toString('OPENSSH').decode()}\n"
                    f"127.0.0.1 {other.public().toString('OPENSSH').decode()}\n")
    hashed = KnownHostsFile.fromPath(FilePath(str(path)))
    hashed.addHostKey(b"[127.0.0.1]:2222", b.public())   # written hashed, as ssh's HashKnownHosts
    hashed.save()
    assert sftp.pinned_host_keys(path, "127.0.0.1", 2222) == [a.public(), b.public()]
    assert sftp.pinned_host_keys(path, "127.0.0.1") == [other.public()]          # port 22: bare name
    with pytest.raises(sftp.SftpError, match=r"no key for \[127.0.0.2\]:2222"):
        sftp.pinned_host_keys(path, "127.0.0.2", 2222)
    with pytest.raises(sftp.SftpError, match="not a readable file"):
        sftp.pinned_host_keys(tmp_path / "missing", "127.0.0.1")
