"""Reading a schema-validated document: namespaced child lookups and the shared ISO pieces.

The schema has already guaranteed every element's presence, order and lexical form, so the
readers here only pick values out and refuse what the neutral vocabulary cannot hold.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Iterator

from lxml import etree

from adapters.base import AdapterError

from . import _values as v

__all__ = ["Reader", "Tags", "at", "children", "first", "tags", "text_at"]

Element = etree._Element


class Tags(dict[str, str]):
    """``tags(ns)["MsgId"]`` is ``"{ns}MsgId"``, computed once per name."""

    def __init__(self, ns: str) -> None:
        super().__init__()
        self.ns = ns

    def __missing__(self, name: str) -> str:
        tag = self[name] = f"{{{self.ns}}}{name}" if self.ns else name   # lxml: no namespace, no braces
        return tag


@functools.lru_cache(maxsize=32)
def tags(ns: str) -> Tags:
    return Tags(ns)


def first(el: Element | None, tag: str) -> Element | None:
    """The first child of ``el`` named ``tag`` (a C-level filtered scan, cheaper than find)."""
    if el is None:
        return None
    for child in el.iterchildren(tag):
        return child
    return None


def children(el: Element | None, tag: str) -> Iterator[Element]:
    if el is None:
        return iter(())
    return el.iterchildren(tag)


def at(el: Element | None, *path: str) -> Element | None:
    for tag in path:
        el = first(el, tag)
        if el is None:
            return None
    return el


def text_at(el: Element | None, *path: str) -> str:
    """The text of the element at ``path`` below ``el``; empty when absent."""
    found = at(el, *path)
    if found is None:
        return ""
    return found.text or ""


class Reader:
    """Reads the ISO pieces shared by every message of one namespace, with the adapter's
    currency rule."""

    def __init__(self, ns: str, currencies: frozenset[str] | None) -> None:
        self.t = tags(ns)
        self.currencies = currencies

    def money(self, field: str, el: Element | None) -> tuple[int, str]:
        """An ``...AndAmount`` element (with its ``Ccy``) as (unsigned minor units in the
        currency's own ISO 4217 exponent, currency)."""
        if el is None:
            raise AdapterError(f"{field}: missing")
        currency = (el.get("Ccy") or "").strip()
        digits = v.minor_units(field, currency, self.currencies)
        return v.parse_amount(field, el.text, digits), currency

    def amount(self, field: str, el: Element | None) -> int:
        return self.money(field, el)[0]

    def signed_money(self, field: str, parent: Element, amount_tag: str = "Amt") -> tuple[int, str]:
        """``Amt`` with the sibling ``CdtDbtInd``: a debit is negative."""
        t = self.t
        minor, currency = self.money(field, first(parent, t[amount_tag]))
        indicator = text_at(parent, t["CdtDbtInd"]).strip()
        if indicator not in ("CRDT", "DBIT"):
            raise AdapterError(f"{field}: CdtDbtInd must be CRDT or DBIT, not {v.show(indicator)}")
        return (-minor if indicator == "DBIT" else minor), currency

    def signed(self, field: str, parent: Element, amount_tag: str = "Amt") -> int:
        return self.signed_money(field, parent, amount_tag)[0]

    def currency(self, field: str, el: Element | None) -> None:
        if el is not None:
            v.minor_units(field, (el.text or "").strip(), self.currencies)

    def date_choice(self, field: str, el: Element | None) -> _dt.datetime | _dt.date | None:
        """A ``Dt``/``DtTm`` choice: a date, a datetime, or None when absent."""
        if el is None:
            return None
        t = self.t
        dt = first(el, t["DtTm"])
        if dt is not None:
            return v.parse_datetime(field, dt.text)
        return v.parse_date(field, text_at(el, t["Dt"]))

    def account_id(self, field: str, acct: Element | None) -> str:
        """``.../Id/IBAN`` or ``.../Id/Othr/Id`` of a cash account; empty when absent."""
        ident = first(acct, self.t["Id"])
        if ident is None:
            return ""
        iban = first(ident, self.t["IBAN"])
        if iban is not None:
            return iban.text or ""
        return text_at(ident, self.t["Othr"], self.t["Id"])

    def agent_code(self, agent: Element | None) -> str:
        """A financial institution's code: clearing member id, else BIC, else other id."""
        t = self.t
        fin = first(agent, t["FinInstnId"])
        if fin is None:
            return ""
        # BIC in the 2009 versions, BICFI from .03 on: a version-agnostic reader takes either.
        return (text_at(fin, t["ClrSysMmbId"], t["MmbId"]) or text_at(fin, t["BICFI"])
                or text_at(fin, t["BIC"]) or text_at(fin, t["Othr"], t["Id"]))

    def party_name(self, party: Element | None) -> str:
        """The name of a party: ``Nm`` up to the .06 versions, ``Pty/Nm`` (or
        ``Agt/FinInstnId/Nm``) from .07 on; whichever the document has."""
        if party is None:
            return ""
        t = self.t
        return (text_at(party, t["Nm"]) or text_at(party, t["Pty"], t["Nm"])
                or text_at(party, t["Agt"], t["FinInstnId"], t["Nm"]))
