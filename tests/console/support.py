"""A real ledger with its console, as a subprocess on loopback, and Chromium driven by Playwright.

The ledger runs as ``hpf-gateway ledger`` (its own reactor; Playwright's sync
API runs in the test's thread).  Certificates come from the development PKI;
the city supervisor and the centres' staff are issued here.  Copies are filed
through ingest exactly as a gateway does (signed, over mTLS), so the matcher
raises the alerts the pages show.  Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from gateway.config import render_toml
from gateway.pki import DevPki, issue
from gateway.ports import free_port
from tests.kit.ledger import DEBIT, GATEWAY_KEY, PAYEE
from tests.kit.procs import HPF, Proc
from tests.kit.wait import wait_until

CHROMIUM = os.environ.get("HPF_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
OTHER_ACCOUNT = "6222002222333344"  # registered to the second centre
CITIES = {"guiyang": {"name": "贵阳市", "centres": ["C52240"]}, "beijing": {"name": "北京市", "centres": ["C11000"]}}


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        return f"no Chromium at {CHROMIUM} (Debian package chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None




@dataclass
class Party:
    cert: Path
    key: Path


@dataclass
class LedgerProcess:
    """The ledger daemon with the console; ``url`` is the console's origin."""

    tmp: Path
    pki: DevPki
    ports: dict[str, int]
    other: DevPki | None = None  # an unrelated CA: carol's own anchor
    parties: dict[str, Party] = field(default_factory=dict)
    proc: Proc | None = None
    seq: int = 0
    console_options: dict[str, Any] = field(default_factory=dict)  # more keys of [console]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.ports['console']}"

    def config(self, result_deadline: float = 30.0) -> Path:
        pub = self.tmp / "gateway-signing.pub"
        pub.write_bytes(GATEWAY_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        data = {
            "ledger": {"name": "main", "database": f"sqlite:///{self.tmp / 'ledger.db'}", "check_processes": 0},
            "tls": {"certificate": str(self.pki.cert("ledger")), "private_key": str(self.pki.key("ledger")),
                    "ca": str(self.pki.ca_cert)},
            "listen": {name: f"tcp:{self.ports[name]}:interface=127.0.0.1" for name in ("ingest", "supervisor", "ops")},
            "gateways": {"main": {"signing_key": str(pub), "signature_alg": "ed25519"}},
            "supervisors": {"sup1": {}, "city1": {}},
            "thresholds": {"large_amount": "1000000.00", "result_deadline": result_deadline,
                           "booking_deadline": 86400.0, "balance_tolerance": "0.00"},
            "accounts": {DEBIT: {"bank": "B001", "centre": "C52240", "name": "示例中心归集户", "type": "collection"},
                         OTHER_ACCOUNT: {"bank": "B001", "centre": "C11000", "name": "北京中心归集户",
                                         "type": "collection"}},
            "counterparties": {PAYEE["account"]: {"name": PAYEE["name"], "bank_code": PAYEE["bank_code"]}},
            "console": {"listen": f"tcp:{self.ports['console']}:interface=127.0.0.1", "cities": CITIES,
                        "city_supervisors": {"city1": "guiyang"},
                        "staff": {"alice": {"centre": "C52240"}, "bob": {"centre": "C11000"},
                                  **({"carol": {"centre": "C52240", "ca": str(self.other.ca_cert)}}
                                     if self.other else {})}, **self.console_options},
        }
        path = self.tmp / "ledger.toml"
        path.write_text(render_toml(data), encoding="utf-8")
        return path

    def issue_parties(self) -> None:
        keys = self.tmp / "keys"
        for role, name in (("supervisor", "city1"), ("staff", "alice"), ("staff", "bob"), ("centre", "C52240")):
            if role == "centre":
                self.parties[f"{role}/{name}"] = Party(self.pki.cert(role, name), self.pki.key(role, name))
                continue
            cert, key = issue(self.pki.ca_cert, self.pki.ca_key, keys, role, name)
            self.parties[f"{role}/{name}"] = Party(cert, key)
        self.parties["supervisor/sup1"] = Party(self.pki.cert("supervisor", "sup1"), self.pki.key("supervisor", "sup1"))
        self.parties["gateway"] = Party(self.pki.cert("gateway"), self.pki.key("gateway"))
        if self.other is not None:
            # carol's certificates from her own CA and from the dev CA; one claiming alice from carol's CA
            for who in ("carol", "alice"):
                cert, key = issue(self.other.ca_cert, self.other.ca_key, self.tmp / "other", "staff", who)
                self.parties[f"other/staff/{who}"] = Party(cert, key)
            cert, key = issue(self.pki.ca_cert, self.pki.ca_key, keys, "staff", "carol")
            self.parties["staff/carol"] = Party(cert, key)

    def start(self, timeout: float = 30.0) -> None:
        path = self.config()
        self.proc = Proc("ledger", HPF + ["ledger", "-c", str(path), "--migrate"], self.tmp / "ledger.log").start()
        wait_until(lambda: self._ready(), "the ledger ready", timeout)

    def _ready(self) -> bool:
        if not self.proc.alive():
            raise AssertionError(f"the ledger exited: {self.proc.text()[-2000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['ops']}/readyz", timeout=2) as r:
            return r.status == 200

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def https(self, party: str, method: str, url: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request as ``party`` (its certificate), trusting only the dev CA."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        p = self.parties[party]
        ctx.load_cert_chain(str(p.cert), str(p.key))
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), _NoRedirect())
        try:
            with opener.open(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def file(self, copies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        status, body = self.https("gateway", "POST", f"https://localhost:{self.ports['ingest']}/v1/copies",
                                  json.dumps({"copies": copies}, ensure_ascii=False).encode("utf-8"),
                                  {"content-type": "application/json"})
        assert status == 200, body
        results = json.loads(body)["results"]
        assert all(r["status"] == "stored" for r in results), results
        return results

    def alerts(self) -> list[dict[str, Any]]:
        status, body = self.https("supervisor/sup1", "GET",
                                  f"https://localhost:{self.ports['supervisor']}/v1/alerts?limit=1000")
        assert status == 200, body
        return json.loads(body)["alerts"]

    def wait_alert(self, predicate: Any, what: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in self.alerts():
                if predicate(a):
                    return a
            time.sleep(0.1)
        raise AssertionError(f"no alert within {timeout}s: {what}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def start_ledger(tmp: Path, pki: DevPki, other: DevPki | None = None, **console_options: Any) -> LedgerProcess:
    ledger = LedgerProcess(tmp, pki, {n: free_port() for n in ("ingest", "supervisor", "ops", "console")}, other,
                           console_options=console_options)
    ledger.issue_parties()
    ledger.start()
    return ledger


def browser_context(browser: Any, ledger: LedgerProcess, party: str, **kw: Any) -> Any:
    """A fresh browser context presenting ``party``'s certificate to the console."""
    p = ledger.parties[party]
    kw.setdefault("locale", "zh-CN")  # a supervisor's browser in China
    return browser.new_context(
        ignore_https_errors=True,  # the ledger's certificate is from the dev CA, not in Chromium's store
        client_certificates=[{"origin": ledger.url, "certPath": str(p.cert), "keyPath": str(p.key)}], **kw)
