"""The national HPF bank settlement data interface (bdc), as a sans-I/O codec.

:class:`BdcAdapter` is registered under the ``hpf_gateway.adapters`` entry point as
``bdc``; :mod:`adapters.bdc.codec` documents the frame, the mapping of the neutral
messages and our departures from the original protocol.
"""

from adapters.bdc.codec import MAX_BODY, BdcAdapter, BdcFramer

__all__ = ["BdcAdapter", "BdcFramer", "MAX_BODY"]
