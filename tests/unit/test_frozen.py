"""``adapters._frozen.quick_init``: the same frozen dataclass, built by one ``__dict__`` update."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import dataclass, field

import pytest

from adapters import base
from adapters._frozen import quick_init
from gateway import model, outbox
from gateway.store import instructions


@dataclass(frozen=True)
class Plain:
    a: str
    b: int
    c: tuple[int, ...] = ()
    d: str = "d"


@quick_init
@dataclass(frozen=True)
class Quick:
    a: str
    b: int
    c: tuple[int, ...] = ()
    d: str = "d"


def test_a_quick_class_is_built_called_and_compared_as_its_dataclass() -> None:
    assert inspect.signature(Quick) == inspect.signature(Plain)
    q = Quick("x", 1)
    assert (q.a, q.b, q.c, q.d) == ("x", 1, (), "d")
    assert Quick(a="x", b=1, d="e") == Quick("x", 1, (), "e") != q
    assert hash(Quick("x", 1)) == hash(q) and repr(q) == "Quick(a='x', b=1, c=(), d='d')"
    assert dataclasses.replace(q, d="z") == Quick("x", 1, (), "z")
    assert pickle.loads(pickle.dumps(q)) == q
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.a = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Quick("x")  # type: ignore[call-arg]


def test_a_class_whose_init_does_more_is_refused() -> None:
    @dataclass
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class Factory:
        a: list[int] = field(default_factory=list)

    @dataclass(frozen=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True)
    class KwOnly:
        a: int = field(kw_only=True)

    for cls in (Mutable, Factory, Post, KwOnly):
        with pytest.raises(TypeError):
            quick_init(cls)


@pytest.mark.parametrize("cls", [base.Instruction, model.Instruction, model.Creditor, instructions.IntakeItem,
                                 instructions.IntakeOutcome, outbox.Open])
def test_the_classes_built_per_instruction_have_the_quick_init(cls: type) -> None:
    """The dataclass's own frozen __init__ sets each field through object.__setattr__."""
    assert "__dataclass_builtins_object__" not in cls.__init__.__code__.co_names
    assert "update" in cls.__init__.__code__.co_names
