"""The adapter conformance suite: the shared contract of adapters/base.py, checked against
every adapter installed under the ``hpf_gateway.adapters`` entry-point group.

Each adapter's own tests (tests/unit/test_<name>.py) cover its protocol's details; this
suite is the contract on top: exact round trips of every neutral kind over the portable
message set (adapters/README.md), framing of any chunking, refusal of text the wire cannot
carry, and hostile input always refused with :class:`AdapterError` in bounded time and memory.

Hypothesis runs inside each test (``_check``) rather than as a ``@given`` test: pytest-twisted
wraps a parametrised ``@given`` test once per parameter and then fails.
"""

from __future__ import annotations

import datetime as dt
import itertools
import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from adapters import base
from adapters.base import AdapterError, decode_all
from tests.adapters.hostile import (
    TRICKY_VALUES,
    checked_decode,
    checked_feed,
    invalid_sequences,
    mutate_xml,
    split_xml,
    xml_attacks,
)
from tests.adapters.kit import Kit
from tests.adapters.portable import KIND_NAMES

ROUND_TRIP_EXAMPLES = 50
FUZZ_EXAMPLES = 100
_HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
           HealthCheck.large_base_example]

TEN_MIB = 10 * 1024 * 1024


def _check(strategy: st.SearchStrategy[Any], prop: Callable[[Any], None], *,
           examples: int = ROUND_TRIP_EXAMPLES) -> None:
    """Run ``prop`` over ``strategy`` with Hypothesis (see the module docstring for why here)."""

    @settings(max_examples=examples, deadline=None, suppress_health_check=_HEALTH)
    @given(strategy)
    def property_holds(value: Any) -> None:
        prop(value)

    property_holds()


def _round_trip(kit: Kit, message: base.Message) -> bytes:
    """Encode ``message``; it must come back unchanged through decode, decode_all and a framer."""
    frame = kit.encode(message)
    assert isinstance(frame, bytes)
    assert kit.framing.declared(frame) == len(frame) - kit.framing.header_len
    assert kit.adapter.decode(frame) == message
    assert decode_all(kit.adapter, frame) == [message]
    assert kit.adapter.framer().feed(frame) == [frame]
    return frame


def _frames(kit: Kit, kinds: tuple[str, ...] = KIND_NAMES, *, small: bool = True
            ) -> list[tuple[base.Message, bytes]]:
    extreme = kit.portable.minimal if small else kit.portable.maximal
    carried = [k for k in kinds if k in kit.portable.kinds]
    return [(m, kit.encode(m)) for m in (extreme(k) for k in carried)]


def _refused_unless_carried(kit: Kit, kind: str) -> bool:
    """True when ``kind`` is one the adapter carries; else checks encode refuses it."""
    if kind in kit.portable.kinds:
        return True
    for m in (kit.portable.minimal(kind), kit.portable.maximal(kind)):
        with pytest.raises(AdapterError):
            kit.encode(m)
    return False


# -- the contract --------------------------------------------------------------------------


def test_adapter_meets_the_contract(kit: Kit) -> None:
    """The registered class names itself, declares its frame limit, hands out independent
    framers, and refuses what is not a message with AdapterError."""
    a = kit.adapter
    assert isinstance(a, base.Adapter)
    assert type(a).name == kit.name
    assert isinstance(type(a).max_frame, int) and type(a).max_frame > 0
    f1, f2 = a.framer(), a.framer()
    assert isinstance(f1, base.Framer) and f1 is not f2
    frame = kit.encode(kit.portable.minimal("Instruction"))
    half = len(frame) // 2
    assert f1.feed(frame[:half]) == []
    assert f2.feed(frame) == [frame]          # f1's partial frame is not f2's business
    assert f1.feed(frame[half:]) == [frame]
    for not_a_message in (object(), "SignOn", base.Entry("6", "1", 1, dt.date(2025, 1, 1),
                                                          dt.time(0))):
        with pytest.raises(AdapterError):
            a.encode(not_a_message, sender="C52240", receiver="105000")
    for not_a_frame in (b"", b"\x00", frame[:-1], frame + b"\x00"):
        assert checked_decode(a, not_a_frame) is None


def test_check_encodes_for_an_adapter_without_a_check_of_its_own() -> None:
    """``base.check`` needs nothing beyond the required contract: without a ``check`` method
    the adapter's ``encode`` answers, refusals and all."""
    calls: list[tuple[base.Message, str, str]] = []

    class EncodeOnly:
        def encode(self, message: base.Message, *, sender: str, receiver: str = "") -> bytes:
            calls.append((message, sender, receiver))
            if message.seq_no == "2":
                raise AdapterError("seq_no: 2 cannot be carried")
            return b"frame"

    a = EncodeOnly()
    assert base.check(a, base.Heartbeat("1", "C52240"), sender="C52240", receiver="105000") is None
    with pytest.raises(AdapterError, match="2 cannot be carried"):
        base.check(a, base.Heartbeat("2", "C52240"), sender="C52240", receiver="105000")
    assert [(m.seq_no, s, r) for m, s, r in calls] == [("1", "C52240", "105000"), ("2", "C52240", "105000")]


# -- 1. round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_generated_messages_round_trip_exactly(kit: Kit, kind: str) -> None:
    """decode(encode(m)) == m for portable messages of every kind, and a framer gives back
    exactly the frame: Chinese text, markup characters, maximum lengths, amount extremes.
    A kind the adapter's profile says it does not carry must be refused at encode instead."""
    if not _refused_unless_carried(kit, kind):
        return
    _check(kit.portable.strategy(kind), lambda m: _round_trip(kit, m))


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_extreme_messages_round_trip_exactly(kit: Kit, kind: str) -> None:
    """The smallest (0.01, one-character fields, 0001-01-01) and the largest (every field at
    its maximum length, 99,999,999,999.99, 9999-12-31 23:59:59) portable messages of a kind."""
    if not _refused_unless_carried(kit, kind):
        return
    _round_trip(kit, kit.portable.minimal(kind))
    _round_trip(kit, kit.portable.maximal(kind))


# -- 2. framing ------------------------------------------------------------------------------


def test_stream_split_at_every_byte_boundary_yields_exactly_the_frames(kit: Kit) -> None:
    frames = [f for _, f in _frames(kit, ("SignOn", "Instruction", "Result", "Movement",
                                          "HeartbeatAnswer"))]
    stream = b"".join(frames)
    for cut in range(len(stream) + 1):
        framer = kit.adapter.framer()
        got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert got == frames, f"{kit.name}: split at byte {cut}"


def test_many_frames_in_one_chunk(kit: Kit) -> None:
    pairs = (_frames(kit) + _frames(kit, small=False)) * 10
    stream = b"".join(f for _, f in pairs)
    got = kit.adapter.framer().feed(stream)
    assert got == [f for _, f in pairs]
    assert [kit.adapter.decode(f) for f in got] == [m for m, _ in pairs]


def test_threads_decoding_at_once_each_get_every_message(kit: Kit) -> None:
    """The ledger checks bank frames on several threads, each starting cold (an XML adapter
    builds per-thread parsers and schemas on first use) while others decode.  Every thread
    must decode every frame exactly as one thread does.  With the ISO 20022 schemas
    imported through an lxml Resolver, about one run in three lost an import here."""
    pairs = _frames(kit, ("Result", "Movement", "Balance", "Receipt"))
    failures: list[str] = []
    busy = threading.Event()

    def decode_all_frames() -> None:
        framer = kit.adapter.framer()
        for message, frame in pairs:
            try:
                got = [kit.adapter.decode(f) for f in framer.feed(frame)]
            except Exception as e:  # noqa: BLE001 (collected: a thread must not die silently)
                failures.append(f"{type(message).__name__}: {e!r}"[:300])
                continue
            if got != [message]:
                failures.append(f"{type(message).__name__}: decoded differently")

    def background() -> None:
        while busy.is_set() and not failures:
            decode_all_frames()

    busy.set()
    runner = threading.Thread(target=background)
    runner.start()
    try:
        for _ in range(60):  # fresh threads, so each builds its per-thread state beside the runner
            cold = [threading.Thread(target=decode_all_frames) for _ in range(6)]
            for t in cold:
                t.start()
            for t in cold:
                t.join(timeout=30)
            if failures:
                break
    finally:
        busy.clear()
        runner.join(timeout=30)
    assert not failures, failures[:3]


def test_framer_fed_byte_by_byte_yields_each_frame_at_its_last_byte(kit: Kit) -> None:
    frames = [f for _, f in _frames(kit)]
    framer = kit.adapter.framer()
    ends = {sum(map(len, frames[:i + 1])) for i in range(len(frames))}
    got = []
    stream = b"".join(frames)
    for i in range(len(stream)):
        out = framer.feed(stream[i:i + 1])
        assert len(out) == (1 if i + 1 in ends else 0), f"{kit.name}: byte {i}"
        got += out
    assert got == frames


def test_random_chunking_yields_exactly_the_frames(kit: Kit) -> None:
    frames = [f for _, f in _frames(kit) + _frames(kit, ("Instruction", "Statement"), small=False)]
    stream = b"".join(frames)

    def prop(cuts: list[int]) -> None:
        framer = kit.adapter.framer()
        got: list[bytes] = []
        points = [0, *sorted(cuts), len(stream)]
        for a, b in itertools.pairwise(points):
            got += framer.feed(stream[a:b])
        assert got == frames

    _check(st.lists(st.integers(0, len(stream)), max_size=40), prop, examples=FUZZ_EXAMPLES)


# -- 3. text the wire cannot carry ------------------------------------------------------------


def test_uncarriable_characters_are_refused_at_encode(kit: Kit) -> None:
    """Every character the wire cannot carry (lone surrogates; what XML 1.0 cannot hold, for an
    XML body; what the declared encoding lacks, e.g. '😀' and '€' in GBK) is refused with
    AdapterError in every free-text field, never replaced."""
    assert kit.must_refuse
    carried = []
    for carrier in kit.portable.text_carriers():
        _round_trip(kit, carrier.build("张三&<李四>"))  # the field itself is carriable
        for c in kit.must_refuse:
            try:
                frame = kit.encode(carrier.build(f"张三{c}李"))
            except AdapterError:
                continue
            carried.append(f"{carrier.label} with {c!r}: {kit.adapter.decode(frame)!r}"[:200])
    assert not carried, f"{kit.name} encoded uncarriable text:\n" + "\n".join(carried)


def test_any_text_is_refused_or_carried_exactly(kit: Kit) -> None:
    """No text is ever silently replaced: encode refuses it, or it comes back unchanged."""
    p = kit.profile
    reserved = p.reserved_codes | p.reserved_texts | p.entry_text_reserved
    hostile_chars = st.sampled_from(kit.must_refuse + "😀€\u0e01\r\n\t\x7f\x85\u2028\ufeff|")
    texts = st.text(st.one_of(st.characters(), st.characters(codec="utf-8"), hostile_chars),
                    max_size=20).filter(lambda t: t not in reserved)

    def prop(case: tuple[Any, str]) -> None:
        carrier, text = case
        message = carrier.build(text)
        try:
            frame = kit.encode(message)
        except AdapterError:
            return
        assert kit.adapter.decode(frame) == message, f"{carrier.label}: {text!r} was altered"

    _check(st.tuples(st.sampled_from(kit.portable.text_carriers()), texts), prop,
           examples=FUZZ_EXAMPLES)


# -- 4. hostile input --------------------------------------------------------------------------


def test_random_bytes_are_refused_with_adapter_error(kit: Kit) -> None:
    def prop(data: bytes) -> None:
        frames, _ = checked_feed(kit.adapter.framer(), kit.adapter, [data])
        for frame in frames:
            checked_decode(kit.adapter, frame)
        checked_decode(kit.adapter, data)

    _check(st.binary(max_size=4096), prop, examples=FUZZ_EXAMPLES)


def test_random_bodies_in_valid_framing_are_refused_with_adapter_error(kit: Kit) -> None:
    """Random bytes behind a correct header, alone and after the adapter's own XML prolog,
    reach the body parser and are refused there."""
    body = kit.framing.body(kit.encode(kit.portable.minimal("Instruction")))
    parts = split_xml(body)
    prolog = parts.prolog + parts.start if parts else b""

    def prop(case: tuple[bool, bytes]) -> None:
        with_prolog, data = case
        frame = kit.framing.wrap((prolog if with_prolog else b"") + data)
        frames, refused = checked_feed(kit.adapter.framer(), kit.adapter, [frame])
        # A delimited framer still waiting for a document's end holds it: no frame yet.
        unended = getattr(kit.framing, "delimited", False) and frames == []
        assert refused or frames == [frame] or unended
        assert checked_decode(kit.adapter, frame) is None

    _check(st.tuples(st.booleans(), st.binary(min_size=1, max_size=2048)), prop,
           examples=FUZZ_EXAMPLES)


def test_mutated_frames_are_refused_or_decoded_never_crash(kit: Kit) -> None:
    """Valid bodies with bytes flipped, inserted or deleted, framed with a correct length:
    decode gives a message or AdapterError, nothing else."""
    bodies = [kit.framing.body(f) for _, f in _frames(kit) + _frames(kit, small=False)]
    edits = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete"]),
                               st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=4)),
                     min_size=1, max_size=6)

    def prop(case: tuple[bytes, list[tuple[str, float, bytes]]]) -> None:
        body, ops = case
        b = bytearray(body)
        for op, where, data in ops:
            i = int(where * len(b))
            if op == "flip":
                b[i:i + len(data)] = data
            elif op == "insert":
                b[i:i] = data
            else:
                del b[i:i + len(data)]
        if b:
            checked_decode(kit.adapter, kit.framing.wrap(bytes(b)))

    _check(st.tuples(st.sampled_from(bodies), edits), prop, examples=FUZZ_EXAMPLES * 2)


def test_edited_xml_trees_are_refused_or_decoded_never_crash(kit: Kit) -> None:
    """Valid XML bodies with fields set to values that trip naive parsers (Unicode digits,
    24:00, 40-digit amounts, impossible dates, 5,000 characters, ...), elements dropped,
    duplicated or renamed, attributes added: decode gives a message or AdapterError."""
    if not kit.xml or kit.wire_encoding is None:
        pytest.skip(f"{kit.name} bodies are not XML")
    encoding = kit.wire_encoding
    bodies = [kit.framing.body(f) for _, f in _frames(kit) + _frames(kit, small=False)]
    ops = st.lists(st.tuples(st.sampled_from(["text", "text", "text", "drop", "dup", "rename",
                                              "attr"]),
                             st.floats(0, 1, exclude_max=True),
                             st.one_of(st.sampled_from(TRICKY_VALUES), st.text(max_size=40))),
                   min_size=1, max_size=4)

    def prop(case: tuple[bytes, list[tuple[str, float, str]]]) -> None:
        edited = mutate_xml(case[0], encoding, case[1])
        assume(edited is not None)
        assert edited is not None
        checked_decode(kit.adapter, kit.framing.wrap(edited))

    _check(st.tuples(st.sampled_from(bodies), ops), prop, examples=FUZZ_EXAMPLES * 2)


def test_every_truncation_of_a_valid_frame_is_refused(kit: Kit) -> None:
    """A cut frame yields no frame from a framer and is refused by decode; a cut body in a
    correct length is refused too (or, if only insignificant trailing bytes were cut, decodes
    to the same message)."""
    for message, frame in _frames(kit, ("SignOn", "Instruction", "Result", "Movement")):
        for cut in range(len(frame)):
            frames, _ = checked_feed(kit.adapter.framer(), kit.adapter, [frame[:cut]])
            assert frames == [], f"{kit.name}: a frame from {cut} of {len(frame)} bytes"
            assert checked_decode(kit.adapter, frame[:cut]) is None, f"{kit.name}: cut at {cut}"
        body = kit.framing.body(frame)
        for cut in range(1, len(body)):
            got = checked_decode(kit.adapter, kit.framing.wrap(body[:cut]))
            assert got is None or got == message, f"{kit.name}: body cut at {cut} decoded {got!r}"


def _lies(kit: Kit, size: int, follower: int) -> Iterator[tuple[str, int]]:
    yield "zero", 0
    for k in (1, size // 2, size - 1):
        yield f"short by {k}", size - k
    for k in (1, 100, follower):
        if size + k <= kit.framing.max_declarable:
            yield f"long by {k}", size + k


def test_a_length_header_that_lies_is_refused(kit: Kit) -> None:
    """A header stating fewer or more bytes than the body has: decode refuses the frame, and in
    a stream the lying frame never decodes (whatever the framer makes of what follows)."""
    if getattr(kit.framing, "delimited", False):
        pytest.skip(f"{kit.name}: no length header to lie (one document per frame)")
    instruction = kit.portable.minimal("Instruction")
    body = kit.framing.body(kit.encode(instruction))
    heartbeat = kit.portable.minimal("Heartbeat")
    follower = kit.encode(heartbeat)
    for lie, declared in _lies(kit, len(body), len(follower)):
        lying = kit.framing.wrap(body, declared)
        assert checked_decode(kit.adapter, lying) is None, f"{kit.name}: length {lie} decoded"
        stream = lying + follower + follower
        for chunks in ([stream], [stream[i:i + 1] for i in range(len(stream))]):
            frames, _ = checked_feed(kit.adapter.framer(), kit.adapter, chunks)
            for frame in frames:
                got = checked_decode(kit.adapter, frame)
                assert got is None or (frame == follower and got == heartbeat), \
                    f"{kit.name}: length {lie}: a frame of the lying stream decoded to {got!r}"


def test_a_huge_declared_length_is_refused_before_buffering(kit: Kit) -> None:
    """A header declaring 10 MiB (or the most it can declare): beyond max_frame the framer
    refuses once the header is in, having buffered nothing; within it (a header that cannot
    declare more) the framer never holds more than one frame while 10 MiB stream in."""
    f = kit.framing
    delimited = getattr(f, "delimited", False)
    declared = TEN_MIB if delimited else min(TEN_MIB, f.max_declarable)
    header = b"" if delimited else f.wrap(b"", declared)
    chunk = b"<" + b"A" * (64 * 1024 - 1)
    framer = kit.adapter.framer()
    largest = 0
    refused_at: int | None = None
    fed = 0
    tracemalloc.start()
    try:
        for data in [header, *([chunk] * (TEN_MIB // len(chunk)))]:
            try:
                frames = framer.feed(data)
            except AdapterError:
                refused_at = fed + len(data)
                break
            fed += len(data)
            for frame in frames:
                largest = max(largest, len(frame))
                assert checked_decode(kit.adapter, frame) is None
                del frame
            del frames
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if delimited:  # no header: an unterminated document is refused once past max_frame
        limit = type(kit.adapter).max_frame
        assert refused_at is not None and refused_at <= limit + len(chunk), \
            f"{kit.name}: an unterminated stream refused only at {refused_at}"
        assert largest == 0 and peak < 3 * limit + 1024 * 1024, f"{kit.name}: {peak} bytes traced"
    elif declared > type(kit.adapter).max_frame:
        assert refused_at is not None and refused_at <= len(header) + len(chunk), \
            f"{kit.name}: declared {declared} > max_frame, refused only at {refused_at}"
        assert peak < 1024 * 1024, f"{kit.name}: {peak} bytes traced before refusing"
    else:
        limit = f.header_len + type(kit.adapter).max_frame
        assert largest <= limit
        assert peak < 4 * limit + 1024 * 1024, f"{kit.name}: {peak} bytes traced"


ATTACKS = ("internal_dtd", "external_dtd", "external_file_entity", "external_network_entity",
           "parameter_entity", "billion_laughs", "quadratic_blowup", "undeclared_entity",
           "xinclude", "processing_instruction", "deep_nesting_inside_root", "deep_nesting_alone",
           "utf7_declaration", "utf16_body")


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """A loopback port that no XML attack may make the adapter contact."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    yield s
    s.close()


@pytest.mark.parametrize("attack", ATTACKS)
def test_xml_attack_is_refused(kit: Kit, attack: str, listener: socket.socket,
                               tmp_path: Any) -> None:
    """DTDs, entities (external, parameter, billion laughs), XInclude, processing instructions,
    10,000-deep nesting and smuggled encodings, each inside the adapter's own valid body and
    framing: refused with AdapterError in bounded time and memory, with no file or network
    access."""
    body = kit.framing.body(kit.encode(kit.portable.minimal("Instruction")))
    parts = split_xml(body)
    if parts is None:
        pytest.skip(f"{kit.name} bodies are not XML")
    secret = tmp_path / "secret.txt"
    secret.write_text("CONFORMANCE-SECRET")
    hostile = xml_attacks(parts, secret_path=str(secret), port=listener.getsockname()[1])[attack]
    frame = kit.framing.wrap(hostile)
    frames, refused = checked_feed(kit.adapter.framer(), kit.adapter, [frame])
    assert refused or frames == [frame]
    assert checked_decode(kit.adapter, frame) is None, f"{kit.name}: {attack} was decoded"
    with pytest.raises(BlockingIOError):
        listener.accept()


def test_bytes_invalid_in_the_declared_encoding_are_refused(kit: Kit) -> None:
    """Bytes that are not text in the body's declared encoding are refused, and relabelling the
    encoding never makes the same bytes decode to a different message."""
    if kit.wire_encoding is None:
        pytest.skip(f"{kit.name}: no wire encoding declared or profiled")
    marker = "QQQQ张三"
    # The first free-text field of an Instruction the adapter carries (debit_name but where
    # the profile narrows it away).
    carrier = next(t for t in kit.portable.text_carriers() if t.label.startswith("Instruction."))
    message = carrier.build(marker)
    body = kit.framing.body(kit.encode(message))
    encoded = marker.encode(kit.wire_encoding)
    assert encoded in body
    sequences = invalid_sequences(kit.wire_encoding)
    assert sequences
    for seq in sequences:
        bad = body.replace(encoded, b"QQ" + seq + b"QQ", 1)
        assert checked_decode(kit.adapter, kit.framing.wrap(bad)) is None, \
            f"{kit.name}: {seq!r} decoded in {kit.wire_encoding}"
    parts = split_xml(body)
    if parts is None:
        return
    for label in ("UTF-8", "GBK", "ISO-8859-1", "UTF-16"):
        relabelled = f'<?xml version="1.0" encoding="{label}"?>'.encode() + body[len(parts.prolog):]
        got = checked_decode(kit.adapter, kit.framing.wrap(relabelled))
        assert got is None or got == message, f"{kit.name}: labelled {label}, decoded {got!r}"


# -- identifiers legacy formats read as "nothing" ----------------------------------------------

KNOWN_BUGS: dict[tuple[str, str], str] = {}
"""Adapter bugs this suite found and reported, by (test, adapter): xfail(strict=True), so the
mark must go once the adapter is fixed."""


@pytest.fixture(autouse=True)
def _known_bug(request: pytest.FixtureRequest) -> None:
    name = getattr(request.node, "originalname", request.node.name)
    adapter = request.node.callspec.params.get("adapter_name") if hasattr(request.node, "callspec") \
        else None
    reason = KNOWN_BUGS.get((name, adapter))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def test_sentinel_identifiers_round_trip(kit: Kit) -> None:
    """'null', 'None', '-', '0' and the like are valid serials and accounts, in every identifier
    field, and come back unchanged (not read as an empty value).  Where the profile reserves
    the value (a bdc file column), encode may refuse it instead."""
    failures = []
    for label, message, may_refuse in kit.portable.sentinel_cases():
        try:
            frame = kit.encode(message)
        except AdapterError as e:
            if not may_refuse:
                failures.append(f"{label}: refused at encode: {e}")
            continue
        try:
            got: Any = kit.adapter.decode(frame)
        except AdapterError as e:
            got = e
        if got != message:
            failures.append(f"{label}: {got!r}"[:240])
    assert not failures, f"{kit.name}:\n" + "\n".join(failures)
