"""safetensors files: a strict header parser (huggingface/safetensors README "Format").

Layout: 8 bytes little-endian u64 N, then N bytes of UTF-8 JSON (optionally right-padded with
spaces), then the byte buffer. The JSON object maps each tensor name to {"dtype", "shape",
"data_offsets": [begin, end]} (offsets relative to the buffer) plus an optional "__metadata__"
object of string to string. The reference implementation rejects headers over 100 MB, offsets
that leave holes or overlap, and tensors whose byte length disagrees with dtype x shape; every such
violation becomes a Problem here, with the absolute file offset where it was found.
"""

from __future__ import annotations

import json
from typing import Any

from ._io import FileView
from ._types import Problem, Segment, TensorSpan

MAX_HEADER = 100_000_000

# safetensors dtype -> (torch dtype name, bits per element)
ST_DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 8), "U8": ("uint8", 8), "I8": ("int8", 8),
    "F8_E5M2": ("float8_e5m2", 8), "F8_E4M3": ("float8_e4m3fn", 8), "F8_E8M0": ("float8_e8m0fnu", 8),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8), "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8),
    "I16": ("int16", 16), "U16": ("uint16", 16), "F16": ("float16", 16), "BF16": ("bfloat16", 16),
    "I32": ("int32", 32), "U32": ("uint32", 32), "F32": ("float32", 32), "C64": ("complex64", 64),
    "F64": ("float64", 64), "I64": ("int64", 64), "U64": ("uint64", 64),
    # sub-byte formats have no torch dtype of the same shape semantics; named as in safetensors
    "F4": ("f4", 4), "F6_E2M3": ("f6_e2m3", 6), "F6_E3M2": ("f6_e3m2", 6),
}  # fmt: skip


class _Dup(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise _Dup(k)
        d[k] = v
    return d


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def looks_like_safetensors(fv: FileView) -> bool:
    if fv.size < 10:
        return False
    n = fv.u64(0)
    if n < 2 or n > fv.size - 8:
        return False
    return fv.read(8, 1) == b"{"


def read_safetensors(fv: FileView) -> dict[str, Any]:
    """Returns {segments, tensors, problems, non_tensor, info, expected_size}."""
    size = fv.size
    problems: list[Problem] = []
    segments: list[Segment] = []
    tensors: list[TensorSpan] = []
    non_tensor: dict[str, str] = {}
    info: dict[str, Any] = {}
    out: dict[str, Any] = {
        "segments": segments, "tensors": tensors, "problems": problems,
        "non_tensor": non_tensor, "info": info, "expected_size": None,
    }  # fmt: skip
    if size < 8:
        problems.append(
            Problem(
                0, f"file is {size} bytes, shorter than the 8-byte safetensors header length", "truncated"
            )
        )
        out["expected_size"] = 8 if size else None
        return out
    n = fv.u64(0)
    segments.append(Segment(0, 8, "header", "safetensors header length"))
    info["header_length"] = n
    if n > size - 8:
        problems.append(
            Problem(
                0,
                f"header length {n} runs past the end of the file: only {size - 8} bytes follow the 8-byte length",
                "truncated",
            )
        )
        out["expected_size"] = 8 + n
        return out
    if n > MAX_HEADER:
        problems.append(
            Problem(0, f"header length {n} exceeds the safetensors limit of {MAX_HEADER} bytes", "bad-header")
        )
        return out
    segments.append(Segment(8, n, "header", "safetensors header"))
    raw = fv.read(8, n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(
            Problem(8 + e.start, f"header is not valid UTF-8 (byte 0x{raw[e.start]:02x})", "bad-header")
        )
        return out
    if not text.startswith("{"):
        problems.append(Problem(8, "header must start with '{'", "bad-header"))
        return out
    try:
        header = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except _Dup as d:
        first = text.find(json.dumps(d.key))
        second = text.find(json.dumps(d.key), first + 1) if first >= 0 else -1
        problems.append(Problem(8 + max(second, 0), f"header has the key {d.key!r} twice", "bad-header"))
        return out
    except json.JSONDecodeError as e:
        # json's positions count characters; convert to a byte offset within the header
        pos = len(text[: e.pos].encode("utf-8"))
        problems.append(Problem(8 + pos, f"header is not valid JSON: {e.msg}", "bad-header"))
        return out
    except (ValueError, RecursionError) as e:
        problems.append(Problem(8, f"header is not valid JSON: {e}", "bad-header"))
        return out
    if not isinstance(header, dict):
        problems.append(
            Problem(8, f"header must be a JSON object, found {type(header).__name__}", "bad-header")
        )
        return out
    stripped = text.rstrip(" ")
    if not stripped.endswith("}"):
        problems.append(
            Problem(
                8 + len(stripped.encode()),
                "header may only be padded with spaces after the closing '}'",
                "bad-header",
            )
        )
    data_start = 8 + n
    buf_len = size - data_start
    info["data_offset"] = data_start
    meta = header.pop("__metadata__", None)
    if meta is not None:
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            problems.append(Problem(8, "__metadata__ must be an object of string to string", "bad-header"))
        else:
            info["metadata"] = meta
            for k, v in meta.items():
                non_tensor[f"__metadata__.{k}"] = v if len(v) <= 80 else v[:77] + "..."
    ranges: list[tuple[int, int, str]] = []
    past_end: list[Problem] = []
    for key, entry in header.items():
        where = 8 + max(text.find(json.dumps(key)), 0)
        if not isinstance(entry, dict):
            problems.append(Problem(where, f"tensor {key!r}: entry must be an object", "bad-header"))
            continue
        extra = sorted(set(entry) - {"dtype", "shape", "data_offsets"})
        missing = sorted({"dtype", "shape", "data_offsets"} - set(entry))
        if missing:
            problems.append(Problem(where, f"tensor {key!r}: missing {', '.join(missing)}", "bad-header"))
            continue
        if extra:
            problems.append(
                Problem(where, f"tensor {key!r}: unknown field(s) {', '.join(extra)}", "bad-header")
            )
        dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in ST_DTYPES:
            problems.append(Problem(where, f"tensor {key!r}: unknown dtype {dtype!r}", "bad-header"))
            continue
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            problems.append(
                Problem(
                    where,
                    f"tensor {key!r}: shape must be a list of non-negative integers, found {shape!r}"[:200],
                    "bad-header",
                )
            )
            continue
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int and o >= 0 for o in offs)):
            problems.append(
                Problem(
                    where,
                    f"tensor {key!r}: data_offsets must be [begin, end] integers, found {offs!r}"[:200],
                    "bad-header",
                )
            )
            continue
        begin, end = offs
        if end < begin:
            problems.append(
                Problem(
                    where,
                    f"tensor {key!r}: data_offsets [{begin}, {end}] end before they begin",
                    "bad-header",
                )
            )
            continue
        tname, bits = ST_DTYPES[dtype]
        numel = 1
        for dim in shape:
            numel *= dim
        if (numel * bits) % 8:
            problems.append(
                Problem(
                    where, f"tensor {key!r}: {numel} x {dtype} is not a whole number of bytes", "bad-header"
                )
            )
            continue
        want = numel * bits // 8
        if end - begin != want:
            problems.append(
                Problem(
                    where,
                    f"tensor {key!r}: data_offsets [{begin}, {end}] hold {end - begin} bytes, but {dtype} {shape} needs {want}",
                    "size-mismatch",
                )
            )
        if end > buf_len:
            # A tensor that starts past the end is a truncation only if the offsets are otherwise
            # consistent (decided below); on its own it is a bad offset.
            past_end.append(
                Problem(data_start + min(begin, buf_len), f"tensor {key!r}: data_offsets [{begin}, {end}] run past the end of the byte buffer ({buf_len} bytes)",
                        "truncated" if begin <= buf_len else "bad-header")
            )  # fmt: skip
            problems.append(past_end[-1])
        ranges.append((begin, end, key))
        tensors.append(
            TensorSpan(key, tname, tuple(shape), data_start + begin, end - begin, max(1, bits // 8), None)
        )
        if end > begin:
            segments.append(Segment(data_start + begin, end - begin, "tensor-data", key))
    ranges.sort()
    pos = 0
    prev_key = None
    consistent = True
    for begin, end, key in ranges:
        if begin > pos:
            consistent = False
            problems.append(
                Problem(
                    data_start + pos,
                    f"gap of {begin - pos} bytes in the byte buffer before tensor {key!r} (buffer offsets [{pos}, {begin}) belong to no tensor)",
                    "bad-header",
                )
            )
        elif begin < pos:
            consistent = False
            problems.append(
                Problem(
                    data_start + begin,
                    f"tensor {key!r} at buffer offsets [{begin}, {end}) overlaps tensor {prev_key!r}, which ends at {pos}",
                    "bad-header",
                )
            )
        if end >= pos:
            pos = end
            prev_key = key
    if pos < buf_len:
        problems.append(
            Problem(
                data_start + pos,
                f"{buf_len - pos} bytes after the last tensor are not covered by any tensor (the buffer must be covered exactly)",
                "bad-header",
            )
        )
    elif pos > buf_len:
        out["expected_size"] = data_start + pos
        if consistent:
            for q in past_end:
                q.kind = "truncated"
    return out
