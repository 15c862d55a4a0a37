"""Rename inference (fastckpt.renames): pairing one-sided keys by digest, rules people recognize,
wrapper prefixes (DDP, torch.compile, FSDP, activation checkpointing) and ambiguous cases."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from fastckpt.renames import RenameRule, infer_renames, transform_of

KEYS = [f"layers.{i}.{p}.{w}" for i in range(3) for p in ("attn", "mlp") for w in ("weight", "bias")] + [
    "embed.weight"
]


def digests(keys: list[str]) -> dict[str, int]:
    return {k: i for i, k in enumerate(keys)}


def rules_of(res) -> list[str]:
    return res.rule_strings


def test_transform_strings() -> None:
    assert [str(r) for r in transform_of("module.a.w", "a.w")] == ["strip prefix 'module.'"]
    assert [str(r) for r in transform_of("a.w", "_orig_mod.a.w")] == ["add prefix '_orig_mod.'"]
    assert [str(r) for r in transform_of("fc.weight", "linear.weight")] == [
        "replace prefix 'fc.' with 'linear.'"
    ]
    assert [str(r) for r in transform_of("w", "v")] == ["rename 'w' to 'v'"]
    assert transform_of("a.b", "a.b") == ()


def test_strip_module_prefix() -> None:
    a = {f"module.{k}": d for k, d in digests(KEYS).items()}
    res = infer_renames(a, digests(KEYS))
    assert res.pairs == {f"module.{k}": k for k in KEYS}
    assert rules_of(res) == ["strip prefix 'module.'"]
    assert res.rules == [(RenameRule("prefix", "module.", ""), len(KEYS))]
    assert res.b_to_a() == {k: f"module.{k}" for k in KEYS}
    assert not res.ambiguous


def test_add_orig_mod_prefix() -> None:
    b = {f"_orig_mod.{k}": d for k, d in digests(KEYS).items()}
    res = infer_renames(digests(KEYS), b)
    assert rules_of(res) == ["add prefix '_orig_mod.'"]
    assert len(res.pairs) == len(KEYS)


def test_ddp_to_compiled_is_one_prefix_replacement() -> None:
    a = {f"module.{k}": d for k, d in digests(KEYS).items()}
    b = {f"_orig_mod.{k}": d for k, d in digests(KEYS).items()}
    res = infer_renames(a, b)
    assert rules_of(res) == ["replace prefix 'module.' with '_orig_mod.'"]


def fsdp_name(key: str) -> str:
    # FSDP wraps each layer and the root: _fsdp_wrapped_module.layers.0._fsdp_wrapped_module.attn.weight
    parts = key.split(".")
    if parts[0] == "layers":
        parts = ["layers", parts[1], "_fsdp_wrapped_module", *parts[2:]]
    return "_fsdp_wrapped_module." + ".".join(parts)


def test_fsdp_wrapper_segments() -> None:
    a = {fsdp_name(k): d for k, d in digests(KEYS).items()}
    res = infer_renames(a, digests(KEYS))
    assert res.pairs == {fsdp_name(k): k for k in KEYS}
    assert rules_of(res) == ["strip segment '_fsdp_wrapped_module.'"]
    back = infer_renames(digests(KEYS), a)
    assert rules_of(back) == ["add segment '_fsdp_wrapped_module.'"]


def test_checkpoint_wrapper_and_ddp_together() -> None:
    def name(k: str) -> str:
        parts = k.split(".")
        if parts[0] == "layers":
            parts = ["layers", parts[1], "_checkpoint_wrapped_module", *parts[2:]]
        return "module." + ".".join(parts)

    a = {name(k): d for k, d in digests(KEYS).items()}
    res = infer_renames(a, digests(KEYS))
    assert len(res.pairs) == len(KEYS)
    assert set(rules_of(res)) == {"strip prefix 'module.'", "strip segment '_checkpoint_wrapped_module.'"}


def test_shared_digests_resolved_by_rules() -> None:
    # Every bias is zeros: their digests are equal. Weights are unique and teach the rule.
    keys = [f"l{i}.{w}" for i in range(4) for w in ("weight", "bias")]
    d = {k: (0 if k.endswith("bias") else i + 1) for i, k in enumerate(keys)}
    a = {f"module.{k}": v for k, v in d.items()}
    res = infer_renames(a, d)
    assert res.pairs == {f"module.{k}": k for k in keys}
    assert not res.ambiguous
    assert res.equal_pairs == set(a)


def test_all_equal_digests_use_the_dominant_transform() -> None:
    keys = [f"l{i}.bias" for i in range(5)]
    res = infer_renames({f"module.{k}": 0 for k in keys}, dict.fromkeys(keys, 0))
    assert res.pairs == {f"module.{k}": k for k in keys}
    assert rules_of(res) == ["strip prefix 'module.'"]


def test_ambiguous_is_reported_not_guessed() -> None:
    # One zero tensor in A, two in B, nothing to learn a rule from.
    res = infer_renames({"x": 0}, {"y": 0, "z": 0})
    assert res.pairs == {}
    assert res.ambiguous == [(["x"], ["y", "z"])]
    assert res.b_to_a() == {}


def test_ambiguous_left_when_rule_does_not_decide() -> None:
    a = {"module.w": 1, "module.p": 0, "module.q": 0}
    b = {"w": 1, "r": 0, "s": 0}
    res = infer_renames(a, b)
    assert res.pairs == {"module.w": "w"}
    assert res.ambiguous == [(["module.p", "module.q"], ["r", "s"])]


def test_changed_tensors_paired_through_known_rule() -> None:
    a = {"module.a.weight": 1, "module.a.bias": 2, "module.b.weight": 3}
    b = {"a.weight": 1, "a.bias": 20, "b.weight": 30}
    res = infer_renames(a, b, compatible=lambda ka, kb: ka != "module.b.weight")
    assert res.pairs == {"module.a.weight": "a.weight", "module.a.bias": "a.bias"}
    assert res.equal_pairs == {"module.a.weight"}
    # without `compatible`, only equal tensors are paired
    assert infer_renames(a, b).pairs == {"module.a.weight": "a.weight"}


def test_whole_key_renames_do_not_generalize() -> None:
    a = {"w": 1, "x": 2}
    b = {"v": 1, "y": 3}
    res = infer_renames(a, b, compatible=lambda ka, kb: True)
    assert res.pairs == {"w": "v"}
    assert rules_of(res) == ["rename 'w' to 'v'"]


segment = st.text(string.ascii_lowercase, min_size=1, max_size=4)
prefix = st.lists(segment, min_size=1, max_size=2).map(lambda p: ".".join(p) + ".")


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(
        st.lists(segment, min_size=1, max_size=4).map(".".join), min_size=1, max_size=20, unique=True
    ),
    pa=st.one_of(st.just(""), prefix),
    pb=st.one_of(st.just(""), prefix),
)
def test_prefix_transform_is_recovered(keys: list[str], pa: str, pb: str) -> None:
    if pa == pb:
        return
    a = {pa + k: i for i, k in enumerate(keys)}
    b = {pb + k: i for i, k in enumerate(keys)}
    res = infer_renames(a, b)
    # Unique digests: every key pairs with its own image, whatever the rules look like.
    assert res.pairs == {pa + k: pb + k for k in keys}
    assert not res.ambiguous
    # The rule strings explain each pair: a prefix replacement at most plus segment rules.
    for ka, kb in res.pairs.items():
        assert all(str(r) in res.rule_strings for r in transform_of(ka, kb))
