"""The ledger forwarder's schedule (gateway.forwarder.Cadence): nothing read while nothing happens."""

from __future__ import annotations

import pytest

from gateway.forwarder import Cadence


def cadence() -> Cadence:
    return Cadence(batch=500, interval=0.05, idle_interval=5.0)


def test_an_idle_journal_is_looked_at_only_every_idle_interval():
    c = cadence()
    c.begin(100.0)
    assert c.sent(0, 100.01) == 5.0


def test_a_wake_brings_the_next_round_forward_but_keeps_rounds_an_interval_apart():
    c = cadence()
    c.begin(100.0)
    assert c.sent(0, 100.01) == 5.0
    assert c.woken(100.02, running=False) == pytest.approx(0.04)   # not before 100.06
    assert c.woken(101.0, running=False) == 0.0                    # long after: at once


def test_a_wake_during_a_round_makes_the_next_follow_it_an_interval_after_it_ended():
    c = cadence()
    c.begin(100.0)
    assert c.woken(100.01, running=True) is None   # the running round decides
    assert c.sent(3, 100.02) == pytest.approx(0.05)
    c.begin(100.07)
    assert c.sent(0, 100.08) == 5.0                 # that wake is spent


def test_a_full_batch_is_followed_at_once():
    c = cadence()
    c.begin(100.0)
    assert c.sent(500, 100.2) == 0.0


def test_failures_back_off_and_a_wake_does_not_cut_the_backoff_short():
    c = cadence()
    assert [c.failed() for _ in range(3)] == [0.5, 1.0, 2.0]
    assert c.woken(100.0, running=False) is None
    assert max(c.failed() for _ in range(20)) == 30.0
    c.begin(200.0)
    assert c.sent(1, 200.1) == 5.0   # a success clears the backoff
    assert c.failures == 0
    assert c.woken(200.2, running=False) == 0.0


def test_the_interval_cannot_exceed_the_idle_interval():
    with pytest.raises(ValueError):
        Cadence(batch=500, interval=2.0, idle_interval=1.0)
