"""The soak: hours of steady load with faults injected every few minutes, then counting.

    python -m bench.soak --minutes 60 --rate 40 [--fault-every 180] [--dir DIR]

Runs the gateway and one simulated bank per adapter as real processes,
drives a simulated centre at a steady rate for the whole run, and every
``--fault-every`` seconds injects the next fault in turn: SIGKILL the
gateway and restart it; SIGSTOP a bank past the dead-peer timeout, then
SIGCONT (the link drops and comes back); SIGSTOP the gateway for ten
seconds.  Banks are never restarted: the simulated bank keeps its dedupe
memory in its process, as a real bank keeps it in its host.  At the end it waits for every accepted instruction to be
final, then counts from the banks' own execution counters and the centre's
results feed: processed, lost (accepted but never final; must be 0),
executed twice (must be 0), and the gateway's RSS at the start and end of
each of its lives.  It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gateway.demo import BANKS
from tests.kit import procs


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Centre(threading.Thread):
    """Submits at a steady rate with idempotent retries; remembers every 2xx."""

    def __init__(self, config: Any, rate: float, until: float) -> None:
        super().__init__(daemon=True)
        self.config, self.rate, self.until = config, rate, until
        self.accepted: set[str] = set()
        self.refused = 0
        self.n = 0

    def run(self) -> None:
        accounts = [n for n, a in self.config.accounts.items()]
        payees = list(self.config.counterparties.items())
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while time.monotonic() < self.until:
            self.n += 1
            iid = f"SOAK{self.n:08d}"
            account, (payee, cp) = accounts[self.n % len(accounts)], payees[self.n % len(payees)]
            body = {"instruction_id": iid, "debit_account": account, "amount": f"{1 + self.n % 500}.00",
                    "creditor": {"account": payee, "name": cp.name, "bank_code": cp.bank_code},
                    "purpose": "withdrawal"}
            for _attempt in range(20):  # the same id and body until the gateway answers
                try:
                    status, _, _ = procs.centre_call(self.config, "POST", "/v1/instructions", body, timeout=5)
                except OSError:
                    time.sleep(0.5)
                    continue
                if status in (200, 202):
                    self.accepted.add(iid)
                else:
                    self.refused += 1
                break
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=40.0, help="instructions per second")
    p.add_argument("--fault-every", type=float, default=180.0, help="seconds between faults")
    p.add_argument("--dir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    work = Path(args.dir or tempfile.mkdtemp(prefix="hpf-soak-"))
    config = procs.prepare(work, timeouts={"dead_after": 6.0, "heartbeat_interval": 2.0})
    gateway = procs.gateway(config).start()
    banks = {b: procs.bank(config, b).start() for b in BANKS}
    lives: list[dict[str, Any]] = []
    started = time.monotonic()
    procs.wait_http(procs.ops_url(config, "/readyz"), timeout=30)
    time.sleep(3)
    life = {"pid": gateway.pid, "rss_start_kb": rss_kb(gateway.pid)}
    centre = Centre(config, args.rate, started + args.minutes * 60)
    centre.start()
    faults = ["kill-gateway", "pause-bank", "pause-gateway"]
    log: list[str] = []
    k = 0
    try:
        while centre.is_alive():
            time.sleep(min(args.fault_every, max(0.0, started + args.minutes * 60 - time.monotonic())))
            if not centre.is_alive():
                break
            fault = faults[k % len(faults)]
            bank_id = list(BANKS)[k % len(BANKS)]
            k += 1
            stamp = f"{time.monotonic() - started:7.0f}s {fault}"
            if fault == "kill-gateway":
                life["rss_end_kb"] = rss_kb(gateway.pid)
                lives.append(life)
                gateway.kill()
                gateway = procs.gateway(config, tag=f"-{k}").start()
                procs.wait_http(procs.ops_url(config, "/readyz"), timeout=60)
                time.sleep(3)
                life = {"pid": gateway.pid, "rss_start_kb": rss_kb(gateway.pid)}
            elif fault == "pause-bank":
                banks[bank_id].signal(signal.SIGSTOP)
                time.sleep(10)
                banks[bank_id].signal(signal.SIGCONT)
                stamp += f" {bank_id}"
            else:
                gateway.signal(signal.SIGSTOP)
                time.sleep(10)
                gateway.signal(signal.SIGCONT)
            log.append(stamp)
            print(stamp, flush=True)
        centre.join()
        # Every accepted instruction must become final.
        deadline = time.monotonic() + 300
        finals: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            finals, cursor = {}, 0
            while True:
                _, page, _ = procs.centre_call(config, "GET", f"/v1/results?after={cursor}&limit=1000", timeout=30)
                for r in page["results"]:
                    if r["state"] in ("succeeded", "failed", "rejected"):
                        finals.setdefault(r["instruction_id"], []).append(r["state"])
                if not page["results"]:
                    break
                cursor = page["next"]
            if centre.accepted <= set(finals):
                break
            time.sleep(5)
        life["rss_end_kb"] = rss_kb(gateway.pid)
        lives.append(life)
        time.sleep(2)  # the banks write their stats every second
        summed: dict[str, int] = {}
        for path in work.glob("bank-*.json"):
            for ref, n in (json.loads(path.read_text()).get("executions") or {}).items():
                summed[ref] = summed.get(ref, 0) + n
        report = {
            "minutes": args.minutes, "rate": args.rate, "faults": log,
            "submitted": centre.n, "accepted": len(centre.accepted), "refused": centre.refused,
            "final": len(finals), "lost": len(centre.accepted - set(finals)),
            "final_twice_on_feed": sum(1 for v in finals.values() if len(v) > 1),
            "executed": len(summed),
            "executed_twice": sum(1 for n in summed.values() if n > 1),
            "gateway_lives": lives,
        }
    finally:
        gateway.kill()
        for b in banks.values():
            b.kill()
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
