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
"""

from __future__ import annotations

import dataclasses

import difflib
import ipaddress
import math
import importlib.util
import re
import socket
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Collection, Iterator, Mapping, Sequence

from adapters.base import iter_adapter_names
from gateway.tls import resolve_credential
from gateway.model import deceptive_character, format_amount, parse_amount

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
]


class ConfigError(Exception):
    """The configuration file was refused.

    ``problems`` lists every problem found, one line each, formatted
    ``"{file}: {dotted.key}: {reason}"`` (``file`` as the caller named it).
    A file that cannot be read or parsed gives one problem whose middle part
    is ``(file)`` or the TOML error's ``line L, column C``.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# -- the typed configuration --------------------------------------------------


@dataclass(frozen=True)
class OperatorConfig:
    """An operator who may write on the ops listener (``[operators.NAME]``).

    They authenticate with a client certificate naming ``hpf://operator/NAME``
    that chains to ``ca`` (``None``: ``tls.ca``) when the ops listener speaks
    TLS (``listen.ops_tls``), or with the secret token in ``token_file``
    (mode 0600; read through ``$CREDENTIALS_DIRECTORY`` under systemd
    ``LoadCredential=``) sent as ``Authorization: Bearer TOKEN``.
    """

    name: str
    token_file: Path | None = None
    ca: Path | None = None


@dataclass(frozen=True)
class TlsConfig:
    """The gateway's own certificate and key (PEM), and the default trust bundle for peers.

    ``crls`` are PEM CRL files checked on every listener and link (empty: no
    revocation checking).  With any CRL given, checking fails closed: every CA
    that issues a peer's certificate must have a current CRL in the list.
    """

    certificate: Path
    private_key: Path
    ca: Path
    crls: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Limits:
    """Amount thresholds in fen, the batch size, and the centre API's guards against abuse.

    Defaults are the example config's values.  Promise (when loaded):
    ``0 < large_amount <= max_amount``, ``1 <= max_batch <= 1000``, every
    timeout finite and > 0 with ``centre_handshake_timeout <= centre_request_timeout``,
    and every connection and rate limit >= 1.

    The centre API guards: a connection must finish its TLS handshake within
    ``centre_handshake_timeout`` seconds and deliver each whole request
    within ``centre_request_timeout`` of its first byte (or of connecting);
    a keep-alive connection idle for ``centre_idle_timeout`` is closed.  At
    most ``centre_connections_per_ip`` connections from one source address
    (counted before the handshake) and ``centre_connections_per_centre`` per
    centre certificate identity are open at once; each centre may make
    ``centre_requests_per_second`` requests per second on average with bursts
    of ``centre_request_burst`` (a token bucket), beyond which it gets 429.
    """

    max_amount: int = 5_000_000_000  # 50,000,000.00 CNY
    large_amount: int = 100_000_000  # 1,000,000.00 CNY: approval_ref required at or above
    max_batch: int = 1000
    max_queue_per_bank: int = 20_000
    centre_idle_timeout: float = 75.0
    centre_handshake_timeout: float = 10.0
    centre_request_timeout: float = 60.0
    centre_connections_per_ip: int = 1024
    centre_connections_per_centre: int = 256
    centre_requests_per_second: float = 2000.0
    centre_request_burst: int = 2000


@dataclass(frozen=True)
class Timeouts:
    """Link and instruction timers in seconds.  Defaults are the example config's values.

    Promise (when loaded): every value is finite and > 0, and ``dead_after > heartbeat_interval``.
    """

    heartbeat_interval: float = 15.0
    dead_after: float = 45.0
    receipt_timeout: float = 10.0
    result_timeout: float = 30.0
    status_query_interval: float = 5.0
    status_query_attempts: int = 5
    max_feed_wait: float = 30.0
    balance_query_interval: float = 300.0
    refuse_when_link_down_for: float = 300.0
    shutdown_drain: float = 10.0
    lease_ttl: float = 3.0


@dataclass(frozen=True)
class LedgerLinkConfig:
    """Where copies of every journal event go: the supervision ledger's ingest API.

    ``url`` is ``https://HOST:PORT``; the ledger must present ``hpf://ledger/NAME``
    from a certificate that chains to ``ca`` (``None``: ``tls.ca``).  Copies are
    signed with ``signing_key`` (private, mode 0600) using ``signature_alg``.
    """

    url: str
    name: str
    ca: Path | None
    signing_key: Path
    signature_alg: str = "ed25519"
    batch: int = 500


@dataclass(frozen=True)
class CentreConfig:
    """A city centre: ``id`` is its node number (``C`` + 5 digits), ``unit_no`` its 15-digit code.

    ``ca`` is a trust bundle for this centre's certificates only; ``None`` means ``tls.ca``.
    """

    id: str
    unit_no: str
    name: str
    ca: Path | None = None
    cust_no: str = ""        # bdc CustNo: the customer number the banks gave this centre
    oper_no: str = ""        # bdc OperNo: the operator its requests name ("" = the adapter's own)


@dataclass(frozen=True)
class StatusPolicy:
    """A bank's status-inquiry cadence (``[banks.X]`` ``status_*`` keys); None: the ``[timeouts]`` value.

    The first inquiry ``first_after`` seconds after the receipt, then waits of
    ``interval`` multiplied by ``backoff`` after each inquiry, at most
    ``max_interval``; ``in_doubt`` one wait after the ``attempts``-th, or
    ``give_up_after`` seconds after the receipt if that comes first.
    """

    first_after: float | None = None
    interval: float | None = None
    backoff: float = 1.0
    max_interval: float | None = None
    attempts: int | None = None
    give_up_after: float | None = None
    before_resend: bool = False  # ask the status of an unconfirmed reference before sending it again


@dataclass(frozen=True)
class FrontEndConfig:
    """A bank's direct-connect front-end on the gateway's own network (``banks.X.front_end``),
    for the adapters that reach their bank through one (:data:`FRONT_END_ADAPTERS`).

    ``url`` (and ICBC's ``sign_url``) must be loopback or one of ``local_addresses``
    (:func:`gateway.http_transport.check_front_end_url`).  The credentials are the bank's
    identifiers for the gateway; the operator password lives in ``password_file`` (mode 0600)
    and is read only when signing on, never kept here nor logged.
    """

    url: str
    local_addresses: tuple[str, ...] = ()
    timeout: float = 25.0
    max_answer: int = 4 * 1024 * 1024
    termid: str = ""
    custid: str = ""
    cusopr: str = ""
    password_file: Path | None = None
    cis: str = ""
    cert_id: str = ""
    sign_url: str = ""

    def password(self) -> str:
        """The operator password from ``password_file`` (one line; the line break dropped)."""
        if self.password_file is None:
            raise ValueError("this front-end has no password_file")
        return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")


FRONT_END_ADAPTERS: dict[str, tuple[str, ...]] = {
    "bocb2e": ("termid", "custid", "cusopr", "password_file"),
    "icbc": ("cis", "cert_id", "sign_url"),
    "ccb": ("custid", "cusopr", "password_file"),   # url tcp://HOST:PORT (WLPT: a <TX> per connection)
}
"""Adapters reached through a front-end, with the credential keys each needs."""
_FRONT_END_KEYS = ("url", "local_addresses", "timeout", "max_answer")


@dataclass(frozen=True)
class BankConfig:
    """A bank and its link.

    ``direction`` is ``"listen"`` (the bank dials in on ``endpoint``, a Twisted
    server endpoint string) or ``"connect"`` (the gateway dials ``endpoint``, a
    Twisted client endpoint string).  Endpoints are plain: the gateway adds
    TLS.  ``ca`` is a trust bundle for this bank only; ``None`` means ``tls.ca``.

    ``signature_alg`` (one of :data:`INSTRUCTION_SIGNATURE_ALGS`) says whether
    and how every instruction sent to this bank is signed with
    ``signing_key`` (a PEM private key, mode 0600; present exactly when the
    algorithm is not ``"none"``); see :mod:`gateway.signing`.
    """

    id: str
    name: str
    adapter: str
    node: str
    direction: str
    endpoint: str
    window: int
    ca: Path | None = None
    signature_alg: str = "none"
    signing_key: Path | None = None
    pain001_version: str = ""   # iso20022 only: the pain.001 version written ("" = the adapter's default)
    front_end: FrontEndConfig | None = None
    # Status inquiries for what the bank confirmed (gateway.outbox.Schedule); None: [timeouts].
    status: StatusPolicy | None = None
    connection: str = "persistent"      # or "per_request": a connection per request/answer
    peer_endpoint: str | None = None    # per_request: the other direction's endpoint
    request_timeout: float = 60.0       # per_request: seconds an exchange may take
    sftp: "SftpChannelConfig | None" = None  # channel = "sftp": ISO 20022 files (see below)

    @property
    def listens(self) -> bool:
        """True when the bank dials in and the gateway listens for it."""
        return self.direction == "listen"


ACCOUNT_TYPES = frozenset({"collection", "loan", "revenue", "other"})
"""Account kinds: 归集 collection, 贷款 loan, 增值收益 revenue, other."""


@dataclass(frozen=True)
class AccountConfig:
    """An account the gateway may debit, held at ``bank`` and owned by ``centre`` (both registered)."""

    number: str
    bank: str
    centre: str
    name: str
    type: str
    bank_code: str = ""       # the 12-digit CNAPS code of the branch holding it; "" = not registered


@dataclass(frozen=True)
class CounterpartyConfig:
    """A registered payee (往来单位备案): account number, name and 12-digit CNAPS bank code."""

    account: str
    name: str
    bank_code: str


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


# -- loading ------------------------------------------------------------------


def load_config(path: str | Path, *, check_files: bool = True) -> GatewayConfig:
    """Read and validate the config file at ``path``.

    Raises :class:`ConfigError` listing every problem.  With ``check_files``
    False the files named in ``[tls]`` and ``ca`` keys need not exist yet
    (``hpf-gateway keys init`` creates them from this very config).
    """
    config, problems = _load(path, check_files)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


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


def read_toml(path: str | Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The parsed TOML document at ``path``, or the one problem that stops reading it."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return None, [f"{file}: (file): cannot be read ({e.strerror or e})"]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, [f"{file}: (file): not UTF-8 text (bad byte at offset {e.start})"]
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as e:
        return None, [_syntax_problem(file, e)]


def _load(path: str | Path, check_files: bool) -> tuple[GatewayConfig | None, list[str]]:
    doc, problems = read_toml(path)
    if doc is None:
        return None, problems
    absolute = Path(path).absolute()
    checker = _Checker(str(path), absolute.parent, check_files)
    config = checker.gateway(doc, absolute)
    if checker.problems:
        return None, checker.problems
    return config, []


_TOML_WHERE = re.compile(r"^(?P<msg>.*?)\s*\(at (?P<where>line \d+, column \d+|end of document)\)$",
                         re.DOTALL)


def _syntax_problem(file: str, error: tomllib.TOMLDecodeError) -> str:
    """One problem line for a TOML syntax error, keeping tomllib's line and column."""
    text = str(error)
    m = _TOML_WHERE.match(text)
    if m is None:
        return f"{file}: (file): invalid TOML: {text}"
    return f"{file}: {m.group('where')}: invalid TOML: {m.group('msg')}"


# -- validation -----------------------------------------------------------------

_Path = tuple[str, ...]
_REQUIRED: Any = object()  # default marker: the key must be present

_NODE = re.compile(r"[A-Z0-9]{6}")
_CENTRE_ID = re.compile(r"C[0-9]{5}")
_UNIT_NO = re.compile(r"[0-9]{15}")
_BANK_ID = re.compile(r"[A-Z0-9]{1,16}")
_ACCOUNT_NO = re.compile(r"[0-9A-Za-z-]{1,32}")
_BANK_CODE = re.compile(r"[0-9]{12}")

_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.\-]+:[0-9]{1,5}")
_IDENTITY_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_CREDENTIAL = re.compile(r"[!-~]{1,40}")
_SECTIONS = ("gateway", "tls", "listen", "limits", "timeouts", "ledger", "centres", "banks",
             "accounts", "counterparties", "operators")
_LEDGER_KEYS = ("url", "name", "ca", "signing_key", "signature_alg", "batch")
_GATEWAY_KEYS = ("node", "database", "instance")
_TLS_KEYS = ("certificate", "private_key", "ca", "crls")
_LISTEN_KEYS = ("centre_api", "ops", "ops_tls", "centre_bdc")
_OPERATOR_KEYS = ("token_file", "ca")
_LIMIT_KEYS = ("max_amount", "large_amount", "max_batch", "max_queue_per_bank", "centre_idle_timeout",
               "centre_handshake_timeout", "centre_request_timeout", "centre_connections_per_ip",
               "centre_connections_per_centre", "centre_requests_per_second", "centre_request_burst")
_TIMEOUT_SECONDS = ("heartbeat_interval", "dead_after", "receipt_timeout", "result_timeout",
                    "status_query_interval", "max_feed_wait", "balance_query_interval",
                    "refuse_when_link_down_for", "shutdown_drain", "lease_ttl")
_TIMEOUT_KEYS = _TIMEOUT_SECONDS + ("status_query_attempts",)
_CENTRE_KEYS = ("unit_no", "name", "ca", "cust_no", "oper_no")
_HEAD_CODE = re.compile(r"[0-9A-Za-z_-]{1,32}")  # bdc CustNo / OperNo
_BANK_KEYS = ("name", "adapter", "node", "direction", "endpoint", "window", "ca", "signature_alg",
              "signing_key", "pain001_version", "front_end", "connection", "peer_endpoint",
              "request_timeout", "channel", "sftp")
PAIN001_VERSIONS = ("pain.001.001.09", "pain.001.001.03")
"""Values of ``banks.X.pain001_version`` (iso20022 banks only)."""
_STATUS_KEYS = ("status_first_after", "status_interval", "status_backoff", "status_max_interval",
                "status_attempts", "status_give_up_after", "status_before_resend")
BANK_CONNECTIONS = ("persistent", "per_request")
INSTRUCTION_SIGNATURE_ALGS = ("none", "ed25519", "ecdsa-p256-sha256", "sm2-sm3")
"""Values of ``banks.X.signature_alg`` ("sm2-sm3" needs the ``sm`` extra: GmSSL's binding)."""
_ACCOUNT_KEYS = ("bank", "centre", "name", "type", "bank_code")
_COUNTERPARTY_KEYS = ("name", "bank_code")

# A centre's creditor.name is at most 60 characters (gateway.model), so a
# longer registered counterparty name could never match one; debit account
# names travel in the same bank fields.  Centre and bank names are only
# shown to people, so they get a looser cap.
_PARTY_NAME_MAX = 60
_LABEL_MAX = 120

_NO_TLS_ENDPOINT = ("TLS is added by the gateway (client certificates are required); "
                    "give a plain tcp: endpoint")
_LISTEN_TYPES = ("tcp", "tcp6", "unix", "systemd")
_CONNECT_TYPES = ("tcp", "unix")
_WILDCARD = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True)
class _Bind:
    """Where a listener binds, enough to tell whether two listeners collide."""

    family: str  # "ip", "unix" or "systemd"
    where: str  # interface, socket path or inherited descriptor
    port: int = 0

    def clashes(self, other: _Bind) -> bool:
        if self.family != other.family:
            return False
        if self.family != "ip":
            return self.where == other.where
        # Port 0 asks the kernel for a free port: never a collision.  A
        # wildcard interface takes the port on every address.
        return (self.port == other.port != 0
                and (self.where == other.where or self.where in _WILDCARD
                     or other.where in _WILDCARD))


class _Checker:
    """Walks the parsed TOML, recording every problem and building values where all is well."""

    def __init__(self, file: str, base: Path, check_files: bool) -> None:
        self.file = file
        self.base = base
        self.check_files = check_files
        self.problems: list[str] = []
        self.listeners: list[tuple[_Path, str, _Bind]] = []

    def problem(self, path: _Path, reason: str) -> None:
        self.problems.append(f"{self.file}: {_dotted(path)}: {reason}")

    # -- the document -----------------------------------------------------

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

    def ledger(self, table: Any) -> LedgerLinkConfig | None:
        if table is None:
            return None  # no ledger: events are kept, and counted as backlog
        if not isinstance(table, dict):
            self.problem(("ledger",), f"must be a table, not {_show(table)}")
            return None
        at = ("ledger",)
        self.keys(table, at, _LEDGER_KEYS)
        url = self.string(table, at, "url", pattern=_HTTPS_URL,
                          what="must be https://HOST:PORT (the ledger's ingest listener)")
        name = self.string(table, at, "name", pattern=_IDENTITY_NAME,
                           what="must be the ledger's identity name (hpf://ledger/NAME)") \
            if "name" in table else "main"
        ca = self.file_path(table, at, "ca", default=None)
        signing_key = self.file_path(table, at, "signing_key")
        alg = table.get("signature_alg", "ed25519")
        if alg not in ("ed25519", "ecdsa-p256-sha256"):
            self.problem(at + ("signature_alg",), f'must be "ed25519" or "ecdsa-p256-sha256", not {_show(alg)}')
            alg = None
        batch = self.integer(table, at, "batch", 1, 1000, default=500)
        if url is None or name is None or signing_key is None or alg is None or batch is None:
            return None
        return LedgerLinkConfig(url, name, ca, signing_key, alg, batch)

    def gateway_section(self, table: dict[str, Any] | None) -> tuple[str | None, str | None]:
        if table is None:
            return None, None
        self.keys(table, ("gateway",), _GATEWAY_KEYS)
        node = self.string(table, ("gateway",), "node", pattern=_NODE,
                           what="must be 6 of A-Z 0-9 (a node number such as D00000)")
        return node, self.database(table, ("gateway",), "database")

    def tls(self, table: dict[str, Any] | None) -> TlsConfig | None:
        if table is None:
            return None
        self.keys(table, ("tls",), _TLS_KEYS)
        certificate = self.file_path(table, ("tls",), "certificate")
        private_key = self.file_path(table, ("tls",), "private_key")
        ca = self.file_path(table, ("tls",), "ca")
        crls = self.file_list(table, ("tls",), "crls")
        if certificate is None or private_key is None or ca is None or crls is None:
            return None
        return TlsConfig(certificate, private_key, ca, crls)

    def listen(self, table: dict[str, Any] | None) -> tuple[str | None, str | None, bool, str | None]:
        if table is None:
            return None, None, False, None
        self.keys(table, ("listen",), _LISTEN_KEYS)
        centre_api = self.endpoint(table, ("listen",), "centre_api", listen=True)
        ops = self.endpoint(table, ("listen",), "ops", listen=True)
        # Optional: centres' existing bdc software (docs/protocols/bdc.md, "The centre role").
        centre_bdc = self.endpoint(table, ("listen",), "centre_bdc", listen=True) if "centre_bdc" in table else None
        ops_tls = table.get("ops_tls", False)
        if not isinstance(ops_tls, bool):
            self.problem(("listen", "ops_tls"), f"must be true or false, not {_show(ops_tls)}")
            ops_tls = False
        if ops is not None and not ops_tls and not _loopback_endpoint(ops):
            # Whoever reaches the ops listener may read every instruction and, with a
            # credential, resolve money: off loopback only behind client certificates.
            self.problem(("listen", "ops"), "must listen on loopback (interface=127.0.0.1 or ::1, or a "
                                            "unix: socket) unless listen.ops_tls = true (TLS with client "
                                            "certificates)")
        return centre_api, ops, ops_tls, centre_bdc

    def operators(self, table: dict[str, Any]) -> dict[str, OperatorConfig]:
        found: dict[str, OperatorConfig] = {}
        for name, entry in self.entries(table, "operators", _IDENTITY_NAME,
                                        "must be 1-32 of A-Z a-z 0-9 _ - (the NAME in hpf://operator/NAME)"):
            at = ("operators", name)
            self.keys(entry, at, _OPERATOR_KEYS)
            token_file = self.file_path(entry, at, "token_file", default=None)
            found[name] = OperatorConfig(name, token_file, self.file_path(entry, at, "ca", default=None))
        return found

    def limits(self, table: dict[str, Any] | None) -> Limits | None:
        if table is None:
            return None
        at = ("limits",)
        self.keys(table, at, _LIMIT_KEYS)
        defaults = Limits()
        max_amount = self.amount(table, at, "max_amount", defaults.max_amount)
        large_amount = self.amount(table, at, "large_amount", defaults.large_amount)
        max_batch = self.integer(table, at, "max_batch", 1, 1000, default=defaults.max_batch)
        max_queue = self.integer(table, at, "max_queue_per_bank", 1, 10_000_000,
                                 default=defaults.max_queue_per_bank)
        guards: dict[str, Any] = {
            key: self.seconds(table, at, key, getattr(defaults, key))
            for key in ("centre_idle_timeout", "centre_handshake_timeout", "centre_request_timeout")}
        for key in ("centre_connections_per_ip", "centre_connections_per_centre", "centre_request_burst"):
            guards[key] = self.integer(table, at, key, 1, 10_000_000, default=getattr(defaults, key))
        guards["centre_requests_per_second"] = self.rate(
            table, at, "centre_requests_per_second", defaults.centre_requests_per_second)
        if max_amount is None or large_amount is None or max_batch is None or max_queue is None \
                or any(v is None for v in guards.values()):
            return None
        if large_amount > max_amount:
            self.problem(at + ("large_amount",),
                         f"must not be above limits.max_amount ({format_amount(max_amount)})")
            return None
        if guards["centre_handshake_timeout"] > guards["centre_request_timeout"]:
            # The request deadline also runs from the connection's start, so a longer
            # handshake allowance could never be used.
            self.problem(at + ("centre_handshake_timeout",),
                         f"must not be above limits.centre_request_timeout "
                         f"({guards['centre_request_timeout']:g})")
            return None
        return Limits(max_amount, large_amount, max_batch, max_queue, **guards)

    def timeouts(self, table: dict[str, Any] | None) -> Timeouts | None:
        if table is None:
            return None
        at = ("timeouts",)
        self.keys(table, at, _TIMEOUT_KEYS)
        defaults = Timeouts()
        seconds = {key: self.seconds(table, at, key, getattr(defaults, key))
                   for key in _TIMEOUT_SECONDS}
        attempts = self.integer(table, at, "status_query_attempts", 1, None,
                                default=defaults.status_query_attempts)
        heartbeat, dead_after = seconds["heartbeat_interval"], seconds["dead_after"]
        if heartbeat is not None and dead_after is not None and dead_after <= heartbeat:
            # A peer must get at least one probe before it is declared dead.
            self.problem(at + ("dead_after",),
                         f"must be greater than timeouts.heartbeat_interval ({heartbeat:g})")
            return None
        if attempts is None or any(v is None for v in seconds.values()):
            return None
        return Timeouts(**seconds, status_query_attempts=attempts)

    # -- registries -------------------------------------------------------

    def centres(self, table: dict[str, Any]) -> dict[str, CentreConfig]:
        found: dict[str, CentreConfig] = {}
        unit_of: dict[str, str] = {}
        for centre_id, entry in self.entries(table, "centres", _CENTRE_ID,
                                             "must be C and 5 digits (the centre's node number)"):
            at = ("centres", centre_id)
            self.keys(entry, at, _CENTRE_KEYS)
            unit_no = self.string(entry, at, "unit_no", pattern=_UNIT_NO, what="must be 15 digits")
            name = self.label(entry, at, "name", _LABEL_MAX)
            ca = self.file_path(entry, at, "ca", default=None)
            heads = {key: self.string(entry, at, key, pattern=_HEAD_CODE,
                                      what="must be 1-32 of A-Z a-z 0-9 _ -") or ""
                     for key in ("cust_no", "oper_no") if key in entry}
            if unit_no is not None:
                if unit_no in unit_of:
                    self.problem(at + ("unit_no",),
                                 f"same unit_no as {_dotted(('centres', unit_of[unit_no]))}")
                unit_of.setdefault(unit_no, centre_id)
            if unit_no is not None and name is not None:
                found[centre_id] = CentreConfig(centre_id, unit_no, name, ca, **heads)
        return found

    def banks(self, table: dict[str, Any], gateway_node: str | None) -> dict[str, BankConfig]:
        found: dict[str, BankConfig] = {}
        node_of: dict[str, str] = {}
        installed = sorted(set(iter_adapter_names()))
        for bank_id, entry in self.entries(table, "banks", _BANK_ID, "must be 1-16 of A-Z 0-9"):
            at = ("banks", bank_id)
            self.keys(entry, at, _BANK_KEYS + _STATUS_KEYS)
            name = self.label(entry, at, "name", _LABEL_MAX)
            adapter = self.string(entry, at, "adapter")
            if adapter is not None and adapter not in installed:
                self.problem(at + ("adapter",),
                             f"no adapter named {_show(adapter)} is installed "
                             f"(installed: {', '.join(installed) or 'none'})")
                adapter = None
            sftp = sftp_channel(self, entry, at, adapter)
            if sftp:   # the gateway dials the bank's SFTP server: no link endpoint of its own
                entry = {**entry, "direction": "connect", "endpoint": sftp.endpoint}
            node = self.string(entry, at, "node", pattern=_NODE, what="must be 6 of A-Z 0-9")
            if node is not None:
                # The node number tells the two ends of a link apart, and a
                # bank's frames apart from another bank's in logs and evidence.
                if node == gateway_node:
                    self.problem(at + ("node",), "is the gateway's own node (gateway.node)")
                elif node in node_of:
                    self.problem(at + ("node",), f"same node as {_dotted(('banks', node_of[node]))}")
                node_of.setdefault(node, bank_id)
            direction = self.string(entry, at, "direction")
            if direction is not None and direction not in ("listen", "connect"):
                self.problem(at + ("direction",),
                             f'must be "listen" or "connect", not {_show(direction)}')
                direction = None
            if direction is not None:
                endpoint = self.endpoint(entry, at, "endpoint", listen=direction == "listen")
            else:
                # Which kind of endpoint it must be is unknown; still say if it is missing.
                endpoint = self.string(entry, at, "endpoint")
            window = self.integer(entry, at, "window", 1, 10000)
            ca = self.file_path(entry, at, "ca", default=None)
            signing = self.instruction_signing(entry, at)
            pain001 = self.pain001_version(entry, at, adapter, signing)
            front_end = self.front_end(entry, at, adapter)
            status = self.status_policy(entry, at)
            if adapter in FRONT_END_ADAPTERS and status is not None and "status_before_resend" not in entry:
                # No source documents how these banks answer a resent key: ask status first.
                status = dataclasses.replace(status or StatusPolicy(), before_resend=True)
            exchange = self.connection(entry, at, direction, adapter)
            if (name is not None and adapter is not None and node is not None
                    and direction is not None and endpoint is not None and window is not None
                    and signing is not None and pain001 is not None and front_end is not False
                    and status is not None and exchange is not None and sftp is not False):
                connection, peer_endpoint, request_timeout = exchange
                found[bank_id] = BankConfig(bank_id, name, adapter, node, direction, endpoint,
                                            window, ca, *signing, pain001_version=pain001,
                                            front_end=front_end or None, status=status or None,
                                            connection=connection, peer_endpoint=peer_endpoint,
                                            request_timeout=request_timeout, sftp=sftp or None)
        return found

    def pain001_version(self, entry: Mapping[str, Any], at: _Path, adapter: str | None,
                        signing: tuple[str, Path | None] | None) -> str | None:
        """``banks.X.pain001_version``: the pain.001 version an iso20022 bank takes."""
        version = entry.get("pain001_version", "")
        if version == "":
            return ""
        if adapter is not None and adapter != "iso20022":
            self.problem(at + ("pain001_version",), "is only used with adapter = \"iso20022\"")
            return None
        if version not in PAIN001_VERSIONS:
            self.problem(at + ("pain001_version",),
                         f"must be one of {', '.join(map(_show, PAIN001_VERSIONS))}, not {_show(version)}")
            return None
        if version == "pain.001.001.03" and signing is not None and signing[0] != "none":
            # The 2009 version has no SplmtryData, so a signature has nowhere to go.
            self.problem(at + ("pain001_version",),
                         'pain.001.001.03 carries no signature: use signature_alg = "none" or pain.001.001.09')
            return None
        return version

    def front_end(self, entry: Mapping[str, Any], at: _Path,
                  adapter: str | None) -> FrontEndConfig | None | bool:
        """``banks.X.front_end``: required for a front-end adapter, refused for any other; False
        when it has a problem (already reported)."""
        from gateway.http_transport import check_front_end_url

        needs = FRONT_END_ADAPTERS.get(adapter or "")
        if "front_end" not in entry:
            if needs is not None:
                self.problem(at + ("front_end",), f"is required for adapter {_show(adapter)}")
                return False
            return None
        table = entry["front_end"]
        at = at + ("front_end",)
        if needs is None:
            if adapter is not None:
                self.problem(at, f"is only used with adapters {', '.join(FRONT_END_ADAPTERS)}")
            return False
        if not isinstance(table, dict):
            self.problem(at, "must be a table")
            return False
        self.keys(table, at, _FRONT_END_KEYS + needs)
        locals_ = table.get("local_addresses", [])
        if not isinstance(locals_, list) or not all(isinstance(a, str) and a for a in locals_):
            self.problem(at + ("local_addresses",), "must be an array of address strings")
            return False
        values: dict[str, Any] = {}
        good = True
        for key in ("url", "sign_url"):
            if key == "url" or key in needs:
                url = self.string(table, at, key)
                try:
                    schemes = ("tcp",) if adapter == "ccb" else ("http", "https")
                    values[key] = check_front_end_url(url or "", locals_, schemes) if url else None
                except ValueError as e:
                    self.problem(at + (key,), str(e))
                good = good and values.get(key) is not None
        for key in ("termid", "custid", "cusopr", "cis", "cert_id"):
            if key in needs:
                values[key] = self.string(table, at, key, pattern=_CREDENTIAL,
                                          what="must be 1-40 printable ASCII characters")
                good = good and values[key] is not None
        if "password_file" in needs:
            values["password_file"] = self.file_path(table, at, "password_file")
            good = good and values["password_file"] is not None
        timeout = self.seconds(table, at, "timeout", 25.0)
        max_answer = self.integer(table, at, "max_answer", 1024, 64 * 1024 * 1024,
                                  default=4 * 1024 * 1024)
        if not good or timeout is None or max_answer is None:
            return False
        return FrontEndConfig(local_addresses=tuple(locals_), timeout=timeout,
                              max_answer=max_answer, **values)

    def status_policy(self, entry: Mapping[str, Any], at: _Path) -> StatusPolicy | bool | None:
        """A bank's ``status_*`` keys; False when it has none (the [timeouts] values hold), None if bad."""
        if not any(key in entry for key in _STATUS_KEYS):
            return False
        given = {key: self.seconds(entry, at, key, 1.0) if key in entry else None
                 for key in ("status_first_after", "status_interval", "status_max_interval",
                             "status_give_up_after")}
        backoff = entry.get("status_backoff", 1.0)
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) \
                or not math.isfinite(float(backoff)) or not 1.0 <= backoff <= 10.0:
            self.problem(at + ("status_backoff",), f"must be a number from 1 to 10, not {_show(backoff)}")
            return None
        before_resend = entry.get("status_before_resend", False)
        if not isinstance(before_resend, bool):
            self.problem(at + ("status_before_resend",), f"must be true or false, not {_show(before_resend)}")
            return None
        attempts = self.integer(entry, at, "status_attempts", 1, 1000, default=None) \
            if "status_attempts" in entry else None
        if any(given[key] is None for key in given if key in entry) or ("status_attempts" in entry
                                                                          and attempts is None):
            return None
        interval, cap = given["status_interval"], given["status_max_interval"]
        if cap is not None and interval is not None and cap < interval:
            self.problem(at + ("status_max_interval",),
                         f"must not be below status_interval ({interval:g})")
            return None
        return StatusPolicy(given["status_first_after"], interval, float(backoff), cap, attempts,
                            given["status_give_up_after"], before_resend)


    def connection(self, entry: Mapping[str, Any], at: _Path, direction: str | None,
                   adapter: str | None) -> tuple[str, str | None, float] | None:
        """A bank's ``connection``, ``peer_endpoint`` and ``request_timeout``.

        The default is the protocol's deployed model: ``per_request`` for bdc,
        ``persistent`` otherwise.  ``per_request`` needs the other direction's endpoint
        when the gateway listens (it must dial the bank for its own requests); when it
        dials, the listener for the bank's pushes is optional.
        """
        if adapter is None:
            return None  # already reported; which model applies is unknown
        connection = "per_request" if adapter == "bdc" else "persistent"
        if "connection" in entry:
            connection = self.string(entry, at, "connection") or ""
            if connection not in BANK_CONNECTIONS:
                if connection:
                    self.problem(at + ("connection",), f'must be "persistent" or "per_request", '
                                                      f"not {_show(connection)}")
                return None
        peer = None
        if "peer_endpoint" in entry or (connection == "per_request" and direction == "listen"):
            if connection != "per_request":
                self.problem(at + ("peer_endpoint",), 'only for connection = "per_request"')
                return None
            if direction is None:
                return None
            peer = self.endpoint(entry, at, "peer_endpoint", listen=direction == "connect")
            if peer is None:
                return None
        timeout = self.seconds(entry, at, "request_timeout", 60.0)
        if timeout is None:
            return None
        return connection, peer, timeout

    def instruction_signing(self, entry: Mapping[str, Any],
                            at: _Path) -> tuple[str, Path | None] | None:
        """A bank's ``signature_alg`` and ``signing_key``: the key is given exactly when signing."""
        alg = entry.get("signature_alg", "none")
        if alg == "sm2-sm3" and importlib.util.find_spec("gmssl_pyx") is None:
            self.problem(at + ("signature_alg",),
                         "sm2-sm3 needs GmSSL's binding: pip install 'hpf-gateway[sm]'")
            return None
        if alg not in INSTRUCTION_SIGNATURE_ALGS:
            self.problem(at + ("signature_alg",),
                         f"must be one of {', '.join(map(_show, INSTRUCTION_SIGNATURE_ALGS))}, "
                         f"not {_show(alg)}")
            return None
        if alg == "none":
            if "signing_key" in entry:
                self.problem(at + ("signing_key",), 'is only used with a signature_alg other than "none"')
                return None
            return alg, None
        key = self.file_path(entry, at, "signing_key")
        return None if key is None else (alg, key)

    def accounts(self, table: dict[str, Any], centres: Collection[str],
                 banks: Collection[str]) -> dict[str, AccountConfig]:
        found: dict[str, AccountConfig] = {}
        for number, entry in self.entries(table, "accounts", _ACCOUNT_NO,
                                          "must be 1-32 of 0-9 A-Z a-z -"):
            at = ("accounts", number)
            self.keys(entry, at, _ACCOUNT_KEYS)
            bank = self.string(entry, at, "bank")
            if bank is not None and bank not in banks:
                self.problem(at + ("bank",), f"no bank {_show(bank)} in [banks]")
                bank = None
            centre = self.string(entry, at, "centre")
            if centre is not None and centre not in centres:
                self.problem(at + ("centre",), f"no centre {_show(centre)} in [centres]")
                centre = None
            name = self.label(entry, at, "name", _PARTY_NAME_MAX)
            kind = self.string(entry, at, "type")
            if kind is not None and kind not in ACCOUNT_TYPES:
                self.problem(at + ("type",),
                             f"must be one of {', '.join(sorted(ACCOUNT_TYPES))}, not {_show(kind)}")
                kind = None
            bank_code = "" if "bank_code" not in entry else self.string(
                entry, at, "bank_code", pattern=_BANK_CODE, what="must be a 12-digit CNAPS code")
            if (bank is not None and centre is not None and name is not None and kind is not None
                    and bank_code is not None):
                found[number] = AccountConfig(number, bank, centre, name, kind, bank_code)
        return found

    def counterparties(self, table: dict[str, Any]) -> dict[str, CounterpartyConfig]:
        found: dict[str, CounterpartyConfig] = {}
        for account, entry in self.entries(table, "counterparties", _ACCOUNT_NO,
                                           "must be 1-32 of 0-9 A-Z a-z -"):
            at = ("counterparties", account)
            self.keys(entry, at, _COUNTERPARTY_KEYS)
            name = self.label(entry, at, "name", _PARTY_NAME_MAX)
            bank_code = self.string(entry, at, "bank_code", pattern=_BANK_CODE,
                                    what="must be a 12-digit CNAPS code")
            if name is not None and bank_code is not None:
                found[account] = CounterpartyConfig(account, name, bank_code)
        return found

    def entries(self, table: dict[str, Any], section: str, pattern: re.Pattern[str],
                what: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The entries of a registry whose key is well formed and whose value is a table."""
        for key, entry in table.items():
            good_key = pattern.fullmatch(key) is not None
            if not good_key:
                self.problem((section, key), what)
            if not isinstance(entry, dict):
                self.problem((section, key), f"must be a table, not {_show(entry)}")
            elif good_key:
                yield key, entry

    # -- listeners --------------------------------------------------------

    def check_listeners(self) -> None:
        for i, (path, endpoint, bind) in enumerate(self.listeners):
            for earlier_path, _earlier, earlier_bind in self.listeners[:i]:
                if bind.clashes(earlier_bind):
                    self.problem(path, f"{_show(endpoint)} listens on the same address as "
                                       f"{_dotted(earlier_path)}")
                    break

    # -- sections and keys ------------------------------------------------

    def section(self, doc: dict[str, Any], name: str, *,
                required: bool = False) -> dict[str, Any] | None:
        """The table ``[name]``: empty when absent and optional, None (problem recorded) when
        absent and required or not a table, so its keys are not reported missing one by one."""
        value = doc.get(name)
        if value is None:
            if required:
                self.problem((name,), "is required")
                return None
            return {}
        if not isinstance(value, dict):
            self.problem((name,), f"must be a table, not {_show(value)}")
            return None
        return value

    def keys(self, table: Mapping[str, Any], path: _Path, allowed: Sequence[str]) -> None:
        """Report every key of ``table`` not in ``allowed``, suggesting the nearest one."""
        for key in table:
            if key in allowed:
                continue
            near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean {_show(near[0])}?" if near else f"known keys: {', '.join(allowed)}"
            self.problem(path + (key,), f"unknown key ({hint})")

    def present(self, table: Mapping[str, Any], path: _Path, key: str, default: Any) -> bool:
        """Whether ``key`` is there; records "is required" when it is not and has no default."""
        if key in table:
            return True
        if default is _REQUIRED:
            self.problem(path + (key,), "is required")
        return False

    # -- values -----------------------------------------------------------

    def string(self, table: Mapping[str, Any], path: _Path, key: str, *,
               pattern: re.Pattern[str] | None = None, what: str = "") -> str | None:
        """A required non-empty string, matching ``pattern`` when one is given."""
        if not self.present(table, path, key, _REQUIRED):
            return None
        value = table[key]
        if not isinstance(value, str):
            self.problem(path + (key,), f"must be a string, not {_show(value)}")
            return None
        if not value:
            self.problem(path + (key,), "must not be empty")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(path + (key,), f"{what or 'has a bad format'}, not {_show(value)}")
            return None
        return value

    def label(self, table: Mapping[str, Any], path: _Path, key: str, max_len: int) -> str | None:
        """A required human-readable name: not blank, no control characters, at most ``max_len``."""
        value = self.string(table, path, key)
        if value is None:
            return None
        if not value.strip():
            self.problem(path + (key,), "must not be blank")
        elif len(value) > max_len:
            self.problem(path + (key,), f"longer than {max_len} characters")
        elif any(_is_control(c) for c in value):
            self.problem(path + (key,), "contains control characters")
        elif deceptive_character(value) is not None:
            self.problem(path + (key,), str(deceptive_character(value)))
        else:
            return value
        return None

    def integer(self, table: Mapping[str, Any], path: _Path, key: str, low: int,
                high: int | None, *, default: Any = _REQUIRED) -> int | None:
        """An integer in ``low..high`` (no upper bound when ``high`` is None); never a bool."""
        if not self.present(table, path, key, default):
            return None if default is _REQUIRED else int(default)
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path + (key,), f"must be an integer, not {_show(value)}")
            return None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            self.problem(path + (key,), f"must be {bounds}, not {value}")
            return None
        return value

    def seconds(self, table: Mapping[str, Any], path: _Path, key: str,
                default: float) -> float | None:
        """A finite number of seconds > 0; a TOML integer is fine, a bool never is."""
        if not self.present(table, path, key, default):
            return float(default)
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(path + (key,), f"must be a number of seconds, not {_show(value)}")
            return None
        seconds = float(value)
        if not math.isfinite(seconds) or seconds <= 0:
            self.problem(path + (key,), f"must be a finite number greater than 0, not {_show(value)}")
            return None
        return seconds

    def rate(self, table: Mapping[str, Any], path: _Path, key: str, default: float) -> float | None:
        """A finite number of events per second > 0; a TOML integer is fine, a bool never is."""
        if not self.present(table, path, key, default):
            return float(default)
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(float(value)) or value <= 0:
            self.problem(path + (key,), f"must be a finite number per second greater than 0, not {_show(value)}")
            return None
        return float(value)

    def amount(self, table: Mapping[str, Any], path: _Path, key: str, default: int) -> int | None:
        """A CNY amount written as a string (``"1000000.00"``), in fen."""
        if not self.present(table, path, key, default):
            return default
        try:
            return parse_amount(table[key])
        except ValueError as e:
            self.problem(path + (key,), str(e))
            return None

    def file_path(self, table: Mapping[str, Any], path: _Path, key: str, *,
                  default: Any = _REQUIRED) -> Path | None:
        """A file path, resolved against the config's directory; it must exist if checked."""
        if not self.present(table, path, key, default):
            return None
        value = table[key]
        if not isinstance(value, str):
            self.problem(path + (key,), f"must be a path string, not {_show(value)}")
            return None
        if not value or "\0" in value:
            self.problem(path + (key,), "must be a non-empty path without NUL characters")
            return None
        # An absolute value replaces the base.  Under systemd's LoadCredential= a
        # file of the same name in $CREDENTIALS_DIRECTORY is used instead.
        resolved = resolve_credential(self.base / value)
        if self.check_files:
            try:
                if not resolved.exists():
                    self.problem(path + (key,), f"no such file: {resolved}")
                elif not resolved.is_file():
                    self.problem(path + (key,), f"not a regular file: {resolved}")
            except PermissionError:
                self.problem(path + (key,), f"not readable by this user: {resolved}")
        return resolved

    def file_list(self, table: Mapping[str, Any], path: _Path, key: str) -> tuple[Path, ...] | None:
        """An optional array of file paths, each resolved and checked like :meth:`file_path`."""
        if key not in table:
            return ()
        value = table[key]
        if not isinstance(value, list):
            self.problem(path + (key,), f"must be an array of path strings, not {_show(value)}")
            return None
        found: list[Path] = []
        good = True
        for i, item in enumerate(value):
            resolved = self.file_path({str(i): item}, path + (key,), str(i))
            if resolved is None:
                good = False
            elif resolved not in found:
                found.append(resolved)
        return tuple(found) if good else None

    def database(self, table: Mapping[str, Any], path: _Path, key: str) -> str | None:
        """A SQLAlchemy URL: SQLite (relative paths against the config dir) or psycopg PostgreSQL."""
        url = self.string(table, path, key)
        if url is None:
            return None
        if url.startswith("postgresql+psycopg://"):
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(url)
            except (ArgumentError, ValueError) as e:
                self.problem(path + (key,), f"not a valid PostgreSQL URL: {e}")
                return None
            return url
        if url == "sqlite://":
            return url  # in memory
        if url.startswith("sqlite:///"):
            file, query_mark, query = url[len("sqlite:///"):].partition("?")
            if file in ("", ":memory:") or file.startswith("/"):
                return url  # in memory, or already absolute (sqlite:////abs/path.db)
            return f"sqlite:///{self.base / file}{query_mark}{query}"
        if url.startswith("sqlite:"):
            self.problem(path + (key,), "a SQLite URL is sqlite:///relative/path.db (to this file's "
                                        "directory), sqlite:////absolute/path.db or sqlite:// "
                                        f"(in memory), not {_show(url)}")
            return None
        self.problem(path + (key,), 'must be a "sqlite:///..." or "postgresql+psycopg://..." URL, '
                                    f"not {_show(url)}")
        return None

    def endpoint(self, table: Mapping[str, Any], path: _Path, key: str, *,
                 listen: bool) -> str | None:
        """A Twisted endpoint string: a server one when ``listen``, else a client one.

        Listeners are also recorded so that collisions can be reported.
        """
        value = self.string(table, path, key)
        if value is None:
            return None
        at = path + (key,)
        try:
            args, kwargs = _split_endpoint(value)
        except ValueError as e:
            self.problem(at, str(e))
            return None
        kind = args.pop(0)
        if kind in ("ssl", "tls"):
            self.problem(at, f"{kind}: endpoints are refused: {_NO_TLS_ENDPOINT}")
            return None
        known = _LISTEN_TYPES if listen else _CONNECT_TYPES
        if kind not in known:
            role = "listening" if listen else "connecting"
            self.problem(at, f"unknown {role} endpoint type {_show(kind)} "
                             f"(known: {', '.join(t + ':' for t in known)})")
            return None
        try:
            bind = _check_listener(kind, args, kwargs) if listen else None
            if not listen:
                _check_connector(kind, args, kwargs)
            if kind != "systemd":
                _twisted_accepts(value, server=listen)
        except ValueError as e:
            self.problem(at, f"not a valid {kind}: endpoint: {e}")
            return None
        if bind is not None:
            self.listeners.append((at, value, bind))
        return value


# -- endpoint strings ----------------------------------------------------------


def endpoint_interface(description: str) -> str | None:
    """The address a (valid) tcp:/tcp6: server endpoint binds ("" for every interface); None for others."""
    args, kwargs = _split_endpoint(description)
    kind = args.pop(0)
    if kind not in ("tcp", "tcp6"):
        return None
    return _positional(args, kwargs, ("port",)).get("interface", "")


def _loopback_endpoint(description: str) -> bool:
    """Whether a (valid) server endpoint string listens on loopback only (a unix: socket counts)."""
    kind = _split_endpoint(description)[0][0]
    if kind == "unix":
        return True
    if kind == "systemd":
        return _split_endpoint(description)[1].get("domain") == "UNIX"
    interface = endpoint_interface(description)
    try:
        return bool(interface) and ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def _split_endpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """Split like ``twisted.internet.endpoints._parse``: ``type:arg:key=value``.

    ``:`` separates fields, the first ``=`` in a field makes it a keyword, and
    a backslash takes the next character literally.
    """
    fields: list[list[str]] = []
    parts: list[str] = []
    current = ""
    chars = iter(description)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt is None:
                raise ValueError("ends with a lone backslash")
            current += nxt
        elif ch == ":":
            fields.append(parts + [current])
            parts, current = [], ""
        elif ch == "=" and not parts:
            parts, current = [current], ""
        else:
            current += ch
    fields.append(parts + [current])
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for field in fields:
        if len(field) == 1:
            args.append(field[0])
        elif field[0] in kwargs:
            raise ValueError(f"{field[0]}= given twice")
        else:
            kwargs[field[0]] = field[1]
    if not args or not args[0]:
        raise ValueError("must start with an endpoint type such as tcp:")
    return args, kwargs


def _int_field(text: str, name: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", text) or not low <= int(text) <= high:
        raise ValueError(f"{name} must be a number from {low} to {high}, not {text!r}")
    return int(text)


def _only(kwargs: Mapping[str, str], allowed: Collection[str]) -> None:
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]}= (known: {', '.join(sorted(allowed))})")


def _positional(args: list[str], kwargs: dict[str, str], names: Sequence[str]) -> dict[str, str]:
    """Merge positional fields into keywords in ``names`` order, as Twisted's parsers do."""
    if len(args) > len(names):
        raise ValueError(f"too many fields (expected {', '.join(names)})")
    merged = dict(kwargs)
    for name, value in zip(names, args):
        if name in merged:
            raise ValueError(f"{name} given twice")
        merged[name] = value
    return merged


def _check_listener(kind: str, args: list[str], kwargs: dict[str, str]) -> _Bind:
    """Validate a server endpoint's fields; where it binds.  Raises ``ValueError``."""
    if kind == "systemd":
        if args:
            raise ValueError("takes only domain= and index= or name=")
        _only(kwargs, ("domain", "index", "name"))
        if kwargs.get("domain") not in ("INET", "INET6", "UNIX"):
            raise ValueError("domain= must be INET, INET6 or UNIX")
        if ("index" in kwargs) == ("name" in kwargs):
            raise ValueError("give exactly one of index= or name=")
        if "index" in kwargs:
            _int_field(kwargs["index"], "index", 0, 1023)
            return _Bind("systemd", "index=" + kwargs["index"])
        return _Bind("systemd", "name=" + kwargs["name"])
    if kind == "unix":
        fields = _positional(args, kwargs, ("address",))
        _only(fields, ("address", "mode", "backlog", "lockfile"))
        if not fields.get("address"):
            raise ValueError("needs a socket path")
        if "mode" in fields and not re.fullmatch(r"[0-7]{1,4}", fields["mode"]):
            raise ValueError(f"mode must be octal such as 660, not {fields['mode']!r}")
        if "backlog" in fields:
            _int_field(fields["backlog"], "backlog", 1, 65535)
        if fields.get("lockfile", "1") not in ("0", "1"):
            raise ValueError("lockfile must be 0 or 1")
        bind = _Bind("unix", fields["address"])
    else:  # tcp, tcp6
        fields = _positional(args, kwargs, ("port",))
        _only(fields, ("port", "interface", "backlog"))
        if "port" not in fields:
            raise ValueError("needs a port")
        port = _int_field(fields["port"], "port", 0, 65535)
        if "backlog" in fields:
            _int_field(fields["backlog"], "backlog", 1, 65535)
        interface = fields.get("interface", "::" if kind == "tcp6" else "")
        if interface:
            try:
                ipaddress.ip_address(interface)
            except ValueError:
                # Twisted would only fail at listen time, long after check-config said yes.
                raise ValueError(f"interface must be an IP address (escape IPv6 colons as "
                                 f"\\:), not {interface!r}") from None
        bind = _Bind("ip", interface, port)
    return bind


def _check_connector(kind: str, args: list[str], kwargs: dict[str, str]) -> None:
    """Validate a client endpoint's fields.  Raises ``ValueError``."""
    if kind == "unix":
        fields = _positional(args, kwargs, ("path",))
        _only(fields, ("path", "lockfile", "timeout"))
        if not fields.get("path"):
            raise ValueError("needs a socket path")
        if fields.get("lockfile", "0") not in ("0", "1"):
            raise ValueError("lockfile must be 0 or 1")
    else:  # tcp
        fields = _positional(args, kwargs, ("host", "port"))
        _only(fields, ("host", "port", "timeout", "bindAddress"))
        if not fields.get("host"):
            raise ValueError("needs a host (tcp:HOST:PORT)")
        if "port" not in fields:
            raise ValueError("needs a port (tcp:HOST:PORT)")
        _int_field(fields["port"], "port", 1, 65535)
    if "timeout" in fields:
        _int_field(fields["timeout"], "timeout", 1, 3600)


def _twisted_accepts(description: str, *, server: bool) -> None:
    """Let Twisted itself build the endpoint (no I/O happens) so nothing it refuses gets past.

    Called only for kinds whose fields were checked above; systemd endpoints
    are not built here because Twisted looks the inherited descriptor up while
    parsing, and config is checked outside systemd too.  A memory reactor
    stands in: checking config must not install the global reactor.
    """
    from twisted.internet.endpoints import clientFromString, serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        if server:
            serverFromString(MemoryReactor(), description)
        else:
            clientFromString(MemoryReactor(), description)
    except Exception as e:  # Twisted reports bad fields with assorted exception types
        raise ValueError(f"Twisted refuses it: {e}") from e


# -- small helpers ---------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(path: Sequence[str]) -> str:
    """A key path as TOML would write it: ``banks.B001.window``, quoting odd keys."""
    return ".".join(_toml_key(part) for part in path)


# -- ISO 20022 files over SFTP: banks.X.channel = "sftp" and its [banks.X.sftp] table ----------
# (docs/protocols/iso20022.md, "Files over SFTP"; gateway/sftp_link.py runs it)

BANK_CHANNELS = ("link", "sftp")
"""Values of ``banks.X.channel``: the adapter's own link (default) or ISO 20022 files over SFTP."""
SFTP_AFTER_COLLECT = ("keep", "delete", "move")
"""Values of ``banks.X.sftp.after_collect``: what happens to an inbound file once processed."""
_SFTP_KEYS = ("host", "port", "local_addresses", "user", "private_key", "known_hosts", "outbound",
              "inbound", "poll_interval", "after_collect", "collected", "timeout", "max_file")
_SFTP_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_SFTP_DIR = re.compile(r"/?[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?|\.|/")


@dataclass(frozen=True)
class SftpChannelConfig:
    """A bank reached by ISO 20022 files on its SFTP server (``banks.X.sftp``).

    The gateway logs in as ``user`` with ``private_key`` (mode 0600), accepts the server only
    with a host key that ``known_hosts`` gives for ``host`` (``[host]:port`` off port 22),
    puts pain.001 files into ``outbound`` and collects the bank's files from ``inbound``
    every ``poll_interval`` seconds; a processed file is kept (and remembered), deleted, or
    moved into ``collected`` (``after_collect``).
    """

    host: str
    port: int
    user: str
    private_key: Path
    known_hosts: Path
    outbound: str
    inbound: str
    poll_interval: float = 60.0
    after_collect: str = "keep"
    collected: str = ""
    local_addresses: tuple[str, ...] = ()
    timeout: float = 30.0
    max_file: int = 16 * 1024 * 1024

    @property
    def endpoint(self) -> str:
        """The server as a Twisted client endpoint string (what ``banks.X.endpoint`` shows)."""
        return f"tcp:{self.host.replace(':', chr(92) + ':')}:{self.port}"


def sftp_channel(c: "_Checker", entry: Mapping[str, Any], at: _Path,
                 adapter: str | None) -> SftpChannelConfig | None | bool:
    """``banks.X.channel`` and ``banks.X.sftp``: None for a bank on its adapter's link, the
    SFTP settings for ``channel = "sftp"``, False when there is a problem (reported)."""
    from gateway.http_transport import check_local_host

    channel = entry.get("channel", "link")
    if channel not in BANK_CHANNELS:
        c.problem(at + ("channel",), f"must be one of {', '.join(map(_show, BANK_CHANNELS))}, "
                                     f"not {_show(channel)}")
        return False
    if channel == "link":
        if "sftp" in entry:
            c.problem(at + ("sftp",), 'is only used with channel = "sftp"')
            return False
        return None
    good = True
    if adapter is not None and adapter != "iso20022":
        c.problem(at + ("channel",), '"sftp" carries ISO 20022 files: it needs adapter = "iso20022"')
        good = False
    for key in ("direction", "endpoint", "connection", "peer_endpoint", "front_end"):
        if key in entry:
            c.problem(at + (key,), 'is not used with channel = "sftp" (the sftp table names the server)')
            good = False
    table = entry.get("sftp")
    at = at + ("sftp",)
    if not isinstance(table, dict):
        c.problem(at, 'is required for channel = "sftp" (a table)' if table is None else "must be a table")
        return False
    c.keys(table, at, _SFTP_KEYS)
    locals_ = table.get("local_addresses", [])
    if not isinstance(locals_, list) or not all(isinstance(a, str) and a for a in locals_):
        c.problem(at + ("local_addresses",), "must be an array of address strings")
        return False
    host = c.string(table, at, "host")
    if host is not None:
        try:
            check_local_host(host, locals_, "SFTP server")
        except ValueError as e:
            c.problem(at + ("host",), str(e))
            host = None
    port = c.integer(table, at, "port", 1, 65535, default=22)
    user = c.string(table, at, "user", pattern=_SFTP_USER, what="must be 1-64 of A-Z a-z 0-9 . _ -")
    private_key = c.file_path(table, at, "private_key")
    known_hosts = c.file_path(table, at, "known_hosts")
    dirs = {key: c.string(table, at, key, pattern=_SFTP_DIR,
                          what="must be a directory path of A-Z a-z 0-9 . _ - and / (no ..)")
            for key in ("outbound", "inbound")}
    after = table.get("after_collect", "keep")
    collected = ""
    if after not in SFTP_AFTER_COLLECT:
        c.problem(at + ("after_collect",), f"must be one of {', '.join(map(_show, SFTP_AFTER_COLLECT))}, "
                                           f"not {_show(after)}")
        good = False
    elif after == "move":
        collected = c.string(table, at, "collected", pattern=_SFTP_DIR,
                             what="must be a directory path of A-Z a-z 0-9 . _ - and / (no ..)") or ""
        good = good and bool(collected)
    elif "collected" in table:
        c.problem(at + ("collected",), 'is only used with after_collect = "move"')
        good = False
    for key, value in (*dirs.items(), ("collected", collected)):
        if value and ".." in value.split("/"):
            c.problem(at + (key,), "must not climb out with ..")
            good = False
    if dirs["outbound"] is not None and dirs["outbound"] == dirs["inbound"]:
        c.problem(at + ("inbound",), "must not be the outbound directory (our own files would be read back)")
        good = False
    poll = c.seconds(table, at, "poll_interval", 60.0)
    timeout = c.seconds(table, at, "timeout", 30.0)
    max_file = c.integer(table, at, "max_file", 1024, 256 * 1024 * 1024, default=16 * 1024 * 1024)
    if known_hosts is not None and host is not None and port is not None and c.check_files \
            and known_hosts.is_file():
        from gateway.sftp import SftpError, pinned_host_keys

        try:
            pinned_host_keys(known_hosts, host, port)
        except SftpError as e:
            c.problem(at + ("known_hosts",), str(e))
            good = False
    values = (host, port, user, private_key, known_hosts, *dirs.values(), poll, timeout, max_file)
    if not good or any(v is None for v in values):
        return False
    return SftpChannelConfig(host, port, user, private_key, known_hosts, dirs["outbound"] or "",
                             dirs["inbound"] or "", poll or 60.0, after, collected, tuple(locals_),
                             timeout or 30.0, max_file or 0)


def _show(value: Any) -> str:
    """A value for an error message: as TOML would write it, shortened; tables only by kind."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    try:
        text = _toml_value(value, inline_tables=True)
    except (TypeError, ValueError):
        return f"a {type(value).__name__}"  # dates and times: TOML has them, we use none
    return text if len(text) <= 60 else text[:57] + "..."


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code <= 0xDFFF


# -- writing TOML ---------------------------------------------------------------

_INT64 = (-(2**63), 2**63 - 1)
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def render_toml(data: Mapping[str, Any], *,
                inline: Collection[str] = ("accounts", "counterparties")) -> str:
    """Write ``data`` as a TOML document that ``tomllib.loads`` reads back equal.

    Supports nested tables, strings (any Unicode text but lone surrogates;
    Chinese is written as is), ints (64-bit), floats (``inf``/``nan``
    included), bools and arrays of those.  A mapping inside a table becomes a
    ``[dotted.header]`` section, except inside the tables named in ``inline``
    (dotted names from the top, default ``accounts`` and ``counterparties``),
    whose entries are written one per line as inline tables.  Raises
    ``TypeError`` for values TOML cannot hold here (``None``, non-string keys,
    other types) and ``ValueError`` for ints out of range or lone surrogates.
    """
    inline_paths = {tuple(name.split(".")) for name in inline}
    lines: list[str] = []
    _render_table(lines, (), data, inline_paths)
    return "\n".join(lines).strip("\n") + "\n"


def _render_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any],
                  inline_paths: set[tuple[str, ...]]) -> None:
    for key in table:
        if not isinstance(key, str):
            raise TypeError(f"TOML keys are strings, not {type(key).__name__}: {key!r}")
    inline_here = path in inline_paths
    # Plain key/value lines must come before any sub-table header, or TOML
    # would put them in the sub-table.
    values = [(k, v) for k, v in table.items() if inline_here or not isinstance(v, Mapping)]
    subtables = [(k, v) for k, v in table.items() if not inline_here and isinstance(v, Mapping)]
    # A table with only sub-tables is created implicitly by their headers;
    # an empty one needs its own header to exist at all.
    if path and (values or not subtables):
        lines.append("")
        lines.append(f"[{_dotted(path)}]")
    for key, value in values:
        lines.append(f"{_toml_key(key)} = {_toml_value(value, inline_tables=True)}")
    for key, value in subtables:
        _render_table(lines, path + (key,), value, inline_paths)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        escaped = _ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            raise ValueError("a lone surrogate cannot be written as TOML (UTF-8) text")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any, *, inline_tables: bool) -> str:
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"TOML integers are 64-bit; {value} is out of range")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-tripping form, always with "." or "e"
    if isinstance(value, Mapping) and inline_tables:
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"TOML keys are strings, not {type(key).__name__}: {key!r}")
        if not value:
            return "{}"
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v, inline_tables=True)}"
                          for k, v in value.items())
        return "{ " + items + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, inline_tables=True) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} as TOML")
