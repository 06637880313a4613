"""A fault-injecting TCP proxy for the fault suite: a bad network between two real processes.

One :class:`FaultyLink` listens on a loopback port and forwards every
connection to ``target``; what the network does to the bytes is set while it
runs (from the test's thread):

- :meth:`delay`: latency and jitter per chunk, order kept per direction;
- :meth:`limit`: a bandwidth in bytes per second per direction;
- :meth:`reset_after`: every connection is reset (RST) once it has carried N
  more bytes, mid-frame as often as not;
- :meth:`silence`: half-open: bytes are swallowed both ways, nothing is
  closed, no RST, no FIN (what a dead middlebox or a pulled cable looks like);
- :meth:`black_hole`: new connections are accepted and hear nothing, old ones
  go silent (a peer that accepts and never answers);
- :meth:`heal`: back to a clean network.

Everything runs on one asyncio loop in a daemon thread; :meth:`close` stops
it.  Bounded: nothing here retries or loops without the test's own deadline.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from dataclasses import dataclass

__all__ = ["FaultyLink"]


@dataclass
class _Faults:
    latency: float = 0.0
    jitter: float = 0.0
    rate: float = 0.0              # bytes per second per direction; 0 = unlimited
    reset_after: int | None = None  # reset each connection after this many more bytes
    silent: bool = False


class FaultyLink:
    """A TCP proxy from ``127.0.0.1:port`` to ``target`` whose faults the test sets at run time."""

    def __init__(self, target: tuple[str, int], seed: int = 0) -> None:
        self.target = target
        self.faults = _Faults()
        self.counts = {"connections": 0, "resets": 0, "bytes": 0}
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._budget: dict[int, int] = {}
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="faulty-link")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the proxy did not start")

    # -- control (from the test's thread) -----------------------------------------

    def delay(self, latency: float, jitter: float = 0.0) -> None:
        self._set(latency=latency, jitter=jitter)

    def limit(self, bytes_per_second: float) -> None:
        self._set(rate=bytes_per_second)

    def reset_after(self, n_bytes: int) -> None:
        """Reset every connection, present and future, after it has carried ``n_bytes`` more bytes."""
        self._set(reset_after=n_bytes)
        self._call(self._budget.clear)

    def silence(self) -> None:
        self._set(silent=True)

    def black_hole(self) -> None:
        self._set(silent=True)

    def heal(self) -> None:
        self._call(lambda: setattr(self, "faults", _Faults()))

    def reset_all(self) -> None:
        """Reset every open connection now."""
        self._call(lambda: [self._reset(w) for w in list(self._writers)])

    def close(self) -> None:
        self._call(self._stop)
        self._thread.join(10)

    # -- the loop ------------------------------------------------------------------

    def _set(self, **changes: object) -> None:
        def apply() -> None:
            for k, v in changes.items():
                setattr(self.faults, k, v)
        self._call(apply)

    def _call(self, fn) -> None:  # type: ignore[no-untyped-def]
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()
        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
        self._loop.run_until_complete(start())
        self._loop.run_forever()
        self._loop.close()

    def _stop(self) -> None:
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._loop.stop()

    def _reset(self, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER 0: close sends RST, as a middlebox dropping the flow does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        self.counts["resets"] += 1

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.counts["connections"] += 1
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._reset(c_writer)
            return
        self._writers |= {c_writer, s_writer}
        pair = (c_writer, s_writer)
        await asyncio.gather(self._pump(c_reader, s_writer, pair), self._pump(s_reader, c_writer, pair),
                             return_exceptions=True)
        self._writers -= {c_writer, s_writer}

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        """Read as fast as the peer sends, stamping each chunk with when it may leave; a second
        task writes them out at their time, so latency delays bytes without throttling them."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(queue, writer))
        key = id(reader)
        last_due = 0.0
        try:
            while True:
                try:
                    chunk = await reader.read(16384)
                except OSError:
                    # One side was reset: the other sees a reset too, as through a real network.
                    for w in pair:
                        self._reset(w)
                    return
                if not chunk:
                    if not self.faults.silent:
                        await queue.put((last_due, b""))  # FIN after what is still on its way
                        await sender
                    return
                f = self.faults
                if f.silent:
                    continue  # swallowed: no data, no FIN, no RST
                if f.reset_after is not None:
                    left = self._budget.setdefault(key, f.reset_after)
                    if len(chunk) > left:
                        if left:
                            writer.write(chunk[:left])  # the first part of a frame gets through
                        for w in pair:
                            self._reset(w)
                        self._budget.pop(key, None)
                        return
                    self._budget[key] = left - len(chunk)
                now = self._loop.time()
                due = now + f.latency + (self._rng.uniform(0, f.jitter) if f.jitter else 0.0)
                if f.rate:
                    due = max(due, last_due) + len(chunk) / f.rate
                due = max(due, last_due)  # jitter never reorders a byte stream
                last_due = due
                await queue.put((due, chunk))
        finally:
            if not sender.done():
                sender.cancel()

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        while True:
            due, chunk = await queue.get()
            wait = due - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if writer.is_closing():
                return
            if not chunk:
                writer.close()
                return
            if self.faults.silent:
                continue
            writer.write(chunk)
            self.counts["bytes"] += len(chunk)
            await writer.drain()
