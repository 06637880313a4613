"""The supervision console: the web UI of the ledger for supervisors and centre staff.

:func:`console_listener` is the one place it is wired into the ledger (see
``gateway.ledger.service.makeLedgerService``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from gateway.tls import PartyAnchors

if TYPE_CHECKING:
    from gateway.ledger.config import LedgerConfig, PublicSigningKey
    from gateway.ledger.engine import MatchEngine
    from gateway.ledger.metrics import LedgerMetrics
    from gateway.ledger.store import LedgerDatabase

__all__ = ["console_trust", "console_listener"]


def console_trust(config: LedgerConfig) -> PartyAnchors:
    """Every party that may use the console, each trusted through its own bundle (tls.ca where it has none):
    the handshake refuses a certificate whose chain does not end at the anchor of the party it names."""
    assert config.console is not None
    tls = config.tls
    parties = {("supervisor", n): [s.ca or tls.ca] for n, s in config.supervisors.items()}
    parties.update({("staff", n): [s.ca or tls.ca] for n, s in config.console.staff.items()})
    return PartyAnchors(parties, default=[tls.ca])


def console_listener(config: LedgerConfig, db: LedgerDatabase, engine: MatchEngine,
                     keys: Mapping[str, tuple[str, PublicSigningKey]], metrics: LedgerMetrics,
                     parent: Any) -> tuple[Any, Any]:
    """The console (its overdue watch started with ``parent``) and its resource, for the ledger's guarded site."""
    from gateway.ledger.console.app import ConsoleResource
    from gateway.ledger.console.overdue import OverdueWatch
    from gateway.ledger.console.state import Console

    console = Console(config, db, engine, keys, metrics)
    OverdueWatch(console).setServiceParent(parent)
    return console, ConsoleResource(console)
