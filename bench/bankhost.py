"""``python -m bench.bankhost -c CONF [--bank B …] [--silent]``: many simulated banks in one process.

``hpf-gateway simulate bank`` plays one bank per process; the memory
benchmark needs 50 bank links, and 50 Python processes would cost the
machine more than the gateway being measured.  This host builds, in one
reactor, exactly the bank each ``simulate bank`` process would build
(:func:`gateway.simulate.run.bank_service_for`: the same core, adapter,
certificate and endpoint), one per bank, each on its own TLS link.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bankhost", description=(__doc__ or "").splitlines()[0])
    p.add_argument("-c", "--config", required=True, help="the gateway's config: the banks are taken from it")
    p.add_argument("--bank", action="append", help="a bank id to play (repeatable; default: every bank)")
    p.add_argument("--silent", action="store_true", help="never answer instructions")
    args = p.parse_args(argv)

    from twisted.application.service import MultiService
    from twisted.internet import reactor

    from gateway.config import load_config
    from gateway.logs import start_logging
    from gateway.simulate.run import bank_service_for

    config = load_config(args.config, check_files=False)
    banks = args.bank or sorted(config.banks)
    unknown = [b for b in banks if b not in config.banks]
    if unknown:
        print(f"python -m bench.bankhost: no bank {', '.join(unknown)} in {args.config}", file=sys.stderr)
        return 2
    top = MultiService()
    for bank_id in banks:
        bank_service_for(reactor, config, bank_id, silent=args.silent).setServiceParent(top)
    start_logging()
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
