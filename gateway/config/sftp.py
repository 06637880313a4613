"""A bank's host-to-host file channel (``channel = "sftp"``): where files go and come from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gateway.config._base import Checker, _Path
from gateway.config.toml import _show

BANK_CHANNELS = ("link", "sftp")
"""Values of ``banks.X.channel``: the adapter's own link (default) or ISO 20022 files over SFTP."""

SFTP_AFTER_COLLECT = ("keep", "delete", "move")
"""Values of ``banks.X.sftp.after_collect``: what happens to an inbound file once processed."""

_SFTP_KEYS = ("host", "port", "local_addresses", "user", "private_key", "known_hosts", "outbound",
              "inbound", "poll_interval", "after_collect", "collected", "timeout", "max_file")
_SFTP_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_SFTP_DIR = re.compile(r"/?[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?|\.|/")


@dataclass(frozen=True)
class SftpChannelConfig:
    """A bank reached by ISO 20022 files on its SFTP server (``banks.X.sftp``).

    The gateway logs in as ``user`` with ``private_key`` (mode 0600), accepts the server only
    with a host key that ``known_hosts`` gives for ``host`` (``[host]:port`` off port 22),
    puts pain.001 files into ``outbound`` and collects the bank's files from ``inbound``
    every ``poll_interval`` seconds; a processed file is kept (and remembered), deleted, or
    moved into ``collected`` (``after_collect``).
    """

    host: str
    port: int
    user: str
    private_key: Path
    known_hosts: Path
    outbound: str
    inbound: str
    poll_interval: float = 60.0
    after_collect: str = "keep"
    collected: str = ""
    local_addresses: tuple[str, ...] = ()
    timeout: float = 30.0
    max_file: int = 16 * 1024 * 1024

    @property
    def endpoint(self) -> str:
        """The server as a Twisted client endpoint string (what ``banks.X.endpoint`` shows)."""
        return f"tcp:{self.host.replace(':', chr(92) + ':')}:{self.port}"


def sftp_channel(c: Checker, entry: Mapping[str, Any], at: _Path,
                 adapter: str | None) -> SftpChannelConfig | None | bool:
    """``banks.X.channel`` and ``banks.X.sftp``: None for a bank on its adapter's link, the
    SFTP settings for ``channel = "sftp"``, False when there is a problem (reported)."""
    from gateway.http_transport import check_local_host

    channel = entry.get("channel", "link")
    if channel not in BANK_CHANNELS:
        c.problem(at + ("channel",), f"must be one of {', '.join(map(_show, BANK_CHANNELS))}, "
                                     f"not {_show(channel)}")
        return False
    if channel == "link":
        if "sftp" in entry:
            c.problem(at + ("sftp",), 'is only used with channel = "sftp"')
            return False
        return None
    good = True
    if adapter is not None and adapter != "iso20022":
        c.problem(at + ("channel",), '"sftp" carries ISO 20022 files: it needs adapter = "iso20022"')
        good = False
    for key in ("direction", "endpoint", "connection", "peer_endpoint", "front_end"):
        if key in entry:
            c.problem(at + (key,), 'is not used with channel = "sftp" (the sftp table names the server)')
            good = False
    table = entry.get("sftp")
    at = at + ("sftp",)
    if not isinstance(table, dict):
        c.problem(at, 'is required for channel = "sftp" (a table)' if table is None else "must be a table")
        return False
    c.keys(table, at, _SFTP_KEYS)
    locals_ = table.get("local_addresses", [])
    if not isinstance(locals_, list) or not all(isinstance(a, str) and a for a in locals_):
        c.problem(at + ("local_addresses",), "must be an array of address strings")
        return False
    host = c.string(table, at, "host")
    if host is not None:
        try:
            check_local_host(host, locals_, "SFTP server")
        except ValueError as e:
            c.problem(at + ("host",), str(e))
            host = None
    port = c.integer(table, at, "port", 1, 65535, default=22)
    user = c.string(table, at, "user", pattern=_SFTP_USER, what="must be 1-64 of A-Z a-z 0-9 . _ -")
    private_key = c.file_path(table, at, "private_key")
    known_hosts = c.file_path(table, at, "known_hosts")
    dirs = {key: c.string(table, at, key, pattern=_SFTP_DIR,
                          what="must be a directory path of A-Z a-z 0-9 . _ - and / (no ..)")
            for key in ("outbound", "inbound")}
    after = table.get("after_collect", "keep")
    collected = ""
    if after not in SFTP_AFTER_COLLECT:
        c.problem(at + ("after_collect",), f"must be one of {', '.join(map(_show, SFTP_AFTER_COLLECT))}, "
                                           f"not {_show(after)}")
        good = False
    elif after == "move":
        collected = c.string(table, at, "collected", pattern=_SFTP_DIR,
                             what="must be a directory path of A-Z a-z 0-9 . _ - and / (no ..)") or ""
        good = good and bool(collected)
    elif "collected" in table:
        c.problem(at + ("collected",), 'is only used with after_collect = "move"')
        good = False
    for key, value in (*dirs.items(), ("collected", collected)):
        if value and ".." in value.split("/"):
            c.problem(at + (key,), "must not climb out with ..")
            good = False
    if dirs["outbound"] is not None and dirs["outbound"] == dirs["inbound"]:
        c.problem(at + ("inbound",), "must not be the outbound directory (our own files would be read back)")
        good = False
    poll = c.seconds(table, at, "poll_interval", 60.0)
    timeout = c.seconds(table, at, "timeout", 30.0)
    max_file = c.integer(table, at, "max_file", 1024, 256 * 1024 * 1024, default=16 * 1024 * 1024)
    if known_hosts is not None and host is not None and port is not None and c.check_files \
            and known_hosts.is_file():
        from gateway.sftp import SftpError, pinned_host_keys

        try:
            pinned_host_keys(known_hosts, host, port)
        except SftpError as e:
            c.problem(at + ("known_hosts",), str(e))
            good = False
    values = (host, port, user, private_key, known_hosts, *dirs.values(), poll, timeout, max_file)
    if not good or any(v is None for v in values):
        return False
    return SftpChannelConfig(host, port, user, private_key, known_hosts, dirs["outbound"] or "",
                             dirs["inbound"] or "", poll or 60.0, after, collected, tuple(locals_),
                             timeout or 30.0, max_file or 0)
