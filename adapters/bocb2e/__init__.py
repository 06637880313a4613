"""bocb2e: Bank of China's bank-enterprise direct connection (银企直连) as the enterprise's
system speaks it to the bank's front-end, sans I/O.

The front-end (bank software on the enterprise's own network, holding the bank certificate)
takes one HTTP POST per request at ``/B2EC/E2BServlet`` whose body is one XML document, and
answers with one document.  :mod:`adapters.bocb2e.codec` writes and reads the documents;
:class:`~adapters.bocb2e.session.Session` maps them to and from the neutral messages of
:mod:`adapters.base` and keeps the sign-on token.  The protocol's reference, with its
sources and everything that is unknown, is docs/protocols/bocb2e.md.
"""

from adapters._documents import DocumentFramer
from adapters.bocb2e.adapter import BocB2eAdapter
from adapters.bocb2e.codec import MAX_DOCUMENT, MORE, NOT_SIGNED_ON, OK, PROCESSING, Terminal
from adapters.bocb2e.session import NotSignedOn, Refused, Session, StatementAnswer, StatementPage

__all__ = ["BocB2eAdapter", "DocumentFramer", "MAX_DOCUMENT", "MORE", "NOT_SIGNED_ON", "OK", "PROCESSING", "NotSignedOn", "Refused",
           "Session", "StatementAnswer", "StatementPage", "Terminal"]
