"""``[listen]`` and ``[operators]``: the centre API and ops listeners, and who may operate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config._base import _IDENTITY_NAME, Checker
from gateway.config.endpoints import _loopback_endpoint
from gateway.config.toml import _show

_LISTEN_KEYS = ("centre_api", "ops", "ops_tls", "centre_bdc")
_OPERATOR_KEYS = ("token_file", "ca")


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


class ListenSection(Checker):
    """The checks of ``[listen]`` and ``[operators]`` (a part of the config checker)."""

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
