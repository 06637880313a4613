"""``[banks]``: each commissioned bank's link, protocol, window, signing and status policy."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.base import iter_adapter_names
from gateway.config._base import _LABEL_MAX, _NODE, Checker, _Path
from gateway.config.sftp import SftpChannelConfig, sftp_channel
from gateway.config.toml import _dotted, _show

FRONT_END_ADAPTERS: dict[str, tuple[str, ...]] = {
    "bocb2e": ("termid", "custid", "cusopr", "password_file"),
    "icbc": ("cis", "cert_id", "sign_url"),
    "ccb": ("custid", "cusopr", "password_file"),   # url tcp://HOST:PORT (WLPT: a <TX> per connection)
}
"""Adapters reached through a front-end, with the credential keys each needs."""

_FRONT_END_KEYS = ("url", "local_addresses", "timeout", "max_answer")
_BANK_ID = re.compile(r"[A-Z0-9]{1,16}")
_CREDENTIAL = re.compile(r"[!-~]{1,40}")
_BANK_KEYS = ("name", "adapter", "node", "direction", "endpoint", "window", "ca", "signature_alg",
              "signing_key", "pain001_version", "front_end", "connection", "peer_endpoint",
              "request_timeout", "channel", "sftp")
PAIN001_VERSIONS = ("pain.001.001.09", "pain.001.001.03")
"""Values of ``banks.X.pain001_version`` (iso20022 banks only)."""

_FRONT_END_UNUSED = {
    "signature_alg": "the front-end signs with the bank's own certificate; the protocol has no "
                     "place for the gateway's instruction signature",
    "signing_key": "the front-end signs with the bank's own certificate",
    "connection": "a front-end is always asked one request at a time (front_end.url)",
    "peer_endpoint": "the front-end pushes nothing: there is no bank connection to take",
    "request_timeout": "a front-end's requests are bounded by front_end.timeout",
}
"""Bank keys a front-end adapter has no use for, each with why: refused, never silently dropped."""

_STATUS_KEYS = ("status_first_after", "status_interval", "status_backoff", "status_max_interval",
                "status_attempts", "status_give_up_after", "status_before_resend")
BANK_CONNECTIONS = ("persistent", "per_request")
INSTRUCTION_SIGNATURE_ALGS = ("none", "ed25519", "ecdsa-p256-sha256", "sm2-sm3")
"""Values of ``banks.X.signature_alg`` ("sm2-sm3" needs the ``sm`` extra: GmSSL's binding)."""


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
    sftp: SftpChannelConfig | None = None  # channel = "sftp": ISO 20022 files (see below)

    @property
    def listens(self) -> bool:
        """True when the bank dials in and the gateway listens for it."""
        return self.direction == "listen"


class BanksSection(Checker):
    """The checks of ``[banks]`` (a part of the config checker)."""

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
            meaningful = adapter not in FRONT_END_ADAPTERS or self.front_end_keys(entry, at, adapter)
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
                    and status is not None and exchange is not None and sftp is not False
                    and meaningful):
                connection, peer_endpoint, request_timeout = exchange
                found[bank_id] = BankConfig(bank_id, name, adapter, node, direction, endpoint,
                                            window, ca, *signing, pain001_version=pain001,
                                            front_end=front_end or None, status=status or None,
                                            connection=connection, peer_endpoint=peer_endpoint,
                                            request_timeout=request_timeout, sftp=sftp or None)
        return found

    def front_end_keys(self, entry: Mapping[str, Any], at: _Path, adapter: str) -> bool:
        """Whether a front-end bank's entry is free of keys its protocol has no meaning for
        (:data:`_FRONT_END_UNUSED`; ``signature_alg = "none"`` says nothing and passes), each
        one found reported with the bank, the adapter and why."""
        clean = True
        for key, why in _FRONT_END_UNUSED.items():
            if key not in entry or (key == "signature_alg" and entry[key] == "none"):
                continue
            self.problem(at + (key,), f"means nothing for bank {at[-1]} (adapter {_show(adapter)}): "
                                      f"{why}; remove it")
            clean = False
        if entry.get("direction", "connect") != "connect":
            self.problem(at + ("direction",), f"must be \"connect\" for bank {at[-1]} (adapter "
                                              f"{_show(adapter)}): the gateway posts to its front-end")
            clean = False
        return clean

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
