"""Ledger configuration: ``conf/ledger.example.toml`` in, typed and validated frozen values out.

The same rules as the gateway's config (:mod:`gateway.config`, whose checker
this module extends): every problem is reported at once as
``"{file}: {dotted.key}: {reason}"``, unknown keys are errors, paths are
relative to the file's directory.  Gateways' public signing keys are loaded
and type-checked here, so a wrong key file is a config error, not a refused
copy at three in the morning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.config import (
    AccountConfig,
    CounterpartyConfig,
    TlsConfig,
    _Checker,
)
from gateway.config._base import load_checked, value_or_raise
from gateway.config.centres import _CENTRE_ID
from gateway.config.registers import _PARTY_NAME_MAX
from gateway.config.toml import _show
from gateway.tls import IDENTITY_NAME
from gateway.web import ConnectionLimits

__all__ = [
    "SIGNATURE_ALGS",
    "GatewayPeer",
    "SupervisorPeer",
    "LedgerThresholds",
    "LedgerConfig",
    "ConsoleConfig",
    "ConsoleCity",
    "ConsoleStaff",
    "PublicSigningKey",
    "load_ledger_config",
    "check_ledger_config",
    "load_public_key",
]

PublicSigningKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

SIGNATURE_ALGS = ("ed25519", "ecdsa-p256-sha256")
"""Signature algorithms a gateway may sign its copies with."""


@dataclass(frozen=True)
class GatewayPeer:
    """A gateway that may file copies: its certificate says ``hpf://gateway/NAME``.

    ``signing_key`` is the PEM public key its copies are verified with,
    ``signature_alg`` one of :data:`SIGNATURE_ALGS` (the key's type matches it
    when the config was loaded with files checked).  ``ca`` is a trust bundle
    for this gateway's certificates only; ``None`` means ``tls.ca``.
    """

    name: str
    signing_key: Path
    signature_alg: str = "ed25519"
    ca: Path | None = None


@dataclass(frozen=True)
class SupervisorPeer:
    """A supervisor allowed to read: its certificate says ``hpf://supervisor/NAME``.

    ``ca`` is a trust bundle for this supervisor's certificates; ``None`` means ``tls.ca``.
    """

    name: str
    ca: Path | None = None


@dataclass(frozen=True)
class LedgerThresholds:
    """Matching thresholds: amounts in fen, deadlines in seconds.

    Promise (when loaded): ``large_amount > 0``, deadlines finite and > 0,
    ``balance_tolerance >= 0``, ``0 < gateway_behind_hold <= MAX_BEHIND_HOLD``.
    ``gateway_behind_hold`` bounds how long the deadlines wait for copies a gateway said it
    had and has not delivered, from its last copy taken (``StreamClock.HOLD_S``, the same
    default: two of the forwarder's longest retry cycles).
    """

    large_amount: int = 100_000_000      # 1,000,000.00 CNY
    result_deadline: float = 300.0
    booking_deadline: float = 86_400.0
    balance_tolerance: int = 0
    gateway_behind_hold: float = 120.0


@dataclass(frozen=True)
class ConsoleCity:
    """A city of the province: its display name and the centres that belong to it."""

    key: str
    name: str
    centres: tuple[str, ...]


@dataclass(frozen=True)
class ConsoleStaff:
    """A centre's staff member: its certificate says ``hpf://staff/NAME``; ``ca`` as for supervisors."""

    name: str
    centre: str
    ca: Path | None = None


@dataclass(frozen=True)
class ConsoleConfig:
    """The supervision console (``[console]``): its listener, the cities, who works at which level.

    A supervisor of ``[supervisors]`` named in ``city_supervisors`` sees that
    city's centres only; every other listed supervisor is a province supervisor.
    """

    listen: str
    cities: Mapping[str, ConsoleCity]
    city_supervisors: Mapping[str, str]
    staff: Mapping[str, ConsoleStaff]
    #: Seconds in one day of the console's deadlines (an inquiry's days, a rectification's plan and
    #: closure days); 86400 but for drills and tests, which shorten it rather than wait for days.
    deadline_day: float = 86_400.0
    #: Seconds between two looks for inquiries and rectification steps past their deadline.
    overdue_check: float = 5.0


@dataclass(frozen=True)
class LedgerConfig:
    """The whole validated ledger configuration.

    ``path`` is the absolute path of the file; every path inside is absolute
    and a relative SQLite URL is resolved against the file's directory.
    ``gateways`` and ``supervisors`` are keyed by the NAME their certificates
    carry; only supervisors listed in ``supervisors`` may use the supervisor
    API (none when the section is absent).  ``accounts`` and
    ``counterparties`` are the registers in the gateway config's shape.
    """

    path: Path
    name: str
    database: str
    check_processes: int
    tls: TlsConfig
    ingest: str
    supervisor: str
    ops: str
    gateways: Mapping[str, GatewayPeer]
    supervisors: Mapping[str, SupervisorPeer]
    thresholds: LedgerThresholds
    accounts: Mapping[str, AccountConfig]
    counterparties: Mapping[str, CounterpartyConfig]
    #: The guards of every ledger listener (``[limits]``; defaults as the gateway's centre API).
    limits: ConnectionLimits = ConnectionLimits()
    console: ConsoleConfig | None = None


# -- loading ------------------------------------------------------------------


def load_ledger_config(path: str | Path, *, check_files: bool = True) -> LedgerConfig:
    """Read and validate the ledger config at ``path``; :class:`~gateway.config.ConfigError` lists every problem.

    With ``check_files`` False, the files named by ``tls`` and ``ca`` keys and
    the gateways' signing keys need not exist (nor be readable keys) yet.
    """
    return value_or_raise(_load(path, check_files))


def check_ledger_config(path: str | Path, *, check_files: bool = True) -> list[str]:
    """Every problem with the ledger config at ``path``; an empty list means it is valid."""
    return _load(path, check_files)[1]


def load_public_key(path: Path, alg: str) -> PublicSigningKey:
    """The PEM public key in ``path`` for ``alg``; ``ValueError`` says why it is not usable."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot be read ({e.strerror or e})") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ValueError("not a PEM public key (SubjectPublicKeyInfo)") from None
    if alg == "ed25519":
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError("is not an Ed25519 public key (signature_alg is \"ed25519\")")
        return key
    if alg == "ecdsa-p256-sha256":
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("is not an ECDSA P-256 public key (signature_alg is \"ecdsa-p256-sha256\")")
        return key
    raise ValueError(f"unknown signature_alg {alg!r}")


def _load(path: str | Path, check_files: bool) -> tuple[LedgerConfig | None, list[str]]:
    return load_checked(path, check_files, _LedgerChecker, _LedgerChecker.ledger_config)


# -- validation -----------------------------------------------------------------

_SECTIONS = ("ledger", "tls", "listen", "limits", "gateways", "supervisors", "thresholds", "accounts",
             "counterparties", "console")
_CONSOLE_KEYS = ("listen", "cities", "city_supervisors", "staff", "deadline_day", "overdue_check")
_CITY_KEYS = ("name", "centres")
_STAFF_KEYS = ("centre", "ca")
_LEDGER_KEYS = ("name", "database", "check_processes")
DEFAULT_CHECK_PROCESSES = 2
_LIMIT_KEYS = ("connections_per_ip", "connections_per_peer", "handshake_timeout", "request_timeout",
               "idle_timeout")
_LISTEN_KEYS = ("ingest", "supervisor", "ops")
_GATEWAY_KEYS = ("signing_key", "signature_alg", "ca")
_SUPERVISOR_KEYS = ("ca",)
_THRESHOLD_KEYS = ("large_amount", "result_deadline", "booking_deadline", "balance_tolerance", "gateway_behind_hold")
MAX_BEHIND_HOLD = 3600.0
"""The longest ``gateway_behind_hold``: a gateway unheard for an hour is down or cut off, not in a
slow patch, and holding every gateway's deadlines longer is the freeze the bound is there to stop."""
_ZERO = re.compile(r"0(\.0{1,2})?")
_IDENTITY_WHAT = "must be 1-32 of A-Z a-z 0-9 _ - (the NAME in the certificate's hpf:// URI)"


class _LedgerChecker(_Checker):
    """The gateway config checker's machinery, walking the ledger's sections."""

    def ledger_config(self, doc: dict[str, Any], path: Path) -> LedgerConfig | None:
        self.keys(doc, (), _SECTIONS)
        name, database, check_processes = self.ledger_section(self.section(doc, "ledger", required=True))
        tls = self.tls(self.section(doc, "tls", required=True))
        ingest, supervisor, ops = self.ledger_listen(self.section(doc, "listen", required=True))
        gateways = self.gateways(self.section(doc, "gateways") or {})
        supervisors = self.supervisors(self.section(doc, "supervisors") or {})
        thresholds = self.thresholds(self.section(doc, "thresholds"))
        limits = self.ledger_limits(self.section(doc, "limits") or {})
        # The account register as the gateway's, but banks and centres are named, not defined, here.
        accounts = self.accounts(self.section(doc, "accounts") or {}, None, None)
        counterparties = self.counterparties(self.section(doc, "counterparties") or {})
        console = self.console(doc.get("console"), supervisors)
        self.check_listeners()
        if (name is None or database is None or check_processes is None or tls is None or ingest is None
                or supervisor is None or ops is None or thresholds is None or limits is None or self.problems):
            return None
        return LedgerConfig(
            path=path, name=name, database=database, check_processes=check_processes, tls=tls,
            ingest=ingest, supervisor=supervisor,
            ops=ops, gateways=MappingProxyType(gateways), supervisors=MappingProxyType(supervisors),
            thresholds=thresholds, accounts=MappingProxyType(accounts),
            counterparties=MappingProxyType(counterparties), limits=limits, console=console)

    def console(self, table: Any, supervisors: Mapping[str, SupervisorPeer]) -> ConsoleConfig | None:
        """``[console]``, or None when absent (no console listener)."""
        if table is None:
            return None
        at: tuple[str, ...] = ("console",)
        if not isinstance(table, dict):
            self.problem(at, f"must be a table, not {_show(table)}")
            return None
        self.keys(table, at, _CONSOLE_KEYS)
        listen = self.endpoint(table, at, "listen", listen=True)
        cities: dict[str, ConsoleCity] = {}
        seen: dict[str, str] = {}
        for key, entry in self.entries(table.get("cities") or {}, "console.cities", IDENTITY_NAME, _IDENTITY_WHAT):
            where = at + ("cities", key)
            self.keys(entry, where, _CITY_KEYS)
            name = self.label(entry, where, "name", _PARTY_NAME_MAX)
            centres = entry.get("centres")
            if not isinstance(centres, list) or not centres or not all(
                    isinstance(c, str) and _CENTRE_ID.fullmatch(c) for c in centres):
                self.problem(where + ("centres",), "must be a non-empty list of centre ids (C and 5 digits)")
                continue
            for c in centres:
                if c in seen:
                    self.problem(where + ("centres",), f"{c} already belongs to city {seen[c]}")
                seen[c] = key
            if name is not None:
                cities[key] = ConsoleCity(key, name, tuple(centres))
        city_supervisors: dict[str, str] = {}
        for name, city in (table.get("city_supervisors") or {}).items():
            where = at + ("city_supervisors", name)
            if name not in supervisors:
                self.problem(where, "is not a supervisor listed in [supervisors]")
            elif not isinstance(city, str) or city not in cities:
                self.problem(where, f"must name a city of [console.cities], not {_show(city)}")
            else:
                city_supervisors[name] = city
        staff: dict[str, ConsoleStaff] = {}
        for name, entry in self.entries(table.get("staff") or {}, "console.staff", IDENTITY_NAME, _IDENTITY_WHAT):
            where = at + ("staff", name)
            self.keys(entry, where, _STAFF_KEYS)
            centre = self.string(entry, where, "centre", pattern=_CENTRE_ID,
                                 what="must be C and 5 digits (the centre's node number)")
            ca = self.file_path(entry, where, "ca", default=None)
            if centre is not None:
                staff[name] = ConsoleStaff(name, centre, ca)
        deadline_day = self.seconds(table, at, "deadline_day", ConsoleConfig.deadline_day)
        overdue_check = self.seconds(table, at, "overdue_check", ConsoleConfig.overdue_check)
        if listen is None or deadline_day is None or overdue_check is None:
            return None
        return ConsoleConfig(listen, MappingProxyType(cities), MappingProxyType(city_supervisors),
                             MappingProxyType(staff), deadline_day, overdue_check)

    def ledger_section(self, table: dict[str, Any] | None) -> tuple[str | None, str | None, int | None]:
        if table is None:
            return None, None, None
        at = ("ledger",)
        self.keys(table, at, _LEDGER_KEYS)
        name = self.string(table, at, "name", pattern=IDENTITY_NAME, what=_IDENTITY_WHAT)
        return (name, self.database(table, at, "database"),
                self.integer(table, at, "check_processes", 0, 16, default=DEFAULT_CHECK_PROCESSES))

    def ledger_limits(self, table: dict[str, Any]) -> ConnectionLimits | None:
        at = ("limits",)
        self.keys(table, at, _LIMIT_KEYS)
        defaults = ConnectionLimits()
        values: dict[str, Any] = {key: self.integer(table, at, key, 1, 10_000_000, default=getattr(defaults, key))
                                  for key in ("connections_per_ip", "connections_per_peer")}
        for key in ("handshake_timeout", "request_timeout", "idle_timeout"):
            values[key] = self.seconds(table, at, key, getattr(defaults, key))
        if any(v is None for v in values.values()):
            return None
        if not self.not_above(at, values, "handshake_timeout", "request_timeout"):
            return None
        return ConnectionLimits(**values)

    def ledger_listen(self, table: dict[str, Any] | None) -> tuple[str | None, str | None, str | None]:
        if table is None:
            return None, None, None
        at = ("listen",)
        self.keys(table, at, _LISTEN_KEYS)
        return (self.endpoint(table, at, "ingest", listen=True),
                self.endpoint(table, at, "supervisor", listen=True),
                self.endpoint(table, at, "ops", listen=True))

    def gateways(self, table: dict[str, Any]) -> dict[str, GatewayPeer]:
        found: dict[str, GatewayPeer] = {}
        for name, entry in self.entries(table, "gateways", IDENTITY_NAME, _IDENTITY_WHAT):
            at = ("gateways", name)
            self.keys(entry, at, _GATEWAY_KEYS)
            key_path = self.file_path(entry, at, "signing_key")
            alg: str | None = "ed25519"
            if "signature_alg" in entry:
                alg = self.string(entry, at, "signature_alg")
                if alg is not None and alg not in SIGNATURE_ALGS:
                    self.problem(at + ("signature_alg",),
                                 f"must be one of {', '.join(SIGNATURE_ALGS)}, not {_show(alg)}")
                    alg = None
            ca = self.file_path(entry, at, "ca", default=None)
            if key_path is not None and alg is not None and self.check_files and key_path.is_file():
                try:
                    load_public_key(key_path, alg)
                except ValueError as e:
                    self.problem(at + ("signing_key",), f"{key_path}: {e}")
                    key_path = None
            if key_path is not None and alg is not None:
                found[name] = GatewayPeer(name, key_path, alg, ca)
        return found

    def supervisors(self, table: dict[str, Any]) -> dict[str, SupervisorPeer]:
        found: dict[str, SupervisorPeer] = {}
        for name, entry in self.entries(table, "supervisors", IDENTITY_NAME, _IDENTITY_WHAT):
            at = ("supervisors", name)
            self.keys(entry, at, _SUPERVISOR_KEYS)
            found[name] = SupervisorPeer(name, self.file_path(entry, at, "ca", default=None))
        return found

    def thresholds(self, table: dict[str, Any] | None) -> LedgerThresholds | None:
        if table is None:
            return None
        at = ("thresholds",)
        self.keys(table, at, _THRESHOLD_KEYS)
        defaults = LedgerThresholds()
        large = self.amount(table, at, "large_amount", defaults.large_amount)
        result_deadline = self.seconds(table, at, "result_deadline", defaults.result_deadline)
        booking_deadline = self.seconds(table, at, "booking_deadline", defaults.booking_deadline)
        tolerance: int | None = defaults.balance_tolerance
        if isinstance(table.get("balance_tolerance"), str) and _ZERO.fullmatch(table["balance_tolerance"]):
            tolerance = 0  # parse_amount refuses zero; here zero is the strictest setting
        else:
            tolerance = self.amount(table, at, "balance_tolerance", defaults.balance_tolerance)
        hold = self.seconds(table, at, "gateway_behind_hold", defaults.gateway_behind_hold)
        if hold is not None and hold > MAX_BEHIND_HOLD:
            self.problem(at + ("gateway_behind_hold",),
                         f"must be at most {MAX_BEHIND_HOLD:g} seconds, not {_show(table['gateway_behind_hold'])}")
            hold = None
        if large is None or result_deadline is None or booking_deadline is None or tolerance is None \
                or hold is None:
            return None
        return LedgerThresholds(large, result_deadline, booking_deadline, tolerance, hold)
