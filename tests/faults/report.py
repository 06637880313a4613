"""The reliability table of docs/reliability.md from the fault suite's counts.

Every fault test appends one JSON line of counts to ``fault-counts.jsonl`` in
pytest's base temporary directory.  Run the suite with a known base, then::

    python -m pytest tests/faults --basetemp=/tmp/faults
    python -m tests.faults.report /tmp/faults/fault-counts.jsonl

(several files: the rows of each in turn) prints one Markdown row per test: the fault, the load, the counts that must be
zero, the ledger's alerts beyond those the fault should cause (counted once
its rules had run past every deadline; — where no ledger ran to the end, or
the run predates the count) and, where the test measured it, the time until
the link was back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("lost", "not final", "executed twice", "missing from feed", "missing at ledger",
           "alerts beyond the fault's", "recovery")


def row(c: dict) -> str:
    name = c.get("test", "?").replace("test_", "", 1)
    load = f"{c['submitted']} instructions"
    not_final = c["acknowledged"] - c["feed_final_once"]
    ledger = "—" if c.get("ledger_missing") is None else c["ledger_missing"]
    alerts = "—" if c.get("alerts_unexpected") is None else c["alerts_unexpected"]
    if "recovery" in c:
        recovery = c["recovery"]
    elif "link_back_s" in c:
        recovery = f"link back in {c['link_back_s']} s"
    else:
        recovery = "—"
    cells = (name, load, c["lost"], not_final, c["executed_twice"], c["feed_missing_final"], ledger, alerts,
             recovery)
    return "| " + " | ".join(str(x) for x in cells) + " |"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print("| fault (test) | load | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for name in argv:  # several runs' files: their rows one after another
        for line in Path(name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                print(row(json.loads(line)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
