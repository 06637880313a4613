"""The console's state, independent of HTTP: its configuration, database, engine, keys, CSRF secret,
compiled templates, static assets and day totals (what every page module reads)."""

from __future__ import annotations

import json
import secrets
from importlib.resources import files
from typing import TYPE_CHECKING, Mapping

import jinja2

from gateway.ledger import store
from gateway.ledger.config import LedgerConfig, PublicSigningKey
from gateway.ledger.console import totals
from gateway.ledger.console.common import _STATIC, _local
from gateway.ledger.console.scope import centres_of_config, city_of
from gateway.model import format_amount

if TYPE_CHECKING:
    from gateway.ledger.engine import MatchEngine
    from gateway.ledger.metrics import LedgerMetrics

__all__ = ["Console"]


class Console:
    """The console's state and operations, independent of HTTP: config, database, keys, CSRF secret."""

    def __init__(self, config: LedgerConfig, db: store.LedgerDatabase, engine: MatchEngine,
                 keys: Mapping[str, tuple[str, PublicSigningKey]], metrics: LedgerMetrics,
                 *, secret: bytes | None = None) -> None:
        assert config.console is not None
        self.config = config
        self.db = db
        self.engine = engine
        self.keys = keys
        self.metrics = metrics
        self.secret = secret or secrets.token_bytes(32)
        self.centres = centres_of_config(config)
        self.totals = totals.DailyTotals()
        self.alert_totals = totals.AlertTotals()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("gateway.ledger.console", "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(amount=lambda v: "" if v is None else format_amount(v), local=_local,
                                     pretty=lambda v: json.dumps(v, indent=1, ensure_ascii=False, sort_keys=True))
        self.static = {name: files("gateway.ledger.console").joinpath("static", name).read_bytes()
                       for name in _STATIC}
        # Every template compiled now, at the start, not in the first request of each page (80 ms and
        # more for the evidence page's on a loaded machine: the bench's first request paid it).
        for name in self.templates.list_templates():
            self.templates.get_template(name)

    def days_us(self, days: int) -> int:
        """A deadline of ``days`` days in microseconds (a day is ``[console] deadline_day`` seconds)."""
        assert self.config.console is not None
        return round(days * self.config.console.deadline_day * 1_000_000)

    def city_name(self, centre: str | None) -> str:
        cities = self.config.console.cities if self.config.console else {}
        key = city_of(centre, cities)
        return cities[key].name if key else ""
