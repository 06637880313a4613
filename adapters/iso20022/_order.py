"""Telling a document that breaks its schema only by element order from one that breaks it
otherwise.

Real banks' files sometimes put a child before a sibling the schema wants first.  The official
ISO 20022 schemas are plain: every complex type is a sequence (possibly holding choices) of
named elements of named types, so the expected order of every element's children can be read
from the schema itself.  :func:`reordered` returns a copy of a document with every element's
children stably sorted into that order; if the copy is valid and the original was not, the
original failed on order alone.
"""

from __future__ import annotations

import copy
import functools
import threading
from pathlib import Path

from lxml import etree

__all__ = ["reordered"]

_XS = "{http://www.w3.org/2001/XMLSchema}"
_local = threading.local()


@functools.lru_cache(maxsize=64)
def _model(path: str) -> dict[str, list[tuple[str, str]]]:
    """complexType name -> its child elements ``(name, type)`` in schema order."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    tree = etree.parse(path, parser)
    types: dict[str, list[tuple[str, str]]] = {}
    for ct in tree.getroot().iterchildren(f"{_XS}complexType"):
        name = ct.get("name")
        if name:
            types[name] = [(el.get("name", ""), el.get("type", "")) for el in ct.iter(f"{_XS}element")]
    return types


def reordered(doc: etree._Element, schema_file: Path) -> etree._Element:
    """A copy of ``doc`` (a ``Document`` element) with every element's children in the order
    its type in ``schema_file`` declares; children the type does not name keep their place
    after the named ones (validation then fails on them, as it should)."""
    types = _model(str(schema_file))
    out = copy.deepcopy(doc)
    _sort(out, "Document", types)
    return out


def _sort(el: etree._Element, type_name: str, types: dict[str, list[tuple[str, str]]]) -> None:
    children = types.get(type_name)
    if not children:
        return
    rank = {name: i for i, (name, _) in enumerate(children)}
    of_type = dict(children)
    kids = [c for c in el if isinstance(c.tag, str)]
    if not kids:
        return

    def local(c: etree._Element) -> str:
        return etree.QName(c).localname

    ordered = sorted(kids, key=lambda c: rank.get(local(c), len(rank)))   # stable: repeats keep order
    if ordered != kids:
        for c in kids:
            el.remove(c)
        el.extend(ordered)
    for c in ordered:
        _sort(c, of_type.get(local(c), ""), types)
