"""`fastckpt inspect PATH`: what a checkpoint holds, read with the safe readers (never executes
the pickle, never imports torch except to list an old tar-format file)."""

from __future__ import annotations

import argparse
import os
import struct
from collections import defaultdict
from typing import Any

from ._common import add_json_flag, add_quiet_flag, print_json

EPILOG = """\
exit status: 0 nothing wrong found; 1 the pickle names a global outside the allowlist
(it would run code under torch.load(weights_only=False)) or a structural problem was found;
2 the path cannot be read.

--json prints one object. For a file:
  ok                  bool: no problems and no unsafe globals
  path, format        format: torch-zip | torch-legacy | safetensors | dcp-shard | zip | opaque
  size                file size in bytes; expected_size: the size the file needs when it is
                      truncated and that is derivable, else null
  tensor_count, tensor_bytes   tensors and their bytes (shared storage bytes counted once)
  tensors             [{key, dtype, shape, offset, nbytes, storage}] in file order of keys;
                      offset/nbytes: the byte range in the file; storage: storage id or null
  bytes_by_prefix     {first key component: bytes}
  shared_storages     [{storage, keys}] storages used by more than one tensor
  optimizers          [{path, param_groups: [{params, hyperparameters}], state: {param: [names]},
                        steps: {param: value}}]
  non_tensor_entries  {dotted key: short repr} of non-tensor leaves (step, epoch, lr, ...)
  unsafe_globals      ["module.name"] globals outside the allowlist (never executed)
  globals             every pickle global seen
  problems            [{offset, kind, message}]; kind: truncated | bad-crc | bad-header |
                      bad-pickle | size-mismatch | missing-record | unsafe-pickle | ...
  info                reader facts (zip root, byteorder, safetensors __metadata__, ...)
For a folder (DCP, HF sharded, plain): {ok, path, format, problems, missing_files,
extra_files, files: [one object as above per checkpoint file]}.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "inspect",
        help="list a checkpoint's tensors, optimizer state and problems without loading it",
        description="Show a checkpoint's keys, dtypes and shapes, bytes per top-level prefix, shared "
        "storages, optimizer state, non-tensor entries, pickle globals that would run code, and "
        "structural problems. Reads torch.save (zip and legacy), safetensors, DCP and HF sharded "
        "folders with fastckpt's own parsers: nothing in the file is executed and torch is not needed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="checkpoint file or folder")
    p.add_argument(
        "--crc", action="store_true", help="also check the CRC-32 of every zip record (reads all data)"
    )
    p.add_argument(
        "--max-keys",
        type=int,
        default=200,
        metavar="N",
        help="tensors listed in text output (default 200; 0: all)",
    )
    add_json_flag(p)
    add_quiet_flag(p)
    return p


def _scalar(path: str, t: Any) -> str | None:
    """The value of a one-element tensor (optimizer step counters), read from the file."""
    fmt = {"float32": "<f", "float64": "<d", "int64": "<q", "int32": "<i", "float16": "<e"}.get(t.dtype)
    if fmt is None or t.numel != 1 or t.nbytes != struct.calcsize(fmt):
        return None
    try:
        with open(path, "rb") as f:
            f.seek(t.offset)
            raw = f.read(t.nbytes)
    except OSError:
        return None
    if len(raw) != t.nbytes:
        return None
    v = struct.unpack(fmt, raw)[0]
    return repr(int(v)) if isinstance(v, float) and v.is_integer() else repr(v)


def describe_file(path: str, *, crc: bool = False, quiet: bool = True) -> dict[str, Any]:
    from .._progress import Progress
    from ..formats import read_layout

    size = os.path.getsize(path) if os.path.isfile(path) else 0
    with Progress("inspect", size, enabled=not quiet and crc) as bar:
        layout = read_layout(path, check_crc=crc, progress=bar.update)
    tensors = layout.tensors
    if layout.format == "torch-legacy" and not tensors and layout.info.get("legacy") == "tar":
        tensors_json = _torch_fallback(path)
    else:
        tensors_json = [
            {
                "key": t.key,
                "dtype": t.dtype,
                "shape": list(t.shape),
                "offset": t.offset,
                "nbytes": t.nbytes,
                "storage": t.storage,
            }
            for t in tensors
        ]
    by_storage: dict[str, list[str]] = defaultdict(list)
    for t in tensors:
        if t.storage is not None:
            by_storage[t.storage].append(t.key)
    shared = [{"storage": s, "keys": keys} for s, keys in by_storage.items() if len(keys) > 1]
    ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for t in tensors:
        ranges[t.key.split(".", 1)[0]].append((t.offset, t.offset + t.nbytes))
    by_prefix = {k: _union_bytes(v) for k, v in ranges.items()}
    total = _union_bytes([r for v in ranges.values() for r in v])
    optimizers = []
    for opt in layout.info.get("optimizers", []):
        steps = dict(opt.get("steps", {}))
        pre = f"{opt['path']}." if opt["path"] else ""
        for t in tensors:
            if t.key.startswith(f"{pre}state.") and t.key.endswith(".step"):
                pid = t.key[len(f"{pre}state.") : -len(".step")]
                v = _scalar(path, t)
                if v is not None:
                    steps[pid] = v
        optimizers.append({**opt, "steps": steps})
    info = {k: v for k, v in layout.info.items() if k != "optimizers"}
    return {
        "ok": not layout.problems and not layout.unsafe_globals,
        "path": path,
        "format": layout.format,
        "size": layout.size,
        "expected_size": layout.expected_size,
        "tensor_count": len(tensors_json),
        "tensor_bytes": total,
        "tensors": tensors_json,
        "bytes_by_prefix": dict(by_prefix),
        "shared_storages": shared,
        "optimizers": optimizers,
        "non_tensor_entries": dict(layout.non_tensor_entries),
        "unsafe_globals": list(layout.unsafe_globals),
        "globals": list(layout.globals_seen),
        "problems": [{"offset": q.offset, "kind": q.kind, "message": q.message} for q in layout.problems],
        "info": info,
    }


def _union_bytes(ranges: list[tuple[int, int]]) -> int:
    """Bytes covered by byte ranges (views of a shared storage count once)."""
    total = 0
    end = -1
    for a, b in sorted(ranges):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _torch_fallback(path: str) -> list[dict[str, Any]]:
    """Keys of a pre-0.4 tar-format file via torch.load(weights_only=True) (no byte offsets)."""
    try:
        import torch
    except ImportError:
        return []
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return []
    out: list[dict[str, Any]] = []

    def rec(prefix: str, v: Any) -> None:
        if isinstance(v, torch.Tensor):
            out.append(
                {
                    "key": prefix,
                    "dtype": str(v.dtype).removeprefix("torch."),
                    "shape": list(v.shape),
                    "offset": None,
                    "nbytes": v.numel() * v.element_size(),
                    "storage": None,
                }
            )
        elif isinstance(v, dict):
            for k, x in v.items():
                rec(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                rec(f"{prefix}.{i}" if prefix else str(i), x)

    rec("", obj)
    return out


def describe_dir(path: str, *, crc: bool = False, quiet: bool = True) -> dict[str, Any]:
    from ..formats import read_dir_layout

    d = read_dir_layout(path)
    files = []
    for rel in d.files:
        full = os.path.join(path, rel)
        if os.path.basename(rel) == ".metadata" or rel.endswith(".index.json"):
            continue
        files.append(describe_file(full, crc=crc, quiet=quiet))
    problems = [{"offset": q.offset, "kind": q.kind, "message": q.message} for q in d.problems]
    return {
        "ok": not problems and all(f["ok"] for f in files),
        "path": path,
        "format": d.format,
        "problems": problems,
        "missing_files": d.missing_files,
        "extra_files": d.extra_files,
        "files": files,
    }


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _print_file(d: dict[str, Any], max_keys: int) -> None:
    print(f"{d['path']}: {d['format']}, {d['size']} bytes")
    if d["expected_size"] is not None:
        print(f"  expected size: {d['expected_size']} bytes (truncated)")
    tensors = d["tensors"]
    if tensors:
        print(f"tensors: {d['tensor_count']} ({_human(d['tensor_bytes'])})")
        w = min(max(len(t["key"]) for t in tensors), 60)
        shown = tensors if max_keys <= 0 else tensors[:max_keys]
        for t in shown:
            print(f"  {t['key']:<{w}}  {t['dtype']:<10} {t['shape']!s:<18} {_human(t['nbytes'])}")
        if len(shown) < len(tensors):
            print(f"  ... {len(tensors) - len(shown)} more (--max-keys 0 lists all)")
        print("bytes per prefix:")
        for k, v in sorted(d["bytes_by_prefix"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:<{w}}  {_human(v)}")
    if d["shared_storages"]:
        print("shared storages:")
        for s in d["shared_storages"]:
            print(f"  {s['storage']}: {', '.join(s['keys'])}")
    for o in d["optimizers"]:
        print(f"optimizer {o['path'] or '<root>'}:")
        for i, g in enumerate(o["param_groups"]):
            hp = ", ".join(f"{k}={v}" for k, v in g["hyperparameters"].items())
            print(
                f"  param group {i}: {len(g['params'])} params {g['params'][:8]}{'...' if len(g['params']) > 8 else ''}; {hp}"
            )
        names = sorted({n for v in o["state"].values() for n in v})
        print(f"  state for {len(o['state'])} params: {', '.join(names) or '-'}")
        steps = sorted(set(o["steps"].values()))
        if steps:
            print(f"  step: {', '.join(steps[:5])}{' ...' if len(steps) > 5 else ''}")
    if d["non_tensor_entries"]:
        print("non-tensor entries:")
        items = list(d["non_tensor_entries"].items())
        for k, v in items[:50]:
            print(f"  {k} = {v}")
        if len(items) > 50:
            print(f"  ... {len(items) - 50} more (--json lists all)")
    if d["unsafe_globals"]:
        print("UNSAFE: the pickle names globals outside the allowlist (not executed):")
        for g in d["unsafe_globals"]:
            print(f"  {g}")
    if d["problems"]:
        print("problems:")
        for q in d["problems"]:
            where = f"offset {q['offset']}: " if q["offset"] is not None else ""
            print(f"  {q['kind']}: {where}{q['message']}")


def run(args: argparse.Namespace) -> int:
    from ..remote import local_path  # ---- remote storage (report issue): file:// URLs

    path = local_path(os.fspath(args.path))
    if os.path.isdir(path):
        d = describe_dir(path, crc=args.crc, quiet=args.quiet or args.json)
        if args.json:
            print_json(d)
        else:
            print(f"{path}: {d['format']} folder, {len(d['files'])} checkpoint file(s)")
            for q in d["problems"]:
                print(f"  {q['kind']}: {q['message']}")
            for f in d["files"]:
                print()
                _print_file(f, args.max_keys)
        return 0 if d["ok"] else 1
    d = describe_file(path, crc=args.crc, quiet=args.quiet or args.json)
    if args.json:
        print_json(d)
    else:
        _print_file(d, args.max_keys)
    return 0 if d["ok"] else 1
