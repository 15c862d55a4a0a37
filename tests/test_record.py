"""fastckpt._record.dataclass behaves like dataclasses.dataclass for what it supports: the same
class declared with both must construct, compare, hash, print, copy and refuse assignment alike."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastckpt import _record


def declare(dc: Any, fld: Any, frozen: bool) -> type:
    @dc(frozen=frozen)
    class Point:
        """A test value class."""

        SCALE: ClassVar[int] = 10
        x: int
        y: int = 0
        tags: tuple[str, ...] = fld(default_factory=tuple)
        note: str = fld(default="", repr=False, compare=False)
        blob: bytes = fld(default=b"", repr=False)

        def norm1(self) -> int:
            return abs(self.x) + abs(self.y)

    return Point


def both(frozen: bool) -> tuple[type, type]:
    return declare(dataclasses.dataclass, dataclasses.field, frozen), declare(
        _record.dataclass, _record.field, frozen
    )


CALLS = [
    ((1,), {}),
    ((1, 2), {}),
    ((1,), {"y": 5, "tags": ("a",)}),
    ((), {"x": 3, "note": "n", "blob": b"\x00"}),
    ((1, 2, ("t",), "note", b"b"), {}),
]
BAD_CALLS = [((), {}), ((1, 2, (), "", b"", 9), {}), ((1,), {"x": 2}), ((1,), {"z": 1})]


@pytest.mark.parametrize("frozen", [False, True])
def test_same_behaviour_as_dataclasses(frozen: bool) -> None:
    Std, Lean = both(frozen)
    for args, kwargs in CALLS:
        a, b = Std(*args, **kwargs), Lean(*args, **kwargs)
        assert repr(a) == repr(b)
        assert [getattr(a, n) for n in ("x", "y", "tags", "note", "blob")] == [
            getattr(b, n) for n in ("x", "y", "tags", "note", "blob")
        ]
        assert b.norm1() == a.norm1() and b.SCALE == 10
        assert b == Lean(*args, **kwargs) and b.__ne__(Lean(*args, **kwargs)) is False
        # A field with compare=False does not count.
        assert b == _record.replace(b, note="other") and a == dataclasses.replace(a, note="other")
        assert (b == Lean(999)) == (a == Std(999))
        assert b != a  # different classes never compare equal, like two dataclasses
        assert dataclasses.replace(a, y=7).y == _record.replace(b, y=7).y == 7
        assert repr(_record.replace(b, y=7)) == repr(dataclasses.replace(a, y=7))
        assert repr(copy.deepcopy(b)) == repr(b) and copy.deepcopy(b) == b
        if frozen:
            assert hash(a) == hash(Std(*args, **kwargs)) and hash(b) == hash(Lean(*args, **kwargs))
            with pytest.raises(dataclasses.FrozenInstanceError):
                a.x = 1
            with pytest.raises(_record.FrozenInstanceError):
                b.x = 1
            with pytest.raises(AttributeError):
                del b.y
        else:
            with pytest.raises(TypeError):
                hash(a)
            with pytest.raises(TypeError):
                hash(b)
            b.x = 42
            assert b.x == 42
    assert Std.__match_args__ == Lean.__match_args__
    made = []
    Counted = _record.dataclass(
        type(
            "Counted",
            (),
            {
                "__annotations__": {"xs": "list[int]"},
                "xs": _record.field(default_factory=lambda: made.append(1) or []),
            },
        )
    )
    assert Counted().xs is not Counted().xs and len(made) == 2  # default_factory runs per instance
    assert Lean.y == Std.y == 0 and not hasattr(Lean, "tags") and not hasattr(Std, "tags")
    assert [f.name for f in _record.fields(Lean)] == [f.name for f in dataclasses.fields(Std)]
    for args, kwargs in BAD_CALLS:
        with pytest.raises(TypeError):
            Std(*args, **kwargs)
        with pytest.raises(TypeError):
            Lean(*args, **kwargs)


@given(x=st.integers(), y=st.integers(), note=st.text(max_size=5), x2=st.integers(), y2=st.integers())
def test_equality_and_hash_match_dataclasses(x: int, y: int, note: str, x2: int, y2: int) -> None:
    Std, Lean = both(True)
    assert (Lean(x, y, note=note) == Lean(x2, y2)) == (Std(x, y, note=note) == Std(x2, y2))
    assert hash(Lean(x, y, note=note)) == hash(Lean(x, y))


def test_post_init_and_own_methods_are_kept() -> None:
    @_record.dataclass
    class C:
        a: int

        def __post_init__(self) -> None:
            self.double = 2 * self.a

        def __repr__(self) -> str:
            return "mine"

    assert C(4).double == 8 and repr(C(4)) == "mine"


def test_unsupported_declarations_are_refused() -> None:
    with pytest.raises(ValueError, match="mutable default"):

        @_record.dataclass
        class A:
            xs: list[int] = []  # noqa: RUF012

    with pytest.raises(TypeError, match="non-default argument"):

        @_record.dataclass
        class B:
            a: int = 0
            b: int  # type: ignore[misc]

    @_record.dataclass
    class Base:
        a: int

    with pytest.raises(TypeError, match="inheritance"):

        @_record.dataclass
        class Child(Base):
            b: int

    with pytest.raises(TypeError):
        _record.dataclass(order=True)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        _record.field(default=1, default_factory=int)


def test_fastckpt_value_classes_keep_their_api() -> None:
    from fastckpt.digest import Digest, hash_bytes
    from fastckpt.sidecar import FileManifest

    d = hash_bytes(b"abc" * 100, leaf_size=64)
    assert d == hash_bytes(b"abc" * 100, leaf_size=64) and hash(d) == hash(
        hash_bytes(b"abc" * 100, leaf_size=64)
    )
    assert "leaf_bytes" not in repr(d) and repr(d).startswith("Digest(value=")
    with pytest.raises(AttributeError):
        d.value = 0  # type: ignore[misc]
    assert Digest(*[getattr(d, n) for n in Digest.__match_args__]) == d
    assert pickle.loads(pickle.dumps(d)) == d
    m = FileManifest(300, 64, d.value, d.leaf_bytes)
    m2 = _record.replace(m, extra=[])
    assert m2 == m and m2 is not m and m2.format == "opaque" and m2.unsafe == [] and m2.unsafe is not None
    m2._source = "elsewhere"  # not compared
    assert m2 == m
