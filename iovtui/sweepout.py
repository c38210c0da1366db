"""`iovtui sweep`'s outputs: the table, CSV, JSON and markdown of a sweep's
rows (``sim.sweep.run_sweep``), the progress bar on stderr, and the chart as
an SVG picture (pygal, imported only for ``--svg``).

Not the model: every figure comes from the rows; this module only lays them
out.  It never imports ``cli`` (``cli.cmd_sweep`` validates the arguments
and calls in here).
"""

from __future__ import annotations

import io
import json
import math
import sys
import xml.etree.ElementTree as ET
from typing import Any, Sequence, TextIO

from .csvout import spread_csv
from .sim.sweep import MEASURES, TECH_LABELS, chart_series, rate_label

__all__ = ["render", "Progress", "svg_text", "CSV_COLUMNS"]

CSV_COLUMNS = ("technique", "rate_pps", "offered_pps", "offered", "delivered", "dropped", "delivered_ratio",
               "exits_per_packet", "irq_per_packet", "host_irq_per_packet", "kicks_per_packet",
               "copies_per_packet", "cpu_ns_per_packet", "p50_ns", "p99_ns", "throughput_gbps")
TABLE_HEADS = ("technique", "rate", "offered pps", "delivered", "exits/pkt", "top exits/pkt", "irq/pkt",
               "kicks/pkt", "copies", "CPU µs/pkt", "p50/p99 µs", "drops")


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    return "–" if v is None else fmt.format(v)


def _top(r: dict[str, Any], n: int = 2) -> str:
    top = sorted(((k, v) for k, v in r["exits_by_reason_per_packet"].items() if v), key=lambda kv: -kv[1])[:n]
    return " ".join(f"{k}:{v:.3g}" for k, v in top) or "–"


def _drops(r: dict[str, Any]) -> str:
    return f"{r['dropped']:,}" if r["dropped"] else "–"


def _drop_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The drops by reason, one line per point that dropped (the reasons are
    too long for a column)."""
    return [f"  {r['technique']} at {rate_label(r['rate_pps'])} pps: "
            + "; ".join(f"{k}: {v:,}" for k, v in r["drops_by_reason"].items())
            for r in rows if r["drops_by_reason"]]


def _cells(r: dict[str, Any]) -> tuple[str, ...]:
    cpu = r["cpu_ns_per_packet"]
    lat = ("–" if r["p50_ns"] is None else f"{r['p50_ns'] / 1000:,.2f}/{r['p99_ns'] / 1000:,.2f}")
    off = "–" if r["offered_pps"] is None else f"{r['offered_pps']:,.0f}"
    dr = "–" if r["delivered_ratio"] is None else f"{100 * r['delivered_ratio']:.1f} %"
    return (r["technique"], rate_label(r["rate_pps"]), off, dr, _num(r["exits_per_packet"]), _top(r),
            _num(r["irq_per_packet"]), _num(r["kicks_per_packet"]), _num(r["copies_per_packet"], "{:g}"),
            "–" if cpu is None else f"{cpu / 1000:,.2f}", lat, _drops(r))


def render(rows: Sequence[dict[str, Any]], fmt: str, meta: dict[str, Any]) -> str:
    """The sweep as ``fmt`` (table | csv | json | markdown); ``meta``: preset,
    seed, packets, techniques, rates_pps, load (how the rate applies), overrides."""
    if fmt == "json":
        return json.dumps({**meta, "points": list(rows)}, indent=2) + "\n"
    if fmt == "csv":
        # every exit reason and drop reason any point saw is a column of its own (0 where none)
        return spread_csv(rows, CSV_COLUMNS, [("exits_by_reason_per_packet", "exits_", "_per_packet"),
                                              ("drops_by_reason", "drops_", "")])
    title = f"{meta['preset']} · seed {meta['seed']} · {meta['packets']:,} packets per point"
    if fmt == "markdown":
        out = [f"**sweep: {title}**", "", f"_{meta['load']}_", "",
               "| " + " | ".join(TABLE_HEADS) + " |",
               "|" + "|".join(" --- " if i in (0, 5, 11) else " ---: " for i in range(len(TABLE_HEADS))) + "|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
        drops = _drop_lines(rows)
        if drops:
            out += ["", "drops by reason:", ""] + [f"- {d.strip()}" for d in drops]
        return "\n".join(out) + "\n"
    from rich import box
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    t = Table(title="sweep: " + title, title_justify="left", pad_edge=False, box=box.SIMPLE_HEAD,
              padding=(0, 1), collapse_padding=True)
    for i, h in enumerate(TABLE_HEADS):
        t.add_column(h, justify="left" if i in (0, 5, 11) else "right", no_wrap=True)
    for i, r in enumerate(rows):
        if i and r["technique"] != rows[i - 1]["technique"]:
            t.add_section()
        t.add_row(*_cells(r))
    buf = io.StringIO()
    con = Console(file=buf, width=1000, no_color=True, highlight=False)
    need = Measurement.get(con, con.options, t).maximum
    con = Console(file=buf, width=max(need, 60), highlight=False, color_system=None)
    t.title = None                      # printed above instead: a long title would widen the table
    con.print("sweep: " + title, highlight=False, soft_wrap=True)
    con.print(t)
    drops = _drop_lines(rows)
    if drops:
        con.print("drops by reason:\n" + "\n".join(drops), highlight=False, soft_wrap=True)
    con.print(f"load: {meta['load']}", highlight=False, soft_wrap=True)
    return buf.getvalue()


class Progress:
    """A progress bar on stderr, redrawn in place, only when stderr is a
    terminal (stdout stays clean for csv and json either way)."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        try:
            self.on = self.stream.isatty()
        except (AttributeError, ValueError):
            self.on = False
        self.shown = False

    def __call__(self, done: int, total: int, _row: Any = None) -> None:
        if not self.on:
            return
        fill = round(self.WIDTH * done / total) if total else self.WIDTH
        self.stream.write(f"\rsweep ▕{'█' * fill}{'░' * (self.WIDTH - fill)}▏ {done:,}/{total:,} points")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False


# -- the SVG chart -----------------------------------------------------------------
#: one per technique: colour (Okabe–Ito), dash pattern, marker shape and size (the first drawn
#: largest, so where the curves meet each marker still shows around the next)
SVG_LOOK = {"emulation": ("#D55E00", "8,4", "circle", 8.0),
            "virtio": ("#0072B2", "2,3", "square", 5.5),
            "sriov": ("#009E73", "", "triangle", 4.0)}
SVG_NS = "http://www.w3.org/2000/svg"


def svg_text(rows: Sequence[dict[str, Any]], measure: str, preset: str, operating_pps: float | None,
             seed: int) -> str:
    """The chart (log-scale offered load on x, ``measure`` on y, one line per
    technique with its own marker and dash, a legend, a title) as SVG."""
    import pygal
    from pygal.style import Style

    series = chart_series(rows, measure)
    techs = [t for t in SVG_LOOK if t in series] + [t for t in series if t not in SVG_LOOK]
    xs = [x for pts in series.values() for x, _ in pts] + ([operating_pps] if operating_pps else [])
    lo = math.floor(math.log10(min(xs))) if xs else 2
    hi = math.ceil(math.log10(max(xs))) if xs else 6
    style = Style(colors=tuple(SVG_LOOK.get(t, ("#444444",))[0] for t in techs) + ("#666666",),
                  guide_stroke_color="#cccccc", major_guide_stroke_color="#999999",
                  background="white", plot_background="white", font_family="DejaVu Sans, Arial, sans-serif",
                  title_font_size=18, label_font_size=13, major_label_font_size=13, legend_font_size=14)
    label, _key, _scale = MEASURES[measure]
    # x is log10(offered packets/s) on a linear axis, labelled as rates: a log
    # scale on x only (pygal's logarithmic would make y logarithmic too, and a
    # figure of 0 cannot sit on a log axis)
    chart = pygal.XY(style=style, width=960, height=600, js=[], show_dots=True, dots_size=5,
                     title=f"{preset}: {label} against offered load (seed {seed})",
                     x_title="offered load (packets/s, log scale)", y_title=label,
                     x_labels=list(range(lo, hi + 1)), x_labels_major_every=1,
                     x_value_formatter=lambda v: rate_label(10 ** v) + " pps",
                     value_formatter=lambda v: f"{v:,.3g}", legend_at_bottom=True,
                     legend_at_bottom_columns=4, include_x_axis=True, xrange=(lo, hi), truncate_legend=-1,
                     print_values=False, stroke=True, allow_interruptions=False)
    for t in techs:
        _colour, dash, _shape, size = SVG_LOOK.get(t, ("", "", "circle", 5.0))
        chart.add(TECH_LABELS.get(t, t), [(math.log10(x), y) for x, y in series[t]], dots_size=size,
                  stroke_style={"width": 2.5, **({"dasharray": dash} if dash else {})})
    if operating_pps:
        top = max([y for pts in series.values() for _, y in pts] or [1.0])
        chart.add(f"this preset ({rate_label(operating_pps)} pps)",
                  [(math.log10(operating_pps), 0), (math.log10(operating_pps), top)],
                  show_dots=False, stroke_style={"width": 1.5, "dasharray": "1,4"})
    # the same sweep gives the same file: pygal names the chart with a random uuid
    text = chart.render(is_unicode=True).replace(chart.uuid, "iovtui-sweep")
    return _shape_markers(text, [SVG_LOOK.get(t, ("", "", "circle", 5.0))[2] for t in techs])


def _shape_markers(svg: str, shapes: list[str]) -> str:
    """pygal draws every series' dots as circles: give each series its own
    shape (its dots and its legend box), so the lines tell apart without colour."""
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")
    root = ET.fromstring(svg)
    q = f"{{{SVG_NS}}}"

    def shape(el: ET.Element, kind: str, cx: float, cy: float, r: float) -> None:
        attrs = {k: v for k, v in el.attrib.items() if k not in ("cx", "cy", "r", "x", "y", "width", "height")}
        el.clear()
        el.attrib.update(attrs)
        if kind == "square":
            el.tag = q + "rect"
            el.attrib.update(x=f"{cx - r:.2f}", y=f"{cy - r:.2f}", width=f"{2 * r:.2f}", height=f"{2 * r:.2f}")
        elif kind == "triangle":
            el.tag = q + "path"
            h = r * 1.25
            el.set("d", f"M{cx:.2f},{cy - h:.2f} L{cx + h:.2f},{cy + h * 0.8:.2f} L{cx - h:.2f},{cy + h * 0.8:.2f} Z")
        else:
            el.tag = q + "circle"
            el.attrib.update(cx=f"{cx:.2f}", cy=f"{cy:.2f}", r=f"{r:.2f}")

    for g in root.iter(q + "g"):
        cls = (g.get("class") or "").split()
        serie = next((c for c in cls if c.startswith("serie-")), None)
        if serie is None or "series" not in cls:
            continue
        i = int(serie.split("-")[1])
        if i >= len(shapes):
            continue
        for el in g.iter(q + "circle"):
            if "dot" in (el.get("class") or ""):
                shape(el, shapes[i], float(el.get("cx")), float(el.get("cy")), float(el.get("r")))
    # the legend: a small box per series (class "color-N"), made the series' shape
    for g in root.iter(q + "g"):
        if "legends" not in (g.get("class") or "").split():
            continue
        for i, leg in enumerate(g.findall(q + "g")):
            box = leg.find(q + "rect")
            if box is None or i >= len(shapes):
                continue
            x, y = float(box.get("x")), float(box.get("y"))
            w = float(box.get("width"))
            shape(box, shapes[i], x + w / 2, y + w / 2, w / 2)
    return '<?xml version="1.0" encoding="utf-8" standalone="no"?>\n' + ET.tostring(root, encoding="unicode")
