"""Every adapter's framer and decoder against hostile bytes, with bounded Hypothesis budgets.

The same check as the atheris harness ``tests/fuzz/fuzz_adapters.py`` (run that
one by hand for long, coverage-guided runs): only ``AdapterError`` may come
out, in whatever chunks the bytes arrive.  Per adapter: 200 arbitrary byte
strings, and 300 real frames mutated (bytes flipped, cut, spliced, hostile XML
inserted: DTDs, entities, other encodings, lying lengths).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_adapters import ADAPTERS, check, seeds

SEEDS = seeds()
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HOSTILE = [
    b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY e SYSTEM "file:///etc/passwd">]><message>&e;</message>',
    b'<!DOCTYPE lol [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    b'<?xml version="1.0" encoding="UTF-7"?>', b'<?xml version="1.0" encoding="EBCDIC-CP-US"?>',
    b"\x00" * 8, b"\xff" * 8, b"]]>", b"<![CDATA[", b"&#0;", b"&#x110000;", b"\xef\xbb\xbf", b"\x81\x30\x81\x30",
    b"999999", b"\x7f\xff\xff\xff", b"<" * 200, b"<a>" * 300,
]


def test_every_adapter_has_seed_frames_that_decode() -> None:
    for name in ADAPTERS:
        assert len(SEEDS[name]) >= 10, name
        assert all(check(name, frame, []) == 1 for frame in SEEDS[name]), name


@pytest.mark.parametrize("adapter_name", ADAPTERS)
def test_arbitrary_bytes_give_frames_or_an_adapter_error(adapter_name: str) -> None:
    # An inner @given: pytest-twisted and a parametrized @given test do not mix.
    @settings(FUZZ, max_examples=200)
    @given(data=st.binary(max_size=4096), cuts=st.lists(st.integers(0, 4096), max_size=8))
    def run(data: bytes, cuts: list[int]) -> None:
        check(adapter_name, data, cuts)

    run()


@st.composite
def mutated(draw: st.DrawFn, adapter_name: str) -> tuple[bytes, list[int]]:
    frame = bytearray(draw(st.sampled_from(SEEDS[adapter_name])))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "splice", "repeat"]))
        at = draw(st.integers(0, max(len(frame) - 1, 0)))
        if how == "flip" and frame:
            frame[at] = draw(st.integers(0, 255))
        elif how == "cut":
            del frame[at:at + draw(st.integers(1, 64))]
        elif how == "insert":
            frame[at:at] = draw(st.sampled_from(HOSTILE))
        elif how == "splice":
            other = draw(st.sampled_from(SEEDS[adapter_name]))
            frame[at:] = other[draw(st.integers(0, len(other) - 1)):]
        else:
            frame += bytes(frame)
    cuts = draw(st.lists(st.integers(0, len(frame)), max_size=6))
    return bytes(frame), cuts


@pytest.mark.parametrize("adapter_name", ADAPTERS)
def test_mutated_real_frames_give_messages_or_an_adapter_error(adapter_name: str) -> None:
    @settings(FUZZ, max_examples=300)
    @given(mutated(adapter_name))
    def run(case: tuple[bytes, list[int]]) -> None:
        check(adapter_name, *case)

    run()
