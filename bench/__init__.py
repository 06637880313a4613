"""The benchmark harness: ``python -m bench NAME [--seconds S] [--json FILE] [options]``.

Every benchmark measures and reports; none asserts a speed (DESIGN §10).
Each is bounded in time, uses only loopback, stops the processes it
started (also on Ctrl-C), prints a table and can write its figures with the
machine they were measured on as JSON.  See ``bench/README.md``.
"""

from __future__ import annotations

__all__ = ["BENCHMARKS"]

#: Benchmark name -> the module (under ``bench``) that implements it.
BENCHMARKS: dict[str, str] = {
    "relay": "bench.relay",
    "intake": "bench.intake",
    "adapters": "bench.adapter_codecs",
    "ledger": "bench.ledger",
    "memory": "bench.memory",
    "bdc-exchange": "bench.bdc_exchange",
    "idle": "bench.idle",
}
