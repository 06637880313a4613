"""Several gateway nodes on one PostgreSQL: a bank link fails over, and a stale owner is fenced.

Three ``hpf-gateway run`` processes share keys and one database and differ
only in ``[gateway] instance`` and their ports.  Both banks are dialled by
whichever node holds the bank's lease; the simulated banks listen on fixed
ports.  A centre submits instructions to every node in turn, retrying the
same instruction id and body on another node when a node does not answer.

Then the owner of ``bank:B001`` is SIGKILLed (another node must take the
link over within 5 s), the killed node is restarted, and the new owner is
SIGSTOPped for longer than the lease TTL (a third node takes over).  While
it is paused, everything accepted for the banks is settled and the load
stops; after SIGCONT the stale node must notice it lost the lease, and no
node may record a send any more (the only node that could still send is the
stale one, as everything else has nothing left to send; its claims are
fenced).  A frame the stale node handed to its socket *before* the pause may
still leave after it, as a frame delayed on the network would: fencing stops
decisions to send, not bytes already written.  So the banks may see such a
frame late, but never a frame of a reference more often than sends of it were
recorded under a held lease, and the bank answers it as the duplicate it is.

At the end, counted at the bank and on the centre's feed: no reference
executed twice, every accepted instruction final, each final once on the
feed, the journal chain intact.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import threading
import time
import tomllib
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.config import GatewayConfig, load_config, render_toml
from gateway.ledger.verify import verify_database
from tests.faults.harness import free_port, wait_until
from tests.kit import procs

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE_TTL = 3.0
TAKEOVER_LIMIT = 5.0
BANKS = ("B001", "B002")
# The demo's registered accounts, one per bank; the creditor is a registered counterparty.
DEBIT = {"B001": "6200001111222233", "B002": "6222002222333344"}
CREDITOR = {"account": "6200009999000011", "name": "张三", "bank_code": "105100000017"}
FINAL = frozenset({"succeeded", "failed"})
FENCING_EVENTS = frozenset({"relay.fenced", "lease.taken_over", "lease.expiring"})
# A node that is dead, paused or refusing: try the same instruction on another node.
_TRANSPORT_ERRORS = (OSError, ssl.SSLError, HTTPException, TimeoutError, socket.timeout)


# -- the nodes ---------------------------------------------------------------------


@dataclass
class Node:
    """One gateway process (restartable) and its config."""

    name: str
    config: GatewayConfig
    proc: procs.Proc | None = None
    paused: bool = False

    def start(self) -> None:
        self.proc = procs.gateway(self.config, tag=f"-{self.name}").start()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.signal(sig)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # SIGKILL also ends a stopped process

    def log_path(self) -> Path:
        return self.config.path.parent / f"gateway-{self.name}.log"

    def events(self, offset: int = 0) -> list[dict[str, Any]]:
        """The node's JSON log events from byte ``offset`` on (non-JSON lines skipped)."""
        out = []
        with open(self.log_path(), "rb") as f:
            f.seek(offset)
            for line in f.read().decode("utf-8", "replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    out.append(event)
        return out

    def log_size(self) -> int:
        return self.log_path().stat().st_size


def _node_configs(tmp: Path, url: str, names: list[str]) -> list[GatewayConfig]:
    """One config per node: shared keys, database and banks; own instance name and ports.

    B001 becomes a bank the gateway dials (like B002), so whichever node owns
    the lease can reach the one simulated bank; the demo's third bank is left
    out (nobody plays it here).
    """
    base = procs.prepare(tmp, timeouts={"lease_ttl": LEASE_TTL})
    data = tomllib.loads(base.path.read_text(encoding="utf-8"))
    data["banks"] = {b: data["banks"][b] for b in BANKS}
    # A persistent link (bdc's opt-in): the test watches one session move from node to node.
    data["banks"]["B001"].update(direction="connect", endpoint=f"tcp:127.0.0.1:{free_port()}",
                                 connection="persistent")
    data["banks"]["B001"].pop("peer_endpoint", None)
    data["accounts"] = {n: a for n, a in data["accounts"].items() if a["bank"] in BANKS}
    data["gateway"]["database"] = url
    out = []
    for name in names:
        data["gateway"]["instance"] = name
        data["listen"]["centre_api"] = f"tcp:{free_port()}:interface=127.0.0.1"
        data["listen"]["ops"] = f"tcp:{free_port()}:interface=127.0.0.1"
        if "centre_bdc" in data["listen"]:  # the centres' bdc listener: each node its own port
            data["listen"]["centre_bdc"] = f"tcp:{free_port()}:interface=127.0.0.1"
        path = tmp / f"{name}.toml"
        path.write_text(render_toml(data), encoding="utf-8")
        out.append(load_config(path))
    return out


def _scrape(node: Node) -> dict[str, float]:
    """The node's /metrics as {sample with labels: value}; raises when it does not answer in 1 s."""
    with urllib.request.urlopen(procs.ops_url(node.config, "/metrics"), timeout=1.0) as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            samples[head] = float(value)
    return samples


def _link_up(node: Node, bank: str) -> bool:
    return _scrape(node).get(f'hpf_gateway_bank_link_up{{bank="{bank}"}}', 0.0) == 1.0


def _wait_links(nodes: list[Node], what: str, timeout: float) -> None:
    """Wait until each bank's link is up on one of ``nodes`` (none of them may be paused)."""
    for bank in BANKS:
        wait_until(lambda b=bank: any(_link_up(n, b) for n in nodes), f"{bank}'s link up {what}", timeout)


@dataclass(frozen=True)
class Lease:
    """A lease row as the test reads it."""

    owner: str
    epoch: int
    live: bool  # not expired by this machine's clock (all nodes share it)


def _lease(engine: sa.Engine, name: str) -> Lease | None:
    with engine.connect() as c:
        row = c.execute(sa.text("SELECT owner, epoch, expires_us FROM leases WHERE name = :n"),
                        {"n": name}).first()
    if row is None:
        return None
    return Lease(row.owner, row.epoch, row.expires_us >= int(time.time() * 1_000_000))


def _open_instructions(engine: sa.Engine) -> list[tuple[Any, ...]]:
    """Instructions not yet final: (row id, instruction id, bank, state, sends), oldest first."""
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(
            "SELECT id, instruction_id, bank_id, state, sends FROM instructions "
            "WHERE state NOT IN ('succeeded', 'failed', 'rejected') ORDER BY id"))]


class _Settled:
    """A check for :func:`_wait`: true once nothing is open; :meth:`explain` names what still is."""

    def __init__(self, engine: sa.Engine, created_on: Mapping[str, str]) -> None:
        self.engine = engine
        self.created_on = created_on
        self.open: list[tuple[Any, ...]] = []

    def __call__(self) -> bool:
        self.open = _open_instructions(self.engine)
        return not self.open

    def explain(self) -> str:
        owners = {b: _lease(self.engine, f"bank:{b}") for b in BANKS}
        rows = [(*row, self.created_on.get(row[1], "?")) for row in self.open[:12]]
        with self.engine.connect() as c:
            # A node paused inside a transaction keeps its row locks unless the server ends it.
            stuck = [tuple(r) for r in c.execute(sa.text(
                "SELECT pid, state, now() - state_change, left(query, 80) FROM pg_stat_activity "
                "WHERE datname = current_database() AND state LIKE 'idle in transaction%'"))]
        return (f"{len(self.open)} open (id, instruction, bank, state, sends, created on): {rows}; "
                f"leases: {owners}; sessions idle in transaction: {stuck}")


def _instruction_frames(config: GatewayConfig, bank: str) -> int:
    """Instruction frames the simulated bank has received so far (from its stats file)."""
    return int(procs.bank_stats(config, bank).get("link", {}).get("frames_in.Instruction", 0))


def _frames_by_reference(config: GatewayConfig, bank: str) -> Counter[str]:
    """Instruction frames the simulated bank has received, per reference: the first, then each
    resend it answered as a duplicate."""
    stats = procs.bank_stats(config, bank)
    frames: Counter[str] = Counter({ref: 1 for ref in stats.get("received_references", [])})
    frames.update(stats.get("duplicates_by_reference", {}))
    return frames


def _recorded_sends(engine: sa.Engine) -> Counter[str]:
    """Sends recorded in the store per reference (each one a claim fenced by the bank's lease)."""
    with engine.connect() as c:
        return Counter({r.bank_ref: r.sends for r in c.execute(sa.text(
            "SELECT bank_ref, sends FROM instructions WHERE sends > 0"))})


# -- the centre ----------------------------------------------------------------------


@dataclass
class Submitter:
    """A centre submitting to every node in turn from a thread; a node that fails is retried elsewhere.

    On a transport error or a 503 the same id and body go to the next node
    (the centre's idempotent retry), and the failing node is skipped for a
    while, as a client would.  ``accepted`` maps every id answered 2xx to
    its bank reference, ``created_on`` every id answered 202 to the node that created it.
    """

    nodes: list[Node]
    interval: float = 0.05
    attempt_timeout: float = 1.5
    give_up_after: float = 20.0
    accepted: dict[str, str] = field(default_factory=dict)
    created_on: dict[str, str] = field(default_factory=dict)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    submitted: int = 0
    retried_elsewhere: int = 0
    unanswered: list[str] = field(default_factory=list)
    _cooldown: dict[str, float] = field(default_factory=dict)
    _running: threading.Event = field(default_factory=threading.Event)  # set: keep submitting
    _stop: threading.Event = field(default_factory=threading.Event)
    _idle: threading.Event = field(default_factory=threading.Event)     # set: no instruction in hand
    _thread: threading.Thread | None = None
    _rr: int = 0
    error: BaseException | None = None

    def start(self) -> None:
        self._idle.set()
        self._thread = threading.Thread(target=self._loop, name="centre", daemon=True)
        self._thread.start()

    def resume(self) -> None:
        self._running.set()

    def pause(self) -> None:
        """Stop submitting; returns once the instruction in hand (with its retries) is answered."""
        self._running.clear()
        self._idle.wait(self.give_up_after + 5)

    def close(self) -> None:
        self._running.clear()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.give_up_after + 5)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._running.wait(0.1):
                    continue
                self._idle.clear()
                try:
                    if self._running.is_set():
                        self._submit_one()
                finally:
                    self._idle.set()
                time.sleep(self.interval)
        except Exception as e:  # noqa: BLE001 (surfaced by the test through .error, never swallowed)
            self.error = e

    def _submit_one(self) -> None:
        self.submitted += 1
        n = self.submitted
        bank = BANKS[n % len(BANKS)]
        body = {"instruction_id": f"FO-{n:05d}", "debit_account": DEBIT[bank], "creditor": CREDITOR,
                "amount": f"{1 + n % 97}.{n % 100:02d}", "purpose": "withdrawal"}
        self.bodies[body["instruction_id"]] = body
        deadline = time.monotonic() + self.give_up_after
        first = True
        while time.monotonic() < deadline:
            node = self._next_node()
            if node is None:
                time.sleep(0.05)
                continue
            if not first:
                self.retried_elsewhere += 1
            first = False
            try:
                status, rec, _ = procs.centre_call(node.config, "POST", "/v1/instructions", body,
                                                   timeout=self.attempt_timeout)
            except _TRANSPORT_ERRORS:
                self._cooldown[node.name] = time.monotonic() + 3.0
                continue
            self.statuses[status] += 1
            if status == 503:
                self._cooldown[node.name] = time.monotonic() + 1.0
                continue
            if 200 <= status < 300:
                self.accepted[body["instruction_id"]] = rec["bank_ref"]
            if status == 202:
                self.created_on[body["instruction_id"]] = node.name
            return
        self.unanswered.append(body["instruction_id"])

    def _next_node(self) -> Node | None:
        now = time.monotonic()
        for _ in range(len(self.nodes)):
            node = self.nodes[self._rr % len(self.nodes)]
            self._rr += 1
            if self._cooldown.get(node.name, 0.0) <= now:
                return node
        return None


def _feed(config: GatewayConfig) -> list[dict[str, Any]]:
    """The centre's whole results feed, from the start."""
    entries: list[dict[str, Any]] = []
    after = 0
    while True:
        status, body, _ = procs.centre_call(config, "GET", f"/v1/results?after={after}&limit=1000")
        assert status == 200, body
        if not body["results"]:
            return entries
        entries.extend(body["results"])
        after = body["next"]


# -- the test ---------------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"[failover] {text}", flush=True)


def _takeover(engine: sa.Engine, lease: str, bank: str, gone: Node, candidates: list[Node],
              since: float) -> tuple[Node, Lease, float]:
    """Wait until a live candidate owns ``lease`` and has ``bank``'s link up; (node, lease, seconds)."""
    by_name = {n.name: n for n in candidates}

    def owned() -> tuple[Node, Lease] | None:
        row = _lease(engine, lease)
        if row is None or not row.live or row.owner == gone.name or row.owner not in by_name:
            return None
        node = by_name[row.owner]
        return (node, row) if _link_up(node, bank) else None

    node, row = wait_until(owned, f"another node owns {lease} with its link up", TAKEOVER_LIMIT + 5, 0.05)
    return node, row, time.monotonic() - since


def test_bank_link_fails_over_and_a_paused_owner_is_fenced_without_double_execution(
        tmp_path: Path, pg_url: str) -> None:
    """Kill the owner, then pause the next one: takeover within 5 s, no stale send, nothing lost or doubled."""
    started = time.monotonic()
    configs = _node_configs(tmp_path, pg_url, ["gw-a", "gw-b", "gw-c"])
    nodes = [Node(c.instance, c) for c in configs]
    # B001 answers only when the transfer is done, 0.8 s later: a node dying leaves instructions on
    # the wire without a receipt, which the next owner resends under the same reference (G2).
    # B002 gives a receipt at once and pushes the result later, to whichever session is newest.
    banks = {
        "B001": procs.bank(configs[0], "B001", "--delay", "0.8", "--reply-within", "1.0"),
        "B002": procs.bank(configs[0], "B002", "--delay", "0.5", "--failure-rate", "0.1", "--seed", "7"),
    }
    engine = sa.create_engine(pg_url)
    centre = Submitter(nodes)
    timings: dict[str, float] = {}
    try:
        for b in banks.values():
            b.start()
        for node in nodes:
            node.start()
        for node in nodes:
            procs.wait_http(procs.ops_url(node.config, "/readyz"), timeout=20)
        _wait_links(nodes, "on a node", 15)
        _say(f"3 nodes up, both links up after {time.monotonic() - started:.1f}s")

        centre.start()
        centre.resume()
        time.sleep(3.0)

        # 1. The owner of B001 dies: another node takes the link over within the TTL (and 5 s).
        owner = _lease(engine, "bank:B001")
        assert owner is not None and owner.live
        victim = next(n for n in nodes if n.name == owner.owner)
        t0 = time.monotonic()
        victim.kill()
        survivors = [n for n in nodes if n is not victim]
        heir, heir_lease, timings["takeover_after_kill_s"] = _takeover(
            engine, "bank:B001", "B001", victim, survivors, t0)
        _say(f"SIGKILL {victim.name} (epoch {owner.epoch}) -> {heir.name} owns bank:B001 at epoch "
             f"{heir_lease.epoch}, link up after {timings['takeover_after_kill_s']:.2f}s")
        assert timings["takeover_after_kill_s"] <= TAKEOVER_LIMIT
        assert heir_lease.epoch > owner.epoch
        _wait_links(survivors, "on a survivor", 10)  # B002 too, in case the victim owned it

        # The killed node comes back (same instance name) and serves the API again.
        victim.start()
        procs.wait_http(procs.ops_url(victim.config, "/readyz"), timeout=20)
        time.sleep(2.0)

        # 2. The new owner is paused for longer than the TTL: a third node takes over.
        stale = heir
        t1 = time.monotonic()
        stale.signal(signal.SIGSTOP)
        stale.paused = True
        others = [n for n in nodes if n is not stale]
        third, third_lease, timings["takeover_after_pause_s"] = _takeover(
            engine, "bank:B001", "B001", stale, others, t1)
        _say(f"SIGSTOP {stale.name} -> {third.name} owns bank:B001 at epoch {third_lease.epoch}, "
             f"link up after {timings['takeover_after_pause_s']:.2f}s")
        assert timings["takeover_after_pause_s"] <= TAKEOVER_LIMIT
        assert third_lease.epoch > heir_lease.epoch
        _wait_links(others, "beside the paused node", 10)
        time.sleep(1.0)

        # Settle everything while the stale node is still paused: afterwards only it could send.
        centre.pause()
        settled = _Settled(engine, centre.created_on)
        wait_until(settled, "every instruction settled during the pause", 15, 0.1, settled.explain)
        time.sleep(1.3)  # the simulators write their stats every second
        frames_before = {b: _instruction_frames(configs[0], b) for b in BANKS}
        sends_before = _recorded_sends(engine)
        paused_for = time.monotonic() - t1
        assert paused_for > LEASE_TTL
        mark = stale.log_size()
        stale.signal(signal.SIGCONT)
        stale.paused = False
        t2 = time.monotonic()

        def noticed() -> list[str]:
            return [e["event"] for e in stale.events(mark) if e.get("event") in FENCING_EVENTS]

        fencing = wait_until(noticed, f"{stale.name} notices it lost bank:B001 after SIGCONT", 10, 0.05)
        wait_until(lambda: not _link_up(stale, "B001"), f"{stale.name} drops B001's link", 5, 0.05)
        timings["fenced_after_resume_s"] = time.monotonic() - t2
        time.sleep(2.5)  # let anything the stale node might still send reach the bank and its stats
        frames_after = {b: _instruction_frames(configs[0], b) for b in BANKS}
        now_b001 = _lease(engine, "bank:B001")
        _say(f"SIGCONT {stale.name} after {paused_for:.1f}s paused: {sorted(set(fencing))} within "
             f"{timings['fenced_after_resume_s']:.2f}s; instruction frames at the banks {frames_before} -> "
             f"{frames_after}")
        sends_after = _recorded_sends(engine)
        late = {b: frames_after[b] - frames_before[b] for b in BANKS}
        _say(f"sends recorded {sum(sends_before.values())} -> {sum(sends_after.values())}; frames that "
             f"reached a bank after SIGCONT {late} (written before the pause)")
        # The promise: no send decided after the lease was lost (every claim is fenced in the
        # store), and no frame at a bank without its recorded send.
        assert sends_after == sends_before, "a send was recorded after every instruction settled"
        for b in BANKS:
            over = {ref: (n, sends_after[ref]) for ref, n in _frames_by_reference(configs[0], b).items()
                    if n > sends_after[ref]}
            assert over == {}, f"{b} received frames of a reference beyond its recorded sends: {over}"
            assert late[b] <= configs[0].banks[b].window, late  # at most what one node had in flight
        assert now_b001 is not None and now_b001.owner == third.name and now_b001.epoch == third_lease.epoch
        assert not _link_up(stale, "B001")

        # 3. Everyone, the stale node included, keeps serving the centre.
        centre.resume()
        time.sleep(2.0)
        centre.pause()
        centre.close()
        assert centre.error is None, centre.error
        wait_until(settled, "every instruction settled at the end", 20, 0.1, settled.explain)

        # The centre's retry of an answered instruction on another node: same record, nothing new.
        retried = 0
        for iid, creator in list(centre.created_on.items())[::25]:
            other = next(n for n in nodes if n.name != creator)
            status, rec, _ = procs.centre_call(other.config, "POST", "/v1/instructions", centre.bodies[iid])
            assert (status, rec["bank_ref"], rec["state"] in FINAL) == (200, centre.accepted[iid], True), rec
            retried += 1
        assert retried >= 3 and _open_instructions(engine) == []
        time.sleep(1.3)

        # -- counting ------------------------------------------------------------------
        live = next(n for n in nodes if not n.paused)
        feed = _feed(live.config)
        last_state: dict[str, str] = {}
        finals: Counter[tuple[str, str]] = Counter()
        for entry in feed:
            last_state[entry["instruction_id"]] = entry["state"]
            if entry["state"] in FINAL:
                finals[(entry["instruction_id"], entry["state"])] += 1
        stats = {b: procs.bank_stats(configs[0], b) for b in BANKS}
        executions: Counter[str] = Counter()
        by_reference: Counter[str] = Counter()
        for s in stats.values():
            executions.update(s.get("executions", {}))
            by_reference.update(s.get("executions_by_reference", {}))
        accepted = centre.accepted
        final = {i for i in accepted if last_state.get(i) in FINAL}
        lost = sorted(set(accepted) - final)
        succeeded = {i for i in accepted if last_state.get(i) == "succeeded"}
        executed_once = sum(1 for i in accepted if executions.get(accepted[i], 0) == 1)
        twice = sorted(ref for ref, n in executions.items() if n > 1)
        succeeded_not_once = sorted(i for i in succeeded if executions.get(accepted[i], 0) != 1)
        duplicates = {b: s.get("duplicates", 0) for b, s in stats.items()}
        repeated_finals = sorted(k for k, n in finals.items() if n > 1)
        report = verify_database(pg_url, kind="gateway")
        timings["total_s"] = time.monotonic() - started
        _say(f"submitted {centre.submitted}, answered {dict(sorted(centre.statuses.items()))}, "
             f"2xx {len(accepted)}, retried on another node {centre.retried_elsewhere}, "
             f"unanswered {len(centre.unanswered)}, answered ids retried on another node {retried} (all 200)")
        _say(f"final {len(final)} (succeeded {len(succeeded)}), lost {len(lost)}, executed once "
             f"{executed_once}, executed twice {len(twice)}, duplicates seen at the banks {duplicates}")
        _say("timings " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()) + f"; journal ok={report.ok}")

        assert centre.unanswered == []
        assert len(accepted) > 50
        assert lost == [], f"accepted but not final: {lost[:20]} ({[last_state.get(i) for i in lost[:20]]})"
        assert twice == [] and max(by_reference.values(), default=0) <= 1, f"executed twice: {twice}"
        assert succeeded_not_once == [], f"succeeded without exactly one execution: {succeeded_not_once[:20]}"
        assert repeated_finals == [], f"a final state twice on the feed: {repeated_finals[:20]}"
        assert report.ok, report
    finally:
        centre.close()
        for node in nodes:
            node.kill()
        for b in banks.values():
            b.kill()
        engine.dispose()
