"""``hpf-gateway adapters decode NAME FILE`` reads every message kind of every installed adapter
(issue 22, "Done when") from restated public samples: the fixtures in tests/data/<adapter>/
(each README there names its sources) and, for bdc, frames built as the public centre-side code
builds them (tests/interop/bdc/centre_side.py).  What a protocol has no neutral message for is
refused in one line, naming why."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from adapters.base import iter_adapter_names
from gateway.cli import cmd_adapters_decode
from tests.interop.bdc import centre_side as java
from tests.interop.bdc.heads import (
    BANK, BDC, CENTRE, NOTICE_HEAD, SEQ, answer_head, centre_head, line,
)

DATA = Path(__file__).resolve().parents[1] / "data"

# Every file of tests/data/<adapter>/ and the neutral kinds it reads as; None: refused.
FIXTURES: dict[str, dict[str, list[str] | None]] = {
    "bocb2e": {
        "b2e0001-rq.xml": ["SignOn"], "b2e0001-rs.xml": ["SignOnAnswer"],
        "b2e0009-rq.xml": ["Instruction"], "b2e0009-rs.xml": ["Receipt"],
        "b2e0007-rq.xml": ["StatusQuery"], "b2e0007-rs.xml": ["Result"],
        "b2e0005-rq.xml": ["BalanceQuery"], "b2e0005-rs.xml": ["Balance"],
        "b2e0035-rs.xml": ["Statement"],
        "b2eerror-rs.xml": None,             # B107: not signed on, an answer with no message
    },
    "icbc": {
        "PAYENT-rq.xml": ["Instruction"],
        "QPAYENT-rq.xml": ["StatusQuery"], "QPAYENT-rs.xml": ["Receipt"],
        "QPAYENT-ok-rs.xml": ["Result"],
        "QACCBAL-rq.xml": ["BalanceQuery"], "QACCBAL-rs.xml": ["Balance"],
        "QHISD-rs.xml": ["Statement"],
    },
    "ccb": {
        "6W8010-rq.xml": ["Instruction"], "6W8010-rs.xml": ["Receipt"],
        "6W1503-rq.xml": ["StatusQuery"], "6W1503-rs.xml": ["Result"],
        "6W1503-notfound-rs.xml": ["NotFound"],
        "6W0100-rq.xml": ["BalanceQuery"], "6W0100-rs.xml": ["Balance"],
        "6WY101-rs.xml": ["Statement"], "6WY101-norows-rs.xml": ["Statement"],
        "6WY101-exchange.xml": ["Statement"],
        "6WY101-rq.xml": None,               # a details request has no neutral message
    },
}

# What each adapter's protocol carries inbound and outbound (docs/protocols/*.md): the
# fixtures of an adapter must together read as every one of these.
KINDS = {
    "bocb2e": {"SignOn", "SignOnAnswer", "Instruction", "Receipt", "StatusQuery", "Result",
               "BalanceQuery", "Balance", "Statement"},
    "icbc": {"Instruction", "Receipt", "StatusQuery", "Result", "BalanceQuery", "Balance",
             "Statement"},
    "ccb": {"Instruction", "Receipt", "StatusQuery", "Result", "NotFound", "BalanceQuery",
            "Balance", "Statement"},
    "bdc": {"SignOn", "Heartbeat", "Instruction", "StatusQuery", "BalanceQuery", "Result",
            "Balance", "Movement"},
    "iso20022": {"Statement", "Balance", "Movement", "Result"},
}

# ISO 20022 documents as banks send them (tests/data/iso20022/real/PROVENANCE.md names each).
# No public pain.002 in tests/data is read yet (issue 22 item 5 is on it): the Result kind is
# checked on a pain.002 frame the adapter writes for a peer on its framed link.
ISO = {"camt052_001_02.xml": {"Statement", "Balance"},
       "camt053_001_02.xml": {"Statement", "Balance"},
       "real/genkgo-camt__camt054.v2.xml": {"Movement"}}


def _bdc_frames() -> dict[str, tuple[bytes, list[str]]]:
    """BDC frames as the public centre-side code writes them, and what each reads as."""
    transfer = list(zip(java.SINGLE_TRANSFER_IN, (
        "2", "18", "6200001111222233", "示例中心归集户", "2", "6200004444555566", "张三", "2", "1",
        "中国银行", "104100000017", "2500.00", None, "081711300000042", "资金划转")))
    probe = [(n, v if n != "TxCode" else "SYS600") for n, v in NOTICE_HEAD]
    return {
        "BDC001": (java.frame(CENTRE, java.jaxb_xml(centre_head("BDC001", "52240171130999999999")),
                              flag=b"1"), ["SignOn"]),
        "SYS600": (java.frame(BDC, java.jaxb_xml(probe), flag=b"1"), ["Heartbeat"]),
        "BDC109": (java.frame(CENTRE, java.jaxb_xml(centre_head("BDC109"), transfer)), ["Instruction"]),
        "BDC109-answer": (java.frame(BANK, java.jaxb_xml(
            answer_head("BDC109", ReceiveDate="20171130", ReceiveTime="103016"),
            [("HostStatus", "0"), ("HostSeqNo", "H000123456")])), ["Result"]),
        "BDC110": (java.frame(CENTRE, java.jaxb_xml(centre_head("BDC110", "52240171130000000008"),
                                                    list(zip(java.RESULT_QUERY_IN, ("20171130", SEQ))))),
                   ["StatusQuery"]),
        "BDC123": (java.frame(CENTRE, java.jaxb_xml(
            centre_head("BDC123", "52240171130000000009"),
            list(zip(java.BALANCE_QUERY_IN, ("1", "156", "6200001111222233", "1"))))), ["BalanceQuery"]),
        "BDC123-answer": (java.frame(BANK, java.jaxb_xml(
            answer_head("BDC123", ReceiveDate="20171130", ReceiveTime="103016"),
            list(zip(java.BALANCE_QUERY_OUT, ("6200001111222233", "示例中心归集户", "1000000",
                                              "999999.5", "0", "正常"))))), ["Balance"]),
        "SBDC100": (java.frame(BDC, java.simulator_notice(NOTICE_HEAD, "BDC_BAL_NTF_1512009016000.act",
                                                          java.data(line(no=SEQ)))), ["Movement"]),
    }


def _decode(name: str, path: Path, capsys: pytest.CaptureFixture[str], *, framed: bool = False
            ) -> tuple[int, list[str], str]:
    rc = cmd_adapters_decode(argparse.Namespace(name=name, file=str(path), framed=framed))
    out, err = capsys.readouterr()
    return rc, [json.loads(row)["kind"] for row in out.splitlines()], err


def test_every_installed_adapter_is_one_of_the_products_and_has_cases_here() -> None:
    assert sorted(iter_adapter_names()) == ["bdc", "bocb2e", "ccb", "icbc", "iso20022"]
    assert set(KINDS) == set(iter_adapter_names())


@pytest.mark.parametrize(("name", "file"), [(n, f) for n, files in FIXTURES.items() for f in files])
def test_each_fixture_decodes_to_its_kinds_or_is_refused_in_one_line(
        name: str, file: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, kinds, err = _decode(name, DATA / name / file, capsys)
    expected = FIXTURES[name][file]
    if expected is None:
        assert rc == 1 and kinds == [] and len(err.strip().splitlines()) == 1, err
    else:
        assert (rc, kinds) == (0, expected), err


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_file_of_an_adapters_test_data_is_listed_and_together_they_read_every_kind(
        name: str) -> None:
    on_disk = {p.name for p in (DATA / name).iterdir() if p.name != "README.md"}
    assert on_disk == set(FIXTURES[name])
    read = {k for kinds in FIXTURES[name].values() if kinds for k in kinds}
    assert read == KINDS[name]


@pytest.mark.parametrize("file", sorted(ISO))
def test_iso20022_documents_as_banks_send_them_decode(file: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rc, kinds, err = _decode("iso20022", DATA / "iso20022" / file, capsys)
    assert rc == 0 and set(kinds) == ISO[file], err


def test_iso20022_status_report_frames_decode_and_the_documents_cover_its_kinds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    from adapters.base import Result, load_adapter

    adapter = load_adapter("iso20022")
    result = Result("52240171130000000010", SEQ, SEQ, True, "H000123456", "B0001")
    frame = adapter.encode(result, sender="104000", receiver="D00000")
    failed = adapter.encode(dataclasses.replace(result, seq_no="52240171130000000011",
                                                succeeded=False, host_seq_no="", code="AM04"),
                            sender="104000", receiver="D00000")
    path = tmp_path / "pain002.bin"
    path.write_bytes(frame + failed)
    assert _decode("iso20022", path, capsys, framed=True)[:2] == (0, ["Result", "Result"])
    assert set().union(*ISO.values()) | {"Result"} == KINDS["iso20022"]


def test_bdc_frames_as_the_centre_writes_them_decode_framed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = _bdc_frames()
    for label, (frame, expected) in frames.items():
        path = tmp_path / f"{label}.bin"
        path.write_bytes(frame)
        rc, kinds, err = _decode("bdc", path, capsys, framed=True)
        assert (rc, kinds) == (0, expected), (label, err)
    assert {k for _, kinds in frames.values() for k in kinds} == KINDS["bdc"]
    # One file holding several frames, as captured from a link, decodes frame by frame.
    both = tmp_path / "capture.bin"
    both.write_bytes(frames["BDC109"][0] + frames["BDC109-answer"][0])
    assert _decode("bdc", both, capsys, framed=True)[:2] == (0, ["Instruction", "Result"])
