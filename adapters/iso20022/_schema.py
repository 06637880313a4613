"""The schemas every document is validated against, loaded once from package data.

The official ISO 20022 schemas ship unchanged in ``schemas/``.  They are imported into one
schema of our own (generated below, namespace :data:`LINK_NS`) that also defines the link
frame and the link-control elements, so one validation pass checks a whole frame: the
``AppHdr`` against head.001.001.02, the ``Document`` against its own message's schema, and
our elements against our definitions.  A bare document (no frame) is validated against the
same compiled schema, in which it is a global element of its own namespace.

Compiled schemas are kept per thread: lxml validators carry an error log and are not meant
to be shared between threads.  The official schemas are imported by their ``file:`` URI and
read by libxml2 itself, not through an lxml ``Resolver``: lxml routes an import to a Python
resolver through state shared by every thread, so a thread compiling its schema while
another parsed sometimes lost an import and failed with ``XMLSchemaParseError``
(``test_threads_decoding_at_once_each_get_every_message`` in ``tests/adapters/test_conformance.py``).
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

from lxml import etree

from adapters.base import AdapterError

__all__ = [
    "DOCUMENTS",
    "READABLE",
    "ROOTS",
    "document_schema",
    "first_error",
    "schema_file",
    "HEAD_NS",
    "ISO_PREFIX",
    "LINK_KINDS",
    "LINK_NS",
    "definition_of",
    "schema",
    "validate",
]

LINK_NS = "urn:hpf-gateway:iso20022-link:1"
ISO_PREFIX = "urn:iso:std:iso:20022:tech:xsd:"
HEAD_NS = ISO_PREFIX + "head.001.001.02"

DOCUMENTS: tuple[str, ...] = (
    "pain.001.001.09", "pain.001.001.03", "pain.002.001.10",
    "camt.052.001.08", "camt.053.001.08", "camt.054.001.08",
    "camt.052.001.02", "camt.053.001.02", "camt.054.001.02",
)
"""Message definitions accepted as a ``Document`` (their namespace decides the schema)."""

LINK_KINDS: tuple[str, ...] = ("SignOn", "SignOnAnswer", "Heartbeat", "HeartbeatAnswer", "Ack",
                               "StatusQuery", "BalanceQuery")
"""Our link-control elements; ``AppHdr/MsgDefIdr`` names them ``hpf.<element>``."""


# Our own definitions.  Lengths mirror the ISO text types; the codec checks the finer rules
# (node and serial character sets) after validation.
_LINK_XSD = """<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
 targetNamespace="{link}" xmlns="{link}" elementFormDefault="qualified"{prefixes}>
{imports}
<xs:element name="Frame"><xs:complexType><xs:sequence>
 <xs:element ref="h:AppHdr"/>
 <xs:choice>{documents}{kinds}</xs:choice>
</xs:sequence></xs:complexType></xs:element>
<xs:simpleType name="Max35Text"><xs:restriction base="xs:string"><xs:minLength value="1"/><xs:maxLength value="35"/></xs:restriction></xs:simpleType>
<xs:simpleType name="Max34Text"><xs:restriction base="xs:string"><xs:minLength value="1"/><xs:maxLength value="34"/></xs:restriction></xs:simpleType>
<xs:simpleType name="Max500Text"><xs:restriction base="xs:string"><xs:minLength value="1"/><xs:maxLength value="500"/></xs:restriction></xs:simpleType>
<xs:simpleType name="Node"><xs:restriction base="xs:string"><xs:pattern value="[A-Za-z0-9._\\-]{{1,35}}"/></xs:restriction></xs:simpleType>
<xs:simpleType name="Flag"><xs:restriction base="xs:string"><xs:enumeration value="true"/><xs:enumeration value="false"/></xs:restriction></xs:simpleType>
<xs:complexType name="NodeOnly"><xs:sequence><xs:element name="Node" type="Node"/></xs:sequence></xs:complexType>
<xs:complexType name="Answer"><xs:sequence>
 <xs:element name="Ok" type="Flag"/>
 <xs:element name="Cd" type="Max35Text" minOccurs="0"/>
 <xs:element name="Txt" type="Max500Text" minOccurs="0"/>
</xs:sequence></xs:complexType>
<xs:element name="SignOn" type="NodeOnly"/>
<xs:element name="Heartbeat" type="NodeOnly"/>
<xs:element name="HeartbeatAnswer" type="NodeOnly"/>
<xs:element name="SignOnAnswer"><xs:complexType><xs:sequence>
 <xs:element name="Node" type="Node"/>
 <xs:element name="Ok" type="Flag"/>
 <xs:element name="Cd" type="Max35Text" minOccurs="0"/>
 <xs:element name="Txt" type="Max500Text" minOccurs="0"/>
</xs:sequence></xs:complexType></xs:element>
<xs:element name="Ack" type="Answer"/>
<xs:element name="StatusQuery"><xs:complexType><xs:sequence>
 <xs:element name="Ref" type="Max35Text"/>
 <xs:element name="RefDt" type="xs:date"/>
</xs:sequence></xs:complexType></xs:element>
<xs:element name="BalanceQuery"><xs:complexType><xs:sequence>
 <xs:element name="Acct" type="Max34Text"/>
</xs:sequence></xs:complexType></xs:element>
<xs:element name="Sgntr"><xs:simpleType><xs:restriction base="xs:base64Binary"><xs:minLength value="1"/><xs:maxLength value="16384"/></xs:restriction></xs:simpleType></xs:element>
<xs:element name="BalAftr"><xs:complexType><xs:simpleContent><xs:extension base="SignedAmount">
 <xs:attribute name="Ccy" use="required"><xs:simpleType><xs:restriction base="xs:string"><xs:pattern value="[A-Z]{{3}}"/></xs:restriction></xs:simpleType></xs:attribute>
</xs:extension></xs:simpleContent></xs:complexType></xs:element>
<xs:simpleType name="SignedAmount"><xs:restriction base="xs:decimal"><xs:fractionDigits value="2"/><xs:totalDigits value="18"/></xs:restriction></xs:simpleType>
</xs:schema>
"""


def _link_xsd() -> bytes:
    names = ("head.001.001.02",) + DOCUMENTS
    prefixes = "".join(f' xmlns:{"h" if i == 0 else f"d{i}"}="{ISO_PREFIX}{n}"'
                       for i, n in enumerate(names))
    where = _schema_directory().as_uri()
    imports = "".join(f'<xs:import namespace="{ISO_PREFIX}{n}" schemaLocation="{where}/{n}.xsd"/>'
                      for n in names)
    documents = "".join(f'<xs:element ref="d{i}:Document"/>' for i in range(1, len(names)))
    kinds = "".join(f'<xs:element ref="{k}"/>' for k in LINK_KINDS)
    return _LINK_XSD.format(link=LINK_NS, prefixes=prefixes, imports=imports, documents=documents,
                            kinds=kinds).encode("utf-8")


def _schema_directory() -> Path:
    """The package's ``schemas/`` directory, which must be on disk (libxml2 reads it)."""
    directory = Path(str(resources.files(__package__).joinpath("schemas")))
    if not (directory / "head.001.001.02.xsd").is_file():
        raise RuntimeError(f"the ISO 20022 schemas are not on disk at {directory}: install "
                           "hpf-gateway as files, not as a zip archive")
    return directory.resolve()


_local = threading.local()


def schema() -> etree.XMLSchema:
    """The compiled frame-and-documents schema of this thread (built on first use)."""
    compiled = getattr(_local, "schema", None)
    if compiled is None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        compiled = etree.XMLSchema(etree.fromstring(_link_xsd(), parser))
        _local.schema = compiled
    return compiled


def validate(root: etree._Element, what: str) -> None:
    """Raise :class:`AdapterError` naming the first schema violation in ``root``."""
    checker = schema()
    if not checker.validate(root):
        error = checker.error_log.last_error
        reason = error.message if error is not None else "invalid"
        line = f" (line {error.line})" if error is not None and error.line else ""
        raise AdapterError(f"{what} is not valid against its schema{line}: {reason[:200]}")


def definition_of(namespace: str) -> str | None:
    """``pain.002.001.10`` for its namespace; None for a namespace we do not accept."""
    if namespace.startswith(ISO_PREFIX):
        name = namespace[len(ISO_PREFIX):]
        if name in DOCUMENTS:
            return name
    return None


# -- bank files: every version banks send, each against its own official schema -------------

READABLE: tuple[str, ...] = tuple(
    f"{kind}.001.{n:02d}" for kind in ("camt.052", "camt.053", "camt.054") for n in range(2, 9)
) + ("pain.002.001.03", "pain.002.001.10", "pain.001.001.09", "pain.001.001.03")
"""Message definitions read from a bank's bare document (``decode_document``): read by the
elements their versions share, each validated against its official schema when shipped."""

ROOTS: dict[str, str] = {"BkToCstmrAcctRpt": "camt.052", "BkToCstmrStmt": "camt.053",
                         "BkToCstmrDbtCdtNtfctn": "camt.054", "CstmrPmtStsRpt": "pain.002",
                         "CstmrCdtTrfInitn": "pain.001"}
"""The message element under ``Document``, naming the message of a document without a
namespace (the version is then unknown)."""


def schema_file(definition: str) -> Path | None:
    """The shipped official schema of ``definition``; None when the package has none."""
    path = _schema_directory() / f"{definition}.xsd"
    return path if path.is_file() else None


def document_schema(definition: str) -> etree.XMLSchema | None:
    """The compiled official schema of one definition (per thread), None when not shipped."""
    cache = getattr(_local, "documents", None)
    if cache is None:
        cache = _local.documents = {}
    if definition not in cache:
        path = schema_file(definition)
        cache[definition] = etree.XMLSchema(file=str(path)) if path is not None else None
    return cache[definition]


def first_error(checker: etree.XMLSchema) -> str:
    """The first violation in ``checker``'s log, one line with its line number."""
    error = checker.error_log[0] if len(checker.error_log) else None
    if error is None:
        return "invalid"
    line = f" (line {error.line})" if error.line else ""
    return f"{error.message[:200]}{line}"
