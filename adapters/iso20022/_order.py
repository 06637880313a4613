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

__all__ = ["PARTS", "reordered", "set_apart"]

PARTS = frozenset({"Ntry", "Bal"})
"""The parts of a report a schema violation may be confined to: an entry, a balance."""

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


def reordered(doc: etree._Element, schema_file: Path) -> tuple[etree._Element, bool]:
    """(a copy of ``doc`` with every element's children in the order its type in
    ``schema_file`` declares, whether anything moved).  Children the type does not name keep
    their place after the named ones (validation then fails on them, as it should).  Copies
    keep their source line numbers, which :func:`set_apart` relies on."""
    types = _model(str(schema_file))
    out = copy.deepcopy(doc)
    return out, _sort(out, "Document", types)


def _local_name(el: etree._Element) -> str:
    return etree.QName(el).localname


def part_path(el: etree._Element) -> str:
    """``Stmt[1]/Ntry[3]``: the element's path below the message element, 1-based per name."""
    steps = []
    while el.getparent() is not None and el.getparent().getparent() is not None:
        name = _local_name(el)
        index = 1 + sum(1 for s in el.itersiblings(preceding=True) if s.tag == el.tag)
        steps.append(f"{name}[{index}]")
        el = el.getparent()
    return "/".join(reversed(steps))


def set_apart(doc: etree._Element, errors: list[tuple[int, str]]
              ) -> list[tuple[str, str, bytes]] | None:
    """Remove from ``doc`` (in place) every entry or balance a schema error lies in, and return
    ``(path, reason, bytes)`` for each; None when some error lies outside any such part (or
    its line cannot be placed), so the document as a whole is invalid."""
    by_line: dict[int, list[etree._Element]] = {}
    for el in doc.iter():
        if isinstance(el.tag, str) and el.sourceline:
            by_line.setdefault(el.sourceline, []).append(el)
    parts: dict[etree._Element, str] = {}
    for line, message in errors:
        found = None
        for el in by_line.get(line, []):
            node = el
            while node is not None and _local_name(node) not in PARTS:
                node = node.getparent()
            if node is not None:
                found = node
                break
        if found is None:
            return None
        parts.setdefault(found, message)
    out = []
    for part, message in parts.items():
        out.append((part_path(part), f"not valid against the schema: {message}",
                    etree.tostring(part, encoding="utf-8", with_tail=False)))
    for part in parts:
        part.getparent().remove(part)
    return out


def _sort(el: etree._Element, type_name: str, types: dict[str, list[tuple[str, str]]]) -> bool:
    children = types.get(type_name)
    if not children:
        return False
    rank = {name: i for i, (name, _) in enumerate(children)}
    of_type = dict(children)
    kids = [c for c in el if isinstance(c.tag, str)]
    if not kids:
        return False
    ordered = sorted(kids, key=lambda c: rank.get(_local_name(c), len(rank)))   # stable
    moved = ordered != kids
    if moved:
        for c in kids:
            el.remove(c)
        el.extend(ordered)
    for c in ordered:
        moved = _sort(c, of_type.get(_local_name(c), ""), types) or moved
    return moved
