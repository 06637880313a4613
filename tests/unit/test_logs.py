"""Logs are JSON facts with fields, and never carry full account numbers."""

import io
import json

from twisted.logger import Logger, LogPublisher

from gateway.logs import StructlogObserver


def _capture():
    out = io.StringIO()
    publisher = LogPublisher(StructlogObserver(out, console=False))
    return out, Logger(namespace="test", observer=publisher)


def test_named_events_become_json_with_their_fields():
    out, log = _capture()
    log.info("instruction.sent bank={bank}", bank="B001", instruction_id="I1")
    line = json.loads(out.getvalue())
    assert line["event"] == "instruction.sent" and line["bank"] == "B001" and line["instruction_id"] == "I1"
    assert line["level"] == "info"


def test_account_numbers_are_masked_to_the_last_four_digits():
    out, log = _capture()
    log.warn("centre.foreign_account", debit_account="6200001111222233", account="6222002222333344")
    line = json.loads(out.getvalue())
    assert line["debit_account"] == "************2233" and line["account"] == "************3344"
    assert "6200001111222233" not in out.getvalue()


def test_long_numbers_in_an_alerts_free_text_are_masked_and_words_are_kept():
    """Found by the demo log scan: a ledger alert's summary named a movement's account in full."""
    out, log = _capture()
    log.warn("ledger.alert", subject="6217003333444455",
             summary="movement B003:6217003333444455:H958284520008 for instruction C52240/D9-00000005 differs")
    line = json.loads(out.getvalue())
    assert "6217003333444455" not in out.getvalue()
    assert line["subject"] == "************4455"
    assert line["summary"] == ("movement B003:************4455:H958284520008 for instruction "
                               "C52240/D9-****0005 differs")


def test_sentences_from_other_libraries_are_rendered_as_text():
    out, log = _capture()
    log.info("Starting factory {factory!r}", factory="F")
    assert json.loads(out.getvalue())["event"] == "Starting factory 'F'"


def test_debug_events_are_dropped_below_the_minimum_level():
    out, log = _capture()
    log.debug("instruction.final", bank="B001")
    assert out.getvalue() == ""


def test_the_access_log_is_one_structured_event_per_request_with_its_uri_masked():
    """Twisted's access line was Combined Log Format text dated by the monotonic reactor clock (1970)."""
    import time

    from twisted.logger import globalLogPublisher
    from twisted.web.resource import Resource
    from twisted.web.server import Request
    from twisted.web.test.requesthelper import DummyChannel

    from gateway.web import make_site

    out = io.StringIO()
    observer = StructlogObserver(out, console=False)
    request = Request(DummyChannel())
    request.method, request.uri, request.code, request.sentLength = b"GET", b"/v1/accounts/6217003333444455?x=1", 200, 42
    request.requestHeaders.setRawHeaders(b"user-agent", [b"centre-client/2"])
    request.hpf_route = "GET /v1/accounts/{account}"
    before = time.time()
    globalLogPublisher.addObserver(observer)
    try:
        make_site(Resource()).log(request)
    finally:
        globalLogPublisher.removeObserver(observer)
    [line] = [json.loads(x) for x in out.getvalue().splitlines() if '"http.request"' in x]
    assert line["method"] == "GET" and line["status"] == 200 and line["bytes"] == 42
    assert line["route"] == "GET /v1/accounts/{account}" and line["agent"] == "centre-client/2"
    assert line["uri"] == "/v1/accounts/************4455?x=1"
    assert before - 1 <= line["timestamp"] <= time.time() + 1  # the wall clock, whatever the reactor's
    assert "6217003333444455" not in out.getvalue()
