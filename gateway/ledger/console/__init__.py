"""The supervision console: the web UI of the ledger for supervisors and centre staff.

:func:`console_listener` is the one place it is wired into the ledger (see
``gateway.ledger.service.makeLedgerService``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from gateway.ledger.config import LedgerConfig, PublicSigningKey
    from gateway.ledger.service import LedgerMetrics, MatchEngine
    from gateway.ledger.store import LedgerDatabase

__all__ = ["console_trust", "console_listener"]


def console_trust(config: LedgerConfig) -> list[Any]:
    """The trust bundles of every party that may use the console: supervisors' and staff's, and tls.ca."""
    assert config.console is not None
    tls = config.tls
    return sorted({s.ca or tls.ca for s in config.supervisors.values()}
                  | {s.ca or tls.ca for s in config.console.staff.values()} | {tls.ca})


def console_listener(config: LedgerConfig, db: LedgerDatabase, engine: MatchEngine,
                     keys: Mapping[str, tuple[str, PublicSigningKey]], metrics: LedgerMetrics,
                     parent: Any) -> tuple[Any, Any]:
    """The console (its overdue watch started with ``parent``) and its HTTP site."""
    from gateway.ledger.console.app import Console, OverdueWatch, make_console_site

    console = Console(config, db, engine, keys, metrics)
    OverdueWatch(console).setServiceParent(parent)
    return console, make_console_site(console)
