"""ICBC 银企互联 (bank-enterprise interconnection) through NC, the NetSafe Client the
enterprise runs on its own network, sans I/O.

NC holds the enterprise's certificate and talks HTTPS to ICBC; the enterprise's system posts
forms to NC's trading servlet and, for payment packages, first has NC's signing port sign the
package.  :mod:`adapters.icbc.codec` writes and reads the forms and ``<CMS>`` documents;
:class:`~adapters.icbc.session.Session` maps them to and from the neutral messages.  The
protocol's reference, its sources and what is unknown: docs/protocols/icbc.md.
"""

from adapters.icbc.adapter import IcbcAdapter
from adapters.icbc.codec import BANK_CODE, MAX_DOCUMENT
from adapters.icbc.session import (
    Corporate,
    HistoryAnswer,
    HistoryPage,
    NcError,
    Refused,
    Session,
)

__all__ = ["BANK_CODE", "MAX_DOCUMENT", "Corporate", "HistoryAnswer", "HistoryPage", "IcbcAdapter", "NcError",
           "Refused", "Session"]
