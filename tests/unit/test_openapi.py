"""The OpenAPI document (gateway/openapi.json) says what the centre API and gateway.model do.

The document is served verbatim at /v1/openapi.json, so a centre's generated
client is only as right as this file: these tests hold it to the model's
validation rules (fields, required fields, patterns, lengths, enums) and to
the API's list of operations, and check that it is internally consistent
(every ``$ref`` resolves, every example fits its schema).
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import importlib.metadata
import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import model
from gateway.centre_api import MAX_FEED_WAIT
from gateway.model import PURPOSES, InvalidInput, State, parse_instruction

DOC_PATH = Path(__file__).resolve().parents[2] / "gateway" / "openapi.json"
TODAY = _dt.date(2024, 11, 27)
CEILING = 50_000_000_00

# Every operation of the centre API (README.md, "Centre API"), with the answers it must document.
OPERATIONS: dict[tuple[str, str], set[str]] = {
    ("post", "/v1/instructions"): {"200", "202", "400", "403", "409", "413", "422", "503"},
    ("post", "/v1/instructions/batch"): {"200", "400", "409", "413", "422", "503"},
    ("get", "/v1/instructions/{instruction_id}"): {"200", "404"},
    ("get", "/v1/results"): {"200", "400"},
    ("get", "/v1/openapi.json"): {"200"},
    ("post", "/v1/bookings"): {"200", "202", "400", "403", "409", "413", "422", "503"},
}
PROBLEM_SLUGS = {
    "invalid-json": 400, "invalid-instruction": 422, "not-your-account": 403, "conflict": 409,
    "not-found": 404, "too-large": 413, "unauthorised-peer": 403, "unavailable": 503,
    "method-not-allowed": 405,
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@functools.cache
def _load_doc() -> dict[str, Any]:
    return json.loads(DOC_PATH.read_text(encoding="utf-8"))


@pytest.fixture
def doc() -> dict[str, Any]:
    return copy.deepcopy(_load_doc())


def _schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["components"]["schemas"][name]


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON-pointer ``$ref`` (RFC 6901); KeyError/IndexError if it dangles."""
    assert ref.startswith("#/"), f"only local references are used, got {ref!r}"
    node: Any = doc
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = _resolve(doc, node["$ref"])
    return node


def _refs(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield where, value
            else:
                yield from _refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _refs(value, f"{where}/{i}")


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield method, path, op


def _full_body() -> dict[str, Any]:
    """A valid instruction using every field."""
    return {
        "instruction_id": "WD-2024_0001",
        "kind": "transfer",
        "debit_account": "6200001111222233",
        "creditor": {"account": "6200009999000011", "name": "张三", "bank_code": "105100000017"},
        "amount": "1234.56",
        "purpose": "withdrawal",
        "memo": "提取",
        "approval_ref": "APPR-2024/17",
        "requested_date": "2024-11-28",
    }


def _parses(body: Any) -> bool:
    try:
        parse_instruction("C52240", body, ceiling_fen=CEILING, today=TODAY)
    except InvalidInput:
        return False
    return True


def _bad_fields(body: Any) -> set[str]:
    try:
        parse_instruction("C52240", body, ceiling_fen=CEILING, today=TODAY)
    except InvalidInput as e:
        return {err.field for err in e.errors}
    return set()


def _ecma_full(pattern: str, text: str) -> bool:
    """Whether an anchored JSON-Schema pattern matches all of ``text`` (ECMA-262 ``^``/``$``).

    Python's ``$`` also matches before a final newline, ECMA's does not, so
    the anchors are stripped and ``fullmatch`` used instead.
    """
    assert pattern.startswith("^") and pattern.endswith("$"), pattern
    return re.fullmatch(pattern[1:-1], text) is not None


# -- the document as a whole -------------------------------------------------------


def test_document_is_json_and_openapi_3_1() -> None:
    doc = json.loads(DOC_PATH.read_bytes().decode("utf-8"))
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]


def test_document_ships_in_the_package_as_the_file_the_api_serves() -> None:
    packaged = files("gateway").joinpath("openapi.json").read_bytes()
    assert packaged == DOC_PATH.read_bytes()


def test_document_version_is_the_package_version(doc: dict[str, Any]) -> None:
    assert doc["info"]["version"] == importlib.metadata.version("hpf-gateway")


def test_every_api_operation_is_described_and_no_other(doc: dict[str, Any]) -> None:
    described = {(method, path) for method, path, _ in _operations(doc)}
    assert described == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), sorted(OPERATIONS))
def test_each_operation_documents_its_answers(doc: dict[str, Any], method: str, path: str) -> None:
    op = doc["paths"][path][method]
    assert OPERATIONS[(method, path)] <= set(op["responses"]), op["responses"].keys()
    assert op.get("operationId")


def test_operation_ids_are_unique(doc: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _operations(doc)]
    assert len(ids) == len(set(ids))


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = list(_refs(doc))
    assert len(refs) > 20  # the walk does find them
    for where, ref in refs:
        try:
            target = _resolve(doc, ref)
        except (KeyError, IndexError, ValueError):
            pytest.fail(f"{where}: $ref {ref!r} does not resolve")
        assert isinstance(target, dict), f"{where}: $ref {ref!r} is not an object"


def test_ref_check_catches_a_dangling_reference(doc: dict[str, Any]) -> None:
    broken = copy.deepcopy(doc)
    broken["paths"]["/v1/results"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/NoSuchSchema"}
    with pytest.raises(KeyError):
        for _, ref in _refs(broken):
            _resolve(broken, ref)


def test_every_component_is_used(doc: dict[str, Any]) -> None:
    used = {ref for _, ref in _refs(doc)}
    for kind in ("schemas", "responses"):
        for name in doc["components"][kind]:
            assert f"#/components/{kind}/{name}" in used, f"components/{kind}/{name} is never used"


def test_every_operation_is_behind_the_mutual_tls_scheme(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    mtls = {name for name, s in schemes.items() if s["type"] == "mutualTLS"}
    assert mtls
    for method, path, op in _operations(doc):
        requirements = op.get("security", doc["security"])
        assert requirements and all(set(r) <= mtls for r in requirements), (method, path)


def test_problem_answers_are_problem_json_and_503_says_when_to_retry(doc: dict[str, Any]) -> None:
    problem = {"$ref": "#/components/schemas/Problem"}
    seen = 0
    for method, path, op in _operations(doc):
        for status, response in op["responses"].items():
            response = _deref(doc, response)
            if int(status) < 400:
                assert "application/json" in response["content"], (method, path, status)
                continue
            seen += 1
            assert response["content"]["application/problem+json"]["schema"] == problem
            if status == "503":
                assert "Retry-After" in response["headers"]
    assert seen >= 10


def test_problem_schema_names_every_slug_with_its_status(doc: dict[str, Any]) -> None:
    problem = _schema(doc, "Problem")
    assert set(problem["required"]) == {"type", "title", "status"}
    errors = _deref(doc, problem["properties"]["errors"]["items"])
    assert set(errors["required"]) == {"field", "reason"}
    for slug, status in PROBLEM_SLUGS.items():
        assert f"{slug} ({status}" in problem["description"], slug
        assert _ecma_full(problem["properties"]["type"]["pattern"], f"urn:hpf-gateway:problem:{slug}")


def test_results_query_parameters_are_bounded_as_the_api_says(doc: dict[str, Any]) -> None:
    params = {p["name"]: p for p in doc["paths"]["/v1/results"]["get"]["parameters"]}
    assert set(params) == {"after", "wait", "limit"}
    assert all(p["in"] == "query" and not p["required"] for p in params.values())
    # The API answers 400 outside these bounds (gateway.centre_api: _int_arg, _wait_arg).
    assert params["after"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 2**62, "default": 0}
    assert params["wait"]["schema"]["maximum"] == MAX_FEED_WAIT == 30
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 500}


def test_feed_and_record_schemas_carry_the_api_fields(doc: dict[str, Any]) -> None:
    record = _schema(doc, "Record")
    assert set(record["required"]) == {"instruction_id", "state", "bank", "bank_ref", "amount",
                                       "created_at", "updated_at", "instruction"}
    assert {"reason", "result"} <= set(record["properties"])
    canonical = _schema(doc, "CanonicalInstruction")
    assert set(canonical["required"]) == set(canonical["properties"]) == model._FIELDS
    feed = _schema(doc, "Feed")
    assert set(feed["required"]) == {"results", "next"}
    event = _schema(doc, "FeedResult")
    assert set(event["required"]) == {"cursor", "event_id", "instruction_id", "state", "at"}
    assert {"bank_ref", "result", "reason", "amount"} <= set(event["properties"])
    batch = _schema(doc, "BatchResult")["properties"]["results"]["items"]["oneOf"]
    assert {b["$ref"].rsplit("/", 1)[1] for b in batch} == {"BatchItemStored", "BatchItemRefused"}


# -- the Instruction schema against gateway.model ------------------------------------


def test_instruction_properties_are_exactly_the_fields_the_model_accepts(doc: dict[str, Any]) -> None:
    ins = _schema(doc, "Instruction")
    creditor = _deref(doc, ins["properties"]["creditor"])
    assert ins["additionalProperties"] is False and creditor["additionalProperties"] is False
    assert set(ins["properties"]) == model._FIELDS
    assert set(creditor["properties"]) == model._CREDITOR_FIELDS
    # Behaviour, not only the private sets: a body using every documented field is
    # accepted, and any other field is refused by name.
    body = _full_body()
    assert set(body) == set(ins["properties"]) and set(body["creditor"]) == set(creditor["properties"])
    assert _parses(body)
    assert _bad_fields({**body, "priority": "high"}) == {"priority"}
    assert _bad_fields({**body, "creditor": {**body["creditor"], "iban": "x"}}) == {"creditor.iban"}


def test_required_fields_are_exactly_those_the_model_cannot_do_without(doc: dict[str, Any]) -> None:
    ins = _schema(doc, "Instruction")
    creditor = _deref(doc, ins["properties"]["creditor"])
    required = set()
    for field in ins["properties"]:
        body = _full_body()
        del body[field]
        if field in _bad_fields(body):
            required.add(field)
    assert required == set(ins["required"])
    creditor_required = set()
    for field in creditor["properties"]:
        body = _full_body()
        del body["creditor"][field]
        if f"creditor.{field}" in _bad_fields(body):
            creditor_required.add(field)
    assert creditor_required == set(creditor["required"])


def test_nullable_fields_are_those_the_model_treats_null_as_absent(doc: dict[str, Any]) -> None:
    ins = _schema(doc, "Instruction")
    for field, prop in ins["properties"].items():
        prop = _deref(doc, prop)
        body = {**_full_body(), field: None}
        nullable = isinstance(prop.get("type"), list) and "null" in prop["type"]
        assert nullable == _parses(body), field


def test_enums_are_the_model_values(doc: dict[str, Any]) -> None:
    ins = _schema(doc, "Instruction")
    assert set(_deref(doc, ins["properties"]["purpose"])["enum"]) == PURPOSES
    col = _schema(doc, "Collection")
    assert set(ins["properties"]["kind"]["enum"]) | set(col["properties"]["kind"]["enum"]) == model.KINDS
    assert set(_deref(doc, col["properties"]["purpose"])["enum"]) == model.COLLECTION_PURPOSES
    assert ins["properties"]["kind"]["default"] == "transfer"
    assert _schema(doc, "State")["enum"] == [s.value for s in State]


def _field_pattern(doc: dict[str, Any], dotted: str) -> str:
    ins = _schema(doc, "Instruction")
    if dotted.startswith("creditor."):
        node = _deref(doc, ins["properties"]["creditor"])["properties"][dotted.split(".", 1)[1]]
    else:
        node = _deref(doc, ins["properties"][dotted])
    return node["pattern"]


PATTERNED = {
    "instruction_id": model._INSTRUCTION_ID,
    "debit_account": model._ACCOUNT,
    "creditor.account": model._ACCOUNT,
    "creditor.bank_code": model._BANK_CODE,
    "approval_ref": model._APPROVAL,
    "amount": model._AMOUNT,
}
_TRICKY = st.text(alphabet="09aZ_-./ ~\x7f\u00e9\n", max_size=40)


# No fixtures here: pytest-twisted's wrapping of fixture-taking tests does not
# survive Hypothesis re-running the test body.
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_schema_patterns_accept_exactly_what_the_model_regexes_accept(data: st.DataObject) -> None:
    doc = _load_doc()
    field = data.draw(st.sampled_from(sorted(PATTERNED)))
    regex = PATTERNED[field]
    text = data.draw(st.one_of(st.from_regex(regex, fullmatch=True), _TRICKY))
    assert _ecma_full(_field_pattern(doc, field), text) == (regex.fullmatch(text) is not None), (field, text)


@pytest.mark.parametrize("field", sorted(PATTERNED))
def test_schema_patterns_have_the_model_length_limits(doc: dict[str, Any], field: str) -> None:
    regex = PATTERNED[field]
    for n in range(0, 71):
        for text in ("9" * n, "A" * n, "9" * n + ".99"):
            assert _ecma_full(_field_pattern(doc, field), text) == (regex.fullmatch(text) is not None), (field, text)


@pytest.mark.parametrize("text", ["0", "0.5", "1", "12.30", "999999999999999.99", "1000000000000000",
                                  "1.234", "01", "-1", "1e3", " 1", "1.", ".5", "1,000", "١٢"])
def test_amount_pattern_is_the_models_amount_syntax(doc: dict[str, Any], text: str) -> None:
    assert _ecma_full(_schema(doc, "Amount")["pattern"], text) == (model._AMOUNT.fullmatch(text) is not None)
    assert _schema(doc, "Amount")["pattern"] == r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,2})?$"


@pytest.mark.parametrize("dotted", ["memo", "creditor.name"])
def test_max_lengths_are_the_models(doc: dict[str, Any], dotted: str) -> None:
    ins = _schema(doc, "Instruction")
    if dotted == "memo":
        limit = ins["properties"]["memo"]["maxLength"]
        at, over = {**_full_body(), "memo": "m" * limit}, {**_full_body(), "memo": "m" * (limit + 1)}
    else:
        limit = _deref(doc, ins["properties"]["creditor"])["properties"]["name"]["maxLength"]
        body = _full_body()
        at = {**body, "creditor": {**body["creditor"], "name": "名" * limit}}
        over = {**body, "creditor": {**body["creditor"], "name": "名" * (limit + 1)}}
    assert _parses(at)
    assert _bad_fields(over) == {dotted}


# -- with a JSON Schema validator, when one is installed -----------------------------


def _validator(doc: dict[str, Any], name: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    # Resolve "#/components/..." against the document by making it the root.
    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


def _variants() -> list[tuple[str, dict[str, Any]]]:
    b = _full_body()
    c = b["creditor"]
    return [
        ("full", b),
        ("minimal", {k: b[k] for k in ("instruction_id", "debit_account", "creditor", "amount", "purpose")}),
        ("null optionals", {**b, "memo": None, "approval_ref": None, "requested_date": None}),
        ("unknown field", {**b, "extra": 1}),
        ("unknown creditor field", {**b, "creditor": {**c, "extra": 1}}),
        ("id too long", {**b, "instruction_id": "x" * 33}),
        ("id with a dot", {**b, "instruction_id": "a.b"}),
        ("kind batch", {**b, "kind": "batch"}),
        ("kind null", {**b, "kind": None}),
        ("amount as number", {**b, "amount": 12.5}),
        ("amount three decimals", {**b, "amount": "1.234"}),
        ("amount leading zero", {**b, "amount": "01.00"}),
        ("amount signed", {**b, "amount": "-5"}),
        ("bank code short", {**b, "creditor": {**c, "bank_code": "10510000001"}}),
        ("creditor not an object", {**b, "creditor": "x"}),
        ("purpose unknown", {**b, "purpose": "gift"}),
        ("memo long", {**b, "memo": "m" * 141}),
        ("approval with space", {**b, "approval_ref": "A 1"}),
        ("approval empty", {**b, "approval_ref": ""}),
        ("date format", {**b, "requested_date": "2024/11/28"}),
        ("date impossible", {**b, "requested_date": "2024-02-30"}),
        ("name control char", {**b, "creditor": {**c, "name": "张\u0007三"}}),
        ("name blank", {**b, "creditor": {**c, "name": "   "}}),
        ("memo control char", {**b, "memo": "a\u0085b"}),
        ("not an object", [b]),  # type: ignore[dict-item]
    ]


@pytest.mark.parametrize(("case", "body"), _variants(), ids=[v[0] for v in _variants()])
def test_schema_and_model_agree_on_what_is_valid(doc: dict[str, Any], case: str, body: Any) -> None:
    validator = _validator(doc, "Instruction")
    assert validator.is_valid(body) == _parses(body), case


def test_examples_fit_their_schemas(doc: dict[str, Any]) -> None:
    checked = 0
    for name, schema in doc["components"]["schemas"].items():
        for example in schema.get("examples", []):
            _validator(doc, name).validate(example)
            checked += 1
    for _, _, op in _operations(doc):
        contents = [op.get("requestBody", {}).get("content", {})]
        contents += [_deref(doc, r).get("content", {}) for r in op["responses"].values()]
        for content in contents:
            for media in content.values():
                if "example" in media and "$ref" in media["schema"]:
                    name = media["schema"]["$ref"].rsplit("/", 1)[1]
                    _validator(doc, name).validate(media["example"])
                    checked += 1
    for response in doc["components"]["responses"].values():
        for media in response["content"].values():
            _validator(doc, "Problem").validate(media["example"])
            assert media["example"]["status"] == PROBLEM_SLUGS.get(
                media["example"]["type"].rsplit(":", 1)[1], media["example"]["status"])
            checked += 1
    assert checked >= 10
    assert _parses(_schema(doc, "Instruction")["examples"][0])


def test_document_passes_openapi_spec_validator_when_installed(doc: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)
