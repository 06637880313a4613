"""A bank reached by ISO 20022 files over SFTP (``banks.X.channel = "sftp"``).

The gateway is the bank's corporate customer on the bank's SFTP server
(:mod:`gateway.sftp` holds the wire).  :class:`SftpLink` drives the bank's dispatcher through
the same small interface every link uses (the dispatcher's ``link_up``/``link_down``/
``handle(message, raw)``, and this link's ``send(message)``):

* **Up and down.**  One SSH connection, the bank's host key pinned; while it is open the
  link is up.  A lost connection is the link down; it reconnects with a doubling wait
  (``retry_after`` up to ``max_retry_after``).
* **Out.**  Every instruction the dispatcher sends is one pain.001 file,
  ``pain001-<reference>.xml`` (the instruction's durable bank reference), written under
  ``.part`` and renamed into ``outbound``.  A resend (after a restart, a lost connection,
  no status in time) writes the same name with the same payment, so the bank can tell it
  is the same file.  Each file put is journalled (``bank.file``, direction ``out``).
  Status and balance queries and acknowledgements have no file: they are counted and
  dropped (results arrive as pain.002, balances in camt.052/053).
* **In.**  Every ``poll_interval`` seconds ``inbound`` is listed and each file not
  collected before (by name and SHA-256) is read, decoded, its messages handed to the
  dispatcher, and then journalled once: ``bank.file`` (direction ``in``, name, hash, bytes)
  and a ``bank_facts`` key in the same transaction, so a file is never processed twice,
  across restarts and nodes.  A file that does not decode is journalled the same way with
  a ``bank.unreadable`` event, counted (``hpf_gateway_refused_total{reason="unreadable_file"}``)
  and logged (``sftp.unreadable_file``), left where it is, and the poll goes on.  A processed
  file is then kept, deleted or moved (``after_collect``).

Order of commits: the messages' facts are queued before the file's record, so a crash
between them at worst makes the file be read again, and facts are idempotent (G3).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from adapters import base as msg
from adapters.base import AdapterError
from gateway import sftp
from gateway.store.bank_files import collected_keys, file_key, record_bank_file, record_collected

__all__ = ["SftpLink", "file_name", "make_sftp_link", "make_sftp_service"]

log = Logger()

def file_name(reference: str) -> str:
    """The name of the pain.001 file carrying the instruction with bank reference ``reference``."""
    return f"pain001-{reference}.xml"


class SftpLink:
    """A bank's ISO 20022 file exchange over SFTP (see the module docstring).

    ``connect()`` returns a Deferred :class:`gateway.sftp.SftpSession` (a fresh connection);
    ``db`` is the gateway's :class:`~gateway.store.db.Database`.
    """

    def __init__(self, bank: Any, adapter: Any, dispatcher: Any, clock: IReactorTime, metrics: Any, db: Any,
                 connect: Callable[[], Deferred], *, gateway_node: str, retry_after: float = 1.0,
                 max_retry_after: float = 60.0) -> None:
        self.bank, self.adapter, self.dispatcher = bank, adapter, dispatcher
        self.clock, self.metrics, self.db, self.connect = clock, metrics, db, connect
        self.settings = bank.sftp
        self.gateway_node = gateway_node
        self.retry_after, self.max_retry_after = retry_after, max_retry_after
        self.running = False
        self.session: sftp.SftpSession | None = None
        self.uploads: deque[msg.Instruction] = deque()
        self.counts: Counter[str] = Counter()   # uploaded, collected, unreadable, dropped.<Kind>, …
        self._uploading = False
        self._seen: set[str] | None = None      # file keys collected before (loaded per start)
        self._wait = retry_after
        self._connecting = False
        self._retry: Any = None
        self._poll_timer: Any = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self._connect()

    def stop(self) -> None:
        self.running = False
        for timer in (self._retry, self._poll_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._retry = self._poll_timer = None
        self._seen = None   # read again from the store at the next start (another node may have run)
        session = self.session
        self._down(session, "stopped")
        if session is not None:
            session.close()

    def drop_all(self) -> None:
        """Another node owns the link now."""
        self.stop()

    def _connect(self) -> None:
        self._retry = None
        if not self.running or self.session is not None or self._connecting:
            return
        self._connecting = True
        d = succeed(None) if self._seen is not None else self.db.read(collected_keys, self.bank.id)
        d.addCallback(self._loaded)
        d.addCallback(lambda _: self.connect())
        d.addCallbacks(self._connected, self._not_connected)
        d.addErrback(lambda f: log.failure("sftp.connect_error", f, bank=self.bank.id))

    def _loaded(self, keys: set[str] | None) -> None:
        if keys is not None:
            self._seen = keys

    def _connected(self, session: sftp.SftpSession) -> None:
        self._connecting = False
        if not self.running:
            session.close()
            return
        self.session = session
        self._wait = self.retry_after
        session.when_lost(lambda why: self._lost(session, why))
        if session.lost_because is not None:
            return
        log.info("sftp.connected", bank=self.bank.id, host=self.settings.host, port=self.settings.port)
        self.dispatcher.link_up(self)
        self._poll_timer = self.clock.callLater(0, self._poll)

    def _not_connected(self, failure: Any) -> None:
        self._connecting = False
        reason = failure.getErrorMessage()[:300]
        if "host key" in reason:
            # Not the bank's server (or the bank changed its key): said loudly, never accepted.
            self.metrics.security_events.labels("bank_sftp_host_key").inc()
            log.error("sftp.host_key_refused", bank=self.bank.id, host=self.settings.host, reason=reason)
        else:
            self.metrics.refused.labels(f"bank:{self.bank.id}", "sftp_no_session").inc()
            log.warn("sftp.no_session", bank=self.bank.id, reason=reason, retry_in_s=self._wait)
        self._again()

    def _again(self) -> None:
        if self.running and self._retry is None:
            self._retry = self.clock.callLater(self._wait, self._connect)
            self._wait = min(self._wait * 2, self.max_retry_after)

    def _lost(self, session: sftp.SftpSession, why: str) -> None:
        if session is not self.session:
            return
        log.warn("sftp.connection_lost", bank=self.bank.id, reason=why[:200])
        self._down(session, why)
        self._again()

    def _down(self, session: sftp.SftpSession | None, why: str) -> None:
        if session is None or session is not self.session:
            return
        self.session = None
        self.uploads.clear()   # the dispatcher sends again what matters once a session is up
        if self._poll_timer is not None and self._poll_timer.active():
            self._poll_timer.cancel()
        self._poll_timer = None
        self.dispatcher.link_down(self)

    # -- out: the dispatcher's sends ------------------------------------------------

    def send(self, message: msg.Message) -> None:
        """An instruction becomes a pain.001 file; nothing else has a file (counted, dropped)."""
        if isinstance(message, msg.Instruction):
            self.uploads.append(message)
            self._pump()
            return
        kind = type(message).__name__
        self.counts[f"dropped.{kind}"] += 1
        if self.counts[f"dropped.{kind}"] == 1:
            log.info("sftp.no_file_for", bank=self.bank.id, kind=kind,
                     why="file exchange has no such message; results and balances come as files")

    @inlineCallbacks
    def _pump(self) -> Any:
        if self._uploading:
            return
        self._uploading = True
        try:
            while self.uploads and self.session is not None:
                session, m = self.session, self.uploads.popleft()
                try:
                    data = self.adapter.encode_document(m, sender=self.gateway_node, receiver=self.bank.node)
                except AdapterError as e:
                    log.error("link.unencodable", bank=self.bank.id, kind="Instruction", error=str(e))
                    continue
                f = sftp.BankFile.of(file_name(m.seq_no), data)
                try:
                    put = yield session.upload(self.settings.outbound, f.name, f.data)
                except Exception as e:   # the server refused, or the connection went: resent later
                    self.metrics.refused.labels(f"bank:{self.bank.id}", "sftp_upload_failed").inc()
                    log.warn("sftp.upload_failed", bank=self.bank.id, file=f.name, reason=str(e)[:200])
                    continue
                if not put:   # the earlier copy still waits for the bank: that one stands
                    self.counts["already_waiting"] += 1
                    log.info("sftp.already_waiting", bank=self.bank.id, file=f.name)
                    continue
                self.counts["uploaded"] += 1
                self.metrics.frames.labels(self.bank.id, "out").inc()
                self.db.write(lambda tx, f=f: record_bank_file(tx, self.bank.id, f, "out")).addErrback(
                    lambda failure: log.failure("sftp.journal_failed", failure, bank=self.bank.id))
        finally:
            self._uploading = False

    # -- in: polling the inbound directory -------------------------------------------

    @inlineCallbacks
    def _poll(self) -> Any:
        """Collect once; then poll again after ``poll_interval`` while the session lasts."""
        self._poll_timer = None
        session = self.session
        if session is None:
            return
        poller = sftp.InboxPoller(self.settings.inbound, self._known,
                                  lambda f: self._collected(session, f), self._refused, self.settings.max_file)
        try:
            yield poller.poll(session)
        except Exception as e:   # the listing failed, the store refused, the connection went
            log.warn("sftp.poll_failed", bank=self.bank.id, reason=str(e)[:200])
        self.counts["polls"] += 1
        if session is self.session and self.running:
            self._poll_timer = self.clock.callLater(self.settings.poll_interval, self._poll)

    def _known(self, name: str, sha256: str) -> bool:
        return self._seen is not None and file_key(sftp.BankFile(name, sha256, b"")) in self._seen

    def _refused(self, name: str, reason: str) -> None:
        self.counts["refused"] += 1
        self.metrics.refused.labels(f"bank:{self.bank.id}", "unreadable_file").inc()
        log.error("sftp.file_refused", bank=self.bank.id, file=name, reason=reason[:200])

    @inlineCallbacks
    def _collected(self, session: sftp.SftpSession, f: sftp.BankFile) -> Any:
        unreadable: str | None = None
        try:
            messages = self.adapter.decode_document(f.data, max_bytes=self.settings.max_file)
        except AdapterError as e:
            messages, unreadable = [], str(e)
        for m in messages:
            self.dispatcher.handle(m, f.data)
        if messages:
            # The dispatcher queues its facts in this turn; the file's record comes after them.
            yield deferLater(self.clock, 0, lambda: None)
        new = yield self.db.write(lambda tx: record_collected(tx, self.bank.id, f, unreadable))
        if self._seen is not None:
            self._seen.add(file_key(f))
        self.metrics.frames.labels(self.bank.id, "in").inc()
        if unreadable is not None:
            self.counts["unreadable"] += 1
            self.metrics.refused.labels(f"bank:{self.bank.id}", "unreadable_file").inc()
            log.error("sftp.unreadable_file", bank=self.bank.id, file=f.name, sha256=f.sha256,
                      reason=unreadable[:300])
            return   # kept where it is, for people to look at; remembered, so read once
        self.counts["collected"] += 1
        log.info("sftp.collected", bank=self.bank.id, file=f.name, sha256=f.sha256, messages=len(messages),
                 new=new)
        yield self._after_collect(session, f.name)

    @inlineCallbacks
    def _after_collect(self, session: sftp.SftpSession, name: str) -> Any:
        s = self.settings
        try:
            if s.after_collect == "delete":
                yield session.remove(s.inbound, name)
            elif s.after_collect == "move":
                yield session.move(s.inbound, name, s.collected)
        except Exception as e:   # remembered anyway: never processed twice
            log.warn("sftp.after_collect_failed", bank=self.bank.id, file=name, action=s.after_collect,
                     reason=str(e)[:200])


def load_client_key(path: Any) -> Any:
    """The gateway's SSH private key for a bank (mode 0600, else :class:`~gateway.tls.InsecureKeyError`)."""
    from twisted.conch.ssh import keys

    from gateway.tls import check_key_file

    check_key_file(path)
    return keys.Key.fromFile(str(path))


def make_sftp_link(reactor: Any, bank: Any, adapter: Any, dispatcher: Any, metrics: Any, db: Any, *,
                   gateway_node: str) -> SftpLink:
    """Bank ``bank``'s SFTP link: the keys are loaded (and checked) now, so a bad file stops the
    start (:class:`~gateway.tls.InsecureKeyError` for a key others may read, ValueError else)."""
    from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError

    s = bank.sftp
    try:
        client_key = load_client_key(s.private_key)
        host_keys = sftp.pinned_host_keys(s.known_hosts, s.host, s.port)
    except (BadKeyError, EncryptedKeyError, sftp.SftpError) as e:
        raise ValueError(f"banks.{bank.id}.sftp: {e}") from e

    def connect() -> Deferred:
        return sftp.connect(reactor, s.host, s.port, user=s.user, client_key=client_key,
                            host_key=host_keys, timeout=s.timeout)

    return SftpLink(bank, adapter, dispatcher, reactor, metrics, db, connect, gateway_node=gateway_node)


def make_sftp_service(link: SftpLink) -> Service:
    """The service keeping ``link`` connected while it runs."""

    class Running(Service):
        def startService(self) -> None:
            super().startService()
            link.start()

        def stopService(self) -> None:
            super().stopService()
            link.stop()

    service = Running()
    service.setName(f"bank-{link.bank.id}")
    return service
