"""Host-to-host file exchange with a bank over SFTP (twisted.conch).

Banks that take ISO 20022 from corporate customers commonly do so as files on an SFTP
server: the customer puts pain.001 files into one directory and collects pain.002 and camt
files from another.  This module is that customer side, thin I/O only:

* :func:`connect` opens one SSH connection, authenticates with the gateway's key, and
  accepts the server only if it presents exactly the host key configured for that bank
  (no trust on first use), then opens the ``sftp`` subsystem.
* :class:`SftpSession` uploads a file (written under a temporary ``.part`` name, then
  renamed, so the bank never picks up half a file), lists a directory, and reads a file no
  larger than a bound (its size is asked first, and reading stops at the bound whatever the
  size said).
* :class:`InboxPoller` collects the files of an inbox directory it has not collected
  before and hands each to the caller as a :class:`BankFile` (name, SHA-256, bytes), waiting
  for the caller's Deferred (the commit) before the next.
* :func:`record_bank_file` journals a file exchanged with a bank: name, hash and bytes.

What the files mean is the ``iso20022`` adapter's business (``decode_document``).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.conch.error import ConchError
from twisted.conch.ssh import channel, common, connection, filetransfer, keys, transport, userauth
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IReactorTCP

__all__ = ["BankFile", "InboxPoller", "SftpError", "SftpSession", "connect", "record_bank_file"]

CHUNK = 32 * 1024
"""Bytes per SFTP read or write request (well under every server's packet limit)."""

MAX_FILE = 16 * 1024 * 1024
"""The largest file collected by default; a bank's statement file is far smaller."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""File names exchanged: no path separators, no leading dot, nothing a shell or a log would
misread."""


class SftpError(Exception):
    """The server refused something or sent what the exchange does not accept."""


@dataclass(frozen=True)
class BankFile:
    """One file exchanged with a bank, as it was on the wire."""

    name: str
    sha256: str
    data: bytes

    @classmethod
    def of(cls, name: str, data: bytes) -> "BankFile":
        return cls(name, hashlib.sha256(data).hexdigest(), data)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise SftpError(f"file name {name[:60]!r} is not 1-200 of A-Z a-z 0-9 . _ - (no leading dot)"
                        if isinstance(name, str) else "file name must be text")
    return name


# -- the SSH client ------------------------------------------------------------------------


class _Transport(transport.SSHClientTransport):
    def __init__(self, user: str, client_key: keys.Key, host_key: keys.Key,
                 ready: defer.Deferred) -> None:
        self._user, self._client_key, self._host_key, self._ready = user, client_key, host_key, ready
        self._why = ""

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred:
        # Pinned: only the host key configured for this bank is accepted.
        if keys.Key.fromString(hostKey) != self._host_key:
            self._why = "the server's host key is not the one configured for this bank"
            return defer.fail(ConchError(self._why))
        return defer.succeed(True)

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        self._why = self._why or desc.decode("utf-8", "replace")
        super().sendDisconnect(reason, desc)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        self._why = self._why or f"the server disconnected: {description.decode('utf-8', 'replace')}"
        super().receiveError(reasonCode, description)

    def connectionSecure(self) -> None:
        self.requestService(_UserAuth(self._user, self._client_key,
                                      _Connection(self._ready)))

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if not self._ready.called:
            self._ready.errback(SftpError(f"no SFTP session: {self._why or reason.getErrorMessage()}"))


class _UserAuth(userauth.SSHUserAuthClient):
    preferredOrder = [b"publickey"]

    def __init__(self, user: str, key: keys.Key, instance: connection.SSHConnection) -> None:
        super().__init__(user.encode("utf-8"), instance)
        self._key = key
        self._offered = False

    def getPublicKey(self) -> keys.Key | None:
        if self._offered:      # one key, offered once: then give up rather than loop
            return None
        self._offered = True
        return self._key.public()

    def getPrivateKey(self) -> defer.Deferred:
        return defer.succeed(self._key)

    def getPassword(self, prompt: bytes | None = None) -> None:
        return None            # key authentication only


class _Connection(connection.SSHConnection):
    def __init__(self, ready: defer.Deferred) -> None:
        super().__init__()
        self._ready = ready

    def serviceStarted(self) -> None:
        self.openChannel(_SftpChannel(self._ready, conn=self))


class _SftpChannel(channel.SSHChannel):
    name = b"session"

    def __init__(self, ready: defer.Deferred, **kw: Any) -> None:
        super().__init__(**kw)
        self._ready = ready

    def channelOpen(self, specificData: bytes) -> None:
        d = self.conn.sendRequest(self, b"subsystem", common.NS(b"sftp"), wantReply=True)
        d.addCallbacks(self._subsystem, self._refused)

    def openFailed(self, reason: Any) -> None:
        if not self._ready.called:
            self._ready.errback(SftpError(f"the server refused a session: {reason}"))

    def _subsystem(self, _: object) -> None:
        client = filetransfer.FileTransferClient()
        client.makeConnection(self)
        self.dataReceived = client.dataReceived  # type: ignore[method-assign]
        self._ready.callback(SftpSession(client, self.conn.transport))

    def _refused(self, failure: Any) -> None:
        if not self._ready.called:
            self._ready.errback(SftpError("the server has no sftp subsystem for us"))


def connect(reactor: IReactorTCP, host: str, port: int, *, user: str, client_key: keys.Key,
            host_key: keys.Key, timeout: float = 30) -> defer.Deferred:
    """A Deferred :class:`SftpSession` once the server proved it holds ``host_key``, accepted
    ``client_key`` for ``user`` and opened SFTP; fails with :class:`SftpError` or the
    connection's error otherwise."""
    ready: defer.Deferred = defer.Deferred()

    class _Factory(protocol.ClientFactory):
        def buildProtocol(self, addr: Any) -> _Transport:
            return _Transport(user, client_key, host_key, ready)

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            if not ready.called:
                ready.errback(reason)

    reactor.connectTCP(host, port, _Factory(), timeout=timeout)
    return ready


# -- file operations -------------------------------------------------------------------------


class SftpSession:
    """File operations on one SFTP connection (see the module docstring)."""

    def __init__(self, client: filetransfer.FileTransferClient, ssh: transport.SSHClientTransport
                 ) -> None:
        self._client = client
        self._ssh = ssh

    def close(self) -> None:
        self._ssh.loseConnection()

    @defer.inlineCallbacks
    def upload(self, directory: str, name: str, data: bytes) -> Any:
        """Put ``data`` as ``directory/name``: written as ``name.part``, then renamed."""
        final = posixpath.join(directory, _check_name(name))
        part = final + ".part"
        f = yield self._client.openFile(part.encode("utf-8"), filetransfer.FXF_WRITE
                                        | filetransfer.FXF_CREAT | filetransfer.FXF_TRUNC, {})
        try:
            for offset in range(0, len(data), CHUNK):
                yield f.writeChunk(offset, data[offset:offset + CHUNK])
        finally:
            yield f.close()
        yield self._client.renameFile(part.encode("utf-8"), final.encode("utf-8"))

    @defer.inlineCallbacks
    def names(self, directory: str) -> Any:
        """The plain file names in ``directory`` (sorted; dot files and ``.part`` files skipped)."""
        found: list[str] = []
        listing = yield self._client.openDirectory(directory.encode("utf-8"))
        try:
            while True:
                try:
                    batch = yield listing.read()
                except EOFError:
                    break
                for filename, _longname, attrs in batch:
                    name = filename.decode("utf-8", "replace")
                    mode = attrs.get("permissions", 0)
                    if (name.endswith(".part") or _NAME.fullmatch(name) is None
                            or (mode and (mode & 0o170000) != 0o100000)):
                        continue   # not a regular file we exchange
                    found.append(name)
        finally:
            listing.close()
        return sorted(found)

    @defer.inlineCallbacks
    def read(self, directory: str, name: str, max_bytes: int = MAX_FILE) -> Any:
        """The bytes of ``directory/name``; :class:`SftpError` if larger than ``max_bytes``."""
        path = posixpath.join(directory, _check_name(name)).encode("utf-8")
        attrs = yield self._client.getAttrs(path)
        if attrs.get("size", 0) > max_bytes:
            raise SftpError(f"{name}: {attrs['size']} bytes exceeds the limit of {max_bytes}")
        f = yield self._client.openFile(path, filetransfer.FXF_READ, {})
        out = bytearray()
        try:
            while True:
                try:
                    chunk = yield f.readChunk(len(out), CHUNK)
                except EOFError:
                    break
                out += chunk
                if len(out) > max_bytes:   # the file grew after its size was asked
                    raise SftpError(f"{name}: more than {max_bytes} bytes")
        finally:
            yield f.close()
        return bytes(out)


class InboxPoller:
    """Collects the new files of one inbox directory.

    ``seen(name, sha256)`` says whether a file was collected before (the journal knows);
    ``on_file(file)`` stores it and returns a Deferred that fires once it is committed.  A
    file too large is reported to ``on_refused(name, reason)`` and skipped; one failure never
    stops the others.
    """

    def __init__(self, inbox: str, seen: Callable[[str, str], bool],
                 on_file: Callable[[BankFile], defer.Deferred],
                 on_refused: Callable[[str, str], None], max_bytes: int = MAX_FILE) -> None:
        self.inbox = inbox
        self._seen, self._on_file, self._on_refused = seen, on_file, on_refused
        self._max = max_bytes

    @defer.inlineCallbacks
    def poll(self, session: SftpSession) -> Any:
        """Collect once; the new files, in name order."""
        collected: list[BankFile] = []
        names = yield session.names(self.inbox)
        for name in names:
            try:
                data = yield session.read(self.inbox, name, self._max)
            except (SftpError, filetransfer.SFTPError) as e:
                self._on_refused(name, str(e))
                continue
            f = BankFile.of(name, data)
            if self._seen(f.name, f.sha256):
                continue
            yield self._on_file(f)
            collected.append(f)
        return collected


def record_bank_file(tx: Any, bank_id: str, f: BankFile, direction: str) -> str:
    """Journal a file sent to (``"out"``) or collected from (``"in"``) a bank: its name and
    SHA-256 in the payload, its bytes as the event's raw.  Returns the event id."""
    if direction not in ("in", "out"):
        raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
    return tx.event("bank.file", {"bank": bank_id, "direction": direction, "name": f.name,
                                  "sha256": f.sha256, "size": len(f.data)},
                    bank_id=bank_id, raw=f.data)

