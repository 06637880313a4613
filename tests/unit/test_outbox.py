"""The Outbox's promises under random inputs (Hypothesis), and a bank's status cadence.

The property drives a :class:`~tests.faults.relay_world.World` (the outbox, a
model store, a lossy line, a model bank) through any sequence of inputs:
commits, database commits that succeed or fail, messages delivered in any
order, lost and duplicated, link drops, time, crashes.  Checked at every
effect (the world raises :class:`Broken`), the exact invariants are:

- G1: an Ack (or a refusal) is returned only by ``recorded``, after the commit.
- With ``ask_before_resend``: a reference that really went out before (by this
  node or one that crashed) goes again only after a NotFound about it.
- G2: every Send follows its committed claim (the store counts the send
  first); no Send of a reference after this node heard a receipt or a result
  for it, nor when the store has it accepted or settled; two Sends of one
  reference are separated by at least ``receipt_timeout``, a new link
  generation, or a NotFound status answer for it (the unconfirmed-receipt
  resend rule: nothing else ever sends a reference again).
- The window: references sent on the current link, with no answer and their
  receipt deadline not passed, never exceed ``window``
  (and inside, ``CLAIMING + AWAITING_RECEIPT <= window``: ``Outbox.check``).
- Never final twice, never backwards; a final state is the bank's outcome.
- At the end, with a healed line, everything is final or in_doubt and each
  final reference was executed by the bank exactly once.
"""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import base as msg
from gateway.outbox import Open, Phase, Schedule
from tests.faults.relay_world import SCHEDULE, STEPS, Node, World, apply_step

step = st.tuples(st.sampled_from(STEPS), st.integers(0, 999), st.integers(0, 999))


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step, max_size=80), seed=st.integers(0, 2**32), window=st.integers(1, 4),
       ask=st.booleans())
def test_the_outbox_keeps_its_promises_whatever_comes_in(steps, seed, window, ask) -> None:
    world = World(random.Random(seed), window=window, schedule=dataclasses.replace(SCHEDULE, ask_before_resend=ask))
    world.link_up()
    for s in steps:
        apply_step(world, s)
    world.heal_and_settle()


def test_the_wait_between_inquiries_backs_off_up_to_its_cap() -> None:
    s = Schedule(query_interval=5.0, query_backoff=2.0, max_query_interval=30.0)
    assert [s.wait_after(k) for k in range(1, 7)] == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]
    assert [Schedule().wait_after(k) for k in (1, 2, 3)] == [5.0, 5.0, 5.0]  # the default: no backoff
    steep = Schedule(query_interval=1.0, query_backoff=10.0)  # no cap given: a day at most, never overflowing
    assert steep.wait_after(3) == 100.0 and steep.wait_after(1000) == 86400.0


def _confirmed(schedule: Schedule) -> Node:
    node = Node(schedule=schedule)
    node.up()
    node.submit("R1")
    node.hear(msg.Receipt("B1", "R1", "R1"))
    node.commit()
    return node


def test_a_polling_bank_is_asked_on_its_own_cadence_then_given_up() -> None:
    node = _confirmed(Schedule(first_query_after=2.0, query_interval=1.0, query_backoff=3.0,
                               max_query_interval=20.0, query_attempts=5))
    node.wait(1000)
    assert [at for at, _, _ in node.queries] == [2.0, 3.0, 6.0, 15.0, 35.0]
    [overdue] = node.commit()
    assert node.states["R1"] == "in_doubt" and "after 5 status inquiries" in overdue.text
    assert node.now >= 55.0 and node.ob.entries == {}


def test_give_up_after_bounds_the_total_time_whatever_the_attempts() -> None:
    node = _confirmed(Schedule(first_query_after=10.0, query_interval=10.0, query_attempts=100,
                               give_up_after=35.0))
    node.wait(1000)
    assert [at for at, _, _ in node.queries] == [10.0, 20.0, 30.0]
    [overdue] = node.commit()
    assert "within 35 s of the receipt" in overdue.text and node.states["R1"] == "in_doubt"


def test_give_up_after_runs_even_while_the_link_is_down() -> None:
    node = _confirmed(Schedule(first_query_after=10.0, query_interval=10.0, query_attempts=100,
                               give_up_after=35.0))
    node.down()
    node.wait(40)
    assert node.queries == []
    node.commit()
    assert node.states["R1"] == "in_doubt"


def test_an_answer_to_an_inquiry_is_not_acknowledged_and_ends_the_inquiries() -> None:
    node = _confirmed(Schedule(first_query_after=2.0, query_interval=1.0, query_attempts=5))
    node.wait(2.5)
    [(_, _, seq)] = node.queries
    node.hear(msg.Result("B9", seq, "R1", True, "H1"))
    node.commit()
    node.wait(100)
    assert len(node.queries) == 1 and node.acks == [] and node.states["R1"] == "succeeded"


def test_stale_timers_do_not_pile_up_behind_a_long_deadline() -> None:
    node = _confirmed(Schedule(first_query_after=86400.0))  # R1: a deadline a day away, at the top
    for i in range(2000):
        node.submit(f"S{i}")
        node.hear(msg.Result(f"B{i}", f"S{i}", f"S{i}", True))
        node.commit()
    assert len(node.ob.entries) == 1 and len(node.ob._timers) <= 2 * len(node.ob.entries) + 64
    node.wait(86400.0)
    assert [ref for _, ref, _ in node.queries] == ["R1"]


ASK = Schedule(receipt_timeout=10.0, give_up_unconfirmed=30.0, ask_before_resend=True)


def test_asking_before_a_resend_sends_again_only_on_not_found() -> None:
    node = Node(schedule=ASK)
    node.up()
    node.submit("R1")
    node.wait(10.0)  # no receipt in time: ask, do not send
    assert node.sent_refs() == ["R1"] and [(at, ref) for at, ref, _ in node.queries] == [(10.0, "R1")]
    node.wait(10.0)  # no answer either: ask again
    assert node.sent_refs() == ["R1"] and len(node.queries) == 2
    node.hear(msg.NotFound("B1", node.queries[-1][2], "R1"))
    assert node.sent == [(0.0, "R1"), (20.0, "R1")]


def test_asking_before_a_resend_a_not_found_older_than_the_latest_send_clears_nothing() -> None:
    node = Node(schedule=ASK)
    node.up()
    node.submit("R1")
    node.wait(10.0)
    node.wait(10.0)  # two inquiries on the wire
    first, second = node.queries[0][2], node.queries[1][2]
    node.hear(msg.NotFound("B1", first, "R1"))  # cleared: sent again
    assert node.sent == [(0.0, "R1"), (20.0, "R1")]
    # The second was answered before the resend reached the bank: stale, it sends nothing.
    node.hear(msg.NotFound("B2", second, "R1"))
    assert node.sent == [(0.0, "R1"), (20.0, "R1")]


def test_asking_before_a_resend_a_processing_answer_confirms_it() -> None:
    node = Node(schedule=ASK)
    node.up()
    node.submit("R1")
    node.wait(10.0)
    node.hear(msg.Receipt("B1", node.queries[-1][2], "R1"))
    assert node.ob.phase("R1") is Phase.AWAITING_RESULT
    node.wait(5.0)
    assert node.sent_refs() == ["R1"]


def test_asking_before_a_resend_covers_a_relink_and_a_restart_and_gives_up_in_time() -> None:
    node = Node(schedule=ASK)
    node.run(node.ob.loaded([Open("R1", {}, sends=1), Open("R2", {})], 0.0))  # R1: sent by the dead node
    node.up()
    assert node.sent_refs() == ["R2"] and [ref for _, ref, _ in node.queries] == ["R1"]
    node.down()
    node.up()
    assert node.sent_refs() == ["R2"], "nothing sent blindly after a relink"
    assert [ref for _, ref, _ in node.queries] == ["R1", "R1", "R2"]
    node.wait(40.0)
    assert node.sent_refs() == ["R2"]
    node.commit()
    assert node.states == {"R1": "in_doubt", "R2": "in_doubt"}
