"""What the centre-role tests share: the centre's codec (its head profile) and a reader of an
answer frame's head fields, in the order and with the values the frame carries."""

from __future__ import annotations

from adapters.bdc import BdcAdapter
from adapters.bdc.codec import CentreProfile
from tests.integration.harness import CENTRE

__all__ = ["UNIT", "centre_codec", "head"]

UNIT = "522400000000000"


def centre_codec() -> BdcAdapter:
    return BdcAdapter(echo=False, centres={CENTRE: CentreProfile(UNIT, "GZ20057304", "522400000000000000001")})


def head(frame: bytes) -> dict[str, str]:
    text = frame[20:].decode("gbk")
    return {chunk.split('"')[0]: chunk.split(">", 1)[1].split("<", 1)[0]
            for chunk in text.split("<head>")[1].split("</head>")[0].split('<field name="')[1:]
            if ">" in chunk and not chunk.split('"', 1)[1].startswith("/")}
