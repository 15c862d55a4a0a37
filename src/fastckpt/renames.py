"""Rename inference: pair keys of two checkpoints whose tensors are equal, and summarize the pairs
as rules a person recognizes (`strip prefix 'module.'`, `add prefix '_orig_mod.'`, ...).

This module owns the key-matching logic shared by `fastckpt diff` and key migration. It is pure
Python over (key -> digest) mappings and imports neither torch nor numpy.

How keys are paired (docs/CLI.md, "diff"):
1. Keys present on both sides are not renames. Only keys found on one side take part.
2. Keys whose digests are equal and unique on both sides (one key in A, one in B) are paired. The
   v1 tensor digest covers dtype, shape and bytes, so such a pair holds the same tensor.
3. Each pair is explained by a *transform*: the rules that turn A's key into B's. Rules are
   `prefix` replacements (found from the longest common dotted suffix) and, for wrapper segments
   that can sit anywhere in a key (FSDP, activation checkpointing, torch.compile of submodules),
   `segment` removals or insertions.
4. Keys whose digest is shared by several keys (zeros, ones, tied weights) are paired only when
   exactly one candidate fits a transform seen in step 3; otherwise they are reported ambiguous.
5. Remaining one-sided keys whose tensors differ are paired when exactly one candidate fits a
   transform from step 3 (a renamed layer that also changed): the caller compares them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field

# Wrapper modules that insert a component into every key below them, at any depth.
WRAPPER_SEGMENTS = (
    "_fsdp_wrapped_module",
    "_checkpoint_wrapped_module",
    "_orig_mod",
    "_dmp_wrapped_module",
)


@dataclass(frozen=True, order=True)
class RenameRule:
    """One rule of a transform from A's key names to B's.

    kind "prefix": a key of A starting with `a` is named with `b` instead in B (either may be "").
    kind "strip_segment": the component `a` appears (at any depth) in A's keys and not in B's.
    kind "add_segment": the component `b` appears in B's keys and not in A's.
    kind "key": a whole key renamed with no common dotted suffix (`a` -> `b`).
    """

    kind: str
    a: str
    b: str

    def __str__(self) -> str:
        if self.kind == "prefix":
            if not self.a:
                return f"add prefix '{self.b}'"
            if not self.b:
                return f"strip prefix '{self.a}'"
            return f"replace prefix '{self.a}' with '{self.b}'"
        if self.kind == "strip_segment":
            return f"strip segment '{self.a}.'"
        if self.kind == "add_segment":
            return f"add segment '{self.b}.'"
        return f"rename '{self.a}' to '{self.b}'"


Transform = tuple[RenameRule, ...]


def _strip_components(parts: list[str], token: str) -> list[str]:
    return [p for p in parts if p != token]


def transform_of(key_a: str, key_b: str, segments: frozenset[str] = frozenset()) -> Transform:
    """The rules that turn `key_a` into `key_b` (empty when the keys are equal).

    A wrapper component only at the front is left to the prefix rule, which reads better
    (`add prefix '_orig_mod.'`), unless it is in `segments` (wrappers seen deeper in other keys).
    """
    ca, cb = key_a.split("."), key_b.split(".")
    rules: list[RenameRule] = []
    for token in WRAPPER_SEGMENTS:
        in_a, in_b = ca.count(token), cb.count(token)
        if in_a and not in_b and (in_a > 1 or ca[0] != token or token in segments):
            rules.append(RenameRule("strip_segment", token, ""))
            ca = _strip_components(ca, token)
        elif in_b and not in_a and (in_b > 1 or cb[0] != token or token in segments):
            rules.append(RenameRule("add_segment", "", token))
            cb = _strip_components(cb, token)
    k = 0
    while k < min(len(ca), len(cb)) and ca[-1 - k] == cb[-1 - k]:
        k += 1
    if k == 0:
        rules.append(RenameRule("key", ".".join(ca), ".".join(cb)))
    else:
        pa = ".".join(ca[: len(ca) - k])
        pb = ".".join(cb[: len(cb) - k])
        if pa != pb:
            rules.append(RenameRule("prefix", pa + "." if pa else "", pb + "." if pb else ""))
    return tuple(sorted(rules))


def _normalizers(t: Transform) -> tuple[Callable[[str], str | None], Callable[[str], str | None]]:
    """Two functions that send A's and B's keys to a common form when `t` relates them."""
    strip_a = [r.a for r in t if r.kind == "strip_segment"]
    strip_b = [r.b for r in t if r.kind == "add_segment"]
    prefix = next((r for r in t if r.kind in ("prefix", "key")), None)

    def norm(key: str, tokens: list[str], side: str) -> str | None:
        parts = key.split(".")
        for tok in tokens:
            parts = _strip_components(parts, tok)
        k = ".".join(parts)
        if prefix is None:
            return k
        p = prefix.a if side == "a" else prefix.b
        if prefix.kind == "key":
            return "" if k == p else None
        return k[len(p) :] if k.startswith(p) else None

    return (lambda k: norm(k, strip_a, "a")), (lambda k: norm(k, strip_b, "b"))


@dataclass
class RenameResult:
    """Pairs of (A key, B key), the rules that explain them, and what could not be decided."""

    # A key -> B key, for every paired key (equal tensors and, when asked, differing ones)
    pairs: dict[str, str] = field(default_factory=dict)
    # pairs whose digests are equal (a subset of `pairs`)
    equal_pairs: set[str] = field(default_factory=set)
    # (rule, number of pairs it explains), most used first
    rules: list[tuple[RenameRule, int]] = field(default_factory=list)
    # groups of keys that could be paired in more than one way: (keys of A, keys of B)
    ambiguous: list[tuple[list[str], list[str]]] = field(default_factory=list)

    @property
    def rule_strings(self) -> list[str]:
        return [str(r) for r, _ in self.rules]

    def b_to_a(self) -> dict[str, str]:
        """The mapping that renames B's keys to A's (load B into A's model)."""
        return {kb: ka for ka, kb in self.pairs.items()}


def _unique_matches(
    keys_a: Iterable[str], keys_b: Iterable[str], transforms: Iterable[Transform], segments: frozenset[str]
) -> tuple[dict[str, str], set[str]]:
    """Pairs (a, b) that exactly one transform relates, with no other candidate for a or b.
    Returns the pairs and the keys that had more than one candidate."""
    cands_a: dict[str, set[str]] = defaultdict(set)
    cands_b: dict[str, set[str]] = defaultdict(set)
    keys_b = list(keys_b)
    keys_a = list(keys_a)
    for t in transforms:
        na, nb = _normalizers(t)
        by_norm: dict[str, list[str]] = defaultdict(list)
        for kb in keys_b:
            n = nb(kb)
            if n is not None:
                by_norm[n].append(kb)
        for ka in keys_a:
            n = na(ka)
            if n is None:
                continue
            for kb in by_norm.get(n, ()):
                # The normal forms can coincide by accident (e.g. a key that happens to lack the
                # segment); the exact transform decides.
                if transform_of(ka, kb, segments) == t:
                    cands_a[ka].add(kb)
                    cands_b[kb].add(ka)
    pairs: dict[str, str] = {}
    contested: set[str] = set()
    for ka, bs in cands_a.items():
        if len(bs) == 1:
            (kb,) = bs
            if len(cands_b[kb]) == 1:
                pairs[ka] = kb
                continue
        contested.add(ka)
        contested.update(bs)
    return pairs, contested


# Cross products larger than this are not searched for a dominant transform.
_MAX_GROUP_PAIRS = 1 << 16


def _dominant_transform(
    by_digest_a: Mapping[Hashable, list[str]], by_digest_b: Mapping[Hashable, list[str]]
) -> tuple[list[Transform], frozenset[str]]:
    """When no digest is unique (e.g. every one-sided tensor is zeros), the transform relating the
    most candidate pairs, if it relates at least two and strictly more than any other."""
    counts: Counter[Transform] = Counter()
    budget = _MAX_GROUP_PAIRS
    for d, ka_list in by_digest_a.items():
        kb_list = by_digest_b.get(d, [])
        budget -= len(ka_list) * len(kb_list)
        if budget < 0:
            return [], frozenset()
        for ka in ka_list:
            for kb in kb_list:
                t = transform_of(ka, kb)
                if not any(r.kind == "key" for r in t):
                    counts[t] += 1
    top = counts.most_common(2)
    if not top or top[0][1] < 2 or (len(top) > 1 and top[1][1] == top[0][1]):
        return [], frozenset()
    return [top[0][0]], _segment_tokens([top[0][0]])


def _segment_tokens(transforms: Iterable[Transform]) -> frozenset[str]:
    return frozenset(r.a or r.b for t in transforms for r in t if r.kind in ("strip_segment", "add_segment"))


def infer_renames(
    only_a: Mapping[str, Hashable],
    only_b: Mapping[str, Hashable],
    *,
    compatible: Callable[[str, str], bool] | None = None,
) -> RenameResult:
    """Pairs keys found on one side only.

    `only_a` / `only_b` map each one-sided key to its tensor digest (any hashable; equal values
    mean equal tensors). When `compatible` is given, keys of differing tensors are also paired
    through the inferred transforms, if `compatible(a_key, b_key)` accepts them (e.g. same dtype
    and shape) and exactly one candidate fits. Key order of the inputs is kept in the outputs.
    """
    res = RenameResult()
    by_digest_a: dict[Hashable, list[str]] = defaultdict(list)
    by_digest_b: dict[Hashable, list[str]] = defaultdict(list)
    for k, d in only_a.items():
        by_digest_a[d].append(k)
    for k, d in only_b.items():
        by_digest_b[d].append(k)

    # Step 2: unique digests on both sides.
    unique: list[tuple[str, str]] = []
    for d, ka_list in by_digest_a.items():
        kb_list = by_digest_b.get(d)
        if kb_list and len(ka_list) == 1 and len(kb_list) == 1:
            unique.append((ka_list[0], kb_list[0]))
            res.pairs[ka_list[0]] = kb_list[0]
            res.equal_pairs.add(ka_list[0])
    # Step 3: a wrapper seen as a deep segment anywhere is a segment rule everywhere.
    segments = _segment_tokens(transform_of(ka, kb) for ka, kb in unique)
    support: Counter[Transform] = Counter(transform_of(ka, kb, segments) for ka, kb in unique)
    # Transforms that need a whole-key rule generalize to nothing else.
    general = [t for t, _ in support.most_common() if not any(r.kind == "key" for r in t)]
    if not general:
        general, segments = _dominant_transform(by_digest_a, by_digest_b)

    # Step 4: shared digests, disambiguated by the transforms.
    for d, ka_list in by_digest_a.items():
        kb_list = by_digest_b.get(d)
        if not kb_list or (len(ka_list) == 1 and len(kb_list) == 1):
            continue
        matched, _ = _unique_matches(ka_list, kb_list, general, segments)
        for ka, kb in matched.items():
            res.pairs[ka] = kb
            res.equal_pairs.add(ka)
            support[transform_of(ka, kb, segments)] += 1
        left_a = [k for k in ka_list if k not in matched]
        left_b = [k for k in kb_list if k not in matched.values()]
        if left_a and left_b:
            res.ambiguous.append((left_a, left_b))

    # Step 5: differing tensors renamed by a known transform.
    if compatible is not None and general:
        paired_b = set(res.pairs.values())
        rest_a = [k for k in only_a if k not in res.pairs]
        rest_b = [k for k in only_b if k not in paired_b]
        amb_keys = {k for ga, gb in res.ambiguous for k in (*ga, *gb)}
        rest_a = [k for k in rest_a if k not in amb_keys]
        rest_b = [k for k in rest_b if k not in amb_keys]
        matched, _ = _unique_matches(rest_a, rest_b, general, segments)
        for ka, kb in matched.items():
            if compatible(ka, kb):
                res.pairs[ka] = kb
                support[transform_of(ka, kb, segments)] += 1

    # Rules with the number of pairs each explains, most used first.
    counts: Counter[RenameRule] = Counter()
    for t, n in support.items():
        for r in t:
            counts[r] += n
    res.rules = sorted(counts.items(), key=lambda rn: (-rn[1], str(rn[0])))
    # Keep A's order in the pairs.
    order = {k: i for i, k in enumerate(only_a)}
    res.pairs = dict(sorted(res.pairs.items(), key=lambda kv: order[kv[0]]))
    return res
