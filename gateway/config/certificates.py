"""``[tls]``: the daemon's own certificate, key, CA bundle and CRLs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config._base import Checker

_TLS_KEYS = ("certificate", "private_key", "ca", "crls")


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


class TlsSection(Checker):
    """The checks of ``[tls]`` (a part of the config checker)."""

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
