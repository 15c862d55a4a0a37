"""A lean stand-in for the part of `dataclasses` that fastckpt's start-up path uses.

`dataclasses` imports `inspect` (and with it `ast`, `dis`, `tokenize`, `linecache`): about 8 ms, and
each decorated class costs a few hundred microseconds more of generated code. The modules that
`fastckpt verify FILE` (with a sidecar) and `fastckpt hash` import declare their value classes with
this module's `dataclass` instead, so those commands start as fast as the interpreter allows.

Supported, with the standard library's behaviour: `@dataclass` and `@dataclass(frozen=True)`;
fields from class annotations in order (`ClassVar` annotations skipped); plain defaults and
`field(default=..., default_factory=..., repr=..., compare=...)`; the generated `__init__` (calls
`__post_init__` when defined), `__repr__`, `__eq__`, `__hash__` (frozen: hash of the compared
fields; otherwise unhashable) and `__match_args__`; `FrozenInstanceError` on assignment to a frozen
instance; `replace(obj, **changes)` and `fields(obj)`. Methods the class defines itself are kept.
Anything else (`order`, `slots`, `kw_only`, `init=False`, dataclass inheritance) raises TypeError
at class creation: use the standard `dataclasses` for those classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # type checkers treat `dataclass` below like dataclasses.dataclass (PEP 681)
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: Any) -> Any:
        return lambda f: f


_T = TypeVar("_T")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen instance (an AttributeError, like dataclasses')."""


class Field:
    __slots__ = ("compare", "default", "default_factory", "name", "repr")

    def __init__(self, default: Any, default_factory: Any, repr: bool, compare: bool) -> None:
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare

    def __repr__(self) -> str:
        return (
            f"Field(name={self.name!r}, default={self.default!r}, repr={self.repr}, compare={self.compare})"
        )


def field(
    *, default: Any = MISSING, default_factory: Any = MISSING, repr: bool = True, compare: bool = True
) -> Any:
    """Like `dataclasses.field` with these four options."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, repr, compare)


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):  # `from __future__ import annotations`
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return getattr(annotation, "__origin__", None) is not None and "ClassVar" in repr(annotation)


def _process(cls: type[_T], frozen: bool) -> type[_T]:
    for base in cls.__mro__[1:]:
        if "__record_fields__" in base.__dict__ or "__dataclass_fields__" in base.__dict__:
            raise TypeError(f"{cls.__name__}: fastckpt._record does not support dataclass inheritance")
    specs: list[Field] = []
    # The class's own annotations (inspect.get_annotations would import inspect, the cost avoided here).
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(value, MISSING, True, True)
        f.name = name
        if f.default is not MISSING and type(f.default).__hash__ is None:
            raise ValueError(
                f"mutable default {type(f.default)} for field {name} is not allowed: use default_factory"
            )
        if f.default is MISSING:
            if isinstance(value, Field):
                delattr(cls, name)
        else:
            setattr(cls, name, f.default)
        if specs and f.default is MISSING and f.default_factory is MISSING:
            last = specs[-1]
            if last.default is not MISSING or last.default_factory is not MISSING:
                raise TypeError(f"non-default argument {name!r} follows default argument")
        specs.append(f)
    names = tuple(f.name for f in specs)
    compared = tuple(f.name for f in specs if f.compare)
    shown = tuple(f.name for f in specs if f.repr)
    qualname = cls.__qualname__
    setattr_ = object.__setattr__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(
                f"{qualname}.__init__() takes {len(names) + 1} positional arguments but {len(args) + 1} were given"
            )
        for key in kwargs:
            if key not in names:
                raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument {key!r}")
            if names.index(key) < len(args):
                raise TypeError(f"{qualname}.__init__() got multiple values for argument {key!r}")
        missing = []
        for i, f in enumerate(specs):
            if i < len(args):
                value = args[i]
            elif f.name in kwargs:
                value = kwargs[f.name]
            elif f.default is not MISSING:
                value = f.default
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            else:
                missing.append(f.name)
                continue
            setattr_(self, f.name, value)
        if missing:
            raise TypeError(
                f"{qualname}.__init__() missing {len(missing)} required argument(s): "
                + ", ".join(repr(n) for n in missing)
            )
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def __repr__(self: Any) -> str:
        return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in shown)})"

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return tuple(getattr(self, n) for n in compared) == tuple(getattr(other, n) for n in compared)

    def __hash__(self: Any) -> int:
        return hash(tuple(getattr(self, n) for n in compared))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    methods: dict[str, Any] = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__}
    if frozen:
        methods.update(__setattr__=__setattr__, __delattr__=__delattr__)
    for name, fn in methods.items():
        if name not in cls.__dict__:
            fn.__qualname__ = f"{qualname}.{name}"
            setattr(cls, name, fn)
    if "__hash__" not in cls.__dict__ or cls.__dict__["__hash__"] is None:
        # A class body that defines __eq__ gets __hash__ = None from Python; dataclasses then decides.
        cls.__hash__ = __hash__ if frozen else None  # type: ignore[assignment, method-assign]
    setattr(cls, "__match_args__", names)  # noqa: B010  (a class attribute mypy cannot see)
    cls.__record_fields__ = tuple(specs)  # type: ignore[attr-defined]
    return cls


@dataclass_transform(field_specifiers=(field,))
def dataclass(cls: type[_T] | None = None, /, *, frozen: bool = False) -> Any:
    """`@dataclass` or `@dataclass(frozen=True)`; see the module docstring for what is supported."""
    if cls is None:
        return lambda c: _process(c, frozen)
    return _process(cls, frozen)


def fields(obj: Any) -> tuple[Field, ...]:
    """The fields of a class made by this module's `dataclass` (or of one of its instances)."""
    try:
        return tuple(obj.__record_fields__)
    except AttributeError:
        raise TypeError("fields() should be called on a fastckpt._record dataclass or instance") from None


def replace(obj: _T, /, **changes: Any) -> _T:
    """A copy of `obj` with some fields changed, made through `__init__` (like dataclasses.replace)."""
    for f in fields(obj):
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return obj.__class__(**changes)
