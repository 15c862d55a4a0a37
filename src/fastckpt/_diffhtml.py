"""`fastckpt diff --html FILE`: a self-contained HTML report of a DiffReport.

One file, no external resources and no scripts: inline CSS and an inline SVG chart drawn here
(relative change ||B-A||/||A|| per tensor, in model order, log scale), plus the tables of the
text report. Every value is HTML-escaped; keys come from checkpoint files and are untrusted.
"""

from __future__ import annotations

import contextlib
import html
import math
from typing import TYPE_CHECKING

from ._difftext import change_label, fmt_num, fmt_shape, short

if TYPE_CHECKING:
    from .diff import DiffReport, TensorChange

COLORS = {
    "equal": "#9aa5b1",
    "different": "#d1495b",
    "within-tol": "#edae49",
    "renamed": "#66a182",
    "renamed*": "#2e4057",
    "only_a": "#7b2cbf",
    "only_b": "#00798c",
    "dtype_changed": "#8d0801",
    "shape_changed": "#8d0801",
}

LEGEND = {
    "within-tol": "within tolerance",
    "renamed": "renamed (equal)",
    "renamed*": "renamed and changed",
    "only_a": "only in A",
    "only_b": "only in B",
    "dtype_changed": "dtype changed",
    "shape_changed": "shape changed",
}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1f2933;background:#fff}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px}
.verdict{display:inline-block;padding:4px 10px;border-radius:4px;color:#fff;font-weight:600}
.v-identical{background:#2f9e44}.v-tolerance{background:#e67700}.v-different{background:#c92a2a}
table{border-collapse:collapse;font-size:12.5px;margin:4px 0}
th,td{border:1px solid #d9e2ec;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f0f4f8}td.k,th.k{text-align:left;max-width:520px;overflow:hidden;text-overflow:ellipsis}
td.s{text-align:left;font-weight:600}
.meta td{text-align:left}.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
svg text{font-size:11px;fill:#52606d}
"""


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def chart_svg(tensors: list[TensorChange], width: int = 1100, height: int = 320) -> str:
    """Bars of ||B-A||/||A|| per tensor in model order, on a log axis. Equal tensors get a short
    grey tick on the baseline; tensors without a value (one side only, dtype or shape change)
    get a full-height faded bar in their status colour; infinite values a full bar and a marker."""
    left, right, top, bottom = 64, 16, 16, 40
    pw, ph = width - left - right, height - top - bottom
    n = max(len(tensors), 1)
    finite = [
        t.rel_change for t in tensors if t.rel_change and math.isfinite(t.rel_change) and t.rel_change > 0
    ]
    hi_exp = math.ceil(math.log10(max(finite))) if finite else 0
    lo_exp = math.floor(math.log10(min(finite))) if finite else -6
    hi_exp = max(hi_exp, lo_exp + 1)
    lo_exp = max(lo_exp, hi_exp - 16)

    def y_of(v: float) -> float:
        if not math.isfinite(v):
            return float(top)
        e = min(max(math.log10(v), lo_exp), hi_exp)
        return top + ph * (hi_exp - e) / (hi_exp - lo_exp)

    parts = [
        f'<svg id="rel-change-chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="relative change per tensor">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#f8fafc" stroke="#d9e2ec"/>',
    ]
    for e in range(lo_exp, hi_exp + 1):
        y = y_of(10.0**e)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7eb"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">1e{e}</text>')
    bw = pw / n
    base = top + ph
    for i, t in enumerate(tensors):
        label = change_label(t)
        color = COLORS.get(label, "#52606d")
        x = left + i * bw
        w = max(bw * 0.8, 1.0)
        key = t.key if t.status != "renamed" else f"{t.key} -> {t.key_b}"
        tip = f"{key}: {label}, |B-A|/|A| = {fmt_num(t.rel_change)}"
        v = t.rel_change
        h: float
        if v is None:
            y, h, extra = float(top), float(ph), ' fill-opacity="0.35"'
        elif v == 0:
            y, h, extra = base - 3.0, 3.0, ""
        else:
            y = y_of(v)
            h, extra = max(base - y, 1.0), ""
        parts.append(
            f'<rect class="bar" data-key="{_e(key)}" data-status="{_e(t.status)}" x="{x:.2f}" y="{y:.2f}" '
            f'width="{w:.2f}" height="{h:.2f}" fill="{color}"{extra}><title>{_e(tip)}</title></rect>'
        )
        if v is not None and not math.isfinite(v):
            # Off the scale (A is zero, or NaN/Inf appeared): a marker above the bar.
            cx = x + w / 2
            parts.append(
                f'<path class="off-scale" d="M{cx - 4:.2f} {top - 2} L{cx + 4:.2f} {top - 2} L{cx:.2f} {top + 5}Z" '
                f'fill="#1f2933"><title>{_e(tip)}</title></path>'
            )
    step = max(1, math.ceil(n / 12))
    for i in range(0, len(tensors), step):
        x = left + (i + 0.5) * bw
        parts.append(f'<text x="{x:.1f}" y="{base + 14}" text-anchor="middle">{i}</text>')
    parts.append(
        f'<text x="{left + pw / 2:.0f}" y="{height - 6}" text-anchor="middle">'
        "tensor index in model order (hover a bar for its key)</text>"
    )
    parts.append(
        f'<text transform="translate(14 {top + ph / 2:.0f}) rotate(-90)" text-anchor="middle">'
        "||B-A|| / ||A||</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _legend() -> str:
    items = "".join(
        f'<span><i style="background:{c}"></i>{_e(LEGEND.get(k, k))}</span>' for k, c in COLORS.items()
    )
    return f'<div class="legend">{items}</div>'


def _tensor_rows(tensors: list[TensorChange]) -> str:
    rows = []
    for t in tensors:
        frac = t.fraction_different
        key = _e(t.key) + (f" &rarr; {_e(t.key_b)}" if t.key_b else "")
        what = f"{t.dtype or t.dtype_b} {fmt_shape(t.shape if t.shape is not None else t.shape_b)}"
        if t.dtype is not None and t.dtype_b is not None and t.dtype != t.dtype_b:
            what = f"{t.dtype} &rarr; {t.dtype_b}"
        elif t.shape is not None and t.shape_b is not None and t.shape != t.shape_b:
            what = f"{fmt_shape(t.shape)} &rarr; {fmt_shape(t.shape_b)}"
        cells = [
            f'<td class="s" style="color:{COLORS.get(change_label(t), "#333")}">{_e(change_label(t))}</td>',
            f'<td class="k" title="{key}">{key}</td>',
            f'<td class="k">{what}</td>',
            f"<td>{'-' if frac is None else f'{frac * 100:.3g}%'}</td>",
            f"<td>{'-' if t.first_diff_index is None else t.first_diff_index}</td>",
            f"<td>{fmt_num(t.max_abs_diff)}</td>",
            f"<td>{fmt_num(t.max_rel_diff)}</td>",
            f"<td>{fmt_num(t.mean_abs_diff)}</td>",
            f"<td>{fmt_num(t.rms_diff)}</td>",
            f"<td>{fmt_num(t.rel_change)}</td>",
            f"<td>{'-' if t.max_ulp is None or not t.n_different else t.max_ulp}</td>",
            f"<td>{'-' if t.nan_inf_introduced is None else f'+{t.nan_inf_introduced}/-{t.nan_inf_removed}'}</td>",
        ]
        rows.append(f'<tr data-status="{_e(t.status)}">' + "".join(cells) + "</tr>")
    return "".join(rows)


_TENSOR_HEAD = (
    '<tr><th class="k">status</th><th class="k">key</th><th class="k">dtype / shape</th><th>differing</th>'
    "<th>first diff</th><th>max |B-A|</th><th>max rel</th><th>mean |B-A|</th><th>RMS</th>"
    "<th>||B-A||/||A||</th><th>max ULP</th><th>NaN/Inf +/-</th></tr>"
)


def render_html(r: DiffReport) -> str:
    s = r.summary()
    if r.identical:
        verdict, cls = "identical", "v-identical"
    elif r.ok:
        verdict, cls = "within tolerance", "v-tolerance"
    else:
        verdict, cls = "different", "v-different"
    changes = r.sorted_changes()
    summary_cells = "".join(f"<tr><td>{_e(k.replace('_', ' '))}</td><td>{v}</td></tr>" for k, v in s.items())
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>fastckpt diff: {_e(short(r.a, 50))} vs {_e(short(r.b, 50))}</title>",
        f"<style>{CSS}</style></head><body>",
        f'<h1>fastckpt diff <span id="verdict" class="verdict {cls}">{verdict}</span></h1>',
        '<table class="meta" id="inputs">',
        f"<tr><th>A</th><td>{_e(r.a)}</td><td>{_e(r.format_a)}</td></tr>",
        f"<tr><th>B</th><td>{_e(r.b)}</td><td>{_e(r.format_b)}</td></tr>",
        f"<tr><th>tolerance</th><td>atol={_e(r.atol)}, rtol={_e(r.rtol)}</td><td></td></tr>",
        f"<tr><th>read</th><td>{r.bytes_read} bytes in {r.seconds:.3f} s</td><td></td></tr>",
        "</table>",
        "<h2>Relative change per tensor (model order)</h2>",
        chart_svg(r.tensors),
        _legend(),
        '<h2>Summary</h2><table class="meta" id="summary">' + summary_cells + "</table>",
        f"<h2>Changed tensors ({len(changes)}), largest relative change first</h2>",
        f'<table id="changes">{_TENSOR_HEAD}{_tensor_rows(changes)}</table>',
    ]
    if r.rename_counts or r.ambiguous:
        rows = "".join(f'<tr><td class="k">{_e(rule)}</td><td>{n}</td></tr>' for rule, n in r.rename_counts)
        rows += "".join(
            f'<tr><td class="k">ambiguous: {_e(", ".join(ka))} &harr; {_e(", ".join(kb))}</td><td>-</td></tr>'
            for ka, kb in r.ambiguous
        )
        out.append(
            f'<h2>Renames (A &rarr; B)</h2><table id="renames"><tr><th class="k">rule</th><th>keys</th></tr>{rows}</table>'
        )
    if r.mapping:
        rows = "".join(
            f'<tr><td class="k">{_e(kb)}</td><td class="k">{_e(ka)}</td></tr>' for kb, ka in r.mapping.items()
        )
        out.append(
            '<h2>Mapping that loads B into A\'s model</h2><table id="mapping">'
            f'<tr><th class="k">key in B</th><th class="k">key in A</th></tr>{rows}</table>'
        )
    if r.values:
        rows = "".join(
            f'<tr data-status="{_e(v.status)}"><td class="s">{_e(v.status)}</td><td class="k">{_e(v.key)}</td>'
            f'<td class="k">{_e(short(v.a, 80)) if v.status != "only_b" else "-"}</td>'
            f'<td class="k">{_e(short(v.b, 80)) if v.status != "only_a" else "-"}</td></tr>'
            for v in r.values
        )
        out.append(
            '<h2>Non-tensor values</h2><table id="values"><tr><th class="k">status</th><th class="k">key</th>'
            f'<th class="k">A</th><th class="k">B</th></tr>{rows}</table>'
        )
    if r.warnings:
        out.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w)}</li>" for w in r.warnings) + "</ul>")
    out.append(f"<h2>All tensors ({len(r.tensors)}), model order</h2>")
    out.append(f'<table id="tensors">{_TENSOR_HEAD}{_tensor_rows(r.tensors)}</table>')
    out.append("</body></html>\n")
    return "\n".join(out)


def write_html(r: DiffReport, path: str) -> None:
    """Writes the report atomically (temp file in the same folder, fsync, rename)."""
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastckpt-diff-", suffix=".html.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render_html(r))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
