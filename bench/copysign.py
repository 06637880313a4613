"""``python -m bench.copysign``: what signing and checking copies costs, per copy, alone and per batch.

    python -m bench.copysign [--batches 83] [--repeat 7]

In this process, on realistic copies (the lifecycles ``bench ledger`` generates: six copies
per instruction, three banks, one per adapter, with their real frames), in batches of 83
instructions = 498 copies (the forwarder's 500):

- *gateway*: the copies of a batch serialised and signed each alone
  (:meth:`gateway.signing.Signer.sign_json`, the forwarder before batches), or together
  (:meth:`~gateway.signing.Signer.sign_batch_json`, one signature over the Merkle root);
- *ledger, signatures*: each copy's signature checked alone (:func:`gateway.signing.verify_copy`
  without a batch), or by its batch (the path per copy, the one signature once);
- *ledger, every check*: :meth:`gateway.ledger.api.CopyChecker.check` over the batch, as a
  check process runs it (envelope, signature, content, the bank's frame).

CPU microseconds per copy (``time.process_time``), the best of ``--repeat`` runs: interference
on a shared machine only ever slows a run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable


def _best(repeat: int, n: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best * 1e6 / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.copysign", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--batches", type=int, default=83, help="instructions per batch (default 83 = 498 copies)")
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)

    from adapters.base import load_adapter
    from bench.ledger import _GATEWAY, Journal, _banks
    from gateway.copies import read_envelope
    from gateway.ledger.checks import CopyChecker, ParsedCopy
    from gateway.ledger.config import load_public_key
    from gateway.signing import init_signing_key, verify_copy

    with tempfile.TemporaryDirectory() as tmp:
        key, pub = init_signing_key(Path(tmp))
        journal = Journal(key, _banks())
        public = load_public_key(pub, "ed25519")
    units = [journal.lifecycle() for _ in range(args.batches)]
    copies = [dict(c) for u in units for c in u.copies]
    n = len(copies)
    signer = journal.signer

    alone = [json.loads(signer.sign_json(dict(c))) for c in copies]
    batched = [json.loads(t) for t in signer.sign_batch_json([dict(c) for c in copies])]
    envelopes = {name: [read_envelope(d, expected_alg="ed25519") for d in docs]
                 for name, docs in (("alone", alone), ("batch", batched))}

    def signatures(name: str) -> None:
        seen: dict[tuple[bytes, str], bool] = {}
        assert all(verify_copy(public, "ed25519", e.signed, e.signature, e.batch, seen=seen)  # type: ignore[union-attr]
                   for e in envelopes[name])

    def checks(docs: list[dict[str, Any]]) -> None:
        checker = CopyChecker({_GATEWAY: ("ed25519", public)}, load_adapter)
        assert all(isinstance(c, ParsedCopy) for c in checker.check(_GATEWAY, docs))

    rows = [
        ("gateway: serialise + sign, each copy alone", _best(args.repeat, n, lambda: [signer.sign_json(dict(c)) for c in copies])),
        ("gateway: serialise + sign, one batch", _best(args.repeat, n, lambda: signer.sign_batch_json([dict(c) for c in copies]))),
        ("ledger: signatures, each copy alone", _best(args.repeat, n, lambda: signatures("alone"))),
        ("ledger: signatures, by batch (path per copy)", _best(args.repeat, n, lambda: signatures("batch"))),
        ("ledger: every check, copies signed alone", _best(args.repeat, n, lambda: checks(alone))),
        ("ledger: every check, copies signed per batch", _best(args.repeat, n, lambda: checks(batched))),
    ]
    size_alone = sum(len(json.dumps(d, ensure_ascii=False).encode()) for d in alone) / n
    size_batch = sum(len(json.dumps(d, ensure_ascii=False).encode()) for d in batched) / n
    print(f"{n} copies per batch ({args.batches} instructions x 6), best of {args.repeat}, CPU µs per copy")
    for label, us in rows:
        print(f"  {label:<48} {us:8.1f}")
    print(f"  {'bytes per copy on the wire, alone / batch':<48} {size_alone:8.0f} / {size_batch:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
