"""``hpf-gateway demo``: the whole system on embedded defaults, live, in one process.

Dev keys and configs in ``DIR``; the gateway on SQLite; one simulated bank per
adapter (bdc dials in; Bank of China's bocb2e front-end is posted to over HTTP on
loopback, signed on with the operator's password from a 0600 file; ISO 20022 dials
in; ICBC's NC is posted to, payments signed at its signing port); the supervision
ledger receiving signed copies; a simulated centre submitting instructions and
following its feed.  The gateway's and ledger's JSON logs go to
``DIR/gateway.log``; the terminal shows progress and a summary, with the
ledger's alerts by rule.  ``--bank-faults`` makes the banks misbehave on
purpose so those alerts appear.  The exit status is 0 only if every
instruction reached a final state, no bank executed a reference twice
unasked, and every offence asked for raised its alert.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from gateway.config import FRONT_END_ADAPTERS, load_config, render_toml
from gateway.ports import free_port, free_ports
from gateway.store.db import private_file

__all__ = ["BANKS", "BDC_CENTRE", "CENTRE", "write_demo_config", "write_ledger_config", "run_demo", "FAULT_RULES"]

CENTRE = "C52240"
BANK_BATCH_LINES = 20
"""Lines the demo sends as two bank batches to its bdc bank (``"bank_batch": true``)."""
# Each bank's node and bank_code begin with its CNAPS bank class, as the relay reads them
# (a payee whose code shares the node's first three digits is paid within the bank): 102
# ICBC, 104 Bank of China, 105 CCB (adapters/bdc/codec.py BANK_NAMES); B003 is no real bank
# and takes 313, the class of city commercial banks. The rest of each code is made up.
BANKS: dict[str, dict[str, str]] = {
    # bdc as deployed: a connection per request; the bank dials in with its notices and
    # the gateway dials the bank with its requests (peer_endpoint).
    "B001": {"name": "建设银行（示例）", "adapter": "bdc", "node": "105000", "direction": "listen",
             "connection": "per_request",
             "account": "6200001111222233", "account_name": "示例中心归集户", "type": "collection",
             "bank_code": "105100000017"},
    # Bank of China's direct connection: the gateway posts to the bank's front-end (a
    # simulated one on loopback), signs on, polls status, balances and statements.
    "B002": {"name": "中国银行（示例）", "adapter": "bocb2e", "node": "104000", "direction": "connect",
             "account": "6222002222333344", "account_name": "示例中心贷款户", "type": "loan",
             "bank_code": "104100000030"},
    "B003": {"name": "第三银行", "adapter": "iso20022", "node": "313000", "direction": "listen",
             "account": "6217003333444455", "account_name": "示例中心增值收益户", "type": "revenue",
             "bank_code": "313100000045"},
    # ICBC's 银企互联: the gateway posts forms to NC (a simulated one on loopback), payment
    # packages signed at NC's signing port first; status, balances and history polled.
    "B004": {"name": "工商银行（示例）", "adapter": "icbc", "node": "102000", "direction": "connect",
             "account": "6212004444555566", "account_name": "示例中心其他户", "type": "other",
             "bank_code": "102100000018"},
}
COUNTERPARTIES = {
    "6200009999000011": {"name": "张三", "bank_code": "105100000017"},
    "6222008888000022": {"name": "示例房地产开发有限公司", "bank_code": "102100000030"},
    "6217001234567890": {"name": "李四", "bank_code": "104100000045"},
}
# A second centre of the province that speaks only bdc: its existing bdc software sends every
# request to the gateway's centre_bdc listener and takes the SBDC100 notices the gateway pushes
# to it (gateway/simulate/bdc_centre.py, gateway/simulate/centre_bdc_only.py); no HTTPS API.
BDC_CENTRE = {"id": "C52250", "unit_no": "522500000000000", "name": "示例州住房公积金管理中心",
              "accounts": {"6200007777888899": {"bank": "B001", "name": "示例州中心归集户", "type": "collection",
                                                "bank_code": "105100000017"},
                           "6217007777888800": {"bank": "B003", "name": "示例州中心增值收益户", "type": "revenue",
                                                "bank_code": "104100000045"}}}
# Which ledger rule each bank offence must raise.
FAULT_RULES = {
    "unsolicited-debit": "unsolicited-debit",
    "result-mismatch": "result-mismatch",
    "duplicate-execution": "duplicate-execution",
    "balance-break": "balance-break",
    "unregistered-counterparty": "unregistered-counterparty",
    "unregistered-account": "unregistered-account",
}




def _registries(bdc_centre: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    accounts = {b["account"]: {"bank": bank_id, "centre": CENTRE, "name": b["account_name"], "type": b["type"],
                               "bank_code": b["bank_code"]}
                for bank_id, b in BANKS.items()}
    if bdc_centre:
        accounts |= {n: dict(a, centre=BDC_CENTRE["id"]) for n, a in BDC_CENTRE["accounts"].items()}
    return accounts, COUNTERPARTIES


def _front_end(directory: Path, bank_id: str, adapter: str, port: int, sign_port: int) -> dict[str, Any]:
    """A front-end bank's keys: where its (simulated) front-end listens, the gateway's
    credentials there (bocb2e: the operator's password in a 0600 file beside the demo's keys;
    ICBC's NC authenticates with its own certificate), its status cadence."""
    import os
    import secrets

    cadence = {"window": 64, "status_first_after": 1.0, "status_interval": 1.0, "status_backoff": 2.0,
               "status_max_interval": 8.0, "status_attempts": 12}
    if adapter == "icbc":
        return cadence | {"front_end": {
            "url": f"http://127.0.0.1:{port}/servlet/ICBCCMPAPIReqServlet",
            "sign_url": f"http://127.0.0.1:{sign_port}", "cis": "522400000000001", "cert_id": "gw.y.5224"}}
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    password = keys / f"{bank_id}-front-end.password"
    if not password.exists():
        fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(12) + "\n")
    return cadence | {"front_end": {"url": f"http://127.0.0.1:{port}/B2EC/E2BServlet", "termid": "E127000000001",
                                    "custid": "D00000", "cusopr": "gateway",
                                    "password_file": f"keys/{password.name}"}}


def write_demo_config(directory: Path, *, ports: dict[str, int] | None = None,
                      ledger_url: str | None = None, bdc_centre: bool = False) -> Path:
    """Write ``DIR/gateway.toml`` for the demo (keys in ``DIR/keys``, database in ``DIR/var``);
    with ``bdc_centre``, also the centre that speaks only bdc (its notices to ``bdc_notify``)."""
    ports = ports or free_ports(("api", "ops", "centre_bdc", *BANKS,
                                  *(f"{b}_sign" for b, v in BANKS.items() if v["adapter"] == "icbc"),
                                  *(f"{b}_peer" for b, v in BANKS.items() if v.get("connection") == "per_request")))
    banks: dict[str, Any] = {}
    for bank_id, b in BANKS.items():
        endpoint = (f"tcp:{ports[bank_id]}:interface=127.0.0.1" if b["direction"] == "listen"
                    else f"tcp:127.0.0.1:{ports[bank_id]}")
        banks[bank_id] = {"name": b["name"], "adapter": b["adapter"], "node": b["node"],
                          "direction": b["direction"], "endpoint": endpoint, "window": 256}
        if b["adapter"] in FRONT_END_ADAPTERS:
            banks[bank_id].update(_front_end(directory, bank_id, b["adapter"], ports[bank_id],
                                             ports.get(f"{bank_id}_sign") or free_port()))
        if b.get("connection") == "per_request":
            peer = ports.get(f"{bank_id}_peer") or free_port()
            # The bank listens for the gateway's requests: at most 16 connections at once.
            banks[bank_id].update(connection="per_request", window=16,
                                  peer_endpoint=f"tcp:127.0.0.1:{peer}")
    accounts, counterparties = _registries(bdc_centre)
    data: dict[str, Any] = {
        "gateway": {"node": "D00000", "database": "sqlite:///var/gateway.db"},
        "tls": {"certificate": "keys/gateway.crt", "private_key": "keys/gateway.key", "ca": "keys/ca.crt"},
        "listen": {"centre_api": f"tcp:{ports['api']}:interface=127.0.0.1",
                   "ops": f"tcp:{ports['ops']}:interface=127.0.0.1",
                   # The centre's existing bdc software connects here (gateway/simulate/bdc_centre.py).
                   "centre_bdc": f"tcp:{ports.get('centre_bdc') or free_port()}:interface=127.0.0.1"},
        "limits": {"max_amount": "50000000.00", "large_amount": "1000000.00", "max_batch": 1000},
        "timeouts": {"heartbeat_interval": 5.0, "dead_after": 15.0, "receipt_timeout": 5.0,
                     "result_timeout": 10.0, "status_query_interval": 2.0, "status_query_attempts": 5,
                     "max_feed_wait": 30.0, "balance_query_interval": 2.0},
        "centres": {CENTRE: {"unit_no": "522400000000000", "name": "示例市住房公积金管理中心"}},
        "banks": banks,
        "accounts": accounts,
        "counterparties": counterparties,
    }
    if bdc_centre:
        notify = (ports or {}).get("bdc_notify") or free_port()
        data["centres"][BDC_CENTRE["id"]] = {"unit_no": BDC_CENTRE["unit_no"], "name": BDC_CENTRE["name"],
                                             "bdc_notify": f"tcp:127.0.0.1:{notify}"}
    if ledger_url:
        data["ledger"] = {"url": ledger_url, "name": "main", "signing_key": "keys/gateway-signing.key"}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "var").mkdir(exist_ok=True)
    path = directory / "gateway.toml"
    private_file(path)
    path.write_text("# Generated by `hpf-gateway demo`; see conf/gateway.example.toml for every key.\n"
                    + render_toml(data), encoding="utf-8")
    return path


# The second city of the province (with --serve): its own gateway, PKI, centre and bank link.
SECOND_CITY = {"key": "north", "name": "示例北市", "gateway": "north", "centre": "C11000", "node": "D00001",
               "unit_no": "110000000000000", "centre_name": "示例北市住房公积金管理中心", "bank": "B001",
               "account": "6200005555666677", "account_name": "示例北市中心归集户"}


def write_second_city_config(directory: Path, ledger_url: str) -> Path:
    """``DIR/north/gateway.toml``: the second city's gateway, with a PKI of its own (its CA trusted by
    the ledger for that gateway only) and the ledger's CA for the ledger's certificate."""
    import tomllib

    from gateway.pki import init_dev_pki
    from gateway.signing import init_signing_key

    c = SECOND_CITY
    city = directory / c["key"]
    init_dev_pki(city / "keys", banks=[c["bank"]], centres=[c["centre"]], gateway=c["gateway"], supervisors=())
    init_signing_key(city / "keys")
    path = write_demo_config(city, ledger_url=ledger_url)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data["gateway"]["node"] = c["node"]
    data["centres"] = {c["centre"]: {"unit_no": c["unit_no"], "name": c["centre_name"]}}
    data["banks"] = {c["bank"]: data["banks"][c["bank"]]}
    data["accounts"] = {c["account"]: {"bank": c["bank"], "centre": c["centre"], "name": c["account_name"],
                                       "type": "collection"}}
    data["ledger"]["ca"] = "../keys/ca.crt"  # the ledger's certificate comes from the province's CA
    path.write_text("# Generated by `hpf-gateway demo --serve`: the second city's gateway.\n" + render_toml(data),
                    encoding="utf-8")
    return path


def write_ledger_config(directory: Path, ports: dict[str, int], *, result_deadline: float = 10.0,
                        second_city: bool = False) -> Path:
    """Write ``DIR/ledger.toml``: the ledger of the demo, trusting the demo gateway's signing key
    (and, with ``second_city``, the second city's gateway under its own CA)."""
    accounts, counterparties = _registries(bdc_centre=True)
    data = {
        "ledger": {"name": "main", "database": "sqlite:///var/ledger.db"},
        "tls": {"certificate": "keys/ledger.crt", "private_key": "keys/ledger.key", "ca": "keys/ca.crt"},
        "listen": {"ingest": f"tcp:{ports['ingest']}:interface=127.0.0.1",
                   "supervisor": f"tcp:{ports['supervisor']}:interface=127.0.0.1",
                   "ops": f"tcp:{ports['ledger_ops']}:interface=127.0.0.1"},
        "gateways": {"main": {"signing_key": "keys/gateway-signing.pub", "signature_alg": "ed25519"}},
        "supervisors": {"sup1": {}},
        "thresholds": {"large_amount": "1000000.00", "result_deadline": result_deadline,
                       "booking_deadline": 86400.0, "balance_tolerance": "0.00"},
        "accounts": accounts,
        "counterparties": counterparties,
    }
    if "console" in ports:
        data["console"] = {"listen": f"tcp:{ports['console']}:interface=127.0.0.1",
                           "cities": {"demo": {"name": "示例市", "centres": [CENTRE, BDC_CENTRE["id"]]}},
                           "staff": {"staff1": {"centre": CENTRE}}}
    if second_city:
        c = SECOND_CITY
        key = c["key"]
        data["gateways"][c["gateway"]] = {"signing_key": f"{key}/keys/gateway-signing.pub",
                                          "signature_alg": "ed25519", "ca": f"{key}/keys/ca.crt"}
        accounts[c["account"]] = {"bank": c["bank"], "centre": c["centre"], "name": c["account_name"],
                                  "type": "collection"}
        if "console" in data:
            data["console"]["cities"][key] = {"name": c["name"], "centres": [c["centre"]]}
    (directory / "var").mkdir(parents=True, exist_ok=True)
    path = directory / "ledger.toml"
    private_file(path)
    path.write_text("# Generated by `hpf-gateway demo`; see conf/ledger.example.toml for every key.\n"
                    + render_toml(data), encoding="utf-8")
    return path


def run_demo(args: argparse.Namespace) -> int:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from gateway.ledger import store as ledger_store
    from gateway.ledger.config import load_ledger_config
    from gateway.ledger.service import makeLedgerService
    from gateway.logs import start_logging
    from gateway.pki import init_dev_pki
    from gateway.service import makeService
    from gateway.signing import init_signing_key
    from gateway.simulate.bank_faults import parse_faults
    from gateway.simulate.centre import run_centre
    from gateway.simulate.centre_bdc_only import NoticeDesk, notice_listener
    from gateway.simulate.run import api_url, bank_service_for, centre_options_for
    from gateway.store import migrate

    try:
        faults = parse_faults(args.bank_faults) if args.bank_faults else frozenset()
    except ValueError as e:
        print(f"hpf-gateway demo: --bank-faults: {e}", file=sys.stderr)
        return 2
    directory = Path(args.dir).resolve()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for private in (directory, directory / "var"):  # logs, configs and databases hold account data
        private.mkdir(mode=0o700, exist_ok=True)
        private.chmod(0o700)
    pki = init_dev_pki(directory / "keys", banks=list(BANKS), centres=[CENTRE, BDC_CENTRE["id"]])
    init_signing_key(directory / "keys")
    ports = {name: free_port() for name in ("ingest", "supervisor", "ledger_ops", "console")}
    if not pki.cert("staff", "staff1").exists():
        from gateway.pki import issue

        issue(pki.ca_cert, pki.ca_key, pki.directory, "staff", "staff1")
    ledger_url = f"https://127.0.0.1:{ports['ingest']}"
    second = load_config(write_second_city_config(directory, ledger_url)) if args.serve else None
    ledger_config = load_ledger_config(write_ledger_config(directory, ports, second_city=second is not None))
    ledger_store.MIGRATIONS.upgrade(ledger_config.database)
    config = load_config(write_demo_config(directory, ledger_url=ledger_url, bdc_centre=True))
    migrate.upgrade(config.database)
    private_file(directory / "gateway.log")
    if second is not None:
        migrate.upgrade(second.database)
    log_file = open(directory / "gateway.log", "a", encoding="utf-8")
    start_logging(log_file, console=False)
    from gateway.daemon import SWITCH_INTERVAL

    sys.setswitchinterval(SWITCH_INTERVAL)  # as the daemons do: the database threads need the GIL back

    ledger = makeLedgerService(ledger_config, reactor)
    gateway = makeService(config, reactor)
    banks = {bank_id: bank_service_for(reactor, config, bank_id, faults=faults, fault_every=args.fault_every)
             for bank_id in BANKS}
    city_services: list[Any] = []
    if second is not None:
        city_gateway = makeService(second, reactor)
        from gateway.simulate.bank import BankCore

        # The same bank in another city: its host serials never meet the first city's.
        serial = (BankCore.serial_start_for(reactor.seconds()) + 5 * 10**11) % (10**12 - 1) + 1
        city_services = [city_gateway.service, bank_service_for(reactor, second, SECOND_CITY["bank"],
                                                                first_serial=serial)]
    ledger.service.startService()
    gateway.service.startService()
    for svc in (*banks.values(), *city_services):
        svc.startService()
    tty = sys.stdout.isatty()
    print(f"hpf-gateway demo in {directory}")
    print(f"  gateway: centre API {api_url(config)}, metrics http://127.0.0.1:{config.ops.split(':')[1]}/metrics")
    print(f"  ledger: supervisor API https://localhost:{ports['supervisor']}, "
          f"console https://localhost:{ports['console']}/, metrics http://127.0.0.1:{ports['ledger_ops']}/metrics")
    for bank_id, b in BANKS.items():
        how = "the gateway listens, the bank dials in" if b["direction"] == "listen" else "the gateway dials the bank"
        if b.get("connection") == "per_request":
            how = "a connection per request, both ways (as deployed)"
        if b["adapter"] in FRONT_END_ADAPTERS:
            signed = "signed on; " if b["adapter"] == "bocb2e" else ""
            how = (f"the gateway posts to the bank's front-end at {config.banks[bank_id].front_end.url} "
                   f"({signed}status, balances and statements polled)")
        print(f"  bank {bank_id} ({b['name']}, {b['adapter']}, node {b['node']}): {how}")
    if faults:
        culprits = [b for b, v in BANKS.items() if v["adapter"] not in FRONT_END_ADAPTERS]
        print(f"  bank offences on purpose: {', '.join(sorted(faults))} (every {args.fault_every} transfers, "
              f"committed by {', '.join(culprits)}; the front-end simulators commit none)")
    print(f"  centre {CENTRE}: submitting {args.count} instructions at {args.rate:g}/s"
          f"{f' in batches of {args.batch}' if args.batch else ''}; logs in {directory / 'gateway.log'}")
    print(f"  centre {CENTRE} also through its bdc software: {max(5, args.count // 10)} BDC109 transfers "
          f"to {config.centre_bdc} (BDC110 for each outcome)")
    print(f"  centre {BDC_CENTRE['id']} speaks only bdc: {max(5, args.count // 10)} BDC109 and 2 BDC102 to "
          f"{config.centre_bdc}; SBDC100 notices pushed to its listener at "
          f"{config.centres[BDC_CENTRE['id']].bdc_notify}")
    if second is not None:
        print(f"  second city {SECOND_CITY['name']}: gateway {SECOND_CITY['gateway']} (its own CA), centre "
              f"{SECOND_CITY['centre']}, bank {SECOND_CITY['bank']}, into the same ledger")

    def progress(line: str) -> None:
        sys.stdout.write(("\r  " + line + "\x1b[K") if tty else "  " + line + "\n")
        sys.stdout.flush()

    outcome: dict[str, Any] = {}

    async def flow() -> None:
        city_run = None
        if second is not None:
            city_run = Deferred.fromCoroutine(run_centre(
                reactor, base_url=api_url(second), count=max(20, args.count // 5), rate=args.rate / 5,
                duration=None, batch=0, seed=int(time.time()) + 1, id_prefix=f"N{int(time.time()) % 10**8:08d}-",
                progress=lambda _: None, final_timeout=60.0,
                **centre_options_for(second, SECOND_CITY["centre"])))
        bdc_run = Deferred.fromCoroutine(_bdc_centre(reactor, config, max(5, args.count // 10)))
        notices = NoticeDesk(BDC_CENTRE["id"])
        options = centre_options_for(config, BDC_CENTRE["id"])
        listening = await notice_listener(reactor, notices, port=int(str(
            config.centres[BDC_CENTRE["id"]].bdc_notify).rsplit(":", 1)[1]), certificate=options["certificate"],
            private_key=options["private_key"], ca=options["ca"])
        bdc_only = Deferred.fromCoroutine(_bdc_centre(reactor, config, max(5, args.count // 10),
                                                      centre=BDC_CENTRE["id"], collections=2))
        # A centre batch that goes to its bdc bank as one bank batch (BDC103, results by BDC107/108).
        bdc_debit = [n for n, a in config.accounts.items()
                     if a.centre == CENTRE and config.banks[a.bank].adapter == "bdc"][:1]
        batch_run = Deferred.fromCoroutine(run_centre(
            reactor, base_url=api_url(config), count=BANK_BATCH_LINES, rate=BANK_BATCH_LINES / 2.0, duration=None,
            batch=BANK_BATCH_LINES // 2, bank_batch=True, seed=int(time.time()) + 2,
            id_prefix=f"K{int(time.time()) % 10**8:08d}-", progress=lambda _: None, final_timeout=60.0,
            **dict(centre_options_for(config, CENTRE), debit_accounts=bdc_debit)))
        outcome["report"] = await run_centre(
            reactor, base_url=api_url(config), count=args.count, rate=args.rate, duration=None,
            batch=args.batch, seed=int(time.time()), id_prefix=f"D{int(time.time()) % 10**8:08d}-",
            progress=progress, final_timeout=60.0, **centre_options_for(config, CENTRE))
        outcome["bdc_centre"] = await bdc_run
        outcome["bank_batch"] = await batch_run
        outcome["bdc_only"] = only = await bdc_only
        # Every movement of its succeeded transfers comes back to it as SBDC100 notices.
        until = time.monotonic() + 60
        while not only.hosts <= notices.host_serials() and time.monotonic() < until:
            await _sleep(reactor, 0.5)
        outcome["notices"] = notices
        if not args.serve:  # serving, the centre keeps taking notices
            await listening.stopListening()
        if city_run is not None:
            outcome["second_city"] = await city_run
        # Let copies reach the ledger and its deadline rules run (result_deadline + a tick).
        settle = time.monotonic() + 45
        while time.monotonic() < settle:
            backlog = gateway.metrics.ledger_backlog._value.get()
            if backlog == 0 and not faults:
                break
            # Some rules judge at a deadline (unsolicited-debit: result_deadline after the
            # movement), so wait for every offence's alert, not just the first of each rule.
            if backlog == 0 and faults and not _shortfall(_by_rule(await _alerts(ledger)), _committed(banks),
                                                           faults):
                break
            await _sleep(reactor, 0.5)
        outcome["alerts"] = await _alerts(ledger)

    def finished(_: Any) -> None:
        if not args.serve or "error" in outcome:
            # A demo that failed part-way may leave a simulated party mid-conversation; its
            # services get SHUTDOWN_GRACE seconds to stop, then the demo exits anyway, saying so.
            reactor.callLater(SHUTDOWN_GRACE, _give_up, outcome)
            reactor.stop()

    d = Deferred.fromCoroutine(flow())
    d.addErrback(lambda f: outcome.setdefault("error", f))
    d.addBoth(lambda _: _summary(outcome, banks, config, directory, args.serve, faults))
    if args.serve:
        d.addBoth(lambda _: _console_help(directory, ports["console"]))
    d.addBoth(finished)
    for svc in (*banks.values(), *city_services, gateway.service, ledger.service):
        reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    reactor.run()
    log_file.close()
    return outcome.get("status", 1)


SHUTDOWN_GRACE = 30.0
"""Seconds the demo's services have to stop before it exits without them."""


def _give_up(outcome: dict[str, Any]) -> None:
    import os

    print(f"the demo's services did not stop within {SHUTDOWN_GRACE:.0f} s; exiting without them", file=sys.stderr)
    sys.stdout.flush()
    os._exit(outcome.get("status", 1))


def write_browser_identity(keys: Path, role: str, name: str) -> tuple[Path, str]:
    """``keys/ROLE-NAME.p12`` (mode 0600) for importing into a browser, and its one-time password."""
    import os
    import secrets

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    cert = x509.load_pem_x509_certificate((keys / f"{role}-{name}.crt").read_bytes())
    key = serialization.load_pem_private_key((keys / f"{role}-{name}.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((keys / "ca.crt").read_bytes())
    password = secrets.token_urlsafe(12)
    data = pkcs12.serialize_key_and_certificates(
        f"hpf {role} {name}".encode(), key, cert, [ca],  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(password.encode()))
    path = keys / f"{role}-{name}.p12"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    return path, password


def _console_help(directory: Path, port: int) -> None:
    keys = directory / "keys"
    sup, sup_password = write_browser_identity(keys, "supervisor", "sup1")
    staff, staff_password = write_browser_identity(keys, "staff", "staff1")
    print(f"\nthe supervision console: https://localhost:{port}/  (中文; English: ?lang=en)\n")
    print("  it asks your browser for a client certificate. Import the supervisor's into your browser")
    print("  (Chrome/Chromium: Settings > Privacy and security > Security > Manage certificates > Import;")
    print("  Firefox: Settings > Privacy & Security > Certificates > View Certificates > Your Certificates > Import):\n")
    print(f"    {sup}   one-time password: {sup_password}")
    print(f"    centre staff ({CENTRE}): {staff}   one-time password: {staff_password}\n")
    print(f"  and trust the demo CA for the ledger's own certificate, or accept the warning: {keys / 'ca.crt'}")
    print(f"  (or the PEM pair: {keys / 'supervisor-sup1.crt'} and {keys / 'supervisor-sup1.key'})")


def _sleep(reactor: Any, seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


async def _alerts(ledger: Any) -> list[dict[str, Any]]:
    from gateway.ledger import store as ledger_store

    return await ledger.db.read(lambda c: ledger_store.list_alerts(c, state=None, rule=None, since_us=None,
                                                                   after_id=0, limit=10_000))


async def _bdc_centre(reactor: Any, config: Any, count: int, *, centre: str = CENTRE, collections: int = 0) -> Any:
    """A centre's bdc software sends ``count`` transfers (and ``collections`` BDC102 from its
    second account into its first) to the gateway's centre_bdc listener."""
    from gateway.simulate.bdc_centre import run_bdc_centre
    from gateway.simulate.run import centre_options_for

    options = centre_options_for(config, centre)
    own = [(n, config.accounts[n].name, config.banks[config.accounts[n].bank].node) for n in options["debit_accounts"]]
    collect = None
    if collections and len(own) > 1:
        payer = config.accounts[own[1][0]]
        collect = ((own[1][0], payer.name, payer.bank_code), (own[0][0], own[0][1]))
    return await run_bdc_centre(
        reactor, port=int(str(config.centre_bdc).split(":")[1]), certificate=options["certificate"],
        private_key=options["private_key"], ca=options["ca"], centre_id=centre,
        unit_no=config.centres[centre].unit_no, debit_accounts=own, counterparties=options["counterparties"],
        count=count, collections=collections, collect=collect)


def _committed(banks: dict[str, Any]) -> dict[str, int]:
    """The offences the simulated banks committed, by fault."""
    committed: dict[str, int] = {}
    for svc in banks.values():
        for fault, n in (svc.link.stats().get("faults", {}).get("committed") or {}).items():
            committed[fault] = committed.get(fault, 0) + n
    return committed


def _shortfall(by_rule: dict[str, int], committed: dict[str, int], faults: frozenset[str]) -> list[str]:
    """What the ledger's alerts lack against the offences: empty when each raised its alert.

    Each offence must raise its rule's alert exactly once per offence (balance
    drift aside, judged per snapshot interval: at least once); no other rule may fire.
    """
    missing = sorted(f for f in faults if FAULT_RULES[f] not in by_rule)
    wrong = sorted(f for f in faults if f != "balance-break" and by_rule.get(FAULT_RULES[f], 0) != committed.get(f, 0))
    stray = sorted(set(by_rule) - {FAULT_RULES[f] for f in faults})
    missing += [f"{f} (alerts {by_rule.get(FAULT_RULES[f], 0)} != offences {committed.get(f, 0)})" for f in wrong]
    missing += [f"unexpected {r}" for r in stray]
    return missing


def _by_rule(alerts: list[dict[str, Any]]) -> dict[str, int]:
    by_rule: dict[str, int] = {}
    for a in alerts:
        by_rule[a["rule"]] = by_rule.get(a["rule"], 0) + 1
    return by_rule


def _summary(outcome: dict[str, Any], banks: dict[str, Any], config: Any, directory: Path,
             serve: bool, faults: frozenset[str]) -> None:
    print()
    if "error" in outcome:
        print(f"demo failed: {outcome['error'].getErrorMessage()}")
        outcome["status"] = 1
        return
    report = outcome["report"]
    print(report.summary())
    twice = 0
    for bank_id, svc in banks.items():
        stats = svc.link.stats()
        executions = stats.get("executions", {}) or {}
        twice += sum(1 for n in executions.values() if n > 1)
        print(f"  bank {bank_id}: executed {stats.get('executed', '?')}, duplicates answered "
              f"{stats.get('duplicates', '?')}, max executions per reference "
              f"{max(executions.values(), default=0)}")
    by_rule = _by_rule(outcome.get("alerts", []))
    committed = _committed(banks)
    print("  ledger alerts by rule: " + (", ".join(f"{r} {n}" for r, n in sorted(by_rule.items())) or "none"))
    if faults:
        print("  offences the banks committed: " + ", ".join(f"{f} {committed.get(f, 0)}" for f in sorted(faults)))
    missing = _shortfall(by_rule, committed, faults)
    expected_twice = "duplicate-execution" in faults
    bdc = outcome["bdc_centre"]
    print(f"  centre {CENTRE} through its bdc software (BDC109, then BDC110): submitted {bdc.submitted}, "
          f"succeeded {bdc.succeeded}, failed {bdc.failed}, not final {bdc.not_final}, refused {bdc.refused}")
    only, notices = outcome["bdc_only"], outcome["notices"]
    unnotified = only.hosts - notices.host_serials()
    print(f"  centre {BDC_CENTRE['id']}, bdc only (BDC109 and BDC102, then BDC110): submitted {only.submitted}, "
          f"succeeded {only.succeeded}, failed {only.failed}, not final {only.not_final}, refused {only.refused}; "
          f"SBDC100 notices {notices.notices} with {len(notices.lines)} lines ({notices.repeated_lines} repeated, "
          f"skipped), succeeded transfers without their notice line {len(unnotified)}")
    batch = outcome["bank_batch"]
    print(f"  centre {CENTRE}, two batches sent as bank batches to its bdc bank: submitted {batch.submitted}, "
          f"accepted {batch.accepted}, succeeded {batch.succeeded}, failed {batch.failed}, "
          f"not final {batch.not_final}, duplicate finals {batch.duplicate_finals}")
    city = outcome.get("second_city")
    if city is not None:
        print(f"  second city {SECOND_CITY['centre']} (gateway {SECOND_CITY['gateway']}): submitted {city.submitted}, "
              f"succeeded {city.succeeded}, not final {city.not_final}, duplicate finals {city.duplicate_finals}")
    ok = (report.not_final == 0 and report.duplicate_finals == 0 and (twice == 0 or expected_twice)
          and bdc.not_final == 0 and bdc.refused == 0
          and batch.accepted == batch.submitted and batch.not_final == 0 and batch.duplicate_finals == 0
          and only.not_final == 0 and only.refused == 0 and not unnotified and notices.refused == 0
          and not missing and (city is None or (city.not_final == 0 and city.duplicate_finals == 0)))
    if missing:
        print(f"  offences without their alert: {', '.join(missing)}")
    print("every instruction reached a final state" + ("" if expected_twice else ", none executed twice")
          + (", every offence raised its alert" if faults else "") if ok else
          "NOT as expected: see above and the log")
    outcome["status"] = 0 if ok else 1
    if serve:
        from gateway.simulate.run import api_url

        keys = directory / "keys"
        url = api_url(config)
        body = json.dumps({"instruction_id": f"CURL{int(time.time())}", "debit_account": "6200001111222233",
                           "creditor": {"account": "6200009999000011", "name": "张三",
                                        "bank_code": "105100000017"},
                           "amount": "100.00", "purpose": "withdrawal"}, ensure_ascii=False)
        print("\nstill serving (Ctrl-C to stop). Submit one yourself:\n")
        auth = f"--cert {keys}/centre-{CENTRE}.crt --key {keys}/centre-{CENTRE}.key --cacert {keys}/ca.crt"
        print(f"  curl {auth} -H 'content-type: application/json' -d '{body}' {url}/v1/instructions\n")
        print(f"  and follow the results feed:\n\n  curl {auth} '{url}/v1/results?after=0&wait=30'\n")
