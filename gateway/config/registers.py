"""``[accounts]`` and ``[counterparties]``: the registers instructions are checked against."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Collection

from gateway.config._base import Checker
from gateway.config.banks import _BANK_ID
from gateway.config.centres import _CENTRE_ID
from gateway.config.toml import _show

ACCOUNT_TYPES = frozenset({"collection", "loan", "revenue", "other"})
"""Account kinds: 归集 collection, 贷款 loan, 增值收益 revenue, other."""

_ACCOUNT_NO = re.compile(r"[0-9A-Za-z-]{1,32}")
_BANK_CODE = re.compile(r"[0-9]{12}")
_ACCOUNT_KEYS = ("bank", "centre", "name", "type", "bank_code")
_COUNTERPARTY_KEYS = ("name", "bank_code")
# A centre's creditor.name is at most 60 characters (gateway.model), so a
# longer registered counterparty name could never match one; debit account
# names travel in the same bank fields.  Centre and bank names are only
# shown to people, so they get a looser cap.
_PARTY_NAME_MAX = 60


@dataclass(frozen=True)
class AccountConfig:
    """An account the gateway may debit, held at ``bank`` and owned by ``centre`` (both registered)."""

    number: str
    bank: str
    centre: str
    name: str
    type: str
    bank_code: str = ""       # the 12-digit CNAPS code of the branch holding it; "" = not registered


@dataclass(frozen=True)
class CounterpartyConfig:
    """A registered payee (往来单位备案): account number, name and 12-digit CNAPS bank code."""

    account: str
    name: str
    bank_code: str


class RegistersSection(Checker):
    """The checks of ``[accounts]`` and ``[counterparties]`` (a part of the config checker)."""

    def accounts(self, table: dict[str, Any], centres: Collection[str] | None,
                 banks: Collection[str] | None) -> dict[str, AccountConfig]:
        """The account register.  With ``centres`` and ``banks`` (the gateway's) each account's
        bank and centre must be defined in the file; with None (the ledger's, which names banks
        and centres without defining them) they must only be well-formed ids."""
        found: dict[str, AccountConfig] = {}
        for number, entry in self.entries(table, "accounts", _ACCOUNT_NO,
                                          "must be 1-32 of 0-9 A-Z a-z -"):
            at = ("accounts", number)
            self.keys(entry, at, _ACCOUNT_KEYS)
            bank = self._party(entry, at, "bank", banks, _BANK_ID, "must be 1-16 of A-Z 0-9")
            centre = self._party(entry, at, "centre", centres, _CENTRE_ID,
                                 "must be C and 5 digits (the centre's node number)")
            name = self.label(entry, at, "name", _PARTY_NAME_MAX)
            kind = self.string(entry, at, "type")
            if kind is not None and kind not in ACCOUNT_TYPES:
                self.problem(at + ("type",),
                             f"must be one of {', '.join(sorted(ACCOUNT_TYPES))}, not {_show(kind)}")
                kind = None
            bank_code = "" if "bank_code" not in entry else self.string(
                entry, at, "bank_code", pattern=_BANK_CODE, what="must be a 12-digit CNAPS code")
            if (bank is not None and centre is not None and name is not None and kind is not None
                    and bank_code is not None):
                found[number] = AccountConfig(number, bank, centre, name, kind, bank_code)
        return found

    def _party(self, entry: dict[str, Any], at: tuple[str, ...], key: str, defined: Collection[str] | None,
               pattern: re.Pattern[str], what: str) -> str | None:
        """An account's bank or centre: defined in its section, or (``defined`` None) well-formed."""
        if defined is None:
            return self.string(entry, at, key, pattern=pattern, what=what)
        value = self.string(entry, at, key)
        if value is not None and value not in defined:
            self.problem(at + (key,), f"no {key} {_show(value)} in [{key}s]")
            return None
        return value

    def counterparties(self, table: dict[str, Any]) -> dict[str, CounterpartyConfig]:
        found: dict[str, CounterpartyConfig] = {}
        for account, entry in self.entries(table, "counterparties", _ACCOUNT_NO,
                                           "must be 1-32 of 0-9 A-Z a-z -"):
            at = ("counterparties", account)
            self.keys(entry, at, _COUNTERPARTY_KEYS)
            name = self.label(entry, at, "name", _PARTY_NAME_MAX)
            bank_code = self.string(entry, at, "bank_code", pattern=_BANK_CODE,
                                    what="must be a 12-digit CNAPS code")
            if name is not None and bank_code is not None:
                found[account] = CounterpartyConfig(account, name, bank_code)
        return found
