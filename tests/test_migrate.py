"""`fastckpt migrate`: wrapper prefixes (DDP, torch.compile, FSDP), renames, inference against a
reference, ambiguity refusal, optimizer state keyed by name, safe atomic output, and SRC left
byte-identical. Every migrated checkpoint is loaded into the target model with strict=True."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastckpt.cli import main
from fastckpt.errors import UsageError
from fastckpt.migrate import (
    AmbiguousMappingError,
    KeyRules,
    apply_migration,
    canonical_key,
    infer_mapping,
    plan_migration,
)

MIGRATE_JSON_KEYS = {
    "ok",
    "source",
    "destination",
    "reference",
    "dry_run",
    "written",
    "source_format",
    "format",
    "model_key",
    "rules",
    "mapping",
    "changed",
    "optimizers",
    "ambiguous",
    "unmatched_source",
    "unmatched_reference",
    "warnings",
    "error",
    "sidecar",
    "size",
    "digest",
}


class Old(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))
        self.norm = torch.nn.BatchNorm1d(16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.enc(x)))


class New(torch.nn.Module):
    """Old with its modules renamed."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))
        self.bn = torch.nn.BatchNorm1d(16)
        self.classifier = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.bn(self.encoder(x)))


class Wrapper(torch.nn.Module):
    """Holds a model as `.module`, which gives the state_dict keys DDP gives."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def trained(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int = 2) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(6, 8, generator=g)).pow(2).mean().backward()
        opt.step()


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def migrate(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    rc = main(["migrate", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def migrate_json(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, dict[str, Any], str]:
    rc, out, err = migrate(capsys, "--json", *args)
    return rc, json.loads(out), err


def verify_ok(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    rc = main(["verify", "--json", str(path)])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["ok"] and d["check"] == "manifest", d


def assert_same_values(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture
def ddp_ckpt(tmp_path: Path) -> tuple[Path, Old, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = Old()
    wrapped = Wrapper(model)
    opt = torch.optim.Adam(wrapped.parameters(), lr=1e-3)
    trained(model, opt)
    p = tmp_path / "ddp.pt"
    torch.save({"model": wrapped.state_dict(), "optimizer": opt.state_dict(), "epoch": 2}, p)
    assert next(iter(wrapped.state_dict())).startswith("module.")
    return p, model, opt


# ---------------------------------------------------------------------------------------------
# Explicit rules
# ---------------------------------------------------------------------------------------------


def test_ddp_to_plain(tmp_path: Path, capsys: pytest.CaptureFixture[str], ddp_ckpt: Any) -> None:
    src, model, opt = ddp_ckpt
    src_hash, src_stat = sha256(src), src.stat()
    dst = tmp_path / "plain.pt"
    rc, out, err = migrate(capsys, src, dst, "--strip-prefix", "module.")
    assert rc == 0, out + err
    assert out.splitlines()[0] == f"{src} -> {dst}: 11 of 11 keys renamed (entry 'model')"
    assert "  module.enc.0.weight -> enc.0.weight" in out
    verify_ok(capsys, dst)
    assert sha256(src) == src_hash and src.stat().st_mtime_ns == src_stat.st_mtime_ns
    assert not (tmp_path / "ddp.pt.fastckpt").exists()

    ckpt = torch.load(dst, weights_only=True)
    fresh = Old()
    fresh.load_state_dict(ckpt["model"], strict=True)
    assert_same_values(fresh.state_dict(), model.state_dict())
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    fresh_opt.load_state_dict(ckpt["optimizer"])
    assert ckpt["epoch"] == 2
    # The optimizer state is unchanged (integer-indexed): the same tensors, bit for bit.
    for i, entry in opt.state_dict()["state"].items():
        for name, v in entry.items():
            assert torch.equal(ckpt["optimizer"]["state"][i][name], v)


def test_compiled_to_plain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = Old()
    compiled = torch.compile(model)  # state_dict() does not compile; it adds _orig_mod.
    src = tmp_path / "compiled.pt"
    torch.save(compiled.state_dict(), src)
    assert all(k.startswith("_orig_mod.") for k in torch.load(src, weights_only=True))
    dst = tmp_path / "plain.pt"
    rc, d, _ = migrate_json(capsys, src, dst, "--strip-prefix", "_orig_mod")
    assert rc == 0 and d["ok"] and d["written"]
    assert d["model_key"] is None and d["changed"] == 11
    fresh = Old()
    fresh.load_state_dict(torch.load(dst, weights_only=True), strict=True)
    assert_same_values(fresh.state_dict(), model.state_dict())
    verify_ok(capsys, dst)


def test_plain_to_ddp_with_add_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = Old()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trained(model, opt)
    src = tmp_path / "plain.pt"
    torch.save({"state_dict": model.state_dict(), "optimizer": opt.state_dict()}, src)
    dst = tmp_path / "ddp.pt"
    rc, d, _ = migrate_json(capsys, src, dst, "--add-prefix", "module")
    assert rc == 0
    assert d["model_key"] == "state_dict"
    assert {m["new"] for m in d["mapping"]} == {f"module.{k}" for k in model.state_dict()}
    ckpt = torch.load(dst, weights_only=True)
    target = Wrapper(Old())
    target.load_state_dict(ckpt["state_dict"], strict=True)
    assert_same_values(target.module.state_dict(), model.state_dict())
    torch.optim.SGD(target.parameters(), lr=0.1, momentum=0.9).load_state_dict(ckpt["optimizer"])
    # BatchNorm's version entry moved with the module path.
    assert ckpt["state_dict"]._metadata["module.norm"] == model.state_dict()._metadata["norm"]


def fsdp_style_keys(sd: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """The names FSDP1 / activation checkpointing / Fabric wrappers give: wrapper components inside."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        head, rest = k.split(".", 1)
        out[
            f"_forward_module._fsdp_wrapped_module.{head}._fsdp_wrapped_module._checkpoint_wrapped_module.{rest}"
        ] = v
    return out


def test_fsdp_wrapper_prefixes_unwrap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = Old()
    src = tmp_path / "fsdp.pt"
    torch.save({"model": fsdp_style_keys(model.state_dict())}, src)
    dst = tmp_path / "plain.pt"
    rc, d, _ = migrate_json(capsys, src, dst, "--unwrap")
    assert rc == 0 and d["rules"] == ["unwrap"]
    fresh = Old()
    fresh.load_state_dict(torch.load(dst, weights_only=True)["model"], strict=True)
    assert_same_values(fresh.state_dict(), model.state_dict())
    # The same through --map-from: the wrapper names are a known rule.
    ref = tmp_path / "ref.pt"
    torch.save(Old().state_dict(), ref)
    rc, d, _ = migrate_json(capsys, src, tmp_path / "plain2.pt", "--map-from", ref)
    assert rc == 0
    hows = {m["old"]: m["how"] for m in d["mapping"]}
    # The untrained BatchNorm's tensors equal the reference's (digest); the Linear layers, with
    # other random values, are decided by the wrapper rules.
    assert {k for k, how in hows.items() if how == "name"} == {k for k in hows if ".norm." not in k}
    assert {how for how in hows.values()} == {"name", "digest"}
    assert [m["new"] for m in d["mapping"]] == list(model.state_dict())


def test_rename(tmp_path: Path, capsys: pytest.CaptureFixture[str], ddp_ckpt: Any) -> None:
    src, model, _ = ddp_ckpt
    dst = tmp_path / "new.pt"
    rc, d, _ = migrate_json(
        capsys,
        src,
        dst,
        "--strip-prefix=module.",
        "--rename",
        "enc=encoder",
        "--rename",
        "norm=bn",
        "--rename",
        "head=classifier",
    )
    assert rc == 0
    assert d["rules"] == [
        "strip-prefix module.",
        "rename enc=encoder",
        "rename norm=bn",
        "rename head=classifier",
    ]
    new = New()
    new.load_state_dict(torch.load(dst, weights_only=True)["model"], strict=True)
    assert next(iter(new.state_dict().values())).equal(model.enc[0].weight)


def test_key_rules_unit() -> None:
    r = KeyRules(renames=[("enc", "encoder"), ("layers.0", "first"), ("_checkpoint_wrapped_module", "")])
    assert r.apply("enc.0.weight") == "encoder.0.weight"
    assert r.apply("encx.0.weight") == "encx.0.weight"  # components, not substrings
    assert r.apply("a.enc.enc.b") == "a.encoder.encoder.b"
    assert r.apply("model.layers.0.w") == "model.first.w"
    assert r.apply("model.layers.01.w") == "model.layers.01.w"
    assert r.apply("x._checkpoint_wrapped_module.w") == "x.w"
    assert KeyRules(strip_prefixes=["module"]).apply("module.module.w") == "module.w"
    assert KeyRules(strip_prefixes=["module."]).apply("modulex.w") == "modulex.w"
    assert KeyRules(add_prefix="module").apply("w") == "module.w"
    assert canonical_key("module._orig_mod.a._fsdp_wrapped_module.b") == "a.b"
    assert canonical_key("a.module.b") == "a.module.b"  # a submodule named `module` stays
    with pytest.raises(UsageError, match="empty key"):
        KeyRules(renames=[("a.b", "")]).apply("a.b")


names = st.lists(
    st.text(alphabet="abcxyz_", min_size=1, max_size=5).filter(lambda s: s != "module"),
    min_size=1,
    max_size=4,
).map(".".join)


@given(key=names, prefix=names)
@settings(max_examples=200, deadline=None)
def test_strip_undoes_add(key: str, prefix: str) -> None:
    added = KeyRules(add_prefix=prefix).apply(key)
    assert KeyRules(strip_prefixes=[prefix]).apply(added) == key


# ---------------------------------------------------------------------------------------------
# Inference against a reference
# ---------------------------------------------------------------------------------------------


def test_map_from_fresh_reference_with_different_module_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ddp_ckpt: Any
) -> None:
    src, model, _ = ddp_ckpt
    ref = tmp_path / "ref.pt"
    torch.manual_seed(123)
    torch.save(New().state_dict(), ref)  # other values: digests cannot match
    dst = tmp_path / "new.pt"
    rc, d, err = migrate_json(capsys, src, dst, "--map-from", ref)
    assert rc == 0, err
    got = {m["old"]: m["new"] for m in d["mapping"]}
    assert got == {f"module.{o}": n for o, n in zip(model.state_dict(), New().state_dict(), strict=True)}
    assert {m["how"] for m in d["mapping"]} <= {"shape", "similar"}
    new = New()
    new.load_state_dict(torch.load(dst, weights_only=True)["model"], strict=True)
    assert_same_values(
        dict(zip(model.state_dict(), new.state_dict().values(), strict=True)), model.state_dict()
    )
    verify_ok(capsys, dst)


def test_map_from_same_weights_matches_by_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = Old()
    with torch.no_grad():
        model.norm.running_var.uniform_(0.5, 2.0)  # no two tensors share a digest
        model.norm.weight.uniform_()
        model.norm.bias.uniform_()
    src = tmp_path / "old.pt"
    torch.save({"model": model.state_dict()}, src)
    new = New()
    new.load_state_dict(dict(zip(new.state_dict(), model.state_dict().values(), strict=True)))
    ref_sd = new.state_dict()
    # The reference holds the two encoder biases (same shape) swapped: names and indices say
    # enc.0.bias -> encoder.0.bias, the values say encoder.2.bias; the digest decides.
    ref_sd["encoder.0.bias"], ref_sd["encoder.2.bias"] = ref_sd["encoder.2.bias"], ref_sd["encoder.0.bias"]
    ref = tmp_path / "ref.pt"
    torch.save(ref_sd, ref)
    rc, d, _ = migrate_json(capsys, src, tmp_path / "x.pt", "--map-from", ref, "--dry-run")
    assert rc == 0
    assert {m["how"] for m in d["mapping"]} == {"digest"}
    expected = dict(zip(model.state_dict(), new.state_dict(), strict=True))
    expected["enc.0.bias"], expected["enc.2.bias"] = "encoder.2.bias", "encoder.0.bias"
    assert {m["old"]: m["new"] for m in d["mapping"]} == expected


def test_map_from_uses_sidecar_digests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    import fastckpt

    torch.manual_seed(0)
    model = Old()
    src = tmp_path / "old.pt"
    fastckpt.save({"model": model.state_dict()}, src)
    new = New()
    new.load_state_dict(dict(zip(new.state_dict(), model.state_dict().values(), strict=True)))
    ref = tmp_path / "ref.pt"
    fastckpt.save(new.state_dict(), ref)
    calls: list[Any] = []
    import fastckpt.digest

    real = fastckpt.digest.hash_tensor
    monkeypatch.setattr(fastckpt.digest, "hash_tensor", lambda t, **kw: calls.append(t) or real(t, **kw))
    rc, d, _ = migrate_json(capsys, src, tmp_path / "x.pt", "--map-from", ref)
    assert rc == 0
    assert calls == []  # every digest came from the two sidecars
    assert [m["new"] for m in d["mapping"]] == list(new.state_dict())
    assert {m["how"] for m in d["mapping"]} == {"digest"}


def test_ambiguous_mapping_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src_sd = {"a.weight": torch.randn(4, 4), "b.weight": torch.randn(4, 4), "c.bias": torch.randn(3)}
    ref_sd = {"x.weight": torch.zeros(4, 4), "y.weight": torch.zeros(4, 4), "z.bias": torch.zeros(3)}
    src, ref, dst = tmp_path / "src.pt", tmp_path / "ref.pt", tmp_path / "dst.pt"
    torch.save(src_sd, src)
    torch.save(ref_sd, ref)
    rc, out, err = migrate(capsys, src, dst, "--map-from", ref)
    assert rc == 2 and out == ""
    assert err.startswith(
        f"fastckpt: error: {src}: ambiguous mapping: 2 source key(s) match more than one reference key"
    )
    assert "  a.weight -> {x.weight, y.weight}" in err
    assert "  b.weight -> {x.weight, y.weight}" in err
    assert not dst.exists() and not (tmp_path / "dst.pt.fastckpt").exists()
    rc, d, _ = migrate_json(capsys, src, dst, "--map-from", ref)
    assert rc == 2 and not d["ok"] and not d["written"]
    assert d["ambiguous"] == [
        {"key": "a.weight", "candidates": ["x.weight", "y.weight"]},
        {"key": "b.weight", "candidates": ["x.weight", "y.weight"]},
    ]
    assert d["error"].startswith(f"{src}: ambiguous mapping")
    # An explicit rename decides it.
    rc, d, _ = migrate_json(capsys, src, dst, "--map-from", ref, "--rename", "a=x", "--rename", "b=y")
    assert rc == 0
    assert {m["old"]: m["new"] for m in d["mapping"]} == {
        "a.weight": "x.weight",
        "b.weight": "y.weight",
        "c.bias": "z.bias",
    }


def test_incomplete_mapping_needs_allow_unmatched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ddp_ckpt: Any
) -> None:
    src, _, _ = ddp_ckpt

    class Bigger(New):
        def __init__(self) -> None:
            super().__init__()
            self.extra = torch.nn.Linear(5, 7)

    ref = tmp_path / "ref.pt"
    torch.save(Bigger().state_dict(), ref)
    dst = tmp_path / "out.pt"
    rc, _, err = migrate(capsys, src, dst, "--map-from", ref)
    assert rc == 2 and not dst.exists()
    assert "incomplete mapping (reference keys with no source: extra.weight, extra.bias)" in err
    rc, d, err = migrate_json(capsys, src, dst, "--map-from", ref, "--allow-unmatched")
    assert rc == 0 and d["unmatched_reference"] == ["extra.weight", "extra.bias"]
    assert "fastckpt: warning: 2 reference key(s) have no source" in err
    target = Bigger()
    missing = target.load_state_dict(torch.load(dst, weights_only=True)["model"], strict=False)
    assert missing.missing_keys == ["extra.weight", "extra.bias"] and missing.unexpected_keys == []


def test_infer_mapping_resolves_shared_digests_by_name() -> None:
    # Freshly initialised norms: every weight is ones, every bias zeros (shared digests).
    src = {
        f"blocks.{i}.ln.{p}": (torch.ones(8) if p == "weight" else torch.zeros(8))
        for i in range(3)
        for p in ("weight", "bias")
    }
    ref = {f"module.layers.{i}.norm.{p}": v.clone() for (k, v), i, p in
           ((kv, int(kv[0].split(".")[1]), kv[0].rsplit(".", 1)[1]) for kv in src.items())}  # fmt: skip
    inf = infer_mapping(src, ref)
    assert not inf.ambiguous and not inf.unmatched_source and not inf.unmatched_reference
    assert {s: r for s, (r, _) in inf.matches.items()} == {
        f"blocks.{i}.ln.{p}": f"module.layers.{i}.norm.{p}" for i in range(3) for p in ("weight", "bias")
    }
    assert {how for _, how in inf.matches.values()} == {"digest"}


@given(
    shapes=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_infer_mapping_recovers_a_random_renaming_of_distinct_tensors(
    shapes: list[tuple[int, int]], seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    src = {f"m{i}.weight": torch.randn(*s, generator=g) for i, s in enumerate(shapes)}
    perm = torch.randperm(len(shapes), generator=g).tolist()
    ref = {f"renamed_{perm[i]}.weight": v.clone() for i, v in enumerate(src.values())}
    ref = dict(sorted(ref.items()))
    inf = infer_mapping(src, ref)
    assert {s: r for s, (r, _) in inf.matches.items()} == {
        f"m{i}.weight": f"renamed_{perm[i]}.weight" for i in range(len(shapes))
    }


def test_reference_order_change_warns_for_indexed_optimizer_state() -> None:
    a, b = torch.randn(3), torch.randn(3) + 10
    ckpt = {
        "model": {"p.weight": a, "q.weight": b},
        "optimizer": {"state": {}, "param_groups": [{"params": [0, 1]}]},
    }
    ref = {"q2.weight": b.clone(), "p2.weight": a.clone()}
    plan = plan_migration(ckpt, reference=ref)
    assert plan.mapping == {"p.weight": "p2.weight", "q.weight": "q2.weight"}
    assert any("orders these parameters differently" in w for w in plan.warnings)


# ---------------------------------------------------------------------------------------------
# Optimizer state by name
# ---------------------------------------------------------------------------------------------


def test_fqn_keyed_optimizer_state_is_renamed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    torch.manual_seed(0)
    model = Old()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trained(model, opt)
    msd, osd = get_state_dict(model, opt)  # optimizer state keyed by parameter FQN
    assert "enc.0.weight" in osd["state"]
    src = tmp_path / "fqn.pt"
    torch.save({"model": msd, "optim": osd}, src)
    dst = tmp_path / "new.pt"
    rc, d, _ = migrate_json(
        capsys, src, dst, "--rename", "enc=encoder", "--rename", "norm=bn", "--rename", "head=classifier"
    )
    assert rc == 0
    (o,) = d["optimizers"]
    assert o["path"] == "optim" and o["keyed_by"] == "name"
    assert o["renamed"] == 2 * 8 and o["unknown"] == []  # 8 state entries and 8 params entries
    ckpt = torch.load(dst, weights_only=True)
    new = New()
    new_opt = torch.optim.AdamW(new.parameters(), lr=1e-3)
    set_state_dict(new, new_opt, model_state_dict=ckpt["model"], optim_state_dict=ckpt["optim"])
    _, got = get_state_dict(new, new_opt)
    for old_name, entry in osd["state"].items():
        new_name = (
            old_name.replace("enc.", "encoder.").replace("norm.", "bn.").replace("head.", "classifier.")
        )
        for k, v in entry.items():
            assert torch.equal(got["state"][new_name][k], v), (old_name, k)


def test_param_names_are_renamed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    wrapped = Wrapper(Old())
    opt = torch.optim.Adam(wrapped.named_parameters(), lr=1e-3)  # records param_names
    trained(wrapped.module, opt)
    assert opt.state_dict()["param_groups"][0]["param_names"][0] == "module.enc.0.weight"
    src = tmp_path / "ddp_named.pt"
    torch.save({"model": wrapped.state_dict(), "optimizer": opt.state_dict()}, src)
    dst = tmp_path / "plain.pt"
    rc, d, _ = migrate_json(capsys, src, dst, "--unwrap")
    assert rc == 0
    (o,) = d["optimizers"]
    assert o["keyed_by"] == "index" and o["param_names"] == 8
    ckpt = torch.load(dst, weights_only=True)
    plain = Old()
    plain.load_state_dict(ckpt["model"], strict=True)
    plain_opt = torch.optim.Adam(plain.named_parameters(), lr=1e-3)
    plain_opt.load_state_dict(ckpt["optimizer"])
    assert plain_opt.state_dict()["param_groups"][0]["param_names"] == [
        n for n, _ in plain.named_parameters()
    ]


# ---------------------------------------------------------------------------------------------
# Safety and formats
# ---------------------------------------------------------------------------------------------


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], ddp_ckpt: Any) -> None:
    src, _, _ = ddp_ckpt
    before = sorted(os.listdir(tmp_path))
    rc, out, _ = migrate(capsys, src, tmp_path / "out.pt", "--strip-prefix", "module.", "--dry-run")
    assert rc == 0
    assert "  module.head.bias -> head.bias" in out
    assert out.rstrip().endswith("dry run: nothing written")
    assert sorted(os.listdir(tmp_path)) == before
    rc, d, _ = migrate_json(capsys, src, tmp_path / "out.pt", "--strip-prefix", "module.", "--dry-run")
    assert rc == 0 and d["ok"] and d["dry_run"] and not d["written"] and d["sidecar"] is None
    assert sorted(os.listdir(tmp_path)) == before


def test_json_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str], ddp_ckpt: Any) -> None:
    src, model, _ = ddp_ckpt
    dst = tmp_path / "plain.pt"
    rc, d, _ = migrate_json(capsys, src, dst, "--strip-prefix", "module.")
    assert rc == 0
    assert set(d) == MIGRATE_JSON_KEYS
    assert d["ok"] and d["written"] and not d["dry_run"]
    assert d["source"] == str(src) and d["destination"] == str(dst) and d["reference"] is None
    assert d["source_format"] == "torch-zip" and d["format"] == "torch-zip"
    assert d["model_key"] == "model" and d["rules"] == ["strip-prefix module."]
    assert d["mapping"][0] == {"old": "module.enc.0.weight", "new": "enc.0.weight", "how": "rules"}
    assert len(d["mapping"]) == len(model.state_dict()) == d["changed"]
    assert d["optimizers"] == [
        {"path": "optimizer", "keyed_by": "index", "renamed": 0, "param_names": 0, "unknown": []}
    ]
    assert d["ambiguous"] == [] and d["unmatched_source"] == [] and d["unmatched_reference"] == []
    assert d["error"] is None and d["warnings"] == []
    assert d["size"] == dst.stat().st_size
    assert d["sidecar"] == f"{dst}.fastckpt"
    rc = main(["hash", "--json", str(dst)])
    assert json.loads(capsys.readouterr().out)["digest"] == d["digest"]


def test_refuses_dst_equal_to_src(tmp_path: Path, capsys: pytest.CaptureFixture[str], ddp_ckpt: Any) -> None:
    src, _, _ = ddp_ckpt
    h = sha256(src)
    link = tmp_path / "link.pt"
    os.symlink(src, link)
    hard = tmp_path / "hard.pt"
    os.link(src, hard)
    for dst in (src, Path(f"{tmp_path}/./ddp.pt"), link, hard):
        rc, _, err = migrate(capsys, src, dst, "--strip-prefix", "module.", "--force")
        assert rc == 2, dst
        assert "DST is SRC" in err
    assert sha256(src) == h
    rc, _, err = migrate(capsys, src, hard.with_name("x.pt"), "--strip-prefix", "module.")
    assert rc == 0
    rc, _, err = migrate(capsys, src, hard.with_name("x.pt"), "--strip-prefix", "module.")
    assert rc == 2 and "exists; pass --force" in err
    rc, _, err = migrate(capsys, src, hard.with_name("x.pt"), "--strip-prefix", "module.", "--force")
    assert rc == 0
    rc, _, err = migrate(capsys, src, tmp_path / "nowhere" / "x.pt", "--strip-prefix", "module.")
    assert rc == 2 and "does not exist" in err
    rc, _, err = migrate(capsys, src, tmp_path / "y.pt")
    assert rc == 2 and "nothing to do" in err


def test_damaged_source_exits_1_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fastckpt

    torch.manual_seed(0)
    src = tmp_path / "src.pt"
    fastckpt.save({"model": {"module.w": torch.randn(64, 64)}}, src)
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    src.write_bytes(bytes(data))
    dst = tmp_path / "dst.pt"
    rc, d, _ = migrate_json(capsys, src, dst, "--strip-prefix", "module.")
    assert rc == 1 and not d["ok"] and "damaged" in d["error"]
    assert not dst.exists()


class Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_unsafe_source_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pt"
    torch.save({"model": {"module.w": torch.ones(2)}, "x": Boom(marker)}, src, pickle_module=pickle)
    rc, _, err = migrate(capsys, src, tmp_path / "out.pt", "--strip-prefix", "module.")
    assert rc == 2
    assert "posix.system" in err
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_safetensors_round_trip_keeps_metadata_and_tied_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from safetensors import safe_open

    torch.manual_seed(0)
    w = torch.randn(5, 3)
    src = tmp_path / "model.safetensors"
    safetensors_torch.save_file(
        {"_orig_mod.emb.weight": w, "_orig_mod.out.bias": torch.randn(5)}, str(src), metadata={"format": "pt"}
    )
    h = sha256(src)
    dst = tmp_path / "plain.safetensors"
    rc, d, _ = migrate_json(capsys, src, dst, "--unwrap")
    assert rc == 0 and d["source_format"] == "safetensors" and d["format"] == "safetensors"
    with safe_open(str(dst), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert sorted(f.keys()) == ["emb.weight", "out.bias"]
        assert torch.equal(f.get_tensor("emb.weight"), w)
    verify_ok(capsys, dst)
    assert sha256(src) == h

    # torch file with tied weights -> safetensors: the shared tensor is written twice.
    tied = tmp_path / "tied.pt"
    torch.save({"module.a": w, "module.b": w}, tied)
    rc, d, _ = migrate_json(capsys, tied, tmp_path / "tied.safetensors", "--strip-prefix", "module.")
    assert rc == 0
    loaded = safetensors_torch.load_file(str(tmp_path / "tied.safetensors"))
    assert torch.equal(loaded["a"], w) and torch.equal(loaded["b"], w)

    # A nested checkpoint does not fit in safetensors.
    nested = tmp_path / "nested.pt"
    torch.save({"model": {"module.a": w}, "epoch": 1}, nested)
    rc, _, err = migrate(capsys, nested, tmp_path / "n.safetensors", "--strip-prefix", "module.")
    assert rc == 2 and "holds a flat dict of tensors" in err and not (tmp_path / "n.safetensors").exists()


def test_model_key_and_undetectable_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "gan.pt"
    torch.save({"nets": {"gen": {"module.w": torch.ones(2)}}, "epoch": 3}, src)
    rc, _, err = migrate(capsys, src, tmp_path / "o.pt", "--strip-prefix", "module.")
    assert rc == 2 and "cannot tell which entry holds the model state_dict" in err and "--model-key" in err
    rc, d, _ = migrate_json(
        capsys, src, tmp_path / "o.pt", "--strip-prefix", "module.", "--model-key", "nets.gen"
    )
    assert rc == 0 and d["model_key"] == "nets.gen"
    out = torch.load(tmp_path / "o.pt", weights_only=True)
    assert list(out["nets"]["gen"]) == ["w"] and out["epoch"] == 3


def test_apply_migration_does_not_modify_its_input() -> None:
    sd = OrderedDict([("module.a", torch.ones(1)), ("module.b", torch.zeros(1))])
    ckpt = {
        "model": sd,
        "optimizer": {
            "state": {"module.a": {"m": torch.ones(1)}},
            "param_groups": [{"params": ["module.a", "module.b"]}],
        },
    }
    plan = plan_migration(ckpt, rules=KeyRules(strip_prefixes=["module."]))
    out = apply_migration(ckpt, plan)
    assert list(out["model"]) == ["a", "b"] and list(ckpt["model"]) == ["module.a", "module.b"]
    assert list(out["optimizer"]["state"]) == ["a"] and out["optimizer"]["param_groups"][0]["params"] == [
        "a",
        "b",
    ]
    assert list(ckpt["optimizer"]["state"]) == ["module.a"]
    assert isinstance(out["model"], OrderedDict)


def test_ambiguous_error_type() -> None:
    with pytest.raises(AmbiguousMappingError) as e:
        plan_migration(
            {"a.w": torch.ones(2), "b.w": torch.ones(2) * 2},
            reference={"x.w": torch.zeros(2), "y.w": torch.zeros(2)},
        )
    assert e.value.ambiguous == {"a.w": ["x.w", "y.w"], "b.w": ["x.w", "y.w"]}


def test_map_from_a_wrapped_reference_adds_the_wrappers() -> None:
    torch.manual_seed(0)
    src = Old().state_dict()
    torch.manual_seed(1)
    ref = {f"_orig_mod.module.{k}": v for k, v in Old().state_dict().items()}  # compiled DDP model
    plan = plan_migration(src, reference=ref)
    assert plan.mapping == {k: f"_orig_mod.module.{k}" for k in src}
    assert {m.how for m in plan.moves} <= {"name", "digest"}
    assert {m.how for m in plan.moves if "norm" not in m.old} == {"name"}
