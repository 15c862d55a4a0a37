"""`fastckpt inspect PATH`: what a checkpoint holds, read with the safe readers (never executes
the pickle, never imports torch except to list an old tar-format file)."""

from __future__ import annotations

import argparse
import os
import struct
import sys
from collections import defaultdict
from typing import Any

from ._common import add_json_flag, add_quiet_flag, print_json

EPILOG = """\
exit status: 0 nothing wrong found; 1 the pickle names a global outside the allowlist
(it would run code under torch.load(weights_only=False)) or a structural problem was found;
2 the path cannot be read.

--json prints one object. For a file:
  ok                  bool: no problems and no unsafe globals
  path, format        format: torch-zip | torch-legacy | safetensors | dcp-shard | dcp-metadata |
                      hf-index | zip | opaque
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

--check-optimizer loads the checkpoint without executing code (torch.load(weights_only=True,
mmap=True); DCP folders item by item through fastckpt's metadata reader) and validates its
optimizer state with fastckpt.check_optimizer_state. Text output is then the first line, any
unsafe globals and problems, and the report. With --json the inspect object gains
  optimizer_check     {ok, checked, found, message, errors, warnings, summary}
                      ok: checked, found and no errors; checked: the state could be loaded;
                      found: an optimizer state_dict was found (null when not loaded);
                      message: why it was not checked or not found (else null);
                      errors/warnings: one-line strings; summary: check_optimizer_state's summary
For a DCP folder the object is at the top level; for other folders every file object has its own
and the top level aggregates them (errors prefixed with the file, summary {"files": {file: ...}}).
Exit status with --check-optimizer: 1 when a check fails or the checkpoint has unsafe globals or
structural problems (it is then not loaded); else 2 when no optimizer state is found or the
checkpoint cannot be loaded; else 0. Warnings (e.g. step counts that differ) never fail.
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
    p.add_argument(
        "--check-optimizer",
        action="store_true",
        help="load the checkpoint safely and validate its optimizer state (exit 1 when a check fails, "
        "2 when there is no optimizer state)",
    )
    p.add_argument(
        "--optimizer-key",
        metavar="KEY",
        help="with --check-optimizer: the top-level entry holding the optimizer state_dict "
        "(default: found automatically)",
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
    if d["format"] in ("dcp-metadata", "hf-index"):  # folder metadata: no tensor bytes of its own
        info = d["info"]
        what = f"{info['items']} item(s)" if d["format"] == "dcp-metadata" else f"{info['tensors']} tensor(s)"
        files = info["files"]
        print(
            f"references: {what} in {len(files)} file(s): {', '.join(files[:8])}{' ...' if len(files) > 8 else ''}"
        )
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


# ---------------------------------------------------------------------------------------------
# --check-optimizer
# ---------------------------------------------------------------------------------------------


def _opt_result(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ok": False,
        "checked": False,
        "found": None,
        "message": None,
        "errors": [],
        "warnings": [],
        "summary": {},
    }
    out.update(kw)
    return out


def _check_loaded(obj: Any, key: str | None) -> dict[str, Any]:
    from ..errors import UsageError
    from ..optimizer_check import check_optimizer_state

    try:
        report = check_optimizer_state(obj, key=key)
    except UsageError as e:
        return _opt_result(checked=True, found=False, message=str(e))
    return _opt_result(checked=True, found=True, **report.to_json())


def _not_loadable(d: dict[str, Any]) -> str | None:
    """Why a described file or folder is not loaded (damage or a dangerous global), or None."""
    if d.get("unsafe_globals"):
        return (
            "not loaded: the pickle names globals outside the weights_only allowlist "
            f"({', '.join(d['unsafe_globals'][:5])}); loading would import and call them"
        )
    if d["problems"] or d.get("missing_files"):
        return "not loaded: the checkpoint has structural problems (see problems)"
    return None


def check_optimizer_file(path: str, d: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """The `optimizer_check` object for one file that `describe_file` described as `d`."""
    from .._safe_load import TORCH_FORMATS, load_file
    from ..errors import InputError

    why = _not_loadable(d)
    if why:
        return _opt_result(message=why)
    if d["format"] not in TORCH_FORMATS:
        return _opt_result(
            checked=True,
            found=False,
            message=f"no optimizer state_dict: a {d['format']} file holds no param_groups",
        )
    try:
        loaded = load_file(path)
    except InputError as e:
        return _opt_result(message=str(e))
    return _check_loaded(loaded.obj, key)


def check_optimizer_dir(path: str, d: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """The folder-level `optimizer_check` object (and, except for DCP, one per file in d["files"])."""
    from .._safe_load import load_dcp
    from ..errors import InputError

    if d["format"] == "dcp":
        why = _not_loadable(d) or next((_not_loadable(f) for f in d["files"] if _not_loadable(f)), None)
        if why:
            return _opt_result(message=why)
        try:
            loaded = load_dcp(path, only_optimizer=key is None)
        except InputError as e:
            return _opt_result(message=str(e))
        return _check_loaded(loaded.obj, key)
    for f in d["files"]:
        f["optimizer_check"] = check_optimizer_file(f["path"], f, key)
    results = [(os.path.relpath(f["path"], path), f["optimizer_check"]) for f in d["files"]]
    found = [(rel, r) for rel, r in results if r["found"]]
    failed = [(rel, r) for rel, r in results if r["errors"]]
    unloaded = [(rel, r) for rel, r in results if not r["checked"]]
    out = _opt_result(
        checked=not unloaded,
        found=bool(found) if found or not unloaded else None,
        errors=[f"{rel}: {e}" for rel, r in results for e in r["errors"]],
        warnings=[f"{rel}: {w}" for rel, r in results for w in r["warnings"]],
        summary={"files": {rel: r["summary"] for rel, r in found}},
    )
    out["ok"] = bool(found) and not failed and not unloaded
    if unloaded:
        out["message"] = "; ".join(f"{rel}: {r['message']}" for rel, r in unloaded)
    elif not found:
        out["message"] = "no optimizer state_dict in any checkpoint file of the folder"
    return out


def _opt_exit(d: dict[str, Any], r: dict[str, Any]) -> int:
    if r["errors"] or not d["ok"]:
        return 1
    if not r["checked"] or not r["found"]:
        return 2
    return 0


def _print_opt(r: dict[str, Any], indent: str = "") -> None:
    from ..optimizer_check import OptimizerReport

    if r["checked"] and r["found"]:
        text = OptimizerReport(list(r["errors"]), list(r["warnings"]), r["summary"]).format_text()
        for line in text.splitlines():
            print(f"{indent}{line}")
    elif r["message"]:
        print(f"{indent}optimizer check: {r['message']}")


def _print_check_file(d: dict[str, Any]) -> None:
    print(f"{d['path']}: {d['format']}, {d['size']} bytes")
    if d["unsafe_globals"]:
        print("UNSAFE: the pickle names globals outside the allowlist (not executed):")
        for g in d["unsafe_globals"]:
            print(f"  {g}")
    for q in d["problems"]:
        where = f"offset {q['offset']}: " if q["offset"] is not None else ""
        print(f"problem: {q['kind']}: {where}{q['message']}")
    r = d["optimizer_check"]
    if r["checked"] and not r["found"]:
        return  # the reason goes to stderr as the error line
    _print_opt(r)


def _run_check(args: argparse.Namespace, path: str) -> int:
    quiet = args.quiet or args.json
    if os.path.isdir(path):
        d = describe_dir(path, crc=args.crc, quiet=quiet)
        r = d["optimizer_check"] = check_optimizer_dir(path, d, args.optimizer_key)
        if args.json:
            print_json(d)
        else:
            print(f"{path}: {d['format']} folder, {len(d['files'])} checkpoint file(s)")
            for q in d["problems"]:
                print(f"  {q['kind']}: {q['message']}")
            if d["format"] == "dcp":
                if r["found"] or not r["checked"]:
                    _print_opt(r)
            else:
                for f in d["files"]:
                    fr = f["optimizer_check"]
                    if fr["found"] or not fr["checked"]:
                        print(f"{os.path.relpath(f['path'], path)}:")
                        _print_opt(fr, "  ")
    else:
        d = describe_file(path, crc=args.crc, quiet=quiet)
        r = d["optimizer_check"] = check_optimizer_file(path, d, args.optimizer_key)
        if args.json:
            print_json(d)
        else:
            _print_check_file(d)
    rc = _opt_exit(d, r)
    if rc == 2:
        sys.stderr.write(f"fastckpt: error: {path}: {r['message']}\n")
    return rc


def run(args: argparse.Namespace) -> int:
    from .._url import local_path  # ---- remote storage (report issue): file:// URLs

    path = local_path(os.fspath(args.path))
    if args.optimizer_key is not None and not args.check_optimizer:
        from ..errors import UsageError

        raise UsageError("--optimizer-key needs --check-optimizer")
    if args.check_optimizer:
        return _run_check(args, path)
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
