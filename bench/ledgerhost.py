"""``python -m bench.ledgerhost -c LEDGER.toml --lags FILE``: the ledger daemon, with its match lag recorded.

Runs exactly what ``hpf-gateway ledger`` runs (:func:`gateway.ledger.service.makeLedgerService`
on the given config) and, in addition, records for every copy the matcher
takes live the wall-clock time right after :meth:`MatchEngine.observe` returned
and the lag from the copy's ``created_us`` (its journal time at the gateway)
to that moment — the same quantity as the ledger's
``hpf_ledger_match_lag_seconds`` histogram, but exact instead of bucketed and
including the matching itself.  On SIGTERM the daemon stops as usual and the
samples are written to FILE as JSON ``{"samples": [[t, lag_s], ...]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ledgerhost", description=(__doc__ or "").splitlines()[0])
    p.add_argument("-c", "--config", required=True, help="the ledger's TOML config")
    p.add_argument("--lags", type=Path, required=True, help="where to write the lag samples on exit")
    args = p.parse_args(argv)

    from twisted.internet import reactor

    from gateway.daemon import SWITCH_INTERVAL, settle_heap
    from gateway.ledger.config import load_ledger_config
    from gateway.ledger.service import makeLedgerService
    from gateway.logs import start_logging

    config = load_ledger_config(args.config)
    ledger = makeLedgerService(config, reactor)
    times, lags = array("d"), array("d")
    observe = ledger.engine.observe

    def observe_and_time(rows: Sequence[dict[str, Any]], facts: Any = None) -> None:
        # Ingest calls engine.observe(stored, facts) right after the commit; the matcher runs inside it.
        observe(rows, facts)
        now = time.time()
        for row in rows:
            times.append(now)
            lags.append(now - row["created_us"] / 1_000_000)

    ledger.engine.observe = observe_and_time  # type: ignore[method-assign]

    def write() -> None:
        args.lags.write_text(json.dumps({"samples": [[round(t, 6), round(lag, 6)] for t, lag in zip(times, lags)]}),
                             encoding="utf-8")

    start_logging()
    # The process settings hpf-gateway ledger runs with (gateway.daemon.run_daemon).
    sys.setswitchinterval(SWITCH_INTERVAL)
    ledger.service.startService()
    reactor.callWhenRunning(settle_heap)
    trim_every = float(os.environ.get("HPF_BENCH_MALLOC_TRIM_S", "0") or 0)
    if trim_every > 0:  # an experiment: return the heap's free pages to the system now and then
        import ctypes

        from twisted.internet.task import LoopingCall

        libc = ctypes.CDLL(None)
        LoopingCall(lambda: libc.malloc_trim(0)).start(trim_every, now=False)
    reactor.addSystemEventTrigger("before", "shutdown", ledger.service.stopService)
    reactor.addSystemEventTrigger("after", "shutdown", write)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
