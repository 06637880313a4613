"""PostgreSQL failing as a server: restarted under load, and the lease holder's sessions dying with two nodes.

Both tests run on a private PostgreSQL server (:mod:`tests.faults.pgserver`),
because restarting the shared one would break every other test's database.

- The server is stopped (``fast``: a clean shutdown that ends every session;
  ``immediate``: a crash, WAL replayed at the start) and started again while a
  centre submits: the gateway rides it out without a restart.
- Two gateway nodes share the database, each through its own
  :class:`~tests.faults.netproxy.FaultyLink`.  The node holding the bank's
  lease has its database sessions reset; ``reset``: they may come straight
  back; ``cut-off``: they cannot for 10 s, longer than the lease (3 s), so the
  other node must take the bank link over (the failover time is measured from
  the reset to the other node's link up), and the first node, once its
  database answers again, must not send.  The centre keeps submitting to the
  node that lost its database, retrying what got no answer.

Each case ends with the six counts: nothing acknowledged lost, nothing
executed twice, every instruction final once on the feed, every event once at
the ledger, and no ledger alert the fault should not cause.
"""

from __future__ import annotations

import time
import tomllib

import pytest
import sqlalchemy as sa

from gateway.config import GatewayConfig, load_config, render_toml
from gateway.store import migrate
from tests.faults.harness import (
    Load,
    Rig,
    count_everything,
    dump,
    free_port,
    settle,
    wait_until,
)
from tests.faults.netproxy import FaultyLink
from tests.faults.pgserver import PgServer
from tests.kit import procs

pytestmark = pytest.mark.slow

N = 60
LEASE_TTL = 3.0
TIMERS = {"heartbeat_interval": 1.0, "dead_after": 3.0, "receipt_timeout": 2.0, "result_timeout": 5.0,
          "lease_ttl": LEASE_TTL}


@pytest.fixture
def server():
    pg = PgServer()
    try:
        yield pg
    finally:
        pg.close()


def _on(rig: Rig, url: str) -> None:
    """Point the rig's gateway at ``url`` (migrated)."""
    migrate.upgrade(url)
    data = tomllib.loads(rig.config.path.read_text(encoding="utf-8"))
    data["gateway"]["database"] = url
    rig.config.path.write_text(render_toml(data), encoding="utf-8")
    rig.config = load_config(rig.config.path)


def _settle_and_count(rig: Rig, load: Load, request, gateways: list[procs.Proc], bank: procs.Proc,
                      **extra) -> None:
    load.finish(120)
    feed = settle(rig, load.acknowledged, timeout=90)
    for gw in gateways:
        assert gw.alive(), f"a gateway died of its database:\n{gw.text()[-3000:]}"
    for gw in gateways:
        assert rig.stop(gw) == 0
    rig.stop(bank)  # its stats file is final once it has stopped
    stats = rig.bank_stats()
    counts = count_everything(rig, load, feed=feed, stats=stats)
    dump(rig.tmp.parent / "fault-counts.jsonl", counts, test=request.node.name, **extra)
    print(f"\n{request.node.name}: {counts.line()} {extra}")
    counts.assert_exactly_once()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_postgres_server_restart_under_load_loses_and_doubles_nothing(tmp_path, server, mode, request):
    rig = Rig.prepare(tmp_path, timeouts=TIMERS)
    _on(rig, server.create_database("hpf"))
    try:
        _, gw = rig.start_ledger_and_gateway()
        bank = rig.start_bank()
        rig.wait_link()
        load = Load(rig.config, [f"PR-{n}" for n in range(N)], interval=0.1, deadline=150, call_timeout=5.0)
        load.start()
        time.sleep(2)
        down = time.monotonic()
        server.stop(mode)
        time.sleep(1)  # down for a moment: the gateway meets refused connections, not just dead ones
        server.start()
        up = time.monotonic()
        rig.wait_link(timeout=60)
        link_back = round(time.monotonic() - up, 2)
        _settle_and_count(rig, load, request, [gw], bank, mode=mode, server_down_s=round(up - down, 2),
                          link_back_s=link_back)
        assert "database system is ready" in server.log()
    finally:
        rig.kill_all()


def _nodes(rig: Rig, server_port: int) -> tuple[list[GatewayConfig], list[FaultyLink], int]:
    """Two node configs beside the rig's: own instance, ports and proxy to the database; B001 dialled
    by whichever node holds its lease (a persistent link to a bank listening on a fixed port)."""
    data = tomllib.loads(rig.config.path.read_text(encoding="utf-8"))
    url = sa.engine.make_url(data["gateway"]["database"])
    bank_port = free_port()
    data["banks"] = {"B001": data["banks"]["B001"]}
    data["banks"]["B001"].update(direction="connect", endpoint=f"tcp:127.0.0.1:{bank_port}",
                                 connection="persistent")
    data["banks"]["B001"].pop("peer_endpoint", None)
    data["accounts"] = {n: a for n, a in data["accounts"].items() if a["bank"] == "B001"}
    configs, proxies = [], []
    for name in ("gw-a", "gw-b"):
        proxy = FaultyLink(("127.0.0.1", server_port))
        data["gateway"]["instance"] = name
        data["gateway"]["database"] = url.set(port=proxy.port).render_as_string(hide_password=False)
        for key, endpoint in data["listen"].items():  # every listener of the node on its own port
            if isinstance(endpoint, str) and endpoint.startswith("tcp:"):
                data["listen"][key] = f"tcp:{free_port()}:interface=127.0.0.1"
        path = rig.tmp / f"{name}.toml"
        path.write_text(render_toml(data), encoding="utf-8")
        configs.append(load_config(path))
        proxies.append(proxy)
    # The rig's own config (bank simulator, counting) is the first node's.
    rig.config.path.write_text(configs[0].path.read_text(encoding="utf-8"), encoding="utf-8")
    rig.config = load_config(rig.config.path)
    return configs, proxies, bank_port


def _owner(engine: sa.Engine) -> str | None:
    with engine.connect() as c:
        row = c.execute(sa.text("SELECT owner, expires_us FROM leases WHERE name = 'bank:B001'")).first()
    return row.owner if row is not None and row.expires_us >= int(time.time() * 1_000_000) else None


def _link_up(config: GatewayConfig) -> bool:
    return procs.metric(config, "hpf_gateway_bank_link_up", 'bank="B001"') == 1.0


@pytest.mark.parametrize("fault,cut", [("reset", 0.0), ("cut-off", 10.0)])
def test_the_lease_holders_database_sessions_die_nothing_sent_twice_nothing_lost(tmp_path, server, fault, cut,
                                                                                 request):
    rig = Rig.prepare(tmp_path, timeouts=TIMERS)
    url = server.create_database("hpf")
    _on(rig, url)
    configs, proxies, _ = _nodes(rig, server.port)
    direct = sa.create_engine(url)
    try:
        rig.start_ledger(ready=False)  # its start-up overlaps the nodes'
        bank = rig.start_bank()
        gateways = {}
        for config in configs:
            gateways[config.instance] = gw = procs.gateway(config, tag=f"-{config.instance}").start()
            rig.started.append(gw)
        for config in configs:
            procs.wait_http(procs.ops_url(config, "/readyz"), timeout=30)
        rig.wait_ledger()
        holder_name = wait_until(lambda: _owner(direct), "a node holding bank:B001", 20)
        holder = next(c for c in configs if c.instance == holder_name)
        other = next(c for c in configs if c.instance != holder_name)
        proxy = proxies[configs.index(holder)]
        wait_until(lambda: _link_up(holder), "the holder's link up", 20)
        # The centre talks to the node that is about to lose its database.
        load = Load(rig.config, [f"PL-{n}" for n in range(N)], interval=0.1, deadline=150, call_timeout=5.0,
                    port=int(holder.centre_api.split(":")[1]))
        load.start()
        time.sleep(2)
        t0 = time.monotonic()
        if cut:
            proxy.black_hole()
        proxy.reset_all()
        failover_s: float | None = None
        if cut:
            wait_until(lambda: _owner(direct) == other.instance and _link_up(other),
                       "the other node owning bank:B001 with its link up", cut)
            failover_s = round(time.monotonic() - t0, 2)
            time.sleep(max(0.0, cut - (time.monotonic() - t0)))
            proxy.heal()
        # Whoever holds the lease now has the link up; the first node serves intake again.
        wait_until(lambda: (o := _owner(direct)) is not None and _link_up(holder if o == holder.instance else other),
                   "bank:B001 held with its link up", 30)
        extra = {"fault": fault, "cut_s": cut, "failover_s": failover_s, "owner_after": _owner(direct),
                     "recovery": (f"failover in {failover_s} s" if failover_s is not None
                               else f"lease kept by {holder_name}" if _owner(direct) == holder_name
                               else "lease moved")}
        # Count through the node that kept its database all along.
        rig.config = other
        _settle_and_count(rig, load, request, list(gateways.values()), bank, **extra)
        if cut:
            assert failover_s is not None and failover_s <= LEASE_TTL + 5, extra
    finally:
        rig.kill_all()
        for p in proxies:
            p.close()
        direct.dispose()
