"""The systemd units in systemd/: what they must say, what systemd's own tools make of them, and
whether the daemon behaves under them.

- the units are parsed (a small parser: systemd repeats keys, configparser would drop them) and
  the settings the deployment relies on are required;
- ``systemd-analyze verify`` accepts every unit in a throw-away root that holds the units, the
  host's stock units and stand-ins for the binaries they run, and prints nothing;
- ``systemd-analyze security --offline=true`` rates each service 2.0 or lower;
- ``systemd-sysusers`` and ``systemd-tmpfiles`` build the users and directories in that root;
- the daemon started the way systemd starts it (inherited sockets named by FileDescriptorName,
  $NOTIFY_SOCKET, $WATCHDOG_USEC) serves on the inherited sockets, says READY=1, pings the watchdog
  and stops cleanly on SIGTERM;
- MemoryDenyWriteExecute= is on only if the daemon's TLS code survives it (it does not: pyOpenSSL's
  callbacks are cffi trampolines in writable+executable memory).

The systemd tools come with Debian's ``systemd`` package; without them the tests that need them
skip with that reason, unless ``HPF_REQUIRE_TOOLS=1`` (CI sets it) makes the skip a failure.
"""

from __future__ import annotations

import http.client
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.config import check_config, load_config, render_toml
from gateway.demo import CENTRE, write_demo_config
from gateway.pki import DevPki, init_dev_pki
from gateway.store import migrate
from gateway.tls import resolve_credential
from tests.kit.config import ledger_data
from tests.kit.ledger import DEBIT, PAYEE

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
OPERATIONS = ROOT / "docs" / "operations.md"
DAEMONS = ("hpf-gateway.service", "hpf-ledger.service")
SERVICES = (*DAEMONS, "hpf-gateway-backup.service")
MAX_EXPOSURE = 2.0
TIMEOUT = 15.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not installed (Debian package systemd)"
        if os.environ.get("HPF_REQUIRE_TOOLS") == "1":
            pytest.fail(f"HPF_REQUIRE_TOOLS=1 but {reason}")
        pytest.skip(reason)
    return path


# -- a small unit-file parser ---------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A unit file as systemd reads it: sections of (key, value) in order, keys may repeat."""

    name: str
    sections: dict[str, list[tuple[str, str]]]

    def values(self, section: str, key: str) -> list[str]:
        """Every value of ``key``, after systemd's rule that an empty assignment resets the list."""
        out: list[str] = []
        for k, v in self.sections.get(section, []):
            if k == key:
                out = [] if v == "" else out + [v]
        return out

    def get(self, section: str, key: str) -> str | None:
        """The effective (last) value of a single-valued key; "" if assigned empty; None if absent."""
        found = [v for k, v in self.sections.get(section, []) if k == key]
        return found[-1] if found else None


def parse_unit(path: Path) -> Unit:
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}: not a key=value line in a section: {raw!r}"
        current.append((key.strip(), value.strip()))
    return Unit(path.name, sections)


def unit(name: str) -> Unit:
    return parse_unit(UNITS / name)


def exec_argv(line: str) -> list[str]:
    """An Exec*= line as argv, without systemd's prefixes (-, @, +, !, :)."""
    argv = shlex.split(line)
    argv[0] = argv[0].lstrip("-@+!:")
    return argv


def test_the_parser_reads_repeated_keys_resets_and_continuations(tmp_path):
    f = tmp_path / "x.service"
    f.write_text("# c\n[Service]\nA=1\nA=2\n; c\nB=x\\\n  y\nC=1\nC=\nC=3\n", encoding="utf-8")
    u = parse_unit(f)
    assert u.values("Service", "A") == ["1", "2"] and u.get("Service", "A") == "2"
    assert u.get("Service", "B") == "x y" and u.values("Service", "C") == ["3"]
    assert u.get("Service", "D") is None


# -- what the services must say ---------------------------------------------------------------------

HARDENING = {
    "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
    "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
    "DevicePolicy": "closed", "PrivateUsers": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
    "ProtectClock": "yes", "ProtectHostname": "yes", "ProtectProc": "invisible", "ProcSubset": "pid",
    "RestrictNamespaces": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes", "SystemCallArchitectures": "native", "UMask": "0077",
}


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_is_hardened(name):
    u = unit(name)
    for key, want in HARDENING.items():
        assert u.get("Service", key) == want, f"{name}: {key}={u.get('Service', key)!r}, want {want!r}"
    assert u.values("Service", "SystemCallFilter")[0] == "@system-service"
    assert "~@privileged @resources" in u.values("Service", "SystemCallFilter")
    families = set(" ".join(u.values("Service", "RestrictAddressFamilies")).split())
    assert families <= {"AF_INET", "AF_INET6", "AF_UNIX"} and families
    assert u.get("Service", "User") not in (None, "", "root", "0")


@pytest.mark.parametrize("name", DAEMONS)
def test_the_daemons_notify_systemd_restart_on_failure_and_reload_on_sighup(name):
    u = unit(name)
    s = {k: u.get("Service", k) for k in ("Type", "NotifyAccess", "WatchdogSec", "Restart", "ExecReload",
                                          "TimeoutStopSec", "RestartPreventExitStatus")}
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main" and s["WatchdogSec"] == "30s"
    assert s["Restart"] == "on-failure" and s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["TimeoutStopSec"] and s["RestartPreventExitStatus"] == "2"
    assert u.values("Install", "WantedBy") == ["multi-user.target"]


@pytest.mark.parametrize("name, command, config", [
    ("hpf-gateway.service", "run", "/etc/hpf-gateway/gateway.toml"),
    ("hpf-ledger.service", "ledger", "/etc/hpf-ledger/ledger.toml"),
])
def test_the_daemons_run_from_their_state_config_and_logs_directories(name, command, config):
    u = unit(name)
    argv = exec_argv(u.get("Service", "ExecStart") or "")
    assert argv == ["/usr/bin/hpf-gateway", command, "-c", config]
    args = build_parser().parse_args(argv[1:])  # the command line the unit runs is one the CLI takes
    assert args.command == command and args.config == config
    state = u.get("Service", "StateDirectory")
    assert state and u.get("Service", "LogsDirectory") == state
    assert config.startswith(f"/etc/{u.get('Service', 'ConfigurationDirectory')}/")
    assert u.get("Service", "WorkingDirectory") == f"/var/lib/{state}"
    assert u.get("Service", "StateDirectoryMode") == "0700"


def test_the_backup_service_runs_the_cli_backup_into_the_backup_directory():
    u = unit("hpf-gateway-backup.service")
    assert u.get("Service", "Type") == "oneshot" and u.get("Service", "PrivateNetwork") == "yes"
    argv = exec_argv(u.get("Service", "ExecStart") or "")
    assert argv[:2] == ["/bin/sh", "-c"]
    inner = shlex.split(argv[2].replace("$$", "$").replace("%%", "%"))
    assert inner[:5] == ["exec", "/usr/bin/hpf-gateway", "backup", "-c", "/etc/hpf-gateway/gateway.toml"]
    args = build_parser().parse_args(inner[2:])
    assert args.command == "backup" and args.dest.startswith("/var/backups/hpf-gateway/gateway-")
    assert u.values("Service", "ReadWritePaths") == ["/var/backups/hpf-gateway"]
    timer = unit("hpf-gateway-backup.timer")
    assert timer.get("Timer", "OnCalendar") and timer.get("Timer", "Persistent") == "yes"


@pytest.mark.parametrize("name", DAEMONS)
def test_private_keys_reach_the_daemon_as_credentials_it_looks_for(name, tmp_path, monkeypatch):
    u = unit(name)
    creds = [c.split(":", 1) for c in u.values("Service", "LoadCredential")]
    assert creds
    config_dir = f"/etc/{u.get('Service', 'ConfigurationDirectory')}"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for cred, source in creds:
        # resolve_credential matches by file name: the credential must be named like its file.
        assert Path(source).name == cred and source == f"{config_dir}/keys/{cred}"
        (credentials / cred).write_text("key", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    for cred, source in creds:
        assert resolve_credential(Path(source)) == credentials / cred
    # and the keys directory the credentials come from is root's alone
    tmpfiles = (UNITS / "tmpfiles.d" / "hpf-gateway.conf").read_text(encoding="utf-8")
    assert re.search(rf"^d\s+{re.escape(config_dir)}/keys\s+0700\s+root\s+root\b", tmpfiles, re.MULTILINE)


def test_each_service_user_comes_from_sysusers():
    declared = {}
    for line in (UNITS / "sysusers.d" / "hpf-gateway.conf").read_text(encoding="utf-8").splitlines():
        fields = shlex.split(line, comments=True)
        if fields and fields[0] == "u":
            declared[fields[1]] = fields[4] if len(fields) > 4 else None
    for name in SERVICES:
        u = unit(name)
        user = u.get("Service", "User")
        assert user in declared and u.get("Service", "Group") == user
    # the gateway and the ledger it is supervised by never share a user
    assert unit("hpf-gateway.service").get("Service", "User") != unit("hpf-ledger.service").get("Service", "User")
    assert declared["hpf-gateway"] == "/var/lib/hpf-gateway"


# -- socket units and the config lines that use them --------------------------------------------------

SOCKETS = {"hpf-gateway-centre.socket": "centre-api", "hpf-gateway-bank@.socket": "bank-%i"}


@pytest.mark.parametrize("name, fdname", SOCKETS.items())
def test_socket_units_hand_named_descriptors_to_the_gateway(name, fdname):
    u = unit(name)
    assert u.get("Socket", "Service") == "hpf-gateway.service"
    assert u.get("Socket", "FileDescriptorName") == fdname
    assert u.get("Socket", "Accept") in (None, "no")  # one daemon takes every connection
    assert u.values("Install", "WantedBy") == ["sockets.target"]
    listen = u.values("Socket", "ListenStream")
    if "@" in name:
        assert not listen  # each instance's address comes from its drop-in
    else:
        assert listen == ["0.0.0.0:8443"]  # IPv4: the config says domain=INET


def test_the_config_lines_for_socket_activation_are_accepted_and_documented(tmp_path):
    lines = {"centre_api": "systemd:domain=INET:name=centre-api",
             "bank": "systemd:domain=INET:name=bank-B001"}
    path = write_demo_config(tmp_path)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data["listen"]["centre_api"] = lines["centre_api"]
    assert data["banks"]["B001"]["direction"] == "listen"
    data["banks"]["B001"]["endpoint"] = lines["bank"]
    path.write_text(render_toml(data), encoding="utf-8")
    assert check_config(path, check_files=False) == []
    docs = OPERATIONS.read_text(encoding="utf-8")
    for line in lines.values():
        assert line in docs
    assert "hpf-gateway-bank@B001.socket" in docs and "ListenStream=" in docs


# -- systemd's own tools ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root for systemd-analyze: our units, the host's stock units, stand-ins for our binaries.

    ``--root`` makes systemd-analyze look up units and check Exec paths inside this
    directory, so the units are verified unchanged, without hpf-gateway installed.
    """
    _tool("systemd-analyze")
    stock = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                  if (p / "sysinit.target").exists()), None)
    if stock is None:
        pytest.skip("no stock systemd units (sysinit.target) on this host")
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True)
    system = root / "etc/systemd/system"
    system.mkdir(parents=True)
    for f in UNITS.iterdir():
        if f.is_file():
            shutil.copy(f, system / f.name)
    dropin = system / "hpf-gateway-bank@B001.socket.d"
    dropin.mkdir()
    (dropin / "listen.conf").write_text("[Socket]\nListenStream=0.0.0.0:7001\n", encoding="utf-8")
    for name in (*SERVICES,):
        u = unit(name)
        for key in ("ExecStart", "ExecReload", "ExecStartPre", "ExecStop"):
            for line in u.values("Service", key):
                binary = root / exec_argv(line)[0].lstrip("/")
                binary.parent.mkdir(parents=True, exist_ok=True)
                binary.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
                binary.chmod(0o755)
    return root


def _analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("systemd-analyze"), *args, f"--root={root}", "--no-pager"],
                          capture_output=True, check=False, text=True, timeout=60, cwd=root)


ALL_UNITS = [*SERVICES, "hpf-gateway-backup.timer", "hpf-gateway-centre.socket", "hpf-gateway-bank@B001.socket"]


def test_systemd_analyze_verify_accepts_every_unit_without_a_word(fake_root):
    proc = _analyze(fake_root, "verify", "--man=no", "--recursive-errors=no", *ALL_UNITS)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr


def test_systemd_analyze_verify_does_read_these_files(fake_root, tmp_path):
    """Controls: a misspelt key and a bank socket without its drop-in are reported."""
    system = fake_root / "etc/systemd/system"
    broken = system / "hpf-broken.service"
    broken.write_text((UNITS / "hpf-gateway.service").read_text(encoding="utf-8")
                      .replace("ProtectSystem=strict", "ProtectSytem=strict"), encoding="utf-8")
    try:
        proc = _analyze(fake_root, "verify", "--man=no", "--recursive-errors=no", "hpf-broken.service",
                        "hpf-gateway-bank@B002.socket")
    finally:
        broken.unlink()
    said = proc.stdout + proc.stderr
    assert "Unknown key 'ProtectSytem'" in said
    assert "hpf-gateway-bank@B002.socket: Unit has no Listen setting" in said and proc.returncode != 0


@pytest.mark.parametrize("name", SERVICES)
def test_systemd_analyze_security_rates_each_service_at_most_2(fake_root, name):
    proc = _analyze(fake_root, "security", "--offline=true", name)
    m = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, proc.stdout


def test_sysusers_and_tmpfiles_build_the_users_and_private_directories(tmp_path):
    sysusers, tmpfiles = _tool("systemd-sysusers"), _tool("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles --root needs root to give directories their owners")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    proc = subprocess.run([sysusers, f"--root={root}", str(UNITS / "sysusers.d/hpf-gateway.conf")],
                          capture_output=True, check=False, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    assert {"hpf-gateway", "hpf-ledger"} <= set(users)
    assert users["hpf-gateway"][6] == users["hpf-ledger"][6] == "/usr/sbin/nologin"
    proc = subprocess.run([tmpfiles, f"--root={root}", "--create", str(UNITS / "tmpfiles.d/hpf-gateway.conf")],
                          capture_output=True, check=False, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    for path, owner in (("etc/hpf-gateway/keys", 0), ("etc/hpf-ledger/keys", 0),
                        ("var/backups/hpf-gateway", int(users["hpf-gateway"][2]))):
        st = (root / path).stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o700, owner), path


# -- MemoryDenyWriteExecute -----------------------------------------------------------------------------

_MDWE_PROBE = r"""
import ctypes, sys
from pathlib import Path
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(3)  # this kernel has no PR_SET_MDWE
from gateway.tls import server_options
try:
    server_options(Path(sys.argv[1]), Path(sys.argv[2]), [Path(sys.argv[3])])
except MemoryError as e:
    print(e)
    sys.exit(4)
"""


def test_memory_deny_write_execute_is_on_only_if_the_daemons_tls_survives_it(dev_pki: DevPki):
    """The kernel's PR_SET_MDWE refuses what MemoryDenyWriteExecute= refuses: memory both written and run."""
    proc = subprocess.run([sys.executable, "-c", _MDWE_PROBE, str(dev_pki.cert("gateway")),
                           str(dev_pki.key("gateway")), str(dev_pki.ca_cert)],
                          capture_output=True, check=False, text=True, timeout=60, cwd=ROOT)
    if proc.returncode == 3:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert proc.returncode in (0, 4), proc.stdout + proc.stderr
    survives = proc.returncode == 0
    if not survives:
        assert "write+execute memory for ffi.callback" in proc.stdout, proc.stdout
    for name in DAEMONS:
        mdwe = unit(name).get("Service", "MemoryDenyWriteExecute")
        assert survives or mdwe in (None, "no"), f"{name} sets MemoryDenyWriteExecute but TLS dies under it"


# -- the daemon under a simulated systemd ------------------------------------------------------------


@dataclass
class Notifications:
    """The datagram socket systemd reads sd_notify messages from."""

    sock: socket.socket
    address: str

    def wait_for(self, wanted: str, proc: subprocess.Popen[str], timeout: float = TIMEOUT) -> list[str]:
        """Every line received until ``wanted``; AssertionError if ``proc`` exits or time runs out first."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(0.2)
            try:
                lines = self.sock.recv(4096).decode("utf-8").split("\n")
            except TimeoutError:
                if proc.poll() is not None:
                    raise AssertionError(f"exited before {wanted}; got {seen}") from None
                continue
            seen += lines
            if wanted in lines:
                return seen
        raise AssertionError(f"no {wanted} within {timeout}s; got {seen}")


@pytest.fixture
def notify_socket() -> Iterator[Notifications]:
    name = f"hpf-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)  # abstract: no path-length limit from tmp_path
    try:
        yield Notifications(sock, "@" + name)
    finally:
        sock.close()


# Runs in the child: move the inherited listening sockets to fd 3, 4, … and say whose they are,
# as systemd does (sd_listen_fds(3)), then run the CLI.
_ACTIVATE = r"""
import fcntl, os, sys
fds = [int(x) for x in sys.argv[1].split(",") if x]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
if fds:
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())
from gateway.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def _tls_client(pki: DevPki, role: str, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.cert(role, name)), str(pki.key(role, name)))
    return ctx


def _spawn(argv: list[str], sockets: dict[str, socket.socket], notify: Notifications,
           extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env.update({"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "3000000", "PYTHONPATH": str(ROOT),
                **(extra_env or {})})
    if sockets:
        env["LISTEN_FDNAMES"] = ":".join(sockets)
    fds = [s.fileno() for s in sockets.values()]
    return subprocess.Popen([sys.executable, "-c", _ACTIVATE, ",".join(map(str, fds)), *argv],
                            pass_fds=fds, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"no exit within {TIMEOUT}s of SIGTERM:\n{out[-3000:]}") from None
    return proc.returncode, out


def _gateway_config(tmp_path: Path, **listen: str) -> tuple[Path, DevPki]:
    path = write_demo_config(tmp_path)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    pki = init_dev_pki(tmp_path / "keys", banks=sorted(data["banks"]), centres=[CENTRE])
    if "centre_api" in listen:
        data["listen"]["centre_api"] = listen["centre_api"]
    if "bank" in listen:
        data["banks"]["B001"]["endpoint"] = listen["bank"]
    path.write_text(render_toml(data), encoding="utf-8")
    migrate.upgrade(load_config(path).database)
    return path, pki


def test_the_gateway_serves_on_sockets_systemd_passes_and_speaks_sd_notify(tmp_path, notify_socket):
    centre_sock, bank_sock = _listener(), _listener()
    fdnames = {unit("hpf-gateway-centre.socket").get("Socket", "FileDescriptorName") or "": centre_sock,
               (unit("hpf-gateway-bank@.socket").get("Socket", "FileDescriptorName") or "")
               .replace("%i", "B001"): bank_sock}
    assert set(fdnames) == {"centre-api", "bank-B001"}
    config, pki = _gateway_config(tmp_path, centre_api="systemd:domain=INET:name=centre-api",
                                  bank="systemd:domain=INET:name=bank-B001")
    proc = _spawn(["run", "-c", str(config)], fdnames, notify_socket)
    centre_port, bank_port = centre_sock.getsockname()[1], bank_sock.getsockname()[1]
    centre_sock.close()  # the daemon holds its own copies now
    bank_sock.close()
    try:
        try:
            seen = notify_socket.wait_for("READY=1", proc)
        except AssertionError:
            code, out = _stop(proc)
            raise AssertionError(f"exit {code}:\n{out[-3000:]}") from None
        assert any(line.startswith("STATUS=") for line in seen)
        notify_socket.wait_for("WATCHDOG=1", proc, timeout=5.0)  # every WATCHDOG_USEC/3

        conn = http.client.HTTPSConnection("localhost", centre_port, timeout=TIMEOUT,
                                           context=_tls_client(pki, "centre", CENTRE))
        conn.request("GET", "/v1/openapi.json")
        response = conn.getresponse()
        assert response.status == 200 and b'"openapi"' in response.read()
        conn.close()

        bank_tls = _tls_client(pki, "bank", "B001")
        with socket.create_connection(("127.0.0.1", bank_port), timeout=TIMEOUT) as raw, \
                bank_tls.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")  # the handshake completed on the bank socket
    finally:
        code, out = _stop(proc)
    assert code == 0, out[-3000:]
    assert "daemon.stopped" in out


def test_the_gateway_reads_its_private_key_from_the_credentials_directory(tmp_path, notify_socket):
    """Under LoadCredential= the key is in $CREDENTIALS_DIRECTORY; the configured path is root's."""
    config, pki = _gateway_config(tmp_path)
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    key = pki.key("gateway")
    (credentials / "gateway.key").write_bytes(key.read_bytes())
    (credentials / "gateway.key").chmod(0o400)
    data["tls"]["private_key"] = str(tmp_path / "root-only" / "gateway.key")  # not there for the daemon
    config.write_text(render_toml(data), encoding="utf-8")
    proc = _spawn(["run", "-c", str(config)], {}, notify_socket,
                  {"CREDENTIALS_DIRECTORY": str(credentials)})
    try:
        try:
            notify_socket.wait_for("READY=1", proc)
        except AssertionError:
            code, out = _stop(proc)
            raise AssertionError(f"exit {code}:\n{out[-2000:]}") from None
    finally:
        code, out = _stop(proc)
    assert code == 0, out[-2000:]


def test_the_ledger_speaks_sd_notify(tmp_path, notify_socket, dev_pki):
    from gateway.signing import init_signing_key

    _, pub = init_signing_key(tmp_path / "signing")
    path = tmp_path / "ledger.toml"
    path.write_text(render_toml(ledger_data(tmp_path, dev_pki, pub, account=DEBIT, payee=PAYEE)),
                    encoding="utf-8")
    proc = _spawn(["ledger", "-c", str(path), "--migrate"], {}, notify_socket)
    try:
        try:
            notify_socket.wait_for("READY=1", proc)
        except AssertionError:
            code, out = _stop(proc)
            raise AssertionError(f"exit {code}:\n{out[-2000:]}") from None
    finally:
        code, out = _stop(proc)
    assert code == 0, out[-2000:]
