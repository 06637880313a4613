"""``python -m bench adapters``: encodes and decodes per second, per installed adapter and message kind.

Runs in the bench process alone, pinned to one core (``sched_setaffinity``),
on one representative message of each neutral kind (:mod:`adapters.base`):
Chinese names, a memo, a movement with one entry, a statement with ten.
*Encode* is ``adapter.encode(message, sender, receiver)``; *decode* is what a
link does with received bytes: ``framer.feed(frame)`` then
:func:`adapters.base.decode_all` on the frame it returns.

The headline per adapter is the gateway's per-instruction codec work: one
Instruction encoded plus one Result decoded is one *pair*; the figure is how
many pairs one core does per second, i.e. the instruction rate the codec
alone would allow.  Counting each encode and each decode as a message gives
twice that; both readings of the target (>= 15,000) are reported.  A kind the
adapter cannot carry is shown as n/a with the adapter's reason.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import time
from collections.abc import Callable
from typing import Any

from bench.common import BenchError, Report

HELP = "encode + decode per second for each installed adapter and message kind, on one core"
DEFAULT_SECONDS = 20.0
TARGET_PAIRS_PER_S = 15_000

_SENDER, _RECEIVER = "105000", "D00000"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapter", action="append", help="measure only this adapter (repeatable; default: all)")
    p.add_argument("--cpu", type=int, default=None, help="the core to pin to (default: the last one allowed)")


def sample_messages() -> dict[str, list[Any]]:
    """Representative messages of every neutral kind; later entries are fallbacks for adapters that refuse earlier ones."""
    from adapters import base as b

    day = _dt.date(2026, 11, 27)
    at = _dt.time(10, 30, 15)
    ref = "52240261127000000001"
    account = "6200001111222233"

    def entry(i: int) -> Any:
        return b.Entry(account=account, host_seq_no=f"H2026112700{i:06d}", amount=-(125_000 + i), value_date=day,
                       time=at, counterparty_account="6200009999000011", counterparty_name="张三",
                       counterparty_bank_code="105100000017", balance_after=99_875_000 - i, summary="提取 I0001",
                       remark=ref, reversal=False)

    statement_entries = tuple(entry(i) for i in range(10))
    return {
        "SignOn": [b.SignOn("00000000000000000001", "D00000")],
        "SignOnAnswer": [b.SignOnAnswer("00000000000000000002", "00000000000000000001", "105000")],
        "Heartbeat": [b.Heartbeat("00000000000000000003", "D00000")],
        "HeartbeatAnswer": [b.HeartbeatAnswer("00000000000000000004", "00000000000000000003", "105000")],
        "Instruction": [b.Instruction(
            seq_no=ref, send_date=day, centre_node="C52240", unit_no="522400000000000", debit_account=account,
            debit_name="示例中心归集户", creditor_account="6200009999000011", creditor_name="张三",
            creditor_bank_code="105100000017", creditor_personal=True, same_bank=True, amount=123_456,
            purpose="withdrawal", memo="住房公积金提取 hpf-gateway load test #1", reference="L0-00000001")],
        "StatusQuery": [b.StatusQuery("00000000000000000005", ref, day)],
        "BalanceQuery": [b.BalanceQuery("00000000000000000006", account)],
        "Ack": [b.Ack("00000000000000000007", "10500026112700000012")],
        "Receipt": [b.Receipt("10500026112700000009", ref, ref, "B2026112700000009")],
        "Result": [b.Result("10500026112700000010", ref, ref, True, "H2026112700000001", "B2026112700000009",
                            "0000", "交易成功"),
                   # Front-end protocols report one serial and no code of their own on success.
                   b.Result("10500026112700000010", ref, ref, True, "B2026112700000009", "B2026112700000009")],
        "NotFound": [b.NotFound("10500026112700000011", "00000000000000000005", ref)],
        "Movement": [b.Movement("10500026112700000012", (entry(0),))],
        "Balance": [b.Balance("10500026112700000013", "00000000000000000006", account, 99_875_000, 99_875_000, 0,
                              "示例中心归集户", "0", _dt.datetime(2026, 11, 27, 10, 30, 15)),
                    # Front-end protocols: a book and an available balance, nothing else.
                    b.Balance("10500026112700000013", "00000000000000000006", account, 99_875_000, 99_875_000)],
        "Statement": [b.Statement("10500026112700000014", "00000000000000000006", account, statement_entries,
                                  100_000_000, 98_748_955),
                      b.Statement("10500026112700000014", "00000000000000000006", account, statement_entries)],
    }


def _rate(op: Callable[[], Any], budget_s: float, repeats: int = 3) -> float:
    """Calls of ``op`` per second: the best of ``repeats`` runs of ``budget_s / repeats`` seconds each.

    The best, not the mean, because on a shared machine interference only
    ever slows a run down (the ``timeit`` convention).
    """
    best = 0.0
    for _ in range(repeats):
        n, calls, t0 = 1, 0, time.perf_counter()
        while True:
            for _ in range(n):
                op()
            calls += n
            elapsed = time.perf_counter() - t0
            if elapsed >= budget_s / repeats:
                break
            n = min(n * 2, 10_000)
        best = max(best, calls / elapsed)
    return best


def _encode_rate(adapter: Any, message: Any, budget: float) -> float:
    return _rate(lambda: adapter.encode(message, sender=_SENDER, receiver=_RECEIVER), budget)


def _decode_rate(adapter: Any, frame: bytes, budget: float) -> float:
    from adapters.base import decode_all

    framer = adapter.framer()  # one framer, as one link keeps one for its life
    return _rate(lambda: decode_all(adapter, framer.feed(frame)[0]), budget)


def _pair_rate(adapter: Any, instruction: Any, result_frame: bytes, budget: float) -> float:
    from adapters.base import decode_all

    framer = adapter.framer()

    def one_pair() -> None:
        adapter.encode(instruction, sender=_SENDER, receiver=_RECEIVER)
        decode_all(adapter, framer.feed(result_frame)[0])

    return _rate(one_pair, budget)


def _measure(adapter: Any, samples: dict[str, list[Any]], budget: float) -> tuple[dict[str, Any], float | None]:
    """Per kind: frame size, encodes/s, decodes/s, lossless or not; and the Instruction+Result pair rate."""
    from adapters.base import AdapterError, decode_all

    kinds: dict[str, Any] = {}
    encoded: dict[str, tuple[Any, bytes]] = {}
    for kind, candidates in samples.items():
        frame, message, reason = None, None, ""
        for candidate in candidates:
            try:
                frame = adapter.encode(candidate, sender=_SENDER, receiver=_RECEIVER)
                message = candidate
                break
            except AdapterError as e:
                reason = str(e)
        if frame is None:
            kinds[kind] = {"supported": False, "reason": reason}
            continue
        fed = adapter.framer().feed(frame)
        if len(fed) != 1:
            kinds[kind] = {"supported": False, "reason": f"the framer cut {len(fed)} frames from one"}
            continue
        decoded = decode_all(adapter, fed[0])
        encoded[kind] = (message, frame)
        kinds[kind] = {"supported": True, "frame_bytes": len(frame),
                       "encode_per_s": round(_encode_rate(adapter, message, budget)),
                       "decode_per_s": round(_decode_rate(adapter, frame, budget)),
                       "round_trip_equal": len(decoded) == 1 and decoded[0] == message}
    pair = None
    if "Instruction" in encoded and "Result" in encoded:
        pair = _pair_rate(adapter, encoded["Instruction"][0], encoded["Result"][1], 3 * budget)
    return kinds, pair


def _pin(cpu: int | None) -> tuple[int | None, set[int] | None]:
    if not hasattr(os, "sched_setaffinity"):
        return None, None
    allowed = os.sched_getaffinity(0)
    chosen = cpu if cpu is not None else max(allowed)
    if chosen not in allowed:
        raise BenchError(f"--cpu {chosen} is not one of the allowed cores {sorted(allowed)}")
    os.sched_setaffinity(0, {chosen})
    return chosen, allowed


def run(args: argparse.Namespace) -> Report:
    from adapters.base import iter_adapter_names, load_adapter

    names = sorted(set(args.adapter or iter_adapter_names()))
    if not names:
        raise BenchError("no adapter is installed under the hpf_gateway.adapters entry points")
    samples = sample_messages()
    cells = len(names) * (2 * len(samples) + 3)  # encode + decode per kind, and the pair at triple weight
    budget = max(0.02, args.seconds / cells)
    chosen, allowed = _pin(args.cpu)
    table: dict[str, Any] = {}
    rows: list[tuple[str, Any, str]] = []
    notes: list[str] = []
    try:
        for name in names:
            try:
                adapter = load_adapter(name)
            except Exception as e:  # noqa: BLE001 (an adapter that does not load is a figure too: say so)
                table[name] = {"error": f"{type(e).__name__}: {e}"}
                notes.append(f"{name}: cannot be loaded: {e}")
                continue
            kinds, pair = _measure(adapter, samples, budget)
            table[name] = {
                "instruction_encode_plus_result_decode_per_s": None if pair is None else round(pair),
                "messages_per_s": None if pair is None else round(2 * pair),
                "meets_target_counting_pairs": None if pair is None else pair >= TARGET_PAIRS_PER_S,
                "meets_target_counting_messages": None if pair is None else 2 * pair >= TARGET_PAIRS_PER_S,
                "kinds": kinds}
            rows.append((f"{name}: Instruction encodes + Result decodes", pair,
                         f"pairs/s = {2 * pair:,.0f} messages/s (target >= {TARGET_PAIRS_PER_S:,})"
                         if pair is not None else "n/a"))
    finally:
        if allowed is not None:
            os.sched_setaffinity(0, allowed)

    width = max(len(k) for k in samples)
    lines = [f"{'adapter':10} {'kind'.ljust(width)} {'bytes':>6} {'encode/s':>10} {'decode/s':>10}  equal"]
    for name, entry in table.items():
        for kind, k in entry.get("kinds", {}).items():
            if k["supported"]:
                lines.append(f"{name:10} {kind.ljust(width)} {k['frame_bytes']:>6} {k['encode_per_s']:>10,} "
                             f"{k['decode_per_s']:>10,}  {'yes' if k['round_trip_equal'] else 'no'}")
            else:
                lines.append(f"{name:10} {kind.ljust(width)} {'n/a':>6}  ({k['reason'][:60]})")
    notes.append("'equal': decode(encode(m)) == m for the sample (a no means the wire drops or normalises a "
                 "field, e.g. text the protocol does not carry)")
    figures = {"cpu": chosen, "budget_s_per_cell": round(budget, 3), "target_pairs_per_s": TARGET_PAIRS_PER_S,
               "adapters": table}
    params = {"seconds": args.seconds, "adapters": names, "cpu": chosen}
    return Report("adapters", f"adapters: codec speed on one core (core {chosen})", tuple(rows), figures, params,
                  tuple(notes), sections=("\n".join(lines),))
