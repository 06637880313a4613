"""Endpoint strings in a config: what Twisted would accept, where a listener binds, loopback or not."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

_WILDCARD = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True)
class _Bind:
    """Where a listener binds, enough to tell whether two listeners collide."""

    family: str  # "ip", "unix" or "systemd"
    where: str  # interface, socket path or inherited descriptor
    port: int = 0

    def clashes(self, other: _Bind) -> bool:
        if self.family != other.family:
            return False
        if self.family != "ip":
            return self.where == other.where
        # Port 0 asks the kernel for a free port: never a collision.  A
        # wildcard interface takes the port on every address.
        return (self.port == other.port != 0
                and (self.where == other.where or self.where in _WILDCARD
                     or other.where in _WILDCARD))


def endpoint_interface(description: str) -> str | None:
    """The address a (valid) tcp:/tcp6: server endpoint binds ("" for every interface); None for others."""
    args, kwargs = _split_endpoint(description)
    kind = args.pop(0)
    if kind not in ("tcp", "tcp6"):
        return None
    return _positional(args, kwargs, ("port",)).get("interface", "")


def _loopback_endpoint(description: str) -> bool:
    """Whether a (valid) server endpoint string listens on loopback only (a unix: socket counts)."""
    kind = _split_endpoint(description)[0][0]
    if kind == "unix":
        return True
    if kind == "systemd":
        return _split_endpoint(description)[1].get("domain") == "UNIX"
    interface = endpoint_interface(description)
    try:
        return bool(interface) and ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def _split_endpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """Split like ``twisted.internet.endpoints._parse``: ``type:arg:key=value``.

    ``:`` separates fields, the first ``=`` in a field makes it a keyword, and
    a backslash takes the next character literally.
    """
    fields: list[list[str]] = []
    parts: list[str] = []
    current = ""
    chars = iter(description)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt is None:
                raise ValueError("ends with a lone backslash")
            current += nxt
        elif ch == ":":
            fields.append(parts + [current])
            parts, current = [], ""
        elif ch == "=" and not parts:
            parts, current = [current], ""
        else:
            current += ch
    fields.append(parts + [current])
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for field in fields:
        if len(field) == 1:
            args.append(field[0])
        elif field[0] in kwargs:
            raise ValueError(f"{field[0]}= given twice")
        else:
            kwargs[field[0]] = field[1]
    if not args or not args[0]:
        raise ValueError("must start with an endpoint type such as tcp:")
    return args, kwargs


def _int_field(text: str, name: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", text) or not low <= int(text) <= high:
        raise ValueError(f"{name} must be a number from {low} to {high}, not {text!r}")
    return int(text)


def _only(kwargs: Mapping[str, str], allowed: Collection[str]) -> None:
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]}= (known: {', '.join(sorted(allowed))})")


def _positional(args: list[str], kwargs: dict[str, str], names: Sequence[str]) -> dict[str, str]:
    """Merge positional fields into keywords in ``names`` order, as Twisted's parsers do."""
    if len(args) > len(names):
        raise ValueError(f"too many fields (expected {', '.join(names)})")
    merged = dict(kwargs)
    for name, value in zip(names, args):
        if name in merged:
            raise ValueError(f"{name} given twice")
        merged[name] = value
    return merged


def _check_listener(kind: str, args: list[str], kwargs: dict[str, str]) -> _Bind:
    """Validate a server endpoint's fields; where it binds.  Raises ``ValueError``."""
    if kind == "systemd":
        if args:
            raise ValueError("takes only domain= and index= or name=")
        _only(kwargs, ("domain", "index", "name"))
        if kwargs.get("domain") not in ("INET", "INET6", "UNIX"):
            raise ValueError("domain= must be INET, INET6 or UNIX")
        if ("index" in kwargs) == ("name" in kwargs):
            raise ValueError("give exactly one of index= or name=")
        if "index" in kwargs:
            _int_field(kwargs["index"], "index", 0, 1023)
            return _Bind("systemd", "index=" + kwargs["index"])
        return _Bind("systemd", "name=" + kwargs["name"])
    if kind == "unix":
        fields = _positional(args, kwargs, ("address",))
        _only(fields, ("address", "mode", "backlog", "lockfile"))
        if not fields.get("address"):
            raise ValueError("needs a socket path")
        if "mode" in fields and not re.fullmatch(r"[0-7]{1,4}", fields["mode"]):
            raise ValueError(f"mode must be octal such as 660, not {fields['mode']!r}")
        if "backlog" in fields:
            _int_field(fields["backlog"], "backlog", 1, 65535)
        if fields.get("lockfile", "1") not in ("0", "1"):
            raise ValueError("lockfile must be 0 or 1")
        bind = _Bind("unix", fields["address"])
    else:  # tcp, tcp6
        fields = _positional(args, kwargs, ("port",))
        _only(fields, ("port", "interface", "backlog"))
        if "port" not in fields:
            raise ValueError("needs a port")
        port = _int_field(fields["port"], "port", 0, 65535)
        if "backlog" in fields:
            _int_field(fields["backlog"], "backlog", 1, 65535)
        interface = fields.get("interface", "::" if kind == "tcp6" else "")
        if interface:
            try:
                ipaddress.ip_address(interface)
            except ValueError:
                # Twisted would only fail at listen time, long after check-config said yes.
                raise ValueError(f"interface must be an IP address (escape IPv6 colons as "
                                 f"\\:), not {interface!r}") from None
        bind = _Bind("ip", interface, port)
    return bind


def _check_connector(kind: str, args: list[str], kwargs: dict[str, str]) -> None:
    """Validate a client endpoint's fields.  Raises ``ValueError``."""
    if kind == "unix":
        fields = _positional(args, kwargs, ("path",))
        _only(fields, ("path", "lockfile", "timeout"))
        if not fields.get("path"):
            raise ValueError("needs a socket path")
        if fields.get("lockfile", "0") not in ("0", "1"):
            raise ValueError("lockfile must be 0 or 1")
    else:  # tcp
        fields = _positional(args, kwargs, ("host", "port"))
        _only(fields, ("host", "port", "timeout", "bindAddress"))
        if not fields.get("host"):
            raise ValueError("needs a host (tcp:HOST:PORT)")
        if "port" not in fields:
            raise ValueError("needs a port (tcp:HOST:PORT)")
        _int_field(fields["port"], "port", 1, 65535)
    if "timeout" in fields:
        _int_field(fields["timeout"], "timeout", 1, 3600)


def _twisted_accepts(description: str, *, server: bool) -> None:
    """Let Twisted itself build the endpoint (no I/O happens) so nothing it refuses gets past.

    Called only for kinds whose fields were checked above; systemd endpoints
    are not built here because Twisted looks the inherited descriptor up while
    parsing, and config is checked outside systemd too.  A memory reactor
    stands in: checking config must not install the global reactor.
    """
    from twisted.internet.endpoints import clientFromString, serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        if server:
            serverFromString(MemoryReactor(), description)
        else:
            clientFromString(MemoryReactor(), description)
    except Exception as e:  # Twisted reports bad fields with assorted exception types
        raise ValueError(f"Twisted refuses it: {e}") from e
