"""Configs for the tests: the gateway example's data, changed and written where a test wants it, and a ledger's."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping

from gateway.config import check_config, render_toml

__all__ = ["EXAMPLE", "example_data", "write", "problems_after", "set_key", "delete_key", "ledger_data"]

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "gateway.example.toml"


def example_data() -> dict[str, Any]:
    """The example config (conf/gateway.example.toml) as data."""
    with EXAMPLE.open("rb") as f:
        return tomllib.load(f)


def write(tmp_path: Path, data: dict[str, Any], name: str = "gw.toml") -> Path:
    """``data`` written as TOML to ``tmp_path/name``; its path."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_toml(data), encoding="utf-8")
    return path


def problems_after(tmp_path: Path, change: Callable[[dict[str, Any]], None],
                   check_files: bool = False) -> tuple[str, list[str]]:
    """Apply ``change`` to the example's data, write it, and return (file, problems)."""
    data = example_data()
    change(data)
    path = write(tmp_path, data)
    return str(path), check_config(path, check_files=check_files)


def set_key(*path_and_value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets the key at ``path`` (tables made as needed) to the last argument."""
    *path, value = path_and_value

    def change(data: dict[str, Any]) -> None:
        table = data
        for key in path[:-1]:
            table = table.setdefault(key, {})
        table[path[-1]] = value
    return change


def delete_key(*path: str) -> Callable[[dict[str, Any]], None]:
    """A change that removes the key at ``path``."""
    def change(data: dict[str, Any]) -> None:
        table = data
        for key in path[:-1]:
            table = table[key]
        del table[path[-1]]
    return change


def ledger_data(tmp: Path, pki: Any, signing_pub: Path, *, account: str, payee: Mapping[str, str],
                centre: str = "C52240", **sections: Any) -> dict[str, Any]:
    """A ledger config's data: its database in ``tmp``, the development PKI's certificates, loopback
    ports of its own, gateway ``main`` signing with ``signing_pub``, supervisor ``sup1``, one collection
    account at B001 and one counterparty; ``sections`` replace whole sections (``thresholds``, ``limits``…)."""
    data: dict[str, Any] = {
        "ledger": {"name": "main", "database": f"sqlite:///{tmp / 'ledger.db'}"},
        "tls": {"certificate": str(pki.cert("ledger")), "private_key": str(pki.key("ledger")),
                "ca": str(pki.ca_cert)},
        "listen": {"ingest": "tcp:0:interface=127.0.0.1", "supervisor": "tcp:0:interface=127.0.0.1",
                   "ops": "tcp:0:interface=127.0.0.1"},
        "gateways": {"main": {"signing_key": str(signing_pub), "signature_alg": "ed25519"}},
        "supervisors": {"sup1": {}},
        "thresholds": {"large_amount": "1000000.00", "result_deadline": 60.0, "booking_deadline": 60.0,
                       "balance_tolerance": "0.00"},
        "accounts": {account: {"bank": "B001", "centre": centre, "name": "示例中心归集户", "type": "collection"}},
        "counterparties": {payee["account"]: {"name": payee["name"], "bank_code": payee["bank_code"]}},
    }
    data.update(sections)
    return data
