"""The checks a copy passes before the ledger stores it, and where they run.

:class:`CopyChecker` (pure, thread-safe) checks a gateway's copies: the
envelope (:func:`gateway.copies.read_envelope`), that it claims the gateway its
certificate names, its signature with that gateway's public key (its own, or its
path to its batch's signed root, one signature check per batch), its content
(:func:`gateway.copies.read_content`) and, when it carries the bank's original
frame, that the bank's own bytes say what the copy says
(:func:`gateway.copies.check_raw`).  :class:`CheckPool` runs it in processes
beside the ledger's, or on a thread.
"""

from __future__ import annotations

import multiprocessing
import operator
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from cryptography.hazmat.primitives import serialization
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from gateway.copies import Copy, CopyError, Refusal, Unreadable, check_raw, read_content, read_envelope
from gateway.ledger import store
from gateway.ledger.config import PublicSigningKey
from gateway.ledger.matcher import Fact
from gateway.signing import BatchProof, verify_copy

__all__ = ["ParsedCopy", "CopyChecker", "CheckPool", "ChecksUnavailable"]

log = Logger()


@dataclass(frozen=True)
class ParsedCopy:
    """A copy fit to store: its row, and what the matcher reads (None for a copy stored as
    refused, see :class:`gateway.copies.Unreadable`)."""

    row: store.CopyRow
    fact: Fact | None = None


class CopyChecker:
    """Shape, signature and bank-frame checks for a gateway's copies (no I/O; thread-safe).

    ``keys`` maps a gateway name to its (signature_alg, public key);
    ``load(name)`` gives an adapter instance (adapters keep no state) or
    raises ``KeyError`` for one not installed here; it is called once per name.
    """

    def __init__(self, keys: Mapping[str, tuple[str, PublicSigningKey]],
                 load: Callable[[str], Any]) -> None:
        self.keys = keys
        self._load = load
        self._adapters: dict[str, Any] = {}
        # Per gateway, the batch signatures already checked: one check per batch, not per copy.
        self._batches: dict[str, dict[tuple[str, int, str], bool]] = {}

    def check(self, gateway: str, docs: Sequence[Any]) -> list[ParsedCopy | Refusal]:
        """Each document checked (see :mod:`gateway.copies` for what refuses a copy whole and
        what stores it as refused); a :class:`ParsedCopy` is fit to store."""
        alg, key = self.keys[gateway]
        out: list[ParsedCopy | Refusal] = []
        for doc in docs:
            env = read_envelope(doc, expected_alg=alg)
            if isinstance(env, Refusal):
                out.append(env)
                continue
            if env.gateway != gateway:
                out.append(Refusal(env.event_id, f"the copy claims gateway {env.gateway!r} but the "
                                                 f"certificate is hpf://gateway/{gateway}"))
                continue
            if not verify_copy(key, alg, env.signed, env.signature, env.batch,
                               seen=self._batches.setdefault(gateway, {})):
                out.append(Refusal(env.event_id, f"the signature does not verify with gateway {gateway}'s "
                                                 "key", forged=True))
                continue
            try:
                copy = read_content(env)
            except CopyError as e:
                out.append(ParsedCopy(store.CopyRow.unreadable(Unreadable(env, str(e)))))
                continue
            if copy.raw is not None and copy.adapter is not None:
                try:
                    adapter = self._adapter(copy.adapter)
                except KeyError:
                    reason = (f"adapter {copy.adapter!r} is not installed at the ledger, so the bank's "
                              "frame cannot be checked")
                    out.append(ParsedCopy(store.CopyRow.unreadable(Unreadable(env, reason))))
                    continue
                disagreement = check_raw(copy, adapter)
                if disagreement is not None:
                    out.append(Refusal(env.event_id, f"the bank's frame disagrees with the copy: "
                                                     f"{disagreement}", forged=True))
                    continue
            out.append(ParsedCopy(store.CopyRow.of(copy), copy))
        return out

    def _adapter(self, name: str) -> Any:
        adapter = self._adapters.get(name)
        if adapter is None:
            adapter = self._adapters[name] = self._load(name)
        return adapter


# -- checking beside the ledger's process ---------------------------------------------

_worker: CopyChecker | None = None


def _start_worker(keys: Mapping[str, tuple[str, bytes]], load: Callable[[str], Any], ledger: int) -> None:
    """In a check process: a :class:`CopyChecker` of its own, from the gateways' PEM keys."""
    from gateway.daemon import die_with_parent, settle_heap

    # Killed with the ledger, however it dies: a worker holds both ends of its task queue,
    # so it would otherwise wait on it for ever once the ledger is gone.
    die_with_parent(signal.SIGKILL, ledger)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the ledger's to handle
    global _worker
    _worker = CopyChecker({name: (alg, serialization.load_pem_public_key(pem))  # type: ignore[misc]
                           for name, (alg, pem) in keys.items()}, load)
    settle_heap()


def _check_in_worker(gateway: str, docs: Sequence[Any]) -> list[Any]:
    assert _worker is not None, "not a check process"
    return pack(_worker.check(gateway, docs))


# What crosses back from a check process.  A copy fit to store was a ParsedCopy of two frozen
# dataclasses (its row, its fact) and a BatchProof, pickled one attribute at a time by
# copyreg: about 30 µs a copy in the check process and 15 in the ledger's (bench/README.md,
# item 50).  It now travels as one flat tuple of plain values -- the row's columns, the
# parsed payload, the proof's fields -- which pickle writes and reads in C.  The fact is the
# copy the row was made from (store.CopyRow.of), so it is rebuilt from the same tuple.  The
# three classes fill their fields in one call (adapters._frozen.quick_init): the dataclass's
# own frozen __init__, three times a copy on the ledger's reactor thread, cost as much again.
# Refusals and copies stored as refused are rare and travel as they are.

_ROW_FIELDS = tuple(store.CopyRow.__dataclass_fields__)
_FACT_FIELDS = tuple(Copy.__dataclass_fields__)
_PAYLOAD, _PROOF = len(_ROW_FIELDS), len(_ROW_FIELDS) + 1  # after the row's columns
_row_values = operator.attrgetter(*_ROW_FIELDS)
_COLUMN_OF = {"seq": "gateway_seq", "payload_text": "payload", "hash": "gateway_hash"}  # the fact's name -> the row's
_fact_values = operator.itemgetter(*[
    _PAYLOAD if f == "payload" else _PROOF if f == "batch" else _ROW_FIELDS.index(_COLUMN_OF.get(f, f))
    for f in _FACT_FIELDS])


def pack(checked: Sequence[ParsedCopy | Refusal]) -> list[Any]:
    """``checked`` as :func:`unpack` reads it back: equal results, cheaper to pickle."""
    out: list[Any] = []
    for c in checked:
        if isinstance(c, ParsedCopy) and c.fact is not None:
            batch = c.fact.batch
            out.append((*_row_values(c.row), c.fact.payload,
                        None if batch is None else (batch.root, batch.count, batch.index, batch.path)))
        else:
            out.append(c)
    return out


def unpack(packed: Sequence[Any]) -> list[ParsedCopy | Refusal]:
    """The results :func:`pack` was given."""
    out: list[ParsedCopy | Refusal] = []
    for item in packed:
        if not isinstance(item, tuple):
            out.append(item)
            continue
        fact = dict(zip(_FACT_FIELDS, _fact_values(item)))
        fact["signed"] = fact["signed"] or b""  # the row's None is the fact's b"" (CopyRow.of)
        if fact["batch"] is not None:
            fact["batch"] = BatchProof(*fact["batch"])
        out.append(ParsedCopy(store.CopyRow(*item[:_PAYLOAD]), Copy(**fact)))
    return out


def _ready() -> None:
    """Nothing: submitted once per process at start, so that they are spawned before a batch waits."""


class ChecksUnavailable(Exception):
    """A slice of a batch could not be checked (its check process died, or the ledger is
    stopping).  Nothing of the batch is stored; the gateway sends it again."""


class CheckPool(Service):
    """Checks a gateway's batch of copies with a :class:`CopyChecker`: in ``processes`` worker
    processes, or on a thread of the ledger's own pool when ``processes`` is 0.

    The checks are most of the ledger's work per copy, and its process uses one core (one
    GIL) however many the machine has.  With processes, a batch is cut into slices that
    are checked at once, and :meth:`check` hands back one Deferred per slice, in order.  A
    worker that dies fails the batches it was checking with :class:`ChecksUnavailable`, and
    a fresh pool takes the next.
    """

    name = "check-pool"
    MIN_SLICE = 50

    def __init__(self, checker: CopyChecker, keys: Mapping[str, tuple[str, Any]], processes: int,
                 reactor: Any, threads: ThreadPool, load: Callable[[str], Any]) -> None:
        self.checker = checker
        self.processes = processes
        self.reactor = reactor
        self.threads = threads
        self._init = (_start_worker, ({name: (alg, key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
            for name, (alg, key) in keys.items()}, load))
        self._executor: ProcessPoolExecutor | None = None

    def startService(self) -> None:
        super().startService()
        if self.processes:
            self._executor = self._new_executor()

    def stopService(self) -> None:
        super().stopService()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def pids(self) -> list[int]:
        """The check processes' ids (none when checking on a thread or stopped)."""
        executor = self._executor
        processes = getattr(executor, "_processes", None) or {}
        return sorted(p.pid for p in processes.values() if p.pid is not None)

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn, not fork: a fork of the running reactor process would copy its threads' locks.
        initializer, initargs = self._init
        executor = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=initializer, initargs=(*initargs, os.getpid()))
        for _ in range(self.processes):
            executor.submit(_ready)
        return executor

    def check(self, gateway: str, docs: Sequence[Any]) -> list[Deferred[list[ParsedCopy | Refusal]]]:
        """One Deferred per consecutive slice of ``docs``, in order; together they cover it."""
        if not self.processes:
            return [deferToThreadPool(self.reactor, self.threads, self.checker.check, gateway, docs)]
        size = max(self.MIN_SLICE, -(-len(docs) // (2 * self.processes)))
        return [self._submit(gateway, docs[i:i + size]) for i in range(0, len(docs), size)]

    def _submit(self, gateway: str, docs: Sequence[Any]) -> Deferred[list[ParsedCopy | Refusal]]:
        d: Deferred[list[ParsedCopy | Refusal]] = Deferred()
        executor = self._executor
        if executor is None:
            d.errback(ChecksUnavailable("the ledger is not running; retry"))
            return d
        try:
            future = executor.submit(_check_in_worker, gateway, list(docs))
        except BrokenProcessPool:
            self._replace(executor)
            d.errback(ChecksUnavailable("a check process had died; retry"))
            return d
        future.add_done_callback(lambda f: self.reactor.callFromThread(self._settle, d, f, executor))
        return d

    def _settle(self, d: Deferred[Any], future: Future[Any], executor: ProcessPoolExecutor) -> None:
        if future.cancelled():  # the pool was shut down: the ledger is stopping
            d.errback(ChecksUnavailable("the ledger is stopping; retry"))
            return
        error = future.exception()
        if error is None:
            try:
                checked = unpack(future.result())
            except Exception:  # a fault here fails this batch; it must not leave it waiting
                d.errback(Failure())
                return
            d.callback(checked)
        elif isinstance(error, BrokenProcessPool):
            log.error("ledger.check_process_died", error=str(error)[:200])
            self._replace(executor)
            d.errback(ChecksUnavailable("a check process died while checking; retry"))
        else:
            d.errback(error)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if broken is self._executor:
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor() if self.running else None
