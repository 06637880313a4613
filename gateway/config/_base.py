"""The config checker's machinery: where problems are recorded, and the checks of single values."""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from gateway.config.endpoints import (
    _Bind,
    _check_connector,
    _check_listener,
    _split_endpoint,
    _twisted_accepts,
)
from gateway.config.toml import _dotted, _is_control, _show, read_toml
from gateway.model import deceptive_character, parse_amount
from gateway.tls import resolve_credential

_Path = tuple[str, ...]
_REQUIRED: Any = object()  # default marker: the key must be present
_NODE = re.compile(r"[A-Z0-9]{6}")
_IDENTITY_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_LABEL_MAX = 120
_NO_TLS_ENDPOINT = ("TLS is added by the gateway (client certificates are required); "
                    "give a plain tcp: endpoint")
_LISTEN_TYPES = ("tcp", "tcp6", "unix", "systemd")
_CONNECT_TYPES = ("tcp", "unix")


class ConfigError(Exception):
    """The configuration file was refused.

    ``problems`` lists every problem found, one line each, formatted
    ``"{file}: {dotted.key}: {reason}"`` (``file`` as the caller named it).
    A file that cannot be read or parsed gives one problem whose middle part
    is ``(file)`` or the TOML error's ``line L, column C``.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


C = TypeVar("C", bound="Checker")
T = TypeVar("T")


def load_checked(path: str | Path, check_files: bool, checker: type[C],
                 walk: Callable[[C, dict[str, Any], Path], T | None]) -> tuple[T | None, list[str]]:
    """Read the TOML file at ``path`` and walk it with a new ``checker``: the value, or every problem.

    The one way the gateway's and the ledger's configs are loaded (``walk`` is the checker's
    method for the whole file, given the document and the file's absolute path).
    """
    doc, problems = read_toml(path)
    if doc is None:
        return None, problems
    absolute = Path(path).absolute()
    walker = checker(str(path), absolute.parent, check_files)
    config = walk(walker, doc, absolute)
    if walker.problems:
        return None, walker.problems
    return config, []


def value_or_raise(loaded: tuple[T | None, list[str]]) -> T:
    """The loaded value of :func:`load_checked`; :class:`ConfigError` listing every problem."""
    config, problems = loaded
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


class Checker:
    """Walks the parsed TOML, recording every problem and building values where all is well."""

    def __init__(self, file: str, base: Path, check_files: bool) -> None:
        self.file = file
        self.base = base
        self.check_files = check_files
        self.problems: list[str] = []
        self.listeners: list[tuple[_Path, str, _Bind]] = []

    def problem(self, path: _Path, reason: str) -> None:
        self.problems.append(f"{self.file}: {_dotted(path)}: {reason}")

    def entries(self, table: dict[str, Any], section: str, pattern: re.Pattern[str],
                what: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The entries of a registry whose key is well formed and whose value is a table."""
        for key, entry in table.items():
            good_key = pattern.fullmatch(key) is not None
            if not good_key:
                self.problem((section, key), what)
            if not isinstance(entry, dict):
                self.problem((section, key), f"must be a table, not {_show(entry)}")
            elif good_key:
                yield key, entry

    def check_listeners(self) -> None:
        for i, (path, endpoint, bind) in enumerate(self.listeners):
            for earlier_path, _earlier, earlier_bind in self.listeners[:i]:
                if bind.clashes(earlier_bind):
                    self.problem(path, f"{_show(endpoint)} listens on the same address as "
                                       f"{_dotted(earlier_path)}")
                    break

    def section(self, doc: dict[str, Any], name: str, *,
                required: bool = False) -> dict[str, Any] | None:
        """The table ``[name]``: empty when absent and optional, None (problem recorded) when
        absent and required or not a table, so its keys are not reported missing one by one."""
        value = doc.get(name)
        if value is None:
            if required:
                self.problem((name,), "is required")
                return None
            return {}
        if not isinstance(value, dict):
            self.problem((name,), f"must be a table, not {_show(value)}")
            return None
        return value

    def not_above(self, path: _Path, values: Mapping[str, Any], lower: str, upper: str) -> bool:
        """Whether ``values[lower] <= values[upper]``; else a problem at ``lower`` naming ``upper``."""
        if values[lower] <= values[upper]:
            return True
        self.problem(path + (lower,), f"must not be above {_dotted(path + (upper,))} ({values[upper]:g})")
        return False

    def keys(self, table: Mapping[str, Any], path: _Path, allowed: Sequence[str]) -> None:
        """Report every key of ``table`` not in ``allowed``, suggesting the nearest one."""
        for key in table:
            if key in allowed:
                continue
            near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean {_show(near[0])}?" if near else f"known keys: {', '.join(allowed)}"
            self.problem(path + (key,), f"unknown key ({hint})")

    def present(self, table: Mapping[str, Any], path: _Path, key: str, default: Any) -> bool:
        """Whether ``key`` is there; records "is required" when it is not and has no default."""
        if key in table:
            return True
        if default is _REQUIRED:
            self.problem(path + (key,), "is required")
        return False

    def string(self, table: Mapping[str, Any], path: _Path, key: str, *,
               pattern: re.Pattern[str] | None = None, what: str = "") -> str | None:
        """A required non-empty string, matching ``pattern`` when one is given."""
        if not self.present(table, path, key, _REQUIRED):
            return None
        value = table[key]
        if not isinstance(value, str):
            self.problem(path + (key,), f"must be a string, not {_show(value)}")
            return None
        if not value:
            self.problem(path + (key,), "must not be empty")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(path + (key,), f"{what or 'has a bad format'}, not {_show(value)}")
            return None
        return value

    def label(self, table: Mapping[str, Any], path: _Path, key: str, max_len: int) -> str | None:
        """A required human-readable name: not blank, no control characters, at most ``max_len``."""
        value = self.string(table, path, key)
        if value is None:
            return None
        if not value.strip():
            self.problem(path + (key,), "must not be blank")
        elif len(value) > max_len:
            self.problem(path + (key,), f"longer than {max_len} characters")
        elif any(_is_control(c) for c in value):
            self.problem(path + (key,), "contains control characters")
        elif deceptive_character(value) is not None:
            self.problem(path + (key,), str(deceptive_character(value)))
        else:
            return value
        return None

    def integer(self, table: Mapping[str, Any], path: _Path, key: str, low: int,
                high: int | None, *, default: Any = _REQUIRED) -> int | None:
        """An integer in ``low..high`` (no upper bound when ``high`` is None); never a bool."""
        if not self.present(table, path, key, default):
            return None if default is _REQUIRED else int(default)
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path + (key,), f"must be an integer, not {_show(value)}")
            return None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            self.problem(path + (key,), f"must be {bounds}, not {value}")
            return None
        return value

    def seconds(self, table: Mapping[str, Any], path: _Path, key: str,
                default: float) -> float | None:
        """A finite number of seconds > 0; a TOML integer is fine, a bool never is."""
        if not self.present(table, path, key, default):
            return float(default)
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(path + (key,), f"must be a number of seconds, not {_show(value)}")
            return None
        seconds = float(value)
        if not math.isfinite(seconds) or seconds <= 0:
            self.problem(path + (key,), f"must be a finite number greater than 0, not {_show(value)}")
            return None
        return seconds

    def rate(self, table: Mapping[str, Any], path: _Path, key: str, default: float) -> float | None:
        """A finite number of events per second > 0; a TOML integer is fine, a bool never is."""
        if not self.present(table, path, key, default):
            return float(default)
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(float(value)) or value <= 0:
            self.problem(path + (key,), f"must be a finite number per second greater than 0, not {_show(value)}")
            return None
        return float(value)

    def amount(self, table: Mapping[str, Any], path: _Path, key: str, default: int) -> int | None:
        """A CNY amount written as a string (``"1000000.00"``), in fen."""
        if not self.present(table, path, key, default):
            return default
        try:
            return parse_amount(table[key])
        except ValueError as e:
            self.problem(path + (key,), str(e))
            return None

    def file_path(self, table: Mapping[str, Any], path: _Path, key: str, *,
                  default: Any = _REQUIRED) -> Path | None:
        """A file path, resolved against the config's directory; it must exist if checked."""
        if not self.present(table, path, key, default):
            return None
        value = table[key]
        if not isinstance(value, str):
            self.problem(path + (key,), f"must be a path string, not {_show(value)}")
            return None
        if not value or "\0" in value:
            self.problem(path + (key,), "must be a non-empty path without NUL characters")
            return None
        # An absolute value replaces the base.  Under systemd's LoadCredential= a
        # file of the same name in $CREDENTIALS_DIRECTORY is used instead.
        resolved = resolve_credential(self.base / value)
        if self.check_files:
            try:
                if not resolved.exists():
                    self.problem(path + (key,), f"no such file: {resolved}")
                elif not resolved.is_file():
                    self.problem(path + (key,), f"not a regular file: {resolved}")
            except PermissionError:
                self.problem(path + (key,), f"not readable by this user: {resolved}")
        return resolved

    def file_list(self, table: Mapping[str, Any], path: _Path, key: str) -> tuple[Path, ...] | None:
        """An optional array of file paths, each resolved and checked like :meth:`file_path`."""
        if key not in table:
            return ()
        value = table[key]
        if not isinstance(value, list):
            self.problem(path + (key,), f"must be an array of path strings, not {_show(value)}")
            return None
        found: list[Path] = []
        good = True
        for i, item in enumerate(value):
            resolved = self.file_path({str(i): item}, path + (key,), str(i))
            if resolved is None:
                good = False
            elif resolved not in found:
                found.append(resolved)
        return tuple(found) if good else None

    def database(self, table: Mapping[str, Any], path: _Path, key: str) -> str | None:
        """A SQLAlchemy URL: SQLite (relative paths against the config dir) or psycopg PostgreSQL."""
        url = self.string(table, path, key)
        if url is None:
            return None
        if url.startswith("postgresql+psycopg://"):
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(url)
            except (ArgumentError, ValueError) as e:
                self.problem(path + (key,), f"not a valid PostgreSQL URL: {e}")
                return None
            return url
        if url == "sqlite://":
            return url  # in memory
        if url.startswith("sqlite:///"):
            file, query_mark, query = url[len("sqlite:///"):].partition("?")
            if file in ("", ":memory:") or file.startswith("/"):
                return url  # in memory, or already absolute (sqlite:////abs/path.db)
            return f"sqlite:///{self.base / file}{query_mark}{query}"
        if url.startswith("sqlite:"):
            self.problem(path + (key,), "a SQLite URL is sqlite:///relative/path.db (to this file's "
                                        "directory), sqlite:////absolute/path.db or sqlite:// "
                                        f"(in memory), not {_show(url)}")
            return None
        self.problem(path + (key,), 'must be a "sqlite:///..." or "postgresql+psycopg://..." URL, '
                                    f"not {_show(url)}")
        return None

    def endpoint(self, table: Mapping[str, Any], path: _Path, key: str, *,
                 listen: bool) -> str | None:
        """A Twisted endpoint string: a server one when ``listen``, else a client one.

        Listeners are also recorded so that collisions can be reported.
        """
        value = self.string(table, path, key)
        if value is None:
            return None
        at = path + (key,)
        try:
            args, kwargs = _split_endpoint(value)
        except ValueError as e:
            self.problem(at, str(e))
            return None
        kind = args.pop(0)
        if kind in ("ssl", "tls"):
            self.problem(at, f"{kind}: endpoints are refused: {_NO_TLS_ENDPOINT}")
            return None
        known = _LISTEN_TYPES if listen else _CONNECT_TYPES
        if kind not in known:
            role = "listening" if listen else "connecting"
            self.problem(at, f"unknown {role} endpoint type {_show(kind)} "
                             f"(known: {', '.join(t + ':' for t in known)})")
            return None
        try:
            bind = _check_listener(kind, args, kwargs) if listen else None
            if not listen:
                _check_connector(kind, args, kwargs)
            if kind != "systemd":
                _twisted_accepts(value, server=listen)
        except ValueError as e:
            self.problem(at, f"not a valid {kind}: endpoint: {e}")
            return None
        if bind is not None:
            self.listeners.append((at, value, bind))
        return value
