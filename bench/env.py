"""A gateway to measure: dev keys, a demo-shaped config, a migrated database, and its processes.

The config starts as exactly what ``hpf-gateway demo`` writes
(:func:`gateway.demo.write_demo_config`): one centre, the demo's banks (one
per installed adapter), its limits, windows and timeouts, SQLite (WAL, ``synchronous=FULL``) in the run's
directory.  A benchmark may ask for more banks, another database or other
timeouts; everything else stays the demo's, so figures from different
benchmarks describe the same gateway.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import tomllib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from bench.common import (
    BenchError,
    Child,
    Children,
    free_port,
    http_get,
    python_argv,
    scrape_metrics,
    wait_until,
)

__all__ = ["CENTRE", "GatewayEnv", "Workspace", "add_workspace_arguments", "bank_ids", "fresh_database",
           "links_up", "make_gateway_env", "port_open",
           "start_bank_sims", "start_gateway", "wait_links_up"]

CENTRE = "C52240"
_START_TIMEOUT_S = 90.0  # a cold Python start of twisted+sqlalchemy on a busy 2-core box


class Workspace:
    """The directory and the child processes of one benchmark run.

    Without ``directory`` a temporary one is made and removed at the end
    (unless ``keep``); a given directory is kept.  Leaving the ``with``
    block stops every child, whatever happened.
    """

    def __init__(self, directory: str | Path | None, *, keep: bool = False, prefix: str = "hpf-bench-") -> None:
        self._own = directory is None
        self.keep = keep or not self._own
        self.directory = Path(tempfile.mkdtemp(prefix=prefix) if directory is None else directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.children = Children()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.children.stop_all()
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def sub(self, name: str) -> Path:
        """A fresh subdirectory for one part of the run."""
        path = self.directory / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@contextlib.contextmanager
def fresh_database(spec: str | None, directory: Path, *, filename: str = "gateway.db") -> Iterator[str]:
    """A database URL for one run: a SQLite file in ``directory``, or a fresh PostgreSQL database.

    ``spec`` None or ``"sqlite"`` gives ``sqlite:////…/var/FILENAME``.  A
    ``postgresql…`` URL names a server: a database ``hpf_bench_<random>`` is
    created there for the run and dropped (``WITH (FORCE)``) afterwards.
    """
    if spec in (None, "", "sqlite"):
        var = directory / "var"
        var.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{var / filename}"
        return
    if not spec.startswith("postgresql"):
        raise BenchError(f"--database must be 'sqlite' or a postgresql+psycopg:// URL, not {spec!r}")
    import sqlalchemy as sa

    name = f"hpf_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(spec, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as e:
        admin.dispose()
        raise BenchError(f"cannot create a database on {sa.engine.make_url(spec).render_as_string()}: {e}") from e
    try:
        yield sa.engine.make_url(spec).set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


def bank_ids(count: int) -> list[str]:
    """``B001`` … ``B{count:03d}``."""
    return [f"B{i:03d}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class GatewayEnv:
    """A ready-to-run gateway: config file, keys, database; ports read from the config."""

    directory: Path
    config_path: Path
    config: Any  # gateway.config.GatewayConfig
    database: str
    keys: Path
    ops_port: int
    banks: tuple[str, ...]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    ledger_config_path: Path | None = None  # the ledger's config, when the gateway forwards copies
    ledger_ops_port: int | None = None

    @property
    def api_url(self) -> str:
        """The centre API's base URL (``https://localhost:PORT``)."""
        from gateway.simulate.run import api_url

        return api_url(self.config)

    def centre_options(self) -> dict[str, Any]:
        """``run_centre`` keyword arguments for the demo centre: certificate, key, CA, accounts."""
        from gateway.simulate.run import centre_options_for

        return centre_options_for(self.config, CENTRE, self.keys)


def _extra_banks(data: dict[str, Any], count: int) -> None:
    """Grow the demo's banks to ``count`` more bdc banks like B001: alternating directions, one account each."""
    template = data["banks"]["B001"]  # the demo's bdc bank
    for i, bank_id in enumerate(bank_ids(count)):
        if bank_id in data["banks"]:
            continue
        listen = i % 2 == 0  # B001 listens (the bank dials in), B002 dials out, like the demo
        port = free_port()
        data["banks"][bank_id] = {
            "name": f"测试银行{i + 1:03d}", "adapter": template["adapter"], "node": f"{300000 + i:06d}",
            "direction": "listen" if listen else "connect",
            "endpoint": f"tcp:{port}:interface=127.0.0.1" if listen else f"tcp:127.0.0.1:{port}",
            "window": template["window"],
        }
        if template.get("connection") == "per_request":  # bdc as deployed: the other direction too
            data["banks"][bank_id]["connection"] = "per_request"
            other = free_port()
            data["banks"][bank_id]["peer_endpoint"] = (f"tcp:127.0.0.1:{other}" if listen
                                                       else f"tcp:{other}:interface=127.0.0.1")
        data["accounts"][f"62300000{i + 1:08d}"] = {"bank": bank_id, "centre": CENTRE,
                                                     "name": f"示例中心专户{i + 1:03d}", "type": "collection"}


def make_gateway_env(directory: Path, *, database: str, bank_count: int | None = None,
                     overrides: Mapping[str, Mapping[str, Any]] | None = None,
                     ledger: bool = False) -> GatewayEnv:
    """Keys, config and migrated schema for a gateway in ``directory``.

    ``database`` is a URL (see :func:`fresh_database`).  ``bank_count``
    None keeps the demo's banks; more adds bdc banks like B001, fewer keeps
    the first ones.  ``overrides`` are
    merged into the demo config table by table, e.g.
    ``{"timeouts": {"receipt_timeout": 3600.0}}``.  With ``ledger`` the
    gateway forwards signed copies of its journal to the demo's ledger
    (SQLite in ``DIR/var/ledger.db``), started by :func:`start_ledger`.
    """
    from gateway.config import load_config, render_toml
    from gateway.demo import write_demo_config
    from gateway.pki import init_dev_pki
    from gateway.store import migrate

    if bank_count is not None and bank_count < 1:
        raise BenchError("a gateway needs at least one bank")
    directory.mkdir(parents=True, exist_ok=True)
    path = write_demo_config(directory)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if bank_count is None:
        pass  # the demo's banks
    elif bank_count > len(data["banks"]):
        _extra_banks(data, bank_count)
    elif bank_count < len(data["banks"]):
        wanted = set(sorted(data["banks"])[:bank_count])
        data["banks"] = {k: v for k, v in data["banks"].items() if k in wanted}
        data["accounts"] = {k: v for k, v in data["accounts"].items() if v["bank"] in wanted}
    data["gateway"]["database"] = database
    ledger_path, ledger_ops = None, None
    if ledger:
        from gateway.demo import write_ledger_config
        from gateway.ledger import store as ledger_store
        from gateway.ledger.config import load_ledger_config
        from gateway.signing import init_signing_key

        ports = {name: free_port() for name in ("ingest", "supervisor", "ledger_ops")}
        ledger_path, ledger_ops = write_ledger_config(directory, ports), ports["ledger_ops"]
        data["ledger"] = {"url": f"https://127.0.0.1:{ports['ingest']}", "name": "main",
                          "signing_key": "keys/gateway-signing.key"}
    for table, values in (overrides or {}).items():
        data.setdefault(table, {}).update(values)
    path.write_text("# Written by the benchmark harness (bench/env.py) from the demo config.\n"
                    + render_toml(data), encoding="utf-8")
    banks = tuple(sorted(data["banks"]))
    keys = directory / "keys"
    init_dev_pki(keys, banks=banks, centres=[CENTRE])
    if ledger_path is not None:
        init_signing_key(keys)
        ledger_store.MIGRATIONS.upgrade(load_ledger_config(ledger_path).database)
    config = load_config(path)
    migrate.upgrade(config.database)
    ops_port = int(config.ops.split(":")[1])
    return GatewayEnv(directory, path, config, database, keys, ops_port, banks, dict(overrides or {}),
                      ledger_path, ledger_ops)


def another_node(env: GatewayEnv, name: str) -> GatewayEnv:
    """One more node of ``env``'s gateway, as a deployment with several nodes runs them: the
    same keys, database (PostgreSQL: nodes share one), banks and ledger; its own ``instance``
    name and listening ports, in ``DIR/NAME.toml``.  Both nodes are named, so their leases tell
    them apart."""
    from gateway.config import load_config, render_toml

    if env.database.startswith("sqlite"):
        raise BenchError("nodes share a database only on PostgreSQL (SQLite is one process's)")
    data = tomllib.loads(env.config_path.read_text(encoding="utf-8"))
    data["gateway"]["instance"] = name
    for listener, value in data["listen"].items():
        if listener != "ops" and value.startswith("tcp:"):
            data["listen"][listener] = f"tcp:{free_port()}:interface=127.0.0.1"
    ops_port = free_port()
    data["listen"]["ops"] = f"tcp:{ops_port}:interface=127.0.0.1"
    path = env.directory / f"{name}.toml"
    path.write_text(f"# Written by the benchmark harness (bench/env.py): node {name} of {env.config_path.name}.\n"
                    + render_toml(data), encoding="utf-8")
    return replace(env, config_path=path, config=load_config(path), ops_port=ops_port)


def start_ledger(children: Children, env: GatewayEnv) -> Child:
    """``hpf-gateway ledger -c CONF`` for ``env``'s ledger; returns once its ``/readyz`` answers 200."""
    if env.ledger_config_path is None:
        raise BenchError("this gateway was made without a ledger (make_gateway_env(..., ledger=True))")
    child = children.spawn("ledger", python_argv("-m", "gateway.cli", "ledger", "-c", str(env.ledger_config_path)),
                           log=env.directory / "ledger.log", cwd=env.directory)
    wait_until(lambda: http_get(f"http://127.0.0.1:{env.ledger_ops_port}/readyz", timeout=1.0)[0] == 200,
               timeout=_START_TIMEOUT_S, what="the ledger's /readyz", children=[child])
    return child


def start_gateway(children: Children, env: GatewayEnv, *, name: str = "gateway",
                  wrapper: Sequence[str] = ()) -> Child:
    """``hpf-gateway run -c CONF`` as a child process; returns once ``/readyz`` answers 200.

    It runs as ``python -m gateway.cli run`` (the same entry point as the
    ``hpf-gateway`` script, without a shell shim in between, so the PID we
    read /proc of is the gateway's own).  Its JSON log goes to
    ``DIR/gateway.log``.  With ``wrapper`` (e.g. ``("bench.tracehost",
    DIR, FRAMES, "--")`` or ``("bench.pgcount", FILE, "--")``) it runs as
    ``python -m WRAPPER... gateway.cli run``, under that bench host.
    """
    child = children.spawn(name, python_argv("-m", *wrapper, "gateway.cli", "run", "-c", str(env.config_path)),
                           log=env.directory / f"{name}.log", cwd=env.directory)
    wait_until(lambda: http_get(f"http://127.0.0.1:{env.ops_port}/readyz", timeout=1.0)[0] == 200,
               timeout=_START_TIMEOUT_S, what="the gateway's /readyz", children=[child])
    return child


def start_bank_sims(children: Children, env: GatewayEnv, banks: Sequence[str],
                    extra: Sequence[str] = ()) -> list[Child]:
    """One ``hpf-gateway simulate bank -c CONF --bank B`` process per bank (``extra`` options added)."""
    return [children.spawn(f"bank-{b}", python_argv("-m", "gateway.cli", "simulate", "bank", "-c",
                                                      str(env.config_path), "--bank", b, *extra),
                           log=env.directory / f"bank-{b}.log", cwd=env.directory)
            for b in banks]


def links_up(env: GatewayEnv) -> set[str]:
    """Banks whose link the gateway reports connected and signed on."""
    samples = scrape_metrics(env.ops_port)
    return {dict(labels)["bank"] for (name, labels), value in samples.items()
            if name == "hpf_gateway_bank_link_up" and value == 1.0}


def wait_links_up(env: GatewayEnv, banks: Sequence[str], children: Sequence[Child], *,
                  timeout: float = _START_TIMEOUT_S) -> None:
    """Wait until every bank in ``banks`` is signed on at the gateway."""
    wanted = set(banks)
    wait_until(lambda: wanted <= links_up(env), timeout=timeout, interval=0.25,
               what=f"{len(wanted)} bank link(s) signed on", children=children)


def add_workspace_arguments(p: Any, *, database: bool = True) -> None:
    """``--dir``, ``--keep`` and (for benchmarks with a database) ``--database``."""
    p.add_argument("--dir", help="work here (keys, config, database, logs) and keep it; default: a temporary "
                                 "directory removed afterwards")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    if database:
        p.add_argument("--database", default="sqlite",
                       help="'sqlite' (default: a file, WAL, synchronous=FULL) or a PostgreSQL server URL such "
                            "as postgresql+psycopg://postgres@127.0.0.1:5432/test: a fresh database is created "
                            "there for the run and dropped afterwards")


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:PORT."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def pg_backend_cpu_seconds(url: str) -> float | None:
    """CPU seconds used so far by the PostgreSQL server processes serving the database of
    ``url`` (its backends listed in ``pg_stat_activity``, read from ``/proc``: the server
    must be on this machine), or None when it is not a PostgreSQL URL or cannot be read.

    A backend counts from its start: taken at the end of a run, it is an upper bound on
    what the run cost the server (the pool's connections open with the daemon); a backend
    that closed before is missed.
    """
    if not url.startswith("postgresql"):
        return None
    import sqlalchemy as sa

    from bench.common import proc_cpu_seconds

    u = sa.engine.make_url(url)
    admin = sa.create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            pids = [r[0] for r in conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :d"),
                                               {"d": u.database})]
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        admin.dispose()
    total = 0.0
    for pid in pids:
        try:
            total += proc_cpu_seconds(pid)
        except OSError:
            return None
    return total
