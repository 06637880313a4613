"""bench/console.py runs end to end on a tiny ledger and reports every page (speed never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_console_bench_times_every_page(tmp_path):
    out = tmp_path / "console.json"
    proc = subprocess.run([sys.executable, "-m", "bench.console", "--instructions", "50", "--alerts", "10",
                           "--requests", "1", "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["benchmark"] == "console" and doc["params"]["instructions"] == 50
    for page in ("overview", "alerts", "alert evidence", "accounts", "report, year"):
        assert doc["results"][page]["count"] == 1, page
