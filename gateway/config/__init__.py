"""Gateway configuration: a TOML file in, typed and validated frozen values out.

``conf/gateway.example.toml`` is the schema by example.  :func:`load_config`
checks the whole file in one pass and raises :class:`ConfigError` listing every
problem, each as ``"{file}: {dotted.key}: {reason}"``, so an operator fixes
them all at once instead of one per restart.  Unknown keys are errors (a typo
must never silently drop a setting), and so are missing keys, values of the
wrong type, endpoints Twisted would refuse and listeners that would collide.

Paths in the file are relative to the file's own directory, so a config can be
checked and run from anywhere.

:func:`render_toml` is the inverse for the shapes a config uses; the demo
writes its generated config with it.

One module per section, its values and its checks beside each other
(``certificates``, ``listen``, ``limits``, ``timeouts``, ``ledger``,
``centres``, ``banks`` with ``sftp``, ``registers``); ``_base`` holds the
checker's machinery, ``endpoints`` and ``toml`` what every section shares.
This module composes the checker and keeps every name importable from
``gateway.config``.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from gateway.config._base import _IDENTITY_NAME, _NODE, ConfigError, load_checked, value_or_raise
from gateway.config.banks import (
    FRONT_END_ADAPTERS,
    INSTRUCTION_SIGNATURE_ALGS,
    BankConfig,
    BanksSection,
    FrontEndConfig,
    StatusPolicy,
)
from gateway.config.centres import CentreConfig, CentresSection
from gateway.config.certificates import TlsConfig, TlsSection
from gateway.config.endpoints import endpoint_interface
from gateway.config.ledger import LedgerLinkConfig, LedgerSection
from gateway.config.limits import Limits, LimitsSection
from gateway.config.listen import ListenSection, OperatorConfig
from gateway.config.registers import ACCOUNT_TYPES, AccountConfig, CounterpartyConfig, RegistersSection
from gateway.config.timeouts import Timeouts, TimeoutsSection
from gateway.config.toml import read_toml, render_toml

__all__ = [
    "OperatorConfig",
    "endpoint_interface",
    "ConfigError",
    "TlsConfig",
    "Limits",
    "Timeouts",
    "CentreConfig",
    "BankConfig",
    "FrontEndConfig",
    "StatusPolicy",
    "AccountConfig",
    "CounterpartyConfig",
    "GatewayConfig",
    "ACCOUNT_TYPES",
    "INSTRUCTION_SIGNATURE_ALGS",
    "load_config",
    "check_config",
    "render_toml",
    "load_config_or_exit",
    "read_toml",
    "FRONT_END_ADAPTERS",
]

_SECTIONS = ("gateway", "tls", "listen", "limits", "timeouts", "ledger", "centres", "banks",
             "accounts", "counterparties", "operators")
_GATEWAY_KEYS = ("node", "database", "instance")


@dataclass(frozen=True)
class GatewayConfig:
    """The whole validated configuration.

    ``path`` is the absolute path of the file it came from; every path inside
    is absolute, and a relative SQLite URL has been resolved against the
    file's directory.  The registries are read-only mappings in file order,
    keyed by centre id, bank id, account number and counterparty account.
    Every account's bank and centre is in ``banks`` and ``centres``.
    """

    path: Path
    node: str
    database: str
    tls: TlsConfig
    centre_api: str
    ops: str
    limits: Limits
    timeouts: Timeouts
    centres: Mapping[str, CentreConfig]
    banks: Mapping[str, BankConfig]
    accounts: Mapping[str, AccountConfig]
    counterparties: Mapping[str, CounterpartyConfig]
    ledger: LedgerLinkConfig | None = None
    instance: str = ""
    operators: Mapping[str, OperatorConfig] = field(default_factory=lambda: MappingProxyType({}))
    ops_tls: bool = False
    centre_bdc: str | None = None  # listener for centres' bdc software (gateway/centre_bdc.py)

    def account(self, number: str) -> AccountConfig | None:
        """The registered account ``number``, or ``None``."""
        return self.accounts.get(number)

    def bank_of(self, account: str) -> BankConfig | None:
        """The bank holding registered account ``account``, or ``None`` for an unregistered one."""
        found = self.accounts.get(account)
        return None if found is None else self.banks.get(found.bank)

    def counterparty(self, account: str) -> CounterpartyConfig | None:
        """The registered counterparty with account number ``account``, or ``None``."""
        return self.counterparties.get(account)


class _Checker(TlsSection, ListenSection, LimitsSection, TimeoutsSection,
               LedgerSection, CentresSection, BanksSection, RegistersSection):
    """Walks the parsed TOML, recording every problem and building values where all is well."""

    def gateway(self, doc: dict[str, Any], path: Path) -> GatewayConfig | None:
        self.keys(doc, (), _SECTIONS)
        gateway_table = self.section(doc, "gateway", required=True)
        node, database = self.gateway_section(gateway_table)
        instance = socket.gethostname()
        if gateway_table and "instance" in gateway_table:
            instance = self.string(gateway_table, ("gateway",), "instance", pattern=_IDENTITY_NAME,
                                   what="must be 1-32 of A-Z a-z 0-9 _ - (this node's name)") or instance
        tls = self.tls(self.section(doc, "tls", required=True))
        centre_api, ops, ops_tls, centre_bdc = self.listen(self.section(doc, "listen", required=True))
        operators = self.operators(self.section(doc, "operators") or {})
        limits = self.limits(self.section(doc, "limits"))
        timeouts = self.timeouts(self.section(doc, "timeouts"))
        raw_centres = self.section(doc, "centres") or {}
        raw_banks = self.section(doc, "banks") or {}
        centres = self.centres(raw_centres)
        banks = self.banks(raw_banks, node)
        # An account naming a registered bank or centre whose own entry has
        # problems is not blamed for them: existence is by key.
        accounts = self.accounts(self.section(doc, "accounts") or {}, set(raw_centres),
                                 set(raw_banks))
        counterparties = self.counterparties(self.section(doc, "counterparties") or {})
        ledger = self.ledger(doc.get("ledger"))
        self.check_listeners()
        if (node is None or database is None or tls is None or centre_api is None or ops is None
                or limits is None or timeouts is None or self.problems):
            return None
        return GatewayConfig(
            path=path, node=node, database=database, tls=tls, centre_api=centre_api, ops=ops,
            limits=limits, timeouts=timeouts, centres=MappingProxyType(centres),
            banks=MappingProxyType(banks), accounts=MappingProxyType(accounts),
            counterparties=MappingProxyType(counterparties), ledger=ledger, instance=instance,
            operators=MappingProxyType(operators), ops_tls=ops_tls, centre_bdc=centre_bdc)

    def gateway_section(self, table: dict[str, Any] | None) -> tuple[str | None, str | None]:
        if table is None:
            return None, None
        self.keys(table, ("gateway",), _GATEWAY_KEYS)
        node = self.string(table, ("gateway",), "node", pattern=_NODE,
                           what="must be 6 of A-Z 0-9 (a node number such as D00000)")
        return node, self.database(table, ("gateway",), "database")


def load_config(path: str | Path, *, check_files: bool = True) -> GatewayConfig:
    """Read and validate the config file at ``path``.

    Raises :class:`ConfigError` listing every problem.  With ``check_files``
    False the files named in ``[tls]`` and ``ca`` keys need not exist yet
    (``hpf-gateway keys init`` creates them from this very config).
    """
    return value_or_raise(_load(path, check_files))


def check_config(path: str | Path, *, check_files: bool = True) -> list[str]:
    """Every problem with the config file at ``path``; an empty list means it is valid."""
    return _load(path, check_files)[1]


def load_config_or_exit(path: str | Path, *, check_files: bool = True) -> GatewayConfig:
    """:func:`load_config` for a command: every problem on stderr, then exit status 2."""
    try:
        return load_config(path, check_files=check_files)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2)


def _load(path: str | Path, check_files: bool) -> tuple[GatewayConfig | None, list[str]]:
    return load_checked(path, check_files, _Checker, _Checker.gateway)
