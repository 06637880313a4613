"""Coverage-guided fuzzing of every bank adapter's framer and decoder (atheris; outside CI).

Run by hand, e.g.::

    pip install atheris
    python tests/fuzz/fuzz_adapters.py -atheris_runs=200000 [-max_len=65536] [CORPUS_DIR]

The property is the adapter contract (adapters/base.py): whatever bytes a
peer sends, in whatever chunks, the framer either returns frames or raises
``AdapterError``, and the decoder either returns neutral messages or raises
``AdapterError`` — never anything else, never hangs.  The first input byte
chooses the adapter and how the rest is cut into chunks; the seeds are real
frames of every adapter (:func:`seeds`).  Without atheris installed the script
says so and exits 0.  ``tests/security/test_fuzz_adapters.py`` runs the same
:func:`check` with bounded Hypothesis budgets in CI.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters import base as msg  # noqa: E402
from adapters.base import AdapterError, load_adapter  # noqa: E402

ADAPTERS = ("bdc", "iso20022", "bocb2e", "icbc", "ccb")
_ENTRY = msg.Entry(account="6200001111222233", host_seq_no="H000001", amount=-12345,
                   value_date=dt.date(2026, 11, 27), time=dt.time(10, 0, 0),
                   counterparty_account="6200009999000011", counterparty_name="张三",
                   counterparty_bank_code="105100000017", balance_after=100000, summary="提取")
SAMPLES: tuple[msg.Message, ...] = (
    msg.SignOn("1000001", "D00000"),
    msg.SignOnAnswer("1000002", "1000001", "105000"),
    msg.Heartbeat("1000003", "D00000"),
    msg.HeartbeatAnswer("1000004", "1000003", "105000"),
    msg.Instruction(seq_no="52240261127000000001", send_date=dt.date(2026, 11, 27), centre_node="C52240",
                    unit_no="522400000000000", debit_account="6200001111222233", debit_name="示例中心归集户",
                    creditor_account="6200009999000011", creditor_name="张三",
                    creditor_bank_code="105100000017", creditor_personal=True, same_bank=True, amount=123456,
                    purpose="withdrawal", memo="提取", reference="W-1", signature=b"\x01" * 64),
    msg.StatusQuery("1000005", "52240261127000000001", dt.date(2026, 11, 27)),
    msg.BalanceQuery("1000006", "6200001111222233"),
    msg.Ack("1000007", "1000008"),
    msg.Receipt("1000009", "52240261127000000001", "52240261127000000001", "B0001"),
    msg.Result("1000010", "52240261127000000001", "52240261127000000001", True, "H000001", "B0001"),
    msg.NotFound("1000011", "1000005", "52240261127000000001"),
    msg.Movement("1000012", (_ENTRY,)),
    msg.Balance("1000013", "1000006", "6200001111222233", 100000, 90000),
    msg.Statement("1000014", "1000015", "6200001111222233", (_ENTRY,), 112345, 100000),
    # What the banks' direct-connect documents carry: one bank serial, no statement balances,
    # no counterparty bank code in a CCB detail row.
    msg.Result("1000016", "52240261127000000001", "52240261127000000001", True, "B0001", "B0001"),
    msg.Statement("1000017", "1000017", "6200001111222233",
                  (dataclasses.replace(_ENTRY, counterparty_bank_code=""),)),
)


def seeds() -> dict[str, list[bytes]]:
    """Real frames of each adapter: every sample message it can encode, in both directions."""
    out: dict[str, list[bytes]] = {}
    for name in ADAPTERS:
        adapter = load_adapter(name)
        frames = []
        for message in SAMPLES:
            for sender, receiver in (("D00000", "105000"), ("105000", "D00000")):
                try:
                    frames.append(adapter.encode(message, sender=sender, receiver=receiver))
                except AdapterError:
                    continue  # not a message this protocol carries in that direction
        out[name] = frames
    return out


def check(adapter_name: str, data: bytes, cuts: list[int]) -> int:
    """Feed ``data`` to a fresh framer in chunks cut at ``cuts``, decode every frame; return frames decoded.

    Raises whatever the adapter raises other than ``AdapterError`` (the bug a fuzzer looks for).
    """
    adapter = load_adapter(adapter_name)
    framer = adapter.framer()
    decoded = 0
    start = 0
    try:
        for end in sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]:
            for frame in framer.feed(data[start:end]):
                try:
                    messages = msg.decode_all(adapter, frame)
                except AdapterError:
                    continue
                for message in messages:
                    msg.to_json(message)  # what the relay journals must be writable
                decoded += 1
            start = end
    except AdapterError:
        pass  # the link would close here: correct
    return decoded


def _one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    adapter_name = ADAPTERS[data[0] % len(ADAPTERS)]
    step = data[1] or 1
    body = data[2:]
    check(adapter_name, body, list(range(step, len(body), step)))


def main() -> int:
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        print("atheris is not installed (pip install atheris); nothing fuzzed", file=sys.stderr)
        return 0
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus:
        directory = Path(corpus[0])
        directory.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(ADAPTERS):
            for j, frame in enumerate(seeds()[name]):
                (directory / f"seed-{name}-{j}").write_bytes(bytes([i, 0]) + frame)
    atheris.instrument_all()
    atheris.Setup(sys.argv, _one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
