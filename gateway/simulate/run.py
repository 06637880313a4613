"""CLI glue for ``hpf-gateway simulate bank|centre``: options in, running simulators out.

Both read the gateway's own config (``-c``) for defaults, so a simulator
pointed at a gateway needs no more than the bank or centre it plays.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from gateway.config import BankConfig, GatewayConfig, load_config_or_exit
from gateway.pki import leaf_stem

__all__ = [
    "add_bank_arguments",
    "add_centre_arguments",
    "bank_service_for",
    "centre_options_for",
    "peer_endpoint",
    "run_bank",
    "run_centre_cli",
]


def peer_endpoint(bank: BankConfig) -> str:
    """The endpoint the simulated bank uses: it dials the gateway's listener or listens for its dial.

    ``tcp:7001:interface=127.0.0.1`` (the gateway listens) becomes the client
    string ``tcp:127.0.0.1:7001``; ``tcp:127.0.0.1:7102`` (the gateway dials)
    becomes the server string ``tcp:7102:interface=127.0.0.1``.
    """
    return _flip(bank.endpoint, to_server=bank.direction != "listen")


def _flip(ep: str, *, to_server: bool) -> str:
    """The other side of an endpoint string: the gateway's client string as the bank's
    server string (``to_server``), or the gateway's server string as the bank's client one."""
    if not to_server:
        m = re.fullmatch(r"tcp:(?:port=)?(\d+)(?::interface=([^:]+))?", ep)
        if not m:
            raise ValueError(f"cannot derive a client endpoint from {ep!r}; pass --endpoint")
        return f"tcp:{m.group(2) or '127.0.0.1'}:{m.group(1)}"
    m = re.fullmatch(r"tcp:(?:host=)?([^:]+):(?:port=)?(\d+)(?::.*)?", ep)
    if not m:
        raise ValueError(f"cannot derive a server endpoint from {ep!r}; pass --endpoint")
    return f"tcp:{m.group(2)}:interface={m.group(1)}"


def _keys_dir(config: GatewayConfig) -> Path:
    return config.tls.ca.parent


def add_bank_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, help="the gateway's config: the bank is taken from it")
    p.add_argument("--bank", required=True, help="the bank id to play, e.g. B001")
    p.add_argument("--endpoint", help="override the endpoint derived from the gateway's config")
    p.add_argument("--keys", help="directory with bank-ID.crt/.key and ca.crt (default: beside tls.ca)")
    p.add_argument("--balance", default="100000000.00",
                   help="opening balance of every account of this bank (default 100000000.00)")
    p.add_argument("--delay", type=float, default=0.0, help="host execution time, seconds")
    p.add_argument("--reply-within", type=float, default=0.0,
                   help="answer with a receipt first when execution takes longer than this")
    p.add_argument("--failure-rate", type=float, default=0.0, help="fraction of transfers the host fails")
    p.add_argument("--drop-rate", type=float, default=0.0, help="chance per frame of dropping the link")
    p.add_argument("--silent", action="store_true", help="never answer instructions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bank-faults", default="", metavar="LIST",
                   help="offences to commit on purpose, comma-separated (see the demo's --help)")
    p.add_argument("--fault-every", type=int, default=50, help="commit each offence once per N transfers")
    p.add_argument("--stats", help="write execution counts here as JSON every second")
    p.add_argument("--state", help="keep the bank's executed references and balances in this file, "
                                   "so a killed bank comes back as it was (restart it with the same options)")
    p.add_argument("--sftp-report-every", type=float, default=None,
                   help='channel = "sftp": seconds between the bank\'s intraday camt.052 balance reports '
                        "(default 60)")
    p.add_argument("--sftp-root", help='channel = "sftp": the directory holding the bank\'s SFTP account '
                                       "(default: a fresh temporary directory)")
    p.add_argument("--sftp-host-key", help='channel = "sftp": the bank\'s SSH host private key (default: '
                                           "sftp-host-BANK.key beside the bank's known_hosts)")


def bank_service_for(reactor: Any, config: GatewayConfig, bank_id: str, *, keys: Path | None = None,
                     endpoint: str | None = None, balance_fen: int = 10_000_000_000, **core_options: Any) -> Any:
    """A simulated bank for ``bank_id`` of ``config``, wired to meet the gateway's link."""
    from gateway.simulate.bank import BankCore
    from gateway.simulate.bank_service import make_bank_service

    bank = config.banks[bank_id]
    if bank.front_end is not None:
        # A bank reached through its front-end: the front-end's simulator, where the config
        # says it is (it commits no offences; the other options are the BankCore's).
        from gateway.simulate.front_end import front_end_service

        return front_end_service(reactor, config, bank_id, balance_fen=balance_fen,
                                 stats_path=core_options.get("stats_path"))
    keys = keys or _keys_dir(config)
    accounts = {n: balance_fen for n, a in config.accounts.items() if a.bank == bank_id}
    names = {n: a.name for n, a in config.accounts.items() if a.bank == bank_id}
    stats_path = core_options.pop("stats_path", None)
    state_path = core_options.pop("state_path", None)
    sftp_root = core_options.pop("sftp_root", None)
    sftp_host_key = core_options.pop("sftp_host_key", None)
    sftp_report_every = core_options.pop("sftp_report_every", None) or 60.0
    if "first_serial" not in core_options:
        core_options["first_serial"] = BankCore.serial_start_for(reactor.seconds())
    if state_path is not None:
        from gateway.simulate.durable import DurableBankCore

        core: BankCore = DurableBankCore(state_path, node=bank.node, accounts=accounts, account_names=names,
                                         gateway_node=config.node, **core_options)
    else:
        core = BankCore(node=bank.node, accounts=accounts, account_names=names, gateway_node=config.node,
                        **core_options)
    if bank.sftp is not None:   # ISO 20022 files on the bank's own SFTP server
        import tempfile

        from gateway.simulate.sftp_bank import sftp_bank_service

        return sftp_bank_service(
            reactor, config, bank_id, core, root=Path(sftp_root or tempfile.mkdtemp(prefix=f"sftp-{bank_id}-")),
            host_key=Path(sftp_host_key or bank.sftp.known_hosts.with_name(f"sftp-host-{bank_id}.key")),
            stats_path=stats_path, report_every=sftp_report_every)
    if bank.connection == "per_request":
        # The deployed bdc model: the bank serves the gateway's requests on its listener
        # and dials the gateway's listener for each of its own (notices).
        requests, pushes = ((bank.peer_endpoint, bank.endpoint) if bank.direction == "listen"
                            else (bank.endpoint, bank.peer_endpoint))
        return make_bank_service(
            reactor, adapter_name=bank.adapter, bank_id=bank_id, node=bank.node, role="listen",
            endpoint=endpoint or _flip(requests, to_server=True),
            push_endpoint=_flip(pushes, to_server=False) if pushes else None,
            connection="per_request",
            certificate=keys / f"{leaf_stem('bank', bank_id)}.crt",
            private_key=keys / f"{leaf_stem('bank', bank_id)}.key",
            trust=[keys / "ca.crt"], core=core, gateway_node=config.node,
            heartbeat_interval=config.timeouts.heartbeat_interval, stats_path=stats_path)
    return make_bank_service(
        reactor, adapter_name=bank.adapter, bank_id=bank_id, node=bank.node,
        role="dial" if bank.direction == "listen" else "listen",
        endpoint=endpoint or peer_endpoint(bank),
        certificate=keys / f"{leaf_stem('bank', bank_id)}.crt", private_key=keys / f"{leaf_stem('bank', bank_id)}.key",
        trust=[keys / "ca.crt"], core=core, gateway_node=config.node,
        heartbeat_interval=config.timeouts.heartbeat_interval, stats_path=stats_path)


def run_bank(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from gateway.logs import start_logging
    from gateway.model import parse_amount
    from gateway.simulate.bank_faults import parse_faults
    from gateway.tls import InsecureKeyError

    config = load_config_or_exit(args.config, check_files=False)
    if args.bank not in config.banks:
        print(f"hpf-gateway simulate bank: no bank {args.bank!r} in {args.config}", file=sys.stderr)
        return 2
    try:
        service = bank_service_for(
            reactor, config, args.bank, keys=Path(args.keys) if args.keys else None, endpoint=args.endpoint,
            balance_fen=parse_amount(args.balance), delay=args.delay, reply_within=args.reply_within,
            failure_rate=args.failure_rate, drop_rate=args.drop_rate, silent=args.silent, seed=args.seed,
            faults=parse_faults(args.bank_faults), fault_every=args.fault_every,
            stats_path=Path(args.stats) if args.stats else None,
            state_path=Path(args.state) if args.state else None,
            **({"sftp_root": args.sftp_root} if args.sftp_root else {}),
            **({"sftp_report_every": args.sftp_report_every} if args.sftp_report_every else {}),
            **({"sftp_host_key": args.sftp_host_key} if args.sftp_host_key else {}))
    except (ValueError, KeyError, OSError, InsecureKeyError) as e:
        print(f"hpf-gateway simulate bank: {e}", file=sys.stderr)
        return 2
    start_logging()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


def add_centre_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, help="the gateway's config: accounts and counterparties")
    p.add_argument("--centre", help="the centre to play (default: the config's first)")
    p.add_argument("--url", help="the centre API (default: from the config's listen.centre_api)")
    p.add_argument("--keys", help="directory with centre-ID.crt/.key and ca.crt (default: beside tls.ca)")
    p.add_argument("--count", type=int, default=None, help="instructions to submit")
    p.add_argument("--rate", type=float, default=100.0, help="instructions per second")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (instead of --count)")
    p.add_argument("--batch", type=int, default=0, help="use the batch API with N instructions per request")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--id-prefix", default=None, help="prefix of instruction ids (default: time-based)")
    p.add_argument("--final-timeout", type=float, default=60.0,
                   help="seconds to wait for outcomes after the last submit")
    p.add_argument("--json", help="write the report here as JSON")


def api_url(config: GatewayConfig) -> str:
    m = re.fullmatch(r"tcp:(?:port=)?(\d+)(?::interface=([^:]+))?", config.centre_api)
    if not m:
        raise ValueError(f"cannot derive a URL from listen.centre_api {config.centre_api!r}; pass --url")
    host = m.group(2) or "127.0.0.1"
    return f"https://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{m.group(1)}"


def centre_options_for(config: GatewayConfig, centre_id: str, keys: Path | None = None) -> dict[str, Any]:
    """The keyword arguments of run_centre that the gateway's config decides."""
    keys = keys or _keys_dir(config)
    own = [n for n, a in config.accounts.items() if a.centre == centre_id]
    return dict(
        certificate=keys / f"{leaf_stem('centre', centre_id)}.crt",
        private_key=keys / f"{leaf_stem('centre', centre_id)}.key",
        ca=keys / "ca.crt", centre_id=centre_id, debit_accounts=own,
        counterparties=[(c.account, c.name, c.bank_code) for c in config.counterparties.values()],
    )


def run_centre_cli(args: argparse.Namespace) -> int:
    import json
    import time

    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from gateway.simulate.centre import run_centre

    config = load_config_or_exit(args.config, check_files=False)
    centre_id = args.centre or next(iter(config.centres))
    if centre_id not in config.centres:
        print(f"hpf-gateway simulate centre: no centre {centre_id!r} in {args.config}", file=sys.stderr)
        return 2
    if args.count is None and args.duration is None:
        args.count = 1000
    tty = sys.stdout.isatty()

    def progress(line: str) -> None:
        sys.stdout.write(("\r" + line + "\x1b[K") if tty else line + "\n")
        sys.stdout.flush()

    options = centre_options_for(config, centre_id, Path(args.keys) if args.keys else None)
    result: dict[str, Any] = {}

    async def go() -> None:
        report = await run_centre(
            reactor, base_url=args.url or api_url(config), count=args.count, rate=args.rate,
            duration=args.duration, batch=args.batch, seed=args.seed,
            id_prefix=args.id_prefix or f"S{int(time.time()) % 10**8:08d}-", progress=progress,
            final_timeout=args.final_timeout, **options)
        result["report"] = report

    d = Deferred.fromCoroutine(go())
    d.addErrback(lambda f: result.setdefault("error", f))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if "error" in result:
        print(f"\nhpf-gateway simulate centre: {result['error'].getErrorMessage()}", file=sys.stderr)
        return 1
    if "report" not in result:
        print("\nhpf-gateway simulate centre: stopped before the run finished", file=sys.stderr)
        return 1
    report = result["report"]
    print()
    print(report.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2))
    return 0 if report.not_final == 0 and report.duplicate_finals == 0 else 1
