"""ISO 4217 currency codes and their minor units (the exponent of each currency's amounts).

From ISO 4217 List One (current funds) as maintained by SIX, the ISO 4217 maintenance agency,
plus codes withdrawn since 2023 that files still carry (HRK, SLL, ZWL, ANG).  Codes whose
minor unit the list gives as "N.A." (precious metals, testing and settlement units such as
XAU, XDR, XTS, XXX) carry no decimal amounts and are absent here: an amount in one of them
is not money this gateway books.
"""

from __future__ import annotations

__all__ = ["EXPONENT", "exponent"]

_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD "
    "FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW "
    "KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN "
    "NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD "
    "SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU "
    "UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL"
)

EXPONENT: dict[str, int] = {
    **{c: 0 for c in _ZERO.split()},
    **{c: 2 for c in _TWO.split()},
    **{c: 3 for c in _THREE.split()},
    **{c: 4 for c in _FOUR.split()},
}
"""Currency code -> number of minor-unit digits (CNY 2: fen; JPY 0; BHD 3: fils)."""


def exponent(code: str) -> int | None:
    """The minor-unit digits of ``code``; None for a code that is not a currency with amounts."""
    return EXPONENT.get(code)
