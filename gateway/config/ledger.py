"""``[ledger]``: where the gateway files its signed copies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config._base import _IDENTITY_NAME, Checker
from gateway.config.toml import _show

_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.\-]+:[0-9]{1,5}")
_LEDGER_KEYS = ("url", "name", "ca", "signing_key", "signature_alg", "batch")


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


class LedgerSection(Checker):
    """The checks of ``[ledger]`` (a part of the config checker)."""

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
