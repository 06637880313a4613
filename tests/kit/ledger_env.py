"""A ledger daemon on loopback TLS, started and restarted by the test, and an HTTPS client per party."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from gateway.config import render_toml
from gateway.ledger import store
from gateway.ledger.config import LedgerConfig, load_ledger_config
from gateway.ledger.service import Ledger, makeLedgerService
from gateway.pki import DevPki
from gateway.tls import FixedCreatorPolicy
from gateway.listener import when_listening
from tests.kit.config import ledger_data
from tests.kit.ledger import DEBIT, GATEWAY_KEY, PAYEE
from tests.kit.wait import until

__all__ = ["TIMEOUT", "Client", "Env", "env"]

TIMEOUT = 10.0


# -- HTTPS client -------------------------------------------------------------------------


class Client:
    """HTTPS as one party: presents ``cert``/``key``, trusts only ``ca``."""

    def __init__(self, cert: Path, key: Path, ca: Path) -> None:
        creator = optionsForClientTLS(
            "localhost", trustRoot=Certificate.loadPEM(ca.read_bytes()),
            clientCertificate=PrivateCertificate.loadPEM(cert.read_bytes() + key.read_bytes()))
        self.agent = Agent(reactor, contextFactory=FixedCreatorPolicy(creator),
                           pool=HTTPConnectionPool(reactor, persistent=False), connectTimeout=5)

    async def call(self, method: str, url: str, body: Any = None, *,
                   accept: str = "application/json") -> tuple[int, str, Any]:
        """(status, content type, parsed JSON or text)."""
        headers = Headers({b"accept": [accept.encode()]})
        producer = None
        if body is not None:
            headers.addRawHeader(b"content-type", b"application/json")
            producer = FileBodyProducer(io.BytesIO(json.dumps(body, ensure_ascii=False).encode("utf-8")))
        d = self.agent.request(method.encode(), url.encode(), headers, producer)
        d.addTimeout(TIMEOUT, reactor)
        response = await d
        data = await readBody(response)
        ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode()
        parsed: Any = data.decode("utf-8")
        if "json" in ctype:
            parsed = json.loads(data)
        return response.code, ctype, parsed


# -- a running ledger -----------------------------------------------------------------------


@dataclass
class Env:
    """Config, PKI and a way to start (and restart) the ledger on one database."""

    tmp: Path
    pki: DevPki
    config: LedgerConfig
    ledger: Ledger | None = None
    urls: dict[str, str] | None = None

    async def start(self) -> Ledger:
        ledger = makeLedgerService(self.config, reactor)
        ledger.service.startService()
        urls = {}
        for name, svc in ledger.listeners.items():
            port = await when_listening(svc)
            scheme = "http" if name == "ops" else "https"
            urls[name] = f"{scheme}://localhost:{port.getHost().port}"
        self.ledger, self.urls = ledger, urls

        async def ready() -> bool:
            return ledger.engine.ready

        await until(ready, "the matcher caught up", TIMEOUT)
        return ledger

    async def stop(self) -> None:
        if self.ledger is not None:
            await self.ledger.service.stopService()
            self.ledger = None

    def client(self, role: str, name: str = "main") -> Client:
        return Client(self.pki.cert(role, name), self.pki.key(role, name), self.pki.ca_cert)

    def url(self, listener: str, path: str) -> str:
        assert self.urls is not None
        return self.urls[listener] + path

    async def file(self, copies: list[dict[str, Any]], client: Client | None = None) -> list[dict[str, Any]]:
        status, _, body = await (client or self.client("gateway")).call(
            "POST", self.url("ingest", "/v1/copies"), {"copies": copies})
        assert status == 200, body
        return body["results"]

    async def read(self, path: str, **kw: Any) -> tuple[int, str, Any]:
        return await self.client("supervisor", "sup1").call("GET", self.url("supervisor", path), **kw)


@pytest.fixture
def env(tmp_path: Path, dev_pki: DevPki) -> Any:
    """A ledger config on SQLite with the development PKI; the ledger is started by the test."""
    pub = tmp_path / "gateway-signing.pub"
    pub.write_bytes(GATEWAY_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    data = ledger_data(tmp_path, dev_pki, pub, account=DEBIT, payee=PAYEE,
                       thresholds={"large_amount": "1000000.00", "result_deadline": 1.5, "booking_deadline": 1.5,
                                   "balance_tolerance": "0.00"})
    path = tmp_path / "ledger.toml"
    path.write_text(render_toml(data), encoding="utf-8")
    config = load_ledger_config(path)
    store.MIGRATIONS.upgrade(config.database)
    e = Env(tmp_path, dev_pki, config)
    yield e
    pytest_twisted.blockon(Deferred.fromCoroutine(e.stop()))
