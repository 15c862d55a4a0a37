"""Renaming the keys of a checkpoint (`fastckpt migrate`): rules, inference and application.

This module owns
- `KeyRules`: explicit renames (wrapper removal, prefix strip/add, component-aligned renames);
- `canonical_key`: a parameter name without the wrappers DDP (`module.`), torch.compile
  (`_orig_mod.`), FSDP (`_fsdp_wrapped_module.`), activation checkpointing
  (`_checkpoint_wrapped_module.`) and Lightning Fabric (`_forward_module.`) insert;
- `infer_mapping`: source names -> reference names by tensor digest, known wrapper rules, and
  (shape, dtype) with name similarity, refusing ambiguity (`AmbiguousMappingError`);
- `plan_migration` / `apply_migration`: the mapping for a whole checkpoint (the model state_dict,
  its `_metadata`, and optimizer state that names parameters) and the renamed checkpoint.

It works on loaded objects and never imports torch itself (digests of torch tensors go through
`fastckpt.hash_tensor`, imported when needed).
"""

from __future__ import annotations

import difflib
import functools
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

__all__ = [
    "MODEL_KEYS",
    "WRAPPER_COMPONENTS",
    "AmbiguousMappingError",
    "Inference",
    "KeyMove",
    "KeyRules",
    "MigrationPlan",
    "OptimizerRemap",
    "apply_migration",
    "canonical_key",
    "find_model_state",
    "infer_mapping",
    "plan_migration",
]

# Wrapper modules that insert a path component anywhere in a parameter name.
WRAPPER_COMPONENTS = ("_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_forward_module")
# DistributedDataParallel / DataParallel wrap the whole model: `module.` at the start only.
LEADING_WRAPPER = "module"
# Entries of a nested checkpoint that hold the model state_dict, tried in order.
MODEL_KEYS = ("model", "state_dict", "model_state_dict", "module")

Digester = Callable[[str], "int | None"]


class AmbiguousMappingError(UsageError):
    """`infer_mapping` found source keys with more than one plausible reference key.
    `ambiguous` maps each such source key to its candidates."""

    def __init__(self, message: str, ambiguous: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def canonical_key(key: str) -> str:
    """`key` without wrapper components: `_orig_mod`, `_fsdp_wrapped_module`,
    `_checkpoint_wrapped_module`, `_forward_module` anywhere, and leading `module` components."""
    parts = [p for p in key.split(".") if p not in WRAPPER_COMPONENTS]
    while len(parts) > 1 and parts[0] == LEADING_WRAPPER:
        parts.pop(0)
    return ".".join(parts)


def _prefix(p: str) -> str:
    return p if not p or p.endswith(".") else p + "."


def _components(s: str) -> list[str]:
    s = s.strip(".")
    return s.split(".") if s else []


def _replace(parts: list[str], old: list[str], new: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    n = len(old)
    while i < len(parts):
        if parts[i : i + n] == old:
            out += new
            i += n
        else:
            out.append(parts[i])
            i += 1
    return out


@dataclass
class KeyRules:
    """Explicit renames, applied to every key in this order: `unwrap` (drop wrapper components, see
    `canonical_key`), each `strip_prefixes` entry (removed when the key starts with it), each
    `renames` (OLD, NEW) pair (every occurrence of the dotted components OLD, aligned to
    component boundaries, becomes NEW; an empty NEW deletes them), then `add_prefix`."""

    strip_prefixes: list[str] = field(default_factory=list)
    renames: list[tuple[str, str]] = field(default_factory=list)
    add_prefix: str | None = None
    unwrap: bool = False

    def __post_init__(self) -> None:
        for old, _ in self.renames:
            if not old.strip("."):
                raise UsageError(f"--rename {old}=...: OLD must name at least one key component")

    def __bool__(self) -> bool:
        return bool(self.strip_prefixes or self.renames or self.add_prefix or self.unwrap)

    def apply(self, key: str) -> str:
        k = canonical_key(key) if self.unwrap else key
        for p in self.strip_prefixes:
            p = _prefix(p)
            if p and k.startswith(p) and len(k) > len(p):
                k = k[len(p) :]
        if self.renames:
            parts = k.split(".")
            for old, new in self.renames:
                parts = _replace(parts, _components(old), _components(new))
            if not parts:
                raise UsageError(f"--rename turns {key!r} into an empty key")
            k = ".".join(parts)
        if self.add_prefix:
            k = _prefix(self.add_prefix) + k
        return k

    def describe(self) -> list[str]:
        out = ["unwrap"] if self.unwrap else []
        out += [f"strip-prefix {_prefix(p)}" for p in self.strip_prefixes]
        out += [f"rename {o}={n}" for o, n in self.renames]
        if self.add_prefix:
            out.append(f"add-prefix {_prefix(self.add_prefix)}")
        return out


# ---------------------------------------------------------------------------------------------
# Tensor facts (duck-typed: torch tensors, numpy arrays)
# ---------------------------------------------------------------------------------------------


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (int, float, str, bytes))


def _sig(x: Any) -> tuple[tuple[int, ...], str] | None:
    if not _is_tensor(x):
        return None
    return tuple(int(d) for d in x.shape), str(x.dtype).removeprefix("torch.")


def default_digester(values: Mapping[str, Any], leaf_size: int | None = None) -> Digester:
    """A digest function over `values`: fastckpt.hash_tensor of torch tensors, None otherwise."""
    from .digest import DEFAULT_LEAF_SIZE, hash_tensor

    size = leaf_size or DEFAULT_LEAF_SIZE
    cache: dict[str, int | None] = {}

    def digest(key: str) -> int | None:
        if key not in cache:
            v: Any = values.get(key)
            cache[key] = (
                hash_tensor(v, leaf_size=size).value
                if type(v).__module__.startswith("torch") and _is_tensor(v)
                else None
            )
        return cache[key]

    return digest


# ---------------------------------------------------------------------------------------------
# Inference against a reference
# ---------------------------------------------------------------------------------------------


@dataclass
class Inference:
    """What `infer_mapping` decided: `matches` maps a source key to (reference key, how) with how
    in "digest", "name", "shape", "similar"; the rest is unmatched or ambiguous."""

    matches: dict[str, tuple[str, str]]
    ambiguous: dict[str, list[str]]
    unmatched_source: list[str]
    unmatched_reference: list[str]


@functools.lru_cache(maxsize=1 << 16)
def _numbers(key: str) -> tuple[str, ...]:
    return tuple(p for p in canonical_key(key).split(".") if p.isdigit())


@functools.lru_cache(maxsize=1 << 16)
def _words(key: str) -> str:
    return ".".join(p for p in canonical_key(key).split(".") if not p.isdigit())


def _last(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _compatible(s: str, r: str) -> bool:
    """Could s be r renamed: same leaf name (weight, bias, running_mean, ...) and the same
    sequence of numeric components (layer indices survive a module rename)."""
    return _last(s) == _last(r) and _numbers(s) == _numbers(r)


def _pair_similar(srcs: list[str], refs: list[str]) -> list[tuple[str, str]]:
    """Pairs (s, r) where r is s's single most similar compatible candidate and s is r's."""
    pairs: list[tuple[str, str]] = []
    srcs, refs = list(srcs), list(refs)
    score_cache: dict[tuple[str, str], float] = {}

    def score(s: str, r: str) -> float:
        if (s, r) not in score_cache:
            score_cache[s, r] = difflib.SequenceMatcher(None, _words(s), _words(r), autojunk=False).ratio()
        return score_cache[s, r]

    def pick(scored: list[tuple[float, str]]) -> str | None:
        scored.sort(reverse=True)
        if not scored or (len(scored) > 1 and scored[0][0] == scored[1][0]):
            return None
        return scored[0][1]

    progress = True
    while progress and srcs and refs:
        progress = False
        for s in list(srcs):
            r = pick([(score(s, o), o) for o in refs if _compatible(s, o)])
            if r is None:
                continue
            back = pick([(score(x, r), x) for x in srcs if _compatible(x, r)])
            if back == s:
                pairs.append((s, r))
                srcs.remove(s)
                refs.remove(r)
                progress = True
    return pairs


def infer_mapping(
    source: Mapping[str, Any],
    reference: Mapping[str, Any],
    *,
    source_digest: Digester | None = None,
    reference_digest: Digester | None = None,
) -> Inference:
    """Matches the keys of `source` to the keys of `reference` (two state_dicts).

    1. digest: a tensor whose digest (value, dtype and shape) occurs once on each side matches;
       tensors sharing a digest with others (zero biases, unit norms) are paired within their
       group by wrapper-free name, then by name similarity;
    2. name: equal names once wrapper components are removed (`canonical_key`), same dtype/shape;
    3. shape: the only source and reference tensor left with one (shape, dtype) and the same leaf
       name and layer indices; larger groups are paired by name similarity (`_pair_similar`).

    Source keys with candidates left over are `ambiguous`; the others are unmatched.
    `source_digest(key)` / `reference_digest(key)` return a tensor's digest (default:
    fastckpt.hash_tensor of torch tensors) and are only called for tensors whose (shape, dtype)
    occurs on both sides.
    """
    sdig = source_digest or default_digester(source)
    rdig = reference_digest or default_digester(reference)
    s_rem = dict.fromkeys(source)
    r_rem = dict.fromkeys(reference)
    matches: dict[str, tuple[str, str]] = {}

    def take(s: str, r: str, how: str) -> None:
        matches[s] = (r, how)
        del s_rem[s]
        del r_rem[r]

    def by_canonical(srcs: list[str], refs: list[str], how: str) -> None:
        cs: dict[str, list[str]] = defaultdict(list)
        cr: dict[str, list[str]] = defaultdict(list)
        for s in srcs:
            cs[canonical_key(s)].append(s)
        for r in refs:
            cr[canonical_key(r)].append(r)
        for c, ss in cs.items():
            rr = cr.get(c, [])
            if len(ss) == 1 and len(rr) == 1 and _sig(source[ss[0]]) == _sig(reference[rr[0]]):
                take(ss[0], rr[0], how)

    # 1. digests
    s_sigs = {k: _sig(v) for k, v in source.items()}
    r_sigs = {k: _sig(v) for k, v in reference.items()}
    common = {g for g in s_sigs.values() if g is not None} & {g for g in r_sigs.values() if g is not None}
    groups: dict[int, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for k in source:
        if s_sigs[k] in common and (d := sdig(k)) is not None:
            groups[d][0].append(k)
    for k in reference:
        if r_sigs[k] in common and (d := rdig(k)) is not None and d in groups:
            groups[d][1].append(k)
    for ss, rr in groups.values():
        if not rr:
            continue
        if len(ss) == 1 and len(rr) == 1:
            take(ss[0], rr[0], "digest")
            continue
        by_canonical(ss, rr, "digest")
        for s, r in _pair_similar([s for s in ss if s in s_rem], [r for r in rr if r in r_rem]):
            take(s, r, "digest")

    # 2. wrapper-free names
    by_canonical(list(s_rem), list(r_rem), "name")

    # 3. (shape, dtype)
    ambiguous: dict[str, list[str]] = {}
    by_sig: dict[Any, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for s in s_rem:
        if s_sigs[s] is not None:
            by_sig[s_sigs[s]][0].append(s)
    for r in r_rem:
        if r_sigs[r] is not None:
            by_sig[r_sigs[r]][1].append(r)
    for ss, rr in by_sig.values():
        if not ss or not rr:
            continue
        if len(ss) == 1 and len(rr) == 1 and _last(ss[0]) == _last(rr[0]):
            take(ss[0], rr[0], "shape")
            continue
        for s, r in _pair_similar(ss, rr):
            take(s, r, "similar")
        for s in ss:
            if s in s_rem:
                cands = [r for r in rr if r in r_rem and _last(r) == _last(s)]
                if cands:
                    ambiguous[s] = cands
    ambiguous = {s: ambiguous[s] for s in source if s in ambiguous}  # in source order
    return Inference(
        matches,
        ambiguous,
        [s for s in s_rem if s not in ambiguous],
        list(r_rem),
    )


# ---------------------------------------------------------------------------------------------
# Checkpoint structure
# ---------------------------------------------------------------------------------------------


def _has_tensor_values(m: Mapping[Any, Any]) -> bool:
    return any(_is_tensor(v) for v in m.values())


def _is_optimizer_sd(m: Any) -> bool:
    return (
        isinstance(m, Mapping)
        and isinstance(m.get("state"), Mapping)
        and isinstance(m.get("param_groups"), (list, tuple))
    )


def find_model_state(obj: Any, model_key: str | None = None) -> tuple[tuple[str, ...], Mapping[str, Any]]:
    """(path of keys, model state_dict) inside a checkpoint: `model_key` (dotted) when given, else
    the first of 'model', 'state_dict', 'model_state_dict', 'module' that is a dict of tensors,
    else the checkpoint itself when it is a flat dict of tensors (path ())."""
    if model_key is not None:
        node: Any = obj
        path: tuple[str, ...] = ()
        for part in model_key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise UsageError(
                    f"--model-key {model_key}: the checkpoint has no entry {'.'.join((*path, part))!r}"
                )
            node = node[part]
            path += (part,)
        if not isinstance(node, Mapping) or not _has_tensor_values(node):
            raise UsageError(f"--model-key {model_key}: the entry is not a state_dict (a dict of tensors)")
        return path, node
    if not isinstance(obj, Mapping):
        raise UsageError(f"the checkpoint is a {type(obj).__name__}, not a dict holding a state_dict")
    for k in MODEL_KEYS:
        v = obj.get(k)
        if isinstance(v, Mapping) and _has_tensor_values(v) and not _is_optimizer_sd(v):
            return (k,), v
    if obj and all(_is_tensor(v) or str(k).endswith("_extra_state") for k, v in obj.items()):
        return (), obj
    keys = ", ".join(repr(k) for k in list(obj)[:12]) or "none"
    raise UsageError(
        f"cannot tell which entry holds the model state_dict (looked for {', '.join(MODEL_KEYS)} "
        f"and a flat dict of tensors; top-level entries: {keys}); pass --model-key KEY"
    )


def _find_optimizers(
    obj: Any, skip: tuple[str, ...], max_depth: int = 3
) -> list[tuple[tuple[Any, ...], Mapping[str, Any]]]:
    """(path, optimizer state_dict) for every optimizer state in obj, outside the model entry."""
    found: list[tuple[tuple[Any, ...], Mapping[str, Any]]] = []

    def walk(node: Any, path: tuple[Any, ...], depth: int) -> None:
        if skip and path == skip:
            return
        if _is_optimizer_sd(node):
            found.append((path, node))
            return
        if depth >= max_depth:
            return
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, (*path, k), depth + 1)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, (*path, i), depth + 1)

    walk(obj, (), 0)
    return found


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


# ---------------------------------------------------------------------------------------------
# Plan and application
# ---------------------------------------------------------------------------------------------


@dataclass
class KeyMove:
    """One model key: `how` is "unchanged", "rules" (explicit options), "digest", "name", "shape",
    "similar" (inferred against the reference) or "unmatched" (kept, with --allow-unmatched)."""

    old: str
    new: str
    how: str

    def to_json(self) -> dict[str, str]:
        return {"old": self.old, "new": self.new, "how": self.how}


@dataclass
class OptimizerRemap:
    """What happens to one optimizer state_dict. `keyed_by`: "name" when its state / params refer
    to parameters by name (FSDP/DCP-style), "index" when by position (torch.optim's default).
    `renamed`: state keys and `params` entries renamed; `param_names`: `param_names` entries
    renamed; `unknown`: names that are no model key (left unchanged)."""

    path: str
    keyed_by: str
    renamed: int = 0
    param_names: int = 0
    unknown: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "keyed_by": self.keyed_by,
            "renamed": self.renamed,
            "param_names": self.param_names,
            "unknown": list(self.unknown),
        }


@dataclass
class MigrationPlan:
    model_path: tuple[str, ...]
    moves: list[KeyMove]
    optimizers: list[OptimizerRemap]
    warnings: list[str]
    unmatched_source: list[str] = field(default_factory=list)
    unmatched_reference: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    # internal: optimizer paths and renamers, filled by plan_migration
    _opt_paths: list[tuple[Any, ...]] = field(default_factory=list, repr=False)
    _name_of: Callable[[str], str | None] | None = field(default=None, repr=False)

    @property
    def mapping(self) -> dict[str, str]:
        return {m.old: m.new for m in self.moves}

    @property
    def changed(self) -> int:
        return sum(1 for m in self.moves if m.old != m.new)

    @property
    def model_key(self) -> str | None:
        return _dotted(self.model_path) if self.model_path else None


def _check_collisions(pairs: list[tuple[str, str]], what: str) -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for old, new in pairs:
        seen[new].append(old)
    clashes = {new: olds for new, olds in seen.items() if len(olds) > 1}
    if clashes:
        shown = "; ".join(f"{', '.join(olds)} -> {new}" for new, olds in list(clashes.items())[:5])
        raise UsageError(f"the mapping sends several {what} to one name: {shown}")


def _ambiguity_message(amb: dict[str, list[str]]) -> str:
    lines = [
        f"ambiguous mapping: {len(amb)} source key(s) match more than one reference key; "
        "decide them with --rename OLD=NEW (or --strip-prefix/--add-prefix) and run again:"
    ]
    for s, cands in amb.items():
        shown = ", ".join(cands[:8]) + (f", ... ({len(cands)} candidates)" if len(cands) > 8 else "")
        lines.append(f"  {s} -> {{{shown}}}")
    return "\n".join(lines)


def plan_migration(
    obj: Any,
    *,
    rules: KeyRules | None = None,
    reference: Mapping[str, Any] | None = None,
    model_key: str | None = None,
    allow_unmatched: bool = False,
    source_digest: Digester | None = None,
    reference_digest: Digester | None = None,
) -> MigrationPlan:
    """The new name of every key of the checkpoint's model state_dict, and what happens to its
    optimizer state. `rules` apply first; with `reference` (the target state_dict) the renamed
    keys are then matched to the reference's keys by `infer_mapping`.

    Raises AmbiguousMappingError when the reference leaves a key ambiguous, and UsageError when
    keys stay unmatched (unless `allow_unmatched`: unmatched source keys keep their rule-renamed
    names and reference keys without a source are ignored) or when two keys would get one name.
    `source_digest(key)` receives original source keys."""
    rules = rules or KeyRules()
    path, model = find_model_state(obj, model_key)
    warnings: list[str] = []
    keys = [k for k in model if isinstance(k, str)]
    if len(keys) != len(model):
        raise UsageError("the model state_dict has keys that are not strings")
    ruled = {k: rules.apply(k) for k in keys}
    _check_collisions(list(ruled.items()), "source keys")
    for p in rules.strip_prefixes:
        if not any(k.startswith(_prefix(p)) for k in keys):
            warnings.append(f"--strip-prefix {_prefix(p)}: no model key starts with it")
    moves: list[KeyMove] = []
    plan = MigrationPlan(path, moves, [], warnings)
    if reference is None:
        for k in keys:
            moves.append(KeyMove(k, ruled[k], "unchanged" if ruled[k] == k else "rules"))
    else:
        back = {v: k for k, v in ruled.items()}
        view = {ruled[k]: model[k] for k in keys}
        sd = source_digest
        inf = infer_mapping(
            view,
            reference,
            source_digest=(lambda n: sd(back[n])) if sd else default_digester(view),
            reference_digest=reference_digest,
        )
        plan.ambiguous = {back[s]: c for s, c in inf.ambiguous.items()}
        plan.unmatched_source = [back[s] for s in inf.unmatched_source]
        plan.unmatched_reference = list(inf.unmatched_reference)
        for k in keys:
            hit = inf.matches.get(ruled[k])
            if hit is not None:
                new, how = hit
                moves.append(KeyMove(k, new, how if new != k else "unchanged"))
            else:
                moves.append(KeyMove(k, ruled[k], "unmatched"))
        if plan.ambiguous:
            raise AmbiguousMappingError(_ambiguity_message(plan.ambiguous), plan.ambiguous)
        if (plan.unmatched_source or plan.unmatched_reference) and not allow_unmatched:
            parts = []
            if plan.unmatched_source:
                parts.append(
                    f"source keys with no match: {', '.join(plan.unmatched_source[:8])}"
                    + (" ..." if len(plan.unmatched_source) > 8 else "")
                )
            if plan.unmatched_reference:
                parts.append(
                    f"reference keys with no source: {', '.join(plan.unmatched_reference[:8])}"
                    + (" ..." if len(plan.unmatched_reference) > 8 else "")
                )
            raise UsageError(
                f"incomplete mapping ({'; '.join(parts)}); add --rename OLD=NEW for them, or "
                "--allow-unmatched to keep unmatched source keys under their own names"
            )
        if plan.unmatched_source:
            warnings.append(
                f"{len(plan.unmatched_source)} source key(s) kept under their own names (no match)"
            )
        if plan.unmatched_reference:
            warnings.append(f"{len(plan.unmatched_reference)} reference key(s) have no source")
    _check_collisions([(m.old, m.new) for m in moves], "model keys")

    mapping = plan.mapping
    canon: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        canon[canonical_key(k)].append(k)

    def name_of(name: str) -> str | None:
        if name in mapping:
            return mapping[name]
        if reference is None:
            return rules.apply(name)
        olds = canon.get(canonical_key(name), [])
        return mapping[olds[0]] if len(olds) == 1 else None

    plan._name_of = name_of
    for opath, osd in _find_optimizers(obj, path):
        plan._opt_paths.append(opath)
        plan.optimizers.append(_plan_optimizer(opath, osd, name_of, warnings))
    if reference is not None and any(o.keyed_by == "index" for o in plan.optimizers):
        ref_pos = {k: i for i, k in enumerate(reference)}
        order = [ref_pos[m.new] for m in moves if m.new in ref_pos]
        if order != sorted(order):
            warnings.append(
                "the reference orders these parameters differently from the source: integer-indexed "
                "optimizer state follows parameter order and would attach to the wrong parameters of "
                "a model that registers them in the reference's order"
            )
    return plan


def _names(value: Any) -> list[str] | None:
    if isinstance(value, (list, tuple)) and value and all(isinstance(x, str) for x in value):
        return list(value)
    return None


def _plan_optimizer(
    opath: tuple[Any, ...], osd: Mapping[str, Any], name_of: Callable[[str], str | None], warnings: list[str]
) -> OptimizerRemap:
    state = osd["state"]
    by_name = bool(state) and all(isinstance(k, str) for k in state)
    groups = [g for g in osd["param_groups"] if isinstance(g, Mapping)]
    by_name = by_name or any(_names(g.get("params")) for g in groups)
    r = OptimizerRemap(_dotted(opath) or "<root>", "name" if by_name else "index")
    unknown: list[str] = []

    def count(name: str) -> int:
        new = name_of(name)
        if new is None:
            if name not in unknown:
                unknown.append(name)
            return 0
        return int(new != name)

    if by_name:
        news = []
        for k in state:
            if isinstance(k, str):
                r.renamed += count(k)
                news.append((k, name_of(k) or k))
        _check_collisions(news, f"state entries of optimizer {r.path}")
        for g in groups:
            for n in _names(g.get("params")) or []:
                r.renamed += count(n)
    for g in groups:
        for n in _names(g.get("param_names")) or []:
            r.param_names += count(n)
    r.unknown = unknown
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        warnings.append(
            f"optimizer {r.path}: {len(unknown)} parameter name(s) match no model key and were left unchanged: {shown}"
        )
    return r


def _rename_optimizer(
    osd: Mapping[str, Any], plan: OptimizerRemap, name_of: Callable[[str], str | None]
) -> Any:
    def ren(n: Any) -> Any:
        return (name_of(n) or n) if isinstance(n, str) else n

    new = type(osd)() if isinstance(osd, (dict, OrderedDict)) else {}
    for k, v in osd.items():
        if k == "state" and plan.keyed_by == "name":
            new[k] = (
                type(v)((ren(sk), sv) for sk, sv in v.items())
                if isinstance(v, dict)
                else {ren(sk): sv for sk, sv in v.items()}
            )
        elif k == "param_groups":
            groups = []
            for g in v:
                if isinstance(g, Mapping):
                    g = dict(g)
                    if plan.keyed_by == "name" and _names(g.get("params")):
                        g["params"] = [ren(n) for n in g["params"]]
                    if _names(g.get("param_names")):
                        g["param_names"] = [ren(n) for n in g["param_names"]]
                groups.append(g)
            new[k] = groups if isinstance(v, list) else type(v)(groups)
        else:
            new[k] = v
    return new


def _renamed_model(model: Mapping[str, Any], moves: list[KeyMove]) -> Any:
    out: Any = OrderedDict() if isinstance(model, OrderedDict) else {}
    for m in moves:
        out[m.new] = model[m.old]
    meta = getattr(model, "_metadata", None)
    if isinstance(meta, Mapping):
        # Module versions (e.g. BatchNorm's) keyed by module path: carry each parameter's module
        # entry to its new path so load_state_dict still finds it.
        new_meta: OrderedDict[str, Any] = OrderedDict()
        if "" in meta:
            new_meta[""] = meta[""]
        for m in moves:
            old_mod = m.old.rsplit(".", 1)[0] if "." in m.old else ""
            new_mod = m.new.rsplit(".", 1)[0] if "." in m.new else ""
            if old_mod in meta:
                new_meta[new_mod] = meta[old_mod]
        out._metadata = new_meta
    return out


def _set_at(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    """obj with the entry at `path` replaced (containers on the path are copied, not mutated)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, tuple):
        items = list(obj)
        items[head] = _set_at(obj[head], rest, value)
        return type(obj)(items) if type(obj) is tuple else type(obj)(*items)
    if isinstance(obj, list):
        new_list = list(obj)
        new_list[head] = _set_at(obj[head], rest, value)
        return new_list
    new: Any = type(obj)(obj) if isinstance(obj, (dict, OrderedDict)) else dict(obj)
    new[head] = _set_at(obj[head], rest, value)
    if hasattr(obj, "_metadata"):
        new._metadata = obj._metadata
    return new


def _get_at(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def apply_migration(obj: Any, plan: MigrationPlan) -> Any:
    """The checkpoint with the plan applied; `obj` itself is not modified (tensors are shared)."""
    assert plan._name_of is not None, "plan_migration builds the plan"
    model = _get_at(obj, plan.model_path)
    out = _set_at(obj, plan.model_path, _renamed_model(model, plan.moves))
    for opath, remap in zip(plan._opt_paths, plan.optimizers, strict=True):
        if remap.keyed_by == "name" or remap.param_names:
            out = _set_at(out, opath, _rename_optimizer(_get_at(out, opath), remap, plan._name_of))
    return out
