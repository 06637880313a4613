"""The simulated bocb2e front-end: tokens that expire, processing before final, paging,
at-most-once execution, balances kept; and the gateway's session driving it."""

from __future__ import annotations

import datetime as dt

import pytest

from adapters import base
from adapters.bocb2e import NotSignedOn, Refused, Session, StatementPage, Terminal
from adapters.bocb2e import codec as c
from gateway.simulate.bocb2e import SIM_CODES, BocFrontEnd

T0 = dt.datetime(2026, 3, 4, 9, 30)
TERMINAL = Terminal("E127000000001", "12345678", "BOC")
PAYER, PAYEE = "254608672703", "249408672775"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def setup(**kw: object) -> tuple[BocFrontEnd, Session, Clock]:
    clock = Clock()
    tokens = iter(f"TOKEN{i}" for i in range(100))
    front = BocFrontEnd("12345678", "BOC", "pw", {PAYER: 10_000_00, PAYEE: 0},
                        token_factory=lambda: next(tokens), **kw)
    session = Session(TERMINAL, "pw", clock)
    assert session.signed_on(front.answer(session.sign_on("s1"), clock.now)).ok
    return front, session, clock


def ask(front: BocFrontEnd, session: Session, clock: Clock, message: object) -> object:
    return session.read(message, front.answer(session.request(message), clock.now))


def instruction(seq_no: str, amount: int) -> base.Instruction:
    return base.Instruction(
        seq_no=seq_no, send_date=T0.date(), centre_node="C52240", unit_no="522400000000000",
        debit_account=PAYER, debit_name="某中心", creditor_account=PAYEE, creditor_name="张三",
        creditor_bank_code="", creditor_personal=True, same_bank=True, amount=amount,
        purpose="withdrawal", memo="提取")


def test_wrong_password_is_refused_and_gives_no_token() -> None:
    front = BocFrontEnd("12345678", "BOC", "pw", {})
    s = Session(TERMINAL, "wrong", lambda: T0)
    answer = s.signed_on(front.answer(s.sign_on("s1"), T0))
    assert not answer.ok and answer.code == SIM_CODES["bad_password"] and s.token is None


def test_an_expired_token_is_answered_b107_and_a_new_sign_on_works() -> None:
    front, s, clock = setup(token_ttl=dt.timedelta(minutes=5))
    q = base.BalanceQuery("q1", PAYER)
    assert ask(front, s, clock, q)[0].balance == 10_000_00
    clock.now += dt.timedelta(minutes=5)
    with pytest.raises(NotSignedOn):
        ask(front, s, clock, q)
    assert s.signed_on(front.answer(s.sign_on("s2"), clock.now)).ok
    assert ask(front, s, clock, q)[0].balance == 10_000_00


def test_signed_off_token_is_refused() -> None:
    front, s, clock = setup()
    old = s.token
    front.answer(s.sign_off("x"), clock.now)
    s.token = old  # a stale token kept by mistake is refused by the front-end
    with pytest.raises(NotSignedOn):
        ask(front, s, clock, base.BalanceQuery("q", PAYER))


def test_transfer_is_processing_then_final_and_executes_once() -> None:
    front, s, clock = setup(polls_before_final=2)
    ins = instruction("52240260304000000001", 300_00)
    [receipt] = ask(front, s, clock, ins)
    assert isinstance(receipt, base.Receipt) and receipt.bank_seq_no
    q = base.StatusQuery("q1", ins.seq_no, ins.send_date)
    assert [type(m) for m in ask(front, s, clock, q)] == [base.Receipt]
    assert [type(m) for m in ask(front, s, clock, q)] == [base.Receipt]
    [result] = ask(front, s, clock, q)
    assert isinstance(result, base.Result) and result.succeeded
    assert result.bank_seq_no == receipt.bank_seq_no
    # resent: the original is answered, nothing executes again
    [again] = ask(front, s, clock, ins)
    assert again.bank_seq_no == receipt.bank_seq_no
    ask(front, s, clock, q)
    assert front.executions == 1
    assert front.balances == {PAYER: 9_700_00, PAYEE: 300_00}


def test_insufficient_funds_fails_on_status() -> None:
    front, s, clock = setup(polls_before_final=0)
    ins = instruction("r2", 20_000_00)
    ask(front, s, clock, ins)
    [result] = ask(front, s, clock, base.StatusQuery("q", "r2", T0.date()))
    assert isinstance(result, base.Result) and not result.succeeded
    assert result.code == SIM_CODES["insufficient_funds"] and front.executions == 0


def test_status_of_an_unknown_insid_is_a_failure_code_of_the_simulator() -> None:
    front, s, clock = setup()
    [result] = ask(front, s, clock, base.StatusQuery("q", "never-sent", T0.date()))
    assert isinstance(result, base.Result) and not result.succeeded
    assert result.code == SIM_CODES["no_such_transfer"]


def test_statement_pages_say_more_to_come_until_the_last() -> None:
    front, s, clock = setup(polls_before_final=0)
    for i in range(5):
        ask(front, s, clock, instruction(f"r{i}", 100_00 + i))
        ask(front, s, clock, base.StatusQuery(f"q{i}", f"r{i}", T0.date()))
    entries: list[base.Entry] = []
    begnum, pages = 1, 0
    while True:
        page = StatementPage(f"p{pages}", PAYER, T0.date(), T0.date(), begnum=begnum, recnum=2)
        got = ask(front, s, clock, page)
        entries += got.statement.entries
        pages += 1
        if not got.more:
            break
        begnum = got.next_begnum
    assert pages == 3
    assert [e.amount for e in entries] == [-(100_00 + i) for i in range(5)]
    assert entries[-1].balance_after == front.balances[PAYER]


def test_a_malformed_document_is_answered_in_the_error_form() -> None:
    front = BocFrontEnd("1", "2", "3", {})
    a = c.read_answer(front.answer(b"<not-xml", T0))
    assert a.trncod == "b2eerror" and a.code == SIM_CODES["bad_request"]


def test_a_request_without_token_is_answered_b107() -> None:
    front, s, clock = setup()
    s.token = "FORGED"
    with pytest.raises(NotSignedOn):
        ask(front, s, clock, base.BalanceQuery("q", PAYER))
    s.token = "FORGED"
    with pytest.raises(NotSignedOn):
        ask(front, s, clock, instruction("r9", 1))
    assert front.transfers == {}


def test_balance_of_an_unknown_account_is_refused() -> None:
    front, s, clock = setup()
    with pytest.raises(Refused):
        ask(front, s, clock, base.BalanceQuery("q", "999"))


# -- the adapter with a session: what a request/answer link drives --------------------------------


def test_the_adapter_with_a_session_signs_on_pays_and_reads_answers_bound_to_requests() -> None:
    """A link that knows only encode and decode_answer (one exchange per request) gets the
    token kept, transfers keyed by their reference, and B107 handled by the session."""
    from adapters.bocb2e import BocB2eAdapter

    clock = Clock()
    front = BocFrontEnd("12345678", "BOC", "pw", {PAYER: 10_000_00, PAYEE: 0},
                        token_ttl=dt.timedelta(minutes=5), polls_before_final=0)
    session = Session(TERMINAL, "pw", clock)
    a = BocB2eAdapter(session=session)

    def exchange(m: base.Message) -> base.Message:
        frame = a.encode(m, sender="C52240", receiver="104000")
        return a.decode_answer(front.answer(frame, clock.now), m)

    answer = exchange(base.SignOn("S1", "C52240"))
    assert isinstance(answer, base.SignOnAnswer) and answer.ok and answer.reply_to == "S1"
    ins = instruction("52240260304000000009", 1_00)
    assert exchange(ins) == base.Receipt("52240260304000000009", ins.seq_no, ins.seq_no,
                                         bank_seq_no=front.transfers[ins.seq_no].obssid)
    result = exchange(base.StatusQuery("Q1", ins.seq_no, T0.date()))
    assert isinstance(result, base.Result) and result.succeeded and result.reply_to == "Q1"
    clock.now += dt.timedelta(minutes=6)
    with pytest.raises(NotSignedOn):
        exchange(base.BalanceQuery("B1", PAYER))
    with pytest.raises(NotSignedOn):   # no token until a sign-on gets through
        a.encode(base.BalanceQuery("B2", PAYER), sender="C52240")
    assert exchange(base.SignOn("S2", "C52240")).ok
    assert exchange(base.BalanceQuery("B3", PAYER)).balance == 9_999_00
    assert front.executions == 1


def test_the_evidence_of_one_exchange_decodes_to_the_bound_answer() -> None:
    """The link keeps request + answer as evidence; decode_all reads the pair, statelessly."""
    from adapters.bocb2e import BocB2eAdapter

    front, s, clock = setup(polls_before_final=0)
    q = base.StatusQuery("Q5", "never", T0.date())
    request = BocB2eAdapter(session=s).encode(q, sender="C52240")
    answer = front.answer(request, clock.now)
    token = s.token
    [got] = BocB2eAdapter().decode_all(request + answer)
    assert isinstance(got, base.Result) and got.reply_to == "Q5" and got.ref == "never"
    assert s.token == token


def test_a_statement_request_with_a_bad_page_number_is_answered_not_crashed() -> None:
    front, s, clock = setup()
    page = StatementPage("p", PAYER, T0.date(), T0.date())
    data = s.request(page).replace(b"<begnum>1</begnum>", b"<begnum>x</begnum>")
    with pytest.raises(Refused):
        s.read(page, front.answer(data, clock.now))
