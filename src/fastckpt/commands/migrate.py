"""`fastckpt migrate SRC DST`: a copy of a checkpoint with its keys renamed (DDP/compile/FSDP
wrappers, prefixes, module renames, or a mapping inferred against a reference), written atomically
with its sidecar. SRC is only read."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from ._common import add_json_flag, add_quiet_flag, print_json

EPILOG = """\
Each key of the model state_dict (the entry 'model', 'state_dict', 'model_state_dict' or
'module', else the whole file when it is a flat dict of tensors; --model-key KEY picks another)
is renamed by, in this order: --unwrap, each --strip-prefix, each --rename, --add-prefix. With
--map-from the renamed keys are then matched to the keys of the reference's state_dict: by tensor
digest first (sidecar digests when present, else fastckpt.hash_tensor), then by equal names once
wrapper components are removed, then by (shape, dtype) with the same leaf name and layer indices
(name similarity decides within a group). A key with several candidates is refused (exit 2).
Optimizer state that names parameters (state keyed by name, string 'params', 'param_names') is
renamed the same way; integer-indexed optimizer state is kept (it stays valid while the model
registers its parameters in the same order). Other entries are copied unchanged.

DST is written with fastckpt.save (torch.save zip), or fastckpt.save_safetensors when it ends in
.safetensors (a flat dict of tensors only): temp file, fsync, rename, and the sidecar
DST.fastckpt. SRC is verified first (its sidecar, else the structural check) and never modified.

exit status: 0 written (or, with --dry-run, the mapping is complete); 1 SRC is damaged;
2 usage error, unreadable or unsafe input, ambiguous or incomplete mapping, DST == SRC.

--json prints one object:
  ok                 bool: the mapping is complete and DST was written (--dry-run: would be)
  source, destination, reference (or null)
  dry_run, written   bool
  source_format      torch-zip | torch-legacy | safetensors
  format             torch-zip | safetensors (DST)
  model_key          the entry holding the model state_dict (null: the whole file)
  rules              the explicit rules, in the order applied
  mapping            [{old, new, how}] every model key in source order; how: unchanged | rules |
                     digest | name | shape | similar | unmatched
  changed            keys whose name changes
  optimizers         [{path, keyed_by: index | name, renamed, param_names, unknown}]
  ambiguous          [{key, candidates}] (source key, reference keys) when refused
  unmatched_source, unmatched_reference   keys without a match (with --map-from)
  warnings           [str]
  error              the one-line error, or null
  sidecar, size, digest   of DST when written (digest: the v1 file digest), else null
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "migrate",
        help="write a copy of a checkpoint with its keys renamed (DDP/compile/FSDP prefixes, renames)",
        description="Rename the keys of a checkpoint's model state_dict (and the optimizer state that "
        "refers to them) and write the result to DST atomically, with its sidecar. The checkpoint is "
        "loaded with torch.load(weights_only=True): nothing in it is executed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="checkpoint file to read (never modified)")
    p.add_argument("dst", metavar="DST", help="file to write (.safetensors: safetensors, else torch.save)")
    p.add_argument(
        "--strip-prefix",
        action="append",
        default=[],
        metavar="P",
        help="remove P from the start of every key that has it (e.g. module. or _orig_mod.); repeatable",
    )
    p.add_argument("--add-prefix", metavar="P", help="put P in front of every key (e.g. module.)")
    p.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="replace the dotted key components OLD by NEW wherever they occur (NEW may be empty); repeatable",
    )
    p.add_argument(
        "--unwrap",
        action="store_true",
        help="remove wrapper components: leading module. (DDP), _orig_mod. (torch.compile), "
        "_fsdp_wrapped_module., _checkpoint_wrapped_module., _forward_module.",
    )
    p.add_argument(
        "--map-from",
        metavar="REFERENCE",
        help="infer the mapping against this checkpoint (file or DCP folder) holding the target names",
    )
    p.add_argument("--model-key", metavar="KEY", help="dotted entry of SRC holding the model state_dict")
    p.add_argument(
        "--allow-unmatched",
        action="store_true",
        help="with --map-from: keep source keys without a match under their own names, ignore "
        "reference keys without a source",
    )
    p.add_argument("--dry-run", action="store_true", help="print the mapping; write nothing")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    add_json_flag(p)
    add_quiet_flag(p)
    return p


def _parse_renames(values: list[str]) -> list[tuple[str, str]]:
    from ..errors import UsageError

    out = []
    for v in values:
        if "=" not in v:
            raise UsageError(f"--rename {v}: expected OLD=NEW")
        old, new = v.split("=", 1)
        out.append((old, new))
    return out


def _check_paths(src: str, dst: str, *, force: bool, dry_run: bool) -> None:
    from ..errors import UsageError
    from ..sidecar import sidecar_path_for

    if not os.path.exists(src):
        raise FileNotFoundError(2, "No such file or directory", src)
    if os.path.isdir(src):
        raise UsageError(f"{src}: migrate reads a checkpoint file (torch.save or safetensors), not a folder")
    same = os.path.abspath(dst) == os.path.abspath(src) or (
        os.path.exists(dst) and os.path.samefile(src, dst)
    )
    if same:
        raise UsageError(
            f"DST is SRC ({dst}): migrate never modifies its input; write to another path, check it, then rename it"
        )
    if os.path.abspath(dst) == os.path.abspath(sidecar_path_for(src)) or dst.endswith(".fastckpt"):
        raise UsageError(f"{dst}: DST cannot be a sidecar file")
    if os.path.isdir(dst):
        raise UsageError(f"{dst}: DST is a folder; give the file to write")
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise UsageError(f"{dst}: the folder {parent} does not exist")
    if os.path.exists(dst) and not force and not dry_run:
        raise UsageError(f"{dst} exists; pass --force to replace it")


def _sidecar_entries(path: str) -> tuple[int, dict[str, Any]] | None:
    """(leaf size, {key: TensorEntry}) from PATH.fastckpt when it is a readable file sidecar."""
    from ..errors import InputError
    from ..sidecar import FileManifest, read_sidecar, sidecar_path_for

    spath = sidecar_path_for(path)
    if not os.path.isfile(spath):
        return None
    try:
        m = read_sidecar(spath).manifest
        if not isinstance(m, FileManifest):
            return None
        return m.leaf_size, {e.key: e for e in m.tensor_entries()}
    except (InputError, OSError):
        return None


def _digester(values: Mapping[str, Any], path: tuple[str, ...], side: Any, leaf_size: int) -> Any:
    """Digests of the tensors in `values` (a state_dict at `path` in its file): the sidecar's
    digest when it describes the same contiguous tensor with this leaf size, else hash_tensor."""
    import torch

    from ..digest import dtype_name, hash_tensor

    entries = side[1] if side is not None and side[0] == leaf_size else {}
    pre = ".".join(path) + "." if path else ""
    cache: dict[str, int | None] = {}

    def digest(key: str) -> int | None:
        if key in cache:
            return cache[key]
        v = values.get(key)
        out = None
        if isinstance(v, torch.Tensor):
            e = entries.get(pre + key)
            if (
                e is not None
                and not e.raw_range
                and e.dtype == dtype_name(v.dtype)
                and tuple(e.shape) == tuple(v.shape)
                and v.is_contiguous()
            ):
                out = e.digest
            else:
                out = hash_tensor(v, leaf_size=leaf_size).value
        cache[key] = out
        return out

    return digest


def _flat_tensors(obj: Any, dst: str) -> dict[str, Any]:
    """The dict save_safetensors needs: tensors only, contiguous, no two sharing memory."""
    import torch

    from ..errors import UsageError

    bad = (
        [k for k, v in obj.items() if not isinstance(v, torch.Tensor) or not isinstance(k, str)]
        if isinstance(obj, Mapping)
        else ["<root>"]
    )
    if bad:
        raise UsageError(
            f"{dst}: a safetensors file holds a flat dict of tensors; this checkpoint also has "
            f"{', '.join(map(str, bad[:5]))}; write a .pt file instead"
        )
    out: dict[str, Any] = {}
    seen: set[int] = set()
    for k, t in obj.items():
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:
            t = t.clone()  # safetensors refuses tensors that share memory (tied weights)
        seen.add(ptr)
        out[k] = t.contiguous()
    return out


def _load_reference(path: str) -> Any:
    from .._safe_load import load_dcp, load_file

    if os.path.isdir(path):
        return load_dcp(path).obj
    return load_file(path).obj


def run(args: argparse.Namespace) -> int:
    from .._safe_load import load_file
    from ..errors import CorruptCheckpointError, UsageError
    from ..migrate import AmbiguousMappingError, KeyRules, apply_migration, find_model_state, plan_migration

    src, dst = os.fspath(args.src), os.fspath(args.dst)
    rules = KeyRules(
        strip_prefixes=list(args.strip_prefix),
        renames=_parse_renames(args.rename),
        add_prefix=args.add_prefix,
        unwrap=args.unwrap,
    )
    if not rules and not args.map_from:
        raise UsageError("nothing to do: give --unwrap, --strip-prefix, --add-prefix, --rename or --map-from")
    if args.allow_unmatched and not args.map_from:
        raise UsageError("--allow-unmatched needs --map-from")
    _check_paths(src, dst, force=args.force, dry_run=args.dry_run)
    out_format = "safetensors" if dst.lower().endswith(".safetensors") else "torch-zip"
    result: dict[str, Any] = {
        "ok": False,
        "source": src,
        "destination": dst,
        "reference": args.map_from,
        "dry_run": bool(args.dry_run),
        "written": False,
        "source_format": None,
        "format": out_format,
        "model_key": None,
        "rules": rules.describe(),
        "mapping": [],
        "changed": 0,
        "optimizers": [],
        "ambiguous": [],
        "unmatched_source": [],
        "unmatched_reference": [],
        "warnings": [],
        "error": None,
        "sidecar": None,
        "size": None,
        "digest": None,
    }

    def fail(message: str, code: int) -> int:
        result["error"] = message.splitlines()[0]
        if args.json:
            print_json(result)
        sys.stderr.write(f"fastckpt: error: {message}\n")
        return code

    from ..save import check

    try:
        check(src)
    except CorruptCheckpointError as e:
        return fail(str(e), 1)
    loaded = load_file(src)
    result["source_format"] = loaded.format

    reference = ref_digest = src_digest = None
    if args.map_from:
        from ..digest import DEFAULT_LEAF_SIZE

        ref_obj = _load_reference(args.map_from)
        try:
            ref_path, reference = find_model_state(ref_obj)
        except UsageError as e:
            raise UsageError(
                f"{args.map_from} (reference): {e}".replace("pass --model-key KEY", "it needs one")
            ) from None
        ref_side = None if os.path.isdir(args.map_from) else _sidecar_entries(args.map_from)
        src_side = _sidecar_entries(src)
        leaf = ref_side[0] if ref_side else src_side[0] if src_side else DEFAULT_LEAF_SIZE
        ref_digest = _digester(reference, ref_path, ref_side, leaf)
        src_path, src_model = find_model_state(loaded.obj, args.model_key)
        src_digest = _digester(src_model, src_path, src_side, leaf)

    try:
        plan = plan_migration(
            loaded.obj,
            rules=rules,
            reference=reference,
            model_key=args.model_key,
            allow_unmatched=args.allow_unmatched,
            source_digest=src_digest,
            reference_digest=ref_digest,
        )
    except AmbiguousMappingError as e:
        result["ambiguous"] = [{"key": k, "candidates": c} for k, c in e.ambiguous.items()]
        return fail(f"{src}: {e}", 2)
    except UsageError as e:
        return fail(f"{src}: {e}", 2)
    result.update(
        model_key=plan.model_key,
        mapping=[m.to_json() for m in plan.moves],
        changed=plan.changed,
        optimizers=[o.to_json() for o in plan.optimizers],
        unmatched_source=plan.unmatched_source,
        unmatched_reference=plan.unmatched_reference,
        warnings=list(plan.warnings),
    )
    if plan.changed == 0:
        result["warnings"].append("no key changes name")
    new_obj = apply_migration(loaded.obj, plan)
    if out_format == "safetensors":
        try:
            new_obj = _flat_tensors(new_obj, dst)
        except UsageError as e:
            return fail(str(e), 2)
    if not args.dry_run:
        from ..save import save, save_safetensors

        if out_format == "safetensors":
            meta = loaded.metadata if loaded.format == "safetensors" else None
            info = save_safetensors(new_obj, dst, metadata=meta)
        else:
            info = save(new_obj, dst)
        from ..sidecar import sidecar_path_for

        result.update(
            written=True,
            sidecar=sidecar_path_for(dst) if info.sidecar else None,
            size=info.size,
            digest=info.digest,
        )
    result["ok"] = True
    if args.json:
        print_json(result)
    else:
        _print_text(result, plan.model_key)
    for w in result["warnings"]:
        sys.stderr.write(f"fastckpt: warning: {w}\n")
    return 0


def _print_text(r: dict[str, Any], model_key: str | None) -> None:
    where = f"entry {model_key!r}" if model_key else "the whole file"
    moves = r["mapping"]
    print(f"{r['source']} -> {r['destination']}: {r['changed']} of {len(moves)} keys renamed ({where})")
    show_how = r["reference"] is not None
    for m in moves:
        if m["old"] != m["new"]:
            print(f"  {m['old']} -> {m['new']}" + (f"  ({m['how']})" if show_how else ""))
    for o in r["optimizers"]:
        if o["keyed_by"] == "index":
            extra = f"; {o['param_names']} param_names renamed" if o["param_names"] else ""
            print(
                f"optimizer state {o['path']!r}: indexed by parameter position, kept as is{extra} "
                "(valid while the model registers its parameters in the same order)"
            )
        else:
            print(
                f"optimizer state {o['path']!r}: keyed by parameter name: {o['renamed']} names renamed, "
                f"{o['param_names']} param_names renamed"
            )
    if r["written"]:
        print(f"wrote {r['destination']} ({r['size']} bytes, {r['format']}) and its sidecar {r['sidecar']}")
    else:
        print("dry run: nothing written")
