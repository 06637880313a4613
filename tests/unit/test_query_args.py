"""The one reader of query arguments: each layer's refusal, raised with the argument's name."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from gateway.query_args import QueryArgs


class Refusal(Exception):
    pass


class Request:
    def __init__(self, **args: bytes) -> None:
        self.args = {k.encode(): [v] for k, v in args.items()}


ARGS = QueryArgs(lambda name, reason: Refusal(f"{name} {reason}"))


def test_present_values_are_read_and_absent_ones_are_none_or_the_default() -> None:
    r = Request(limit=b"7", state=b"open", day=b"2026-11-27", ref=b"AB12")
    assert ARGS.integer(r, b"limit", 100, 1, 1000) == 7
    assert ARGS.integer(r, b"after", 0, 0, 10) == 0
    assert ARGS.choice(r, b"state", ("open", "resolved")) == "open"
    assert ARGS.pattern(r, b"ref", re.compile(r"[A-Z0-9]+")) == "AB12"
    assert ARGS.date(r, b"day") == dt.date(2026, 11, 27)
    assert ARGS.text(r, b"missing") is None and ARGS.date(r, b"missing") is None


@pytest.mark.parametrize(("args", "call", "message"), [
    ({"limit": b"0"}, lambda r: ARGS.integer(r, b"limit", 100, 1, 1000), "limit must be a whole number from 1 to 1000"),
    ({"limit": b"-1"}, lambda r: ARGS.integer(r, b"limit", 100, 1, 1000), "limit must be a whole number"),
    ({"after": b"9" * 20}, lambda r: ARGS.integer(r, b"after", 0, 0, 10**30), "after must be a whole number"),
    ({"lang": b"\xff"}, lambda r: ARGS.text(r, b"lang"), "lang is not UTF-8"),
    ({"state": b"gone"}, lambda r: ARGS.choice(r, b"state", ("open",)), "state is not one of the choices"),
    ({"ref": b"a b"}, lambda r: ARGS.pattern(r, b"ref", re.compile(r"[a-z]+")), "ref is not valid"),
    ({"day": b"2026-11-27T10"}, lambda r: ARGS.date(r, b"day"), "day must be a date YYYY-MM-DD"),
    ({"day": b"2026-13-01"}, lambda r: ARGS.date(r, b"day"), "day must be a date YYYY-MM-DD"),
])
def test_a_bad_value_is_refused_in_the_layers_own_way(args, call, message) -> None:
    with pytest.raises(Refusal, match=message):
        call(Request(**args))
