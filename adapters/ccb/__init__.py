"""CCB 外联平台 (WLPT): the bank's client on the enterprise's network takes one GBK/GB18030
``<TX>`` document per TCP connection and answers one; it signs what needs signing itself.
Transfers (6W8010/6W8060), their status (6W1503), balances (6W0100) and an account's details
page by page (6WY101, :class:`DetailsPage` / :class:`DetailsAnswer`).

:class:`~adapters.ccb.codec.CcbAdapter` (registered as ``ccb``) writes and reads the
documents and binds an answer to its request (``decode_answer``).  Sources, mapping and
every unknown: docs/protocols/ccb.md.
"""

from adapters.ccb.codec import (
    CREDIT,
    DEAL_FAILED,
    DEAL_SUCCEEDED,
    DEBIT,
    DUPLICATE,
    MAX_DOCUMENT,
    MAX_PER_PAGE,
    NO_ROWS,
    NOT_FOUND,
    OK,
    CcbAdapter,
    Customer,
    DetailsAnswer,
    DetailsPage,
    request_sn,
)

__all__ = [
    "CREDIT",
    "DEAL_FAILED",
    "DEAL_SUCCEEDED",
    "DEBIT",
    "DUPLICATE",
    "MAX_DOCUMENT",
    "MAX_PER_PAGE",
    "NOT_FOUND",
    "NO_ROWS",
    "OK",
    "CcbAdapter",
    "Customer",
    "DetailsAnswer",
    "DetailsPage",
    "request_sn",
]
