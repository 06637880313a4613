"""The gateway and a bank's simulated front-end over real loopback sockets: Bank of China's
bocb2e servlet (HTTP), ICBC's NC (HTTP, signing port first) and CCB's WLPT client (TCP).

What the link must do with a front-end (docs/protocols/bocb2e.md, icbc.md, ccb.md, "The
link"): sign on where the protocol has a sign-on and again when the token is gone; poll
status until the final result; poll balances (and, for bocb2e, statements); and when a
transfer's answer is lost, ask its status before any resend, so it executes once.  Every
wait is bounded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from adapters.bocb2e import codec as boc
from adapters.ccb import codec as wlpt
from adapters.icbc import codec as nc
from gateway.ports import free_port as _free_port
from gateway.store import journal

from .harness import DEBIT_B002, Harness, start_harness

PAYEE = {"account": "6222008888000022", "name": "示例房地产开发有限公司", "bank_code": "102100000030"}
TIMEOUTS = {"receipt_timeout": 1.0, "result_timeout": 20.0, "balance_query_interval": 0.5}


async def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = reactor.seconds() + timeout
    while not (value := check()):
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.05, lambda: None)
    return value


async def events(h: Harness, kind: str) -> list[dict[str, Any]]:
    rows = await h.gateway.db.read(journal.events_after, 0, 100_000)
    return [r for r in rows if r["kind"] == kind and r["bank_id"] == "B002"]


def password_file(tmp: Path) -> str:
    path = tmp / "keys" / "front-end.password"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s3cret-test\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def record(simulator: Any, answer_name: str, read: Callable[[bytes], tuple[str, str]],
           lose: Callable[[str, str], bool] = lambda code, key: False) -> list[tuple[str, str]]:
    """Wrap the simulator's entry point: note (code, key) of every request it is given, and
    make it lose the answer (raise: the front-end answers HTTP 500 or closes) where ``lose`` says."""
    seen: list[tuple[str, str]] = []
    original = getattr(simulator, answer_name)

    def answering(data: bytes, *args: Any) -> bytes:
        try:
            code, key = read(data)
        except Exception:  # noqa: BLE001 (a document the wrapper cannot read is the simulator's business)
            code, key = "?", ""
        seen.append((code, key))
        out = original(data, *args)
        if lose(code, key):
            raise ConnectionAbortedError("answer lost on purpose")
        return out

    setattr(simulator, answer_name, answering)
    return seen


def boc_request(data: bytes) -> tuple[str, str]:
    req = boc.read_request(data)
    record = req.records[0] if req.records else None
    return req.trncod, (record.get("insid", "") if record is not None else "")


# -- Bank of China ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bocb2e_signs_on_again_after_expiry_and_asks_before_resending(tmp_path: Path) -> None:
    h = await start_harness(tmp_path, banks={}, timeouts=TIMEOUTS)
    try:
        bank = h.config.banks["B002"]
        assert bank.adapter == "bocb2e" and bank.status is not None and bank.status.before_resend
        service = h.start_bank("B002")
        front = service.simulator
        lost: set[str] = set()

        def lose(code: str, insid: str) -> bool:
            if code == "b2e0009" and not lost:
                lost.add(insid)
                return True
            return False

        seen = record(front, "answer", boc_request, lose)
        await h.link_up("B002")
        c = h.client()
        # Balance and statement polls run from the start.
        snapshots = await wait_for(lambda: [k for k, _ in seen if k == "b2e0005"])
        assert snapshots
        assert (await c.submit("BOC-1", debit=DEBIT_B002, creditor=PAYEE))[0] == 202
        done = await c.wait_state("BOC-1", {"succeeded", "failed", "in_doubt"}, timeout=20)
        assert done["state"] == "succeeded"
        [insid] = lost
        sends = [i for i, (k, ref) in enumerate(seen) if k == "b2e0009" and ref == insid]
        asks = [i for i, (k, ref) in enumerate(seen) if k == "b2e0007" and ref == insid]
        # The lost answer: asked about before any resend, and (the bank holding it) never resent.
        assert len(sends) == 1 and asks and asks[0] > sends[0]
        assert front.executed_refs[insid] == 1
        # The token expires mid-run: the next request meets B107, the link signs on again.
        sign_ons = sum(1 for k, _ in seen if k == "b2e0001")
        front._tokens.clear()
        assert (await c.submit("BOC-2", debit=DEBIT_B002, creditor=PAYEE))[0] == 202
        assert (await c.wait_state("BOC-2", {"succeeded", "failed", "in_doubt"}, timeout=20))["state"] \
            == "succeeded"
        assert sum(1 for k, _ in seen if k == "b2e0001") > sign_ons
        assert max(front.executed_refs.values()) == 1 and front.executions == 2
        # Processing states came before the final one, and the statement brought the debits.
        assert sum(1 for k, ref in seen if k == "b2e0007" and ref == insid) >= 2
        movements: list[dict[str, Any]] = []
        deadline = reactor.seconds() + 10
        while len(movements) < 2 and reactor.seconds() < deadline:
            movements = await events(h, "bank.movement")
            await deferLater(reactor, 0.1, lambda: None)
        assert sorted(json.loads(m["payload"])["amount"] for m in movements) == [-10000, -10000]
        balances = await events(h, "bank.balance")
        assert balances and all(json.loads(b["payload"])["as_of"] for b in balances)
    finally:
        await h.stop()


# -- ICBC through NC ----------------------------------------------------------------------


def nc_request(body: bytes) -> tuple[str, str]:
    form = nc.read_form(body)
    return form.get("TransCode", ""), form.get("PackageID", "")


@pytest_twisted.ensureDeferred
async def test_icbc_through_nc_polls_status_and_asks_before_resending(tmp_path: Path) -> None:
    trade, sign = _free_port(), _free_port()
    front_end = {"url": f"http://127.0.0.1:{trade}/servlet/ICBCCMPAPIReqServlet",
                 "sign_url": f"http://127.0.0.1:{sign}", "cis": "120290000000001", "cert_id": "gw.y.1202"}
    h = await start_harness(tmp_path, banks={}, timeouts=TIMEOUTS,
                            bank_config={"B002": {"adapter": "icbc", "front_end": front_end}})
    try:
        assert h.config.banks["B002"].status.before_resend
        service = h.start_bank("B002")
        front = service.simulator
        lost: set[str] = set()

        def lose(code: str, ref: str) -> bool:
            if code == "PAYENT" and not lost:
                lost.add(ref)
                return True
            return False

        seen = record(front, "trade", nc_request, lose)
        await h.link_up("B002")   # NC has no sign-on: a balance query showed it answers
        c = h.client()
        assert (await c.submit("NC-1", debit=DEBIT_B002, creditor=PAYEE))[0] == 202
        done = await c.wait_state("NC-1", {"succeeded", "failed", "in_doubt"}, timeout=20)
        assert done["state"] == "succeeded"
        [ref] = lost
        sends = [i for i, (k, r) in enumerate(seen) if k == "PAYENT" and r == ref]
        asks = [i for i, (k, r) in enumerate(seen) if k == "QPAYENT"]
        assert len(sends) == 1 and asks and asks[0] > sends[0]
        assert front.executed_refs[ref] == 1 and front.executions == 1
        assert await wait_for(lambda: [k for k, _ in seen if k == "QACCBAL"])
        balances = await events(h, "bank.balance")
        assert balances and json.loads(balances[-1]["payload"])["account"] == DEBIT_B002
        # QHISD is polled with the balances: the debit comes back as a movement, once.
        assert await wait_for(lambda: [k for k, _ in seen if k == "QHISD"])
        movements: list[dict[str, Any]] = []
        deadline = reactor.seconds() + 10
        while not movements and reactor.seconds() < deadline:
            movements = await events(h, "bank.movement")
            await deferLater(reactor, 0.1, lambda: None)
        assert [json.loads(m["payload"])["amount"] for m in movements] == [-10000]
    finally:
        await h.stop()


# -- CCB WLPT -----------------------------------------------------------------------------


def tx_request(data: bytes) -> tuple[str, str]:
    tx = wlpt.read_tx(data)
    return tx.head["TX_CODE"], tx.head["REQUEST_SN"]


@pytest_twisted.ensureDeferred
async def test_ccb_over_tcp_asks_before_resending_and_executes_once(tmp_path: Path) -> None:
    port = _free_port()
    front_end = {"url": f"tcp://127.0.0.1:{port}", "custid": "JS32000000001", "cusopr": "GW001",
                 "password_file": password_file(tmp_path)}
    h = await start_harness(tmp_path, banks={}, timeouts=TIMEOUTS,
                            bank_config={"B002": {"adapter": "ccb", "front_end": front_end}})
    try:
        assert h.config.banks["B002"].status.before_resend
        service = h.start_bank("B002")
        front = service.simulator
        lost: set[str] = set()

        def lose(code: str, sn: str) -> bool:
            if code in ("6W8010", "6W8060") and not lost:
                lost.add(sn)
                return True
            return False

        seen = record(front, "answer", tx_request, lose)
        await h.link_up("B002")
        c = h.client()
        assert (await c.submit("TX-1", debit=DEBIT_B002, creditor=PAYEE))[0] == 202
        done = await c.wait_state("TX-1", {"succeeded", "failed", "in_doubt"}, timeout=20)
        assert done["state"] == "succeeded"
        [sn] = lost
        sends = [i for i, (k, s) in enumerate(seen) if k in ("6W8010", "6W8060") and s == sn]
        asks = [i for i, (k, _) in enumerate(seen) if k == "6W1503"]
        assert len(sends) == 1 and asks and asks[0] > sends[0]
        assert front.executed_refs[sn] == 1 and front.executions == 1
        assert [k for k, _ in seen if k == "6W0100"]
        # 6WY101 is polled with the balances: the debit comes back as a movement, once.
        assert await wait_for(lambda: [k for k, _ in seen if k == "6WY101"])
        movements: list[dict[str, Any]] = []
        deadline = reactor.seconds() + 10
        while not movements and reactor.seconds() < deadline:
            movements = await events(h, "bank.movement")
            await deferLater(reactor, 0.1, lambda: None)
        assert [json.loads(m["payload"])["amount"] for m in movements] == [-10000]
    finally:
        await h.stop()
