"""``hpf-gateway`` — the gateway, the ledger, their operators' tools, the simulators and the demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main"]


def _load(path: str, *, check_files: bool = True) -> Any:
    from gateway.config import load_config_or_exit  # imported late: ``--help`` loads no TLS stack

    return load_config_or_exit(path, check_files=check_files)


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import check_config

    problems = check_config(args.config)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 2
    from gateway.pki import config_development_trust

    for warning in config_development_trust(_load(args.config)):
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
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
    from gateway.pki import MAX_PRODUCTION_DAYS, init_pki

    banks: Sequence[str] = args.bank or ()
    centres: Sequence[str] = args.centre or ()
    if args.config:
        config = _load(args.config, check_files=False)
        banks = sorted(set(banks) | set(config.banks))
        centres = sorted(set(centres) | set(config.centres))
    from gateway.signing import init_signing_key

    try:
        pki = init_pki(Path(args.dir), banks=banks, centres=centres, supervisors=args.supervisor or ("sup1",),
                       production=args.production, crl_url=args.crl_url, days=args.days)
    except ValueError as e:
        print(f"hpf-gateway keys init: {e}", file=sys.stderr)
        return 2
    signing, public = init_signing_key(Path(args.dir))
    for name in args.sm2_key:
        from gateway.signing import init_sm2_key

        key, pub = init_sm2_key(Path(args.dir), name)
        print(f"SM2 instruction-signing key {key.name} (give {pub.name} to the bank)")
    kind = (f"production PKI (leaves {args.days or MAX_PRODUCTION_DAYS} days, CRL at {args.crl_url}: publish "
            f"{pki.directory / 'ca.crl'} there and keep it current)" if args.production else "development PKI")
    print(f"{kind} in {pki.directory}: CA {pki.ca_cert.name}, gateway, ledger, "
          f"banks {', '.join(banks) or '-'}, centres {', '.join(centres) or '-'} (keys mode 0600); "
          f"copy-signing key {signing.name} (give {public.name} to the ledger)")
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
    from gateway.daemon import monotonic_timers, run_daemon

    monotonic_timers(reactor)
    try:
        gateway = makeService(config, reactor)
    except (InsecureKeyError, ValueError) as e:
        print(f"hpf-gateway run: {e}", file=sys.stderr)
        return 2

    start_logging()
    return run_daemon(reactor, start=gateway.start, drain=gateway.drain, stop=gateway.stop,
                      reload=gateway.reload, status=gateway.status)


def cmd_simulate_bank(args: argparse.Namespace) -> int:
    from gateway.simulate.run import run_bank

    return run_bank(args)


def cmd_simulate_centre(args: argparse.Namespace) -> int:
    from gateway.simulate.run import run_centre_cli

    return run_centre_cli(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args)


def cmd_ledger(args: argparse.Namespace) -> int:
    from gateway.ledger.service import run_ledger

    return run_ledger(args.config, migrate=args.migrate)


def cmd_verify(args: argparse.Namespace) -> int:
    """Walk each named config's journal chain; the worst result decides the exit status."""
    from gateway.ledger.verify import verify_main

    return max(verify_main(path) for path in args.config)


def _sqlite_store(config_path: str, command: str, done: str, instead: str) -> tuple[Any, Any] | None:
    """The config at ``config_path`` and its SQLite store's URL; None (said on stderr) for another database."""
    from sqlalchemy.engine import make_url

    config = _load(config_path, check_files=False)
    url = make_url(config.database)
    if url.get_backend_name() != "sqlite" or not url.database:
        print(f"hpf-gateway {command}: only the SQLite store is {done} here; for PostgreSQL use "
              f"{instead} (docs/operations.md)", file=sys.stderr)
        return None
    return config, url


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the SQLite store with SQLite's online backup API (consistent while the daemon runs)."""
    found = _sqlite_store(args.config, "backup", "backed up", "pg_dump or base backups")
    if found is None:
        return 2
    _, url = found
    dest = Path(args.dest)
    if dest.exists():
        print(f"hpf-gateway backup: {dest} exists; give a new file", file=sys.stderr)
        return 2
    from gateway.store import sqlite_copy

    check = sqlite_copy.backup(Path(url.database), dest)
    if check != "ok":
        print(f"hpf-gateway backup: the copy fails its integrity check: {check}", file=sys.stderr)
        return 1
    print(f"backed up {url.database} to {dest} (integrity ok)")
    return 0


RESTORE_SKIP_IDS = 100_000_000
"""How far above a restored store's highest instruction id the next one starts.

A bank reference ends in the id (mod 10^9) after the day's date, so a reference repeats only if
the lost store handed out more than this many ids after the backup, in one day: beyond
ten thousand instructions a second for nearly three hours.  ``--skip-ids`` sets more."""


RESTORE_SEQS_PER_ID = 10
"""The journal jumps this many seqs per skipped id (an instruction journals four or five events, and
the banks' movements and balances more): past every seq the lost store can have used."""


def _mark_restored(url: str, skip: int) -> int:
    """Journal the restore at ``skip`` seqs past the backup's head (:func:`journal.mark_restored`)."""
    from gateway.store import journal
    from gateway.store.db import Tx, _EventIds, make_engine, now_us

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            return journal.mark_restored(Tx(conn, now_us(), _EventIds()), skip)
    finally:
        engine.dispose()


def cmd_restore(args: argparse.Namespace) -> int:
    """Put a copy made by ``hpf-gateway backup`` in place as the config's (new) SQLite store.

    The store must not exist yet: a restore goes onto a fresh machine or an
    emptied directory, never over a store that may hold later facts.  The copy
    is made with SQLite's backup API and checked (``PRAGMA integrity_check``).
    A restored store cannot know what went to the banks after the backup, so
    every open instruction not yet counted as sent is counted as sent once:
    on a bank with ``status_before_resend = true`` it is then asked about
    (a status query) before anything is sent again (docs/operations.md).  Nor
    can it know the ids the lost store handed out after the backup: new ids
    start :data:`RESTORE_SKIP_IDS` above the highest restored one, so no bank
    reference is used twice; nor the journal seqs the lost store copied to the
    ledger: the journal goes on :data:`RESTORE_SEQS_PER_ID` times as far past its
    head, after a ``gateway.restored`` event (the ledger takes its copies in order).
    """
    found = _sqlite_store(args.config, "restore", "restored", "pg_restore")
    if found is None:
        return 2
    config, url = found
    dest, source_file = Path(url.database), Path(args.backup)
    if dest.exists():
        print(f"hpf-gateway restore: {dest} exists; restore into a new directory", file=sys.stderr)
        return 2
    if not source_file.is_file():
        print(f"hpf-gateway restore: no backup at {source_file}", file=sys.stderr)
        return 2
    from gateway.store import sqlite_copy

    check, marked = sqlite_copy.restore(source_file, dest)
    if check != "ok":
        dest.unlink()
        print(f"hpf-gateway restore: the backup fails its integrity check: {check}", file=sys.stderr)
        return 1
    from gateway.store import migrate

    migrate.upgrade(config.database)  # a backup from an older release gains the id floor too
    highest, floor, open_by_bank = sqlite_copy.after_restore(dest, args.skip_ids)
    journal_to = _mark_restored(config.database, args.skip_ids * RESTORE_SEQS_PER_ID)
    unasked = sorted(b for b, n in open_by_bank.items()
                     if n and b in config.banks and not (config.banks[b].status and config.banks[b].status.before_resend))
    print(f"restored {source_file} to {dest} (integrity ok); {sum(open_by_bank.values())} open instructions, "
          f"{marked} of them counted as sent once; new instruction ids start above {floor} "
          f"(the backup's highest was {highest}); the journal goes on at seq {journal_to}")
    if unasked:
        print("hpf-gateway restore: these banks resend unconfirmed references without asking first; set "
              f"status_before_resend = true on them before starting: {', '.join(unasked)}", file=sys.stderr)
    return 0


def _ops(config: Any, method: str, path: str, body: Any = None, *, token: bytes | None = None,
         cert: str | None = None, key: str | None = None) -> tuple[int, Any]:
    import json
    import ssl
    import urllib.error
    import urllib.request

    port = config.ops.split(":")[1]
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = "Bearer " + token.decode("ascii", "replace")
    context = None
    if config.ops_tls:  # the daemon's certificate is checked against tls.ca; ours proves the operator
        context = ssl.create_default_context(cafile=str(config.tls.ca))
        context.check_hostname = False
        if cert and key:
            context.load_cert_chain(cert, key)
    scheme = "https" if config.ops_tls else "http"
    request = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except OSError as e:
        print(f"hpf-gateway: the daemon's ops listener ({config.ops}) does not answer: {e}", file=sys.stderr)
        raise SystemExit(2)


def cmd_status(args: argparse.Namespace) -> int:
    import json

    status, body = _ops(_load(args.config, check_files=False), "GET", "/status", cert=args.cert, key=args.key)
    print(json.dumps(body, ensure_ascii=False, indent=2))
    return 0 if status == 200 else 1


def cmd_instructions(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    config = _load(args.config, check_files=False)
    centre = args.centre or next(iter(config.centres))
    path = f"/instructions/{centre}/{args.id}"
    if args.instructions_command == "show":
        status, body = _ops(config, "GET", path, cert=args.cert, key=args.key)
    else:
        # The operator is who the token or certificate proves; the ops listener ignores names in bodies.
        token_file = args.token_file or os.environ.get("HPF_OPERATOR_TOKEN_FILE")
        token = Path(token_file).read_bytes().strip() if token_file else None
        status, body = _ops(config, "POST", path + "/resolve", {"outcome": args.outcome, "evidence": args.evidence},
                            token=token, cert=args.cert, key=args.key)
    print(json.dumps(body, ensure_ascii=False, indent=2))
    return 0 if status in (200, 202) else 1


def cmd_adapters_decode(args: argparse.Namespace) -> int:
    """Print the neutral messages in a file as JSON lines; a bad file is one line on stderr, exit 1.

    Framed input is read a chunk at a time and printed frame by frame (a bad frame stops there);
    a bare document is refused unread beyond the adapter's maximum document size.
    """
    import json

    from adapters._framing import read_frames
    from adapters.base import AdapterError, decode_all, load_adapter, max_document, read_bounded, to_json

    try:
        adapter = load_adapter(args.name)
        # A link accepts only its own currency; an operator reading a bank's file wants every entry.
        files = getattr(type(adapter), "for_operator_files", None)
        if files is not None:
            adapter = files()
    except KeyError as e:
        print(f"hpf-gateway adapters decode: {e.args[0]}", file=sys.stderr)
        return 2
    document = getattr(adapter, "decode_document", None)
    if not args.framed and document is None:
        print(f"hpf-gateway adapters decode: the {args.name} adapter decodes framed input only: use --framed",
              file=sys.stderr)
        return 1
    # Read no more than the adapter's bound at once: a device or a huge file is refused, never slurped.
    try:
        with open(args.file, "rb") as stream:
            if args.framed:
                for frame in read_frames(adapter, stream):
                    for m in decode_all(adapter, frame):
                        print(json.dumps(to_json(m), ensure_ascii=False))
            else:
                for m in document(read_bounded(stream, max_document(adapter))):
                    print(json.dumps(to_json(m), ensure_ascii=False))
    except OSError as e:
        print(f"hpf-gateway adapters decode: {args.file}: {e.strerror}", file=sys.stderr)
        return 1
    except AdapterError as e:
        sys.stdout.flush()
        print(f"hpf-gateway adapters decode: {args.file}: {e}", file=sys.stderr)
        return 1
    return 0


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
    ki.add_argument("--sm2-key", action="append", default=[], metavar="NAME",
                    help="also make an SM2 key pair NAME.key/NAME.pub for signing instructions (repeatable)")
    ki.add_argument("--production", action="store_true",
                    help="a CA not marked as a development one; leaves of at most 397 days naming --crl-url")
    ki.add_argument("--crl-url", help="with --production: where the CA's CRL is published (http or https URL)")
    ki.add_argument("--days", type=int, help="leaf validity in days (default 825; with --production 397, the most)")
    ki.set_defaults(func=cmd_keys_init)

    ad = sub.add_parser("adapters", help="bank protocol adapters").add_subparsers(dest="adapters_command",
                                                                                  required=True)
    ad.add_parser("list", help="list installed adapters").set_defaults(func=cmd_adapters_list)
    dec = ad.add_parser("decode", help="decode a file a bank sent, print neutral messages as JSON lines")
    dec.add_argument("name", help="the adapter (hpf-gateway adapters list)")
    dec.add_argument("file", help="one message body, or a framed stream with --framed")
    dec.add_argument("--framed", action="store_true", help="the file holds frames as sent on the link")
    dec.set_defaults(func=cmd_adapters_decode)

    ledger = with_config(sub.add_parser("ledger", help="run the supervision ledger daemon"))
    ledger.add_argument("--migrate", action="store_true", help="bring the ledger schema up to date first")
    ledger.set_defaults(func=cmd_ledger)
    verify = sub.add_parser("verify", help="walk journal hash chains; name the first altered, inserted "
                                           "or deleted row")
    verify.add_argument("-c", "--config", action="append", required=True,
                        help="a gateway or ledger config (repeatable)")
    verify.set_defaults(func=cmd_verify)
    backup = with_config(sub.add_parser("backup", help="online backup of the SQLite store"))
    backup.add_argument("dest", help="the new backup file")
    backup.set_defaults(func=cmd_backup)
    restore = with_config(sub.add_parser("restore", help="put a backup in place as a new SQLite store"))
    restore.add_argument("backup", help="a file made by hpf-gateway backup")
    restore.add_argument("--skip-ids", type=int, default=RESTORE_SKIP_IDS, metavar="N",
                         help="new instruction ids start N above the backup's highest, past any the "
                              f"lost store handed out after the backup (default {RESTORE_SKIP_IDS:,})")
    restore.set_defaults(func=cmd_restore)
    def with_operator(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--cert", help="your hpf://operator/NAME certificate, when listen.ops_tls is on")
        p.add_argument("--key", help="its private key")
        return p

    with_operator(with_config(sub.add_parser("status", help="links, queues, backlog, in doubt: from the running "
                                                           "daemon"))).set_defaults(func=cmd_status)
    ins = sub.add_parser("instructions", help="one instruction: its trail, or a manual resolution"
                         ).add_subparsers(dest="instructions_command", required=True)
    show = with_operator(with_config(ins.add_parser("show", help="the instruction and its whole journal trail")))
    show.add_argument("id")
    show.add_argument("--centre", help="the centre (default: the config's first)")
    show.set_defaults(func=cmd_instructions)
    res = with_operator(with_config(ins.add_parser("resolve", help="propose or confirm the resolution of an "
                                                                   "in-doubt instruction, with evidence")))
    res.add_argument("id")
    res.add_argument("--centre", help="the centre (default: the config's first)")
    res.add_argument("--outcome", required=True, choices=("succeeded", "failed"))
    res.add_argument("--evidence", required=True, help="what proves the outcome (bank statement line, call ref)")
    res.add_argument("--token-file", help="your operator token (default: $HPF_OPERATOR_TOKEN_FILE); a first call "
                                          "proposes, another operator's call with the same outcome confirms")
    res.set_defaults(func=cmd_instructions)

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
    demo.add_argument("--bank-faults", default="", metavar="LIST",
                      help="bank offences to commit on purpose, comma-separated: unsolicited-debit, "
                           "result-mismatch, duplicate-execution, balance-break, unregistered-counterparty, "
                           "unregistered-account")
    demo.add_argument("--fault-every", type=int, default=50, metavar="N",
                      help="commit each offence once per N transfers at a bank (default 50)")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from gateway.store.db import PRIVATE_UMASK

    # Databases, logs, configs, keys, backups and reports hold account data: whatever the
    # caller's umask, nothing this process creates is readable by group or others.
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
