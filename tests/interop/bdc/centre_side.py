"""Frames built the way the public centre-side code builds them, restated in our words.

Source: the public GitHub project WJustHM/housingfund (2017), centre-side Java.  Each
builder names the class whose behaviour it restates; none of its code is used.  The facts:

* ``ParmBean2XMLBean.transfer`` walks a request or reply bean's declared fields in order:
  the head bean's fields become head fields, every other field a body field named with
  its first letter upper-cased, a ``FileList`` field a ``FILE_LIST`` field-list holding one
  row named ``0`` with NAME and DATA.  A ``BigDecimal`` is written with ``toString()``
  (so ``2500``, ``2500.00``, ``-2500``, ``1E+3`` all occur), ``null`` as an empty element.
* ``JAXBUtil.toXML`` writes ``<?xml version="1.0" encoding="GBK"?>`` and a newline, then the
  ``message`` element unindented (JAXB fragment mode): a field whose value is ``null`` as
  ``<field name="X"/>``, one whose value is ``""`` as ``<field name="X"></field>``, a body
  with no fields as ``<body/>``; text escapes ``&``, ``<`` and ``>``.
* ``CRFCenterServer`` (the centre's listener) replies with a 16-byte header: its node, the
  byte ``'0'``, then zero bytes; then the 4-byte big-endian body length, then the body.
  ``CenterImpl`` fills the reply head: TxStatus ``0``/``00000``/成功, ReceiveDate and
  ReceiveTime now, ReceiveSeqNo a fresh serial, ReceiveNode its own node, TxCode echoed,
  BDCDate/BDCTime/BDCSeqNo ``null``, SendNode the request's.
* ``AccChangeNoticeFile.toString`` writes a notice line: 23 values each followed by ``|``,
  a ``null`` value as the text ``null``; ``TransactionFileFactory.getFileContent`` joins
  lines with ``\\n``, none after the last.
* ``BankImpl`` (the project's simulation of BDC) writes the SBDC100 notice by hand, body
  before head, indented with spaces and with spaces before the line ends; its answers
  carry TxStatus ``0``, RtnCode ``00000``, RtnMessage ``success`` and no other head value.
* Python's ``str(Decimal)`` follows the same to-scientific-string rule as Java's
  ``BigDecimal.toString``, so amounts are rendered with it.
"""

from __future__ import annotations

import zlib
from decimal import Decimal
from typing import Sequence

Field = tuple[str, "str | None"]

# Field order of the public project's beans (their declared fields, in order).
CENTER_HEAD_IN = ("SendDate", "SendTime", "SendSeqNo", "TxUnitNo", "SendNode", "TxCode",
                  "ReceiveNode", "CustNo", "OperNo")                    # CenterHeadIn
CENTER_HEAD_OUT = ("TxStatus", "RtnCode", "RtnMessage", "ReceiveDate", "ReceiveTime",
                   "ReceiveSeqNo", "ReceiveNode", "TxCode", "BDCDate", "BDCTime", "BDCSeqNo",
                   "SendNode")                                          # CenterHeadOut, SysHeadIn
SYS_HEAD_OUT = ("SendDate", "SendTime", "SendSeqNo", "SendNode", "TxCode", "ReceiveNode",
                "BDCDate", "BDCTime", "BDCSeqNo")                       # SysHeadOut
SINGLE_TRANSFER_IN = ("SettleType", "BusType", "DeAcctNo", "DeAcctName", "DeAcctClass",
                      "CrAcctNo", "CrAcctName", "CrAcctClass", "CrBankClass", "CrBankName",
                      "CrChgNo", "Amt", "RefAcctNo", "Summary", "Remark")  # SingleTransferAccountIn
SINGLE_TRANSFER_OUT = ("HostStatus", "HostSeqNo")                       # SingleTransferAccountOut
SINGLE_PAYMENT_IN = ("SettleType", "BusType", "DeAcctNo", "DeAcctName", "DeAcctClass", "CapAmt",
                     "DeIntAcctNo", "DeIntAcctName", "DeIntAcctClass", "DeIntCrAcct", "IntAmt",
                     "CrAcctNo", "CrAcctName", "CrAcctClass", "CrBankClass", "CrBankName", "CrChgNo",
                     "Amt", "RefAcctNo", "Summary", "Remark")           # SinglePaymentIn
SINGLE_COLLECTION_IN = ("SettleType", "BusType", "CrAcctNo", "CrAcctName", "CrAcctClass", "DeAcctNo",
                        "DeAcctName", "DeAcctClass", "DeBankName", "DeChgNo", "DeBankClass", "ConAgrNo", "Amt",
                        "RefAcctNo", "RefSeqNo", "Summary", "Remark")
# ^ the BDC102 single collection request bean, its declared fields in order
#   (docs/protocols/bdc.md, "Single collection (BDC102)")
TIME_DEPOSIT_IN = ("CurrNo", "CurrIden", "ActivedAcctNo", "ActivedAcctName", "FixedAcctNo", "FixedAcctName",
                   "DepositPeriod", "InterestRate", "Amt", "ExtendDepositType", "PartExtendDepositAcctNo",
                   "Remark")                                            # BDC114 current-to-time deposit request bean
RESULT_QUERY_IN = ("TxDate", "TxSeqNo")                                 # TransactionResultQueryIn
RESULT_QUERY_OUT = ("OldTxStatus", "HostSeqNo", "IntHostSeqN", "PenHostSeqNo", "FineHostSeqNo",
                    "OldBatchNo")                                       # TransactionResultQueryOut
BALANCE_QUERY_IN = ("CurrNo", "CurrIden", "AcctNo", "AcctType")         # ActivedAccBalanceQueryIn
BALANCE_QUERY_OUT = ("AcctNo", "AcctName", "AcctBal", "AcctRestBal", "AcctOverBal",
                     "AcctStatus")                                      # ActivedAccBalanceQueryOut


def amount(value: str) -> str:
    """An amount as ``BigDecimal.toString`` writes the BigDecimal built from ``value``."""
    return str(Decimal(value))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fields(fields: Sequence[Field]) -> str:
    out = []
    for name, value in fields:
        if value is None:
            out.append(f'<field name="{name}"/>')
        else:
            out.append(f'<field name="{name}">{_escape(value)}</field>')
    return "".join(out)


def jaxb_xml(head: Sequence[Field], body: Sequence[Field] = (),
             file: tuple[str, str] | None = None) -> bytes:
    """A message as ``ParmBean2XMLBean`` + ``JAXBUtil.toXML`` write it, GBK-encoded."""
    text = '<?xml version="1.0" encoding="GBK"?>\n<message><head>' + _fields(head) + "</head>"
    if not body and file is None:
        text += "<body/>"
    else:
        text += "<body>" + _fields(body)
        if file is not None:
            text += ('<field-list name="FILE_LIST"><field-list name="0">'
                     + _fields([("NAME", file[0]), ("DATA", file[1])]) + "</field-list></field-list>")
        text += "</body>"
    return (text + "</message>").encode("gbk")


def frame(node: str, body: bytes, flag: bytes = b"0") -> bytes:
    """A frame as ``CRFCenterServer`` writes its replies (and docs/protocols/bdc.md describes)."""
    return node.encode("ascii") + flag + bytes(9) + len(body).to_bytes(4, "big") + body


def data(file_text: str, *, grouped: bool = False) -> str:
    """DATA as a captured payload shows it: GBK, zlib, upper-case hex (optionally in
    space-separated groups of 64, as in the capture)."""
    hexed = zlib.compress(file_text.encode("gbk")).hex().upper()
    if grouped:
        hexed = " ".join(hexed[i:i + 64] for i in range(0, len(hexed), 64))
    return hexed


def notice_line(values: Sequence[str | None]) -> str:
    """A notice line as ``AccChangeNoticeFile.toString`` writes it: each value then ``|``."""
    return "".join(("null" if v is None else v) + "|" for v in values)


def simulator_notice(head: Sequence[Field], name: str, data_hex: str) -> bytes:
    """An SBDC100 body as ``BankImpl``'s simulation writes it: body before head, indented,
    spaces before line ends."""
    lines = ['<?xml version="1.0" encoding="GBK"?>', "<message> ", "  <body> ",
             '    <field-list name="FILE_LIST"> ', '      <field-list name="0"> ',
             f'        <field name="NAME">{name}</field>  ',
             f'        <field name="DATA">{data_hex}</field> ',
             "      </field-list> ", "    </field-list> ", "  </body>  ", "  <head> "]
    lines += [f'    <field name="{n}">{v}</field>  ' for n, v in head]
    lines += ["  </head> ", "</message>", ""]
    return "\n".join(lines).encode("gbk")
