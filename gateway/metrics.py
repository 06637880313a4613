"""Prometheus metrics of one gateway, on a registry of its own (so tests can run several)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, ProcessCollector
from twisted.logger import Logger

from gateway.clock import ClockWatch

__all__ = ["GatewayMetrics", "SECURITY_KINDS"]

_log = Logger(namespace="gateway.security")

#: Kinds of ``hpf_gateway_security_events_total`` and what each counts.
SECURITY_KINDS: dict[str, str] = {
    "unauthorised_peer": "a trusted certificate that is not a registered centre, on the centre API",
    "foreign_account": "a centre naming an account that is not its own",
    "bank_link_wrong_peer": "a trusted certificate that is not this bank's, on a bank link",
    "tls_refused": "a TLS handshake that failed on one of our listeners or links (bad, revoked, "
                   "expired or missing certificate, old protocol, no shared cipher, garbage)",
    "handshake_timeout": "a connection that did not finish its TLS handshake in time",
    "request_timeout": "a connection that did not deliver a whole request in time",
    "connection_limit": "a connection refused over the per-address or per-centre connection cap",
    "rate_limited": "a request refused (429) over the centre's request rate",
    "lease_fenced": "a write refused because another node took the bank link's lease",
}

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class GatewayMetrics:
    """Every metric the gateway exports; names follow Prometheus conventions."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        # The process's CPU, memory and file descriptors, and the cycle collector's work
        # (prometheus_client's standard process_* and python_gc_* families).
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        # How far the wall clock was stepped since start (NTP, an operator): wall time elapsed less
        # monotonic time elapsed, computed at each scrape (gateway.clock).  The step itself is
        # journalled too (gateway.clock_step), so the ledger learns of it in journal order.
        self.clock_step = Gauge(
            "hpf_gateway_clock_step_seconds",
            "Wall clock time elapsed since start less monotonic time elapsed: how far the clock was stepped.",
            registry=r)
        self.clock_step.set_function(ClockWatch().stepped_s)
        self.instructions = Counter(
            "hpf_gateway_instructions", "Instructions that entered each state, by bank.",
            ["bank", "state"], registry=r)
        self.submit_to_final = Histogram(
            "hpf_gateway_submit_to_final_seconds", "From intake commit to the final state being committed.",
            ["bank"], buckets=_LATENCY_BUCKETS, registry=r)
        self.link_up = Gauge(
            "hpf_gateway_bank_link_up", "1 while the bank link is connected and signed on.", ["bank"], registry=r)
        self.queue_depth = Gauge(
            "hpf_gateway_bank_queue_depth", "Instructions waiting to be sent or waiting for the bank's receipt.",
            ["bank"], registry=r)
        self.awaiting_result = Gauge(
            "hpf_gateway_bank_awaiting_result", "Instructions the bank has received and not yet settled.",
            ["bank"], registry=r)
        self.frames = Counter(
            "hpf_gateway_bank_frames", "Frames on bank links.", ["bank", "direction"], registry=r)
        self.resends = Counter(
            "hpf_gateway_bank_resends", "Instructions resent with their original reference.", ["bank"], registry=r)
        self.status_queries = Counter(
            "hpf_gateway_bank_status_queries", "Status inquiries sent for instructions without a result.",
            ["bank"], registry=r)
        self.in_doubt = Counter(
            "hpf_gateway_in_doubt", "Instructions that went in doubt.", ["bank"], registry=r)
        self.refused = Counter(
            "hpf_gateway_refused", "Inputs refused, by source and reason.", ["source", "reason"], registry=r)
        self.security_events = Counter(
            "hpf_gateway_security_events", "Refused peers and authorisation denials.", ["kind"], registry=r)
        self.certificate_expiry = Gauge(
            "hpf_gateway_certificate_expiry_timestamp_seconds",
            "When a certificate the gateway presents or trusts expires (Unix time). peer is \"gateway\" "
            "for our own, \"gateway-chain:CN\" for an intermediate we send, "
            "\"trust:SCOPE:CN:FINGERPRINT12\" for a trust anchor (SCOPE: default, centre/ID, bank/ID, ledger).",
            ["peer"], registry=r)
        self.crl_next_update = Gauge(
            "hpf_gateway_crl_next_update_timestamp_seconds",
            "When each configured CRL (tls.crls) must be replaced (its nextUpdate, Unix time); past it, "
            "every peer of that issuer is refused.", ["issuer"], registry=r)
        self.api_requests = Counter(
            "hpf_gateway_api_requests", "Centre API requests by route and status.", ["route", "status"], registry=r)
        self.ledger_backlog = Gauge(
            "hpf_gateway_ledger_backlog", "Journal events not yet delivered to the ledger.", registry=r)
        self.ledger_copies = Counter(
            "hpf_gateway_ledger_copies", "Copies answered by the ledger, by status.", ["status"], registry=r)
        self.ledger_failures = Counter(
            "hpf_gateway_ledger_failures", "Failed deliveries to the ledger (retried).", registry=r)
        self.balance_queries = Counter(
            "hpf_gateway_bank_balance_queries", "Scheduled balance queries sent.", ["bank"], registry=r)

    def security_event(self, kind: str, event: str, **fields: Any) -> None:
        """Count one ``kind`` of security event and log it as ``event`` with ``fields``.

        ``fields`` should name the peer (``peer=`` the hpf:// URI when the
        certificate is known, ``ip=`` the source address) and the listener.
        """
        self.security_events.labels(kind).inc()
        _log.warn(event, kind=kind, **fields)
