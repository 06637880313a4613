"""gateway.config: the TOML schema, every refusal naming file and key, and render_toml."""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

import pytest

from adapters.base import iter_adapter_names
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import (
    AccountConfig,
    BankConfig,
    CentreConfig,
    ConfigError,
    CounterpartyConfig,
    Limits,
    Timeouts,
    check_config,
    load_config,
    render_toml,
)
from tests.kit.config import EXAMPLE, delete_key, example_data, problems_after, set_key, write

ACCOUNT = "6200001111222233"
COUNTERPARTY = "6200009999000011"


# -- the example ----------------------------------------------------------------


def test_example_config_loads_with_the_values_it_states() -> None:
    config = load_config(EXAMPLE, check_files=False)
    conf_dir = EXAMPLE.parent
    assert config.path == EXAMPLE
    assert config.node == "D00000"
    assert config.database == f"sqlite:///{conf_dir / '../var/gateway.db'}"
    assert config.tls.certificate == conf_dir / "../keys/dev/gateway.crt"
    assert config.tls.private_key == conf_dir / "../keys/dev/gateway.key"
    assert config.tls.ca == conf_dir / "../keys/dev/ca.crt"
    assert config.centre_api == "tcp:8443:interface=127.0.0.1"
    assert config.ops == "tcp:9108:interface=127.0.0.1"
    assert config.limits == Limits(max_amount=5_000_000_000, large_amount=100_000_000,
                                   max_batch=1000)
    assert config.timeouts == Timeouts(heartbeat_interval=15.0, dead_after=45.0,
                                       receipt_timeout=10.0, result_timeout=30.0,
                                       status_query_interval=5.0, status_query_attempts=5,
                                       max_feed_wait=30.0)
    assert dict(config.centres) == {
        "C52240": CentreConfig("C52240", "522400000000000", "示例市住房公积金管理中心", None)}
    assert dict(config.banks) == {
        "B001": BankConfig("B001", "示例银行", "bdc", "105000", "listen",
                           "tcp:7001:interface=127.0.0.1", 64, None, connection="per_request",
                           peer_endpoint="tcp:127.0.0.1:7101"),
        "B002": BankConfig("B002", "另一银行", "bdc", "102000", "connect", "tcp:127.0.0.1:7102",
                           64, None, connection="per_request",
                           peer_endpoint="tcp:7202:interface=127.0.0.1"),
    }
    assert list(config.accounts) == ["6200001111222233", "6222002222333344"]
    assert config.accounts["6222002222333344"] == AccountConfig(
        "6222002222333344", "B002", "C52240", "示例中心贷款户", "loan", "102100000030")
    assert config.counterparties["6222008888000022"] == CounterpartyConfig(
        "6222008888000022", "示例房地产开发有限公司", "102100000030")


def test_helpers_find_accounts_their_banks_and_counterparties() -> None:
    config = load_config(EXAMPLE, check_files=False)
    assert config.account(ACCOUNT) == AccountConfig(ACCOUNT, "B001", "C52240", "示例中心归集户",
                                                    "collection", "105100000017")
    bank = config.bank_of(ACCOUNT)
    assert bank is not None and bank.id == "B001" and bank.listens
    assert config.bank_of("6222002222333344") == config.banks["B002"]
    assert not config.banks["B002"].listens
    assert config.account("0000") is None and config.bank_of("0000") is None
    assert config.counterparty(COUNTERPARTY) is not None
    assert config.counterparty(ACCOUNT) is None


def test_defaults_are_the_example_values_and_apply_when_sections_are_omitted(tmp_path: Path) -> None:
    assert load_config(EXAMPLE, check_files=False).limits == Limits()
    assert load_config(EXAMPLE, check_files=False).timeouts == Timeouts()
    data = example_data()
    del data["limits"], data["timeouts"]
    config = load_config(write(tmp_path, data), check_files=False)
    assert config.limits == Limits() and config.timeouts == Timeouts()


def test_a_partial_section_keeps_defaults_for_the_rest(tmp_path: Path) -> None:
    data = example_data()
    data["limits"] = {"max_batch": 10}
    data["timeouts"] = {"heartbeat_interval": 1, "dead_after": 3}  # TOML ints where floats go
    config = load_config(write(tmp_path, data), check_files=False)
    assert config.limits == Limits(max_batch=10)
    assert config.timeouts == dataclasses.replace(Timeouts(), heartbeat_interval=1.0,
                                                  dead_after=3.0)
    assert isinstance(config.timeouts.heartbeat_interval, float)


def test_config_values_are_immutable() -> None:
    config = load_config(EXAMPLE, check_files=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node = "X00000"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.banks["B009"] = config.banks["B001"]  # type: ignore[index]


def test_missing_key_files_are_problems_only_when_files_are_checked(tmp_path: Path) -> None:
    data = example_data()
    data["tls"] = {"certificate": "k/gw.crt", "private_key": "k/gw.key", "ca": "k/ca.crt"}
    path = write(tmp_path, data)
    assert check_config(path, check_files=False) == []
    assert check_config(path) == [
        f"{path}: tls.certificate: no such file: {tmp_path / 'k/gw.crt'}",
        f"{path}: tls.private_key: no such file: {tmp_path / 'k/gw.key'}",
        f"{path}: tls.ca: no such file: {tmp_path / 'k/ca.crt'}",
    ]
    (tmp_path / "k").mkdir()
    for name in ("gw.crt", "gw.key", "ca.crt"):
        (tmp_path / "k" / name).write_text("x")
    assert check_config(path) == []


def test_a_directory_is_not_a_key_file(tmp_path: Path) -> None:
    (tmp_path / "cadir").mkdir()
    for name in ("c", "k"):
        (tmp_path / name).write_text("x")
    data = example_data()
    data["tls"] = {"certificate": "c", "private_key": "k", "ca": "cadir"}
    path = write(tmp_path, data)
    assert check_config(path) == [f"{path}: tls.ca: not a regular file: {tmp_path / 'cadir'}"]


def test_load_config_raises_every_problem_check_config_returns(tmp_path: Path) -> None:
    data = example_data()
    data["gateway"]["node"] = "x"
    data["banks"]["B001"]["window"] = 0
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path, check_files=False)
    assert caught.value.problems == check_config(path, check_files=False)
    assert len(caught.value.problems) == 2
    assert str(caught.value) == "\n".join(caught.value.problems)


# -- paths ----------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory_not_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "etc" / "hpf"
    (conf / "keys").mkdir(parents=True)
    for name in ("gw.crt", "gw.key", "ca.crt", "b1.crt"):
        (conf / "keys" / name).write_text("x")
    absolute_ca = tmp_path / "centre-ca.crt"
    absolute_ca.write_text("x")
    data = example_data()
    data["gateway"]["database"] = "sqlite:///state/gw.db?timeout=5"
    data["tls"] = {"certificate": "keys/gw.crt", "private_key": "./keys/gw.key",
                   "ca": "keys/ca.crt"}
    data["banks"]["B001"]["ca"] = "keys/b1.crt"
    data["centres"]["C52240"]["ca"] = str(absolute_ca)
    path = write(conf, data)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc/hpf/gw.toml"))
    assert config.path == path
    assert config.tls.certificate == conf / "keys/gw.crt"
    assert config.tls.private_key == conf / "keys/gw.key"
    assert config.banks["B001"].ca == conf / "keys/b1.crt"
    assert config.banks["B002"].ca is None
    assert config.centres["C52240"].ca == absolute_ca
    assert config.database == f"sqlite:///{conf}/state/gw.db?timeout=5"


@pytest.mark.parametrize("url", [
    "sqlite:////var/lib/hpf/gateway.db",
    "sqlite://",
    "sqlite:///:memory:",
    "postgresql+psycopg://hpf@db.example/hpf",
    "postgresql+psycopg://hpf:secret@10.0.0.5:5433/hpf?sslmode=verify-full",
])
def test_absolute_in_memory_and_postgres_database_urls_are_kept(tmp_path: Path, url: str) -> None:
    data = example_data()
    data["gateway"]["database"] = url
    assert load_config(write(tmp_path, data), check_files=False).database == url


@pytest.mark.parametrize("url, reason", [
    ("mysql://hpf@db/hpf", 'must be a "sqlite:///..." or "postgresql+psycopg://..." URL, '
                           'not "mysql://hpf@db/hpf"'),
    ("postgresql://hpf@db/hpf", 'must be a "sqlite:///..." or "postgresql+psycopg://..." URL, '
                                'not "postgresql://hpf@db/hpf"'),
    ("sqlite://var/gw.db", "a SQLite URL is sqlite:///relative/path.db (to this file's directory), "
                           "sqlite:////absolute/path.db or sqlite:// (in memory), "
                           'not "sqlite://var/gw.db"'),
    ("var/gw.db", 'must be a "sqlite:///..." or "postgresql+psycopg://..." URL, not "var/gw.db"'),
])
def test_other_database_urls_are_refused(tmp_path: Path, url: str, reason: str) -> None:
    def change(d: dict[str, Any]) -> None:
        d["gateway"]["database"] = url
    file, problems = problems_after(tmp_path, change)
    assert problems == [f"{file}: gateway.database: {reason}"]


# -- each rule, with its exact key path -----------------------------------------


def _add_bank(bank_id: str, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        entry = {"name": "第三银行", "adapter": "bdc", "node": "103000", "direction": "listen",
                 "endpoint": "tcp:7003:interface=127.0.0.1", "window": 8, "connection": "persistent"}
        entry.update(fields)
        data["banks"][bank_id] = entry
    return change


RULES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    # [gateway]
    ("gateway.node", set_key("gateway", "node", "d0000"),
     'must be 6 of A-Z 0-9 (a node number such as D00000), not "d0000"'),
    ("gateway.node", delete_key("gateway", "node"), "is required"),
    ("gateway", delete_key("gateway"), "is required"),
    ("gateway", set_key("gateway", 5), "must be a table, not 5"),
    ("gateway.database", set_key("gateway", "database", 1), "must be a string, not 1"),
    # [tls]
    ("tls.ca", delete_key("tls", "ca"), "is required"),
    ("tls.certificate", set_key("tls", "certificate", 5), "must be a path string, not 5"),
    ("tls.private_key", set_key("tls", "private_key", ""),
     "must be a non-empty path without NUL characters"),
    # [listen]
    ("listen.centre_api", set_key("listen", "centre_api", "ssl:8443:privateKey=k.pem"),
     "ssl: endpoints are refused: TLS is added by the gateway (client certificates are "
     "required); give a plain tcp: endpoint"),
    ("listen.ops", set_key("listen", "ops", "tcp:http"),
     "not a valid tcp: endpoint: port must be a number from 0 to 65535, not 'http'"),
    ("listen.ops", set_key("listen", "ops", "tcp:70000"),
     "not a valid tcp: endpoint: port must be a number from 0 to 65535, not '70000'"),
    ("listen.ops", set_key("listen", "ops", "tcp:9108:interface=127.0.0.1:bogus=1"),
     "not a valid tcp: endpoint: unknown option bogus= (known: backlog, interface, port)"),
    ("listen.ops", set_key("listen", "ops", "tcp:9108:interface=localhost"),
     "not a valid tcp: endpoint: interface must be an IP address (escape IPv6 colons as \\:), "
     "not 'localhost'"),
    ("listen.ops", set_key("listen", "ops", "tcp:9108:interface=::1"),
     "not a valid tcp: endpoint: too many fields (expected port)"),
    ("listen.ops", set_key("listen", "ops", ""), "must not be empty"),
    ("listen.ops", set_key("listen", "ops", "http:9108"),
     'unknown listening endpoint type "http" (known: tcp:, tcp6:, unix:, systemd:)'),
    ("listen.ops", set_key("listen", "ops", "tcp:9108\\"),
     "ends with a lone backslash"),
    ("listen.centre_api", delete_key("listen", "centre_api"), "is required"),
    ("listen.centre_bdc", set_key("listen", "centre_bdc", "ssl:9999:privateKey=k.pem"),
     "ssl: endpoints are refused: TLS is added by the gateway (client certificates are "
     "required); give a plain tcp: endpoint"),
    # [limits]
    ("limits.max_amount", set_key("limits", "max_amount", 50000000),
     'must be a string such as "1234.56", not a number'),
    ("limits.max_amount", set_key("limits", "max_amount", "1.005"), "more than two decimals"),
    ("limits.large_amount", set_key("limits", "large_amount", "50000000.01"),
     "must not be above limits.max_amount (50000000.00)"),
    ("limits.centre_handshake_timeout", set_key("limits", "centre_handshake_timeout", 61.0),
     "must not be above limits.centre_request_timeout (60)"),
    ("limits.max_batch", set_key("limits", "max_batch", 0), "must be from 1 to 1000, not 0"),
    ("limits.max_batch", set_key("limits", "max_batch", 1001), "must be from 1 to 1000, not 1001"),
    ("limits.max_batch", set_key("limits", "max_batch", True), "must be an integer, not true"),
    ("limits.max_batch", set_key("limits", "max_batch", 10.0), "must be an integer, not 10.0"),
    # [timeouts]
    ("timeouts.dead_after", set_key("timeouts", "dead_after", 15.0),
     "must be greater than timeouts.heartbeat_interval (15)"),
    ("timeouts.receipt_timeout", set_key("timeouts", "receipt_timeout", 0),
     "must be a finite number greater than 0, not 0"),
    ("timeouts.result_timeout", set_key("timeouts", "result_timeout", -1.5),
     "must be a finite number greater than 0, not -1.5"),
    ("timeouts.max_feed_wait", set_key("timeouts", "max_feed_wait", math.inf),
     "must be a finite number greater than 0, not inf"),
    ("timeouts.max_feed_wait", set_key("timeouts", "max_feed_wait", math.nan),
     "must be a finite number greater than 0, not nan"),
    ("timeouts.status_query_interval", set_key("timeouts", "status_query_interval", "5"),
     'must be a number of seconds, not "5"'),
    ("timeouts.heartbeat_interval", set_key("timeouts", "heartbeat_interval", True),
     "must be a number of seconds, not true"),
    ("timeouts.status_query_attempts", set_key("timeouts", "status_query_attempts", 0),
     "must be at least 1, not 0"),
    ("timeouts.status_query_attempts", set_key("timeouts", "status_query_attempts", 2.5),
     "must be an integer, not 2.5"),
    # [centres]
    ("centres.X52240", set_key("centres", "X52240", {"unit_no": "522400000000001", "name": "x"}),
     "must be C and 5 digits (the centre's node number)"),
    ("centres.C52240.unit_no", set_key("centres", "C52240", "unit_no", "5224"),
     'must be 15 digits, not "5224"'),
    ("banks.B001.connection", set_key("banks", "B001", "connection", "pooled"),
     'must be "persistent" or "per_request", not "pooled"'),
    ("banks.B001.peer_endpoint", set_key("banks", "B001", "peer_endpoint", "tcp:7101:interface=127.0.0.1"),
     "not a valid tcp: endpoint: unknown option interface= (known: bindAddress, host, port, timeout)"),
    ("banks.B001.request_timeout", set_key("banks", "B001", "request_timeout", 0),
     "must be a finite number greater than 0, not 0"),
    ("centres.C52240.cust_no", set_key("centres", "C52240", "cust_no", "客户"),
     'must be 1-32 of A-Z a-z 0-9 _ -, not "客户"'),
    ("centres.C52240.oper_no", set_key("centres", "C52240", "oper_no", ""), "must not be empty"),
    ("centres.C52241.unit_no",
     set_key("centres", "C52241", {"unit_no": "522400000000000", "name": "重复"}),
     "same unit_no as centres.C52240"),
    ("centres.C52240.name", set_key("centres", "C52240", "name", "   "), "must not be blank"),
    ("centres.C52240.name", set_key("centres", "C52240", "name", "示例\n中心"),
     "contains control characters"),
    ("centres.C52240.name", delete_key("centres", "C52240", "name"), "is required"),
    # [banks]
    ("banks.b003", _add_bank("b003"), "must be 1-16 of A-Z 0-9"),
    ("banks.B003", set_key("banks", "B003", "tcp:7003"), 'must be a table, not "tcp:7003"'),
    ("banks.B001.node", set_key("banks", "B001", "node", "10500"),
     'must be 6 of A-Z 0-9, not "10500"'),
    ("banks.B001.node", set_key("banks", "B001", "node", "D00000"),
     "is the gateway's own node (gateway.node)"),
    ("banks.B002.node", set_key("banks", "B002", "node", "105000"), "same node as banks.B001"),
    ("banks.B001.direction", set_key("banks", "B001", "direction", "dial"),
     'must be "listen" or "connect", not "dial"'),
    ("banks.B001.endpoint", delete_key("banks", "B001", "endpoint"), "is required"),
    ("banks.B001.endpoint", set_key("banks", "B001", "endpoint", ""), "must not be empty"),
    ("banks.B001.endpoint", set_key("banks", "B001", "endpoint", "ssl:7001"),
     "ssl: endpoints are refused: TLS is added by the gateway (client certificates are "
     "required); give a plain tcp: endpoint"),
    ("banks.B002.endpoint", set_key("banks", "B002", "endpoint", "tls:fep.bank.example:7102"),
     "tls: endpoints are refused: TLS is added by the gateway (client certificates are "
     "required); give a plain tcp: endpoint"),
    ("banks.B002.endpoint", set_key("banks", "B002", "endpoint", "tcp6:7102"),
     'unknown connecting endpoint type "tcp6" (known: tcp:, unix:)'),
    ("banks.B002.endpoint", set_key("banks", "B002", "endpoint", "tcp:127.0.0.1"),
     "not a valid tcp: endpoint: needs a port (tcp:HOST:PORT)"),
    ("banks.B002.endpoint", set_key("banks", "B002", "endpoint", "tcp:127.0.0.1:0"),
     "not a valid tcp: endpoint: port must be a number from 1 to 65535, not '0'"),
    ("banks.B001.endpoint", set_key("banks", "B001", "endpoint", "systemd:domain=INET"),
     "not a valid systemd: endpoint: give exactly one of index= or name="),
    ("banks.B001.endpoint", set_key("banks", "B001", "endpoint", "systemd:domain=IPX:name=b1"),
     "not a valid systemd: endpoint: domain= must be INET, INET6 or UNIX"),
    ("banks.B001.endpoint", set_key("banks", "B001", "endpoint", "unix:/run/hpf/b1.sock:mode=999"),
     "not a valid unix: endpoint: mode must be octal such as 660, not '999'"),
    ("banks.B001.adapter", set_key("banks", "B001", "adapter", "nope"),
     'no adapter named "nope" is installed (installed: '
     + ", ".join(sorted(set(iter_adapter_names()))) + ")"),
    ("banks.B001.window", set_key("banks", "B001", "window", 0), "must be from 1 to 10000, not 0"),
    ("banks.B001.window", set_key("banks", "B001", "window", 10001),
     "must be from 1 to 10000, not 10001"),
    ("banks.B001.window", set_key("banks", "B001", "window", "64"), 'must be an integer, not "64"'),
    ("banks.B001.window", set_key("banks", "B001", "window", False), "must be an integer, not false"),
    # [accounts]
    (f"accounts.{ACCOUNT}.bank", set_key("accounts", ACCOUNT, "bank", "B009"),
     'no bank "B009" in [banks]'),
    (f"accounts.{ACCOUNT}.centre", set_key("accounts", ACCOUNT, "centre", "C99999"),
     'no centre "C99999" in [centres]'),
    (f"accounts.{ACCOUNT}.type", set_key("accounts", ACCOUNT, "type", "savings"),
     'must be one of collection, loan, other, revenue, not "savings"'),
    (f"accounts.{ACCOUNT}.type", delete_key("accounts", ACCOUNT, "type"), "is required"),
    ('accounts."6200 0011"',
     set_key("accounts", "6200 0011", {"bank": "B001", "centre": "C52240", "name": "x",
                                    "type": "other"}),
     "must be 1-32 of 0-9 A-Z a-z -"),
    # [counterparties]
    (f"counterparties.{COUNTERPARTY}.bank_code",
     set_key("counterparties", COUNTERPARTY, "bank_code", "1051"),
     'must be a 12-digit CNAPS code, not "1051"'),
    (f"counterparties.{COUNTERPARTY}.bank_code",
     set_key("counterparties", COUNTERPARTY, "bank_code", 105100000017),
     "must be a string, not 105100000017"),
    (f"counterparties.{COUNTERPARTY}.name", set_key("counterparties", COUNTERPARTY, "name", "名" * 61),
     "longer than 60 characters"),
    ("counterparties.x_1",
     set_key("counterparties", "x_1", {"name": "x", "bank_code": "105100000017"}),
     "must be 1-32 of 0-9 A-Z a-z -"),
]


@pytest.mark.parametrize("key, change, reason", RULES, ids=[f"{k}:{r[:40]}" for k, _, r in RULES])
def test_each_rule_is_refused_naming_the_file_and_key(
        tmp_path: Path, key: str, change: Callable[[dict[str, Any]], None], reason: str) -> None:
    file, problems = problems_after(tmp_path, change)
    assert problems == [f"{file}: {key}: {reason}"]


@pytest.mark.parametrize("change", [
    set_key("banks", "B001", "endpoint", "tcp6:7001:interface=\\:\\:1"),
    set_key("banks", "B001", "endpoint", "unix:/run/hpf/b1.sock:mode=660"),
    set_key("banks", "B001", "endpoint", "systemd:domain=INET:name=banklink"),
    set_key("banks", "B001", "endpoint", "systemd:domain=INET6:index=0"),
    set_key("banks", "B002", "endpoint", "tcp:host=fep.bank.example:port=7102:timeout=10"),
    set_key("banks", "B002", "endpoint", "unix:path=/run/fep.sock"),
    set_key("listen", "ops", "tcp:0:interface=127.0.0.1"),
], ids=["tcp6", "unix", "systemd-name", "systemd-index", "tcp-keywords", "unix-client", "port0"])
def test_the_endpoint_kinds_we_allow_are_accepted(
        tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    assert problems_after(tmp_path, change)[1] == []


def test_a_bank_may_not_listen_where_another_bank_listens(tmp_path: Path) -> None:
    file, problems = problems_after(
        tmp_path, _add_bank("B003", endpoint="tcp:7001:interface=127.0.0.1"))
    assert problems == [f'{file}: banks.B003.endpoint: "tcp:7001:interface=127.0.0.1" listens '
                        "on the same address as banks.B001.endpoint"]


def test_a_bank_may_not_listen_on_the_centre_api_port_even_on_all_interfaces(
        tmp_path: Path) -> None:
    file, problems = problems_after(tmp_path, set_key("banks", "B001", "endpoint", "tcp:8443"))
    assert problems == [f'{file}: banks.B001.endpoint: "tcp:8443" listens on the same address '
                        "as listen.centre_api"]


def test_ops_may_not_share_the_centre_api_endpoint(tmp_path: Path) -> None:
    file, problems = problems_after(tmp_path, set_key("listen", "ops", "tcp:8443:interface=127.0.0.1"))
    assert problems == [f'{file}: listen.ops: "tcp:8443:interface=127.0.0.1" listens on the same '
                        "address as listen.centre_api"]


@pytest.mark.parametrize("first, second, clash", [
    ("tcp:7001:interface=127.0.0.1", "tcp:7001:interface=127.0.0.2", False),
    ("tcp:7001:interface=127.0.0.1", "tcp:7002:interface=127.0.0.1", False),
    ("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1", False),  # ephemeral ports
    ("tcp6:7001", "tcp:7001:interface=127.0.0.1", True),  # tcp6 binds :: by default
    ("unix:/run/hpf/a.sock", "unix:/run/hpf/a.sock", True),
    ("unix:/run/hpf/a.sock", "unix:/run/hpf/b.sock", False),
    ("systemd:domain=INET:name=bank", "systemd:domain=INET:name=bank", True),
    ("systemd:domain=INET:name=bank", "systemd:domain=INET:name=other", False),
])
def test_listener_collisions(tmp_path: Path, first: str, second: str, clash: bool) -> None:
    def change(data: dict[str, Any]) -> None:
        data["banks"]["B001"]["endpoint"] = first
        _add_bank("B003", endpoint=second)(data)
    file, problems = problems_after(tmp_path, change)
    expected = [f'{file}: banks.B003.endpoint: "{second}" listens on the same address as '
                "banks.B001.endpoint"]
    assert problems == (expected if clash else [])


def test_a_connecting_bank_never_collides_with_a_listener(tmp_path: Path) -> None:
    # B002 dials out to port 8443 somewhere else: no local port is taken.
    assert problems_after(tmp_path, set_key("banks", "B002", "endpoint", "tcp:127.0.0.1:8443"))[1] == []


def test_a_missing_bank_ca_file_is_a_problem(tmp_path: Path) -> None:
    for name in ("c", "k", "ca"):
        (tmp_path / name).write_text("x")

    def change(data: dict[str, Any]) -> None:
        data["tls"] = {"certificate": "c", "private_key": "k", "ca": "ca"}
        data["banks"]["B002"]["ca"] = "bank-b002-ca.crt"
        data["centres"]["C52240"]["ca"] = "centre-ca.crt"
    file, problems = problems_after(tmp_path, change, check_files=True)
    assert problems == [
        f"{file}: centres.C52240.ca: no such file: {tmp_path / 'centre-ca.crt'}",
        f"{file}: banks.B002.ca: no such file: {tmp_path / 'bank-b002-ca.crt'}",
    ]


# -- unknown keys ------------------------------------------------------------------


@pytest.mark.parametrize("path, reason", [
    (("gatway",), 'unknown key (did you mean "gateway"?)'),
    (("zzz",), "unknown key (known keys: gateway, tls, listen, limits, timeouts, ledger, centres, "
                  "banks, accounts, counterparties, operators)"),
    (("gateway", "nodes"), 'unknown key (did you mean "node"?)'),
    (("tls", "key"), "unknown key (known keys: certificate, private_key, ca, crls)"),
    (("listen", "centre-api"), 'unknown key (did you mean "centre_api"?)'),
    (("limits", "max_amnt"), 'unknown key (did you mean "max_amount"?)'),
    (("timeouts", "heartbeat"), 'unknown key (did you mean "heartbeat_interval"?)'),
    (("centres", "C52240", "unit"), 'unknown key (did you mean "unit_no"?)'),
    (("banks", "B001", "windows"), 'unknown key (did you mean "window"?)'),
    (("accounts", ACCOUNT, "owner"), "unknown key (known keys: bank, centre, name, type, bank_code)"),
    (("counterparties", COUNTERPARTY, "bank"), 'unknown key (did you mean "bank_code"?)'),
])
def test_unknown_keys_are_refused_at_every_level(tmp_path: Path, path: tuple[str, ...],
                                                 reason: str) -> None:
    file, problems = problems_after(tmp_path, set_key(*path, "x"))
    assert problems == [f"{file}: {'.'.join(path)}: {reason}"]


def test_several_problems_are_reported_together_in_file_order(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["surplus"] = 1
        data["gateway"]["node"] = "D0"
        data["limits"]["max_batch"] = 0
        data["timeouts"]["dead_after"] = 1.0
        data["banks"]["B001"]["direction"] = "dial"
        data["banks"]["B002"]["window"] = -1
        data["accounts"][ACCOUNT]["bank"] = "B404"
        data["counterparties"][COUNTERPARTY]["colour"] = "red"
    file, problems = problems_after(tmp_path, change)
    assert [p.split(": ")[1] for p in problems] == [
        "surplus", "gateway.node", "limits.max_batch", "timeouts.dead_after",
        "banks.B001.direction", "banks.B002.window", f"accounts.{ACCOUNT}.bank",
        f"counterparties.{COUNTERPARTY}.colour",
    ]
    assert all(p.startswith(f"{file}: ") for p in problems)


def test_an_account_of_a_registered_but_broken_bank_is_not_blamed(tmp_path: Path) -> None:
    file, problems = problems_after(tmp_path, set_key("banks", "B001", "window", 0))
    assert problems == [f"{file}: banks.B001.window: must be from 1 to 10000, not 0"]


# -- files that are not a config -----------------------------------------------------


def test_a_toml_syntax_error_is_one_problem_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[gateway]\nnode = "D00000"\ndatabase = \n[tls]\n', encoding="utf-8")
    problems = check_config(path)
    assert len(problems) == 1
    assert re.fullmatch(rf"{re.escape(str(path))}: line 3, column \d+: invalid TOML: .+",
                        problems[0])


def test_a_duplicate_table_is_a_toml_error(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8") + '\n[banks.B001]\nname = "x"\n',
                    encoding="utf-8")
    problems = check_config(path, check_files=False)
    assert len(problems) == 1 and "invalid TOML" in problems[0] and ": line " in problems[0]


def test_a_missing_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert check_config(path) == [f"{path}: (file): cannot be read (No such file or directory)"]
    with pytest.raises(ConfigError):
        load_config(path)


def test_a_file_that_is_not_utf8_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "gbk.toml"
    path.write_bytes(b'[gateway]\nnode = "' + "例".encode("gbk") + b'"\n')  # GBK C0 FD: not UTF-8
    assert check_config(path) == [f"{path}: (file): not UTF-8 text (bad byte at offset 18)"]


def test_an_empty_file_names_every_required_section(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    assert check_config(path) == [f"{path}: gateway: is required", f"{path}: tls: is required",
                                  f"{path}: listen: is required"]


def test_registries_may_be_empty(tmp_path: Path) -> None:
    data = example_data()
    for name in ("centres", "banks", "accounts", "counterparties"):
        del data[name]
    config = load_config(write(tmp_path, data), check_files=False)
    assert not config.centres and not config.banks and not config.accounts
    assert not config.counterparties


# -- render_toml ------------------------------------------------------------------------

_keys = st.text(max_size=8)
_scalars = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3))
_tables = st.recursive(st.dictionaries(_keys, _values, max_size=4),
                       lambda inner: st.dictionaries(_keys, st.one_of(_values, inner), max_size=4),
                       max_leaves=12)
_registry = st.dictionaries(_keys, st.dictionaries(_keys, _scalars, max_size=4), max_size=4)
_documents = st.builds(
    lambda tables, accounts, counterparties: {**tables, **accounts, **counterparties},
    st.dictionaries(_keys, st.one_of(_values, _tables), max_size=5),
    st.dictionaries(st.just("accounts"), _registry, max_size=1),
    st.dictionaries(st.just("counterparties"), _registry, max_size=1),
)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_render_toml_round_trips_through_tomllib(data: dict[str, Any]) -> None:
    assert tomllib.loads(render_toml(data)) == data


def test_render_toml_writes_registries_as_inline_tables_and_chinese_as_is() -> None:
    data = {"gateway": {"node": "D00000"},
            "centres": {"C52240": {"name": "示例市住房公积金管理中心"}},
            "accounts": {"6200001111222233": {"bank": "B001", "name": "示例中心归集户"}}}
    text = render_toml(data)
    assert text == (
        "[gateway]\n"
        'node = "D00000"\n'
        "\n"
        "[centres.C52240]\n"
        'name = "示例市住房公积金管理中心"\n'
        "\n"
        "[accounts]\n"
        '6200001111222233 = { bank = "B001", name = "示例中心归集户" }\n'
    )
    assert tomllib.loads(text) == data


def test_render_toml_escapes_what_toml_strings_cannot_hold_raw() -> None:
    text = render_toml({"a b": 'q"\\\n\t\x00\x7f张', "x": 1.0, "y": -0.5e-10})
    assert text == '"a b" = "q\\"\\\\\\n\\t\\u0000\\u007F张"\nx = 1.0\ny = -5e-11\n'
    assert tomllib.loads(text) == {"a b": 'q"\\\n\t\x00\x7f张', "x": 1.0, "y": -0.5e-10}


def test_render_toml_keeps_empty_tables_and_special_floats() -> None:
    data = {"empty": {}, "t": {"inner": {}, "inf": math.inf, "ninf": -math.inf, "nan": math.nan}}
    back = tomllib.loads(render_toml(data))
    assert back["empty"] == {} and back["t"]["inner"] == {}
    assert back["t"]["inf"] == math.inf and back["t"]["ninf"] == -math.inf
    assert math.isnan(back["t"]["nan"])


@pytest.mark.parametrize("data, error", [
    ({"a": None}, TypeError),
    ({"a": {1: "x"}}, TypeError),
    ({"a": object()}, TypeError),
    ({"a": 2**63}, ValueError),
    ({"a": "\ud800"}, ValueError),
])
def test_render_toml_refuses_what_toml_cannot_hold(data: dict[Any, Any], error: type) -> None:
    with pytest.raises(error):
        render_toml(data)


def test_a_rendered_config_loads_like_the_example(tmp_path: Path) -> None:
    rendered = load_config(write(tmp_path / "conf", example_data()), check_files=False)
    original = load_config(EXAMPLE, check_files=False)
    # Relative paths differ only by the directory they were resolved against.
    assert dataclasses.replace(rendered, path=original.path, database="", tls=original.tls) == \
        dataclasses.replace(original, database="")
    assert rendered.tls.ca == tmp_path / "conf" / "../keys/dev/ca.crt"



def test_the_ledger_section_is_optional_and_checked(tmp_path):
    base = (Path(__file__).parents[2] / "conf" / "gateway.example.toml").read_text(encoding="utf-8")
    path = tmp_path / "gw.toml"
    path.write_text(base, encoding="utf-8")
    assert load_config(path, check_files=False).ledger is None
    path.write_text(base + '\n[ledger]\nurl = "https://127.0.0.1:9443"\nsigning_key = "s.key"\n', encoding="utf-8")
    ledger = load_config(path, check_files=False).ledger
    assert ledger is not None and ledger.name == "main" and ledger.signature_alg == "ed25519"
    assert ledger.signing_key == tmp_path / "s.key" and ledger.batch == 500
    path.write_text(base + '\n[ledger]\nurl = "http://x"\nsigning_key = "s.key"\nsignature_alg = "rsa"\n'
                    'batch = 0\nfoo = 1\n', encoding="utf-8")
    problems = check_config(path, check_files=False)
    keys = {p.split(": ")[1] for p in problems}
    assert keys == {"ledger.url", "ledger.signature_alg", "ledger.batch", "ledger.foo"}, problems


def test_a_bdc_bank_defaults_to_a_connection_per_request_and_needs_the_way_back(tmp_path: Path) -> None:
    """bdc is deployed a connection per request; when the gateway listens it must also
    know where to dial the bank.  Other adapters keep one persistent connection."""
    def drop_peer(data: dict[str, Any]) -> None:
        del data["banks"]["B001"]["peer_endpoint"]

    _, problems = problems_after(tmp_path, drop_peer)
    assert any("banks.B001.peer_endpoint: is required" in p for p in problems), problems

    def persistent(data: dict[str, Any]) -> None:
        del data["banks"]["B001"]["peer_endpoint"]
        data["banks"]["B001"]["connection"] = "persistent"

    assert problems_after(tmp_path, persistent)[1] == []


def test_the_centre_bdc_listener_is_optional_and_must_not_collide(tmp_path: Path) -> None:
    """[listen] centre_bdc: centres' bdc software (docs/protocols/bdc.md, "The centre role")."""
    assert load_config(EXAMPLE, check_files=False).centre_bdc is None
    assert problems_after(tmp_path, set_key("listen", "centre_bdc", "tcp:9999:interface=127.0.0.1"))[1] == []
    file, problems = problems_after(tmp_path, set_key("listen", "centre_bdc", "tcp:8443:interface=127.0.0.1"))
    assert problems == [f'{file}: listen.centre_bdc: "tcp:8443:interface=127.0.0.1" listens on the same '
                        "address as listen.centre_api"]
