"""Who may do what: every role against every listener, route and method (SECURITY.md).

Roles: a centre on its own data, a centre on another centre's data, a bank
(and another bank), the ledger, a supervisor, a gateway, a client without a
certificate, and a client whose certificate (claiming centre C52240) comes
from another CA.  Listeners: the centre API (every route and method of
gateway/openapi.json, plus /v1/bookings, plus one method each path does not
allow), the bank link listener of B001, and the ledger's ingest and
supervisor listeners.

Expected (the §8 table): only centres on the centre API, and only on their
own instructions and accounts; only bank B001 on its link; only gateways on
ingest; only supervisors on the supervisor API, with reads and alert notes and
state changes as their only writes; a client without a trusted certificate is
refused in the handshake everywhere.  The last test checks that every
refusal was counted (gateway ``hpf_gateway_security_events_total``, ledger
``hpf_ledger_denied_total``) and logged with the peer's identity.

One gateway and one ledger serve the whole module (fixtures of module
scope); each case is one connection.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS

from gateway.demo import CENTRE
from gateway.ledger import store as ledger_store
from gateway.ledger.config import load_ledger_config
from gateway.ledger.service import Ledger, makeLedgerService
from gateway.pki import DevPki
from gateway.simulate.run import api_url
from gateway.listener import when_listening
from tests.integration.harness import DEBIT_B001, OTHER_CENTRE, PAYEE, Harness, start_harness
from tests.security.support import Captured, Https, capture_logs, connect_tls, ledger_config, settle

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = json.loads((ROOT / "gateway" / "openapi.json").read_text(encoding="utf-8"))
OWN_ID = "M-OWN"

ROLES = ("centre_own", "centre_other", "bank", "bank_other", "ledger", "supervisor", "gateway", "no_cert",
         "other_ca")
#: role -> (pki: "dev" or "other", role in the PKI, name); None: no certificate.
IDENTITIES: dict[str, tuple[str, str, str] | None] = {
    "centre_own": ("dev", "centre", CENTRE), "centre_other": ("dev", "centre", OTHER_CENTRE),
    "bank": ("dev", "bank", "B001"), "bank_other": ("dev", "bank", "B002"),
    "ledger": ("dev", "ledger", "main"), "supervisor": ("dev", "supervisor", "sup1"),
    "gateway": ("dev", "gateway", "main"), "no_cert": None, "other_ca": ("other", "centre", CENTRE),
}
TLS_REFUSED = {"no_cert", "other_ca"}
TODAY = dt.date.today().isoformat()


# -- the world ------------------------------------------------------------------------------


@dataclass
class World:
    harness: Harness
    ledger: Ledger
    ledger_urls: dict[str, str]
    pkis: dict[str, DevPki]
    logs: Captured
    seq: Iterator[int]

    def cert(self, role: str) -> tuple[Path, Path] | None:
        who = IDENTITIES[role]
        if who is None:
            return None
        pki = self.pkis[who[0]]
        return pki.cert(who[1], who[2]), pki.key(who[1], who[2])

    def https(self, role: str) -> Https:
        pair = self.cert(role)
        ca = self.harness.pki.ca_cert
        return Https(pair[0], pair[1], ca) if pair else Https(None, None, ca)


async def _start(tmp: Path, other: DevPki) -> World:
    # B001 on bdc's persistent opt-in: its listener greets a dialling bank with a sign-on.
    h = await start_harness(tmp / "gw", banks={}, bank_config={"B001": {"connection": "persistent"}})
    await when_listening(h.gateway.listeners["centre_api"])
    config = load_ledger_config(ledger_config(tmp, h.pki))
    ledger_store.MIGRATIONS.upgrade(config.database)
    ledger = makeLedgerService(config, reactor)
    ledger.service.startService()
    urls = {}
    for name in ("ingest", "supervisor"):
        port = await when_listening(ledger.listeners[name])
        urls[name] = f"https://localhost:{port.getHost().port}"
    while not ledger.engine.ready:
        await Deferred.fromCoroutine(_sleep(0.05))
    status, record = await h.client().submit(OWN_ID, debit=DEBIT_B001)
    assert status == 202, record
    return World(h, ledger, urls, {"dev": h.pki, "other": other}, Captured(), itertools.count(1))


async def _sleep(seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, other_ca_pki: DevPki) -> Iterator[World]:
    w = pytest_twisted.blockon(Deferred.fromCoroutine(_start(tmp_path_factory.mktemp("matrix"), other_ca_pki)))
    with capture_logs() as logs:
        w.logs = logs
        yield w

    async def stop() -> None:
        await w.harness.stop()
        await w.ledger.service.stopService()

    pytest_twisted.blockon(Deferred.fromCoroutine(stop()))


#: What the refusals should add up to, filled in by the cases (checked by the last test).
TALLY: Counter[str] = Counter()


# -- the centre API -----------------------------------------------------------------------------


def _openapi_operations() -> list[tuple[str, str]]:
    ops = [(method.upper(), path) for path, item in OPENAPI["paths"].items()
           for method in item if method in ("get", "post", "put", "delete", "patch")]
    ops.append(("POST", "/v1/bookings"))  # served, journalled for the ledger; not in the document yet
    # One method each path does not allow: the route exists, the verb must still be refused.
    ops += [("DELETE", path) for path in sorted({p for _, p in ops})]
    return ops


CENTRE_OPS = _openapi_operations()


def _body(world: World, method: str, path: str) -> Any:
    n = next(world.seq)
    instruction = {"instruction_id": f"M-{n}", "debit_account": DEBIT_B001, "creditor": PAYEE,
                   "amount": "1.00", "purpose": "withdrawal"}
    if (method, path) == ("POST", "/v1/instructions"):
        return instruction
    if (method, path) == ("POST", "/v1/instructions/batch"):
        return {"instructions": [instruction]}
    if (method, path) == ("POST", "/v1/bookings"):
        return {"booking_id": f"BK-{n}", "host_seq_no": f"H{n}", "account": DEBIT_B001, "amount": "-1.00",
                "voucher_no": f"V{n}", "booked_on": TODAY}
    return None


def _expected_centre_api(role: str, method: str, path: str) -> int | str:
    if role in TLS_REFUSED:
        return "tls"
    if role not in ("centre_own", "centre_other"):
        return 403
    own = role == "centre_own"
    allowed = {("POST", "/v1/instructions"): 202 if own else 403,
               ("POST", "/v1/instructions/batch"): 200,
               ("GET", "/v1/instructions/{instruction_id}"): 200 if own else 404,
               ("GET", "/v1/results"): 200,
               ("GET", "/v1/openapi.json"): 200,
               ("POST", "/v1/bookings"): 202 if own else 403}
    return allowed.get((method, path), 405)


async def _call(client: Https, method: str, url: str, body: Any) -> Any:
    try:
        return await client.call(method, url, body)
    except Exception as e:  # the handshake was refused: no HTTP at all
        return e


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method, path", CENTRE_OPS)
@pytest_twisted.ensureDeferred
async def test_centre_api(world: World, role: str, method: str, path: str) -> None:
    expected = _expected_centre_api(role, method, path)
    url = api_url(world.harness.config) + path.replace("{instruction_id}", OWN_ID)
    answer = await _call(world.https(role), method, url, _body(world, method, path))
    if expected == "tls":
        assert isinstance(answer, Exception), answer
        TALLY["gateway:tls_refused"] += 1
        TALLY["log:tls.handshake_refused"] += 1
        return
    assert not isinstance(answer, Exception), repr(answer)
    assert answer.status == expected, (role, method, path, answer)
    if answer.status == 403 and expected == 403 and role not in ("centre_own", "centre_other"):
        assert answer.body["type"].endswith(":unauthorised-peer")
        TALLY["gateway:unauthorised_peer"] += 1
    if role == "centre_other" and answer.status == 403:
        assert answer.body["type"].endswith(":not-your-account")
        TALLY["gateway:foreign_account"] += 1
    if (method, path) == ("POST", "/v1/instructions/batch") and answer.status == 200:
        [item] = answer.body["results"]
        assert item["status"] == (202 if role == "centre_own" else 403), item
        if role == "centre_other":
            TALLY["gateway:foreign_account"] += 1
    if (method, path) == ("GET", "/v1/results") and answer.status == 200:
        ids = {r["instruction_id"] for r in answer.body["results"]}
        assert (OWN_ID in ids) == (role == "centre_own"), ids  # a centre sees only its own feed


# -- the bank link ---------------------------------------------------------------------------------


def _expected_link(role: str) -> str:
    if role in TLS_REFUSED:
        return "tls"
    return "signon" if role == "bank" else "dropped"


@pytest.mark.parametrize("role", ROLES)
@pytest_twisted.ensureDeferred
async def test_bank_link_listener_of_b001(world: World, role: str) -> None:
    expected = _expected_link(role)
    port = int(world.harness.config.banks["B001"].endpoint.split(":")[1])
    pair = world.cert(role)
    client_cert = PrivateCertificate.loadPEM(pair[0].read_bytes() + pair[1].read_bytes()) if pair else None
    creator = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(world.harness.pki.ca_cert.read_bytes()),
                                  clientCertificate=client_cert)
    probe = await connect_tls(port, creator)
    await settle(probe, 2.0)
    if expected == "signon":
        assert probe.open and probe.received, "the bank must be greeted with the gateway's sign-on"
        probe.close()
        await settle(probe, 2.0)
        return
    assert not probe.open and probe.received == b"", (role, probe.received[:40])
    if expected == "tls":
        TALLY["gateway:tls_refused"] += 1
        TALLY["log:link.tls_refused"] += 1
    else:
        TALLY["gateway:bank_link_wrong_peer"] += 1


# -- the ledger ---------------------------------------------------------------------------------------

INGEST_OPS = [("POST", "/v1/copies"), ("GET", "/v1/copies")]
SUPERVISOR_READS = [("GET", "/v1/alerts"), ("GET", "/v1/alerts/1"), ("GET", f"/v1/trail/{CENTRE}/{OWN_ID}"),
                    ("GET", f"/v1/accounts/{DEBIT_B001}/balances"), ("GET", f"/v1/reports/daily?date={TODAY}")]
SUPERVISOR_ANNOTATE = [("POST", "/v1/alerts/1/notes"), ("POST", "/v1/alerts/1/state")]
SUPERVISOR_OTHER_WRITES = [("POST", "/v1/alerts"), ("PUT", "/v1/alerts/1"), ("DELETE", "/v1/alerts/1"),
                           ("PATCH", "/v1/alerts/1"), ("POST", "/v1/reports/daily"),
                           ("DELETE", f"/v1/trail/{CENTRE}/{OWN_ID}")]
LEDGER_OPS = ([("ingest", m, p) for m, p in INGEST_OPS]
              + [("supervisor", m, p) for m, p in SUPERVISOR_READS + SUPERVISOR_ANNOTATE + SUPERVISOR_OTHER_WRITES])


def _expected_ledger(role: str, listener: str, method: str, path: str) -> set[int] | str:
    if role in TLS_REFUSED:
        return "tls"
    if listener == "ingest":
        if role != "gateway":
            return {403}
        return {422} if method == "POST" else {405}  # authorised: the empty batch is refused on its merits
    if role != "supervisor":
        return {403}
    if (method, path) in SUPERVISOR_READS:
        return {200, 404}  # alert 1 may not exist
    if (method, path) in SUPERVISOR_ANNOTATE:
        return {201, 200, 404, 409}  # allowed; there may be no alert 1
    return {403}


def _ledger_body(method: str, path: str) -> Any:
    if path == "/v1/copies" and method == "POST":
        return {"copies": []}
    if path.endswith("/notes"):
        return {"text": "looked at it"}
    if path.endswith("/state"):
        return {"state": "acknowledged", "reason": "seen"}
    return {"x": 1} if method != "GET" else None


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("listener, method, path", LEDGER_OPS)
@pytest_twisted.ensureDeferred
async def test_ledger(world: World, role: str, listener: str, method: str, path: str) -> None:
    expected = _expected_ledger(role, listener, method, path)
    answer = await _call(world.https(role), method, world.ledger_urls[listener] + path, _ledger_body(method, path))
    if expected == "tls":
        assert isinstance(answer, Exception), answer
        return
    assert not isinstance(answer, Exception), repr(answer)
    assert answer.status in expected, (role, listener, method, path, answer)
    if answer.status == 403:
        slug = answer.body["type"].rsplit(":", 1)[1]
        assert slug in ("not-a-gateway", "not-a-supervisor", "read-only"), answer.body
        TALLY[f"ledger:{listener}:{slug}"] += 1


# -- every refusal counted and logged -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_zz_every_refusal_was_counted_and_logged_with_the_peer(world: World) -> None:
    await _sleep(0.3)  # the last connections' ends reach the server
    metrics = world.harness.gateway.metrics
    for kind in ("unauthorised_peer", "foreign_account", "bank_link_wrong_peer"):
        assert metrics.security_events.labels(kind)._value.get() == TALLY[f"gateway:{kind}"], kind
    # Our listeners log and count refused handshakes (no cert, other CA); the test's own
    # TLS clients may also give up on their side, so at least the expected ones.
    assert metrics.security_events.labels("tls_refused")._value.get() >= TALLY["gateway:tls_refused"]
    denied = world.ledger.metrics.denied
    for key, n in TALLY.items():
        if key.startswith("ledger:"):
            _, listener, reason = key.split(":")
            assert denied.labels(listener, reason)._value.get() == n, key

    logs = world.logs
    unauthorised = logs.named("centre_api.unauthorised_peer")
    assert len(unauthorised) == TALLY["gateway:unauthorised_peer"]
    assert {e["peer"] for e in unauthorised} <= {f"hpf://{r}" for r in (
        "bank/B001", "bank/B002", "ledger/main", "supervisor/sup1", "gateway/main")}
    assert len(logs.named("centre.foreign_account")) == TALLY["gateway:foreign_account"]
    wrong = logs.named("link.wrong_peer")
    assert len(wrong) == TALLY["gateway:bank_link_wrong_peer"] and all(e["peer"].startswith("hpf://") for e in wrong)
    for name in ("tls.handshake_refused", "link.tls_refused"):
        refused = logs.named(name)
        assert len(refused) >= TALLY[f"log:{name}"], name
        assert all(e["ip"] == "127.0.0.1" and e["reason"] and e["kind"] == "tls_refused" for e in refused)
    denials = logs.named("ledger.denied")
    assert len(denials) == sum(n for k, n in TALLY.items() if k.startswith("ledger:"))
    assert all(e["peer"].startswith("hpf://") for e in denials)
