"""Fixtures shared by the security tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.security.demo_run import DemoRun, run_demo


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., DemoRun]:
    """``demo_run(umask=..., faults=...)``: one demo run per distinct arguments, shared by every test."""
    runs: dict[tuple[int, str], DemoRun] = {}

    def get(*, umask: int, faults: str = "") -> DemoRun:
        key = (umask, faults)
        if key not in runs:
            runs[key] = run_demo(tmp_path_factory.mktemp(f"demo-{umask:03o}"), umask=umask, faults=faults)
        return runs[key]

    return get
