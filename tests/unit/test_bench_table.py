"""Issue 20's table (bench/table.py) and the relay bench's latency per bank (bench/relay.py).

Pure: the table is built from the runs' JSON documents, so each row's
judgement is checked on documents written here; the per-bank split is
checked on the demo's real config and a centre's real book.  Nothing is
timed.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.table import KEYS, Row, markdown, plan, sides_for, table_rows
from gateway.simulate.centre_load import LoadBook


def _group(banks: list[str], adapters: list[str], p50: float, p99: float, final: int = 100,
           **extra: Any) -> dict[str, Any]:
    return {"banks": banks, "adapters": adapters, "final": final, "p50_ms": p50, "p95_ms": p99, "p99_ms": p99,
            "max_ms": p99, **extra}


def _relay(*, p50: float = 900.0, p99: float = 2600.0, push: tuple[float, float] = (12.0, 45.0),
           polled: tuple[float, float] = (2300.0, 2600.0), cpu: float = 0.5, submitted_per_s: float = 100.0,
           **results: Any) -> dict[str, Any]:
    r = {"p50_ms": p50, "p99_ms": p99, "gateway_cpu_s_per_1000": cpu, "submitted_per_s": submitted_per_s,
         "instructions_per_s": 95.0, "centre": {"submitted": 2000, "final": 2000, "not_final": 0, "refused": 0},
         "latency_push_banks": _group(["B001", "B003"], ["bdc", "iso20022"], *push),
         "latency_polled_banks": _group(["B002", "B004"], ["bocb2e", "icbc"], *polled, status_first_after_s=[1.0])}
    r.update(results)
    return {"results": r, "params": {"final_timeout": 60.0}}


def _row(rows: list[Row], starts: str) -> Row:
    found = [r for r in rows if r.figure.startswith(starts)]
    assert len(found) == 1, [r.figure for r in rows]
    return found[0]


def test_the_latency_row_is_judged_on_the_banks_that_push_and_the_polled_ones_are_shown_apart() -> None:
    rows = table_rows({"relay100": _relay()})
    push = _row(rows, "relay at 100/s offered, single POSTs: submit→final p50 / p99, banks that push")
    assert push.met is True and "12 / 45 ms" in push.measured and "bdc, iso20022" in push.figure
    polled = _row(rows, "relay at 100/s offered, single POSTs: submit→final p50 / p99, front-end banks")
    assert polled.met is None and "2,300 / 2,600 ms" in polled.measured
    assert "1 s" in polled.target and "cadence" in polled.target  # says why it is not judged
    overall = _row(rows, "relay at 100/s offered, single POSTs: submit→final p50 / p99, all banks")
    assert overall.met is None and overall.measured == "900 / 2,600 ms"
    assert _row(table_rows({"relay100": _relay(push=(16.0, 45.0))}), "relay at 100/s offered, single POSTs: "
                "submit→final p50 / p99, banks that push").met is False


def test_a_relay_run_without_per_bank_figures_is_judged_on_every_bank() -> None:
    doc = _relay()
    del doc["results"]["latency_push_banks"], doc["results"]["latency_polled_banks"]
    row = _row(table_rows({"relay100": doc}), "relay at 100/s")
    assert row.figure.endswith("all banks") and row.met is False and row.note


def test_nothing_measured_is_nothing_judged() -> None:
    rows = table_rows({})
    assert all(r.met is None for r in rows)
    assert sum(r.measured == "not measured" for r in rows) >= 11
    assert _row(rows, "gateway RSS over a long run").measured == "not run (--long N)"


@pytest.mark.parametrize(("docs", "figure", "met"), [
    ({"relay100": _relay(cpu=0.6)}, "gateway CPU per 1,000 instructions at 100/s", True),
    ({"relay100": _relay(cpu=0.61)}, "gateway CPU per 1,000 instructions at 100/s", False),
    ({"idle": {"results": {"cpu_percent_of_a_core": 0.5, "wakeups_per_s": 40.0}}}, "the demo idle", True),
    ({"idle": {"results": {"cpu_percent_of_a_core": 5.7, "wakeups_per_s": 202.0}}}, "the demo idle", False),
    ({"relay500": _relay(push=(20.0, 80.0), cpu=0.8, submitted_per_s=480.0)}, "relay at 500/s", True),
    ({"relay500": _relay(push=(20.0, 80.0), cpu=0.8, submitted_per_s=470.0)}, "relay at 500/s", False),
    ({"relay500": _relay(push=(20.0, 81.0), cpu=0.8, submitted_per_s=500.0)}, "relay at 500/s", False),
    ({"saturate_no_ledger": _relay(instructions_per_s=2500.0)}, "relay --saturate --no-ledger", True),
    ({"intake": {"results": {"databases": {"sqlite": {"instructions_per_s": 15000.0}}}}}, "intake, SQLite", True),
    ({"intake": {"results": {"databases": {"sqlite": {"instructions_per_s": 14999.0}}}}}, "intake, SQLite", False),
])
def test_each_target_is_met_at_its_bound_and_missed_past_it(docs: dict[str, Any], figure: str, met: bool) -> None:
    assert _row(table_rows(docs), figure).met is met


def _saturate(ips: float, *, gateway: float = 0.4, ledger: float = 0.3, with_copies: float | None = -1.0,
              drain: float | None = 1.0, bound: int = 2100) -> dict[str, Any]:
    return _relay(instructions_per_s=ips, cpu_s_per_1000_by_process={"gateway": gateway, "ledger": ledger},
                  instructions_per_s_copies_delivered=ips if with_copies == -1.0 else with_copies,
                  ledger_drain_after_last_final_s=drain, cpu_bound_instructions_per_s=bound, ledger_copies=500)


def test_the_saturated_relay_needs_its_copies_to_keep_up_and_both_costs_within_bounds() -> None:
    figure = "relay --saturate, batch, ledger on"
    assert _row(table_rows({"saturate": _saturate(1000.0)}), figure).met is True
    assert _row(table_rows({"saturate": _saturate(1000.0, ledger=0.31)}), figure).met is False
    assert _row(table_rows({"saturate": _saturate(1000.0, with_copies=900.0)}), figure).met is False
    undelivered = _row(table_rows({"saturate": _saturate(1000.0, drain=None, with_copies=None)}), figure)
    assert undelivered.met is False and "NOT all delivered within 60 s" in undelivered.measured
    assert _row(table_rows({"saturate": _saturate(1000.0, drain=None)}), figure).met is False
    assert _row(table_rows({"saturate": _saturate(1000.0, bound=1999)}), '"the most these costs allow"').met is False


def test_postgresql_is_compared_with_sqlite_for_intake_and_the_relay() -> None:
    docs = {"intake": {"results": {"databases": {"sqlite": {"instructions_per_s": 10000.0},
                                                 "postgresql": {"instructions_per_s": 8000.0}}}},
            "saturate": _saturate(1000.0), "saturate_pg": _saturate(900.0)}
    row = _row(table_rows(docs), "intake / relay on PostgreSQL")
    assert row.measured.startswith("0.80 / 0.90") and row.met is True
    docs["saturate_pg"] = _saturate(899.0)
    assert _row(table_rows(docs), "intake / relay on PostgreSQL").met is False
    skipped = _row(table_rows({"intake": docs["intake"]}), "intake / relay on PostgreSQL")
    assert skipped.met is None  # the relay's half not measured: not judged


def test_the_ledger_rows_read_the_max_phase_the_offered_rate_and_the_peak() -> None:
    rate = {"match_lag_p99_ms": 90.0, "offered_instructions_per_s": 500.0, "kept_up": True}
    doc = {"results": {"max": {"events_per_s": 21000.0}, "rate": rate, "ledger_peak_rss_mb": 210.0}}
    rows = table_rows({"ledger": doc})
    assert _row(rows, "ledger max ingest").met is True
    assert _row(rows, "ledger match lag").met is True
    assert _row(rows, "ledger peak RSS").met is False
    rate["kept_up"] = False  # a lag measured while a queue grows is no latency
    assert _row(table_rows({"ledger": doc}), "ledger match lag").met is False


def test_before_and_after_are_paired_by_figure() -> None:
    after = [Row("a", "1", "≤ 2", True), Row("b", "5", "≤ 2", False)]
    before = [Row("b", "7", "≤ 2", False)]
    text = markdown(after, before).splitlines()
    assert text[0] == "| figure | before | after | target | met? before / after |"
    assert text[2] == "| a | not measured | 1 | ≤ 2 | – / yes |"
    assert text[3] == "| b | 7 | 5 | ≤ 2 | **no** / **no** |"
    assert markdown(after).splitlines()[2] == "| a | 1 | ≤ 2 | yes |"


def test_before_and_after_take_turns_going_first() -> None:
    assert [sides_for(i, before=True) for i in range(3)] == [("before", "after"), ("after", "before"),
                                                             ("before", "after")]
    assert sides_for(1, before=False) == ("after",)


def test_the_plan_shortens_every_run_when_quick_and_adds_postgresql_and_the_long_run_only_when_asked() -> None:
    full = plan(quick=False, pg_url=None, long_instructions=None)
    assert {r.key for r in full} == set(KEYS) - {"saturate_pg", "memory_long"}
    assert all("postgresql" not in " ".join(r.argv) for r in full)
    quick = plan(quick=True, pg_url="postgresql+psycopg://x@127.0.0.1/y", long_instructions=1000)
    assert {r.key for r in quick} == set(KEYS)

    def seconds(runs: list[Any]) -> dict[str, float]:
        return {r.key: float(r.argv[r.argv.index("--seconds") + 1]) for r in runs if "--seconds" in r.argv}

    assert all(seconds(quick)[k] < v for k, v in seconds(full).items())
    long_run = next(r for r in quick if r.key == "memory_long")
    assert long_run.argv[:3] == ("memory", "--part", "long") and "1000" in long_run.argv


def test_the_relay_bench_splits_the_demos_banks_into_pushing_and_polled(tmp_path: Any) -> None:
    from bench.relay import bank_kinds, latency_by_bank
    from gateway.config import load_config
    from gateway.demo import write_demo_config

    kinds = bank_kinds(load_config(write_demo_config(tmp_path), check_files=False))
    assert {b: (k["adapter"], k["polled"]) for b, k in kinds.items()} == {
        "B001": ("bdc", False), "B002": ("bocb2e", True), "B003": ("iso20022", False), "B004": ("icbc", True)}
    assert kinds["B002"]["status_first_after_s"] == 1.0 and kinds["B001"]["status_first_after_s"] is None
    book = LoadBook()
    for i, (bank, ms) in enumerate([("B001", 10), ("B002", 2000), ("B003", 20), ("B004", 2400)] * 25):
        book.submitted(f"i{i}", 0.0, bank)
        book.answered(f"i{i}", 202)
        book.seen(f"i{i}", "succeeded", ms / 1000)
    report = book.report(elapsed_s=3.0)
    split = latency_by_bank(report.to_json(), kinds, report.latency)
    assert split["push_banks"]["banks"] == ["B001", "B003"] and split["push_banks"]["adapters"] == ["bdc", "iso20022"]
    assert (split["push_banks"]["p50_ms"], split["push_banks"]["p99_ms"]) == pytest.approx((10.0, 20.0))
    assert (split["polled_banks"]["p50_ms"], split["polled_banks"]["p99_ms"]) == pytest.approx((2000.0, 2400.0))
    assert split["polled_banks"]["status_first_after_s"] == [1.0]
    assert split["by_adapter"]["icbc"]["final"] == 25 and split["by_adapter"]["icbc"]["banks"] == ["B004"]
    assert split["by_bank"]["B002"]["adapter"] == "bocb2e" and split["by_bank"]["B002"]["p50_ms"] == 2000.0
