"""Every party's trust is its own: a console user's certificate must chain to that user's anchor.

The console's listener trusts the union of the supervisors' and staff's
bundles (TLS needs one set), so the handshake alone would let a certificate
from one party's CA claim another party's name.  Here the chain the handshake
verified must contain a certificate of the bundle configured for the very
party it names (``ca`` of its entry, or ``tls.ca``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from cryptography.hazmat.primitives import hashes

from gateway.ledger.config import LedgerConfig
from gateway.tls import load_certificates

__all__ = ["party_anchors", "verified_chain", "chain_is_anchored"]


def _fingerprints(path: Path) -> frozenset[bytes]:
    return frozenset(c.fingerprint(hashes.SHA256()) for c in load_certificates(path))


def party_anchors(config: LedgerConfig) -> dict[str, frozenset[bytes]]:
    """The SHA-256 fingerprints of each console user's trust anchors, by ``hpf://`` URI."""
    assert config.console is not None
    cache: dict[Path, frozenset[bytes]] = {}

    def of(path: Path) -> frozenset[bytes]:
        if path not in cache:
            cache[path] = _fingerprints(path)
        return cache[path]

    out = {f"hpf://supervisor/{name}": of(s.ca or config.tls.ca) for name, s in config.supervisors.items()}
    out.update({f"hpf://staff/{name}": of(s.ca or config.tls.ca) for name, s in config.console.staff.items()})
    return out


def verified_chain(transport: Any) -> list[bytes]:
    """The fingerprints of the chain the TLS handshake verified for the peer (leaf first); [] if none."""
    for candidate in (transport, getattr(transport, "transport", None)):
        conn = getattr(candidate, "_tlsConnection", None)
        if conn is not None:
            chain = conn.get_verified_chain() or []
            return [c.to_cryptography().fingerprint(hashes.SHA256()) for c in chain]
    return []


def chain_is_anchored(uri: str, chain: list[bytes], anchors: Mapping[str, frozenset[bytes]]) -> bool:
    """Whether the verified ``chain`` contains one of the anchors configured for ``uri``."""
    mine = anchors.get(uri)
    return bool(mine) and any(fp in mine for fp in chain)
