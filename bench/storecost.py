"""``python -m bench.storecost``: the store's CPU per instruction, without the relay around it.

    python -m bench.storecost [--instructions 1500] [--batch 1] [--dir DIR]

In this process, one instruction's three commits as the relay makes them -- intake, the claim
before sending (``record_sent``), the bank's result with a movement (``apply_bank_batch``) --
each through :meth:`gateway.store.db.GroupCommitWriter._transaction` on the calling thread
(the product's code path less the hand-off to the writer's thread). ``--batch N`` puts N
instructions in each of the three transactions, as a saturated gateway's group commits do;
``--batch 1`` is a gateway at low rates, where every commit is alone.

The database is SQLite (WAL, ``synchronous=FULL``) in ``--dir``, by default a temporary
directory on ``/dev/shm`` where there is one: there an fsync costs next to nothing, so the
CPU (``time.process_time``, after 200 instructions of warm-up) is the store's own work and not
the disk's. After the run the journal's hash chain is walked whole
(:func:`gateway.store.db.chain_hash`), so a faster store that writes other bytes would fail
here. bench/README.md item 52 used it to take the store apart from the relay.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.storecost", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--instructions", type=int, default=1500, help="instructions measured (default 1,500)")
    p.add_argument("--batch", type=int, default=1, help="instructions per transaction (default 1)")
    p.add_argument("--dir", type=Path, default=None, help="where the database goes (default: a temporary "
                   "directory on /dev/shm, else the system's)")
    args = p.parse_args(argv)
    if args.instructions < 1 or args.batch < 1:
        p.error("--instructions and --batch must be at least 1")

    from sqlalchemy import text

    from gateway import lifecycle
    from gateway.store import instructions as q
    from gateway.store import migrate
    from gateway.store.db import GENESIS, GroupCommitWriter, chain_hash, make_engine
    from tests.kit.store import make_instruction

    shm = Path("/dev/shm")
    own = args.dir is None
    directory = Path(tempfile.mkdtemp(prefix="hpf-storecost-", dir=shm if shm.is_dir() else None)) \
        if own else args.dir
    if not own and (directory / "gateway.db").exists():
        p.error(f"--dir: {directory / 'gateway.db'} exists; the run needs a new database")
    try:
        url = f"sqlite:///{directory / 'gateway.db'}"
        migrate.upgrade(url)
        engine = make_engine(url)
        writer = GroupCommitWriter(None, engine)

        def one(ops: list) -> list:
            [values], _, _ = writer._transaction([lambda tx: [op(tx) for op in ops]])
            return values

        def cycle(first: int) -> None:
            numbers = range(first, first + args.batch)
            [outcomes] = one([lambda tx: q.intake(tx, [q.IntakeItem(make_instruction(n), "B001")
                                                        for n in numbers])])
            refs = [o.record["bank_ref"] for o in outcomes]
            one([lambda tx: q.record_sent(tx, "B001", refs)])
            facts: list = []
            for n, ref in zip(numbers, refs):
                entry = {"account": "6200001111222233", "host_seq_no": f"H{n}", "amount": "100.00",
                         "direction": "debit"}
                facts += [q.BankFact(ref, lifecycle.ResultReceived(True), f"H{n}", "", "0000", "ok", b"<raw/>"),
                          q.Movements(((entry, "C52240"),), b"<raw/>")]
            one([lambda tx: q.apply_bank_batch(tx, "B001", facts)])

        n = 0
        while n < 200:  # warm-up: caches, the allocator, SQLite's pages
            cycle(n)
            n += args.batch
        t0, measured = time.process_time(), 0
        while measured < args.instructions:
            cycle(n)
            n += args.batch
            measured += args.batch
        cpu = time.process_time() - t0
        writer.stop()

        with engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM events ORDER BY seq")).all()
        prev = GENESIS
        for row in rows:
            if chain_hash(prev, row) != row.hash:
                raise SystemExit(f"the journal's chain breaks at seq {row.seq}")
            prev = row.hash
        engine.dispose()
        print(f"{measured} instructions, {args.batch} per transaction, SQLite in {directory.parent}: "
              f"{cpu / measured * 1e3:.3f} CPU ms per instruction (3 commits); "
              f"{len(rows)} journal events, chain intact")
    finally:
        if own:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
