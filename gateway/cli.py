"""``hpf-gateway`` — the command line: run, migrate, check-config, keys, simulate, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main"]


def _load(path: str, *, check_files: bool = True) -> Any:
    from gateway.config import ConfigError, load_config

    try:
        return load_config(path, check_files=check_files)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2)


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import check_config

    problems = check_config(args.config)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 2
    print(f"{args.config}: ok")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from gateway.store import migrate

    config = _load(args.config, check_files=False)
    try:
        before, after = migrate.upgrade(config.database)
    except migrate.SchemaMismatch as e:
        print(f"hpf-gateway migrate: {e}", file=sys.stderr)
        return 2
    print(f"schema {before or 'empty'} -> {after}")
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    from gateway.pki import init_dev_pki

    banks: Sequence[str] = args.bank or ()
    centres: Sequence[str] = args.centre or ()
    if args.config:
        config = _load(args.config, check_files=False)
        banks = sorted(set(banks) | set(config.banks))
        centres = sorted(set(centres) | set(config.centres))
    pki = init_dev_pki(Path(args.dir), banks=banks, centres=centres, supervisors=args.supervisor or ("sup1",))
    print(f"development PKI in {pki.directory}: CA {pki.ca_cert.name}, gateway, ledger, "
          f"banks {', '.join(banks) or '-'}, centres {', '.join(centres) or '-'} (keys mode 0600)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from gateway.logs import start_logging
    from gateway.service import makeService
    from gateway.store import migrate
    from gateway.store.db import make_engine
    from gateway.tls import InsecureKeyError

    config = _load(args.config)
    engine = make_engine(config.database)
    try:
        migrate.check_current(engine)
    except migrate.SchemaMismatch as e:
        print(f"hpf-gateway run: {e}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    try:
        gateway = makeService(config, reactor)
    except (InsecureKeyError, ValueError) as e:
        print(f"hpf-gateway run: {e}", file=sys.stderr)
        return 2
    from gateway.daemon import run_daemon

    start_logging()
    run_daemon(reactor, start=gateway.start, drain=gateway.drain, stop=gateway.stop, reload=gateway.reload,
               status=gateway.status)
    return 0


def cmd_simulate_bank(args: argparse.Namespace) -> int:
    from gateway.simulate.run import run_bank

    return run_bank(args)


def cmd_simulate_centre(args: argparse.Namespace) -> int:
    from gateway.simulate.run import run_centre_cli

    return run_centre_cli(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args)


def cmd_adapters_list(args: argparse.Namespace) -> int:
    from adapters.base import iter_adapter_names, load_adapter

    for name in sorted(iter_adapter_names()):
        adapter = load_adapter(name)
        doc = (type(adapter).__doc__ or "").strip().splitlines()
        print(f"{name:10} {doc[0] if doc else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpf-gateway", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser, required: bool = True) -> argparse.ArgumentParser:
        sp.add_argument("-c", "--config", required=required, help="the gateway's TOML config")
        return sp

    with_config(sub.add_parser("run", help="run the gateway daemon")).set_defaults(func=cmd_run)
    with_config(sub.add_parser("migrate", help="bring the database schema up to date")).set_defaults(
        func=cmd_migrate)
    with_config(sub.add_parser("check-config", help="print every problem in a config")).set_defaults(
        func=cmd_check_config)

    keys = sub.add_parser("keys", help="development PKI").add_subparsers(dest="keys_command", required=True)
    ki = keys.add_parser("init", help="create a dev CA and certificates for every party")
    ki.add_argument("dir")
    with_config(ki, required=False)
    ki.add_argument("--bank", action="append", help="a bank id (repeatable)")
    ki.add_argument("--centre", action="append", help="a centre id such as C52240 (repeatable)")
    ki.add_argument("--supervisor", action="append", help="a supervisor name (repeatable)")
    ki.set_defaults(func=cmd_keys_init)

    ad = sub.add_parser("adapters", help="bank protocol adapters").add_subparsers(dest="adapters_command",
                                                                                  required=True)
    ad.add_parser("list", help="list installed adapters").set_defaults(func=cmd_adapters_list)

    sim = sub.add_parser("simulate", help="simulated banks and centres").add_subparsers(
        dest="sim_command", required=True)
    from gateway.simulate.run import add_bank_arguments, add_centre_arguments

    sb = sim.add_parser("bank", help="a simulated commissioned bank")
    add_bank_arguments(sb)
    sb.set_defaults(func=cmd_simulate_bank)
    sc = sim.add_parser("centre", help="a simulated centre: load generator and results-feed follower")
    add_centre_arguments(sc)
    sc.set_defaults(func=cmd_simulate_centre)

    demo = sub.add_parser("demo", help="the whole flow on embedded defaults, live")
    demo.add_argument("--dir", default="demo", help="where keys, config, database and logs go (default ./demo)")
    demo.add_argument("--count", type=int, default=500, help="instructions to submit (default 500)")
    demo.add_argument("--rate", type=float, default=250.0, help="instructions per second (default 250)")
    demo.add_argument("--batch", type=int, default=0, help="submit through the batch API, N per request")
    demo.add_argument("--serve", action="store_true", help="keep everything running afterwards")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
