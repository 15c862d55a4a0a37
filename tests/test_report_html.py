"""The HTML report: self-contained, escaped, and rendered by a real headless Chromium (DOM dump and a
screenshot whose pixels are checked). The browser tests skip when no Chromium is installed."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib

import pytest

from fastckpt._report_html import render_html
from fastckpt.report import build_report

torch = pytest.importorskip("torch")

CHART_IDS = (
    "chart-sizes",
    "chart-heatmap",
    "chart-change",
    "chart-dedup",
    "chart-compression",
    "chart-interval",
)
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from report_helpers import make_run

    folder = str(tmp_path_factory.mktemp("run"))
    make_run(torch, folder, steps=(10, 20, 30, 40, 50))
    # A checkpoint file may carry any key; the page must show it as text.
    for step in (60, 70):
        state = torch.load(os.path.join(folder, "step_50.pt"), weights_only=True)
        state["model"][HOSTILE] = torch.full((1000,), float(step))
        torch.save(state, os.path.join(folder, f"step_{step}.pt"))
    return build_report(folder, sample_bytes=1 << 16)


def test_page_is_self_contained_and_escaped(report: dict) -> None:
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>")
    for cid in CHART_IDS:
        assert f'id="{cid}"' in page
    assert "<script" not in page.lower().replace("&lt;script", "")
    assert "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    # Nothing is fetched: no URL other than the SVG namespace.
    urls = set(re.findall(r"(?:src|href)\s*=\s*[\"']?([^\"' >]+)", page))
    assert urls <= {"x"}  # only the escaped text of the hostile key (not an attribute)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


def test_heatmap_has_a_cell_per_row_and_pair(report: dict) -> None:
    page = render_html(report)
    hm = report["change"]["heatmap"]
    assert page.count('class="cell"') == len(hm["labels"]) * len(report["change"]["pairs"])


def test_empty_change_is_explained(tmp_path) -> None:
    torch.save({"w": torch.ones(3)}, tmp_path / "step_1.pt")
    page = render_html(build_report(str(tmp_path)))
    assert "No consecutive checkpoints" in page and 'id="chart-sizes"' in page


# ---------------------------------------------------------------------------------------------
# Headless Chromium
# ---------------------------------------------------------------------------------------------


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


BROWSER = _browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium installed (scripts/install_test_tools.sh)"
)


def _chromium(args: list[str], tmp_path) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    cmd = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGBA or RGB bytes) of a non-interlaced 8-bit PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = color = 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    bpp = 4 if color == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows


@needs_browser
def test_chromium_renders_every_chart(report: dict, tmp_path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    out = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    for cid in CHART_IDS:
        assert f'id="{cid}"' in dom
    hm = report["change"]["heatmap"]
    assert dom.count('class="cell"') == len(hm["labels"]) * len(report["change"]["pairs"])
    # The hostile key arrived as text, not as an element the browser created.
    assert '<img src="x"' not in dom and "&lt;script&gt;" in dom


@needs_browser
def test_chromium_screenshot_shows_the_charts(report: dict, tmp_path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    shot = tmp_path / "shot.png"
    out = _chromium([f"--screenshot={shot}", "--window-size=1000,1800", page.as_uri()], tmp_path)
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    width, height, rows = decode_png(shot.read_bytes())
    assert (width, height) == (1000, 1800)
    bpp = len(rows[0]) // width
    colours = {row[i : i + 3] for row in rows[::7] for i in range(0, len(row), bpp * 5)}
    # Text, bars, grid lines and the heatmap's palette: a blank or unstyled page has a handful.
    assert len(colours) > 60
    # The size chart's bar colour (#3b528b) is on the page.
    assert any(abs(c[0] - 0x3B) < 6 and abs(c[1] - 0x52) < 6 and abs(c[2] - 0x8B) < 6 for c in colours)


def test_demo_ends_with_a_sample_html_report(cli) -> None:
    import json

    out = cli(["demo", "--json"])
    assert out.returncode == 0, out.stderr
    path = json.loads(out.stdout)["html_report"]
    try:
        with open(path, encoding="utf-8") as f:
            page = f.read()
        for cid in CHART_IDS:
            assert f'id="{cid}"' in page
        assert "step_300.pt" in page
    finally:
        os.unlink(path)
    text = cli(["demo"])
    assert text.returncode == 0 and ". report: 3 checkpoints" in text.stdout
    os.unlink(text.stdout.strip().rsplit("wrote ", 1)[1])
