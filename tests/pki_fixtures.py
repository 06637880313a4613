"""Reusable pytest fixtures: real certificates from ``gateway.pki``.

Load from ``tests/conftest.py`` with ``from tests.pki_fixtures import *`` (or
as a plugin).  Both PKIs are built once per
session in a temporary directory; tests must not write into them (issue extra
certificates into their own ``tmp_path`` with ``gateway.pki.issue``).
"""

from __future__ import annotations

import pytest

from gateway.pki import DevPki, init_dev_pki

__all__ = ["DEV_BANKS", "DEV_CENTRES", "DEV_SUPERVISORS", "dev_pki", "other_ca_pki"]

#: What ``dev_pki`` contains, for tests that iterate over the parties.
DEV_BANKS: tuple[str, ...] = ("B001", "B002")
DEV_CENTRES: tuple[str, ...] = ("C52240", "C11000")
DEV_SUPERVISORS: tuple[str, ...] = ("sup1",)


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """The development PKI: one CA; gateway ``main``, ledger ``main``, banks
    B001 and B002, centres C52240 and C11000, supervisor ``sup1``."""
    return init_dev_pki(
        tmp_path_factory.mktemp("dev-pki") / "pki",
        banks=DEV_BANKS,
        centres=DEV_CENTRES,
        supervisors=DEV_SUPERVISORS,
    )


@pytest.fixture(scope="session")
def other_ca_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """An unrelated CA whose certificates claim the same identities as the dev
    PKI's: ``centre-C52240`` (hpf://centre/C52240), ``gateway`` and ``ledger``.
    Anything trusting only ``dev_pki`` must refuse all of them."""
    return init_dev_pki(
        tmp_path_factory.mktemp("other-ca-pki") / "pki",
        banks=(),
        centres=("C52240",),
        supervisors=(),
    )
