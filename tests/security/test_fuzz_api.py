"""Hostile input to the centre API, fuzzed with bounded budgets (G7: a clear refusal, nothing stored).

Targets and budgets (Hypothesis ``max_examples``; ``derandomize`` keeps CI
reproducible, the local database of examples still grows when run by hand):

- ``strict_json`` on arbitrary bytes: 400 or a value, never another exception (500).
- the body pipeline (``strict_json`` then ``Intake.prepare``, the pure part of
  ``POST /v1/instructions``) on hostile JSON text: duplicate keys, NaN and
  Infinity, huge integers and exponents, deep nesting, odd Unicode (500).
- instruction-shaped documents with hostile amounts, texts, dates and types:
  a clean 400/403/422, and anything accepted is canonical (1000).
- documents generated from ``gateway/openapi.json``'s own ``Instruction``
  schema: schema-valid ones are never refused as malformed JSON and are
  refused only for what the schema documents it cannot say; ones broken in one
  schema constraint are always 422 (300 + 300).

End to end over HTTPS, a fixed sample of those bodies is posted alone and in a
batch: each gets a 4xx problem and nothing is stored.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest_twisted
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.intake import Intake
from gateway.web import Problem, strict_json
from gateway.config import load_config
from gateway.metrics import GatewayMetrics
from gateway.simulate.run import api_url
from gateway.store.instructions import IntakeItem
from tests.integration.harness import start_harness
from tests.security.support import Https

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_config(ROOT / "conf" / "gateway.example.toml", check_files=False)
OPENAPI = json.loads((ROOT / "gateway" / "openapi.json").read_text(encoding="utf-8"))
TODAY = dt.date(2026, 11, 27)
CENTRE = "C52240"
DEBIT = "6200001111222233"
PAYEE = {"account": "6200009999000011", "name": "张三", "bank_code": "105100000017"}
VALID = {"instruction_id": "F-1", "debit_account": DEBIT, "creditor": PAYEE, "amount": "100.00",
         "purpose": "withdrawal"}

FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _intake() -> Intake:
    return Intake(CONFIG, db=None, on_stored=lambda rows: None, metrics=GatewayMetrics(),  # type: ignore[arg-type]
                  today=lambda: TODAY)


INTAKE = _intake()


def pipeline(body: bytes) -> IntakeItem | Problem:
    """What POST /v1/instructions does with a body before storing: parse, validate, authorise, police."""
    try:
        return INTAKE.prepare(CENTRE, strict_json(body))
    except Problem as p:
        return p


def assert_clean(outcome: IntakeItem | Problem) -> None:
    if isinstance(outcome, Problem):
        assert outcome.status in (400, 403, 422), outcome
        assert outcome.slug in ("invalid-json", "invalid-instruction", "not-your-account"), outcome
        json.dumps(outcome.to_json())  # the answer itself can be written


# -- 1: bytes ---------------------------------------------------------------------------


@settings(FUZZ, max_examples=500)
@given(st.binary(max_size=2048))
def test_strict_json_on_arbitrary_bytes_returns_a_value_or_a_400(data: bytes) -> None:
    try:
        strict_json(data)
    except Problem as p:
        assert p.status == 400 and p.slug == "invalid-json"


# -- 2: hostile JSON text -------------------------------------------------------------------

_ODD_TEXT = st.sampled_from([
    "\u202e", "\u200b", "\ufeff", "e\u0301", "\U0001f4b0", "１２３", "٣", "\\ud800", "\\u0000", "Ω",
    "\\\\", "\\\"", "\u2028", "%s", "{}", "' OR 1=1 --", "<!ENTITY x SYSTEM 'file:///etc/passwd'>",
])
_NUMBERS = st.sampled_from([
    "NaN", "-NaN", "Infinity", "-Infinity", "1e999999", "-0", "-0.0", "0e0", "1E+2", "1.0e-400",
    "9" * 5000, "1" + "0" * 4400, "123456789012345678901234567890.123", "0.1", "1e3", "-1",
])


def _json_text(depth: int = 0) -> st.SearchStrategy[str]:
    leaf = st.one_of(
        _NUMBERS,
        st.integers().map(str),
        st.text(max_size=20).map(lambda t: json.dumps(t, ensure_ascii=False)),
        _ODD_TEXT.map(lambda t: f'"{t}"'),
        st.sampled_from(["true", "false", "null", '""']),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
            # Keys drawn from a tiny alphabet, so duplicates are common.
            st.lists(st.tuples(st.sampled_from(list(VALID) + ["amount", "creditor", "x"]), inner),
                     max_size=6).map(lambda kv: "{" + ",".join(f'"{k}":{v}' for k, v in kv) + "}"),
        ),
        max_leaves=25,
    )


@settings(FUZZ, max_examples=500)
@given(_json_text(), st.sampled_from(["", " ", "\ufeff", "\x00", "[" * 50000, "{\"a\":" * 3000]))
def test_hostile_json_text_gets_a_clean_refusal(text: str, prefix: str) -> None:
    assert_clean(pipeline((prefix + text).encode("utf-8", "surrogatepass")))


def test_duplicate_keys_nan_and_deep_nesting_are_invalid_json() -> None:
    base = json.dumps(VALID)
    for body in (base[:-1] + ', "amount": "999.00"}', base.replace('"100.00"', "NaN"),
                 base.replace('"100.00"', "Infinity"), "[" * 100000 + "]" * 100000,
                 b"\xff\xfe".decode("latin-1"), '{"amount": ' + "9" * 5000 + "}"):
        outcome = pipeline(body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body)
        assert isinstance(outcome, Problem) and outcome.status == 400, (body[:80], outcome)


# -- 3: instruction-shaped documents with hostile values ---------------------------------------

_AMOUNT_VALUES = st.one_of(
    st.sampled_from(["1e3", "1E2", "100.001", "0.001", "-0", "-0.00", "0", "0.00", "+1", " 1", "1 ", "0x10",
                     ".5", "5.", "1,000.00", "１２３", "١٢٣", "NaN", "Infinity", "1_000", "00.10", "01",
                     "50000000.01", "999999999999999.99", "9" * 400, "", "1.5e1", "1.2.3"]),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.from_regex(r"[0-9]{1,17}(\.[0-9]{0,4})?", fullmatch=True),
    st.text(max_size=20),
)
_TEXT_VALUES = st.one_of(
    st.text(max_size=200), _ODD_TEXT, st.integers(), st.none(), st.booleans(),
    st.lists(st.text(max_size=3), max_size=2), st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=60, max_size=200),
)
_DATE_VALUES = st.one_of(
    st.dates().map(dt.date.isoformat), st.sampled_from(["2026-02-30", "2026-13-01", "２０２６-１１-２７",
                                                         "20261127", "2026-11-27T00:00:00", "0000-00-00"]),
    st.integers(), st.none(), st.text(max_size=12),
)
_FIELD_VALUES = {
    "amount": _AMOUNT_VALUES, "instruction_id": _TEXT_VALUES, "debit_account": _TEXT_VALUES,
    "purpose": _TEXT_VALUES, "kind": _TEXT_VALUES, "memo": _TEXT_VALUES, "approval_ref": _TEXT_VALUES,
    "requested_date": _DATE_VALUES, "creditor": st.one_of(_TEXT_VALUES, st.just(PAYEE)),
    "creditor.account": _TEXT_VALUES, "creditor.name": _TEXT_VALUES, "creditor.bank_code": _TEXT_VALUES,
}


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return value


@st.composite
def hostile_instruction(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    doc: dict[str, Any] = json.loads(json.dumps(VALID))
    for field in draw(st.lists(st.sampled_from(sorted(_FIELD_VALUES)), min_size=1, max_size=3, unique=True)):
        value = _encode(draw(_FIELD_VALUES[field]))
        if field.startswith("creditor."):
            if isinstance(doc.get("creditor"), dict):
                doc["creditor"][field.split(".", 1)[1]] = value
        else:
            doc[field] = value
    if draw(st.booleans()):
        doc[draw(st.text(min_size=1, max_size=8))] = 1  # an unknown field
    ascii_only = draw(st.booleans())
    return doc, json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


_CANONICAL_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,14})(\.[0-9]{1,2})?", re.ASCII)


@settings(FUZZ, max_examples=1000)
@given(hostile_instruction())
def test_hostile_instruction_fields_get_a_clean_refusal_and_only_canonical_values_pass(
        case: tuple[dict[str, Any], bytes]) -> None:
    doc, body = case
    outcome = pipeline(body)
    assert_clean(outcome)
    if isinstance(outcome, IntakeItem):
        ins = outcome.instruction
        amount = doc["amount"]
        assert isinstance(amount, str) and _CANONICAL_AMOUNT.fullmatch(amount), amount
        assert ins.amount == int(Decimal(amount) * 100) and 0 < ins.amount <= CONFIG.limits.max_amount
        assert set(doc) <= {"instruction_id", "kind", "debit_account", "creditor", "amount", "purpose", "memo",
                            "approval_ref", "requested_date"}
        for text in (ins.instruction_id, ins.creditor.name, ins.memo, ins.debit_account):
            assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) <= 0xDFFF for c in text)
        assert ins.requested_date >= TODAY


# -- 4: generated from the OpenAPI schema ---------------------------------------------------------


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = OPENAPI["components"]["schemas"][name]
    return schema


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid under a JSON Schema of the subset the OpenAPI document uses."""
    schema = _resolve(schema)
    types = schema.get("type")
    if isinstance(types, list):
        return st.one_of(*(from_schema({**schema, "type": t}) for t in types))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if types == "null":
        return st.none()
    if types == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        optional = sorted(set(props) - required)
        children = {k: from_schema(v) for k, v in props.items()}  # built once, drawn many times
        pick = st.lists(st.sampled_from(optional), unique=True) if optional else st.just([])

        @st.composite
        def build(draw: st.DrawFn) -> dict[str, Any]:
            return {k: draw(children[k]) for k in sorted(required) + draw(pick)}
        return build()
    if types == "array":
        return st.lists(from_schema(schema["items"]), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 3), 3))
    if types == "string":
        if schema.get("format") == "date":
            return st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 12, 31)).map(dt.date.isoformat)
        pattern = schema.get("pattern")
        low, high = schema.get("minLength", 0), schema.get("maxLength", 200)
        if pattern and "(?=" in pattern:
            # Generating from a lookahead regex is slow; any short text that matches will do.
            regex = re.compile(pattern)
            return st.text(min_size=max(low, 1), max_size=min(high, 80)).filter(lambda s: bool(regex.fullmatch(s)))
        base = st.from_regex(pattern, fullmatch=True) if pattern else st.text(max_size=high)
        return base.filter(lambda s: low <= len(s) <= high)
    raise AssertionError(f"schema construct not covered: {schema}")


INSTRUCTION_SCHEMA = _resolve({"$ref": "#/components/schemas/Instruction"})
# What the schema says it cannot express (its description): these fields may still be refused.
UNSAYABLE = {"amount", "requested_date", "creditor.name", "memo", "approval_ref", "instruction_id",
             "debit_account", "creditor.account"}


@settings(FUZZ, max_examples=300)
@given(from_schema(INSTRUCTION_SCHEMA))
def test_schema_valid_instructions_are_parsed_and_refused_only_for_what_the_schema_cannot_say(
        doc: dict[str, Any]) -> None:
    outcome = pipeline(json.dumps(doc, ensure_ascii=False).encode("utf-8"))
    assert_clean(outcome)
    if isinstance(outcome, Problem):
        assert outcome.status in (403, 422), outcome
        if outcome.status == 422:
            assert {e.field for e in outcome.errors} <= UNSAYABLE, outcome.errors


def _breakers(schema: dict[str, Any]) -> list[tuple[str, st.SearchStrategy[Any]]]:
    """(property, values that break that property's schema) for each property."""
    out: list[tuple[str, st.SearchStrategy[Any]]] = []
    for name, prop in schema["properties"].items():
        prop = _resolve(prop)
        types = prop.get("type")
        allowed = set(types) if isinstance(types, list) else {types}
        wrong = [v for t, v in (("string", "x"), ("object", {}), ("array", []), ("null", None), ("number", 1.5))
                 if t not in allowed and not (t == "number" and "integer" in allowed)]
        options: list[st.SearchStrategy[Any]] = [st.sampled_from(wrong)] if wrong else []
        if "string" in allowed and "pattern" in prop:
            regex = re.compile(prop["pattern"])
            options.append(st.text(max_size=40).filter(lambda s, r=regex: not r.fullmatch(s)))
        if "string" in allowed and "maxLength" in prop:
            options.append(st.just("A" * (prop["maxLength"] + 1)))
        if "enum" in prop:
            options.append(st.text(max_size=12).filter(lambda s, e=prop["enum"]: s not in e))
        if options:
            out.append((name, st.one_of(*options)))
    return out


BREAKERS = st.sampled_from(_breakers(INSTRUCTION_SCHEMA))
VALID_BY_SCHEMA = from_schema(INSTRUCTION_SCHEMA)


@st.composite
def schema_broken(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(VALID_BY_SCHEMA)
    how = draw(st.sampled_from(["value", "missing", "unknown"]))
    if how == "missing":
        del doc[draw(st.sampled_from(sorted(INSTRUCTION_SCHEMA["required"])))]
    elif how == "unknown":
        doc[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in INSTRUCTION_SCHEMA["properties"]))] = 0
    else:
        name, values = draw(BREAKERS)
        doc[name] = draw(values)
    return doc


@settings(FUZZ, max_examples=300)
@given(schema_broken())
def test_instructions_breaking_one_schema_constraint_are_always_422(doc: dict[str, Any]) -> None:
    outcome = pipeline(json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    assert isinstance(outcome, Problem) and outcome.status == 422, (doc, outcome)


# -- end to end over HTTPS ---------------------------------------------------------------------------

_BASE = json.dumps(VALID, ensure_ascii=False)
E2E_BODIES: list[bytes] = [
    (_BASE[:-1] + ', "amount": "999.00"}').encode(),              # duplicate key
    _BASE.replace('"100.00"', "NaN").encode(),
    _BASE.replace('"100.00"', "1e3").encode(),                     # a JSON number
    _BASE.replace('"100.00"', '"1e3"').encode(),                   # an exponent
    _BASE.replace('"100.00"', '"100.001"').encode(),
    _BASE.replace('"100.00"', '"-0"').encode(),
    _BASE.replace('"100.00"', '"-0.00"').encode(),
    _BASE.replace('"100.00"', '"0.00"').encode(),
    _BASE.replace('"100.00"', '"１００"').encode(),
    _BASE.replace('"100.00"', "9" * 5000).encode(),
    _BASE.replace('"100.00"', '"' + "9" * 5000 + '"').encode(),
    _BASE.replace('"100.00"', '["100.00"]').encode(),
    _BASE.replace('"withdrawal"', '["withdrawal"]').encode(),
    _BASE.replace('"withdrawal"', '{"x": 1}').encode(),
    _BASE.replace('张三', '\\ud800').encode(),
    _BASE.replace('张三', '\u202e\u0000').encode(),
    _BASE.replace('"F-1"', '"F-1\\u0000"').encode(),
    (_BASE[:-1] + ', "kind": ["transfer"]}').encode(),
    (_BASE[:-1] + ', "unexpected": 1}').encode(),
    ("[" * 100000 + "]" * 100000).encode(),
    b"\xff\xfe\x00{",
    b'{"instruction_id": "F-1", ',
    b"",
    b"null",
    b"[]",
]


@pytest_twisted.ensureDeferred
async def test_hostile_bodies_over_https_get_4xx_and_store_nothing(tmp_path: Path) -> None:
    h = await start_harness(tmp_path, banks={})
    try:
        client = Https(h.pki.cert("centre", CENTRE), h.pki.key("centre", CENTRE), h.pki.ca_cert)
        base = api_url(h.config)
        assert all(body != _BASE.encode() for body in E2E_BODIES)  # every one really is hostile
        for body in E2E_BODIES:
            answer = await client.call("POST", base + "/v1/instructions", raw=body)
            assert 400 <= answer.status < 500, (body[:80], answer)
            assert answer.headers["content-type"] == "application/problem+json", (body[:80], answer)
            assert answer.body["status"] == answer.status
        # In a batch, every item is refused on its own; the batch itself is answered.
        items = [dict(VALID, amount=1000), dict(VALID, amount="1e3"), dict(VALID, amount="100.001"),
                 dict(VALID, amount="-0"), dict(VALID, amount="0.00"), dict(VALID, amount="１００"),
                 dict(VALID, amount=["100.00"]), dict(VALID, purpose=["withdrawal"]), dict(VALID, kind={"x": 1}),
                 dict(VALID, creditor=dict(PAYEE, name="\ud800")), dict(VALID, instruction_id="F-1\x00"),
                 dict(VALID, unexpected=1), dict(VALID, creditor=dict(PAYEE, bank_code="１０５１００００００１７"))]
        answer = await client.call("POST", base + "/v1/instructions/batch", {"instructions": items})
        assert answer.status == 200, answer
        assert [r["status"] for r in answer.body["results"]] == [422] * len(items)

        def counts(conn: Any) -> tuple[int, int]:
            return (conn.execute(sa.text("select count(*) from instructions")).scalar_one(),
                    conn.execute(sa.text("select count(*) from events")).scalar_one())

        assert await h.gateway.db.read(counts) == (0, 0)
    finally:
        await h.stop()
