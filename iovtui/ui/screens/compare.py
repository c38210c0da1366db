"""The compare view (`c`): the three techniques on the same seeded traffic,
live, in three columns with their counters on the same rows.

A :class:`~iovtui.sim.compare.CompareDriver` runs the three simulations and
publishes frozen frames (≤ 30 a second); the screen keeps only the newest and
applies it from a 30 Hz timer that pauses itself while the run is paused and
nothing changed.  The grid is one line-API widget: every row of the three
columns is padded to the tallest cell so a counter sits on the same line in
each column, and only the lines that changed are repainted.

The layout degrades by levels until everything fits the height (nothing is
ever cut off at 80×24 or larger): blank separators go first, then the
counters merge into compact rows, then the stage list becomes a row of stage
marks with the current stage named under it, then fewer exit reasons.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Region
from textual.screen import Screen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Footer
from .base import SteadyResize

from ...sim.compare import CompareDriver, CompareFrame, CompareColumn
from ...sim.driver import DEFAULT_SPEED_INDEX, speed_label
from ...sim.preset import Preset
from ...sim.vmm import EXIT_REASONS, HOST_PROFILES, HostProfile
from ..panes.common import STAGE_MARKS, fmt_t
from ..panes.stats import HeaderBar
from .help import HelpScreen

__all__ = ["CompareScreen", "CompareGrid", "compare_header", "COMPARE_KEYS", "layout_grid"]

MAX_FPS = 30

#: a colour per technique, always next to its name (never colour alone)
TECH_STYLE = {"emulation": "#ff875f", "virtio": "#87d787", "sriov": "#5fafff"}
SEP = Style(color="grey42")
DIM = Style(color="grey62")
VALUE = Style(bold=True)
STAGE = Style(color="#87afd7")
LIT = Style(color="black", bgcolor="#ffd75f", bold=True)
MARK = Style(color="#ffd75f", bold=True)
TRACK = Style(color="grey30")
#: a long narration line of the model (for reserving the narration's height)
SAMPLE_NARRATION = ("frame #12345 reaches the host NIC; the host bridge forwards it by MAC "
                    "52:54:00:00:00:01 to vm0's tap (1 queued)")
#: layout levels, richest first; the first that fits the height is used
LEVELS = (
    {"blank": True, "stages": "list", "counters": "full", "narr_time": True, "reasons": 6},
    {"blank": True, "stages": "list", "counters": "full", "narr_time": True, "reasons": 3},
    {"blank": False, "stages": "list", "counters": "full", "narr_time": True, "reasons": 3},
    {"blank": False, "stages": "list", "counters": "compact", "narr_time": False, "reasons": 3},
    {"blank": False, "stages": "marks", "counters": "compact", "narr_time": False, "reasons": 3},
    {"blank": False, "stages": "marks", "counters": "compact", "narr_time": False, "reasons": 2},
    {"blank": False, "stages": "marks", "counters": "compact", "narr_time": False, "reasons": 1},
)
#: the widest a counter row gets (name and value stay close in a wide column)
COUNTER_WIDTH = 40
#: shorter words for a narrow column's label
SHORTER = (("posted interrupts", "posted irq"),)

COMPARE_KEYS = [
    ("space", "pause / run all three"),
    ("n", "step: advance all three to the earliest next event among them"),
    ("b", "step back (deterministic replay from the seed)"),
    ("+ / -", "faster / slower (×1 = 1 µs of virtual time per wall-clock ms)"),
    ("a", "host profile for all three: no APICv → APICv → APICv + VT-d posted interrupts (restarts them; "
          "the main view keeps its own)"),
    ("o", "the three techniques ⇄ virtio with the split ring beside virtio with the packed ring, same seed, "
          "with the distinct 64-byte lines of ring memory each writes per packet (iovtui compare --virtio-rings)"),
    ("escape / c", "back to the main view (it resumes as it was)"),
    ("?", "this help"),
    ("q", "quit"),
]

Line = list[Segment]


# -- cells --------------------------------------------------------------------------------
def _wrap(text: str, width: int, style: Style, indent: int = 0, first_width: int | None = None) -> list[Line]:
    """Word-wrap ``text`` into lines of at most ``width`` cells (a hanging
    ``indent``; ``first_width`` for a first line shortened by a prefix)."""
    width = max(4, width)
    if first_width is not None:
        lead = max(0, width - first_width)
        lines = textwrap.wrap(" " * lead + text, width=width, subsequent_indent=" " * indent,
                              break_long_words=True, break_on_hyphens=False, drop_whitespace=True)
        if lines and lead:
            lines[0] = lines[0][lead:] if lines[0].startswith(" " * lead) else lines[0].lstrip()
    else:
        lines = textwrap.wrap(text, width=width, subsequent_indent=" " * indent,
                              break_long_words=True, break_on_hyphens=False)
    return [[Segment(s, style)] for s in lines] or [[]]


def _flow(items: list[tuple[str, Style]], width: int, sep: str = " · ") -> list[Line]:
    """Items on as many lines as needed, breaking only between items (an
    item wider than the column wraps by itself)."""
    lines: list[Line] = [[]]
    used = 0
    for text, style in items:
        n = len(text)
        if used and used + len(sep) + n > width:
            lines.append([])
            used = 0
        if used:
            lines[-1].append(Segment(sep, SEP))
            used += len(sep)
        if n > width:
            parts = _wrap(text, width - used if used else width, style)
            lines[-1].extend(parts[0])
            for p in parts[1:]:
                lines.append(p)
            used = sum(s.cell_length for s in lines[-1])
            continue
        lines[-1].append(Segment(text, style))
        used += n
    return lines


def _pair(name: str, value: str, width: int, vstyle: Style = VALUE) -> list[Line]:
    """``name ........ value`` on one line, or the value right-aligned on
    the next line when both do not fit."""
    if not value:
        return [[Segment(name, DIM)]]
    if len(name) + 1 + len(value) <= width:
        return [[Segment(name, DIM), Segment(" " * (width - len(name) - len(value))), Segment(value, vstyle)]]
    out = _wrap(name, width, DIM)
    for v in _wrap(value, width, vstyle):
        pad = width - sum(s.cell_length for s in v)
        out.append([Segment(" " * pad)] + v)
    return out


def _count(n: int) -> str:
    if n < 10_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1e6:.2f}M"


def _us(ns: int) -> str:
    us = ns / 1000
    return f"{us:.2f}" if us < 100 else f"{us:,.0f}"


# -- one column's rows ------------------------------------------------------------------------
def label_rows(col: CompareColumn, width: int) -> list[Line]:
    head, _, rest = col.label.partition(" (")
    parts = [p for p in rest.rstrip(")").split(", ") if p] if rest else []
    if width < 32:
        short = []
        for p in parts:
            for a, b in SHORTER:
                p = p.replace(a, b)
            short.append(p)
        parts = short
    style = Style(color=TECH_STYLE.get(col.technique, "white"), bold=True)
    items = [(head, style)] + [(p, Style(color=TECH_STYLE.get(col.technique, "white"))) for p in parts]
    if col.complete:
        items.append(("■ complete", Style(color="#87afd7", bold=True)))
    return _flow(items, width)


def stage_rows(col: CompareColumn, width: int, mode: str) -> list[Line]:
    if mode == "list":
        out: list[Line] = []
        for i, name in enumerate(col.stages, start=1):
            lit = i == col.stage
            out.extend(_wrap(f"{STAGE_MARKS[i]} {name}" + (" ◀" if lit else ""), width, LIT if lit else STAGE,
                             indent=2))
        if not 0 < col.stage <= len(col.stages):
            out.extend(_off_path(col, width))
        return out
    # marks: ①─②─③─④─⑤─⑥ with the current one lit, and its name under it
    row: Line = []
    for i in range(1, len(col.stages) + 1):
        if i > 1:
            row.append(Segment("─", SEP))
        row.append(Segment(STAGE_MARKS[i], LIT if i == col.stage else STAGE))
    if 0 < col.stage <= len(col.stages):
        return [row] + _wrap(f"{STAGE_MARKS[col.stage]} {col.stages[col.stage - 1]} ◀", width, LIT, indent=2)
    return [row] + _off_path(col, width)


def _off_path(col: CompareColumn, width: int) -> list[Line]:
    """No stage lit: say why (the last event is not one of the path's stages)."""
    what = f"last event: {col.last_kind}, off the path" if col.last_kind else "no event yet"
    return _wrap("· " + what, width, DIM, indent=2)


def _bar(value: float, top: float, width: int, color: str) -> Line:
    if top <= 0 or value <= 0:
        return [Segment("─" * width, TRACK)]
    eighths = round(8 * width * min(1.0, value / top))
    full, part = divmod(eighths, 8)
    segs = [Segment("█" * full, Style(color=color))]
    used = full
    if part and used < width:
        segs.append(Segment(" ▏▎▍▌▋▊▉"[part], Style(color=color)))
        used += 1
    if used < width:
        segs.append(Segment("─" * (width - used), TRACK))
    return segs


def counter_rows(col: CompareColumn, width: int, level: dict, top_epp: float) -> list[list[Line]]:
    """The counter rows of one column (the same rows, in the same order, for
    every column, so that they line up across the view)."""
    s = col.summary
    ex = s["exits"]
    pk = s["packets"]
    irq = s["interrupts"]
    lat = s["latency_ns"]
    io = s["iommu"]
    color = TECH_STYLE.get(col.technique, "white")
    compact = level["counters"] == "compact"
    rows: list[list[Line]] = []
    rows.append(_pair("exits/packet", f"{ex['per_packet']:.2f}", width, Style(color=color, bold=True)))
    rows.append([_bar(ex["per_packet"], top_epp, width, color)])
    rows.append(_pair("exits total", f"{ex['total']:,}", width))
    reasons = sorted(ex["by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))[:level["reasons"]]
    total = ex["total"] or 1
    for i in range(level["reasons"]):
        if i < len(reasons):
            name, n = reasons[i]
            num = EXIT_REASONS.get(name)
            label = f"{name} {num}" if num is not None else name
            if width >= 30:
                label = " " + label
            pct = f"{100 * n / total:.0f}%"
            value = f"{_count(n)} {pct:>4}" if width >= 34 else pct
            rows.append(_pair(label, value, width, Style(bold=True)))
        else:
            rows.append([[Segment(" no exits", DIM)]] if i == 0 and not reasons else [[]])
    rows.append(_pair("irq injected/posted", f"{irq['injected']:,}/{irq['posted']:,}", width)
                if not compact else _pair("irq inj/posted", f"{irq['injected']:,}/{irq['posted']:,}", width))
    copies = f"{s['copies_per_packet']:.2f}"
    gbps = f"{s['throughput_gbps']:.2f} Gb/s"
    if compact:
        left = f"copies {copies}"
        if len(left) + 1 + len(gbps) <= width:
            rows.append([[Segment("copies ", DIM), Segment(copies, VALUE),
                          Segment(" " * (width - len(left) - len(gbps))), Segment(gbps, VALUE)]])
        else:
            rows.append(_pair("copies/packet", copies, width) + _pair("throughput", gbps, width))
        rows.append(_pair("p50/p99 µs", f"{_us(lat['p50'])}/{_us(lat['p99'])}", width))
    else:
        rows.append(_pair("copies/packet", copies, width))
        rows.append(_pair("throughput", gbps, width))
        rows.append(_pair("latency p50", fmt_t(lat["p50"]), width))
        rows.append(_pair("latency p99", fmt_t(lat["p99"]), width))
        rows.append(_pair("CPU/packet", fmt_t(int(s.get("cpu_ns_per_packet", 0))), width))
    lines = s.get("ring_cache_lines")
    if lines is not None:               # compare's virtio-rings mode (o)
        n = s["notifications"]
        d = pk["delivered"] or 1
        rows.append(_pair("ring lines/packet", f"{lines['per_packet']:.2f}", width, Style(color=color, bold=True)))
        rows.append(_pair("kicks/irqs per pkt", f"{n['kicks'] / d:.3f}/{n['device_notify'] / d:.3f}", width))
    looked = io["iotlb_hits"] + io["iotlb_misses"]
    if col.technique == "sriov" and looked:
        hit = f"{100 * io['iotlb_hits'] / looked:.1f} %"
    else:
        hit = "–"
    rows.append(_pair("IOTLB hit rate", hit, width))
    drop_style = Style(color="#ff875f", bold=True) if pk["dropped"] else VALUE
    if compact:
        value = f"{pk['delivered']:,}/{pk['offered']:,}"
        if pk["dropped"]:
            value += f" ✗{pk['dropped']:,}"
        name = next((n for n in ("delivered/offered", "dlvd/offered") if len(n) + 1 + len(value) <= width),
                    "dlvd/offered")
        rows.append(_pair(name, value, width, drop_style))
    else:
        rows.append(_pair("delivered/offered", f"{pk['delivered']:,}/{pk['offered']:,}", width))
        rows.append(_pair("dropped", f"{pk['dropped']:,}", width, drop_style))
    return rows


def narration_rows(col: CompareColumn, width: int, with_time: bool, msg: str | None = None,
                   stage: int | None = None) -> list[Line]:
    msg = col.narration if msg is None else msg
    stage = col.stage if stage is None else stage
    if not msg:
        return _wrap("press n to step, space to run", width, Style(color="grey62", italic=True))
    mark = STAGE_MARKS[stage] if 0 < stage < len(STAGE_MARKS) else "·"
    prefix: Line = [Segment(mark + " ", MARK)]
    if with_time and col.narration_t is not None:
        prefix.append(Segment(fmt_t(col.narration_t) + "  ", DIM))
    plen = sum(s.cell_length for s in prefix)
    lines = _wrap(msg, width, Style(), indent=0, first_width=width - plen)
    lines[0] = prefix + lines[0]
    return lines


# -- the grid -------------------------------------------------------------------------------------
def column_width(width: int, n: int) -> int:
    """Content cells per column: one space of margin, " │ " between columns."""
    n = max(1, n)
    return max(8, (width - 1 - 3 * (n - 1)) // n)


def _sections(frame: CompareFrame, c: int, level: dict) -> list[list[list[Line]]]:
    """Rows of cells: rows[r][col] is that column's lines for row r."""
    cols = frame.columns
    top = max((col.summary["exits"]["per_packet"] for col in cols), default=0.0)
    blank = [[[]] for _ in cols]
    rows: list[list[list[Line]]] = []
    rows.append([label_rows(col, c) for col in cols])
    if level["blank"]:
        rows.append(blank)
    rows.append([stage_rows(col, c, level["stages"]) for col in cols])
    if level["blank"]:
        rows.append(blank)
    # counters keep name and value close together in a wide column
    cw = min(c, COUNTER_WIDTH)
    level = dict(level, reasons=max(1, min(level["reasons"], max(len(col.summary["exits"]["by_reason"])
                                                                 for col in cols))))
    per_col = [counter_rows(col, cw, level, top) for col in cols]
    for r in range(len(per_col[0]) if per_col else 0):
        rows.append([pc[r] for pc in per_col])
    if level["blank"]:
        rows.append(blank)
    rows.append([narration_rows(col, c, level["narr_time"]) for col in cols])
    return rows


def _height(rows: list[list[list[Line]]]) -> int:
    return sum(max(len(cell) for cell in row) for row in rows)


def layout_grid(frame: CompareFrame, width: int, height: int) -> tuple[list[Strip], int]:
    """The grid's strips for ``width`` × ``height`` and the layout level used.
    The level is chosen with room for a long narration line, so it does not
    change from frame to frame as the narration does."""
    n = len(frame.columns)
    c = column_width(width, n)
    chosen = len(LEVELS) - 1
    rows = None
    for i, level in enumerate(LEVELS):
        rows = _sections(frame, c, level)
        fake = CompareColumn("", "", (), 1, {}, SAMPLE_NARRATION, 123_456, "note", False, 0, 0)
        reserve = len(narration_rows(fake, c, level["narr_time"]))
        need = _height(rows[:-1]) + max(reserve, max(len(cell) for cell in rows[-1]))
        if need <= height:
            chosen = i
            break
    assert rows is not None
    out: list[Strip] = []
    sep = Segment(" │ ", SEP)
    for row in rows:
        h = max(len(cell) for cell in row)
        for y in range(h):
            segs: list[Segment] = [Segment(" ")]
            for i, cell in enumerate(row):
                if i:
                    segs.append(sep)
                line = cell[y] if y < len(cell) else []
                used = sum(s.cell_length for s in line)
                segs.extend(line)
                if used < c:
                    segs.append(Segment(" " * (c - used)))
            out.append(Strip(segs).crop_extend(0, width, None))
    while len(out) < height:   # the column rules run to the bottom
        segs = [Segment(" ")]
        for i in range(n):
            if i:
                segs.append(sep)
            segs.append(Segment(" " * c))
        out.append(Strip(segs).crop_extend(0, width, None))
    return out, chosen


class CompareGrid(Widget):
    """The three columns, drawn with the line API from the newest frame; a
    new frame repaints only the lines that differ."""

    DEFAULT_CSS = "CompareGrid { height: 1fr; width: 1fr; }"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.frame: CompareFrame | None = None
        self._strips: list[Strip] = []
        self._key: tuple | None = None
        self.level = 0

    def update_frame(self, frame: CompareFrame) -> None:
        self.frame = frame
        w, h = self.size
        if not self.is_mounted or not w or not h or self._key != (w, h) or not self._strips:
            self._key = None
            self.refresh()
            return
        old = self._strips
        new, self.level = layout_grid(frame, w, h)
        self._strips = new
        if len(new) != len(old):
            self.refresh()
            return
        dirty = [Region(0, y, w, 1) for y, (a, b) in enumerate(zip(old, new)) if a != b]
        if dirty:
            self.refresh(*dirty)

    def _ensure(self) -> None:
        w, h = self.size
        if self._key != (w, h) and self.frame is not None and w and h:
            self._strips, self.level = layout_grid(self.frame, w, h)
            self._key = (w, h)

    def render_line(self, y: int) -> Strip:
        self._ensure()
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width)

    def on_resize(self) -> None:
        self._key = None
        self.refresh()

    def lines(self) -> list[str]:
        """The grid as plain text (what is on screen, for tests)."""
        self._ensure()
        return [s.text for s in self._strips[: self.size.height]]


def compare_header(frame: CompareFrame) -> tuple[Text, ...]:
    """The header, widest first; the narrow form puts the run state first."""
    if frame.complete:
        state = ("■ complete", "bold #87afd7")
    elif frame.running:
        state = ("▶ running", "bold #87d787")
    else:
        state = ("‖ paused", "bold #ffd75f")
    t = ("t = " + fmt_t(frame.t_ns), "bold")
    speed = speed_label(frame.speed)
    sep = ("  ·  ", "grey42")
    host = (frame.host, "#d7afff")
    wide = Text.assemble((" iovtui ", "bold black on #87afd7"), " ", ("compare", "bold"), sep, host, sep,
                         frame.preset, sep, f"seed {frame.seed}", sep, speed, sep, state, sep, t)
    sep = (" · ", "grey42")
    narrow = Text.assemble(" ", state, sep, t, sep, ("compare", "bold"), sep, host, sep, frame.preset, sep,
                           f"seed {frame.seed}", sep, speed)
    two = Text.assemble(" ", state, sep, t, sep, speed, "\n ", ("compare", "bold"), sep, host, sep,
                        frame.preset, sep, f"seed {frame.seed}")
    return (wide, narrow, two)


# -- a real host's exits next to the model's (`iovtui --real FILE`) ---------------------------------
def _rate(v: float | None, per_packet: bool) -> str:
    if v is None:
        return "–"
    if per_packet:
        return f"{v:.2f}" if v < 100 else f"{v:,.0f}"
    return _count(round(v))


def real_lines(real, packets: int | None, frame: CompareFrame | None, width: int, reasons: int) -> list[Text]:
    """The real pane: the file's exits by reason next to each technique's
    (per packet when the recording's packets are known, else per second; the
    model's per second of its virtual time), the busiest ``reasons`` first."""
    per_packet = bool(packets)
    secs = real.seconds
    if per_packet:
        unit = f"exits per packet (real: {packets:,} packets)"
        real_r = {k: v / packets for k, v in real.exits.items()}
        real_t: float | None = real.total / packets
    else:
        unit = "exits per second (model: of virtual time)"
        r = real.rate()
        real_r, real_t = r if r else ({k: None for k in real.exits}, None)
    cols = list(frame.columns) if frame is not None else []

    def model(col, reason: str | None) -> float | None:
        ex = col.summary["exits"]
        n = ex["total"] if reason is None else ex["by_reason"].get(reason, 0)
        if per_packet:
            d = col.summary["packets"]["delivered"]
            return n / d if d else None
        return n * 1e9 / col.t_ns if col.t_ns else None

    import os.path
    name = os.path.basename(real.path)
    head = Text.assemble(("real host ", "bold #d7afff"), (name, "bold"), (f" · {real.label}", DIM),
                         (f" · {secs:,.1f} s" if secs else "", DIM), (f" · {real.total:,} exits · ", DIM),
                         (unit, ""))
    head.truncate(width)
    nw = 20
    vw = 9
    shown = [k for k, _ in sorted(real.exits.items(), key=lambda kv: (-kv[1], kv[0]))]
    for col in cols:                     # a reason only the model has, after the real ones
        for k in col.summary["exits"]["by_reason"]:
            if k not in shown:
                shown.append(k)
    shown = shown[:reasons]
    out = [head, Text.assemble((f"{'exit reason':<{nw}}", DIM), (f"{'real':>{vw}}", "bold #d7afff"),
                               *[(f"{col.technique:>{vw + 1}}", f"bold {TECH_STYLE.get(col.technique, 'white')}")
                                 for col in cols])]
    for k in shown + [None]:
        label = (k or "total")[:nw - 1]
        rv = real_t if k is None else real_r.get(k, 0.0)
        t = Text.assemble((f"{label:<{nw}}", "bold" if k is None else ""), (f"{_rate(rv, per_packet):>{vw}}", "bold"),
                          *[(f"{_rate(model(col, k), per_packet):>{vw + 1}}", "") for col in cols])
        t.truncate(width)
        out.append(t)
    if not per_packet and real_t is None:
        hint = Text("  (the file does not say how long it covers: start with --real-packets N for exits per packet)",
                    style=DIM)
        hint.truncate(width)
        out.append(hint)
    return out


#: the real pane needs this many terminal rows (below, the three columns need them all)
REAL_MIN_HEIGHT = 30


class RealPane(Widget):
    """A real trace's exits (``iovtui --real FILE``) under the three columns."""

    DEFAULT_CSS = "RealPane { height: auto; border-top: solid #5f5f87; padding: 0 1; }"

    def __init__(self, real, packets: int | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.real = real
        self.packets = packets
        self.frame: CompareFrame | None = None

    def reasons(self) -> int:
        return 5 if self.app.size.height >= 36 else 3

    def get_content_height(self, container, viewport, width: int) -> int:
        return 3 + min(self.reasons(), max(1, len(self.real.exits)))

    def update_frame(self, frame: CompareFrame) -> None:
        self.frame = frame
        self.refresh()

    def render(self) -> Text:
        w = max(20, self.size.width)
        return Text("\n").join(real_lines(self.real, self.packets, self.frame, w, self.reasons()))

    def lines(self) -> list[str]:
        """The pane as plain text (for tests)."""
        return [t.plain for t in real_lines(self.real, self.packets, self.frame, max(20, self.size.width),
                                            self.reasons())]


class CompareScreen(SteadyResize, Screen):
    """Full-size screen: the three techniques side by side, live."""

    SPEED_GROUP = Binding.Group("speed", compact=True)
    BINDINGS = [
        Binding("space", "toggle_pause", "pause"),
        Binding("n", "step", "step"),
        Binding("b", "step_back", "back", show=False),
        Binding("plus,equals_sign", "faster", "faster", key_display="+", group=SPEED_GROUP),
        Binding("minus", "slower", "slower", key_display="-", group=SPEED_GROUP),
        Binding("a,i", "host_profile", "host", key_display="a"),
        Binding("o", "rings", "split/packed", show=False),
        Binding("escape", "close", "back", key_display="esc"),
        Binding("c", "close", "close", show=False),
        Binding("question_mark", "help", "help", key_display="?"),
        # the main view's keys do nothing here (they would act on the paused main run)
        Binding("1,2,3,p,e,v,r,m,k,f,g,enter,left,right,up,down", "main_only", show=False),
    ]

    def __init__(self, preset: Preset, seed: int = 1, packets: int | None = None,
                 speed_index: int = DEFAULT_SPEED_INDEX, start_paused: bool = False,
                 real=None, real_packets: int | None = None) -> None:
        super().__init__()
        #: a real host's trace (iovtui.real.RealTrace) shown under the columns, or None
        self.real = real
        self.real_packets = real_packets
        self.driver = CompareDriver(preset, seed=seed, packets=packets, speed_index=speed_index,
                                    max_fps=MAX_FPS)
        self.start_paused = start_paused
        self._latest: CompareFrame | None = None
        self._applied: CompareFrame | None = None
        self._timer = None
        self.frames_applied = 0

    def compose(self) -> ComposeResult:
        self.w_header = HeaderBar(id="cmp-header")
        self.w_grid = CompareGrid(id="cmp-grid")
        self.w_footer = Footer(id="cmp-footer")
        yield self.w_header
        yield self.w_grid
        self.w_real = None
        if self.real is not None:       # under the columns, above the footer
            self.w_real = RealPane(self.real, self.real_packets, id="cmp-real")
            yield self.w_real
        yield self.w_footer

    def on_mount(self) -> None:
        self.driver.subscribe(self._on_frame)
        self._timer = self.set_interval(1 / MAX_FPS, self._apply_latest)
        self.driver.publish()
        self._apply_latest()
        if not self.start_paused:
            self.driver.resume()
        self.driver.start()
        self._fit_footer()
        self._fit_real()

    async def on_unmount(self) -> None:
        await self.driver.stop()

    def on_resize(self) -> None:
        self._fit_footer()
        self._fit_real()

    def _fit_real(self) -> None:
        """The real pane where there is room for it and the three columns;
        in a shorter terminal it is hidden (and the user told why, once)."""
        if self.w_real is None:
            return
        fits = self.app.size.height >= REAL_MIN_HEIGHT
        if self.w_real.display != fits:
            self.w_real.display = fits
        if not fits and not getattr(self, "_told_real", False):
            self._told_real = True
            self.notify(f"The real trace shows under the columns in a terminal of {REAL_MIN_HEIGHT}+ rows.",
                        timeout=4)

    def _fit_footer(self) -> None:
        wide = self.size.width >= 100
        if self.w_footer.show_command_palette != wide:
            self.w_footer.show_command_palette = wide
            if self.w_footer.is_mounted:
                self.w_footer.refresh(recompose=True)

    # -- frames (≤ 30 a second) ---------------------------------------------------------------
    def _on_frame(self, frame: CompareFrame) -> None:
        self._latest = frame
        if self._timer is not None:
            self._timer.resume()

    def _apply_latest(self) -> None:
        f = self._latest
        if f is None or f is self._applied:
            if not self.driver.running and self._timer is not None:
                self._timer.pause()          # paused and unchanged: no work at all
            return
        self._applied = f
        self.frames_applied += 1
        self.w_header.variants = compare_header(f)
        self.w_grid.update_frame(f)
        if self.w_real is not None:
            self.w_real.update_frame(f)

    # -- actions -----------------------------------------------------------------------------
    def action_toggle_pause(self) -> None:
        self.driver.toggle()

    def action_step(self) -> None:
        self.driver.step()

    def action_step_back(self) -> None:
        self.driver.step_back()

    def action_faster(self) -> None:
        self.driver.faster()

    def action_slower(self) -> None:
        self.driver.slower()

    def action_host_profile(self) -> None:
        """All three techniques again on the next host profile (no APICv →
        APICv → APICv + VT-d PI), same seed; the speed and pause state stay."""
        d = self.driver
        names = list(HOST_PROFILES)
        now = HostProfile.from_preset(d.preset.host).profile
        d.preset = d.preset.with_options(host=dict(HOST_PROFILES[names[(names.index(now) + 1) % len(names)]]))
        d.restart()
        self.notify(f"{HostProfile.from_preset(d.preset.host).label()}: the three runs restarted", timeout=3)

    def action_rings(self) -> None:
        """The three techniques ⇄ virtio split beside virtio packed (same seed, preset, host)."""
        from ...sim.preset import PresetError

        d = self.driver
        d.rings = not d.rings
        try:
            d.restart()
        except PresetError as e:         # e.g. a packed preset's queue size the split ring cannot take
            d.rings = not d.rings
            d.restart()
            self.notify(f"virtio split ⇄ packed cannot run this preset: {e}", timeout=5)
            return
        self.notify("virtio: split ring ⇄ packed ring, with the ring lines each writes per packet" if d.rings
                    else "the three techniques again", timeout=3)

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(COMPARE_KEYS))

    def action_main_only(self) -> None:
        self.notify("That key acts on the main view: escape returns to it.", timeout=3)

    def action_close(self) -> None:
        if self.app.screen is not self:      # (dismiss() pops whatever is on top)
            return
        self.driver.pause()
        if self.driver._task is not None:
            self.driver._task.cancel()
        self.dismiss(None)
