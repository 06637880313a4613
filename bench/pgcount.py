"""``python -m bench.pgcount FILE -- MODULE ARGS``: ``python -m MODULE ARGS`` with its PostgreSQL round trips counted.

For ``bench intake --count-round-trips`` and ``bench relay --count-round-trips``: psycopg is
made to use its pure-Python libpq binding (``PSYCOPG_IMPL=python``, the same protocol as the
binary one, slower) and every request the process sends to the server is counted, by the
first word of its SQL (``BEGIN``, ``INSERT``, ``SELECT``, ``COMMIT``, ``;`` — SQLAlchemy's
pre-ping — …).  Outside a pipeline each request is one round trip: sent, then its result
waited for.  On SIGUSR2 and at exit the counts are written to FILE as JSON
``{"requests": {WORD: n}, "total": n}`` (replaced whole).  CPU figures of a counted run are
not those of an uncounted one.  Bench use only.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import threading
from collections import Counter
from pathlib import Path

__all__ = ["main"]

_SENDS = ("exec_", "exec_params", "exec_prepared", "send_query", "send_query_params", "send_query_prepared",
          "send_prepare", "send_describe_prepared", "send_describe_portal")


def _word(sql: object) -> str:
    text = sql.decode("utf-8", "replace") if isinstance(sql, (bytes, bytearray, memoryview)) else str(sql)
    text = text.strip()
    if not text:
        return "(empty)"
    word = text.split(None, 1)[0].rstrip(";").upper() or ";"
    return word


def _install(path: Path) -> None:
    from psycopg.pq import pq_ctypes

    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def wrap(name: str) -> None:
        original = getattr(pq_ctypes.PGconn, name)

        def counted(self: object, *args: object, **kwargs: object) -> object:
            if name in ("exec_prepared", "send_query_prepared"):
                key = "EXECUTE (prepared)"
            elif name in ("send_describe_prepared", "send_describe_portal"):
                key = "DESCRIBE"
            else:
                key = _word(args[1] if name == "send_prepare" else args[0])
                if name == "send_prepare":
                    key = f"PREPARE {key}"
            with lock:
                counts[key] += 1
            return original(self, *args, **kwargs)

        setattr(pq_ctypes.PGconn, name, counted)

    for name in _SENDS:
        wrap(name)

    def write(*_: object) -> None:
        with lock:
            data = {"requests": dict(counts.most_common()), "total": sum(counts.values())}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)

    signal.signal(signal.SIGUSR2, write)
    import atexit

    atexit.register(write)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m bench.pgcount FILE -- MODULE ARGS", file=sys.stderr)
        return 2
    path, module, rest = Path(argv[0]), argv[2], argv[3:]
    os.environ["PSYCOPG_IMPL"] = "python"
    _install(path)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
