"""A restricted pickle interpreter that builds inert placeholder objects and never imports or
calls anything named by the pickle.

`pickle.Unpickler` resolves every GLOBAL by importing a module and calls every REDUCE target, which
is how a checkpoint runs code. This interpreter walks the same opcodes (protocols 0-5) but:

- GLOBAL / STACK_GLOBAL push a `Global(module, name)` placeholder and record the name; names
  outside the caller's allowlist are reported as unsafe. Nothing is imported.
- REDUCE / NEWOBJ / NEWOBJ_EX / INST / OBJ call a *model* from `reducers` when the callable is
  allowlisted and modelled (e.g. `torch._utils._rebuild_tensor_v2` builds a `TensorRef`), and
  otherwise build an inert `Obj` that remembers the callable, its arguments and later BUILD state.
- PERSID / BINPERSID pass the persistent id to the caller's hook (which must itself be inert).
- EXT1/2/4 (the copyreg extension registry) and out-of-band buffers are rejected.

Every read is bounded by the buffer; malformed input raises `PickleError` with the absolute file
offset of the offending opcode. The interpreter is iterative, so deep nesting cannot overflow the
Python stack.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from typing import Any

# Renames the Python 3 unpickler applies to protocol-2 pickles written by Python 2, so that
# allowlisting sees the names a real load would import.
_NAME_MAPPING = {
    ("__builtin__", "xrange"): ("builtins", "range"),
    ("__builtin__", "reduce"): ("functools", "reduce"),
    ("__builtin__", "intern"): ("sys", "intern"),
    ("__builtin__", "unichr"): ("builtins", "chr"),
    ("__builtin__", "unicode"): ("builtins", "str"),
    ("__builtin__", "long"): ("builtins", "int"),
    ("__builtin__", "basestring"): ("builtins", "str"),
    ("exceptions", "StandardError"): ("builtins", "Exception"),
}
_MODULE_MAPPING = {"__builtin__": "builtins", "copy_reg": "copyreg", "exceptions": "builtins"}


class PickleError(Exception):
    """Malformed or unsupported pickle data at an absolute file offset."""

    def __init__(self, offset: int, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message
        self.truncated = truncated


class Global:
    """An inert reference to `module.name` (never imported)."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    @property
    def full(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"<global {self.full}>"


class Obj:
    """An inert stand-in for an object the pickle would construct by calling `func`."""

    __slots__ = ("args", "func", "items", "kind", "kwargs", "setitems", "state")

    def __init__(
        self, func: Any, args: tuple[Any, ...], kind: str, kwargs: dict[Any, Any] | None = None
    ) -> None:
        self.func = func
        self.args = args
        self.kind = kind  # "reduce" | "newobj" | "inst"
        self.kwargs = kwargs
        self.state: Any = None
        self.items: list[Any] = []  # APPEND(S) onto the object
        self.setitems: list[tuple[Any, Any]] = []  # SETITEM(S) onto the object

    @property
    def name(self) -> str:
        return self.func.full if isinstance(self.func, Global) else type(self.func).__name__

    def __repr__(self) -> str:
        return f"<{self.name} object>"


class ODict(dict):  # type: ignore[type-arg]
    """collections.OrderedDict / Counter placeholder; BUILD state (e.g. `_metadata`) goes to `attrs`."""

    __slots__ = ("attrs",)

    def __init__(self) -> None:
        super().__init__()
        self.attrs: Any = None

    __hash__ = object.__hash__  # type: ignore[assignment]


class _Mark:
    __slots__ = ()


_MARK = _Mark()

Reducer = Callable[[tuple[Any, ...], int], Any]


class RestrictedUnpickler:
    """Interprets one pickle from `data[pos:]` (offsets in errors are `base + position`)."""

    def __init__(
        self,
        data: bytes | memoryview,
        *,
        base: int = 0,
        pos: int = 0,
        allowed: frozenset[str] | set[str] = frozenset(),
        reducers: dict[str, Reducer] | None = None,
        persistent_load: Callable[[Any, int], Any] | None = None,
    ) -> None:
        self.data = data
        self.base = base
        self.pos = pos
        self.allowed = allowed
        self.reducers = reducers or {}
        self.persistent_load = persistent_load
        self.globals_seen: list[str] = []
        self.unsafe: list[str] = []
        self.unsafe_offsets: dict[str, int] = {}
        self.protocol = 0

    # ---- byte access (bounded) -------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise PickleError(
                self.base + len(self.data),
                f"pickle data ends early: an opcode needs {n} more bytes at offset {self.base + self.pos}",
                truncated=True,
            )
        b = bytes(self.data[self.pos : end])
        self.pos = end
        return b

    def _line(self) -> bytes:
        data = self.data
        start = self.pos
        # bytes.find on a memoryview needs a copy; bound the search to keep it cheap.
        limit = min(len(data), start + (1 << 20))
        chunk = bytes(data[start:limit])
        i = chunk.find(b"\n")
        if i < 0:
            raise PickleError(
                self.base + start,
                "pickle text field has no terminating newline",
                truncated=limit == len(data),
            )
        self.pos = start + i + 1
        return chunk[:i]

    # ---- helpers -----------------------------------------------------------------------------
    def _global(self, module: str, name: str, op_off: int) -> Global:
        if (module, name) in _NAME_MAPPING:
            module, name = _NAME_MAPPING[(module, name)]
        elif module in _MODULE_MAPPING:
            module = _MODULE_MAPPING[module]
        g = Global(module, name)
        full = g.full
        if full not in self.globals_seen:
            self.globals_seen.append(full)
        if full not in self.allowed and full not in self.unsafe:
            self.unsafe.append(full)
            self.unsafe_offsets[full] = self.base + op_off
        return g

    def _call(
        self, func: Any, args: Any, kind: str, op_off: int, kwargs: dict[Any, Any] | None = None
    ) -> Any:
        if not isinstance(args, tuple):
            if isinstance(args, list):
                args = tuple(args)
            else:
                raise PickleError(
                    self.base + op_off,
                    f"{kind.upper()} arguments are a {type(args).__name__}, expected a tuple",
                )
        if isinstance(func, Global) and func.full in self.allowed and kwargs is None:
            model = self.reducers.get(func.full)
            if model is not None and kind != "newobj":
                try:
                    return model(args, self.base + op_off)
                except PickleError:
                    raise
                except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError) as e:
                    raise PickleError(
                        self.base + op_off, f"unexpected arguments to {func.full}: {e}"
                    ) from None
        return Obj(func, args, kind, kwargs)

    @staticmethod
    def _build(obj: Any, state: Any, off: int) -> None:
        if isinstance(obj, Obj):
            obj.state = state
        elif isinstance(obj, ODict):
            obj.attrs = state
        elif hasattr(obj, "build"):
            obj.build(state)
        elif isinstance(obj, (dict, list)) and state is None:
            pass
        else:
            # A real unpickler would set attributes or call __setstate__; on a plain value that is
            # an error, and nothing here should execute.
            raise PickleError(off, f"BUILD on a {type(obj).__name__}")

    def _pop_mark(self, off: int) -> list[Any]:
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is _MARK:
                items = stack[i + 1 :]
                del stack[i:]
                return items
        raise PickleError(self.base + off, "pickle has no MARK for this opcode")

    def _pop(self, off: int) -> Any:
        if not self.stack:
            raise PickleError(self.base + off, "pickle stack underflow")
        v = self.stack.pop()
        if v is _MARK:
            raise PickleError(self.base + off, "pickle opcode found a MARK where a value was expected")
        return v

    def _top(self, off: int) -> Any:
        if not self.stack or self.stack[-1] is _MARK:
            raise PickleError(self.base + off, "pickle stack underflow")
        return self.stack[-1]

    def _memo_get(self, idx: int, off: int) -> Any:
        try:
            return self.memo[idx]
        except KeyError:
            raise PickleError(self.base + off, f"pickle memo has no entry {idx}") from None

    # ---- main loop ---------------------------------------------------------------------------
    def load(self) -> Any:
        try:
            return self._load()
        except PickleError:
            raise
        except TypeError as e:  # unhashable dict key / set item built from the pickle
            raise PickleError(self.base + self._op_off, f"invalid pickle value: {e}") from None
        except (ValueError, OverflowError, UnicodeDecodeError, struct.error) as e:
            raise PickleError(self.base + self._op_off, f"invalid pickle field: {e}") from None
        except RecursionError:
            raise PickleError(self.base + self._op_off, "pickle value nests too deeply") from None
        except IndexError:
            raise PickleError(
                self.base + len(self.data),
                f"pickle data ends early: an opcode at offset {self.base + self._op_off} needs more bytes",
                truncated=True,
            ) from None

    def _load(self) -> Any:
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self._op_off = self.pos
        take = self._take
        stack = self.stack
        memo = self.memo
        data = self.data
        data_len = len(data)
        while True:
            off = self.pos
            self._op_off = off
            if off >= data_len:
                raise PickleError(self.base + off, "pickle data ends before the STOP opcode", truncated=True)
            op = data[off]
            self.pos = off + 1
            # Opcode values are the single bytes of pickle.py's table (see pickletools). The
            # opcodes torch's pickler emits most come first; their 1-byte arguments are read
            # directly (an IndexError past the end becomes a truncation error in load()).
            if op == 0x71:  # BINPUT
                if not stack or stack[-1] is _MARK:
                    raise PickleError(self.base + off, "pickle stack underflow")
                memo[data[off + 1]] = stack[-1]
                self.pos = off + 2
            elif op == 0x68:  # BINGET
                idx = data[off + 1]
                if idx not in memo:
                    raise PickleError(self.base + off, f"pickle memo has no entry {idx}")
                stack.append(memo[idx])
                self.pos = off + 2
            elif op == 0x4B:  # BININT1
                stack.append(data[off + 1])
                self.pos = off + 2
            elif op == 0x80:  # PROTO
                self.protocol = take(1)[0]
                if self.protocol > 5:
                    raise PickleError(self.base + off, f"unsupported pickle protocol {self.protocol}")
            elif op == 0x95:  # FRAME: framing only groups opcodes; skip the length
                take(8)
            elif op == 0x2E:  # STOP
                if len(stack) != 1 or stack[0] is _MARK:
                    raise PickleError(self.base + off, "pickle STOP with an unbalanced stack")
                return stack[0]
            elif op == 0x28:  # MARK
                stack.append(_MARK)
            elif op == 0x30:  # POP
                if not stack:
                    raise PickleError(self.base + off, "pickle stack underflow")
                if stack[-1] is _MARK:
                    self._pop_mark(off)
                else:
                    stack.pop()
            elif op == 0x31:  # POP_MARK
                self._pop_mark(off)
            elif op == 0x32:  # DUP
                stack.append(self._top(off))
            # -- constants
            elif op == 0x4E:  # NONE
                stack.append(None)
            elif op == 0x88:  # NEWTRUE
                stack.append(True)
            elif op == 0x89:  # NEWFALSE
                stack.append(False)
            elif op == 0x4D:  # BININT2
                stack.append(struct.unpack("<H", take(2))[0])
            elif op == 0x4A:  # BININT
                stack.append(struct.unpack("<i", take(4))[0])
            elif op == 0x8A:  # LONG1
                n = take(1)[0]
                stack.append(int.from_bytes(take(n), "little", signed=True))
            elif op == 0x8B:  # LONG4
                n = struct.unpack("<i", take(4))[0]
                if n < 0:
                    raise PickleError(self.base + off, "LONG4 with a negative length")
                stack.append(int.from_bytes(take(n), "little", signed=True))
            elif op == 0x49:  # INT (text)
                line = self._line()
                if line == b"00":
                    stack.append(False)
                elif line == b"01":
                    stack.append(True)
                else:
                    stack.append(int(line, 10))
            elif op == 0x4C:  # LONG (text)
                line = self._line()
                if line.endswith(b"L"):
                    line = line[:-1]
                stack.append(int(line, 10))
            elif op == 0x46:  # FLOAT (text)
                stack.append(float(self._line().decode("ascii")))
            elif op == 0x47:  # BINFLOAT
                stack.append(struct.unpack(">d", take(8))[0])
            # -- strings and bytes
            elif op == 0x58:  # BINUNICODE
                n = struct.unpack("<I", take(4))[0]
                stack.append(take(n).decode("utf-8", "surrogatepass"))
            elif op == 0x8C:  # SHORT_BINUNICODE
                n = take(1)[0]
                stack.append(take(n).decode("utf-8", "surrogatepass"))
            elif op == 0x8D:  # BINUNICODE8
                n = struct.unpack("<Q", take(8))[0]
                stack.append(take(n).decode("utf-8", "surrogatepass"))
            elif op == 0x56:  # UNICODE (raw-unicode-escape text)
                stack.append(self._line().decode("raw-unicode-escape"))
            elif op == 0x42:  # BINBYTES
                n = struct.unpack("<I", take(4))[0]
                stack.append(take(n))
            elif op == 0x43:  # SHORT_BINBYTES
                n = take(1)[0]
                stack.append(take(n))
            elif op == 0x8E:  # BINBYTES8
                n = struct.unpack("<Q", take(8))[0]
                stack.append(take(n))
            elif op == 0x96:  # BYTEARRAY8
                n = struct.unpack("<Q", take(8))[0]
                stack.append(bytearray(take(n)))
            elif op == 0x54:  # BINSTRING (Python 2 str)
                n = struct.unpack("<i", take(4))[0]
                if n < 0:
                    raise PickleError(self.base + off, "BINSTRING with a negative length")
                stack.append(take(n).decode("latin-1"))
            elif op == 0x55:  # SHORT_BINSTRING
                n = take(1)[0]
                stack.append(take(n).decode("latin-1"))
            elif op == 0x53:  # STRING (quoted text)
                line = self._line()
                if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b'"', b"'"):
                    stack.append(codecs.escape_decode(line[1:-1])[0].decode("latin-1"))
                else:
                    raise PickleError(self.base + off, "STRING opcode argument must be quoted")
            elif op in (0x97, 0x98):  # NEXT_BUFFER, READONLY_BUFFER
                raise PickleError(
                    self.base + off, "pickle uses out-of-band buffers, which a checkpoint cannot carry"
                )
            # -- containers
            elif op == 0x29:  # EMPTY_TUPLE
                stack.append(())
            elif op == 0x85:  # TUPLE1
                stack.append((self._pop(off),))
            elif op == 0x86:  # TUPLE2
                b = self._pop(off)
                a = self._pop(off)
                stack.append((a, b))
            elif op == 0x87:  # TUPLE3
                c = self._pop(off)
                b = self._pop(off)
                a = self._pop(off)
                stack.append((a, b, c))
            elif op == 0x74:  # TUPLE
                stack.append(tuple(self._pop_mark(off)))
            elif op == 0x5D:  # EMPTY_LIST
                stack.append([])
            elif op == 0x6C:  # LIST
                stack.append(self._pop_mark(off))
            elif op == 0x7D:  # EMPTY_DICT
                stack.append({})
            elif op == 0x64:  # DICT
                items = self._pop_mark(off)
                if len(items) % 2:
                    raise PickleError(self.base + off, "DICT with an odd number of items")
                stack.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})
            elif op == 0x8F:  # EMPTY_SET
                stack.append(set())
            elif op == 0x91:  # FROZENSET
                stack.append(frozenset(self._pop_mark(off)))
            elif op == 0x61:  # APPEND
                v = self._pop(off)
                self._append(self._top(off), [v], off)
            elif op == 0x65:  # APPENDS
                items = self._pop_mark(off)
                self._append(self._top(off), items, off)
            elif op == 0x73:  # SETITEM
                v = self._pop(off)
                k = self._pop(off)
                self._setitems(self._top(off), [k, v], off)
            elif op == 0x75:  # SETITEMS
                items = self._pop_mark(off)
                if len(items) % 2:
                    raise PickleError(self.base + off, "SETITEMS with an odd number of items")
                self._setitems(self._top(off), items, off)
            elif op == 0x90:  # ADDITEMS
                items = self._pop_mark(off)
                target = self._top(off)
                if not isinstance(target, set):
                    raise PickleError(self.base + off, f"ADDITEMS on a {type(target).__name__}")
                target.update(items)
            # -- memo
            elif op == 0x6A:  # LONG_BINGET
                stack.append(self._memo_get(struct.unpack("<I", take(4))[0], off))
            elif op == 0x67:  # GET
                stack.append(self._memo_get(int(self._line()), off))
            elif op == 0x72:  # LONG_BINPUT
                memo[struct.unpack("<I", take(4))[0]] = self._top(off)
            elif op == 0x70:  # PUT
                memo[int(self._line())] = self._top(off)
            elif op == 0x94:  # MEMOIZE
                memo[len(memo)] = self._top(off)
            # -- globals and object construction (never executed)
            elif op == 0x63:  # GLOBAL
                module = self._line().decode("utf-8")
                name = self._line().decode("utf-8")
                stack.append(self._global(module, name, off))
            elif op == 0x93:  # STACK_GLOBAL
                name = self._pop(off)
                module = self._pop(off)
                if not isinstance(module, str) or not isinstance(name, str):
                    raise PickleError(self.base + off, "STACK_GLOBAL needs two strings")
                stack.append(self._global(module, name, off))
            elif op in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4
                raise PickleError(
                    self.base + off,
                    "pickle uses the copyreg extension registry (EXT opcodes), which is not supported",
                )
            elif op == 0x52:  # REDUCE
                args = self._pop(off)
                func = self._pop(off)
                stack.append(self._call(func, args, "reduce", off))
            elif op == 0x81:  # NEWOBJ
                args = self._pop(off)
                cls = self._pop(off)
                stack.append(self._call(cls, args, "newobj", off))
            elif op == 0x92:  # NEWOBJ_EX
                kwargs = self._pop(off)
                args = self._pop(off)
                cls = self._pop(off)
                if not isinstance(kwargs, dict):
                    raise PickleError(self.base + off, "NEWOBJ_EX keyword arguments are not a dict")
                stack.append(self._call(cls, args, "newobj", off, kwargs))
            elif op == 0x69:  # INST
                module = self._line().decode("utf-8")
                name = self._line().decode("utf-8")
                cls = self._global(module, name, off)
                stack.append(self._call(cls, tuple(self._pop_mark(off)), "inst", off))
            elif op == 0x6F:  # OBJ
                items = self._pop_mark(off)
                if not items:
                    raise PickleError(self.base + off, "OBJ without a class")
                stack.append(self._call(items[0], tuple(items[1:]), "inst", off))
            elif op == 0x62:  # BUILD
                state = self._pop(off)
                self._build(self._top(off), state, self.base + off)
            elif op == 0x50:  # PERSID
                pid = self._line().decode("ascii")
                stack.append(self._persistent(pid, off))
            elif op == 0x51:  # BINPERSID
                pid = self._pop(off)
                stack.append(self._persistent(pid, off))
            else:
                raise PickleError(self.base + off, f"unknown pickle opcode 0x{op:02x}")

    def _persistent(self, pid: Any, off: int) -> Any:
        if self.persistent_load is None:
            raise PickleError(self.base + off, "pickle has a persistent id but this file type defines none")
        return self.persistent_load(pid, self.base + off)

    def _append(self, target: Any, items: list[Any], off: int) -> None:
        if isinstance(target, list):
            target.extend(items)
        elif isinstance(target, Obj):
            target.items.extend(items)
        else:
            raise PickleError(self.base + off, f"APPEND on a {type(target).__name__}")

    def _setitems(self, target: Any, items: list[Any], off: int) -> None:
        if isinstance(target, dict):
            for i in range(0, len(items), 2):
                target[items[i]] = items[i + 1]
        elif isinstance(target, Obj):
            target.setitems.extend((items[i], items[i + 1]) for i in range(0, len(items), 2))
        else:
            raise PickleError(self.base + off, f"SETITEM on a {type(target).__name__}")
