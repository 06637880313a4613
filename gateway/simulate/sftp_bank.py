"""A simulated bank that takes ISO 20022 files on its own SFTP server (``channel = "sftp"``).

The bank runs a Twisted Conch SSH server on the address the gateway's config names
(``banks.X.sftp.host``/``port``), presents its host key (the one the gateway's known_hosts
pins) and lets in one account, ``user``, with the gateway's public key.  Its files live
under one root directory, which is the account's whole view (paths cannot leave it):

* every ``poll`` seconds it takes each ``*.xml`` file from the gateway's ``outbound``
  directory (removing it, as a bank picks a file up), reads it as pain.001 and hands each
  payment to :class:`gateway.simulate.bank.BankCore`, which executes a reference at most once
  and answers a copy with the original outcome;
* what the core answers or pushes is written into the gateway's ``inbound`` directory, one
  file per message, under ``.part`` then renamed: a status report as
  ``pain002-<seq>.xml`` (pain.002), a debit/credit notification as ``camt054-<seq>.xml``
  (camt.054).  A written file counts as delivered (the core's push is settled);
* every ``report_every`` seconds, for each account it holds whose balance changed since the
  last report (or was never reported), an intraday account report ``camt052-<seq>.xml``
  (camt.052, one ``ITBD`` balance dated to the second in the bank's local time: what the
  gateway records as the account's balance, the file channel having no balance query);
* when the bank's day ends (its local date turns, or :meth:`BankFiles.close_day`), an end of
  day statement per account ``camt053-<seq>.xml`` (camt.053: ``OPBD`` the balance the day
  opened with, every entry it notified that day, ``CLBD`` the balance it closed with).

What a bank writes, when and under which names is each bank's own (docs/protocols/iso20022.md,
"Files over SFTP"); these are the simulator's choices.

A file that is not a pain.001 the adapter reads is renamed ``<name>.rejected`` and counted.
"""

from __future__ import annotations

import datetime as _dt
import os
import weakref
from pathlib import Path
from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker
from twisted.conch.ssh import factory, filetransfer, keys, session
from twisted.conch.unix import SFTPServerForUnixConchUser
from twisted.cred import portal
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import components
from twisted.python.filepath import FilePath
from zope.interface import implementer

from adapters import base
from adapters.base import AdapterError
from adapters.iso20022 import Iso20022Adapter
from gateway.listener import listening_service
from gateway.simulate.bank import BankCore
from gateway.simulate.bank_link import BankLink
from gateway.simulate.bank_service import BankService

__all__ = ["BankFiles", "SftpBankService", "sftp_bank_service"]

log = Logger()


# -- the SSH/SFTP server -----------------------------------------------------------------


class _Account(ConchUser):
    """The gateway's account on the bank's server: SFTP only, confined to ``root``."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.channelLookup[b"session"] = session.SSHSession
        self.subsystemLookup[b"sftp"] = filetransfer.FileTransferServer

    def getHomeDir(self) -> FilePath:
        return FilePath(str(self.root))

    def _runAsUser(self, f: Any, *args: Any, **kw: Any) -> Any:
        # The simulator's own user owns the files: no uid switching.
        if callable(f):
            return f(*args, **kw)
        result = None
        for call in f:
            result = call[0](*(call[1] if len(call) > 1 else ()), **(call[2] if len(call) > 2 else {}))
        return result


class _ConfinedSftp(SFTPServerForUnixConchUser):
    """Conch's SFTP server with every path taken under the account's root, ``/`` included."""

    def renameFile(self, oldpath: Any, newpath: Any) -> None:
        # SFTP version 3 (draft-ietf-secsh-filexfer-02, SSH_FXP_RENAME): "It is an error if
        # there already exists a file with the name specified by newpath" -- as OpenSSH's
        # server answers; os.rename alone would overwrite.
        if os.path.lexists(self._absPath(newpath)):
            raise filetransfer.SFTPError(filetransfer.FX_FAILURE, "a file of that name exists")
        super().renameFile(oldpath, newpath)

    def _absPath(self, path: Any) -> str:
        root = os.path.realpath(self.avatar.root)
        text = path.decode("utf-8") if isinstance(path, bytes) else str(path)
        full = os.path.realpath(os.path.join(root, text.lstrip("/")))
        if full != root and not full.startswith(root + os.sep):
            raise filetransfer.SFTPError(filetransfer.FX_PERMISSION_DENIED, "outside the account's root")
        return full


components.registerAdapter(_ConfinedSftp, _Account, filetransfer.ISFTPServer)


@implementer(portal.IRealm)
class _Realm:
    def __init__(self, root: Path) -> None:
        self.root = root

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        return interfaces[0], _Account(self.root), lambda: None


class _Server(factory.SSHFactory):
    """An SSH server that can close every connection it holds (the bank stops)."""

    noisy = False

    def __init__(self) -> None:
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()

    def buildProtocol(self, addr: Any) -> Any:
        t = super().buildProtocol(addr)
        self.live.add(t)
        return t

    def close_all(self) -> None:
        for t in list(self.live):
            if t.transport is not None:
                t.transport.loseConnection()


def ssh_factory(root: Path, host_key: keys.Key, user: str, client_key: keys.Key) -> _Server:
    """An SSH server factory: ``host_key``, one account ``user`` with public key ``client_key``."""
    f = _Server()
    kind = host_key.sshType()
    f.publicKeys = {kind: host_key.public()}
    f.privateKeys = {kind: host_key}
    f.portal = portal.Portal(_Realm(root), [SSHPublicKeyChecker(
        InMemorySSHKeyDB({user.encode(): [client_key.public()]}))])
    return f


# -- the bank's side of the file exchange ----------------------------------------------------


class BankFiles:
    """Takes pain.001 files from ``incoming`` and writes answers into ``outgoing``, through a
    :class:`~gateway.simulate.bank_link.BankLink` (the core's timers and counters)."""

    def __init__(self, link: BankLink, adapter: Iso20022Adapter, incoming: Path, outgoing: Path, *,
                 node: str, gateway_node: str) -> None:
        self.link, self.adapter = link, adapter
        self.incoming, self.outgoing = incoming, outgoing
        self.node, self.gateway_node = node, gateway_node
        self.day: _dt.date = self._now().date()
        self.opening: dict[str, int] = {a: self._reported(a) for a in self._accounts()}
        self.entries: dict[str, list[base.Entry]] = {}   # the day's notified entries, per account
        self.reported: dict[str, int] = {}                # the balance each last camt.052 gave

    # -- the bank's day ------------------------------------------------------------------------

    def _now(self) -> _dt.datetime:
        """The bank's local time, without zone, to the second (as its documents carry it)."""
        core = self.link.core
        return _dt.datetime.fromtimestamp(self.link.reactor.seconds(), core.tz).replace(tzinfo=None,
                                                                                       microsecond=0)

    def _accounts(self) -> list[str]:
        """The accounts the bank keeps on its book (the gateway's registered accounts there)."""
        return sorted(self.link.core.stats(per_reference=False)["balances"])

    def _reported(self, account: str) -> int:
        balance = self.link.core.reported_balance(account)
        assert balance is not None
        return balance

    def report(self) -> int:
        """Write the day's statements if the day has ended, then a camt.052 with the current
        balance of every account whose balance changed since its last report; returns how
        many reports were written."""
        if self._now().date() != self.day:
            self.close_day()
        written = 0
        for account in self._accounts():
            balance = self._reported(account)
            if self.reported.get(account) == balance:
                continue
            self._write("camt052", base.Balance(
                seq_no=self.link.core.next_seq_no(), reply_to="", account=account, balance=balance,
                available=balance, status="ITBD", as_of=self._now()))
            self.reported[account] = balance
            written += 1
        return written

    def close_day(self) -> int:
        """End the bank's day: a camt.053 per account (OPBD, the day's entries, CLBD), and the
        next day opens with each closing balance; returns how many statements were written."""
        written = 0
        for account in self._accounts():
            closing = self._reported(account)
            self._write("camt053", base.Statement(
                seq_no=self.link.core.next_seq_no(), reply_to="", account=account,
                entries=tuple(self.entries.get(account, ())), opening_balance=self.opening.get(account, closing),
                closing_balance=closing))
            self.opening[account] = closing
            written += 1
        self.entries.clear()
        self.day = self._now().date()
        self.link.counters["statements_out"] += written
        return written

    def _write(self, prefix: str, message: base.Message) -> None:
        data = self.adapter.encode_document(message, sender=self.node, receiver=self.gateway_node)
        final = self.outgoing / f"{prefix}-{message.seq_no}.xml"
        part = final.with_name(final.name + ".part")
        part.write_bytes(data)
        os.replace(part, final)
        self.link.counters["files_out"] += 1

    def poll(self) -> int:
        """Take every complete file waiting; returns how many were taken."""
        taken = 0
        for path in sorted(self.incoming.iterdir()):
            if not path.is_file() or path.name.startswith(".") or not path.name.endswith(".xml"):
                continue   # half-written (.part), rejected before, or not ours
            data = path.read_bytes()
            taken += 1
            try:
                messages = self.adapter.decode_document(data)
                if not messages or not all(isinstance(m, base.Instruction) for m in messages):
                    raise AdapterError("not a pain.001")
            except AdapterError as e:
                self.link.counters["files_rejected"] += 1
                log.warn("bank.file_rejected bank={bank} file={file} reason={reason}", bank=self.link.bank_id,
                         file=path.name, reason=str(e)[:200])
                os.replace(path, path.with_name(path.name + ".rejected"))
                continue
            path.unlink()   # picked up, as a bank takes a file it has read
            self.link.counters["files_in"] += 1
            for m in messages:
                for out in self.link.receive(m):
                    self.send(out)
        return taken

    def send(self, message: base.Message) -> None:
        """Write ``message`` as one file (``.part``, then renamed); a written push is delivered."""
        prefix = "camt054" if isinstance(message, base.Movement) else "pain002"
        self._write(prefix, message)
        if isinstance(message, base.Movement):
            held = set(self._accounts())
            for e in message.entries:
                if e.account in held:   # the day's statement is of the book's accounts
                    self.entries.setdefault(e.account, []).append(e)
        if message in self.link.core.pending_pushes():
            self.link.core.receive(base.Ack(self.link.core.next_seq_no(), message.seq_no), self.link.reactor.seconds())


class SftpBankService(BankService):
    """The running SFTP bank: its SSH listener, the pick-up loop, stats (``.link.stats()``)."""

    def __init__(self, link: BankLink, files: BankFiles, endpoint: str, ssh: _Server, *,
                 poll: float = 0.2, report_every: float = 60.0, stats_path: Path | None = None) -> None:
        super().__init__(link, stats_path=stats_path)
        self.files = files
        self.ssh = ssh
        self._listener = listening_service(serverFromString(link.reactor, endpoint), ssh)
        self._listener.setServiceParent(self)
        loop = LoopingCall(self._poll)
        loop.clock = link.reactor
        self._loop, self._interval = loop, poll
        reports = LoopingCall(self._report)
        reports.clock = link.reactor
        self._reports, self._report_every = reports, report_every

    def pause(self) -> None:
        """Stop taking files (they wait in the directory, as at a bank that is slow to pick up)."""
        if self._loop.running:
            self._loop.stop()

    def resume(self) -> None:
        if self.running and not self._loop.running:
            self._loop.start(self._interval, now=True)

    def _poll(self) -> None:
        try:
            self.files.poll()
        except OSError as e:
            log.warn("bank.poll_failed bank={bank} reason={reason}", bank=self.link.bank_id, reason=str(e))

    def _report(self) -> None:
        try:
            self.files.report()
        except (OSError, AdapterError) as e:
            log.warn("bank.report_failed bank={bank} reason={reason}", bank=self.link.bank_id, reason=str(e))

    def startService(self) -> None:
        super().startService()
        self.link.signed_on(self.files)   # pushes a restarted (durable) core still holds go out as files
        self._loop.start(self._interval, now=True)
        self._reports.start(self._report_every, now=False)

    def stopService(self) -> Any:
        if self._loop.running:
            self._loop.stop()
        if self._reports.running:
            self._reports.stop()
        self.ssh.close_all()
        return super().stopService()


def sftp_bank_service(reactor: Any, config: Any, bank_id: str, core: BankCore, *, root: Path,
                      host_key: Path, stats_path: Path | None = None, poll: float = 0.2,
                      report_every: float = 60.0) -> SftpBankService:
    """A simulated SFTP bank for ``bank_id`` of the gateway's ``config`` (``channel = "sftp"``).

    ``root`` holds the account's directories (made when missing); ``host_key`` is the bank's
    SSH host private key, whose public half the gateway's ``known_hosts`` must give.  The
    gateway's public key is ``private_key``'s ``.pub`` file when there is one, else derived
    from the private key.
    """
    bank = config.banks[bank_id]
    s = bank.sftp
    gateway_key_pub = Path(str(s.private_key) + ".pub")
    try:
        client_key = keys.Key.fromFile(str(gateway_key_pub if gateway_key_pub.is_file() else s.private_key))
        server_key = keys.Key.fromFile(str(host_key))
    except (keys.BadKeyError, keys.EncryptedKeyError) as e:
        raise ValueError(f"bank {bank_id}: an SSH key cannot be read: {e}") from e
    root = Path(root)
    incoming, outgoing = root / s.outbound.strip("/"), root / s.inbound.strip("/")
    for d in (incoming, outgoing) + ((root / s.collected.strip("/"),) if s.collected else ()):
        d.mkdir(parents=True, exist_ok=True)
    adapter = Iso20022Adapter()
    link = BankLink(reactor, core, adapter, bank_id=bank_id, heartbeat_interval=config.timeouts.heartbeat_interval)
    files = BankFiles(link, adapter, incoming, outgoing, node=bank.node, gateway_node=config.node)
    host = s.host.replace(":", "\\:")
    return SftpBankService(link, files, f"tcp:{s.port}:interface={host}",
                           ssh_factory(root, server_key, s.user, client_key), poll=poll,
                           report_every=report_every, stats_path=stats_path)
