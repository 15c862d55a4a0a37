"""`Record`: the value-class behaviour of a dataclass (field-wise `==`, a field-listing `repr`,
optionally frozen), without importing `dataclasses`.

`dataclasses` imports `inspect` (and with it `ast`, `dis`, `tokenize`), about 8 ms of start-up, and
each decorated class costs another few hundred microseconds of generated code. The modules that
`fastckpt verify FILE` with a sidecar and `fastckpt hash` import use this instead, so that those
commands start as fast as the interpreter allows. Subclasses write their own typed `__init__`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Record:
    """Base of a value class: `_fields` lists the fields in order (what `==` compares, like a
    dataclass, unless `_compare` says otherwise) and `_repr` those `repr` shows (default: all)."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _compare: ClassVar[tuple[str, ...] | None] = None
    _repr: ClassVar[tuple[str, ...] | None] = None

    def _astuple(self, names: tuple[str, ...]) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in names)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        names = self._fields if self._compare is None else self._compare
        return self._astuple(names) == other._astuple(names)  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, like a dataclass

    def __replace__(self, **changes: Any) -> Any:
        """A copy with some fields changed (`copy.replace` on Python >= 3.13, or call it directly),
        built through `__init__` like `dataclasses.replace`."""
        args = {n: getattr(self, n) for n in self._fields}
        args.update(changes)
        return type(self)(**args)

    def __repr__(self) -> str:
        names = self._fields if self._repr is None else self._repr
        body = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{type(self).__qualname__}({body})"


class FrozenRecord(Record):
    """A Record whose fields cannot be reassigned after `__init__` (which sets them with
    `object.__setattr__`); hashable by its compared fields, like a frozen dataclass."""

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self._astuple(self._fields if self._compare is None else self._compare))
