"""Copies to the ledger: signed, in journal order, at least once, never skipping a refused copy (G4)."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.copies import batch_break
from gateway.signing import BatchProof, canonical, init_signing_key, load_public_key, verify_copy
from gateway.store import journal
from gateway.tls import server_options, tls_server_factory
from tests.integration.harness import start_harness
from tests.kit.wait import until


class FakeLedger(Resource):
    """Answers like the ledger: stored once per event id, duplicate after, nothing after a refusal."""

    isLeaf = True

    def __init__(self, public_key) -> None:
        super().__init__()
        self.public_key = public_key
        self.stored: dict[str, dict] = {}
        self.order: list[int] = []
        self.refuse_instruction: str | None = None
        self.unreadable_instruction: str | None = None
        self.bad_signatures = 0
        self.posts = 0
        self.signatures: set[str] = set()
        self.signed_alone = 0
        self.heads: list[tuple[int, list[int]]] = []  # per POST: its head_seq, its copies' seqs

    def render_POST(self, request):
        body = json.loads(request.content.read())
        copies = body["copies"]
        assert set(body) == {"copies", "head_seq"} and type(body["head_seq"]) is int
        self.heads.append((body["head_seq"], [c["seq"] for c in copies]))
        self.posts += 1
        assert batch_break(copies) is None  # each batch whole and in order
        results = []
        for copy in copies:
            self.signatures.add(copy["signature"])
            self.signed_alone += "batch" not in copy
            proof = BatchProof.parse(copy["batch"]) if "batch" in copy else None
            if results and results[-1]["status"] in ("refused", "skipped"):
                results.append({"event_id": copy["event_id"], "status": "skipped"})
            elif not verify_copy(self.public_key, copy["signature_alg"], canonical(copy), copy["signature"], proof):
                self.bad_signatures += 1
                results.append({"event_id": copy["event_id"], "status": "refused", "reason": "signature"})
            elif copy["instruction_id"] is not None and copy["instruction_id"] == self.refuse_instruction:
                results.append({"event_id": copy["event_id"], "status": "refused", "reason": "test"})
            elif copy["instruction_id"] is not None and copy["instruction_id"] == self.unreadable_instruction:
                self.stored[copy["event_id"]] = copy
                self.order.append(copy["seq"])
                results.append({"event_id": copy["event_id"], "status": "refused-stored", "reason": "test"})
            elif copy["event_id"] in self.stored:
                results.append({"event_id": copy["event_id"], "status": "duplicate"})
            else:
                self.stored[copy["event_id"]] = copy
                self.order.append(copy["seq"])
                results.append({"event_id": copy["event_id"], "status": "stored"})
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"results": results}).encode()


async def _listening_ledger(tmp_path, role: tuple[str, str] = ("ledger", "main")):
    """The dev PKI, the gateway's signing key and a FakeLedger listening over TLS with the
    certificate of ``role``: (ledger, its port, its URL, the signing key's path)."""
    from gateway.pki import init_dev_pki

    keys = tmp_path / "keys"
    pki = init_dev_pki(keys, banks=["B001", "B002"], centres=["C52240", "C11000"])
    key, pub = init_signing_key(keys)
    ledger = FakeLedger(load_public_key(pub))
    options = server_options(pki.cert(*role), pki.key(*role), [pki.ca_cert])
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        tls_server_factory(Site(ledger), options))
    return ledger, port, f"https://127.0.0.1:{port.getHost().port}", key


@pytest_twisted.ensureDeferred
async def test_every_event_reaches_the_ledger_once_in_order_and_signed(tmp_path):
    ledger, port, url, key = await _listening_ledger(tmp_path)
    h = await start_harness(tmp_path, ledger={"url": url, "signing_key": str(key)})
    try:
        await h.link_up("B001")
        c = h.client()
        for n in range(5):
            await c.submit(f"L-{n}")
        for n in range(5):
            await c.wait_state(f"L-{n}", {"succeeded"})
        last = await h.gateway.db.read(journal.last_seq)
        await until(lambda: len(ledger.stored) == last)
        assert ledger.order == sorted(ledger.order) and len(set(ledger.order)) == last
        assert ledger.bad_signatures == 0
        # signed per batch: one signature per POST at most, every copy with its proof
        assert ledger.signed_alone == 0 and len(ledger.signatures) <= ledger.posts
        assert len(ledger.signatures) < last  # copies share their batch's signature
        kinds = {c["kind"] for c in ledger.stored.values()}
        assert {"instruction.state", "bank.movement"} <= kinds
        # a bank fact carries the bank's original bytes and the adapter that reads them
        final = [c for c in ledger.stored.values() if c["state"] == "succeeded"]
        assert final and all(c["raw"] and c["adapter"] == "bdc" for c in final)

    finally:
        await h.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_refused_copy_holds_the_backlog_until_accepted(tmp_path):
    ledger, site_port, url, key = await _listening_ledger(tmp_path)
    h = await start_harness(tmp_path, ledger={"url": url, "signing_key": str(key)}, banks={})
    try:
        c = h.client()
        ledger.refuse_instruction = "R-1"
        await c.submit("R-1")
        await c.submit("R-2")
        await until(lambda: h.gateway.metrics.ledger_copies.labels("refused")._value.get() >= 1)
        assert ledger.stored == {}, [(c["seq"], c["instruction_id"], c["state"]) for c in ledger.stored.values()]
        assert await h.gateway.db.read(journal.delivered, "ledger") == 0
        ledger.refuse_instruction = None
        await until(lambda: len(ledger.stored) == 2)
        assert ledger.order == sorted(ledger.order)
    finally:
        await h.stop()
        await site_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_each_batch_says_how_far_the_journal_had_got(tmp_path):
    """``head_seq`` is the journal's newest seq when the batch was read: never below the batch's
    copies, beyond them while a backlog waits (what the ledger's deadlines wait for:
    bench/README.md, item 39), and the journal's head once the backlog is gone."""
    ledger, port, url, key = await _listening_ledger(tmp_path)
    h = await start_harness(tmp_path, ledger={"url": url, "signing_key": str(key), "batch": 2})
    try:
        await h.link_up("B001")
        c = h.client()
        ledger.refuse_instruction = "H-1"  # the gateway stays on H-1's first copy: a backlog grows
        for n in range(3):
            await c.submit(f"H-{n}")
        for n in range(3):
            await c.wait_state(f"H-{n}", {"succeeded"})
        await until(lambda: any(head > seqs[-1] for head, seqs in ledger.heads))
        ledger.refuse_instruction = None
        last = await h.gateway.db.read(journal.last_seq)
        await until(lambda: len(ledger.stored) == last)
        assert all(len(seqs) <= 2 and head >= seqs[-1] for head, seqs in ledger.heads), ledger.heads
        assert ledger.heads[-1][0] == last
    finally:
        await h.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_server_that_is_not_the_ledger_gets_nothing(tmp_path):
    """A server with a valid certificate of another role (a bank) is refused in the handshake."""
    impostor, port, url, key = await _listening_ledger(tmp_path, role=("bank", "B001"))
    h = await start_harness(tmp_path, ledger={"url": url, "signing_key": str(key)}, banks={})
    try:
        await h.client().submit("X-1")
        await until(lambda: h.gateway.metrics.ledger_failures._value.get() >= 1)
        assert impostor.stored == {}
        assert h.gateway.metrics.ledger_backlog._value.get() >= 1
    finally:
        await h.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_copy_kept_by_the_ledger_as_refused_does_not_hold_the_backlog(tmp_path):
    """``refused-stored``: the ledger kept a well-signed copy it cannot read; the ones behind it go on."""
    ledger, site_port, url, key = await _listening_ledger(tmp_path)
    ledger.unreadable_instruction = "R-1"
    h = await start_harness(tmp_path, ledger={"url": url, "signing_key": str(key)}, banks={})
    try:
        c = h.client()
        await c.submit("R-1")
        await c.submit("R-2")
        await until(lambda: {c["instruction_id"] for c in ledger.stored.values()} == {"R-1", "R-2"})
        await until(lambda: h.gateway.metrics.ledger_backlog._value.get() == 0)
        assert h.gateway.metrics.ledger_copies.labels("refused-stored")._value.get() >= 1
        assert h.gateway.metrics.ledger_copies.labels("refused")._value.get() == 0
        assert ledger.order == sorted(ledger.order)
    finally:
        await h.stop()
        await site_port.stopListening()
