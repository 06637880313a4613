"""No full account number reaches any log of any daemon (issue 16, item 4).

Masking happens where every event is rendered (``gateway.logs``), so it holds for events nobody
thought about: the web access log written for every request (``http.request``: the request URI
and query string), ``ledger.denied`` (the refused path), error messages and tracebacks.  The demo with bank
offences injected is run as the README runs it, and every line of every log it writes (its log
file, stdout, stderr) is scanned for every account number its configs register.
"""

from __future__ import annotations

import re
import tomllib

import pytest
import pytest_twisted

from gateway.model import mask_account
from tests.kit.ledger import DEBIT
from tests.kit.ledger_env import env  # noqa: F401,F811  (a running ledger on loopback)
from tests.security.demo_run import FAULTS
from tests.security.support import capture_logs

pytestmark = pytest.mark.slow


def _registered(run) -> set[str]:
    numbers: set[str] = set()
    for name in ("gateway.toml", "ledger.toml"):
        data = tomllib.loads((run.directory / name).read_text(encoding="utf-8"))
        numbers |= set(data.get("accounts", {})) | set(data.get("counterparties", {}))
    return numbers


def test_the_demo_with_bank_offences_logs_no_registered_account_number_in_full(demo_run):
    run = demo_run(umask=0o022, faults=FAULTS)
    assert "ledger alerts by rule" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]  # the run finished
    committed = run.stdout.split("offences the banks committed:")[1].splitlines()[0]
    assert all(re.search(rf"{fault} [1-9]", committed) for fault in FAULTS.split(",")), committed
    numbers = _registered(run)
    assert len(numbers) >= 6 and all(len(re.sub(r"\D", "", n)) >= 8 for n in numbers)
    logs = run.logs()
    assert len(logs["gateway.log"].splitlines()) > 100, "the demo should have logged plenty"
    for where, text in logs.items():
        for i, line in enumerate(text.splitlines(), 1):
            for number in numbers:
                assert number not in line, f"{where}:{i}: account {number} in full: {line[:300]}"
    assert any(mask_account(n) in logs["gateway.log"] for n in numbers)  # not vacuous: logged, masked


@pytest_twisted.ensureDeferred
async def test_the_ledger_access_log_and_its_refusals_mask_account_numbers_in_uris(env):  # noqa: F811
    with capture_logs() as logs:
        await env.start()
        path = f"/v1/accounts/{DEBIT}/balances?account={DEBIT}&limit=5"
        status, _, body = await env.client("supervisor", "sup1").call("GET", env.url("supervisor", path))
        assert status in (200, 400), body
        status, _, _ = await env.client("centre", "C52240").call("GET", env.url("supervisor", path))
        assert status == 403
        await env.stop()
    written = logs.rendered.getvalue()  # what the daemon writes: the rendered lines
    assert logs.named("ledger.denied"), "the centre's request was refused and logged"
    access = [line for line in written.splitlines() if '"http.request"' in line and "/v1/accounts/" in line]
    assert len(access) >= 2, "the access log names each request's URI"
    assert DEBIT not in written
    assert mask_account(DEBIT) in written
