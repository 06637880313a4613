"""``[centres]``: the city centres this gateway serves."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config._base import _LABEL_MAX, Checker
from gateway.config.toml import _dotted

_CENTRE_ID = re.compile(r"C[0-9]{5}")
_UNIT_NO = re.compile(r"[0-9]{15}")
_CENTRE_KEYS = ("unit_no", "name", "ca", "cust_no", "oper_no", "bdc_notify")
_HEAD_CODE = re.compile(r"[0-9A-Za-z_-]{1,32}")  # bdc CustNo / OperNo


@dataclass(frozen=True)
class CentreConfig:
    """A city centre: ``id`` is its node number (``C`` + 5 digits), ``unit_no`` its 15-digit code.

    ``ca`` is a trust bundle for this centre's certificates only; ``None`` means ``tls.ca``.
    """

    id: str
    unit_no: str
    name: str
    ca: Path | None = None
    cust_no: str = ""        # bdc CustNo: the customer number the banks gave this centre
    oper_no: str = ""        # bdc OperNo: the operator its requests name ("" = the adapter's own)
    # Where the centre's bdc software listens for SBDC100 notices (a client endpoint string; the
    # gateway adds mutual TLS); None: no notices are pushed (gateway/centre_notify.py).
    bdc_notify: str | None = None


class CentresSection(Checker):
    """The checks of ``[centres]`` (a part of the config checker)."""

    def centres(self, table: dict[str, Any]) -> dict[str, CentreConfig]:
        found: dict[str, CentreConfig] = {}
        unit_of: dict[str, str] = {}
        for centre_id, entry in self.entries(table, "centres", _CENTRE_ID,
                                             "must be C and 5 digits (the centre's node number)"):
            at = ("centres", centre_id)
            self.keys(entry, at, _CENTRE_KEYS)
            unit_no = self.string(entry, at, "unit_no", pattern=_UNIT_NO, what="must be 15 digits")
            name = self.label(entry, at, "name", _LABEL_MAX)
            ca = self.file_path(entry, at, "ca", default=None)
            heads = {key: self.string(entry, at, key, pattern=_HEAD_CODE,
                                      what="must be 1-32 of A-Z a-z 0-9 _ -") or ""
                     for key in ("cust_no", "oper_no") if key in entry}
            notify = self.endpoint(entry, at, "bdc_notify", listen=False) if "bdc_notify" in entry else None
            if unit_no is not None:
                if unit_no in unit_of:
                    self.problem(at + ("unit_no",),
                                 f"same unit_no as {_dotted(('centres', unit_of[unit_no]))}")
                unit_of.setdefault(unit_no, centre_id)
            if unit_no is not None and name is not None:
                found[centre_id] = CentreConfig(centre_id, unit_no, name, ca, **heads, bdc_notify=notify)
        return found
