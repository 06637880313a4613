"""The centre API against its own OpenAPI document, fuzzed by Schemathesis (G7: a clear refusal, nothing stored).

A real ``hpf-gateway run`` (a subprocess listening on loopback, the dev
PKI's certificates, mutual TLS) is fuzzed by ``schemathesis run`` with every
check, a fixed seed and a bounded budget (``MAX_EXAMPLES`` per operation in
the fuzzing and stateful phases; the examples and coverage phases are bounded
by the document).  Every request must get a documented answer: a 2xx that
conforms to the document, or a clear 4xx problem; schema-violating requests
are refused, schema-valid ones only for what the document says its schemas
cannot express; undeclared methods get 405 with ``Allow``; every answer
comes within ``MAX_RESPONSE_TIME``.  Afterwards the daemon is still alive and
healthy, logged no failure, and its store holds exactly the instructions and
bookings that were answered 202: nothing from a refusal.

The gateway runs with ``timeouts.max_feed_wait`` of half a second: the long
poll ``GET /v1/results?wait=...`` (Schemathesis asks for up to 30 s, the
documented maximum) is capped by that setting, as documented, so it answers
quickly instead of tripping the response-time check.

This file is also the run's Schemathesis hooks module (``hooks`` in the
``schemathesis.toml`` that :func:`write_config` writes): the check
:func:`refusals_are_documented`, the steering of schema-valid bodies
(:func:`before_call`) and the record of every call for the store audit
(:func:`after_call`).  By hand, against a gateway started from a directory
made by ``tests.kit.procs.prepare``::

    HPF_SCHEMATHESIS_ACCOUNTS=6200001111222233,6217003333444455,6222002222333344 \
    schemathesis --config-file schemathesis.toml run gateway/openapi.json --url https://localhost:PORT \
        --request-cert DIR/keys/centre-C52240.crt --request-cert-key DIR/keys/centre-C52240.key \
        --tls-verify DIR/keys/ca.crt --checks all --max-response-time 5 \
        --phases examples,coverage,fuzzing,stateful -n 100 --seed 1 --generation-database none -w 1
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import schemathesis

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "gateway" / "openapi.json"
SEED = 1
MAX_EXAMPLES = 100  # per operation in the fuzzing and stateful phases (examples and coverage: the document)
MAX_RESPONSE_TIME = 5.0  # seconds; long polls are capped at FEED_WAIT by the gateway's config
FEED_WAIT = 0.5
RUN_TIMEOUT = 240.0  # seconds: a hung run fails the test instead of the CI job
AUDIT_ENV = "HPF_SCHEMATHESIS_AUDIT"  # where after_call appends one JSON line per call
ACCOUNTS_ENV = "HPF_SCHEMATHESIS_ACCOUNTS"  # the centre's registered accounts, for before_call
CENTRE = "C52240"

pytestmark = pytest.mark.slow


# -- the hooks (loaded by the Schemathesis process) --------------------------------------------

#: 422 refusals of schema-valid requests that the document announces in words because a schema
#: cannot say them: (field pattern, reason pattern) per operation.  Anything else refused as invalid means
#: the document is looser than the gateway, and that is a failure.
BEYOND_SCHEMA: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("POST", "/v1/instructions"): (
        ("requested_date", r"is in the past$"),                   # depends on today
        ("amount", r"above the per-instruction ceiling"),        # limits.max_amount
        ("", r""),                                               # the bank's protocol cannot carry it
        ("creditor.name", r"^is not the registered name"),       # an own account, against the register
        ("creditor.bank_code", r"^(is not the registered bank code|this account of the centre has no bank_code)"),
        ("debtor.account", r"^is the credited account itself$"),  # Debtor.account: "not the credited account"
    ),
    # "bank_batch": true takes the request whole or refuses it whole, "422 naming each bad line,
    # or `bank_batch`" (the operation's words): an item may be any JSON value (items anyOf {}),
    # so any line's refusal, or why the lines cannot be one bank batch, refuses the request.
    ("POST", "/v1/instructions/batch"): (
        (r"instructions\[\d+\](\.[\s\S]+)?", r""),  # [\s\S]: a generated key may hold a newline
        ("bank_batch", r""),
    ),
    ("POST", "/v1/bookings"): (
        ("instruction_id", r"no such instruction$"),             # depends on what is stored
        ("amount", r"above the per-instruction ceiling"),
    ),
}
_NOT_CARRIED = "The bank's protocol cannot carry this instruction"


@schemathesis.check
def refusals_are_documented(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid request answered 422 names only reasons the document gives beyond its schema."""
    meta = case.meta
    if response.status_code != 422 or meta is None or not meta.generation.mode.is_positive:
        return None
    problem = response.json()
    allowed = BEYOND_SCHEMA.get((case.method.upper(), case.operation.path), ())
    errors = problem.get("errors") or [{"field": None, "reason": problem.get("title")}]
    if case.operation.path == "/v1/instructions/batch" and isinstance(case.body, dict) \
            and case.body.get("bank_batch") is True:
        # A bank batch is taken or refused whole, naming each bad line or bank_batch (the operation's
        # description): a line's own refusal, which refuses only that line without it, is documented.
        errors = [e for e in errors if not re.fullmatch(r"instructions\[\d+\](\..+)?|bank_batch", e.get("field") or "")]
    undocumented = [
        e for e in errors
        if not any(re.fullmatch(field, e.get("field") or "") and re.search(reason, e.get("reason") or "")
                   and (field != "" or problem.get("title") == _NOT_CARRIED)
                   for field, reason in allowed)
    ]
    if undocumented:
        raise AssertionError("A schema-valid request was refused for a reason the document does not give: "
                             + json.dumps(undocumented, ensure_ascii=False))
    return None


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Steer three schema-valid bodies in four past the refusals the document states in words.

    Random debit accounts are never the centre's (403), random dates are
    mostly past (422) and generated ids repeat (409), so without this few
    generated instructions or bookings would reach the policy and the store.
    A steered body gets one of the centre's registered accounts
    (``$HPF_SCHEMATHESIS_ACCOUNTS``), an id of its own (the same body, the
    same id: a replay) and a ``requested_date`` not in the past.  That is the
    documented contract, and the body stays schema-valid.  The fourth body,
    and every schema-violating one, is sent as generated.
    """
    meta = case.meta
    body = case.body
    if meta is None or not meta.generation.mode.is_positive or not isinstance(body, dict):
        return
    keys = {("POST", "/v1/instructions"): ("debit_account", "instruction_id"),
            ("POST", "/v1/bookings"): ("account", "booking_id")}.get((case.method.upper(), case.operation.path))
    accounts = [a for a in os.environ.get(ACCOUNTS_ENV, "").split(",") if a]
    choice = zlib.crc32(json.dumps(body, sort_keys=True, default=repr).encode())
    if keys is None or not accounts or choice % 4 == 0:
        return
    account_key, id_key = keys
    if isinstance(body.get(account_key), str):
        body[account_key] = accounts[choice % len(accounts)]
    if isinstance(body.get(id_key), str):
        body[id_key] = f"ST-{choice:08x}"
    date = body.get("requested_date")
    if isinstance(date, str):
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            return
        today = dt.date.today()
        if day < today:
            body["requested_date"] = (today + dt.timedelta(days=1 + day.toordinal() % 365)).isoformat()


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    """Append the call (operation, status, request body, answer) to ``$HPF_SCHEMATHESIS_AUDIT``."""
    path = os.environ.get(AUDIT_ENV)
    if not path:
        return
    try:
        answer = response.json()
    except Exception:
        answer = None
    body = case.body if isinstance(case.body, (dict, list, str, int, float, bool)) or case.body is None else None
    mode = case.meta.generation.mode.value if case.meta is not None else None
    line = {"method": case.method.upper(), "path": case.operation.path, "status": response.status_code,
            "mode": mode, "elapsed": response.elapsed, "query": case.query, "path_parameters": case.path_parameters,
            "headers": case.headers, "body": body, "answer": answer}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, default=repr) + "\n")  # ASCII: no U+2028 and the like to split lines


# -- the run -----------------------------------------------------------------------------------


def schemathesis_command(url: str, keys: Path, config_file: Path) -> list[str]:
    """The ``schemathesis run`` command line this test uses (the same works by hand)."""
    return [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_file), "--no-color",
        "run", str(DOCUMENT), "--url", url,
        "--request-cert", str(keys / "centre-C52240.crt"), "--request-cert-key", str(keys / "centre-C52240.key"),
        "--tls-verify", str(keys / "ca.crt"),
        "--checks", "all", "--max-response-time", str(MAX_RESPONSE_TIME), "--request-timeout", "10",
        "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
        "--generation-database", "none", "--workers", "1",
    ]


def write_config(path: Path) -> Path:
    """``schemathesis.toml``: this file as hooks, and 422 among the answers a schema-valid request may get.

    422 is allowed only because :func:`refusals_are_documented` then holds it
    to the reasons the document gives beyond its schema.
    """
    statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
    path.write_text(f'hooks = {json.dumps(str(Path(__file__).resolve()))}\n\n'
                    "[checks.positive_data_acceptance]\n"
                    f"expected-statuses = {json.dumps(statuses)}\n", encoding="utf-8")
    return path


def _stored(db_file: Path) -> tuple[set[str], set[str]]:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///file:{db_file}?mode=ro&uri=true")
    try:
        with engine.connect() as c:
            instructions = {r[0] for r in c.execute(sa.text("select instruction_id from instructions"))}
            bookings = {r[0] for r in c.execute(sa.text("select booking_id from bookings"))}
    finally:
        engine.dispose()
    return instructions, bookings


def _accepted(calls: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """The instruction and booking ids the gateway answered 202 (stored now), from the audit lines."""
    instructions: set[str] = set()
    bookings: set[str] = set()
    for call in calls:
        route, status, answer = (call["method"], call["path"]), call["status"], call["answer"]
        if route == ("POST", "/v1/instructions") and status == 202:
            instructions.add(answer["instruction_id"])
        elif route == ("POST", "/v1/instructions/batch") and status == 200:
            for item in answer["results"]:
                if item["status"] == 202:
                    instructions.add(item["instruction"]["instruction_id"])
        elif route == ("POST", "/v1/bookings") and status == 202:
            bookings.add(answer["booking_id"])
    return instructions, bookings


def test_centre_api_conforms_to_its_openapi_document_under_schemathesis(tmp_path: Path) -> None:
    from tests.kit import procs

    # No bank is connected: the links' backpressure (503 after refuse_when_link_down_for) must not set in.
    config = procs.prepare(tmp_path, timeouts={"max_feed_wait": FEED_WAIT, "balance_query_interval": 3600.0,
                                               "refuse_when_link_down_for": 3600.0})
    keys = config.tls.ca.parent
    port = int(config.centre_api.split(":")[1])
    audit = tmp_path / "calls.jsonl"
    accounts = sorted(number for number, account in config.accounts.items() if account.centre == CENTRE)
    gateway = procs.gateway(config).start()
    try:
        procs.wait_http(procs.ops_url(config, "/readyz"), timeout=30)
        command = schemathesis_command(f"https://localhost:{port}", keys, write_config(tmp_path / "schemathesis.toml"))
        started = time.monotonic()
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                             env=dict(os.environ, **{AUDIT_ENV: str(audit), ACCOUNTS_ENV: ",".join(accounts),
                                                     "PYTHONPATH": str(ROOT)}))
        elapsed = time.monotonic() - started
        output = run.stdout + run.stderr
        summary = re.search(r"Test cases:\s*\n\s*(\d+) generated", output)
        print(f"schemathesis: {summary.group(1) if summary else '?'} cases in {elapsed:.1f} s")
        assert run.returncode == 0, output[-15000:]
        assert summary and int(summary.group(1)) >= 50, output[-3000:]  # the run really fuzzed

        # The process is unaffected: alive and healthy.
        assert gateway.alive(), gateway.text()[-3000:]
        assert procs.wait_http(procs.ops_url(config, "/healthz"), timeout=5).strip() == "ok"
        failed = [line for line in gateway.text().splitlines()
                  if '"centre_api.failed"' in line or '"centre_api.unhandled"' in line]
        assert not failed, failed[:3]
        # Nothing stored by a refusal: the store holds exactly what was answered 202.
        calls = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
        assert len(calls) >= int(summary.group(1)), "every call is in the audit"
        assert all(c["status"] < 500 for c in calls), [c for c in calls if c["status"] >= 500][:3]
        assert _stored(Path(config.database.removeprefix("sqlite:///"))) == _accepted(calls)
    finally:
        gateway.signal(signal.SIGTERM)
        try:
            gateway.wait(20)
        except Exception:
            gateway.kill()
