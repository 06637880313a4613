"""The heads and lines the centre's public code fills, shared by the bdc interop tests and the
``adapters decode`` tests (the same frames, read through the command)."""

from __future__ import annotations

import datetime as dt

from tests.interop.bdc import centre_side as java

__all__ = ["NOW", "CENTRE", "BANK", "BDC", "SEQ", "NOTICE_HEAD", "centre_head", "answer_head", "line"]

NOW = dt.datetime(2017, 11, 30, 10, 30, 16)
CENTRE, BANK, BDC = "C52240", "104000", "D00000"
SEQ = "52240171130000000007"


def centre_head(tx_code: str, seq: str = SEQ, receive: str = BANK) -> list[java.Field]:
    """CenterHeadIn as the centre fills it."""
    return list(zip(java.CENTER_HEAD_IN, ("20171130", "103015", seq, "522400000000000", CENTRE,
                                          tx_code, receive, "GZ20057304", "522400000000000000001")))


def answer_head(tx_code: str, status: str = "0", code: str = "00000", text: str = "success",
                **values: str | None) -> list[java.Field]:
    """CenterHeadOut; by default as BankImpl's simulation fills it (status fields only)."""
    filled: dict[str, str | None] = {"TxStatus": status, "RtnCode": code, "RtnMessage": text,
                                     "TxCode": tx_code, **values}
    return [(name, filled.get(name)) for name in java.CENTER_HEAD_OUT]


def line(no: str = "1", amt: str = "-2500", curr: tuple[str, str] = ("156", "1"),
         bank_no: str | None = None, extra: tuple[str, ...] = ()) -> str:
    """One notice line as BankImpl fills AccChangeNoticeFile (nulls where it sets nothing)."""
    return java.notice_line((no, "6200001111222233", SEQ, None, "6200004444555566", "张三",
                             java.amount(amt), "20171130", "103015", None, None, "021711300000042",
                             curr[0], curr[1], java.amount("1000000"), None, None, None, bank_no,
                             "部分提取", None, "1512009015", "56") + extra)


NOTICE_HEAD = list(zip(java.SYS_HEAD_OUT, ("20171130", "103016", "D0000020171130004711", BDC,
                                           "SBDC100", CENTRE, "20171130", "103016",
                                           "D0000020171130004711")))
