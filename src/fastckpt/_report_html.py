"""The self-contained HTML page of `fastckpt report --html`: inline CSS and inline SVG charts drawn
here (no script, no external resource), from the report's JSON object.

Every string that comes from a checkpoint (paths, tensor keys, dtypes) is escaped, so a hostile key
such as `<script>` renders as text. Each chart carries an id (`chart-sizes`, `chart-heatmap`,
`chart-change`, `chart-dedup`, `chart-compression`, `chart-interval`) that the browser tests look for.
"""

from __future__ import annotations

import html
import math
from typing import Any

WIDTH = 880


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000.0
    return f"{n:.2f} PB"  # pragma: no cover


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


# A perceptually ordered palette (dark blue -> green -> yellow), interpolated in RGB.
_PALETTE = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def _color(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(_PALETTE) - 1)
    i = min(int(t), len(_PALETTE) - 2)
    f = t - i
    c = [round(a + (b - a) * f) for a, b in zip(_PALETTE[i], _PALETTE[i + 1], strict=True)]
    return f"rgb({c[0]},{c[1]},{c[2]})"


def _svg(chart_id: str, width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, s: str, *, anchor: str = "start", size: int = 11, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{c}>{_e(s)}</text>'


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------


def chart_sizes(r: dict[str, Any]) -> str:
    """Bars per checkpoint: bytes new to the run (dark) and bytes already stored by an earlier one."""
    ck = r["checkpoints"]
    per = {p["index"]: p for p in r["dedup"]["per_checkpoint"]}
    h, left, bottom, top = 260, 70, 50, 20
    plot_w, plot_h = WIDTH - left - 20, h - bottom - top
    ymax = _nice_max(max((c["size"] for c in ck), default=1))
    body = [f'<rect x="0" y="0" width="{WIDTH}" height="{h}" fill="white"/>']
    for i in range(5):
        v = ymax * i / 4
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" x2="{WIDTH - 20}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        body.append(_text(left - 6, y + 4, human_bytes(v), anchor="end", size=10))
    n = max(len(ck), 1)
    slot = plot_w / n
    bw = max(min(slot * 0.7, 60), 2)
    for i, c in enumerate(ck):
        x = left + slot * i + (slot - bw) / 2
        new = min(per.get(i, {}).get("new_bytes", c["size"]), c["size"])
        old = c["size"] - new
        h_old = plot_h * old / ymax
        h_new = plot_h * new / ymax
        y0 = top + plot_h
        label = c["step"] if c["step"] is not None else c["name"]
        tip = f"{c['name']}: {human_bytes(c['size'])}, new {human_bytes(new)}, already stored {human_bytes(old)}"
        body.append(
            f'<rect class="bar-old" x="{x:.1f}" y="{y0 - h_old:.1f}" width="{bw:.1f}" height="{h_old:.1f}">'
            f"<title>{_e(tip)}</title></rect>"
        )
        body.append(
            f'<rect class="bar-new" x="{x:.1f}" y="{y0 - h_old - h_new:.1f}" width="{bw:.1f}" height="{h_new:.1f}">'
            f"<title>{_e(tip)}</title></rect>"
        )
        if n <= 40 or i % math.ceil(n / 40) == 0:
            body.append(_text(x + bw / 2, y0 + 14, str(label), anchor="middle", size=10))
    body.append(_text(left + plot_w / 2, h - 12, "checkpoint (step)", anchor="middle"))
    body.append(f'<rect x="{left}" y="{h - 26}" width="10" height="10" class="bar-new"/>')
    body.append(_text(left + 14, h - 17, "new bytes", size=10))
    body.append(f'<rect x="{left + 90}" y="{h - 26}" width="10" height="10" class="bar-old"/>')
    body.append(_text(left + 104, h - 17, "leaves already in an earlier checkpoint", size=10))
    return _svg("chart-sizes", WIDTH, h, body, "size per checkpoint")


def chart_heatmap(r: dict[str, Any]) -> str:
    """Relative change per layer (rows) and consecutive pair (columns), on a log colour scale."""
    hm = r["change"]["heatmap"]
    pairs = r["change"]["pairs"]
    labels, values = hm["labels"], hm["values"]
    if not labels or not pairs:
        return '<p class="note">No consecutive checkpoints with comparable tensors.</p>'
    finite = [v for row in values for v in row if v is not None and v > 0]
    lo = math.log10(min(finite)) if finite else -6.0
    hi = math.log10(max(finite)) if finite else 0.0
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    label_w = min(max(len(s) for s in labels) * 6.2 + 10, 330)
    cols = len(pairs)
    cell_w = max(min((WIDTH - label_w - 90) / cols, 60), 4)
    cell_h = 14 if len(labels) <= 60 else 9
    top, legend_w = 30, 70
    w = int(label_w + cell_w * cols + legend_w + 20)
    h = int(top + cell_h * len(labels) + 50)
    body = [f'<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>']
    step_cols = max(1, math.ceil(cols / 20))
    for j, p in enumerate(pairs):
        if j % step_cols == 0:
            name = (
                f"{p['from_step']}→{p['to_step']}" if p["to_step"] is not None else f"{p['from']}→{p['to']}"
            )
            body.append(_text(label_w + cell_w * (j + 0.5), top - 8, name, anchor="middle", size=9))
    for i, lab in enumerate(labels):
        y = top + cell_h * i
        if cell_h >= 9:
            body.append(
                _text(
                    label_w - 6,
                    y + cell_h - 3,
                    lab if len(lab) <= 52 else "…" + lab[-51:],
                    anchor="end",
                    size=min(cell_h - 3, 11),
                )
            )
        for j, v in enumerate(values[i]):
            x = label_w + cell_w * j
            if v is None:
                fill, txt = "#e6e6e6", "no comparison"
            elif v == 0:
                fill, txt = "#ffffff", "unchanged (0)"
            else:
                fill, txt = _color((math.log10(v) - lo) / (hi - lo)), f"{v:.3g}"
            tip = f"{lab}, pair {j}: {txt}"
            body.append(
                f'<rect class="cell" x="{x:.1f}" y="{y:.1f}" width="{cell_w:.1f}" height="{cell_h}" fill="{fill}">'
                f"<title>{_e(tip)}</title></rect>"
            )
    # Legend: a vertical gradient made of small rects (no gradient defs needed).
    lx = label_w + cell_w * cols + 16
    lh = min(cell_h * len(labels), 200)
    for k in range(40):
        t = 1 - k / 39
        body.append(
            f'<rect x="{lx:.1f}" y="{top + lh * k / 40:.1f}" width="12" height="{lh / 40 + 0.5:.1f}" fill="{_color(t)}"/>'
        )
    body.append(_text(lx + 16, top + 8, f"{10**hi:.2g}", size=9))
    body.append(_text(lx + 16, top + lh, f"{10**lo:.2g}", size=9))
    body.append(_text(lx, top + lh + 14, "white = 0", size=9))
    body.append(
        _text(
            label_w,
            h - 14,
            f"||B-A|| / ||A|| per {hm['grouping']} between consecutive checkpoints (log colour scale)",
            size=11,
        )
    )
    return _svg("chart-heatmap", w, h, body, "relative change heatmap")


def chart_change(r: dict[str, Any]) -> str:
    """Overall relative change per consecutive pair, on a log axis."""
    pairs = [p for p in r["change"]["pairs"] if p["relative_change"]]
    if not pairs:
        return '<p class="note">No change to plot (fewer than two checkpoints, or nothing changed).</p>'
    h, left, bottom, top = 220, 70, 40, 20
    plot_w, plot_h = WIDTH - left - 20, h - bottom - top
    vals = [p["relative_change"] for p in pairs]
    lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
    if hi == lo:
        hi += 1
    body = [f'<rect x="0" y="0" width="{WIDTH}" height="{h}" fill="white"/>']
    for e in range(lo, hi + 1):
        y = top + plot_h - plot_h * (e - lo) / (hi - lo)
        body.append(f'<line x1="{left}" x2="{WIDTH - 20}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        body.append(_text(left - 6, y + 4, f"1e{e}", anchor="end", size=10))
    n = len(pairs)
    pts = []
    for i, p in enumerate(pairs):
        x = left + (plot_w * (i + 0.5) / n)
        y = top + plot_h - plot_h * (math.log10(p["relative_change"]) - lo) / (hi - lo)
        pts.append((x, y, p))
    body.append(
        '<polyline class="line" fill="none" points="'
        + " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts)
        + '"/>'
    )
    for x, y, p in pts:
        tip = f"{p['from_step']}→{p['to_step']}: {p['relative_change']:.3g}"
        body.append(
            f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="3.5"><title>{_e(tip)}</title></circle>'
        )
    body.append(
        _text(
            left + plot_w / 2,
            h - 10,
            "consecutive pair; overall ||B-A|| / ||A|| (log scale)",
            anchor="middle",
        )
    )
    return _svg("chart-change", WIDTH, h, body, "overall relative change")


def chart_dedup(r: dict[str, Any], top_n: int = 20) -> str:
    """Tensors with the most bytes shared across checkpoints."""
    rows = sorted((t for t in r["dedup"]["tensors"] if t["bytes"]), key=lambda t: -t["shared_bytes"])[:top_n]
    rows = [t for t in rows if t["shared_bytes"] > 0]
    if not rows:
        return '<p class="note">No tensor bytes are shared across checkpoints.</p>'
    label_w = min(max(len(t["key"]) for t in rows) * 6.2 + 10, 360)
    bar_h, top = 16, 10
    h = top + bar_h * len(rows) + 30
    plot_w = WIDTH - label_w - 160
    xmax = max(t["bytes"] for t in rows)
    body = [f'<rect x="0" y="0" width="{WIDTH}" height="{h}" fill="white"/>']
    for i, t in enumerate(rows):
        y = top + bar_h * i
        key = t["key"] if len(t["key"]) <= 58 else "…" + t["key"][-57:]
        body.append(_text(label_w - 6, y + bar_h - 4, key, anchor="end", size=10))
        w_all = plot_w * t["bytes"] / xmax
        w_sh = plot_w * t["shared_bytes"] / xmax
        tip = f"{t['key']}: {human_bytes(t['shared_bytes'])} of {human_bytes(t['bytes'])} shared ({t['shared_fraction'] * 100:.1f}%)"
        body.append(
            f'<rect class="bar-all" x="{label_w}" y="{y + 2}" width="{w_all:.1f}" height="{bar_h - 4}"><title>{_e(tip)}</title></rect>'
        )
        body.append(
            f'<rect class="bar-shared" x="{label_w}" y="{y + 2}" width="{w_sh:.1f}" height="{bar_h - 4}"><title>{_e(tip)}</title></rect>'
        )
        body.append(
            _text(
                label_w + w_all + 6,
                y + bar_h - 4,
                f"{t['shared_fraction'] * 100:.0f}% of {human_bytes(t['bytes'])}",
                size=10,
            )
        )
    body.append(
        _text(
            label_w,
            h - 8,
            "bytes of the tensor over all checkpoints; dark = in leaves shared with another checkpoint",
            size=10,
        )
    )
    return _svg("chart-dedup", WIDTH, h, body, "dedup per tensor")


def chart_compression(r: dict[str, Any]) -> str:
    rows = r["compression"]["dtypes"]
    if not rows:
        return '<p class="note">Nothing sampled.</p>'
    bar_h, top, label_w = 22, 10, 130
    h = top + bar_h * len(rows) + 30
    plot_w = WIDTH - label_w - 200
    xmax = max(max(x["ratio"], x["ratio_byte_grouped"] or 0) for x in rows)
    xmax = max(xmax, 1.0)
    body = [f'<rect x="0" y="0" width="{WIDTH}" height="{h}" fill="white"/>']
    for i, x in enumerate(rows):
        y = top + bar_h * i
        body.append(_text(label_w - 6, y + bar_h - 7, x["dtype"], anchor="end"))
        w1 = plot_w * x["ratio"] / xmax
        w2 = plot_w * (x["ratio_byte_grouped"] or 0) / xmax
        body.append(
            f'<rect class="bar-new" x="{label_w}" y="{y + 3}" width="{w1:.1f}" height="{(bar_h - 6) / 2:.1f}"><title>{_e(x["dtype"])}: {x["ratio"]:.3f}x</title></rect>'
        )
        if x["ratio_byte_grouped"]:
            body.append(
                f'<rect class="bar-old" x="{label_w}" y="{y + 3 + (bar_h - 6) / 2:.1f}" width="{w2:.1f}" height="{(bar_h - 6) / 2:.1f}">'
                f"<title>{_e(x['dtype'])} byte-grouped: {x['ratio_byte_grouped']:.3f}x</title></rect>"
            )
        extra = f" / {x['ratio_byte_grouped']:.2f}x grouped" if x["ratio_byte_grouped"] else ""
        body.append(
            _text(
                label_w + max(w1, w2) + 6,
                y + bar_h - 7,
                f"{x['ratio']:.2f}x{extra} ({human_bytes(x['bytes'])})",
                size=10,
            )
        )
    body.append(
        _text(
            label_w,
            h - 8,
            f"compression ratio with {r['compression']['compressor']} (upper: plain, lower: bytes of each element position grouped)",
            size=10,
        )
    )
    return _svg("chart-compression", WIDTH, h, body, "compressibility per dtype")


def chart_interval(r: dict[str, Any]) -> str:
    """Expected waste (save time + lost work) against the checkpoint interval, log x axis."""
    from .report import waste_fraction

    iv = r["interval"]
    c, m, rec = iv["save_seconds"], iv["mtbf_seconds"], iv["recommended_seconds"]
    xs_lo = math.log10(max(min(rec / 30, c), 1e-3))
    xs_hi = math.log10(max(rec * 30, m / 2))
    h, left, bottom, top = 240, 60, 40, 20
    plot_w, plot_h = WIDTH - left - 20, h - bottom - top
    pts = []
    for k in range(121):
        lx = xs_lo + (xs_hi - xs_lo) * k / 120
        pts.append((lx, waste_fraction(10**lx, c, m)))
    ymax = min(1.0, _nice_max(max(w for _, w in pts)))

    def xy(lx: float, w: float) -> tuple[float, float]:
        return left + plot_w * (lx - xs_lo) / (xs_hi - xs_lo), top + plot_h - plot_h * min(w, ymax) / ymax

    body = [f'<rect x="0" y="0" width="{WIDTH}" height="{h}" fill="white"/>']
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" x2="{WIDTH - 20}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        body.append(_text(left - 6, y + 4, f"{ymax * i / 4 * 100:.0f}%", anchor="end", size=10))
    for e in range(math.ceil(xs_lo), math.floor(xs_hi) + 1):
        x, _ = xy(e, 0)
        body.append(_text(x, top + plot_h + 14, human_seconds(10**e), anchor="middle", size=10))
    body.append(
        '<polyline class="line" fill="none" points="'
        + " ".join("{:.1f},{:.1f}".format(*xy(a, b)) for a, b in pts)
        + '"/>'
    )
    marks = [("recommended", rec, "mark-rec")]
    if iv.get("observed_seconds"):
        marks.append(("observed", max(iv["observed_seconds"] - c, 1e-9), "mark-obs"))
    for name, tau, cls in marks:
        lx = math.log10(tau)
        if xs_lo <= lx <= xs_hi:
            x, y = xy(lx, waste_fraction(tau, c, m))
            body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" class="{cls}"/>')
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" class="{cls}"><title>{_e(name)}: every {_e(human_seconds(tau))}</title></circle>'
            )
            body.append(
                _text(
                    x + 5,
                    top + 12 if cls == "mark-rec" else top + 26,
                    f"{name}: {human_seconds(tau)}",
                    size=10,
                    cls=cls,
                )
            )
    body.append(
        _text(
            left + plot_w / 2,
            h - 8,
            "compute time between checkpoints (log); expected fraction of time wasted",
            anchor="middle",
        )
    )
    return _svg("chart-interval", WIDTH, h, body, "checkpoint interval trade-off")


# ---------------------------------------------------------------------------------------------
# Page
# ---------------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:960px;color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
th{background:#f6f6f6} td.l,th.l{text-align:left} .note{color:#666;font-size:13px}
.kpi{display:inline-block;margin:6px 18px 6px 0} .kpi b{display:block;font-size:20px}
svg.chart{display:block;margin:8px 0;font-family:inherit} .grid{stroke:#e4e4e4;stroke-width:1}
.bar-new{fill:#3b528b} .bar-old{fill:#9ecae1} .bar-all{fill:#d9d9d9} .bar-shared{fill:#21918c}
.line{stroke:#3b528b;stroke-width:2} .dot{fill:#3b528b} .mark-rec{stroke:#2ca02c;fill:#2ca02c}
.mark-obs{stroke:#d62728;fill:#d62728} text.mark-rec,text.mark-obs{stroke:none}
.warn{color:#8a4b00;font-size:12px}
"""


def _table(head: list[str], rows: list[list[str]], left_cols: int = 1) -> str:
    def cls(i: int) -> str:
        return ' class="l"' if i < left_cols else ""

    out = ["<table><tr>" + "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(head)) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td{cls(i)}>{_e(c)}</td>" for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def render_html(r: dict[str, Any]) -> str:
    """The report page for a report object from `fastckpt.report.build_report`."""
    ck = r["checkpoints"]
    dd = r["dedup"]
    iv = r["interval"]
    cost = r["cost"]
    per = {p["index"]: p for p in dd["per_checkpoint"]}
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>fastckpt report: {_e(r['run'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Checkpoint report</h1><p class=note>{_e(r['run'])} · {len(ck)} checkpoint(s) · report format v{r['report_version']}</p>",
        '<div id="summary">',
        f"<span class=kpi>total size<b>{_e(human_bytes(r['size']['total_bytes']))}</b></span>",
        f"<span class=kpi>shared across checkpoints<b>{dd['shared_fraction'] * 100:.1f}%</b></span>",
        f"<span class=kpi>after dedup<b>{_e(human_bytes(dd['unique_bytes']))}</b></span>",
        f"<span class=kpi>recommended interval<b>{_e(human_seconds(iv['recommended_seconds']))}</b></span>",
        f"<span class=kpi>storage per month<b>${cost['monthly_usd']:.2f}</b></span>",
        "</div>",
        "<h2>Size per checkpoint</h2>",
        chart_sizes(r),
    ]
    g = r["size"]["growth"]
    parts.append(
        f"<p class=note>Growth: {_e(human_bytes(g['bytes_per_checkpoint']))} per checkpoint"
        + (f" ({g['relative'] * 100:+.2f}% first to last)" if g["relative"] is not None else "")
        + (
            f"; keeping every checkpoint adds {_e(human_bytes(g['run_bytes_per_day']))} per day"
            if g["run_bytes_per_day"]
            else ""
        )
        + ".</p>"
    )
    rows = []
    for c in ck:
        p = per.get(c["index"], {})
        rows.append(
            [
                c["name"],
                "-" if c["step"] is None else str(c["step"]),
                c["kind"],
                human_bytes(c["size"]),
                human_bytes(p.get("new_bytes")),
                human_bytes(p.get("shared_with_previous_bytes")),
                str(c["tensors"]),
                c["digests"] or "-",
            ]
        )
    parts.append(
        _table(
            ["checkpoint", "step", "kind", "size", "new bytes", "shared with previous", "tensors", "digests"],
            rows,
        )
    )
    parts += [
        "<h2>Change between consecutive checkpoints</h2>",
        chart_heatmap(r),
        chart_change(r),
        "<h2>Dedup potential</h2>",
        f"<p class=note>{dd['shared_fraction'] * 100:.1f}% of leaf bytes ({_e(human_bytes(dd['shared_bytes']))}) also appear in "
        f"another checkpoint of the run ({dd['leaf_size'] // 1024} KiB leaves). A leaf-deduplicating store would hold "
        f"{_e(human_bytes(dd['unique_bytes']))} ({dd['dedup_ratio']:.2f}x smaller).</p>",
        chart_dedup(r),
        "<h2>Compressibility</h2>",
        chart_compression(r),
        f"<p class=note>Estimated compressed size of the run: {_e(human_bytes(r['compression']['estimated_compressed_bytes']))} "
        f"({r['compression']['estimated_ratio']:.2f}x), from samples of up to {r['compression']['sample_bytes_per_dtype'] // 1024} KiB per dtype.</p>",
        "<h2>Checkpoint interval</h2>",
        chart_interval(r),
    ]
    irows = [
        ["save time C", f"{human_seconds(iv['save_seconds'])} ({iv['save_seconds_source']})"],
        ["MTBF M", f"{human_seconds(iv['mtbf_seconds'])} ({iv['mtbf_source']})"],
        ["Young sqrt(2CM)", human_seconds(iv["young_seconds"])],
        ["recommended (Daly)", human_seconds(iv["recommended_seconds"])],
        ["expected work lost per failure", human_seconds(iv["expected_lost_seconds_per_failure"])],
        ["expected waste at the recommended interval", f"{iv['expected_waste_fraction'] * 100:.2f}%"],
    ]
    if iv.get("observed_seconds"):
        irows += [
            ["observed interval (median)", human_seconds(iv["observed_seconds"])],
            [
                "expected work lost per failure (observed)",
                human_seconds(iv["observed_lost_seconds_per_failure"]),
            ],
            ["expected waste (observed)", f"{iv['observed_waste_fraction'] * 100:.2f}%"],
        ]
    if iv.get("recommended_steps"):
        irows.append(["recommended interval in steps", str(iv["recommended_steps"])])
    parts.append(_table(["", ""], irows))
    parts += [
        "<h2>Storage cost per month</h2>",
        _table(
            ["", "USD / month"],
            [
                ["as stored", f"{cost['monthly_usd']:.2f}"],
                ["leaf-deduplicated", f"{cost['monthly_usd_deduplicated']:.2f}"],
                ["compressed (estimate)", _fmt(cost["monthly_usd_compressed_estimate"])],
                ["one checkpoint (latest)", f"{cost['monthly_usd_per_checkpoint']:.4f}"],
            ],
        ),
        f"<p class=note>At ${cost['price_usd_per_gb_month']} per GB-month (GB = 2^30 bytes).</p>",
    ]
    if r.get("warnings"):
        parts.append("<h2>Warnings</h2>" + "".join(f"<p class=warn>{_e(w)}</p>" for w in r["warnings"][:50]))
    parts.append("<p class=note>Generated by fastckpt report.</p></body></html>")
    return "\n".join(parts)
