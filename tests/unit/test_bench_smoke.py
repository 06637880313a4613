"""The benchmark harness runs and reports: one tiny run per benchmark, keys checked, speed never.

Each benchmark runs as ``python -m bench NAME --seconds 1 --json FILE`` (the
real entry point, child processes and all) with the smallest sizes, and the
test checks that the JSON has the figures the README promises, that the
machine is named, and that the run was clean (every instruction final, no
alert from consistent data, no process left behind).  A few pure checks
guard what the figures rest on: the raw relay's frames and the ledger
benchmark's copies are what the adapters and the ledger accept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.kit.pg import PG_URL

REPO = Path(__file__).resolve().parents[2]
MACHINE_KEYS = {"nproc", "cpu_model", "python", "git_commit"}


def run_bench(tmp_path: Path, *args: str, timeout: float = 150) -> dict[str, Any]:
    """Run one benchmark through its CLI; its JSON document."""
    out = tmp_path / "figures.json"
    work = ["--dir", str(tmp_path / "work")] if args[0] != "adapters" else []
    proc = subprocess.run([sys.executable, "-m", "bench", *args, *work, "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "machine:" in proc.stdout  # the table names the machine
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert MACHINE_KEYS <= set(doc["machine"])
    assert doc["machine"]["nproc"] >= 1
    assert doc["benchmark"] == args[0]
    return doc


def no_children_left(tmp_path: Path) -> None:
    """No process still runs with the run's directory in its command line (every child was stopped)."""
    leftovers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(tmp_path) in cmdline:
            leftovers.append(cmdline)
    assert not leftovers


# -- pure: what the figures rest on ---------------------------------------------------------


def test_the_raw_relay_passes_a_real_bdc_instruction_and_its_result():
    from adapters import base
    from adapters.bdc import BdcAdapter
    from bench.rawrelay import encode_frames

    frames = encode_frames()
    adapter = BdcAdapter()
    instruction = adapter.decode(adapter.framer().feed(frames.instruction)[0])
    result = adapter.decode(adapter.framer().feed(frames.result)[0])
    assert isinstance(instruction, base.Instruction) and isinstance(result, base.Result)
    assert result.ref == instruction.seq_no and result.succeeded


def test_the_cpu_bound_is_the_cores_over_the_summed_costs():
    from bench.common import cpu_bound, usable_cores

    assert cpu_bound([0.95, 0.27, 0.87, 0.06], cores=2) == 930   # 2,000 / 2.15
    assert cpu_bound([0.5, None], cores=2) == 4000                 # a process not run costs nothing
    assert cpu_bound([None, None], cores=2) is None
    assert cpu_bound([1.0]) == usable_cores() * 1000


def test_a_process_cpu_counts_the_processes_it_started_when_asked():
    """The ledger checks copies in processes of its own: its CPU must include theirs."""
    import time

    from bench.common import proc_cpu_seconds

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ntime.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys\n"
                               f"subprocess.run([sys.executable, '-c', {burn!r}])"])
    try:
        deadline = time.monotonic() + 20
        while proc_cpu_seconds(parent.pid, with_children=True) - proc_cpu_seconds(parent.pid) < 0.35:
            assert time.monotonic() < deadline, "the child's CPU was never counted"
            time.sleep(0.05)
        assert proc_cpu_seconds(parent.pid) < 0.35   # its own: starting Python, then waiting
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(parent.pid)], check=False)  # while it is still the parent
        parent.kill()
        parent.wait()


def test_the_ledger_benchmark_copies_pass_every_check_of_the_ledger_and_forget_restores_balances(tmp_path):
    from adapters.base import load_adapter
    from bench.ledger import Journal, _banks
    from gateway.ledger.checks import CopyChecker, ParsedCopy
    from gateway.ledger.config import load_public_key
    from gateway.signing import init_signing_key

    key, pub = init_signing_key(tmp_path)
    banks = _banks()
    journal = Journal(key, banks)
    units = [journal.lifecycle() for _ in range(2 * len(banks))]
    copies = json.loads(journal.body(units))["copies"]  # signed as one batch, as a POST sends them
    assert [c["seq"] for c in copies] == list(range(1, len(copies) + 1))
    assert len({c["signature"] for c in copies}) == 1 and all(c["batch"]["count"] == len(copies) for c in copies)
    checker = CopyChecker({"main": ("ed25519", load_public_key(pub, "ed25519"))}, load_adapter)
    checked = checker.check("main", copies)
    assert all(isinstance(c, ParsedCopy) for c in checked), [c for c in checked if not isinstance(c, ParsedCopy)]
    before = {b.bank_id: b.balance for b in banks}
    dropped = [journal.lifecycle() for _ in range(len(banks))]
    assert {b.bank_id: b.balance for b in banks} != before
    journal.forget(dropped)
    assert {b.bank_id: b.balance for b in banks} == before


def test_the_store_benchmark_runs_the_three_commits_and_walks_the_whole_chain(tmp_path, capsys):
    from bench.storecost import main

    assert main(["--instructions", "4", "--batch", "2", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # 200 warm-up + 4 measured instructions: received, sent, succeeded and a movement each
    assert "4 instructions, 2 per transaction" in out and "816 journal events, chain intact" in out, out


def test_the_adapters_benchmark_reports_every_installed_adapter_and_kind():
    from adapters.base import iter_adapter_names
    from bench import adapter_codecs

    from adapters.base import load_adapter
    from tests.adapters.profiles import profile_for

    report = adapter_codecs.run(argparse.Namespace(seconds=1.0, adapter=None, cpu=None))
    adapters = report.figures["adapters"]
    assert set(adapters) == set(iter_adapter_names())
    for name, entry in adapters.items():
        # A protocol's conformance profile says which kinds it carries and whether it narrows
        # what it carries (then a round trip keeps only what the protocol has a place for).
        profile = profile_for(name, load_adapter(name))
        assert entry["instruction_encode_plus_result_decode_per_s"] > 0, name
        assert entry["messages_per_s"] == pytest.approx(2 * entry["instruction_encode_plus_result_decode_per_s"],
                                                        abs=2)
        for kind in ("Instruction", "Result", "Movement", "Balance"):
            cell = entry["kinds"][kind]
            if profile.kinds and kind not in profile.kinds:
                assert not cell["supported"], (name, kind)
                continue
            assert cell["supported"] and cell["encode_per_s"] > 0 and cell["decode_per_s"] > 0, (name, kind)
            assert cell["round_trip_equal"] or profile.narrow is not None, (name, kind)
    assert "pairs/s" in report.table()


# -- each benchmark end to end, through the CLI ----------------------------------------------


@pytest.mark.slow
def test_relay_runs_the_lifecycle_and_the_raw_relay_and_reports_the_ratio(tmp_path):
    doc = run_bench(tmp_path, "relay", "--seconds", "1", "--rate", "20", "--raw-seconds", "0.5",
                    "--final-timeout", "20")
    r = doc["results"]
    for key in ("instructions_per_s", "p50_ms", "p95_ms", "p99_ms", "gateway_cpu_s_per_1000",
                "gateway_peak_rss_mb", "raw_relay_msgs_per_s", "ratio"):
        assert r[key] is not None and r[key] > 0, key
    centre = r["centre"]
    assert centre["final"] == centre["submitted"] > 0
    assert centre["duplicate_finals"] == 0 and centre["not_final"] == 0
    assert r["ratio"] == pytest.approx(r["instructions_per_s"] / r["raw_relay_msgs_per_s"], rel=0.01)
    assert r["ledger_alerts_by_rule"] == {}   # consistent copies of a clean run: nothing to report
    costs = r["cpu_s_per_1000_by_process"]
    assert costs["gateway"] > 0 and costs["banks"] > 0 and costs["ledger"] > 0
    assert r["cpu_bound_instructions_per_s"] == pytest.approx(
        len(os.sched_getaffinity(0)) * 1000 / sum(costs.values()), abs=1)
    no_children_left(tmp_path)


@pytest.mark.slow
def test_intake_accepts_batches_with_no_bank_and_reports_post_latency(tmp_path):
    databases = ["--database", "sqlite"] + (["--database", PG_URL] if PG_URL else [])
    doc = run_bench(tmp_path, "intake", "--seconds", "1", "--clients", "2", "--batch", "20", "--warmup", "0.3",
                    *databases)
    results = doc["results"]["databases"]
    assert set(results) == ({"sqlite", "postgresql"} if PG_URL else {"sqlite"})
    for label, r in results.items():
        assert r["accepted"] > 0 and r["instructions_per_s"] > 0, label
        assert r["post_p50_ms"] > 0 and r["post_p99_ms"] >= r["post_p50_ms"], label
        assert set(r["items_by_status"]) == {"202"} and not r["errors"], label
        assert r["clients_cpu_s_per_1000"] > 0 and r["cpu_bound_instructions_per_s"] > 0, label
    no_children_left(tmp_path)


@pytest.mark.slow
def test_ledger_ingests_signed_copies_raises_no_alert_and_reports_lag(tmp_path):
    doc = run_bench(tmp_path, "ledger", "--seconds", "1", "--rate", "20", "--burst", "30", "--batch", "60")
    r = doc["results"]
    assert r["max"]["events_stored"] > 0 and r["max"]["events_per_s"] > 0
    rate = r["rate"]
    assert rate["events_stored"] > 0 and rate["lag_samples"] > 0
    assert 0 < rate["match_lag_p50_ms"] <= rate["match_lag_p99_ms"]
    assert r["alerts_raised"] == {} and r["other_statuses"] == {}
    no_children_left(tmp_path)


@pytest.mark.slow
def test_memory_reports_rss_idle_in_flight_and_over_a_run(tmp_path):
    doc = run_bench(tmp_path, "memory", "--seconds", "1", "--banks", "3", "--in-flight", "60",
                    "--instructions", "60", "--long-rate", "60", "--batch", "10", "--settle", "0.3")
    f = doc["results"]["in_flight"]
    assert f["banks"] == 3 and f["accepted"] == 60 and f["held"] >= 60
    assert 0 < f["rss_idle_mb"] <= f["peak_rss_mb"] and f["rss_in_flight_mb"] > 0
    g = doc["results"]["long_run"]
    assert g["final"] == 60 and g["not_final"] == 0
    assert g["rss_start_mb"] > 0 and g["rss_end_mb"] > 0 and g["rss_samples"]
    no_children_left(tmp_path)


def test_bdc_exchange_reports_throughput_and_the_handshake_cost(tmp_path):
    doc = run_bench(tmp_path, "bdc-exchange", "--seconds", "1.5", "--window", "4")
    r = doc["results"]
    for phase in ("instruction_tls", "probe_tls", "probe_plain"):
        assert r[phase]["exchanges"] > 0 and r[phase]["failed"] == 0, r[phase]
    assert r["probe_tls"]["cpu_ms"] > r["probe_plain"]["cpu_ms"]
    assert r["handshake_cpu_ms"] == round(r["probe_tls"]["cpu_ms"] - r["probe_plain"]["cpu_ms"], 3)


@pytest.mark.slow
def test_idle_reads_the_cpu_and_wakeups_of_the_whole_demo_serving(tmp_path):
    doc = run_bench(tmp_path, "idle", "--seconds", "2", "--warmup", "0.5", timeout=400)
    r = doc["results"]
    assert r["seconds"] >= 2 and r["threads"] > 1
    assert r["cpu_percent_of_a_core"] > 0 and r["wakeups_per_s"] > 0  # timers run even with nothing to do
    assert r["cpu_percent_of_a_core"] == pytest.approx(r["demo_process_cpu_percent"] + r["children_cpu_percent"],
                                                       abs=0.01)
    assert r["children"] >= 1  # the ledger's check processes are counted with the demo
    assert 0 <= r["reactor_thread_cpu_percent"] <= r["demo_process_cpu_percent"]
    assert len(r["cpu_percent_per_second"]) >= 2 and r["rss_end_mb"] > 0
    no_children_left(tmp_path)
