"""The ledger's Prometheus metrics (``hpf_ledger_*``), on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, ProcessCollector

from gateway.clock import ClockWatch

__all__ = ["LedgerMetrics"]

_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class LedgerMetrics:
    """Every metric the ledger exports, on a registry of its own (``hpf_ledger_*``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        # The process's CPU, memory and file descriptors, and the cycle collector's work
        # (prometheus_client's standard process_* and python_gc_* families).
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        # How far this host's wall clock was stepped since start; the matcher's deadlines do not
        # step with it (gateway.clock.steady_clock), the times it stamps on alerts do.
        self.clock_step = Gauge(
            "hpf_ledger_clock_step_seconds",
            "Wall clock time elapsed since start less monotonic time elapsed: how far the clock was stepped.",
            registry=r)
        self.clock_step.set_function(ClockWatch().stepped_s)
        self.copies = Counter(
            "hpf_ledger_copies", "Copies filed by gateways, by outcome (stored, duplicate, refused).",
            ["gateway", "status"], registry=r)
        self.match_lag = Histogram(
            "hpf_ledger_match_lag_seconds", "From a copy's journal time at the gateway to the matcher taking it.",
            buckets=_LAG_BUCKETS, registry=r)
        self.open_alerts = Gauge(
            "hpf_ledger_open_alerts", "Alerts not resolved, by rule, severity and state (open, acknowledged).",
            ["rule", "severity", "state"], registry=r)
        self.alerts_raised = Counter(
            "hpf_ledger_alerts_raised", "Alerts stored, by rule and severity.", ["rule", "severity"], registry=r)
        self.gateway_last_seq = Gauge(
            "hpf_ledger_gateway_last_seq", "The last gateway journal seq stored from each gateway.",
            ["gateway"], registry=r)
        # Copies a gateway has and the ledger has not (its batches' head_seq, StreamClock.head):
        # how many, and how long the deadlines have waited for them (at most
        # [thresholds] gateway_behind_hold; 0 past it, while the first may stay above 0).
        self.gateway_behind_events = Gauge(
            "hpf_ledger_gateway_behind_events",
            "Journal seqs a gateway said it had when it last sent, beyond its last copy taken; 0 when none "
            "are known missing (an upper bound: a journal's seqs may skip).", ["gateway"], registry=r)
        self.gateway_hold = Gauge(
            "hpf_ledger_gateway_hold_seconds",
            "How long the matcher's deadlines have waited for copies a gateway said it had; 0 when they do "
            "not wait (caught up, or held past thresholds.gateway_behind_hold).", ["gateway"], registry=r)
        self.journal_seq = Gauge(
            "hpf_ledger_journal_seq", "The ledger's newest journal seq.", registry=r)
        self.matched_seq = Gauge(
            "hpf_ledger_matched_seq", "The newest ledger seq the matcher has taken into account.", registry=r)
        self.denied = Counter(
            "hpf_ledger_denied", "Requests refused for who made them or for writing, by listener and reason.",
            ["listener", "reason"], registry=r)
        self.api_requests = Counter(
            "hpf_ledger_api_requests", "Requests by listener, route and status.", ["listener", "route", "status"],
            registry=r)
        self.deadlines_pending = Gauge(
            "hpf_ledger_deadlines_pending",
            "The matcher's deadlines not yet run, by rule (result, debit, balance, booking, book, forget-*).",
            ["rule"], registry=r)
        self.alerts_unstored = Gauge(
            "hpf_ledger_alerts_unstored", "Alerts the matcher raised that are not yet written.", registry=r)
        self.matcher_errors = Counter(
            "hpf_ledger_matcher_errors", "Copies or deadlines the matcher failed on (a bug: see the log).",
            registry=r)
        self.crl_next_update = Gauge(
            "hpf_ledger_crl_next_update_timestamp_seconds",
            "When each configured CRL (tls.crls) must be replaced (its nextUpdate, Unix time); past it, "
            "every peer of that issuer is refused.", ["issuer"], registry=r)
