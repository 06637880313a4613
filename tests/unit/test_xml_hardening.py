"""The hardened XML parser and escaping shared by the XML bank adapters (adapters/_xml.py)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from adapters._xml import _parser, escape_attr, escape_text, needs_escape, parse_xml
from adapters.base import AdapterError

LIMIT = 1 << 20


def parse(data: bytes, **kw: object) -> etree._Element:
    kw.setdefault("max_bytes", LIMIT)
    kw.setdefault("encodings", ("utf-8", "GBK"))
    return parse_xml(data, **kw)  # type: ignore[arg-type]


def refused(data: bytes, **kw: object) -> str:
    with pytest.raises(AdapterError) as info:
        parse(data, **kw)
    return str(info.value)


# -- what is accepted ---------------------------------------------------------------


def test_gbk_document_is_decoded_by_its_declaration() -> None:
    root = parse('<?xml version="1.0" encoding="GBK"?>\n<a><b>示例中心归集户</b></a>'.encode("gbk"))
    assert root.findtext("b") == "示例中心归集户"


def test_utf8_is_the_default_without_a_declaration() -> None:
    assert parse("<a>张三</a>".encode("utf-8")).text == "张三"


def test_predefined_entities_and_character_references_are_resolved() -> None:
    root = parse(b"<a>&lt;&gt;&amp;&quot;&apos;&#20013;&#x4E2D;&#13;</a>")
    assert root.text == "<>&\"'中中\r"


def test_comments_are_dropped() -> None:
    root = parse(b"<!-- before --><a><!-- inside -->x</a>")
    assert root.text == "x" and len(root) == 0


def test_utf8_byte_order_mark_is_tolerated() -> None:
    assert parse(b"\xef\xbb\xbf<a>x</a>").text == "x"


def test_nesting_up_to_max_depth_is_accepted() -> None:
    assert parse(b"<a>" * 8 + b"</a>" * 8, max_depth=8).tag == "a"


# -- what is refused ----------------------------------------------------------------


def test_internal_dtd_is_refused() -> None:
    assert "DTD" in refused(b'<?xml version="1.0"?><!DOCTYPE a [<!ELEMENT a ANY>]><a/>')


def test_external_entity_is_refused_before_any_file_is_read() -> None:
    doc = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
    assert "DTD" in refused(doc)


def test_external_dtd_over_the_network_is_refused() -> None:
    refused(b'<!DOCTYPE a SYSTEM "http://127.0.0.1:9/evil.dtd"><a/>')


def test_billion_laughs_is_refused_quickly() -> None:
    lol = [b'<!ENTITY l0 "lol">'] + [
        b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 10)]
    doc = b"<?xml version=\"1.0\"?><!DOCTYPE a [" + b"".join(lol) + b"]><a>&l9;</a>"
    start = time.monotonic()
    refused(doc)
    assert time.monotonic() - start < 1.0


def test_parameter_entities_are_refused() -> None:
    refused(b'<!DOCTYPE a [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x"> %p;]><a/>')


def test_undeclared_entity_reference_is_refused() -> None:
    assert "malformed" in refused(b"<a>&nbsp;</a>")


def test_processing_instructions_are_refused() -> None:
    assert "processing instruction" in refused(
        b'<?xml version="1.0"?><?xml-stylesheet href="x.xsl"?><a/>')
    refused(b"<a><?php echo 1; ?></a>")


def test_xml_version_other_than_1_0_is_refused() -> None:
    assert "declaration" in refused(b'<?xml version="1.1"?><a/>')


def test_malformed_declaration_is_refused() -> None:
    refused(b'<?xml encoding="GBK"?><a/>')
    refused(b'<?xml version="1.0" encoding=GBK?><a/>')


def test_size_is_checked_before_parsing() -> None:
    assert "exceeds" in refused(b"<a>" + b"x" * 100 + b"</a>", max_bytes=50)


def test_ten_thousand_deep_nesting_is_refused_quickly_without_recursion() -> None:
    doc = b"<a>" * 10_000 + b"</a>" * 10_000
    start = time.monotonic()
    refused(doc)
    assert time.monotonic() - start < 1.0


def test_nesting_beyond_max_depth_is_refused() -> None:
    assert "deeper than 8" in refused(b"<a>" * 9 + b"</a>" * 9, max_depth=8)


def test_bytes_invalid_in_the_declared_encoding_are_refused() -> None:
    assert "invalid in the declared encoding" in refused(
        b'<?xml version="1.0" encoding="GBK"?><a>\xff\xfe</a>')
    assert "invalid" in refused(b"<a>\xc3\x28</a>")  # broken UTF-8


def test_encoding_not_offered_by_the_caller_is_refused() -> None:
    gbk = '<?xml version="1.0" encoding="GBK"?><a>中</a>'.encode("gbk")
    assert "not accepted" in refused(gbk, encodings=("utf-8",))
    assert "not accepted" in refused(b"<a/>", encodings=("GBK",))  # undeclared means UTF-8


def test_unknown_encoding_name_is_refused() -> None:
    assert "unknown" in refused(b'<?xml version="1.0" encoding="x-klingon"?><a/>')


def test_utf16_is_refused() -> None:
    refused("<a/>".encode("utf-16"))


def test_bom_contradicting_the_declaration_is_refused() -> None:
    refused(b'\xef\xbb\xbf<?xml version="1.0" encoding="GBK"?><a/>')


def test_characters_xml_cannot_carry_are_refused() -> None:
    refused(b"<a>\x01</a>")
    refused(b"<a>&#0;</a>")


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(AdapterError):
        parse_xml("<a/>", max_bytes=LIMIT)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_nothing_but_adapter_error(data: bytes) -> None:
    try:
        parse(data)
    except AdapterError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="<>/!?&;#x=\"' abAB[]-:\n", max_size=120))
def test_markup_soup_raises_nothing_but_adapter_error(text: str) -> None:
    try:
        parse(text.encode("utf-8"))
    except AdapterError:
        pass


def test_the_parser_itself_neither_expands_nor_fetches_entities(tmp_path) -> None:
    """Defence in depth: even past the textual pre-scan, libxml2 is configured safely."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    doc = (f'<!DOCTYPE a [<!ENTITY x SYSTEM "{secret.as_uri()}"><!ENTITY y "expanded">]>'
           f"<a>&x;&y;</a>").encode()
    root = etree.fromstring(doc, _parser())
    assert b"TOP-SECRET" not in etree.tostring(root)
    assert b"expanded" not in etree.tostring(root)


# -- escaping -----------------------------------------------------------------------

xml_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufffe\uffff")
                   .filter(lambda c: c in "\t\n\r" or ord(c) >= 0x20))


@settings(max_examples=300, deadline=None)
@given(xml_text)
def test_escaped_text_round_trips_exactly(value: str) -> None:
    doc = f'<a b="{escape_attr(value)}">{escape_text(value)}</a>'.encode("utf-8")
    root = parse(doc)
    assert (root.text or "") == value
    assert root.get("b") == value


@given(xml_text)
def test_needs_escape_is_false_only_when_escaping_changes_nothing(value: str) -> None:
    if not needs_escape(value):
        assert escape_text(value) == value


@pytest.mark.parametrize("bad", ["\x00", "a\x01b", "\x1f", "\ud800", "\uffff"])
def test_escape_refuses_characters_xml_cannot_carry(bad: str) -> None:
    assert needs_escape(bad)
    with pytest.raises(AdapterError):
        escape_text(bad)
