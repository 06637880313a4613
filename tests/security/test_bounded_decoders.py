"""Every reader of bank input is bounded by its adapter's maximum frame or document size (issue 16, item 7).

``hpf-gateway adapters decode`` once read its whole input before looking at it, so ``/dev/zero``
grew it without bound.  Here the CLI runs as a real process, under an address-space limit that
keeps a regression from taking the machine down, on ``/dev/zero`` and on a 3 GiB (sparse) file,
framed and bare, for every installed adapter: it must refuse in one line, non-zero, with a
peak resident size under 100 MB.  The codecs' own ``decode`` and ``decode_document`` refuse input
beyond their bound as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.base import AdapterError, iter_adapter_names, load_adapter, max_document

ADAPTERS = sorted(iter_adapter_names())
HUGE = 3 * 1024**3
RSS_LIMIT_KB = 100 * 1024

# The child runs the CLI under RLIMIT_AS and reports its own peak RSS and wall time.
_RUNNER = """
import json, resource, subprocess, sys, time
def limit():
    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))
t = time.monotonic()
try:
    p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=60, preexec_fn=limit)
    rc, err = p.returncode, p.stderr
except subprocess.TimeoutExpired:
    rc, err = "timeout", ""
print(json.dumps({"rc": rc, "stderr": err, "seconds": time.monotonic() - t,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _decode(name: str, path: Path | str, framed: bool) -> dict:
    argv = [sys.executable, "-m", "gateway.cli", "adapters", "decode", name, str(path)]
    if framed:
        argv.append("--framed")
    out = subprocess.run([sys.executable, "-c", _RUNNER, *argv], capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


def _kinds(name: str) -> list[bool]:
    return [True, False] if hasattr(load_adapter(name), "decode_document") else [True]


@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """A framed and a bare 3 GiB file: a plausible start, then (sparse) zeros."""
    directory = tmp_path_factory.mktemp("huge")
    bare, framed = directory / "bare.xml", directory / "framed.bin"
    bare.write_bytes(b'<?xml version="1.0" encoding="UTF-8"?><Document>' + b" " * 4096)
    framed.write_bytes(b"")
    for path in (bare, framed):
        with open(path, "r+b") as f:
            f.truncate(HUGE)
    return {True: framed, False: bare}


@pytest.mark.slow
@pytest.mark.parametrize("name,framed", [(n, f) for n in ADAPTERS for f in _kinds(n)])
@pytest.mark.parametrize("source", ["/dev/zero", "huge file"])
def test_the_cli_refuses_endless_or_huge_input_at_once_in_bounded_memory(name, framed, source, huge):
    path = "/dev/zero" if source == "/dev/zero" else huge[framed]
    got = _decode(name, path, framed)
    assert got["rc"] not in (0, "timeout"), got
    lines = got["stderr"].strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in got["stderr"], got["stderr"][-2000:]
    assert got["maxrss_kb"] < RSS_LIMIT_KB, f"peak RSS {got['maxrss_kb']} KB"


@pytest.mark.slow
def test_a_bare_document_one_byte_over_the_bound_is_refused_with_the_bound_named(tmp_path):
    name = next(n for n in ADAPTERS if hasattr(load_adapter(n), "decode_document"))
    limit = max_document(load_adapter(name))
    path = tmp_path / "over.xml"
    path.write_bytes(b"<" + b" " * limit)
    got = _decode(name, path, framed=False)
    assert got["rc"] == 1 and str(limit) in got["stderr"], got


@pytest.mark.parametrize("name", ADAPTERS)
def test_every_codec_refuses_a_frame_or_document_beyond_its_bound(name):
    adapter = load_adapter(name)
    oversized = b"<" + b"a" * (adapter.max_frame + 1024)
    with pytest.raises(AdapterError):
        adapter.decode(oversized)
    document = getattr(adapter, "decode_document", None)
    if document is not None:
        with pytest.raises(AdapterError):
            document(b"<" + b"a" * (max_document(adapter) + 1))


class _Endless:
    """A stream that never ends: ``frame`` over and over, counting what was read."""

    def __init__(self, frame: bytes) -> None:
        self.frame, self.read_bytes = frame, 0

    def read(self, n: int) -> bytes:
        out = (self.frame * (n // len(self.frame) + 2))[:n]
        self.read_bytes += len(out)
        return out


@pytest.mark.parametrize("name", ADAPTERS)
def test_frames_of_an_endless_stream_come_one_at_a_time_without_reading_ahead(name):
    import itertools

    from adapters._framing import CHUNK, read_frames
    from adapters.base import AdapterError, BalanceQuery, Heartbeat

    adapter = load_adapter(name)
    # A small message the protocol carries: a line probe, or (for banks' front-ends, which have
    # none) a balance query.
    for message in (Heartbeat(seq_no="10500020261207000001", node="D00000"),
                    BalanceQuery(seq_no="10500020261207000001", account="6200001111222233")):
        try:
            frame = adapter.encode(message, sender="D00000", receiver="105000")
            break
        except AdapterError:
            continue
    stream = _Endless(frame)
    first = list(itertools.islice(read_frames(adapter, stream), 3))
    assert first == [frame] * 3
    assert stream.read_bytes <= CHUNK  # what was held is one chunk, not the stream
