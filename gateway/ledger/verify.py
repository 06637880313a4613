"""``hpf-gateway verify``: walk a hash-chained journal and name the first altered, inserted or deleted row.

Three journals are chained (SECURITY.md):

- the gateway's ``events`` table: each row's ``hash`` is
  :func:`gateway.store.db.chain_hash` of the previous row's hash and its own
  event id, kind, payload and raw bytes;
- the ledger's ``copies`` table: :func:`gateway.ledger.store.ledger_chain_hash`
  over everything the gateway signed, the signature, the ledger seq and the
  arrival time; ``ledger_head`` holds the newest seq and hash, so rows
  deleted from or appended at the tail show too.  A copy stored as refused
  (:class:`gateway.copies.Unreadable`) is chained and signed over the text
  the gateway signed, kept verbatim, and is checked the same way.  With the gateways' public
  keys the ledger walk also re-verifies every copy's signature (alone, or its path to its
  batch's signed root: :func:`gateway.signing.verify_copy`), which catches
  an edit even when the attacker recomputed the whole chain;
- the ledger's ``console_journal`` (the supervision console's writes: who
  acknowledged, asked, answered, approved, changed a condition):
  :func:`gateway.ledger.console.queries.journal_row_hash`, with
  ``console_journal_head`` as its head.  ``hpf-gateway verify`` of a ledger
  config walks it after the copies.

How a break is named, at the first row ``r`` whose hash does not follow from
the last good row ``p``:

- *inserted*: the row after ``r`` chains straight to ``p`` (possibly with the
  rows after ``r`` renumbered by one), so ``r`` is not part of the chain;
- *deleted*: there is a seq gap between ``p`` and ``r`` (or ``r`` is the
  first row but not the first seq of a dense chain), and the hash breaks;
- *altered*: otherwise — ``r``'s content no longer matches its hash.

On PostgreSQL the gateway's seq may have harmless gaps (a rolled-back
transaction uses up sequence values); a gap across which the chain holds is
reported as such, not as a break.  The ledger's seq is dense by construction,
so there every gap is a deletion; so is the console journal's.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TextIO

from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection, make_url

from gateway.signing import verify_bytes as verify_signature
from gateway.store.db import GENESIS, chain_hash, make_engine

__all__ = ["ChainBreak", "VerifyReport", "verify_database", "verify_main", "verify_signature"]

_PAGE = 2000


@dataclass(frozen=True)
class ChainBreak:
    """The first problem found: at ledger/gateway ``seq``, of ``kind``
    ``"altered"``, ``"inserted"``, ``"deleted"`` or ``"signature"``, with a sentence saying what."""

    seq: int
    kind: str
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of one walk.

    ``rows`` is how many rows were checked before the walk stopped,
    ``last_good_seq`` / ``head`` the last row whose hash held and that hash,
    ``gaps`` harmless seq gaps ``(before, after)`` the chain held across
    (gateway journal on PostgreSQL), ``problem`` the first break or None.
    """

    kind: str
    rows: int
    last_good_seq: int | None
    head: str
    problem: ChainBreak | None
    gaps: tuple[tuple[int, int], ...] = ()

    @property
    def ok(self) -> bool:
        """True when the whole chain holds."""
        return self.problem is None

    def describe(self) -> str:
        """One line for an operator."""
        journal = {"gateway": "gateway journal (events)", "ledger": "ledger journal (copies)",
                   "console": "console journal (console_journal)"}[self.kind]
        if self.problem is None:
            gaps = f", {len(self.gaps)} harmless seq gap(s)" if self.gaps else ""
            return f"{journal}: {self.rows} rows, chain intact{gaps}, head {self.head[:16]}"
        return (f"{journal}: BROKEN at seq {self.problem.seq} ({self.problem.kind}): {self.problem.detail}"
                f" [{self.rows} rows checked; last good seq {self.last_good_seq}]")


# -- the walk ----------------------------------------------------------------------

HashOf = Callable[[str, Mapping[str, Any]], str]


def _walk(kind: str, rows: Iterator[dict[str, Any]], hash_of: HashOf, *, dense: bool,
          check: Callable[[dict[str, Any]], str | None] | None = None) -> tuple[VerifyReport, int]:
    """Walk ``rows`` (in seq order); returns the report and how many rows there were."""
    prev_hash, prev_seq = GENESIS, None
    count = 0
    gaps: list[tuple[int, int]] = []
    current = next(rows, None)
    while current is not None:
        following = next(rows, None)
        count += 1
        seq = current["seq"]
        expected_first = 1 if dense else None
        gap = (seq != prev_seq + 1) if prev_seq is not None else (
            expected_first is not None and seq != expected_first)
        if hash_of(prev_hash, current) == current["hash"]:
            if gap and dense:
                # The hash holds across a gap only if the chain was recomputed after a deletion.
                return VerifyReport(kind, count, prev_seq, prev_hash,
                                    _classify(current, None, prev_hash, prev_seq, gap, hash_of),
                                    tuple(gaps)), count
            problem = check(current) if check is not None else None
            if problem is not None:
                return VerifyReport(kind, count, prev_seq, prev_hash, ChainBreak(seq, "signature", problem),
                                    tuple(gaps)), count
            if gap and prev_seq is not None:
                gaps.append((prev_seq, seq))
            prev_hash, prev_seq = current["hash"], seq
            current = following
            continue
        return VerifyReport(kind, count, prev_seq, prev_hash,
                            _classify(current, following, prev_hash, prev_seq, gap, hash_of),
                            tuple(gaps)), count
    return VerifyReport(kind, count, prev_seq, prev_hash, None, tuple(gaps)), count


def _classify(row: Mapping[str, Any], following: Mapping[str, Any] | None, prev_hash: str,
              prev_seq: int | None, gap: bool, hash_of: HashOf) -> ChainBreak:
    seq = row["seq"]
    after = "the start of the chain" if prev_seq is None else f"seq {prev_seq}"
    if following is not None and (
            hash_of(prev_hash, following) == following["hash"]
            or hash_of(prev_hash, dict(following, seq=seq)) == following["hash"]):
        return ChainBreak(seq, "inserted",
                          f"row {seq} is not part of the chain: the row after it "
                          f"(seq {following['seq']}) chains directly to {after}")
    if gap:
        missing = f"{prev_seq + 1}..{seq - 1}" if prev_seq is not None else f"before {seq}"
        return ChainBreak(seq, "deleted",
                          f"row(s) {missing} are missing: a seq gap after {after}, and the hash "
                          f"chain breaks at seq {seq}")
    return ChainBreak(seq, "altered",
                      f"row {seq}'s content no longer matches its hash (it follows {after})")


def _paged(conn: Connection, table: Any, columns: list[Any]) -> Iterator[dict[str, Any]]:
    last: int | None = None
    while True:
        q = select(*columns).order_by(table.c.seq).limit(_PAGE)
        if last is not None:
            q = q.where(table.c.seq > last)
        page = [dict(r) for r in conn.execute(q).mappings()]
        if not page:
            return
        yield from page
        last = page[-1]["seq"]


def _gateway_walk(conn: Connection) -> VerifyReport:
    from gateway.store.schema import events as e

    def hash_of(prev: str, row: Mapping[str, Any]) -> str:
        return chain_hash(prev, row)

    rows = _paged(conn, e, list(e.c))
    report, _ = _walk("gateway", rows, hash_of, dense=False)
    return report


def _ledger_walk(conn: Connection, keys: Mapping[str, tuple[str, Any]] | None) -> VerifyReport:
    from gateway.ledger import store

    def hash_of(prev: str, row: Mapping[str, Any]) -> str:
        return store.row_chain_hash(prev, row)

    seen: dict[str, dict[tuple[str, int, str], bool]] = {}  # per gateway: its batch signatures checked

    def check(row: dict[str, Any]) -> str | None:
        if keys is None:
            return None
        found = keys.get(row["gateway"])
        if found is None:
            return f"copy {row['event_id']} names gateway {row['gateway']!r}, whose key is not configured"
        alg, key = found
        if not store.verify_row(key, alg, row, seen=seen.setdefault(row["gateway"], {})):
            return (f"copy {row['event_id']}'s signature by gateway {row['gateway']} no longer verifies: "
                    f"it was altered and the chain recomputed")
        return None

    c = store.copies
    rows = _paged(conn, c, list(c.c))
    report, _ = _walk("ledger", rows, hash_of, dense=True, check=check)
    head_seq, head_hash = store.load_head(conn)
    return _against_head(report, head_seq, head_hash)


def _console_walk(conn: Connection) -> VerifyReport | None:
    """The console's journal of supervisors' and staff's writes, against its head; None when the
    database predates it (ledger revision L0004)."""
    from gateway.ledger import store
    from gateway.ledger.console.queries import journal_row_hash

    if not inspect(conn).has_table(store.console_journal_head.name):
        return None
    j, h = store.console_journal, store.console_journal_head
    report, _ = _walk("console", _paged(conn, j, list(j.c)), journal_row_hash, dense=True)
    head = conn.execute(select(h.c.seq, h.c.hash).where(h.c.id == 1)).first()
    return _against_head(report, int(head[0]) if head else 0, head[1] if head else GENESIS)


def _against_head(report: VerifyReport, head_seq: int, head_hash: str) -> VerifyReport:
    """A dense chain's walk checked against the head written with its newest row: rows deleted at the
    tail or appended behind the writer's back show."""
    if report.problem is not None and report.problem.seq > head_seq:
        # Nothing the ledger wrote lies beyond its head: whatever breaks there was added.
        return replace(report, problem=ChainBreak(
            report.problem.seq, "inserted", f"row {report.problem.seq} lies beyond the chain head (seq "
                                            f"{head_seq}): appended behind the ledger's back"))
    if report.problem is not None:
        return report
    last = report.last_good_seq or 0
    if head_seq > last:
        return replace(report, problem=ChainBreak(
            last + 1, "deleted", f"row(s) {last + 1}..{head_seq} are missing: the chain head is at seq "
                                 f"{head_seq} but the journal ends at seq {last}"))
    if last > head_seq:
        return replace(report, problem=ChainBreak(
            head_seq + 1, "inserted", f"row(s) {head_seq + 1}..{last} lie beyond the chain head "
                                      f"(seq {head_seq}): appended behind the ledger's back"))
    if last and head_hash != report.head:
        return replace(report, problem=ChainBreak(
            last, "altered", f"the chain head's hash does not match row {last}"))
    return report


def verify_database(url: str, *, kind: str,
                    keys: Mapping[str, tuple[str, Any]] | None = None) -> VerifyReport:
    """Walk the journal in the database at ``url``; ``kind`` is ``"gateway"``, ``"ledger"`` (the
    copies) or ``"console"`` (the console's journal in a ledger database).

    For a ledger, ``keys`` (gateway name -> (signature_alg, public key))
    makes the walk re-verify every copy's signature too.  Reads only.
    """
    if kind not in ("gateway", "ledger", "console"):
        raise ValueError(f'kind must be "gateway", "ledger" or "console", not {kind!r}')
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if kind == "console":
                report = _console_walk(conn)
                if report is None:
                    raise ValueError("this ledger database has no console journal head (migrate it)")
                return report
            return _gateway_walk(conn) if kind == "gateway" else _ledger_walk(conn, keys)
    finally:
        engine.dispose()


def _console_report(url: str) -> VerifyReport | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _console_walk(conn)
    finally:
        engine.dispose()


# -- the command -----------------------------------------------------------------


def verify_main(config_path: str | None = None, *, database: str | None = None,
                kind: str | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``hpf-gateway verify``: 0 when the chain is intact, 1 when it is broken, 2 on a usage error.

    Give ``config_path`` (a gateway or a ledger config: which one is read
    from its top-level section), or ``database`` with ``kind``.  With a ledger
    config whose gateways' signing keys are readable, signatures are
    re-verified too.
    """
    from gateway.config import ConfigError

    out = out or sys.stdout
    err = err or sys.stderr
    keys: dict[str, tuple[str, Any]] | None = None
    try:
        if config_path is not None:
            try:
                doc = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
                print(f"hpf-gateway verify: {config_path}: {e}", file=err)
                return 2
            found = "ledger" if "ledger" in doc and "gateway" not in doc else "gateway"
            if kind is not None and kind != found:
                print(f"hpf-gateway verify: {config_path} is a {found} config, not a {kind} one", file=err)
                return 2
            kind = found
            if kind == "ledger":
                from gateway.ledger.config import load_ledger_config, load_public_key

                lcfg = load_ledger_config(config_path, check_files=False)
                database = lcfg.database
                keys = {}
                for name, peer in lcfg.gateways.items():
                    try:
                        keys[name] = (peer.signature_alg, load_public_key(peer.signing_key, peer.signature_alg))
                    except ValueError as e:
                        print(f"hpf-gateway verify: gateways.{name}.signing_key: {e}; "
                              "signatures are not re-verified", file=err)
                        keys = None
                        break
            else:
                from gateway.config import load_config

                database = load_config(config_path, check_files=False).database
        if database is None or kind is None:
            print("hpf-gateway verify: give a config, or a database URL and its kind", file=err)
            return 2
        reports = [verify_database(database, kind=kind, keys=keys)]
        if kind == "ledger":  # the console's journal is chained in the same database
            console = _console_report(database)
            reports += [console] if console is not None else []
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=err)
        return 2
    except Exception as e:  # an unreachable database, a missing table: say so, do not trace
        print(f"hpf-gateway verify: cannot read the journal: {type(e).__name__}: "
              f"{str(e).splitlines()[0] if str(e) else ''}", file=err)
        return 2
    shown = make_url(database).render_as_string(hide_password=True)
    for report in reports:
        print(f"{shown}: {report.describe()}", file=out)
    return 0 if all(r.ok for r in reports) else 1
