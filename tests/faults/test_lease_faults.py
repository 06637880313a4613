"""A node on PostgreSQL that loses its bank-link lease and gains it back must serve the bank again (G6).

With PostgreSQL the gateway holds a lease per bank link (gateway/lease.py);
a node paused for longer than the lease TTL notices on waking that it lost
the lease, drops the link, and takes the lease again when nobody else holds
it.  A bank that dials in (``direction = "listen"``) must then be able to
reconnect, and instructions must flow again, without restarting the process.
"""

from __future__ import annotations

import signal
import time
import tomllib

import pytest

from gateway.config import load_config, render_toml
from gateway.store import migrate
from tests.kit.pg import PG_URL, fresh_pg_database
from tests.faults.harness import Load, Rig, count_everything, settle, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE_TTL = 1.5


def _gains(log: str, lease: str) -> int:
    """How often the JSON log says the lease was gained."""
    return sum(1 for line in log.splitlines() if '"lease.gained"' in line and f'"{lease}"' in line)


def test_a_node_that_regains_its_lease_listens_for_its_bank_again(tmp_path):
    if not PG_URL:
        pytest.skip("PostgreSQL tests need HPF_TEST_DATABASE_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    databases = fresh_pg_database()
    url = next(databases)
    rig = Rig.prepare(tmp_path, timeouts={"lease_ttl": LEASE_TTL}, ledger=False)
    data = tomllib.loads(rig.config.path.read_text(encoding="utf-8"))
    data["gateway"]["database"] = url
    rig.config.path.write_text(render_toml(data), encoding="utf-8")
    rig.config = load_config(rig.config.path)
    migrate.upgrade(url)
    try:
        gw = rig.start_gateway()
        bank = rig.start_bank()
        rig.wait_link()
        assert rig.config.banks["B001"].direction == "listen"
        # Paused for longer than the TTL: on waking the node finds its lease gone and drops the link.
        gw.signal(signal.SIGSTOP)
        time.sleep(LEASE_TTL * 2)
        gw.signal(signal.SIGCONT)
        wait_until(lambda: "lease.expiring" in gw.text() or "lease.taken_over" in gw.text(),
                   "the node noticing it lost the lease", 10)
        wait_until(lambda: _gains(gw.text(), "bank:B001") >= 2, "the node taking the B001 lease again", 10)
        wait_until(lambda: rig.metric("hpf_gateway_bank_link_up", 'bank="B001"') == 1.0,
                   "the bank B001 dialling in again", 6)
        load = Load(rig.config, [f"R-{n}" for n in range(3)])
        load.start()
        load.finish(20)
        feed = settle(rig, load.ids, timeout=15, ledger=False)
        assert rig.stop(gw) == 0
        rig.stop(bank)
        count_everything(rig, load, feed=feed, stats=rig.bank_stats()).assert_exactly_once()
    finally:
        rig.kill_all()
        try:
            next(databases)
        except StopIteration:
            pass
