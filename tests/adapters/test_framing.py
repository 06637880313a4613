"""The conformance kit's own framing inference (tests/adapters/framing.py), on headers of each
form it knows.  The shipped adapters exercise only some of them (bdc and iso20022: binary
big-endian lengths; the banks' front-ends: no header), so the ASCII-decimal and little-endian
forms, and a header too narrow to declare 10 MiB, are checked here on frames made for the
purpose: the kit must still find them for the next protocol that uses one."""

from __future__ import annotations

import pytest

from tests.adapters.framing import FramingUnknown, LengthField, infer_length_field

BODIES = (b"<a/>", b"<message>" + b"x" * 300 + b"</message>", "<b>中</b>".encode("gbk"))


def _frames(make_header) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [make_header(len(body)) + body for body in BODIES]


@pytest.mark.parametrize(("make_header", "expected"), [
    # six ASCII digits, then the body (a decimal length field, as many bank hosts use)
    (lambda n: f"{n:06d}".encode(), (0, 6, "dec", 6)),
    # a node and a flag before an eight-digit decimal length
    (lambda n: b"105000" + b"1" + f"{n:08d}".encode(), (7, 8, "dec", 15)),
    # bdc's layout: node, flag, nine padding bytes, four bytes big-endian; the zero padding
    # before them makes the widest field that explains every sample eight bytes wide
    (lambda n: b"C52240" + b"0" + bytes(9) + n.to_bytes(4, "big"), (12, 8, "be", 20)),
    # two bytes little-endian after a one-byte type
    (lambda n: b"\x07" + n.to_bytes(2, "little"), (1, 2, "le", 3)),
])
def test_the_length_field_is_found_and_rebuilds_every_sample(make_header, expected) -> None:  # type: ignore[no-untyped-def]
    samples = _frames(make_header)
    field = infer_length_field(samples)
    assert (field.offset, field.width, field.fmt, field.header_len) == expected
    assert all(field.wrap(field.body(s)) == s for s in samples)
    assert field.declared(field.wrap(b"abc", 2)) == 2


def test_a_six_digit_header_cannot_declare_ten_mebibytes() -> None:
    field = infer_length_field(_frames(lambda n: f"{n:06d}".encode()))
    assert field.max_declarable == 999_999
    with pytest.raises(ValueError):
        field.encode_length(10 * 1024 * 1024)
    assert field.declared(b"00x123<a/>") is None


def test_frames_no_length_field_explains_are_refused() -> None:
    with pytest.raises(FramingUnknown):
        infer_length_field([b"<a/>", b"<bb/>"])                  # no header at all
    with pytest.raises(FramingUnknown):
        infer_length_field([b"000099<a/>", b"000098<bb/>"])      # a length that lies
    with pytest.raises(FramingUnknown):
        infer_length_field([b"000004<a/>", b"000004<a/>"])       # one length only
    with pytest.raises(ValueError):
        LengthField(b"0000", 2, 4, "dec")                        # field beyond the template
