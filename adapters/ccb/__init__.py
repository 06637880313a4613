"""CCB 外联平台 (WLPT): the bank's client on the enterprise's network takes one GBK/GB18030
``<TX>`` document per TCP connection and answers one; it signs what needs signing itself.

:class:`~adapters.ccb.codec.CcbAdapter` (registered as ``ccb``) writes and reads the
documents and binds an answer to its request (``decode_answer``).  Sources, mapping and
every unknown: docs/protocols/ccb.md.
"""

from adapters.ccb.codec import (
    DEAL_FAILED,
    DEAL_SUCCEEDED,
    DUPLICATE,
    MAX_DOCUMENT,
    NOT_FOUND,
    OK,
    CcbAdapter,
    Customer,
    request_sn,
)

__all__ = ["DEAL_FAILED", "DEAL_SUCCEEDED", "DUPLICATE", "MAX_DOCUMENT", "NOT_FOUND", "OK",
           "CcbAdapter", "Customer", "request_sn"]
