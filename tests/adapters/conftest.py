"""Fixtures of the conformance suite: every installed adapter, with what the suite knows of it.

Any test that takes ``adapter_name`` (or ``kit``) runs once per adapter registered under the
``hpf_gateway.adapters`` entry-point group, so a newly installed adapter is picked up with no
change here.
"""

from __future__ import annotations

import pytest

from adapters.base import iter_adapter_names
from tests.adapters.kit import Kit, build_kit

_KITS: dict[str, Kit] = {}


def adapter_names() -> list[str]:
    """Every installed adapter's registered name, sorted, each once."""
    return sorted(set(iter_adapter_names()))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "adapter_name" in metafunc.fixturenames:
        names = adapter_names()
        metafunc.parametrize("adapter_name", names, ids=names)


@pytest.fixture
def kit(adapter_name: str) -> Kit:
    """The :class:`Kit` of the adapter under test (built once per adapter per session)."""
    built = _KITS.get(adapter_name)
    if built is None:
        built = _KITS[adapter_name] = build_kit(adapter_name)
    return built

