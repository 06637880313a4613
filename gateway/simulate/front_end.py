"""``hpf-gateway simulate bank`` for a bank reached through its front-end (bocb2e, icbc, ccb).

:func:`front_end_service` serves the simulator of the bank's front-end where the gateway's
config says the front-end is (``banks.X.front_end.url``, and ICBC's ``sign_url``), with every
registered account of the bank opened at ``balance_fen``.  The credentials are the config's
(the operator's password read from ``password_file``).  The service's ``link.stats()`` gives
what the demo checks of every simulated bank: transfers executed, resent keys answered, and
executions per reference.  These simulators commit no offences on purpose (the ledger's
fault demo uses the bdc and ISO 20022 banks for those).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString

from gateway.config import GatewayConfig
from gateway.listener import listening_service

__all__ = ["FrontEndStats", "front_end_service"]


class FrontEndStats:
    """``stats()`` of a simulated front-end, in the shape the demo reads of every simulated bank."""

    def __init__(self, simulator: Any) -> None:
        self.simulator = simulator

    def stats(self) -> dict[str, Any]:
        executions: Counter[str] = self.simulator.executed_refs
        held = getattr(self.simulator, "transfers", None)
        held = held if held is not None else self.simulator.payments
        return {"link": {"frames_in.Instruction": len(held) + self.simulator.duplicates},
                "executed": sum(executions.values()), "duplicates": self.simulator.duplicates,
                "executions": dict(executions), "executions_by_reference": dict(executions),
                "max_executions_per_reference": max(executions.values(), default=0),
                "balances": dict(self.simulator.balances), "faults": {"committed": {}}}


def _write_json(path: Path, data: Any) -> None:
    """``data`` as JSON at ``path``, whole or not at all (a reader never sees half a file)."""
    import json
    import os

    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(partial, path)


def _listen(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    return f"tcp:{parts.port or 80}:interface={host.replace(':', chr(92) + ':')}"


def _serve(container: MultiService, reactor: Any, url: str, factory: Any, name: str) -> None:
    service = listening_service(serverFromString(reactor, _listen(url)), factory)
    service.setName(name)
    service.setServiceParent(container)


def front_end_service(reactor: Any, config: GatewayConfig, bank_id: str, *, balance_fen: int,
                      polls_before_final: int = 1, now: Callable[[], Any] | None = None,
                      stats_path: Path | None = None) -> MultiService:
    """The simulated front-end of ``bank_id`` (see the module docstring)."""
    from adapters.bocb2e.adapter import china_now

    bank = config.banks[bank_id]
    front = bank.front_end
    if front is None:
        raise ValueError(f"bank {bank_id} has no front_end in the config")
    clock = now or china_now
    balances = {n: balance_fen for n, a in config.accounts.items() if a.bank == bank_id}
    container = MultiService()
    container.setName(f"front-end-{bank_id}")
    if bank.adapter == "bocb2e":
        from gateway.simulate.bocb2e import BocFrontEnd, make_site

        simulator: Any = BocFrontEnd(front.custid, front.cusopr, front.password(), balances,
                                     polls_before_final=polls_before_final)
        _serve(container, reactor, front.url, make_site(simulator, clock), "bocb2e")
    elif bank.adapter == "icbc":
        from gateway.simulate.icbc import NcFrontEnd, make_sites

        simulator = NcFrontEnd(front.cis, front.cert_id, balances, polls_before_final=polls_before_final)
        trade, sign = make_sites(simulator, clock)
        _serve(container, reactor, front.url, trade, "nc-trading")
        _serve(container, reactor, front.sign_url, sign, "nc-signing")
    elif bank.adapter == "ccb":
        from gateway.simulate.ccb import WlptClient, WlptFactory

        simulator = WlptClient(front.custid, front.cusopr, front.password(), balances,
                               polls_before_final=polls_before_final)
        _serve(container, reactor, front.url, WlptFactory(simulator, clock), "wlpt")
    else:
        raise ValueError(f"bank {bank_id}: adapter {bank.adapter!r} has no front-end simulator")
    stats = FrontEndStats(simulator)
    if stats_path is not None:  # as the other simulated banks do: the stats JSON every second
        writer = TimerService(1.0, lambda: _write_json(stats_path, stats.stats()))
        writer.clock = reactor
        writer.setServiceParent(container)
    container.link = stats  # type: ignore[attr-defined]
    container.simulator = simulator  # type: ignore[attr-defined]
    return container
