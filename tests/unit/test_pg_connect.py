"""A PostgreSQL handshake that goes unanswered gives up in seconds, not at the server's leisure.

The database unreachable for 30 s used to keep the bank links down 31 to 37 s after it came back:
connections opened meanwhile waited for an answer to a swallowed handshake until the server's
``authentication_timeout``.  Here the "server" is a real socket that accepts and never speaks.
"""

from __future__ import annotations

import socket
import threading
import time

import sqlalchemy as sa

from gateway.store.db import PG_CONNECT_ARGS, make_engine


def test_an_unanswered_handshake_fails_within_the_connect_timeout() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])  # accepted, never answered
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    engine = make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{silent.getsockname()[1]}/none")
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            with engine.connect():
                outcome.append(None)
        except BaseException as e:  # noqa: BLE001 (handed to the test thread)
            outcome.append(e)

    started = time.monotonic()
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    try:
        # Bounded here, not by the driver: without a connect timeout the worker would hang on.
        worker.join(PG_CONNECT_ARGS["connect_timeout"] * 4)
        waited = time.monotonic() - started
        assert not worker.is_alive(), f"the handshake still waits after {waited:.1f} s"
        assert len(outcome) == 1 and isinstance(outcome[0], sa.exc.OperationalError), outcome
        assert held, "the connection never reached the silent server"
    finally:
        stop.set()
        thread.join(2)
        engine.dispose()
        for s in held:
            s.close()
        silent.close()
