"""Who is looking, and what they may see and do: the console's roles and scope rules (pure).

- a province supervisor (``hpf://supervisor/NAME`` listed in ``[supervisors]``, not a
  city supervisor) sees every city and centre, and alone edits alert conditions;
- a city supervisor (``[console.city_supervisors]``) sees its city's centres only;
- centre staff (``hpf://staff/NAME`` in ``[console.staff]``) see their centre's
  alerts, inquiries and rectifications only, and may only answer them.

Nobody edits a money fact: no page writes a copy.  Every page and action asks
:class:`Viewer` on the server, whatever the browser was shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from gateway.ledger.config import LedgerConfig
from gateway.tls import PeerIdentity

__all__ = ["PROVINCE", "CITY", "STAFF", "Viewer", "viewer_for", "centres_of_config"]

PROVINCE, CITY, STAFF = "province", "city", "staff"


@dataclass(frozen=True)
class Viewer:
    """An authenticated console user: ``centres`` None means every centre (province level)."""

    uri: str
    name: str
    level: str
    centres: frozenset[str] | None
    city: str | None = None

    @property
    def supervisor(self) -> bool:
        """Supervisors (province or city) ask, acknowledge, note, raise and approve; staff answer."""
        return self.level in (PROVINCE, CITY)

    @property
    def province(self) -> bool:
        return self.level == PROVINCE

    def sees_centre(self, centre: str | None) -> bool:
        """Whether a fact of ``centre`` is in scope; facts of no centre are the province's only."""
        if self.centres is None:
            return True
        return centre is not None and centre in self.centres

    def visible(self, centres: list[str] | tuple[str, ...]) -> list[str]:
        """The centres of ``centres`` in scope, in order."""
        return [c for c in centres if self.sees_centre(c)]


def centres_of_config(config: LedgerConfig) -> list[str]:
    """Every centre the ledger knows from its registers and cities, sorted."""
    found = {a.centre for a in config.accounts.values()}
    if config.console is not None:
        for city in config.console.cities.values():
            found.update(city.centres)
    return sorted(found)


def viewer_for(identity: PeerIdentity | None, config: LedgerConfig) -> Viewer | None:
    """The console user a certificate identity is, or None when it may not use the console."""
    console = config.console
    if identity is None or console is None:
        return None
    if identity.role == "supervisor" and identity.name in config.supervisors:
        city_key = console.city_supervisors.get(identity.name)
        if city_key is None:
            return Viewer(identity.uri, identity.name, PROVINCE, None)
        city = console.cities[city_key]
        return Viewer(identity.uri, identity.name, CITY, frozenset(city.centres), city_key)
    if identity.role == "staff" and identity.name in console.staff:
        staff = console.staff[identity.name]
        return Viewer(identity.uri, identity.name, STAFF, frozenset({staff.centre}))
    return None


def city_of(centre: str | None, cities: Mapping[str, object]) -> str | None:
    """The key of the city ``centre`` belongs to, if any."""
    for key, city in cities.items():
        if centre in getattr(city, "centres", ()):
            return key
    return None
