"""The daemon's heap settings: the cycle collector kept off what lives for the whole run."""

from __future__ import annotations

import gc

import pytest

from gateway.daemon import GC_YOUNG_THRESHOLD, gc_paused, settle_heap


def test_gc_paused_pauses_the_collector_and_always_restores_it() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a failing snapshot")
    assert gc.isenabled()


def test_gc_paused_leaves_a_pause_it_did_not_start() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_settle_heap_freezes_what_exists_and_only_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
