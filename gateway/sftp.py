"""Host-to-host file exchange with a bank over SFTP (twisted.conch).

Banks that take ISO 20022 from corporate customers commonly do so as files on an SFTP
server: the customer puts pain.001 files into one directory and collects pain.002 and camt
files from another.  This module is that customer side, thin I/O only:

* :func:`connect` opens one SSH connection, authenticates with the gateway's key, and
  accepts the server only if it presents a host key configured for that bank
  (:func:`pinned_host_keys` reads them from a known_hosts file; no trust on first use),
  then opens the ``sftp`` subsystem.
* :class:`SftpSession` uploads a file (written under a temporary ``.part`` name, then
  renamed, so the bank never picks up half a file), lists a directory, reads a file no
  larger than a bound (its size is asked first, and reading stops at the bound whatever the
  size said), removes or moves a collected file, and tells when its connection is lost.
* :class:`InboxPoller` collects the files of an inbox directory it has not collected
  before and hands each to the caller as a :class:`BankFile` (name, SHA-256, bytes), waiting
  for the caller's Deferred (the commit) before the next.
* What is exchanged is journalled by the store (``gateway/store/bank_files.py``).

What the files mean is the ``iso20022`` adapter's business (``decode_document``).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.conch.error import ConchError
from twisted.conch.ssh import channel, common, connection, filetransfer, keys, transport, userauth
from twisted.internet import defer, protocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTCP
from twisted.python.failure import Failure

from gateway.store.bank_files import BankFile  # what a poll hands over; the store records it

__all__ = ["BankFile", "InboxPoller", "SftpError", "SftpSession", "connect", "pinned_host_keys"]

CHUNK = 32 * 1024
"""Bytes per SFTP read or write request (well under every server's packet limit)."""

MAX_FILE = 16 * 1024 * 1024
"""The largest file collected by default; a bank's statement file is far smaller."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""File names exchanged: no path separators, no leading dot, nothing a shell or a log would
misread."""


class SftpError(Exception):
    """The server refused something or sent what the exchange does not accept."""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise SftpError(f"file name {name[:60]!r} is not 1-200 of A-Z a-z 0-9 . _ - (no leading dot)"
                        if isinstance(name, str) else "file name must be text")
    return name


def pinned_host_keys(known_hosts: Path, host: str, port: int = 22) -> list[keys.Key]:
    """The host keys ``known_hosts`` (OpenSSH format, plain or hashed names) gives for
    ``host`` (written ``[host]:port`` when the port is not 22, as OpenSSH writes it).

    :class:`SftpError` when the file cannot be read or names no key for that host: a bank
    whose key is not known is never connected to.
    """
    from twisted.conch.client.knownhosts import KnownHostsFile
    from twisted.python.filepath import FilePath

    path = Path(known_hosts)
    if not path.is_file():
        raise SftpError(f"known_hosts {path} is not a readable file")
    names = [host] if port == 22 else [f"[{host}]:{port}"]
    found: list[keys.Key] = []
    for entry in KnownHostsFile.fromPath(FilePath(str(path))).iterentries():
        public = getattr(entry, "publicKey", None)
        if public is not None and any(entry.matchesHost(n) for n in names) and public not in found:
            found.append(public)
    if not found:
        raise SftpError(f"known_hosts {path} has no key for {names[0]}")
    return found


# -- the SSH client ------------------------------------------------------------------------


class _Transport(transport.SSHClientTransport):
    def __init__(self, user: str, client_key: keys.Key, host_keys: tuple[keys.Key, ...],
                 ready: defer.Deferred) -> None:
        self._user, self._client_key, self._host_keys, self._ready = user, client_key, host_keys, ready
        self._why = ""
        self.session: SftpSession | None = None

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred:
        # Pinned: only a host key configured for this bank is accepted.
        if keys.Key.fromString(hostKey) not in self._host_keys:
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
        elif self.session is not None:
            self.session._lost(self._why or reason.getErrorMessage())


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
        self._client: filetransfer.FileTransferClient | None = None

    def channelOpen(self, specificData: bytes) -> None:
        d = self.conn.sendRequest(self, b"subsystem", common.NS(b"sftp"), wantReply=True)
        d.addCallbacks(self._subsystem, self._refused)

    def openFailed(self, reason: Any) -> None:
        if not self._ready.called:
            self._ready.errback(SftpError(f"the server refused a session: {reason}"))

    def _subsystem(self, _: object) -> None:
        client = self._client = filetransfer.FileTransferClient()
        client.makeConnection(self)
        self.dataReceived = client.dataReceived  # type: ignore[method-assign]
        session = SftpSession(client, self.conn.transport)
        self.conn.transport.session = session
        self._ready.callback(session)

    def closed(self) -> None:
        # Requests still waiting fail now (FileTransferClient errbacks them), and the
        # session ends with its channel.
        if self._client is not None:
            self._client.connectionLost(Failure(ConnectionDone("the SFTP channel closed")))
        self.conn.transport.loseConnection()

    def _refused(self, failure: Any) -> None:
        if not self._ready.called:
            self._ready.errback(SftpError("the server has no sftp subsystem for us"))


def connect(reactor: IReactorTCP, host: str, port: int, *, user: str, client_key: keys.Key,
            host_key: keys.Key | Iterable[keys.Key], timeout: float = 30,
            bind_address: tuple[str, int] | None = None) -> defer.Deferred:
    """A Deferred :class:`SftpSession` once the server proved it holds ``host_key`` (or one of
    several), accepted ``client_key`` for ``user`` and opened SFTP; fails with
    :class:`SftpError` or the connection's error otherwise."""
    ready: defer.Deferred = defer.Deferred()
    pinned = (host_key,) if isinstance(host_key, keys.Key) else tuple(host_key)
    if not pinned:
        raise SftpError("no host key to accept: a bank's host key must be configured")
    built: list[_Transport] = []

    class _Factory(protocol.ClientFactory):
        def buildProtocol(self, addr: Any) -> _Transport:
            built.append(_Transport(user, client_key, pinned, ready))
            return built[-1]

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            if not ready.called:
                ready.errback(reason)

    def expire() -> None:
        # Connected but no session in time (a server that never finishes the handshake).
        for t in built:
            if not ready.called and t.transport is not None:
                t._why = t._why or f"no SFTP session within {timeout:g} s"
                t.transport.abortConnection()

    timer = reactor.callLater(timeout, expire)  # type: ignore[attr-defined]
    ready.addBoth(lambda result: (timer.cancel() if timer.active() else None, result)[1])
    reactor.connectTCP(host, port, _Factory(), timeout=timeout, bindAddress=bind_address)
    return ready


# -- file operations -------------------------------------------------------------------------


class SftpSession:
    """File operations on one SFTP connection (see the module docstring)."""

    def __init__(self, client: filetransfer.FileTransferClient, ssh: transport.SSHClientTransport
                 ) -> None:
        self._client = client
        self._ssh = ssh
        self.lost_because: str | None = None   # set once the connection is gone
        self._on_lost: list[Callable[[str], None]] = []

    def close(self) -> None:
        self._ssh.loseConnection()

    def when_lost(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` once the connection is lost (at once if it already is)."""
        if self.lost_because is not None:
            callback(self.lost_because)
        else:
            self._on_lost.append(callback)

    def _lost(self, reason: str) -> None:
        if self.lost_because is not None:
            return
        self.lost_because = reason or "connection lost"
        callbacks, self._on_lost = self._on_lost, []
        for callback in callbacks:
            callback(self.lost_because)

    def remove(self, directory: str, name: str) -> defer.Deferred:
        """Delete ``directory/name`` (a collected file the bank lets us remove)."""
        path = posixpath.join(directory, _check_name(name))
        return self._client.removeFile(path.encode("utf-8"))

    def move(self, directory: str, name: str, to_directory: str) -> defer.Deferred:
        """Rename ``directory/name`` into ``to_directory`` under the same name."""
        _check_name(name)
        return self._client.renameFile(posixpath.join(directory, name).encode("utf-8"),
                                       posixpath.join(to_directory, name).encode("utf-8"))

    @defer.inlineCallbacks
    def upload(self, directory: str, name: str, data: bytes) -> Any:
        """Put ``data`` as ``directory/name``: written as ``name.part``, then renamed.

        SFTP v3 servers (OpenSSH's among them) refuse to rename onto an existing file: when
        ``name`` is still waiting there from an earlier upload, that copy stands (a name is
        one payment), the ``.part`` is removed and the result is False; True otherwise."""
        final = posixpath.join(directory, _check_name(name))
        part = final + ".part"
        f = yield self._client.openFile(part.encode("utf-8"), filetransfer.FXF_WRITE
                                        | filetransfer.FXF_CREAT | filetransfer.FXF_TRUNC, {})
        try:
            for offset in range(0, len(data), CHUNK):
                yield f.writeChunk(offset, data[offset:offset + CHUNK])
        finally:
            yield f.close()
        try:
            yield self._client.renameFile(part.encode("utf-8"), final.encode("utf-8"))
        except filetransfer.SFTPError:
            try:
                yield self._client.getAttrs(final.encode("utf-8"))
            except filetransfer.SFTPError:
                raise SftpError(f"{name}: the server refused to rename {name}.part into place") from None
            yield self._client.removeFile(part.encode("utf-8"))
            return False
        return True

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


