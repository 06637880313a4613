"""Reading the config's TOML, writing it back (:func:`render_toml`), and showing a value in a problem."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

_TOML_WHERE = re.compile(r"^(?P<msg>.*?)\s*\(at (?P<where>line \d+, column \d+|end of document)\)$",
                         re.DOTALL)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INT64 = (-(2**63), 2**63 - 1)
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def read_toml(path: str | Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The parsed TOML document at ``path``, or the one problem that stops reading it."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return None, [f"{file}: (file): cannot be read ({e.strerror or e})"]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, [f"{file}: (file): not UTF-8 text (bad byte at offset {e.start})"]
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as e:
        return None, [_syntax_problem(file, e)]


def _syntax_problem(file: str, error: tomllib.TOMLDecodeError) -> str:
    """One problem line for a TOML syntax error, keeping tomllib's line and column."""
    text = str(error)
    m = _TOML_WHERE.match(text)
    if m is None:
        return f"{file}: (file): invalid TOML: {text}"
    return f"{file}: {m.group('where')}: invalid TOML: {m.group('msg')}"


def _dotted(path: Sequence[str]) -> str:
    """A key path as TOML would write it: ``banks.B001.window``, quoting odd keys."""
    return ".".join(_toml_key(part) for part in path)


def _show(value: Any) -> str:
    """A value for an error message: as TOML would write it, shortened; tables only by kind."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    try:
        text = _toml_value(value, inline_tables=True)
    except (TypeError, ValueError):
        return f"a {type(value).__name__}"  # dates and times: TOML has them, we use none
    return text if len(text) <= 60 else text[:57] + "..."


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code <= 0xDFFF


def render_toml(data: Mapping[str, Any], *,
                inline: Collection[str] = ("accounts", "counterparties")) -> str:
    """Write ``data`` as a TOML document that ``tomllib.loads`` reads back equal.

    Supports nested tables, strings (any Unicode text but lone surrogates;
    Chinese is written as is), ints (64-bit), floats (``inf``/``nan``
    included), bools and arrays of those.  A mapping inside a table becomes a
    ``[dotted.header]`` section, except inside the tables named in ``inline``
    (dotted names from the top, default ``accounts`` and ``counterparties``),
    whose entries are written one per line as inline tables.  Raises
    ``TypeError`` for values TOML cannot hold here (``None``, non-string keys,
    other types) and ``ValueError`` for ints out of range or lone surrogates.
    """
    inline_paths = {tuple(name.split(".")) for name in inline}
    lines: list[str] = []
    _render_table(lines, (), data, inline_paths)
    return "\n".join(lines).strip("\n") + "\n"


def _render_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any],
                  inline_paths: set[tuple[str, ...]]) -> None:
    for key in table:
        if not isinstance(key, str):
            raise TypeError(f"TOML keys are strings, not {type(key).__name__}: {key!r}")
    inline_here = path in inline_paths
    # Plain key/value lines must come before any sub-table header, or TOML
    # would put them in the sub-table.
    values = [(k, v) for k, v in table.items() if inline_here or not isinstance(v, Mapping)]
    subtables = [(k, v) for k, v in table.items() if not inline_here and isinstance(v, Mapping)]
    # A table with only sub-tables is created implicitly by their headers;
    # an empty one needs its own header to exist at all.
    if path and (values or not subtables):
        lines.append("")
        lines.append(f"[{_dotted(path)}]")
    for key, value in values:
        lines.append(f"{_toml_key(key)} = {_toml_value(value, inline_tables=True)}")
    for key, value in subtables:
        _render_table(lines, path + (key,), value, inline_paths)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        escaped = _ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            raise ValueError("a lone surrogate cannot be written as TOML (UTF-8) text")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any, *, inline_tables: bool) -> str:
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"TOML integers are 64-bit; {value} is out of range")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-tripping form, always with "." or "e"
    if isinstance(value, Mapping) and inline_tables:
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"TOML keys are strings, not {type(key).__name__}: {key!r}")
        if not value:
            return "{}"
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v, inline_tables=True)}"
                          for k, v in value.items())
        return "{ " + items + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, inline_tables=True) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} as TOML")
