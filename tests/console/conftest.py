"""Fixtures for the console's browser tests: one ledger and one Chromium per module."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.console.support import CHROMIUM, CHROMIUM_ARGS, LedgerProcess, chromium_missing, start_ledger


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory, dev_pki: Any, other_ca_pki: Any) -> Iterator[LedgerProcess]:
    running = start_ledger(tmp_path_factory.mktemp("console-ledger"), dev_pki, other_ca_pki)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = chromium_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield b
        finally:
            b.close()
