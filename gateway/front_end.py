"""The link to a bank reached through its direct-connect front-end (``banks.X.front_end``).

Bank of China's bocb2e servlet and ICBC's NC take an HTTP POST per request; CCB's WLPT client
a ``<TX>`` per TCP connection.  Each runs on the gateway's own network and holds the bank's
certificate itself, so this hop is plain unless the URL says https (and then the bank's
``ca``, else ``tls.ca``, is trusted for it); its address is checked by
:func:`gateway.http_transport.check_front_end_url` (loopback or a named local address).

:func:`make_front_end_link` gives the bank an :class:`~gateway.exchange.ExchangeLink` over the
right transport, driven by the adapter the bank's config made (``for_gateway``): signed on
where the protocol signs on, never probed by a heartbeat it does not have, statements polled
with balances (``[timeouts] balance_query_interval``), and, by default for these banks,
status asked before any resend (``status_before_resend``).  What the link does is described in
docs/protocols/bocb2e.md, icbc.md and ccb.md ("The link").
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gateway.config import FRONT_END_ADAPTERS, BankConfig, GatewayConfig
from gateway.exchange import ExchangeLink, StatementPoll, StreamTransport
from gateway.http_transport import HttpTransport, NcTransport

__all__ = ["front_end_transport", "is_front_end", "make_front_end_link"]


def is_front_end(bank: BankConfig) -> bool:
    """Whether ``bank`` is reached through a front-end (its adapter is one of FRONT_END_ADAPTERS)."""
    return bank.adapter in FRONT_END_ADAPTERS and bank.front_end is not None


def _tls_policy(config: GatewayConfig, bank: BankConfig, url: str) -> Any:
    if urlsplit(url).scheme != "https":
        return None
    from twisted.internet.ssl import Certificate, trustRootFromCertificates
    from twisted.web.client import BrowserLikePolicyForHTTPS

    bundle = (bank.ca or config.tls.ca).read_bytes()
    certificates = [Certificate.loadPEM(b"-----BEGIN CERTIFICATE-----" + part)
                    for part in bundle.split(b"-----BEGIN CERTIFICATE-----")[1:]]
    return BrowserLikePolicyForHTTPS(trustRootFromCertificates(certificates))


def front_end_transport(reactor: Any, config: GatewayConfig, bank: BankConfig, adapter: Any) -> Any:
    """The transport to ``bank``'s front-end: HTTP (bocb2e), NC's sign-then-post (icbc), or a
    plain TCP connection per request (ccb)."""
    from adapters.bocb2e.adapter import china_now

    front = bank.front_end
    assert front is not None
    if bank.adapter == "ccb":
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint

        parts = urlsplit(front.url)
        host, port = parts.hostname or "", parts.port or 0
        endpoint = (TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint)(
            reactor, host, port, timeout=max(1, int(front.timeout)))
        return StreamTransport(endpoint, adapter.framer, reactor, timeout=front.timeout)

    def http(url: str, **extra: Any) -> HttpTransport:
        return HttpTransport(reactor, url, local_addresses=front.local_addresses, timeout=front.timeout,
                             max_answer=front.max_answer, tls_policy=_tls_policy(config, bank, url),
                             keep_alive=bank.window, **extra)

    if bank.adapter == "icbc":
        from adapters.icbc import codec as nc

        trading = http(front.url, content_type=b"application/x-www-form-urlencoded",
                       query=lambda form: nc.nc_query(form, china_now()))
        return NcTransport(trading, http(front.sign_url, content_type=b"INFOSEC_SIGN/1.0"))
    return http(front.url)


def make_front_end_link(reactor: Any, config: GatewayConfig, bank: BankConfig, adapter: Any, dispatcher: Any,
                        metrics: Any) -> ExchangeLink:
    """Bank ``bank``'s link through its front-end (see the module docstring)."""
    from adapters.bocb2e.adapter import china_now

    accounts = lambda: [n for n, a in dispatcher.config.accounts.items() if a.bank == bank.id]
    statements = None
    if hasattr(adapter, "statement_page"):
        statements = StatementPoll(config.timeouts.balance_query_interval, accounts)
    return ExchangeLink(bank, adapter, dispatcher, reactor, metrics,
                        front_end_transport(reactor, config, bank, adapter), gateway_node=config.node,
                        heartbeat_interval=config.timeouts.heartbeat_interval,
                        dead_after=config.timeouts.dead_after, bank_time=china_now, statements=statements,
                        transfers_first=True)
