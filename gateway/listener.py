"""Listening endpoints as services, and the two questions their owners ask of them.

Twisted's :class:`StreamServerEndpointService` keeps the port it is binding, and whether a
failure to bind is raised at start, behind private attributes; this is the one place that
touches them, so the service trees, their readiness checks and the tests ask in public.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory

__all__ = ["listening_service", "when_listening", "is_bound"]


def listening_service(endpoint: IStreamServerEndpoint, factory: Factory) -> StreamServerEndpointService:
    """A service listening on ``endpoint`` with ``factory``; a port that cannot be bound fails the
    start, loudly (rather than a log line and a daemon that serves nothing)."""
    service = StreamServerEndpointService(endpoint, factory)
    service._raiseSynchronously = True
    return service


def when_listening(service: StreamServerEndpointService) -> Deferred[IListeningPort]:
    """Fires with the service's listening port once bound (at once if it is); fails when binding
    failed or the service was never started."""
    waiting = service._waitingForPort
    if waiting is None:
        return fail(RuntimeError("the listener was not started"))
    d: Deferred[IListeningPort] = Deferred()

    def pass_on(result: Any) -> Any:
        if IListeningPort.providedBy(result):
            d.callback(result)
        else:
            d.errback(RuntimeError(f"not listening on {service.endpoint!r}"))
        return result

    waiting.addBoth(pass_on)
    return d


def is_bound(service: StreamServerEndpointService) -> bool:
    """Whether the service has finished binding (its port is open, or binding failed)."""
    waiting = service._waitingForPort
    return waiting is not None and waiting.called
