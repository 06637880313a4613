"""What the matcher is told: its thresholds, a centre's own alert conditions, and the registers.

Plain frozen values built by the ledger from its config (and the console's conditions), given to
:class:`gateway.ledger.matcher.Matcher`; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["AccountInfo", "CentreConditions", "CounterpartyInfo", "Registry", "Thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """The matcher's knobs.  Money in fen, times in seconds.

    ``retention_s`` (optional) is how long an idle
    record is kept; it is never less than ``result_deadline_s +
    booking_deadline_s`` and defaults to twice that.
    """

    large_amount: int
    result_deadline_s: float
    booking_deadline_s: float
    balance_tolerance: int = 0
    retention_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.large_amount, bool) or not isinstance(self.large_amount, int) \
                or self.large_amount <= 0:
            raise ValueError("large_amount must be a positive number of fen")
        if isinstance(self.balance_tolerance, bool) or not isinstance(self.balance_tolerance, int) \
                or self.balance_tolerance < 0:
            raise ValueError("balance_tolerance must be a non-negative number of fen")
        for name in ("result_deadline_s", "booking_deadline_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.retention_s is not None and not self.retention_s > 0:
            raise ValueError("retention_s must be positive")

    @property
    def retention(self) -> float:
        """Seconds an idle record is kept: always past every deadline."""
        floor = self.result_deadline_s + self.booking_deadline_s
        return 2 * floor if self.retention_s is None else max(self.retention_s, floor)


@dataclass(frozen=True)
class CentreConditions:
    """A centre's own alert conditions, set in the console (None: the configured threshold).

    Read live: a change applies to the next fact the matcher takes, without a restart.
    """

    large_amount: int | None = None
    balance_tolerance: int | None = None
    result_deadline_s: float | None = None
    unregistered_counterparty: bool | None = None


@dataclass(frozen=True)
class AccountInfo:
    """A registered account: the bank holding it, the owning centre, and whether it is a 专户."""

    bank: str
    centre: str
    special: bool


@dataclass(frozen=True)
class CounterpartyInfo:
    """A registered counterparty (往来单位备案)."""

    name: str
    bank_code: str


@dataclass(frozen=True)
class Registry:
    """The ledger's own register of accounts and counterparties (keyed by account number)."""

    accounts: Mapping[str, AccountInfo] = field(default_factory=dict)
    counterparties: Mapping[str, CounterpartyInfo] = field(default_factory=dict)

    def counterparty_registered(self, account: str, bank_code: str = "") -> bool:
        """True for a registered counterparty or one of the centres' own accounts.

        A registered counterparty reported with a different bank code is a
        different account, so it is not registered.
        """
        if account in self.accounts:
            return True
        info = self.counterparties.get(account)
        if info is None:
            return False
        return not (bank_code and info.bank_code and bank_code != info.bank_code)
