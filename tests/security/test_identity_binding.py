"""Every party's trust is its own: an identity counts only when its chain ends at that party's anchor.

The world: a default CA (``tls.ca``) and three parties with a CA of their
own — centre C52251, bank B001 and supervisor sup2 — plus ledger gateway
``gw2`` with its own CA.  Each own CA also mints a certificate claiming a
*different* party (C52251's CA issues ``hpf://centre/C52240``, and so on),
and the default CA issues certificates for the parties that have their own.

``test_every_listener_and_dialler`` runs the table: party × anchor ×
listener, over real loopback TLS with the very options each daemon builds
(``gateway.service._tls_options``, ``gateway.ledger.service._tls_options``):
the centre API, a bank link the bank dials (B001), a bank link the gateway
dials (B002), the gateway's ledger link (``ExpectPeer``), the ledger's
ingest and its supervisor API.  The last tests drive whole daemons: a forged
centre submits a debit and a forged supervisor writes a note, and nothing
is stored, with ``tls.identity_refused`` logged.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from gateway import service as gateway_service
from gateway.config import GatewayConfig, load_config, render_toml
from gateway.demo import write_demo_config
from gateway.ledger import service as ledger_service
from gateway.ledger.config import LedgerConfig, load_ledger_config
from gateway.pki import DevPki, init_dev_pki, issue, make_ca
from gateway.ledger import store as ledger_store
from gateway.ledger.service import makeLedgerService
from gateway.service import makeService
from gateway.signing import init_signing_key
from gateway.simulate.run import api_url
from gateway.store import instructions as q
from gateway.store import migrate
from gateway.listener import when_listening
from gateway.tls import (ExpectPeer, PartyAnchors, ReloadableOptions, chain_refusal, client_options,
                         load_certificates, server_options, tls_client_endpoint, tls_server_factory)
from tests.integration.harness import DEBIT_B001, PAYEE, CentreClient
from tests.security.support import TIMEOUT, capture_logs

OWN = {"centre/C52251": "c52251-ca", "bank/B001": "b001-ca", "supervisor/sup2": "sup2-ca",
       "gateway/gw2": "gw2-ca"}
#: What each own CA forges: a certificate naming another party of the same listener.
FORGES = {"c52251-ca": ("centre", "C52240"), "b001-ca": ("bank", "B002"), "sup2-ca": ("supervisor", "sup1"),
          "gw2-ca": ("gateway", "main")}


@dataclass
class World:
    tmp: Path
    pki: DevPki
    cas: dict[str, tuple[Path, Path]]
    gateway: GatewayConfig
    ledger: LedgerConfig

    def cert(self, issuer: str, role: str, name: str) -> tuple[Path, Path]:
        """The certificate and key of ``role/name`` issued by ``issuer`` ("default" or an own CA)."""
        if issuer == "default" and self.pki.cert(role, name).exists() and (
                role not in ("gateway", "ledger") or name == "main"):
            return self.pki.cert(role, name), self.pki.key(role, name)
        ca = (self.pki.ca_cert, self.pki.ca_key) if issuer == "default" else self.cas[issuer]
        out = self.tmp / "issued" / issuer / name  # gateway and ledger files are named by role alone
        stem = role if role in ("gateway", "ledger") else f"{role}-{name}"
        if not (out / f"{stem}.crt").exists():
            issue(*ca, out, role, name)
        return out / f"{stem}.crt", out / f"{stem}.key"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("binding")
    pki = init_dev_pki(tmp / "keys", banks=["B001", "B002"], centres=["C52240"], supervisors=["sup1"])
    cas = {ca: make_ca(tmp / ca, ca) for ca in OWN.values()}
    init_signing_key(tmp / "keys")

    path = write_demo_config(tmp, ledger_url="https://127.0.0.1:9")
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data["centres"]["C52251"] = {"unit_no": "522510000000000", "name": "自有CA中心", "ca": str(cas["c52251-ca"][0])}
    data["banks"]["B001"]["ca"] = str(cas["b001-ca"][0])
    path.write_text(render_toml(data), encoding="utf-8")
    gateway = load_config(path)

    pub = tmp / "keys" / "gateway-signing.pub"
    ledger_data = {
        "ledger": {"name": "main", "database": f"sqlite:///{tmp / 'ledger.db'}"},
        "tls": {"certificate": str(pki.cert("ledger")), "private_key": str(pki.key("ledger")),
                "ca": str(pki.ca_cert)},
        "listen": {"ingest": "tcp:0:interface=127.0.0.1", "supervisor": "tcp:0:interface=127.0.0.1",
                   "ops": "tcp:0:interface=127.0.0.1"},
        "gateways": {"main": {"signing_key": str(pub), "signature_alg": "ed25519"},
                     "gw2": {"signing_key": str(pub), "signature_alg": "ed25519", "ca": str(cas["gw2-ca"][0])}},
        "supervisors": {"sup1": {}, "sup2": {"ca": str(cas["sup2-ca"][0])}},
        "thresholds": {"large_amount": "1000000.00", "result_deadline": 60.0, "booking_deadline": 60.0,
                       "balance_tolerance": "0.00"},
        "accounts": {}, "counterparties": {},
    }
    lpath = tmp / "ledger.toml"
    lpath.write_text(render_toml(ledger_data), encoding="utf-8")
    return World(tmp, pki, cas, gateway, load_ledger_config(lpath))


# -- the one function, pure ------------------------------------------------------------------


def _chain(world: World, issuer: str, role: str, name: str) -> list[x509.Certificate]:
    leaf = load_certificates(world.cert(issuer, role, name)[0])
    anchor = load_certificates(world.pki.ca_cert if issuer == "default" else world.cas[issuer][0])
    return leaf + anchor


@pytest.mark.parametrize(("issuer", "party", "accepted"), [
    ("default", ("centre", "C52240"), True),
    ("c52251-ca", ("centre", "C52251"), True),
    ("c52251-ca", ("centre", "C52240"), False),  # another party's CA minting C52240
    ("default", ("centre", "C52251"), False),  # the default CA, for a centre that has its own
    ("default", ("centre", "C99999"), False),  # not a configured party
])
def test_chain_refusal_binds_each_centre_to_its_own_anchor(world: World, issuer: str, party: tuple[str, str],
                                                          accepted: bool) -> None:
    tls = world.gateway.tls
    centres = PartyAnchors({("centre", c): [cfg.ca or tls.ca] for c, cfg in world.gateway.centres.items()})
    reason = chain_refusal(_chain(world, issuer, *party), *party, centres)
    assert (reason is None) is accepted, reason


def test_a_pinned_certificate_admits_that_certificate_only(world: World) -> None:
    pinned, _ = world.cert("default", "bank", "B002")
    parties = PartyAnchors({("bank", "B002"): [pinned]})
    assert chain_refusal(load_certificates(pinned), "bank", "B002", parties) is None
    other, _ = world.cert("c52251-ca", "bank", "B002")  # same identity, another certificate
    assert chain_refusal(_chain(world, "c52251-ca", "bank", "B002"), "bank", "B002", parties) is not None
    assert chain_refusal(load_certificates(other), "bank", "B002", parties) is not None
    assert chain_refusal(load_certificates(pinned), "bank", "B001", parties) is not None


# -- every listener and dialler, over loopback TLS ---------------------------------------------


@implementer(IHandshakeListener)
class _Side(Protocol):
    """One end of a probe connection: did its handshake complete?"""

    def __init__(self, done: Deferred[bool]) -> None:
        self.done = done

    def handshakeCompleted(self) -> None:  # noqa: N802
        if not self.done.called:
            self.done.callback(True)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if not self.done.called:
            self.done.callback(False)


async def _handshake(server: Any, client: Any) -> bool:
    """Whether a TLS connection between ``server`` and ``client`` options completes on both ends."""
    ends: list[Deferred[bool]] = [Deferred(), Deferred()]
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        tls_server_factory(Factory.forProtocol(lambda: _Side(ends[0])), server))
    try:
        endpoint = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        proto = await endpoint.connect(Factory.forProtocol(lambda: _Side(ends[1]))).addTimeout(TIMEOUT, reactor)
        results = []
        for end in ends:
            results.append(await end.addTimeout(TIMEOUT, reactor))
        proto.transport.loseConnection()
        return all(results)
    finally:
        await port.stopListening()


#: listener -> (daemon, options key, whether the daemon is the server, role of its peers)
LISTENERS = {
    "centre_api": ("gateway", "centre_api", True, "centre"),
    "bank_link_listen": ("gateway", "bank_B001", True, "bank"),
    "bank_link_dial": ("gateway", "bank_B002", False, "bank"),
    "ledger_link": ("gateway", "ledger", False, "ledger"),
    "ledger_ingest": ("ledger", "ingest", True, "gateway"),
    "supervisor_api": ("ledger", "supervisor", True, "supervisor"),
}

#: (listener, certificate issuer, party the certificate names, accepted)
TABLE = [
    ("centre_api", "default", "C52240", True),
    ("centre_api", "c52251-ca", "C52251", True),
    ("centre_api", "c52251-ca", "C52240", False),
    ("centre_api", "default", "C52251", False),
    ("bank_link_listen", "b001-ca", "B001", True),
    ("bank_link_listen", "default", "B001", False),
    ("bank_link_dial", "default", "B002", True),
    ("bank_link_dial", "b001-ca", "B002", False),
    ("ledger_link", "default", "main", True),
    ("ledger_link", "c52251-ca", "main", False),
    ("ledger_ingest", "default", "main", True),
    ("ledger_ingest", "gw2-ca", "gw2", True),
    ("ledger_ingest", "gw2-ca", "main", False),
    ("ledger_ingest", "default", "gw2", False),
    ("supervisor_api", "default", "sup1", True),
    ("supervisor_api", "sup2-ca", "sup2", True),
    ("supervisor_api", "sup2-ca", "sup1", False),
    ("supervisor_api", "default", "sup2", False),
]


@pytest.mark.parametrize(("listener", "issuer", "name", "accepted"), TABLE,
                         ids=[f"{r[0]}-{r[2]}-from-{r[1]}" for r in TABLE])
@pytest_twisted.ensureDeferred
async def test_every_listener_and_dialler(world: World, listener: str, issuer: str, name: str,
                                          accepted: bool) -> None:
    daemon, key, is_server, role = LISTENERS[listener]
    if daemon == "gateway":
        ours = ReloadableOptions(gateway_service._tls_options(world.gateway)[key], key)
    else:
        ours = ReloadableOptions(ledger_service._tls_options(world.ledger)[key], key)
    if role == "ledger":
        ours = ExpectPeer(ours, "ledger", name)
    cert, private_key = world.cert(issuer, role, name)
    trust_us = [world.pki.ca_cert]  # both daemons' own certificates come from the default CA
    with capture_logs() as logs:
        if is_server:
            ok = await _handshake(ours, client_options(cert, private_key, trust_us))
        else:
            ok = await _handshake(server_options(cert, private_key, trust_us), ours)
    assert ok is accepted
    # Refused in the handshake, with a line naming the peer: bound to the wrong anchor, or (where
    # no party of that listener uses the issuer) a chain that reaches no anchor at all.
    refused = logs.named("tls.identity_refused") + logs.named("tls.chain_refused")
    if accepted:
        assert not refused
    else:
        assert len(refused) == 1, refused
        if refused[0]["kind"] == "identity_refused":
            assert refused[0]["peer"] == f"hpf://{role}/{name}", refused


# -- whole daemons: a forged party stores nothing ---------------------------------------------


async def _refused(client: CentreClient, method: str, url_path: str, body: Any = None) -> bool:
    try:
        await client.request(method, url_path, body)
    except Exception:  # the handshake failed: the connection was closed or reset
        return True
    return False


@pytest_twisted.ensureDeferred
async def test_a_centres_own_ca_cannot_submit_as_another_centre_on_the_centre_api(world: World) -> None:
    migrate.upgrade(world.gateway.database)
    gateway = makeService(world.gateway, reactor)
    gateway.service.startService()
    try:
        await when_listening(gateway.listeners["centre_api"])
        url, ca = api_url(world.gateway), world.pki.ca_cert
        debit = {"instruction_id": "FORGED-1", "debit_account": DEBIT_B001, "creditor": PAYEE,
                 "amount": "100.00", "purpose": "withdrawal"}
        with capture_logs() as logs:
            forged = CentreClient(*world.cert("c52251-ca", "centre", "C52240"), ca, url)
            assert await _refused(forged, "POST", "/v1/instructions", debit)
            assert await _refused(forged, "GET", "/v1/results")
            wrong_ca = CentreClient(*world.cert("default", "centre", "C52251"), ca, url)
            assert await _refused(wrong_ca, "GET", "/v1/results")
        assert await gateway.db.read(q.count_by_state) == {}
        lines = logs.named("tls.identity_refused")
        assert [e["peer"] for e in lines] == ["hpf://centre/C52240"] * 2 + ["hpf://centre/C52251"]
        assert all("own trust anchor" in e["reason"] for e in lines)

        # The parties themselves, each through its own anchor, are served.
        own = CentreClient(*world.cert("c52251-ca", "centre", "C52251"), ca, url)
        assert (await own.request("GET", "/v1/results"))[0] == 200
        status, record = await CentreClient(*world.cert("default", "centre", "C52240"), ca, url).request(
            "POST", "/v1/instructions", debit)
        assert status == 202, record
    finally:
        await gateway.service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_supervisors_own_ca_cannot_act_as_another_supervisor(world: World) -> None:
    ledger_store.MIGRATIONS.upgrade(world.ledger.database)
    ledger = makeLedgerService(world.ledger, reactor)
    ledger.service.startService()
    try:
        port = await when_listening(ledger.listeners["supervisor"])
        url, ca = f"https://localhost:{port.getHost().port}", world.pki.ca_cert
        with capture_logs() as logs:
            forged = CentreClient(*world.cert("sup2-ca", "supervisor", "sup1"), ca, url)
            assert await _refused(forged, "GET", "/v1/alerts")
            assert await _refused(forged, "POST", "/v1/alerts/1/notes", {"text": "written as sup1"})
            wrong_ca = CentreClient(*world.cert("default", "supervisor", "sup2"), ca, url)
            assert await _refused(wrong_ca, "GET", "/v1/alerts")
        lines = logs.named("tls.identity_refused")
        assert [e["peer"] for e in lines] == ["hpf://supervisor/sup1"] * 2 + ["hpf://supervisor/sup2"]
        status, body = await CentreClient(*world.cert("sup2-ca", "supervisor", "sup2"), ca, url).request(
            "GET", "/v1/alerts")
        assert status == 200 and body["alerts"] == []
    finally:
        await ledger.service.stopService()
