"""What torch.save pickles mean, without torch: dtype and storage tables, the allowlist of
globals, inert models of torch's tensor rebuild functions, and the walk that turns an unpickled
placeholder tree into dotted tensor keys, non-tensor leaves and optimizer summaries.

The tables restate facts about torch's serialization format (torch/storage.py,
torch/_utils.py, torch/_weights_only_unpickler.py); nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._pickle import Global, Obj, ODict, PickleError, Reducer

# torch dtype name -> bytes per element.
DTYPE_ITEMSIZE: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "complex128": 16, "complex64": 8, "complex32": 4,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1,
    "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1,
    "float8_e5m2": 1, "float8_e4m3fn": 1, "float8_e5m2fnuz": 1, "float8_e4m3fnuz": 1,
    "float8_e8m0fnu": 1, "float4_e2m1fn_x2": 1,
    "qint8": 1, "quint8": 1, "qint32": 4, "quint4x2": 1, "quint2x4": 1,
    "bits1x8": 1, "bits2x4": 1, "bits4x2": 1, "bits8": 1, "bits16": 2,
}  # fmt: skip
for _bits in range(1, 8):
    DTYPE_ITEMSIZE[f"uint{_bits}"] = 1
    DTYPE_ITEMSIZE[f"int{_bits}"] = 1

# Legacy typed storage class name -> dtype (torch.storage._dtype_to_storage_type_map, inverted).
STORAGE_DTYPE: dict[str, str] = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128", "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8", "QInt32Storage": "qint32", "QUInt8Storage": "quint8",
    "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}  # fmt: skip

_TENSOR_CLASSES = ["Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"]


def _base_allowlist() -> frozenset[str]:
    names = {
        "collections.OrderedDict",
        "collections.Counter",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.set",
        "builtins.frozenset",
        "builtins.complex",
        "builtins.slice",
        "torch._tensor._rebuild_from_type_v2",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "torch.UntypedStorage",
        "torch.TypedStorage",
        "torch.per_tensor_affine",
        "torch.per_tensor_symmetric",
        "torch.per_channel_affine",
        "torch.per_channel_symmetric",
        "torch.per_channel_affine_float_qparams",
        "torch.strided",
        "torch.sparse_coo",
        "torch.sparse_csr",
        "torch.contiguous_format",
        "torch.channels_last",
        "torch.preserve_format",
    }
    names.update(f"torch.{d}" for d in DTYPE_ITEMSIZE)
    for s in STORAGE_DTYPE:
        names.add(f"torch.{s}")
        names.add(f"torch.cuda.{s}")
    for t in _TENSOR_CLASSES:
        for mod in ("torch", "torch.cuda", "torch.sparse", "torch.cuda.sparse"):
            names.add(f"{mod}.{t}Tensor")
    for f in (
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_qtensor",
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_sparse_tensor",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_nested_tensor",
        "_rebuild_wrapper_subclass",
        "_rebuild_device_tensor_from_numpy",
        "_rebuild_device_tensor_from_cpu_tensor",
    ):
        names.add(f"torch._utils.{f}")
    return frozenset(names)


TORCH_ALLOWED = _base_allowlist()


# ---- placeholder values for storages and tensors --------------------------------------------
@dataclass(eq=False)
class StorageRef:
    """A storage named by a persistent id; the reader resolves `key` to a byte range."""

    key: str
    dtype: str
    itemsize: int
    numel: int | None  # elements of `dtype` (None when the persistent id omits it)
    location: str
    pid_offset: int
    # filled by the reader
    record: str | None = None
    data_offset: int | None = None
    data_length: int | None = None


@dataclass(eq=False)
class TensorRef:
    storage: StorageRef | None
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str
    itemsize: int
    kind: str = "tensor"  # "tensor" | "parameter" | "qtensor"
    requires_grad: bool = False
    op_offset: int = 0

    def span_elements(self) -> int:
        """Storage elements a strided view covers, from its first element to its last."""
        if any(s == 0 for s in self.shape):
            return 0
        return 1 + sum((s - 1) * st for s, st in zip(self.shape, self.stride, strict=False))

    def build(self, state: Any) -> None:  # BUILD on a tensor sets python attributes: keep inert
        pass


@dataclass(eq=False)
class Composite:
    """A tensor made of several tensors (sparse, nested): walked as `key.part`."""

    kind: str
    parts: dict[str, Any]


@dataclass(eq=False)
class NoDataTensor:
    """A tensor without bytes in the file (meta tensors, wrapper subclasses)."""

    kind: str
    dtype: str
    shape: tuple[int, ...]


def dtype_of(value: Any, off: int) -> str:
    if isinstance(value, Global) and value.module == "torch" and value.name in DTYPE_ITEMSIZE:
        return value.name
    raise PickleError(off, f"expected a torch dtype, found {value!r}")


def storage_type_dtype(value: Any, off: int) -> str:
    """dtype stored by a storage class global (UntypedStorage stores bytes)."""
    if isinstance(value, Global):
        if value.name in STORAGE_DTYPE and value.module in ("torch", "torch.cuda"):
            return STORAGE_DTYPE[value.name]
        if value.name in ("UntypedStorage", "TypedStorage") and value.module in ("torch", "torch.storage"):
            return "uint8"
        if value.module == "torch" and value.name in DTYPE_ITEMSIZE:  # some writers pass a dtype
            return value.name
    raise PickleError(off, f"persistent id names an unknown storage type {value!r}")


def _int_tuple(value: Any, what: str, off: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        if any(v < 0 for v in value):
            raise PickleError(off, f"tensor {what} has a negative entry {tuple(value)}")
        return tuple(value)
    raise PickleError(off, f"tensor {what} must be a tuple of ints, found {value!r}"[:200])


def _make_tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: str | None, off: int) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise PickleError(off, f"tensor rebuild expects a storage, found {storage!r}"[:200])
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise PickleError(off, f"tensor storage offset must be a non-negative int, found {offset!r}"[:200])
    shape = _int_tuple(size, "size", off)
    strides = _int_tuple(stride, "stride", off)
    if len(shape) != len(strides):
        raise PickleError(off, f"tensor size {shape} and stride {strides} have different lengths")
    dt = dtype or storage.dtype
    return TensorRef(storage, offset, shape, strides, dt, DTYPE_ITEMSIZE[dt], op_offset=off)


def _rebuild_tensor(args: tuple[Any, ...], off: int) -> Any:
    return _make_tensor(args[0], args[1], args[2], args[3], None, off)


def _rebuild_tensor_v3(args: tuple[Any, ...], off: int) -> Any:
    return _make_tensor(args[0], args[1], args[2], args[3], dtype_of(args[6], off), off)


def _rebuild_qtensor(args: tuple[Any, ...], off: int) -> Any:
    t = _make_tensor(args[0], args[1], args[2], args[3], None, off)
    t.kind = "qtensor"
    return t


def _rebuild_parameter(args: tuple[Any, ...], off: int) -> Any:
    data = args[0]
    if isinstance(data, TensorRef):
        return TensorRef(
            data.storage, data.storage_offset, data.shape, data.stride, data.dtype, data.itemsize,
            kind="parameter", requires_grad=bool(args[1]), op_offset=data.op_offset,
        )  # fmt: skip
    return data


def _rebuild_from_type_v2(args: tuple[Any, ...], off: int) -> Any:
    func, _new_type, fargs, _state = args[:4]
    if isinstance(func, Global):
        model = REDUCERS.get(func.full)
        if model is not None and isinstance(fargs, tuple):
            return model(fargs, off)
    return Obj(func, fargs if isinstance(fargs, tuple) else (fargs,), "reduce")


def _rebuild_sparse(args: tuple[Any, ...], off: int) -> Any:
    data = args[1] if len(args) > 1 else ()
    parts = {f"part{i}": v for i, v in enumerate(data)} if isinstance(data, (tuple, list)) else {"data": data}
    return Composite("sparse", parts)


def _rebuild_nested(args: tuple[Any, ...], off: int) -> Any:
    return Composite("nested", {"buffer": args[0]})


def _rebuild_meta(args: tuple[Any, ...], off: int) -> Any:
    return NoDataTensor("meta", dtype_of(args[0], off), _int_tuple(args[1], "size", off))


def _rebuild_wrapper(args: tuple[Any, ...], off: int) -> Any:
    return NoDataTensor("wrapper-subclass", dtype_of(args[1], off), _int_tuple(args[2], "size", off))


def _rebuild_device_from_cpu(args: tuple[Any, ...], off: int) -> Any:
    return args[0]


def _ordered_dict(args: tuple[Any, ...], off: int) -> Any:
    d = ODict()
    if args:
        src = args[0]
        if isinstance(src, dict):
            d.update(src)
        elif isinstance(src, (list, tuple)):
            for kv in src:
                if not (isinstance(kv, (list, tuple)) and len(kv) == 2):
                    raise PickleError(off, "OrderedDict items must be pairs")
                d[kv[0]] = kv[1]
    return d


def _torch_size(args: tuple[Any, ...], off: int) -> Any:
    return tuple(args[0]) if args else ()


def _codecs_encode(args: tuple[Any, ...], off: int) -> Any:
    s = args[0]
    enc = args[1] if len(args) > 1 else "utf-8"
    if not isinstance(s, str) or enc not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise PickleError(off, f"_codecs.encode with unsupported arguments {args!r}"[:200])
    return s.encode(enc)


def _set(args: tuple[Any, ...], off: int) -> Any:
    return set(args[0]) if args else set()


def _frozenset(args: tuple[Any, ...], off: int) -> Any:
    return frozenset(args[0]) if args else frozenset()


def _bytearray(args: tuple[Any, ...], off: int) -> Any:
    if not args:
        return b""
    if isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    if isinstance(args[0], list) and all(isinstance(b, int) and 0 <= b < 256 for b in args[0]):
        return bytes(args[0])
    raise PickleError(off, "bytearray from an unsupported value")


def _complex(args: tuple[Any, ...], off: int) -> Any:
    if all(isinstance(a, (int, float)) for a in args) and len(args) <= 2:
        return complex(*args)
    raise PickleError(off, "complex from an unsupported value")


def _get_layout(args: tuple[Any, ...], off: int) -> Any:
    return f"<layout {args[0]}>" if args else "<layout>"


def _device(args: tuple[Any, ...], off: int) -> Any:
    return f"<device {':'.join(str(a) for a in args)}>"


REDUCERS: dict[str, Reducer] = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_qtensor": _rebuild_qtensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch._utils._rebuild_sparse_tensor": _rebuild_sparse,
    "torch._utils._rebuild_nested_tensor": _rebuild_nested,
    "torch._utils._rebuild_meta_tensor_no_storage": _rebuild_meta,
    "torch._utils._rebuild_wrapper_subclass": _rebuild_wrapper,
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": _rebuild_device_from_cpu,
    "collections.OrderedDict": _ordered_dict,
    "collections.Counter": _ordered_dict,
    "torch.Size": _torch_size,
    "_codecs.encode": _codecs_encode,
    "builtins.set": _set,
    "builtins.frozenset": _frozenset,
    "builtins.bytearray": _bytearray,
    "builtins.complex": _complex,
    "torch.serialization._get_layout": _get_layout,
    "torch.device": _device,
}


# ---- walking the placeholder tree --------------------------------------------------------------
_MAX_NON_TENSOR = 20000
_MAX_NODES = 5_000_000


def short_repr(v: Any, limit: int = 80) -> str:
    if isinstance(v, (bytes, bytearray)):
        r = f"bytes[{len(v)}]" if len(v) > 32 else repr(bytes(v))
    elif isinstance(v, str):
        r = repr(v)
    elif isinstance(v, (list, tuple, set, frozenset)) and len(v) > 8:
        kinds = sorted({type(x).__name__ for x in v})
        r = f"{type(v).__name__}[{len(v)}] of {'/'.join(kinds)}"
    else:
        r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


_SCALARS = (int, float, complex, str, bytes, bytearray, bool, type(None))


def short_repr_text(r: str, limit: int) -> str:
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _key_part(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, (int, float, bool)) or k is None:
        return str(k)
    if isinstance(k, tuple):
        return "(" + ",".join(_key_part(x) for x in k) + ")"
    return short_repr(k, 40)


def _join(prefix: str, part: str) -> str:
    return f"{prefix}.{part}" if prefix else part


@dataclass
class WalkResult:
    tensors: list[tuple[str, TensorRef | StorageRef]] = field(default_factory=list)
    non_tensor: dict[str, str] = field(default_factory=dict)
    optimizers: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False


def walk(root: Any) -> WalkResult:
    """Depth-first, iterative walk in pickle order. Containers reached twice are walked once."""
    res = WalkResult()
    seen: set[int] = set()
    nodes = 0
    work: list[tuple[str, Any]] = [("", root)]
    while work:
        path, v = work.pop()
        nodes += 1
        if nodes > _MAX_NODES:
            res.truncated = True
            break
        if isinstance(v, (TensorRef, StorageRef)):
            res.tensors.append((path, v))
            continue
        if isinstance(v, (_SCALARS, Global)):
            if len(res.non_tensor) < _MAX_NON_TENSOR:
                res.non_tensor[path or "<root>"] = short_repr(v)
            else:
                res.truncated = True
            continue
        if isinstance(v, NoDataTensor):
            res.non_tensor[path or "<root>"] = f"<{v.kind} tensor {v.dtype} {list(v.shape)}>"
            continue
        if id(v) in seen:
            continue
        seen.add(id(v))
        children: list[tuple[str, Any]] = []
        if isinstance(v, dict):
            if _looks_like_optimizer(v):
                res.optimizers.append(_optimizer_summary(path, v))
            children = [(_join(path, _key_part(k)), x) for k, x in v.items()]
        elif isinstance(v, (list, tuple)):
            if v and all(isinstance(x, _SCALARS) for x in v):
                res.non_tensor[path or "<root>"] = short_repr(v)
                continue
            children = [(_join(path, str(i)), x) for i, x in enumerate(v)]
        elif isinstance(v, (set, frozenset)):
            res.non_tensor[path or "<root>"] = short_repr(v)
            continue
        elif isinstance(v, Composite):
            children = [(_join(path, k), x) for k, x in v.parts.items()]
        elif isinstance(v, Obj):
            st = v.state
            if isinstance(st, tuple) and len(st) == 2 and isinstance(st[0], (dict, type(None))):
                st = {**(st[0] or {}), **(st[1] if isinstance(st[1], dict) else {})}
            if isinstance(st, dict):
                children += [(_join(path, _key_part(k)), x) for k, x in st.items()]
            elif st is not None:
                children.append((_join(path, "__state__"), st))
            # Arguments that hold containers or tensors are walked; the call itself is recorded
            # as a leaf when the object has no state of its own (what it would construct/call).
            children += [
                (_join(path, f"__arg{i}__"), x)
                for i, x in enumerate(v.args)
                if not isinstance(x, (*_SCALARS, Global))
            ]
            children += [(_join(path, str(i)), x) for i, x in enumerate(v.items)]
            children += [(_join(path, _key_part(k)), x) for k, x in v.setitems]
            if st is None and len(res.non_tensor) < _MAX_NON_TENSOR:
                shown = ", ".join(
                    short_repr(a, 40) if isinstance(a, (*_SCALARS, Global)) else "..." for a in v.args
                )
                res.non_tensor[path or "<root>"] = short_repr_text(f"<{v.name}({shown})>", 120)
        else:
            res.non_tensor[path or "<root>"] = short_repr(v)
        work.extend(reversed(children))
    return res


def _looks_like_optimizer(d: dict[Any, Any]) -> bool:
    pg = d.get("param_groups")
    return "state" in d and isinstance(pg, list) and all(isinstance(g, dict) and "params" in g for g in pg)


def _optimizer_summary(path: str, d: dict[Any, Any]) -> dict[str, Any]:
    groups = []
    for g in d["param_groups"]:
        params = g.get("params")
        hyper = {
            str(k): short_repr(x, 40)
            for k, x in g.items()
            if k != "params" and isinstance(x, (*_SCALARS, tuple))
        }
        groups.append(
            {
                "params": [p if isinstance(p, (int, str)) else short_repr(p, 20) for p in params]
                if isinstance(params, list)
                else [],
                "hyperparameters": hyper,
            }
        )
    state = d.get("state")
    with_state: dict[str, list[str]] = {}
    steps: dict[str, str] = {}
    if isinstance(state, dict):
        for pid, s in state.items():
            if isinstance(s, dict):
                with_state[_key_part(pid)] = [_key_part(k) for k in s]
                if "step" in s and isinstance(s["step"], _SCALARS):
                    steps[_key_part(pid)] = short_repr(s["step"], 30)
    return {"path": path, "param_groups": groups, "state": with_state, "steps": steps}
