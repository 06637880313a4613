"""Polling, in one place: :func:`wait_until` for a test that drives processes, :func:`until` on the reactor."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import deferLater

__all__ = ["wait_until", "until"]


def wait_until(check: Callable[[], Any], what: str, timeout: float, interval: float = 0.1,
               explain: Callable[[], object] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy (returned); AssertionError after ``timeout``.

    ``explain`` adds what is still wrong to the message.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 (a process not up yet, a file half there: keep polling)
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            why = f"; {explain()}" if explain is not None else ""
            raise AssertionError(f"not within {timeout}s: {what} (last: {last!r}{why})"[:3000])
        time.sleep(interval)


async def until(check: Callable[[], Any], what: str = "the condition", timeout: float = 10.0,
                interval: float = 0.05) -> Any:
    """Poll ``check`` on the reactor until it gives something truthy (returned); AssertionError after
    ``timeout``.  ``check`` may return the value or an awaitable of it; the reactor never blocks."""
    from twisted.internet import reactor

    deadline = reactor.seconds() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await deferLater(reactor, interval, lambda: None)
