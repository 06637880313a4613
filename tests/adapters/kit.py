"""What the conformance suite derives about one installed adapter: its :class:`Kit`.

The kit bundles the adapter with its profile (tests/adapters/profiles.py), its portable
message strategies, the length field inferred from its own frames, whether its body is XML,
its wire encoding and the characters its encode must refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from adapters import base
from adapters.base import load_adapter
from tests.adapters.framing import FramingUnknown, LengthField, infer_length_field
from tests.adapters.hostile import split_xml
from tests.adapters.portable import Portable
from tests.adapters.profiles import Profile, profile_for

GATEWAY_NODE = "C52240"
BANK_NODE = "105000"

# Characters no text encoding can carry: encode must refuse them in every adapter.
UNENCODABLE = "\ud800\udfff"
# Characters XML 1.0 cannot carry at all, not even as character references.
NOT_XML = "\x00\x01\x08\x0b\x0c\x1b\x1f\ufffe\uffff"
# Characters outside many legacy charsets (GBK among them): refused where the declared wire
# encoding lacks them, carried exactly where it has them.
PROBES = "😀\u20ac\u0e01\U00020000\u00a0\u2603\u0301\u00ff\u0152\u20a9\u00a5\u30fb"


@dataclass(frozen=True, repr=False)
class Kit:
    """One installed adapter and everything the suite derived about it."""

    name: str
    adapter: Any
    profile: Profile
    portable: Portable
    framing: LengthField
    xml: bool
    wire_encoding: str | None
    must_refuse: str

    def __repr__(self) -> str:  # keeps assertion messages short
        return f"Kit({self.name})"

    def nodes(self, message: base.Message) -> tuple[str, str]:
        """(sender, receiver) of ``message``: the gateway sends outbound kinds, the bank the rest."""
        if isinstance(message, base.OUTBOUND):
            return GATEWAY_NODE, BANK_NODE
        return BANK_NODE, GATEWAY_NODE

    def encode(self, message: base.Message) -> bytes:
        """``adapter.encode``, and ``adapters.base.check`` must give the same answer: every
        test that encodes holds the adapter's cheaper check to its encoder."""
        sender, receiver = self.nodes(message)
        try:
            frame = self.adapter.encode(message, sender=sender, receiver=receiver)
        except base.AdapterError as refused:
            try:
                base.check(self.adapter, message, sender=sender, receiver=receiver)
            except base.AdapterError as checked:
                assert str(checked) == str(refused), f"check and encode disagree on {message!r}"
            else:  # check may leave the frame-size limit out, and nothing else
                assert "exceeds" in str(refused) and "frame limit" in str(refused), \
                    f"check accepted what encode refused ({refused}): {message!r}"
            raise
        base.check(self.adapter, message, sender=sender, receiver=receiver)
        return frame


def _wire_encoding(body: bytes, profile: Profile) -> tuple[bool, str | None]:
    """(the body is XML, its text encoding): the XML declaration's, UTF-8 for XML without one
    (as XML says), else the profile's."""
    parts = split_xml(body)
    if parts is None:
        return False, profile.wire_encoding
    return True, parts.declared_encoding or profile.wire_encoding or "utf-8"


def build_kit(name: str) -> Kit:
    """Load adapter ``name`` and derive its :class:`Kit`; ``pytest.UsageError`` if its framing
    cannot be inferred and its profile names none."""
    adapter = load_adapter(name)
    profile = profile_for(name, adapter)
    portable = Portable(profile)
    base_instruction = portable.minimal("Instruction")
    assert isinstance(base_instruction, base.Instruction)
    samples = [adapter.encode(_with_memo(base_instruction, memo), sender=GATEWAY_NODE,
                              receiver=BANK_NODE)
               for memo in ("", "备注" * 35, "备注" * 70)]
    framing = profile.framing
    if framing is None:
        try:
            framing = infer_length_field(samples)
        except FramingUnknown as e:
            raise pytest.UsageError(f"adapter {name}: {e}") from None
    xml, encoding = _wire_encoding(framing.body(samples[0]), profile)
    refuse = UNENCODABLE + profile.must_refuse
    if xml:
        refuse += NOT_XML
    if encoding is not None:
        refuse += "".join(c for c in PROBES if not _encodable(c, encoding))
    return Kit(name, adapter, profile, portable, framing, xml, encoding,
               "".join(dict.fromkeys(refuse)))


def _with_memo(m: base.Instruction, memo: str) -> base.Instruction:
    return replace(m, memo=memo)


def _encodable(c: str, encoding: str) -> bool:
    try:
        c.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True
