"""`fastckpt diff` as users run it: exit codes, the --json contract, the text table order, and the
--html report rendered by a real headless Chromium (skipped when no browser is installed)."""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import struct
import subprocess
import zlib

import pytest

torch = pytest.importorskip("torch")


def write(tmp_path, name: str, obj) -> str:
    p = str(tmp_path / name)
    torch.save(obj, p)
    return p


def model(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {f"layers.{i}.weight": torch.randn(16, 16, generator=g) for i in range(6)} | {
        "head.bias": torch.randn(16, generator=g)
    }


@pytest.fixture
def pair(tmp_path):
    a = model()
    b = {k: v.clone() for k, v in a.items()}
    # relative changes 1e-1, 1e-3, 1e-5 on three layers, in an order unlike model order
    b["layers.1.weight"] = a["layers.1.weight"] * (1 + 1e-5)
    b["layers.3.weight"] = a["layers.3.weight"] * (1 + 1e-1)
    b["layers.4.weight"] = a["layers.4.weight"] * (1 + 1e-3)
    return write(tmp_path, "a.pt", {"model": a, "step": 1}), write(tmp_path, "b.pt", {"model": b, "step": 2})


def test_identical_exit_0_and_json(cli, tmp_path) -> None:
    a = write(tmp_path, "a.pt", {"model": model(), "step": 5})
    b = write(tmp_path, "b.pt", {"model": model(), "step": 5})
    r = cli(["diff", a, b, "--json"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["identical"] is True and out["ok"] is True
    assert out["renames"] == []
    assert {t["status"] for t in out["tensors"]} == {"equal"}
    assert [t["key"] for t in out["tensors"]] == [f"model.{k}" for k in model()]
    assert out["values"] == [{"key": "step", "status": "equal", "a": 5, "b": 5, "within_tolerance": True}]
    r = cli(["diff", a, b])
    assert r.returncode == 0 and "result: IDENTICAL" in r.stdout


def test_different_exit_1_json_contract(cli, pair) -> None:
    a, b = pair
    r = cli(["diff", a, b, "--json"])
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["identical"] is False and out["format"] == "fastckpt-diff-v1"
    by_key = {t["key"]: t for t in out["tensors"]}
    t = by_key["model.layers.3.weight"]
    assert t["status"] == "different"
    required = {
        "key", "key_b", "status", "dtype", "dtype_b", "shape", "shape_b", "numel", "n_different",
        "fraction_different", "first_diff_index", "max_abs_diff", "max_rel_diff", "mean_abs_diff",
        "rms_diff", "rel_change", "nan_inf_introduced", "nan_inf_removed", "max_ulp", "within_tolerance",
    }  # fmt: skip
    assert required <= set(t)
    assert t["rel_change"] == pytest.approx(0.1, rel=1e-5)
    assert t["max_rel_diff"] == pytest.approx(0.1, rel=1e-5)
    assert t["shape"] == [16, 16] and t["dtype"] == "float32"
    assert by_key["model.layers.0.weight"]["status"] == "equal"
    assert out["summary"]["different"] == 3 and out["summary"]["values_different"] == 1
    assert out["values"] == [
        {"key": "step", "status": "different", "a": 1, "b": 2, "within_tolerance": False}
    ]


def test_text_table_sorted_by_relative_change(cli, pair) -> None:
    a, b = pair
    r = cli(["diff", a, b])
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    order = [
        i
        for k in ("layers.3.weight", "layers.4.weight", "layers.1.weight")
        for i, ln in enumerate(lines)
        if k in ln
    ]
    assert order == sorted(order) and len(order) == 3
    assert "result: DIFFERENT" in r.stdout
    assert "step: 1 -> 2" in r.stdout


def test_tolerance_exit_codes(cli, tmp_path) -> None:
    a = model()
    b = {k: v * (1 + 1e-4) for k, v in a.items()}
    pa, pb = write(tmp_path, "a.pt", a), write(tmp_path, "b.pt", b)
    assert cli(["diff", pa, pb]).returncode == 1
    assert cli(["diff", pa, pb, "--rtol", "1e-3"]).returncode == 0
    assert cli(["diff", pa, pb, "--rtol", "1e-5"]).returncode == 1
    r = cli(["diff", pa, pb, "--atol", "1", "--json"])
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["identical"] is False and out["ok"] is True
    assert all(t["within_tolerance"] for t in out["tensors"])
    r = cli(["diff", pa, pb, "--atol", "-1"])
    assert r.returncode == 2 and "fastckpt: error:" in r.stderr


def test_renames_in_json(cli, tmp_path) -> None:
    a = model()
    pa = write(tmp_path, "plain.pt", a)
    pb = write(tmp_path, "ddp.pt", {f"module.{k}": v for k, v in a.items()})
    r = cli(["diff", pb, pa, "--json"])
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["renames"] == ["strip prefix 'module.'"]
    assert out["rename_rules"] == [{"rule": "strip prefix 'module.'", "pairs": len(a)}]
    for t in out["tensors"]:
        assert t["status"] == "renamed"
        assert t["key_b"] == t["key"].removeprefix("module.")
        assert t["content_equal"] is True
    assert out["compat"]["mapping"] == {k: f"module.{k}" for k in a}
    assert out["compat"]["loads_strict"] is True
    r = cli(["diff", pb, pa])
    assert "strip prefix 'module.'" in r.stdout


def test_nested_keys_are_dotted(cli, tmp_path) -> None:
    opt = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    opt_b = {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.2, "params": [0]}]}
    r = cli(
        [
            "diff",
            write(tmp_path, "a.pt", {"optimizer": opt}),
            write(tmp_path, "b.pt", {"optimizer": opt_b}),
            "--json",
        ]
    )
    out = json.loads(r.stdout)
    assert [(t["key"], t["status"]) for t in out["tensors"]] == [("optimizer.state.0.exp_avg", "different")]
    assert {v["key"]: v["status"] for v in out["values"]} == {
        "optimizer.param_groups.0.lr": "different",
        "optimizer.param_groups.0.params": "equal",
    }


@pytest.mark.parametrize("which", ["missing", "damaged", "opaque"])
def test_errors_exit_2_one_line(cli, tmp_path, which) -> None:
    good = write(tmp_path, "a.pt", model())
    bad = str(tmp_path / "bad.pt")
    if which == "damaged":
        with open(good, "rb") as f:
            data = f.read()
        with open(bad, "wb") as f:
            f.write(data[: len(data) // 3])
    elif which == "opaque":
        bad = str(tmp_path / "notes.txt")
        with open(bad, "w") as f:
            f.write("hello")
    r = cli(["diff", good, bad])
    assert r.returncode == 2
    assert r.stderr.startswith("fastckpt: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert bad in r.stderr


def test_quiet_and_json_keep_stderr_clean(cli, pair) -> None:
    a, b = pair
    for flags in (["--quiet"], ["--json"]):
        r = cli(["diff", a, b, *flags])
        assert r.returncode == 1 and r.stderr == ""


# ---- HTML ------------------------------------------------------------------------------------------


def chromium() -> str | None:
    for name in (
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
        "chrome",
        "headless_shell",
    ):
        path = shutil.which(name)
        if path:
            return path
    return None


needs_browser = pytest.mark.skipif(
    chromium() is None, reason="no Chromium binary (scripts/install_test_tools.sh installs one)"
)


def run_browser(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = chromium()
    assert exe
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-extensions", f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1200,900", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


class DomSummary(html.parser.HTMLParser):
    """Counts what the report must contain, from the DOM the browser serialized."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.bars: list[dict[str, str]] = []
        self.rows: dict[str, int] = {}
        self.table: str | None = None
        self.external: list[str] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self.table = a.get("id")
            self.rows[self.table or ""] = 0
        if tag == "tr" and self.table is not None:
            self.rows[self.table] += 1
        if tag == "rect" and a.get("class") == "bar":
            self.bars.append(a)
        if tag == "script":
            self.scripts += 1
        for attr in ("src", "href"):
            if attr in a and not a[attr].startswith(("#", "data:")):
                self.external.append(a[attr])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, raw pixels) of an 8-bit RGB/RGBA PNG (no interlace)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    assert ihdr is not None
    w, h, depth, color, _, _, interlace = ihdr
    assert depth == 8 and color in (2, 6) and interlace == 0, ihdr
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    out = bytearray(h * stride)
    prev = bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            line = bytearray((x + p) & 255 for x, p in zip(line, prev, strict=True))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return w, h, bpp, bytes(out)


@pytest.mark.slow
@needs_browser
def test_html_report_in_chromium(cli, pair, tmp_path) -> None:
    a, b = pair
    report = tmp_path / "report.html"
    r = cli(["diff", a, b, "--html", str(report), "--quiet"])
    assert r.returncode == 1, r.stderr
    text = report.read_text()
    assert "http://" not in text and "https://" not in text and "url(" not in text  # self-contained

    dom = run_browser(tmp_path, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    s = DomSummary()
    s.feed(dom.stdout)
    assert {"rel-change-chart", "changes", "tensors", "summary", "values", "verdict"} <= s.ids
    assert len(s.bars) == 7  # one bar per tensor, in model order
    assert [b["data-key"] for b in s.bars] == [f"model.{k}" for k in model()]
    assert [b["data-status"] for b in s.bars].count("different") == 3
    # bar heights follow the relative change: 1e-1 > 1e-3 > 1e-5
    heights = {b["data-key"]: float(b["height"]) for b in s.bars}
    assert (
        heights["model.layers.3.weight"]
        > heights["model.layers.4.weight"]
        > heights["model.layers.1.weight"]
        > 0
    )
    assert s.rows["changes"] == 1 + 3 and s.rows["tensors"] == 1 + 7
    assert s.scripts == 0 and s.external == []
    assert "different" in " ".join(s.text)

    shot = tmp_path / "shot.png"
    res = run_browser(tmp_path, f"--screenshot={shot}", report.as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    w, h, bpp, px = decode_png(shot.read_bytes())
    assert (w, h) == (1200, 900)
    colors = {px[i : i + 3] for i in range(0, len(px), bpp * 7)}
    assert len(colors) > 20  # not a blank page
    red = bytes((0xD1, 0x49, 0x5B))  # the "different" bar colour
    assert any(px[i : i + 3] == red for i in range(0, len(px), bpp)), "no chart bar was painted"


def test_html_is_written_atomically_and_escaped(cli, tmp_path) -> None:
    a = {"<script>alert(1)</script>.weight": torch.zeros(2)}
    b = {"<script>alert(1)</script>.weight": torch.ones(2)}
    report = tmp_path / "r.html"
    r = cli(["diff", write(tmp_path, "a.pt", a), write(tmp_path, "b.pt", b), "--html", str(report)])
    assert r.returncode == 1
    text = report.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
