"""A cheaper ``__init__`` for the frozen dataclasses built once or more per instruction.

The ``__init__`` that :func:`dataclasses.dataclass` writes for a frozen class sets each field
with a Python-level ``object.__setattr__`` call.  On the intake's path (a neutral Instruction of
sixteen fields for each encodability check, the validated Instruction and its Creditor, the
item, its outcome, the outbox's entry) those calls were a twentieth of the gateway's CPU per
accepted instruction (bench/README.md, "intake").  :func:`quick_init` gives such a class an
``__init__`` with the same parameters, in the same order, with the same defaults, that fills
the new instance's ``__dict__`` in one call.  Nothing else changes: assigning a field still
raises ``FrozenInstanceError``, and equality, hashing, ``repr``, :func:`dataclasses.replace`
and pickling are the dataclass's own.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["quick_init"]

C = TypeVar("C", bound=type)


def quick_init(cls: C) -> C:
    """Replace frozen dataclass ``cls``'s ``__init__`` (see the module); ``TypeError`` for a class
    whose ``__init__`` does more than store its arguments (``__post_init__``, ``InitVar``,
    ``default_factory``, ``init=False`` or keyword-only fields, slots, a field behind a
    descriptor)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"{cls.__name__}: quick_init is for frozen dataclasses")
    if hasattr(cls, "__post_init__") or "__slots__" in cls.__dict__:
        raise TypeError(f"{cls.__name__}: __post_init__ or slots: the dataclass's own __init__ is needed")
    fields = dataclasses.fields(cls)
    if len(fields) != len(cls.__dataclass_fields__):  # an InitVar (or a ClassVar: left alone too)
        raise TypeError(f"{cls.__name__}: an InitVar or ClassVar pseudo-field: not checked here")
    signature: list[str] = []
    defaults: dict[str, Any] = {}
    for f in fields:
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain fields (init, positional, no factory)")
        if hasattr(type(cls.__dict__.get(f.name)), "__set__"):
            raise TypeError(f"{cls.__name__}.{f.name}: a descriptor would be bypassed")
        if f.default is dataclasses.MISSING:
            signature.append(f.name)
        else:
            defaults[f"_default_{f.name}"] = f.default
            signature.append(f"{f.name}=_default_{f.name}")
    values = ", ".join(f"{f.name!r}: {f.name}" for f in fields)
    source = f"def __init__(self, {', '.join(signature)}):\n    self.__dict__.update({{{values}}})\n"
    namespace: dict[str, Any] = {}
    exec(source, defaults, namespace)  # noqa: S102 (names and defaults from the class itself)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)  # the same signature, annotations and all
    cls.__init__ = init  # type: ignore[misc]
    return cls
