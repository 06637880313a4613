"""A deterministic simulation of the relay: thousands of seeded schedules against the pure Outbox.

Each seed builds a :class:`~tests.faults.relay_world.World` (the Outbox of a
gateway node, a model of its durable store, a lossy line, a model bank that
executes each reference at most once) with a window and a status cadence
drawn from the seed, and runs a random schedule: commits of new
instructions, database commits that succeed or fail, messages delivered,
lost, duplicated and reordered in both directions, link drops, time passing
(the driver's timer firing at each deadline), and crashes that keep only the
writes already committed (a restart is a fresh Outbox loaded from the
store).  Every step is checked as it happens (G1, G2 with its resend rule,
the window, never final twice, never backwards, the outcome recorded is the
bank's); at the end the line heals, and every instruction must be final or
``in_doubt`` with every final one executed exactly once.

Nothing here reads a clock or a global random source, so a seed is a replay:
a failure prints ``HPF_RELAY_SIM_SEED=N``, which runs that one seed alone.
``HPF_RELAY_SIM_SEEDS`` sets how many seeds (default 2,000).
"""

from __future__ import annotations

import os
import random

import pytest

from gateway.outbox import Schedule
from tests.faults.relay_world import Broken, World, apply_step, random_steps

SEEDS = int(os.environ.get("HPF_RELAY_SIM_SEEDS", "2000"))
ONE = os.environ.get("HPF_RELAY_SIM_SEED")
STEPS = 60


def world_for(seed: int) -> tuple[World, list[tuple[str, int, int]]]:
    """The world and the schedule of steps that ``seed`` stands for (a pure function of the seed)."""
    rng = random.Random(seed)
    schedule = Schedule(receipt_timeout=2.0, give_up_unconfirmed=rng.choice([5.0, 9.0]),
                        first_query_after=rng.choice([1.0, 3.0]), query_interval=1.0,
                        query_backoff=rng.choice([1.0, 2.0]), max_query_interval=rng.choice([None, 3.0]),
                        query_attempts=rng.choice([1, 3]), give_up_after=rng.choice([None, None, 8.0]),
                        ask_before_resend=rng.random() < 0.3)
    world = World(random.Random(rng.getrandbits(64)), window=rng.choice([1, 2, 4]), schedule=schedule,
                  stuck_rate=rng.choice([0.0, 0.2]), sync_rate=rng.choice([0.0, 0.5]))
    world.link_up()
    return world, random_steps(rng, STEPS)


def run_seed(seed: int) -> World:
    world, steps = world_for(seed)
    for step in steps:
        apply_step(world, step)
    world.heal_and_settle()
    return world


def _replay(seed: int) -> str:
    return f"HPF_RELAY_SIM_SEED={seed} python -m pytest -q -p no:cacheprovider tests/faults/test_relay_simulation.py"


def test_every_seed_keeps_the_relays_promises() -> None:
    seeds = [int(ONE)] if ONE else range(SEEDS)
    ran = crashed = in_doubt = 0
    for seed in seeds:
        try:
            world = run_seed(seed)
        except Broken as e:
            pytest.fail(f"seed {seed}: {e}\nreplay: {_replay(seed)}", pytrace=False)
        except Exception as e:  # an outbox invariant (Outbox.check) or a crash of the machine itself
            pytest.fail(f"seed {seed}: {type(e).__name__}: {e}\nreplay: {_replay(seed)}")
        ran += 1
        crashed += world.restarts > 0
        in_doubt += any(s.state == "in_doubt" for s in world.store.values())
    # The schedules reach the cases that matter (else the seeds prove little).
    if not ONE:
        assert crashed > ran // 20 and in_doubt > ran // 20, (ran, crashed, in_doubt)


def test_a_seed_is_a_replay() -> None:
    a, b = run_seed(17), run_seed(17)
    assert a.journal == b.journal and a.seq == b.seq and a.now == b.now
