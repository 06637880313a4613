"""Every public real-world ISO 20022 file in tests/data/iso20022/real/ (see PROVENANCE.md there),
read as an operator reads a bank's file: what is readable is decoded, what is not is reported.

Each row pins what the adapter makes of one file: statements, balances, movements, booked
entries, pending entries, the transaction details of batch entries, the parts set apart as
problems, and the currencies reported; or, for a file refused as a whole, the reason.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from adapters import base
from adapters.base import AdapterError
from adapters.iso20022 import Iso20022Adapter

REAL = Path(__file__).resolve().parents[1] / "data" / "iso20022" / "real"
READER = Iso20022Adapter.for_operator_files()

# file, statements, balances, movements, entries, pending, details, problem parts, currencies
DECODED = [
    ("genkgo-camt__camt052.v2.xml", 1, 0, 0, 1, 0, 0, [], ['SEK']),
    ("genkgo-camt__camt052.v4.xml", 1, 1, 0, 0, 1, 0, [], ['CHF']),
    ("genkgo-camt__camt052.v6.Amt-zero.xml", 1, 1, 0, 0, 1, 0, [], ['CHF']),
    ("genkgo-camt__camt052.v6.xml", 1, 1, 0, 0, 1, 0, [], ['CHF']),
    ("genkgo-camt__camt052.v8.xml", 1, 0, 0, 1, 0, 0, [], ['SEK']),
    ("genkgo-camt__camt053.v2.five.decimals.xml", 1, 0, 0, 1, 0, 0, [], ['EUR']),
    ("genkgo-camt__camt053.v2.minimal.xml", 1, 3, 0, 1, 0, 0, [], ['CHF', 'EUR', 'JPY', 'SEK']),
    ("genkgo-camt__camt053.v2.multi.statement.xml", 2, 0, 0, 2, 0, 0, [], ['EUR']),
    ("genkgo-camt__camt053.v3.xml", 1, 3, 0, 1, 0, 0, [], ['CHF', 'EUR', 'JPY', 'SEK']),
    ("genkgo-camt__camt053.v4.xml", 1, 3, 0, 1, 0, 0, [], ['CHF', 'EUR', 'JPY', 'SEK']),
    ("genkgo-camt__camt053.v8.xml", 1, 3, 0, 1, 0, 0, [], ['CHF', 'EUR', 'JPY', 'SEK']),
    ("genkgo-camt__camt054.v2.xml", 0, 0, 1, 1, 0, 3, [], ['SEK']),
    ("genkgo-camt__camt054.v4.xml", 0, 0, 1, 1, 0, 3, [], ['SEK']),
    ("genkgo-camt__camt054.v8.xml", 0, 0, 1, 1, 0, 3, [], ['SEK']),
    ("hbci4java__test-camt-parse-05200102.xml", 1, 1, 0, 2, 0, 0, [], ['EUR']),
    ("hbci4java__test-camt-parse-05200108.xml", 1, 0, 0, 1, 0, 0, [], ['EUR']),
    # Made-up BICs (TEST12345 …, nine letters and digits: no ISO 9362 length) read as text and
    # flagged; the one entry, broken otherwise (an empty code), is set apart with its bytes.
    ("hbci4java__test-camt-ruecklastschrift.xml", 1, 1, 0, 0, 0, 0, ['Document', 'Rpt[1]/Ntry[1]'], ['EUR']),
    # ABN AMRO writes the servicer's BIC as the 2009 versions did: read as BICFI, flagged.
    ("oca-bank-statement-import__test-camt053-no-ntry.xml", 1, 0, 0, 0, 0, 0, ['Document'], ['CHF']),
    ("oca-bank-statement-import__test-camt053-txdtls.xml", 1, 0, 0, 0, 0, 0, ['Stmt[1]/Ntry[1]'], ['CHF']),
    ("oca-bank-statement-import__test-camt053.xml", 1, 0, 0, 3, 0, 2, [], ['EUR']),
    ("oca-bank-statement-import__test-camt054.xml", 0, 0, 1, 1, 0, 0, [], ['EUR']),
    ("viafintech-camt_parser__052-valid_example.xml", 1, 1, 0, 2, 0, 0, [], ['EUR']),
    ("viafintech-camt_parser__053-valid_example.xml", 1, 1, 0, 3, 0, 2, ['Document', 'Stmt[1]/Ntry[1]'], ['EUR']),
    ("viafintech-camt_parser__053-valid_example_v4.xml", 1, 0, 0, 13, 0, 23, [], ['CHF']),
    ("viafintech-camt_parser__053-valid_example_v8.xml", 1, 1, 0, 2, 0, 0, ['Stmt[1]/Ntry[1]'], ['CHF', 'EUR']),
    ("viafintech-camt_parser__053-valid_example_with_batch.xml", 1, 4, 0, 3, 0, 0, ['Document'], ['EUR']),
    ("viafintech-camt_parser__054-valid_example.xml", 0, 0, 1, 4, 0, 2, [], ['CHF']),
]

# file, the reason it is refused as a whole (a violation outside any entry or balance, or a
# status with no neutral meaning: verification-of-payee codes are no payment status)
REFUSED = [
    ("hbci4java__test-pain-parse-0020110-01.xml", "status 'RVNM' has no neutral meaning"),
    # Its made-up BICFI ABCDEFGHIJ is read as text now; the status is what refuses it.
    ("hbci4java__test-pain-parse-0020110-02.xml", "status 'RVNM' has no neutral meaning"),
    ("hbci4java__test-pain-parse-0020110-03.xml", "status 'RCVC' has no neutral meaning"),
]


def test_every_collected_file_is_pinned() -> None:
    pinned = {row[0] for row in DECODED} | {row[0] for row in REFUSED}
    assert pinned == {p.name for p in REAL.glob("*.xml")}
    assert len(pinned) >= 15


@pytest.mark.parametrize("row", DECODED, ids=[row[0] for row in DECODED])
def test_a_real_file_decodes_completely_or_with_its_problems(row: tuple) -> None:
    name, statements, balances, movements, entries, pending, details, parts, currencies = row
    messages = READER.decode_document((REAL / name).read_bytes())
    kinds = [type(m) for m in messages]
    assert (kinds.count(base.Statement), kinds.count(base.Balance), kinds.count(base.Movement)) == (
        statements, balances, movements)
    booked = [e for m in messages for e in getattr(m, "entries", ())]
    assert len(booked) == entries
    assert sum(len(getattr(m, "pending", ())) for m in messages) == pending
    assert sum(len(e.details) for e in booked) == details
    problems = [p for m in messages for p in getattr(m, "problems", ())]
    assert sorted({p.part for p in problems}) == parts
    for p in problems:
        assert p.reason and (p.raw or p.part == "Document")
    said = {getattr(m, "currency", "") for m in messages} | {e.currency for e in booked}
    assert sorted(said - {""}) == currencies


@pytest.mark.parametrize("name, reason", REFUSED, ids=[row[0] for row in REFUSED])
def test_a_real_file_refused_as_a_whole_says_why(name: str, reason: str) -> None:
    with pytest.raises(AdapterError, match=reason.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        READER.decode_document((REAL / name).read_bytes())


def test_a_balance_in_jpy_is_read_in_whole_yen_beside_the_others() -> None:
    messages = READER.decode_document((REAL / "genkgo-camt__camt053.v2.minimal.xml").read_bytes())
    yen = [m for m in messages if isinstance(m, base.Balance) and m.currency == "JPY"]
    assert len(yen) == 1
    raw = (REAL / "genkgo-camt__camt053.v2.minimal.xml").read_text()
    assert 'Ccy="JPY"' in raw and yen[0].balance != 0


def test_pending_entries_of_a_report_are_kept_apart_never_booked() -> None:
    (statement, _) = READER.decode_document((REAL / "genkgo-camt__camt052.v4.xml").read_bytes())
    assert isinstance(statement, base.Statement)
    assert statement.entries == () and len(statement.pending) == 1
    assert statement.pending[0].currency == "SEK"   # the entry's own, not the account's CHF
    assert statement.pending[0].amount == -20000000   # a 200000 SEK debit, in öre


def test_every_transaction_of_a_batch_entry_is_kept() -> None:
    (statement,) = READER.decode_document((REAL / "viafintech-camt_parser__053-valid_example_v4.xml")
                                          .read_bytes())
    assert isinstance(statement, base.Statement)
    batches = [e for e in statement.entries if e.details]
    assert batches
    for entry in batches:
        amounts = [d.amount for d in entry.details]
        if None not in amounts:
            assert sum(amounts) == entry.amount   # the batch's transactions add up to it


def test_elements_out_of_schema_order_are_read_and_flagged() -> None:
    messages = READER.decode_document(
        (REAL / "viafintech-camt_parser__053-valid_example_with_batch.xml").read_bytes())
    (flag,) = {p for m in messages for p in getattr(m, "problems", ())}
    assert flag.part == "Document" and "out of schema order" in flag.reason
    assert sum(len(getattr(m, "entries", ())) for m in messages) == 3


def test_an_entry_breaking_its_schema_is_set_apart_with_its_bytes_and_the_rest_is_read() -> None:
    body = (REAL / "viafintech-camt_parser__053-valid_example_v8.xml").read_bytes()
    statement = READER.decode_document(body)[0]
    assert isinstance(statement, base.Statement)
    (problem,) = statement.problems
    assert problem.part == "Stmt[1]/Ntry[1]" and "UETR" in problem.reason
    assert problem.raw.startswith(b"<Ntry") and b"UETR" in problem.raw
    assert len(statement.entries) == 2 and statement.closing_balance is not None
    assert all(e.value_date > dt.date(2000, 1, 1) for e in statement.entries)


def _with_bic(name: str, good: str, odd: str) -> bytes:
    raw = (REAL / name).read_bytes()
    assert raw.count(good.encode()) == 3     # the servicer, the debtor's and the creditor's agents
    return raw.replace(good.encode(), odd.encode())


def test_an_odd_bic_is_read_as_text_and_flagged_not_a_reason_to_refuse() -> None:
    # The tolerant-reader rule (docs/protocols/iso20022.md, "Odd BICs"): a bank identifier
    # that breaks only its schema pattern carries no amount, date, sign or status.
    for odd in ("TEST12345", "kredbebb", "ABC"):
        messages = READER.decode_document(_with_bic("genkgo-camt__camt053.v3.xml", "KREDBEBB", odd))
        [statement] = [m for m in messages if isinstance(m, base.Statement)]
        assert [e.counterparty_bank_code for e in statement.entries] == [odd]
        flags = statement.problems
        assert len(flags) == 3 and all(f.part == "Document" and repr(odd) in f.reason
                                       and "ISO 9362" in f.reason for f in flags)
    # The file as published reads with no problem at all.
    clean = READER.decode_document((REAL / "genkgo-camt__camt053.v3.xml").read_bytes())
    assert [p for m in clean for p in getattr(m, "problems", ())] == []


@pytest.mark.parametrize("bad", ["KRED BEBB", "KREDBEBB-XX", "KREDBEBBXXXX1"])
def test_a_plainly_invalid_bic_still_refuses_the_document(bad: str) -> None:
    # Not even an identifier's text (a space, punctuation, over 11 characters): refused, named.
    with pytest.raises(AdapterError, match="is not valid against its schema.*BIC"):
        READER.decode_document(_with_bic("genkgo-camt__camt053.v3.xml", "KREDBEBB", bad))
