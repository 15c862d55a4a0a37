"""`fastckpt report` and `fastckpt.report.build_report` on real runs written by torch: discovery and
order, dedup against an xxhash oracle, relative change against torch norms, sidecars, intervals,
cost, the --json contract and errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from fastckpt._run import discover, parse_step
from fastckpt.report import (
    GB,
    build_report,
    daly_interval,
    expected_loss_per_failure,
    waste_fraction,
    young_interval,
)
from report_helpers import expected_change, make_run, shared_fraction_oracle, write_safetensors

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def run4(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, object]]]:
    folder = str(tmp_path_factory.mktemp("run4"))
    states = make_run(torch, folder)
    return folder, states


def _tensor(report: dict, key: str) -> dict:
    return next(t for t in report["dedup"]["tensors"] if t["key"] == key)


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("step_100.pt", 100),
        ("epoch=3-step=1000.ckpt", 1000),
        ("checkpoint-500", 500),
        ("global_step200", 200),
        ("iter_0000300", 300),
        ("model_700.pt", 700),
        ("ckpt-42.safetensors", 42),
        ("step=12.distcp", 12),
        ("last.ckpt", None),
        ("epoch=3.ckpt", None),
        ("final.pt", None),
    ],
)
def test_parse_step(name: str, step: int | None) -> None:
    assert parse_step(name) == step


def test_discovery_orders_by_step_then_mtime_and_skips_non_checkpoints(tmp_path) -> None:
    d = str(tmp_path)
    t = {"x": torch.zeros(4)}
    for name in ("step_20.pt", "epoch=0-step=10.ckpt", "step_10.pt", "last.ckpt", "first.pt"):
        torch.save(t, os.path.join(d, name))
    now = time.time()
    os.utime(os.path.join(d, "epoch=0-step=10.ckpt"), (now - 50, now - 50))
    os.utime(os.path.join(d, "step_10.pt"), (now - 100, now - 100))
    os.utime(os.path.join(d, "first.pt"), (now - 1000, now - 1000))
    for junk in (
        ".step_30.pt.tmp-1234",
        "step_40.pt.fastckpt",
        "notes.txt",
        "step_50.pt.damaged",
        "x.distcp",
    ):
        with open(os.path.join(d, junk), "wb") as f:
            f.write(b"junk")
    names = [c.name for c in discover(d)]
    assert names == ["step_10.pt", "epoch=0-step=10.ckpt", "step_20.pt", "first.pt", "last.ckpt"]


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_discovery_of_dcp_and_hf_folders(tmp_path) -> None:
    import numpy as np
    import torch.distributed.checkpoint as dcp

    run = tmp_path / "run"
    for step in (1, 2):
        dcp.save(
            {"w": torch.full((64, 64), float(step)), "b": torch.arange(8.0)},
            checkpoint_id=str(run / f"step_{step}"),
        )
        hf = run / f"checkpoint-{step + 10}"
        hf.mkdir()
        write_safetensors(str(hf / "model.safetensors"), {"w": np.full((32, 32), step, dtype=np.float32)})
        (hf / "trainer_state.json").write_text("{}")
    (run / "logs").mkdir()
    (run / "logs" / "events.txt").write_text("x")
    ckpts = discover(str(run))
    assert [(c.name, c.kind, c.step) for c in ckpts] == [
        ("step_1", "dcp", 1),
        ("step_2", "dcp", 2),
        ("checkpoint-11", "hf", 11),
        ("checkpoint-12", "hf", 12),
    ]
    assert {f.rel for f in ckpts[0].files} >= {".metadata", "__0_0.distcp"}
    r = build_report(str(run), sample_bytes=1 << 16)
    assert [c["kind"] for c in r["checkpoints"]] == ["dcp", "dcp", "hf", "hf"]
    # DCP step 1 -> 2: w goes from all ones to all twos (relative change 1), b is unchanged.
    first = r["change"]["pairs"][0]
    assert first["tensors_compared"] == 2 and first["tensors_unchanged"] == 1
    w = _tensor(r, "w")
    assert w["relative_change"][0] == pytest.approx(1.0, rel=1e-12)
    assert r["checkpoints"][2]["size"] == sum(
        os.path.getsize(os.path.join(run, "checkpoint-11", f)) for f in os.listdir(run / "checkpoint-11")
    )


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_single_checkpoint_folder_is_a_run_of_one(tmp_path) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.save({"w": torch.ones(10)}, checkpoint_id=str(tmp_path / "ckpt"))
    r = build_report(str(tmp_path / "ckpt"))
    assert len(r["checkpoints"]) == 1 and r["checkpoints"][0]["kind"] == "dcp"
    assert r["change"]["pairs"] == []


# ---------------------------------------------------------------------------------------------
# The analysis
# ---------------------------------------------------------------------------------------------


def test_report_sizes_dedup_and_change(run4) -> None:
    folder, states = run4
    r = build_report(folder)
    paths = [os.path.join(folder, f"step_{s}.pt") for s in (100, 200, 300, 400)]
    assert [c["path"] for c in r["checkpoints"]] == paths
    assert [c["step"] for c in r["checkpoints"]] == [100, 200, 300, 400]
    assert [c["size"] for c in r["checkpoints"]] == [os.path.getsize(p) for p in paths]
    assert r["size"]["total_bytes"] == sum(os.path.getsize(p) for p in paths)
    assert all(c["digests"] == "hashed" for c in r["checkpoints"])

    assert r["dedup"]["shared_fraction"] == pytest.approx(
        shared_fraction_oracle([[p] for p in paths]), abs=1e-15
    )
    assert 0 < r["dedup"]["shared_fraction"] < 1
    embed = _tensor(r, "model.embed.weight")
    assert embed["unchanged_pairs"] == 3 and embed["relative_change"] == [0.0, 0.0, 0.0]
    # Interior leaves of a frozen 256 KiB tensor are shared; at most the two boundary leaves are not.
    assert embed["shared_bytes"] >= embed["bytes"] - 4 * 2 * 65536

    for key in ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.norm", "head.weight"):
        row = _tensor(r, f"model.{key}")
        want = [expected_change(torch, states[i][key], states[i + 1][key]) for i in range(3)]
        assert row["relative_change"] == pytest.approx(want, rel=1e-6), key
    counts = _tensor(r, "model.counts")
    assert counts["relative_change"] == [0.0, 0.0, 0.0]
    # The overall change of a pair is sqrt(sum of ||dB||^2 / sum of ||A||^2) over its tensors.
    num = sum(float((states[1][k].double() - states[0][k].double()).pow(2).sum()) for k in states[0])
    den = sum(float(states[0][k].double().pow(2).sum()) for k in states[0])
    assert r["change"]["pairs"][0]["relative_change"] == pytest.approx(math.sqrt(num / den), rel=1e-6)
    hm = r["change"]["heatmap"]
    assert hm["grouping"] == "tensor" and len(hm["values"]) == len(hm["labels"]) == 7
    assert hm["labels"][0] == "model.embed.weight"


def test_sidecars_give_the_same_report_without_hashing(tmp_path, cli) -> None:
    folder = str(tmp_path / "run")
    make_run(torch, folder, steps=(1, 2, 3))
    plain = build_report(folder)
    assert cli(["protect", folder, "-q"]).returncode == 0
    protected = build_report(folder)
    assert all(c["digests"] == "sidecar" for c in protected["checkpoints"])
    assert protected["dedup"]["digest_sources"] == {"sidecar": 3, "hashed": 0}
    for key in ("total_bytes", "unique_bytes", "shared_bytes", "shared_fraction"):
        assert protected["dedup"][key] == plain["dedup"][key]
    for a, b in zip(plain["dedup"]["tensors"], protected["dedup"]["tensors"], strict=True):
        assert a["key"] == b["key"] and a["shared_bytes"] == b["shared_bytes"]
        assert a["relative_change"] == pytest.approx(b["relative_change"], rel=1e-12)
    # Frozen tensors with equal sidecar digests are not read again.
    assert protected["change"]["bytes_read"] < plain["change"]["bytes_read"]


def test_stale_sidecar_is_not_trusted(tmp_path, cli) -> None:
    folder = str(tmp_path / "run")
    make_run(torch, folder, steps=(1, 2))
    assert cli(["protect", folder, "-q"]).returncode == 0
    path = os.path.join(folder, "step_2.pt")
    make_run(torch, str(tmp_path / "other"), steps=(1, 2), seed=9)
    os.replace(os.path.join(tmp_path, "other", "step_2.pt"), path)
    later = time.time() + 5
    os.utime(path, (later, later))
    r = build_report(folder)
    assert r["checkpoints"][1]["digests"] == "hashed"
    assert any("step_2.pt.fastckpt" in w for w in r["warnings"])
    assert r["dedup"]["shared_fraction"] == pytest.approx(
        shared_fraction_oracle([[os.path.join(folder, "step_1.pt")], [path]]), abs=1e-15
    )


def test_dtype_and_shape_changes_and_missing_keys(tmp_path) -> None:
    folder = str(tmp_path)
    torch.save(
        {"a": torch.ones(4), "b": torch.ones(4), "c": torch.ones(4)}, os.path.join(folder, "step_1.pt")
    )
    torch.save(
        {"a": torch.ones(5), "b": torch.ones(4).double(), "d": torch.ones(4)},
        os.path.join(folder, "step_2.pt"),
    )
    torch.save(
        {"a": torch.ones(5) * 2, "b": torch.ones(4).double(), "c": torch.ones(4)},
        os.path.join(folder, "step_3.pt"),
    )
    r = build_report(folder)
    rows = {t["key"]: t for t in r["dedup"]["tensors"]}
    assert rows["a"]["relative_change"] == [None, pytest.approx(1.0)]
    assert rows["b"]["relative_change"] == [None, 0.0]
    assert rows["c"]["relative_change"] == [None, None]
    assert rows["d"]["relative_change"] == [None, None]
    assert list(rows) == ["a", "b", "c", "d"]
    assert r["change"]["pairs"][0]["tensors_skipped"] == 2


def test_compressibility_uses_a_real_compressor(tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    for step in (1, 2):
        state = {
            "zeros": torch.zeros(65536, dtype=torch.float16),
            "noise": torch.randn(65536, generator=gen),
            "ids": torch.arange(16384, dtype=torch.int64),
        }
        torch.save(state, tmp_path / f"step_{step}.pt")
    r = build_report(str(tmp_path), sample_bytes=1 << 17)
    comp = r["compression"]
    assert comp["compressor"] in ("zstd-3", "zlib-6")
    by = {x["dtype"]: x for x in comp["dtypes"]}
    assert set(by) == {"float16", "float32", "int64", "(other bytes)"}
    assert by["float16"]["ratio"] > 50  # zeros
    assert by["int64"]["ratio"] > 3  # small integers: seven zero bytes in eight
    assert by["int64"]["ratio_byte_grouped"] > by["int64"]["ratio"]
    assert 0.9 < by["float32"]["ratio"] < 1.3  # random mantissas barely compress
    assert by["float32"]["bytes"] == 2 * 65536 * 4
    assert all(0 < x["sampled_bytes"] <= 1 << 17 for x in comp["dtypes"])
    assert comp["estimated_compressed_bytes"] < r["size"]["total_bytes"]


def test_interval_formulas() -> None:
    c, m = 60.0, 24 * 3600.0
    assert young_interval(c, m) == pytest.approx(math.sqrt(2 * c * m))
    x = c / (2 * m)
    assert daly_interval(c, m) == pytest.approx(math.sqrt(2 * c * m) * (1 + math.sqrt(x) / 3 + x / 9) - c)
    assert daly_interval(3 * m, m) == m
    tau = daly_interval(c, m)
    # Daly's optimum of the exact model: waste is higher a little to either side.
    assert waste_fraction(tau, c, m) < waste_fraction(tau * 0.8, c, m)
    assert waste_fraction(tau, c, m) < waste_fraction(tau * 1.25, c, m)
    assert expected_loss_per_failure(10.0, 2.0, 1e9) == pytest.approx(6.0, rel=1e-6)
    big = expected_loss_per_failure(m, 0.0, m)
    assert big == pytest.approx(m - m / (math.e - 1))


def test_interval_and_cost_in_the_report(run4) -> None:
    folder, _ = run4
    r = build_report(folder, mtbf_hours=2.0, save_seconds=30.0, price_usd_per_gb_month=0.05, change=False)
    iv = r["interval"]
    assert iv["save_seconds_source"] == "given" and iv["mtbf_source"] == "given"
    assert iv["recommended_seconds"] == pytest.approx(daly_interval(30.0, 7200.0))
    assert iv["expected_lost_seconds_per_failure"] == pytest.approx(
        expected_loss_per_failure(iv["recommended_seconds"], 30.0, 7200.0)
    )
    total = r["size"]["total_bytes"]
    assert r["cost"]["monthly_usd"] == pytest.approx(total / GB * 0.05)
    assert r["cost"]["monthly_usd_deduplicated"] == pytest.approx(r["dedup"]["unique_bytes"] / GB * 0.05)
    assert r["change"]["pairs"] == []
    default = build_report(folder, change=False)
    assert default["interval"]["save_seconds_source"] in ("measured", "estimated")
    assert default["interval"]["mtbf_source"] == "default"


def test_report_never_imports_torch(run4) -> None:
    folder, _ = run4
    code = (
        "import sys; from fastckpt.report import build_report; build_report(sys.argv[1]); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    out = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_json_contract(run4, cli, tmp_path) -> None:
    folder, _ = run4
    html = str(tmp_path / "r.html")
    out = cli(
        ["report", folder, "--json", "--html", html, "--mtbf", "12", "--price", "0.02", "--save-seconds", "5"]
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for c in r["checkpoints"]:
        assert {"path", "size", "step"} <= set(c)
    assert 0 <= r["dedup"]["shared_fraction"] <= 1
    assert r["interval"]["recommended_seconds"] == pytest.approx(daly_interval(5.0, 12 * 3600.0))
    assert r["cost"]["price_usd_per_gb_month"] == 0.02
    assert os.path.isfile(html) and r["html"] == os.path.abspath(html)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_cli_text(run4, cli) -> None:
    folder, _ = run4
    out = cli(["report", folder])
    assert out.returncode == 0, out.stderr
    assert "dedup:" in out.stdout and "checkpoint every" in out.stdout and "cost at $0.023" in out.stdout
    assert out.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "/nonexistent/run"], "does not exist"),
        (["report", "{empty}"], "found none"),
        (["report", "{run}", "--mtbf", "-1"], "--mtbf must be a positive"),
        (["report", "{run}", "--save-seconds", "0"], "--save-seconds must be a positive"),
        (["report", "{run}", "--price", "nan"], "--price must be"),
        (["report", "{run}", "--leaf-size", "1000"], "power of two"),
    ],
)
def test_cli_errors(run4, cli, tmp_path, args, message) -> None:
    folder, _ = run4
    (tmp_path / "empty").mkdir()
    argv = [a.format(run=folder, empty=str(tmp_path / "empty")) for a in args]
    out = cli(argv)
    assert out.returncode == 2
    assert out.stderr.startswith("fastckpt: error: ") and message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_observed_interval_from_modification_times(tmp_path) -> None:
    base = time.time() - 10_000
    for i, step in enumerate((100, 200, 300)):
        p = tmp_path / f"step_{step}.pt"
        torch.save({"w": torch.full((10,), float(step))}, p)
        os.utime(p, (base + 600 * i, base + 600 * i))
    iv = build_report(str(tmp_path), save_seconds=30.0, mtbf_hours=10.0)["interval"]
    assert iv["observed_seconds"] == pytest.approx(600.0)
    assert iv["observed_waste_fraction"] == pytest.approx(waste_fraction(570.0, 30.0, 36000.0))
    assert iv["observed_lost_seconds_per_failure"] == pytest.approx(
        expected_loss_per_failure(570.0, 30.0, 36000.0)
    )
    assert iv["steps_per_second"] == pytest.approx(200 / 1200)
    assert iv["recommended_steps"] == round(iv["recommended_seconds"] * 200 / 1200)
    # Gaps shorter than a save are copies or uploads, not training intervals.
    iv = build_report(str(tmp_path), save_seconds=900.0)["interval"]
    assert iv["observed_seconds"] is None and iv["observed_waste_fraction"] is None
