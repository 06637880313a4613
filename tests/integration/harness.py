"""An in-process gateway with simulated banks on real loopback TLS, and an HTTPS client for centres."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from gateway.config import GatewayConfig, load_config, render_toml
from gateway.demo import CENTRE, write_demo_config
from gateway.pki import DevPki, init_dev_pki
from gateway.service import Gateway, makeService
from gateway.simulate.run import api_url, bank_service_for
from gateway.store import migrate
from gateway.tls import FixedCreatorPolicy

OTHER_CENTRE = "C11000"
OTHER_ACCOUNT = "6200001111999999"  # C11000's account at B001
DEBIT_B001 = "6200001111222233"
DEBIT_B002 = "6222002222333344"
PAYEE = {"account": "6200009999000011", "name": "张三", "bank_code": "105100000017"}


class CentreClient:
    """HTTPS+JSON as a centre: presents ``cert``/``key``, trusts ``ca``."""

    def __init__(self, cert: Path | None, key: Path | None, ca: Path, base_url: str) -> None:
        client_cert = None
        if cert is not None and key is not None:
            client_cert = PrivateCertificate.loadPEM(cert.read_bytes() + key.read_bytes())
        creator = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(ca.read_bytes()),
                                      clientCertificate=client_cert)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, contextFactory=FixedCreatorPolicy(creator), pool=self.pool, connectTimeout=5)
        self.base = base_url

    async def request(self, method: str, path: str, body: Any = None, *,
                      raw: bytes | None = None, ctype: str = "application/json") -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = Headers({b"content-type": [ctype.encode()]})
        from io import BytesIO

        from twisted.web.client import FileBodyProducer

        producer = FileBodyProducer(BytesIO(data)) if data is not None else None
        d = self.agent.request(method.encode(), (self.base + path).encode(), headers, producer)
        d.addTimeout(10, reactor)
        response = await d
        content = await readBody(response)
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = content
        return response.code, parsed

    async def submit(self, instruction_id: str, *, amount: str = "100.00", debit: str = DEBIT_B001,
                     creditor: dict[str, str] | None = None, **extra: Any) -> tuple[int, Any]:
        body = {"instruction_id": instruction_id, "debit_account": debit, "creditor": creditor or PAYEE,
                "amount": amount, "purpose": "withdrawal", **extra}
        return await self.request("POST", "/v1/instructions", body)

    async def wait_state(self, instruction_id: str, states: set[str], timeout: float = 10.0) -> dict[str, Any]:
        """Poll the instruction until it is in one of ``states`` (bounded)."""
        deadline = reactor.seconds() + timeout
        while True:
            status, record = await self.request("GET", f"/v1/instructions/{instruction_id}")
            if status == 200 and record["state"] in states:
                return record
            if reactor.seconds() > deadline:
                raise AssertionError(f"{instruction_id} not in {states} after {timeout}s: {record}")
            await deferLater(reactor, 0.05, lambda: None)


@dataclass
class Harness:
    """The whole relay on loopback: gateway, bank simulators, centre clients."""

    tmp: Path
    pki: DevPki
    config: GatewayConfig
    gateway: Gateway
    banks: dict[str, Any] = field(default_factory=dict)

    def client(self, centre: str = CENTRE, *, pki: DevPki | None = None, anonymous: bool = False) -> CentreClient:
        p = pki or self.pki
        if anonymous:
            return CentreClient(None, None, self.pki.ca_cert, api_url(self.config))
        return CentreClient(p.cert("centre", centre), p.key("centre", centre), self.pki.ca_cert,
                            api_url(self.config))

    def start_bank(self, bank_id: str, **options: Any) -> Any:
        svc = bank_service_for(reactor, self.config, bank_id, **options)
        svc.startService()
        self.banks[bank_id] = svc
        return svc

    async def stop_bank(self, bank_id: str) -> None:
        svc = self.banks.pop(bank_id)
        await svc.stopService()

    async def link_up(self, bank_id: str, timeout: float = 10.0) -> None:
        deadline = reactor.seconds() + timeout
        while self.gateway.relay.dispatchers[bank_id].session is None:
            if reactor.seconds() > deadline:
                raise AssertionError(f"link {bank_id} not up after {timeout}s")
            await deferLater(reactor, 0.05, lambda: None)

    async def stop(self) -> None:
        for bank_id in list(self.banks):
            await self.stop_bank(bank_id)
        await self.gateway.service.stopService()


async def start_harness(tmp: Path, *, banks: dict[str, dict[str, Any]] | None = None,
                        timeouts: dict[str, float] | None = None, database: str | None = None,
                        ledger: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
                        operators: dict[str, Any] | None = None, ops_tls: bool = False,
                        bank_config: dict[str, dict[str, Any]] | None = None,
                        listen: dict[str, Any] | None = None,
                        centres: dict[str, dict[str, Any]] | None = None) -> Harness:
    """Keys, config, migrated database, a running gateway and (by default) both banks."""
    pki = init_dev_pki(tmp / "keys", banks=["B001", "B002"], centres=[CENTRE, OTHER_CENTRE])
    path = write_demo_config(tmp)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data["centres"][OTHER_CENTRE] = {"unit_no": "110000000000000", "name": "另一中心"}
    data["accounts"][OTHER_ACCOUNT] = {"bank": "B001", "centre": OTHER_CENTRE, "name": "另一中心归集户",
                                       "type": "collection"}
    if timeouts:
        data["timeouts"].update(timeouts)
    if database:
        data["gateway"]["database"] = database
    if ledger:
        data["ledger"] = ledger
    if limits:
        data["limits"].update(limits)
    if operators:
        data["operators"] = operators
    if ops_tls:
        data["listen"]["ops_tls"] = True
    data["listen"].update(listen or {})  # e.g. centre_bdc
    for centre_id, fields in (centres or {}).items():  # e.g. bdc_notify
        data["centres"][centre_id].update(fields)
    for bank_id, fields in (bank_config or {}).items():  # e.g. bdc's persistent opt-in
        data["banks"][bank_id].update(fields)
        if fields.get("connection") == "persistent":
            data["banks"][bank_id].pop("peer_endpoint", None)
        if fields.get("channel") == "sftp":  # the sftp table names the server
            for key in ("direction", "endpoint", "peer_endpoint", "connection"):
                data["banks"][bank_id].pop(key, None)
    path.write_text(render_toml(data), encoding="utf-8")
    config = load_config(path)
    migrate.upgrade(config.database)
    gateway = makeService(config, reactor)
    gateway.service.startService()
    h = Harness(tmp, pki, config, gateway)
    for bank_id, options in (banks if banks is not None else {"B001": {}, "B002": {}}).items():
        h.start_bank(bank_id, **options)
    return h
