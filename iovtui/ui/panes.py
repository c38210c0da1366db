"""The panes.  Each one only lays out what a Frame (or the model's views)
already holds; none of them computes anything about the model."""

from __future__ import annotations

from collections import deque

from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from ..sim.driver import Frame, speed_label
from ..sim.memory import PAGE

__all__ = ["GuestRamPane", "RingPane", "ExitLogPane", "TablePane", "HeaderBar", "PathStrip",
           "StatsBar", "Narration", "ROLE_STYLE", "STAGE_MARKS"]

#: glyph, colour and legend for each region role (a glyph as well as a colour, never colour alone)
ROLE_STYLE = {
    "kernel": ("·", "grey37", "guest kernel"),
    "desc": ("D", "bold #5fafff", "descriptors"),
    "avail": ("A", "bold #87d787", "avail ring"),
    "used": ("U", "bold #d7af5f", "used ring"),
    "rx_ring": ("R", "bold #5fafff", "RX desc ring"),
    "tx_ring": ("T", "bold #af87ff", "TX desc ring"),
    "rx_buf": ("▒", "#5f87af", "RX buffers"),
    "tx_buf": ("░", "#8787af", "TX buffers"),
    "free": (" ", "grey23", "free"),
}
FRESH = Style(color="black", bgcolor="#ffd75f", bold=True)
CURSOR = Style(reverse=True)
STAGE_MARKS = "⓪①②③④⑤⑥"
OWNER_STYLE = {"device": ("●", "#5fafff"), "driver": ("○", "grey62"), "used": ("◆", "#ffaf5f")}


def _fmt_t(ns: int) -> str:
    if ns < 10_000:
        return f"{ns / 1000:.3f} µs"
    if ns < 10_000_000:
        return f"{ns / 1000:,.1f} µs"
    return f"{ns / 1e6:,.3f} ms"


class HeaderBar(Widget):
    text = reactive(Text(""))

    def render(self) -> Text:
        return self.text


class PathStrip(Widget):
    text = reactive(Text(""))

    def render(self) -> Text:
        return self.text

    @staticmethod
    def build(frame: Frame) -> Text:
        t = Text(" path ", style="bold")
        for i, stage in enumerate(frame.stages, start=1):
            lit = i == frame.stage
            style = "bold black on #ffd75f" if lit else "#87afd7"
            t.append(f"{STAGE_MARKS[i]} {stage}", style=style)
            if i < len(frame.stages):
                t.append(" ─▶ ", style="grey50")
        return t


class Narration(Widget):
    text = reactive(Text(""))

    def render(self) -> Text:
        return self.text

    @staticmethod
    def build(frame: Frame) -> Text:
        ev = frame.last_event
        if ev is None:
            return Text(" press n to step one event, space to run", style="italic grey62")
        mark = STAGE_MARKS[ev.stage] if 0 < ev.stage < len(STAGE_MARKS) else "·"
        return Text.assemble((f" {mark} ", "bold #ffd75f"), (f"{_fmt_t(ev.t)}  ", "grey62"), (ev.msg, ""))


class StatsBar(Widget):
    text = reactive(Text(""))

    def render(self) -> Text:
        return self.text

    @staticmethod
    def build(frame: Frame) -> Text:
        s = frame.summary
        pk = s["packets"]
        lat = s["latency_ns"]
        irq = s["interrupts"]
        sep = (" │ ", "grey42")
        return Text.assemble(
            (" exits/pkt ", "grey62"), (f"{s['exits']['per_packet']:.2f}", "bold"), sep,
            ("copies/pkt ", "grey62"), (f"{s['copies_per_packet']:.2f}".rstrip("0").rstrip("."), "bold"), sep,
            ("irq ", "grey62"), (f"{irq['injected']:,}", "bold"),
            (f" +{irq['posted']:,} posted" if irq["posted"] else "", "grey62"), sep,
            (f"{s['throughput_gbps']:.2f} Gb/s", "bold"), sep,
            ("p50 ", "grey62"), (_fmt_t(lat["p50"]), "bold"), (" p99 ", "grey62"), (_fmt_t(lat["p99"]), "bold"), sep,
            ("pkts ", "grey62"), (f"{pk['delivered']:,}/{pk['offered']:,}", "bold"),
            (f" ✗{pk['dropped']:,}" if pk["dropped"] else "", "bold #ff875f"), sep,
            ("t = ", "grey62"), (_fmt_t(frame.t_ns), "bold"),
        )


class TitledPane(Widget, can_focus=True):
    """A bordered pane whose title names what it shows.  Line-API panes
    build all their strips once per (content, size, cursor) and serve
    ``render_line`` from that cache; a frame that changes nothing this pane
    shows does not refresh it."""

    frame: Frame | None = None
    _key: object = None
    _strips: list = []

    def content(self, frame: Frame) -> object:
        """What this pane shows from ``frame`` (compared to skip refreshes)."""
        return frame

    def update_frame(self, frame: Frame) -> None:
        old = self.frame
        self.frame = frame
        if old is None or self.content(old) != self.content(frame):
            self._key = None
            self.refresh()

    def _cached(self, y: int, build) -> Strip:
        key = (id(self.frame), self.size, getattr(self, "cursor", 0), self.has_focus,
               getattr(self, "ring_index", 0))
        if key != self._key:
            self._strips = build()
            self._key = key
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


class GuestRamPane(TitledPane):
    """One cell per 4 KiB page of the focused VM's guest-physical memory, drawn
    line by line (the line API: no widget per cell)."""

    cursor = reactive(0)

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.vm_index = 0
        self.border_title = "Guest RAM"

    def _layout(self):
        f = self.frame
        if f is None or not f.memory:
            return None
        mv = f.memory[min(self.vm_index, len(f.memory) - 1)]
        start = 0x100000 if mv.size > 0x100000 else 0
        end = max((r.end for r in mv.regions), default=start)
        end = (end + PAGE - 1) // PAGE * PAGE
        width = max(8, self.size.width - 11)
        per_row = 1 << (width.bit_length() - 1)
        per_row = min(per_row, 128)
        return mv, start, end, per_row

    def page_count(self) -> int:
        lay = self._layout()
        if lay is None:
            return 0
        _mv, start, end, _per = lay
        return (end - start) // PAGE

    def selected_gpa(self) -> int | None:
        lay = self._layout()
        if lay is None:
            return None
        _mv, start, end, _per = lay
        n = (end - start) // PAGE
        return start + min(self.cursor, max(n - 1, 0)) * PAGE

    def move(self, dx: int, dy: int) -> None:
        lay = self._layout()
        if lay is None:
            return
        _mv, _s, _e, per = lay
        n = self.page_count()
        self.cursor = max(0, min(n - 1, self.cursor + dx + dy * per))
        self.refresh()

    def content(self, frame: Frame):
        mv = frame.memory[min(self.vm_index, len(frame.memory) - 1)] if frame.memory else None
        return (mv, frame.technique)

    def render_line(self, y: int) -> Strip:
        return self._cached(y, self._build)

    def _build(self) -> list[Strip]:
        return [self._line(y) for y in range(self.size.height)]

    def _line(self, y: int) -> Strip:
        lay = self._layout()
        w = self.size.width
        if lay is None:
            return Strip.blank(w)
        mv, start, end, per = lay
        rows = (end - start + per * PAGE - 1) // (per * PAGE)
        fresh_pages = self._fresh_pages(mv)
        return self._row(y, mv, start, end, per, rows, fresh_pages, w)

    def _fresh_pages(self, mv) -> set:
        cache = getattr(self, "_fresh_cache", None)
        if cache is not None and cache[0] is mv:
            return cache[1]
        fresh_pages = set()
        for gpa, n, _who in mv.fresh_writes:
            for p in range(gpa // PAGE, (gpa + max(n, 1) - 1) // PAGE + 1):
                fresh_pages.add(p)
        self._fresh_cache = (mv, fresh_pages)
        return fresh_pages

    def _row(self, y, mv, start, end, per, rows, fresh_pages, w) -> Strip:
        if y == 0:
            seg = [Segment(f" {mv.vm} · {mv.size >> 20} MiB · HPA base 0x{mv.hpa_base:x} · 0x000000–0x{start - 1:06x} guest kernel ",
                           Style(color="grey62"))]
            return Strip(seg).crop_extend(0, w, None)
        if 1 <= y <= rows:
            base = start + (y - 1) * per * PAGE
            segs = [Segment(f" {base:08x} ", Style(color="grey50"))]
            roles = _roles(mv.regions)
            sel = self.selected_gpa()
            for i in range(per):
                gpa = base + i * PAGE
                if gpa >= end:
                    break
                role = roles(gpa)
                glyph, color, _ = ROLE_STYLE.get(role, ROLE_STYLE["free"])
                style = Style.parse(color)
                if gpa // PAGE in fresh_pages:
                    style = FRESH
                    glyph = "█" if glyph == " " else glyph
                if gpa == sel and self.has_focus:
                    style = style + CURSOR
                segs.append(Segment(glyph, style))
            return Strip(segs).crop_extend(0, w, None)
        if y == rows + 1:
            segs = [Segment(" ")]
            for role in ("desc", "avail", "used", "rx_ring", "tx_ring", "rx_buf", "tx_buf"):
                if any(r.role == role for r in mv.regions):
                    g, c, name = ROLE_STYLE[role]
                    segs += [Segment(g, Style.parse(c)), Segment(f" {name}  ", Style(color="grey62"))]
            segs += [Segment("█", FRESH), Segment(" just written", Style(color="grey62"))]
            return Strip(segs).crop_extend(0, w, None)
        if y == rows + 2:
            sel = self.selected_gpa()
            if sel is None:
                return Strip.blank(w)
            r = next((r for r in reversed(mv.regions) if r.start <= sel < r.end), None)
            label = r.label if r else "free"
            hpa = f" → HPA 0x{mv.hpa_base + sel:x}" if self.frame and self.frame.technique == "sriov" else ""
            txt = f" page GPA 0x{sel:x}{hpa} · {label} · enter: hex view"
            return Strip([Segment(txt, Style(color="#d7d7af"))]).crop_extend(0, w, None)
        return Strip.blank(w)


def _col_widths(r) -> list[int]:
    widths = [len(c) for c in r.columns]
    for row in r.rows[:64]:
        for k, c in enumerate(row):
            if len(c) > widths[k]:
                widths[k] = len(c)
    return widths


def _roles(regions):
    def role(gpa: int) -> str:
        for r in reversed(regions):
            if r.start <= gpa < r.end:
                return r.role
        return "free"
    return role


class RingPane(TitledPane):
    """The active descriptor ring, as its bytes in guest RAM say."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.vm_index = 0
        self.ring_index = 0
        self.border_title = "Descriptor ring"

    def ring(self):
        f = self.frame
        if f is None or not f.rings:
            return None
        vm = f.memory[min(self.vm_index, len(f.memory) - 1)].vm if f.memory else ""
        mine = [r for r in f.rings if r.vm == vm] or list(f.rings)
        return mine[self.ring_index % len(mine)]

    def cycle(self) -> None:
        self.ring_index += 1
        self._key = None
        self.refresh()

    def content(self, frame: Frame):
        old = self.frame
        self.frame = frame
        try:
            return self.ring()
        finally:
            self.frame = old

    def render_line(self, y: int) -> Strip:
        return self._cached(y, lambda: [self._line(i) for i in range(self.size.height)])

    def _line(self, y: int) -> Strip:
        w = self.size.width
        r = self.ring()
        if r is None:
            return Strip.blank(w)
        if y == 0:
            marks = " · ".join(f"{k} {v}" for k, v in r.marks)
            return Strip([Segment(f" {r.vm} {r.name} · {r.kind} · {r.size} entries · {marks}",
                                  Style(color="#d7d7af"))]).crop_extend(0, w, None)
        if y == 1:
            return Strip([Segment(f" {r.note}", Style(color="grey62"))]).crop_extend(0, w, None)
        widths = self._widths(r)
        if y == 2:
            head = "".join(f" {c:>{widths[k]}}" for k, c in enumerate(r.columns)) + "  owner"
            return Strip([Segment(head, Style(bold=True, color="grey70"))]).crop_extend(0, w, None)
        visible = max(1, self.size.height - 3)
        centre = r.active if r.active >= 0 else 0
        first = max(0, min(centre - visible // 2, r.size - visible))
        i = first + (y - 3)
        if i >= r.size or i < 0:
            return Strip.blank(w)
        row = r.rows[i]
        owner = r.owners[i]
        glyph, color = OWNER_STYLE.get(owner, ("?", "white"))
        text = "".join(f" {c:>{widths[k]}}" for k, c in enumerate(row))
        style = Style(color="white", bold=True, bgcolor="#3a3a3a") if i == r.active else Style(color="grey85")
        segs = [Segment(text, style), Segment(f"  {glyph} {owner}", Style.parse(color))]
        return Strip(segs).crop_extend(0, w, None)


    def _widths(self, r):
        c = getattr(self, "_wcache", None)
        if c is None or c[0] is not r:
            self._wcache = (r, _col_widths(r))
        return self._wcache[1]


class ExitLogPane(TitledPane):
    """One line per VM exit (bounded: the newest ``maxlen``)."""

    def __init__(self, maxlen: int = 500, **kw) -> None:
        super().__init__(**kw)
        self.lines: deque[Text] = deque(maxlen=maxlen)
        self.border_title = "VMM exit log"
        self.aggregate = False           # kvm_stat-style totals instead of one line per exit
        self._prev: tuple[int, dict] | None = None
        self._rates: dict[str, float] = {}

    def toggle_aggregate(self) -> None:
        self.aggregate = not self.aggregate
        self.border_title = "VMM exits · kvm_stat" if self.aggregate else "VMM exit log"
        self._key = None
        self.refresh()

    def kvm_stat_rows(self) -> list[tuple[str, int, float, float]]:
        """(event, Total, %Total, CurAvg/s) like kvm_stat; the rate is per
        second of virtual time over the last frame interval."""
        f = self.frame
        if f is None:
            return []
        by = f.summary["exits"]["by_reason"]
        total = sum(by.values()) or 1
        rows = [(f"kvm_exit({name})", n, 100.0 * n / total, self._rates.get(name, 0.0)) for name, n in by.items()]
        return sorted(rows, key=lambda r: -r[1])

    def _track_rates(self, frame: Frame) -> None:
        by = frame.summary["exits"]["by_reason"]
        if self._prev is not None and frame.t_ns > self._prev[0]:
            dt = (frame.t_ns - self._prev[0]) / 1e9
            self._rates = {k: (v - self._prev[1].get(k, 0)) / dt for k, v in by.items()}
        self._prev = (frame.t_ns, dict(by))

    def content(self, frame: Frame):
        return self.serial

    serial = 0

    def add_events(self, frame: Frame) -> None:
        for ev in frame.events:
            if ev.kind != "exit":
                continue
            d = ev.data
            where = d.get("where", "")
            user = where == "userspace"
            t = Text.assemble(
                (f"{_fmt_t(ev.t):>11} ", "grey62"), (f"{ev.vm} ", "#87afd7"),
                (f"{d.get('reason', '')} {d.get('number', '')}", "bold #ffaf5f" if user else "bold #87d787"),
                (f" {'⇧ user' if user else '⌂ kvm'}", "#ffaf5f" if user else "#87d787"),
                (f" {d.get('cost_ns', 0) / 1000:.2f}µs", "grey62"),
                (f" · {d.get('cause', '')}", ""),
            )
            self.lines.append(t)
            self.serial += 1
        if self.serial != self._seen:
            self._seen = self.serial
            self._key = None
            self.refresh()

    _seen = 0

    def clear_log(self) -> None:
        self.lines.clear()
        self.serial += 1
        self._key = None
        self.refresh()

    def update_frame(self, frame: Frame) -> None:
        self.frame = frame     # add_events decides whether to redraw
        self._track_rates(frame)
        if self.aggregate:
            self._key = None
            self.refresh()

    def clear_rates(self) -> None:
        self._prev = None
        self._rates = {}

    def render_line(self, y: int) -> Strip:
        return self._cached(y, self._build)

    def _build(self) -> list[Strip]:
        w, h = self.size.width, self.size.height
        if self.aggregate:
            head = Strip([Segment(f" {'event':<28}{'Total':>9}{'%Total':>7}{'CurAvg/s':>10}",
                                  Style(bold=True, color="grey70"))]).crop_extend(0, w, None)
            out = [head]
            for name, n, pct, rate in self.kvm_stat_rows()[: max(0, h - 1)]:
                out.append(Strip([Segment(f" {name:<28}{n:>9,}{pct:>7.1f}{rate:>10,.0f}")]).crop_extend(0, w, None))
            if len(out) == 1:
                out.append(Strip([Segment(" no exits yet", Style(color="grey50", italic=True))]).crop_extend(0, w, None))
            return out
        if not self.lines:
            return [Strip([Segment(" no exits yet", Style(color="grey50", italic=True))]).crop_extend(0, w, None)]
        n = len(self.lines)
        lines = [self.lines[i] for i in range(max(0, n - h), n)]
        return [Strip(list(t.render(self.app.console))).crop_extend(0, w, None) for t in lines]


class TablePane(TitledPane):
    """The IOMMU or NIC pane: a table, or one sentence saying why it is idle."""

    def __init__(self, which: str, **kw) -> None:
        super().__init__(**kw)
        self.which = which
        self.border_title = "IOMMU (VT-d)" if which == "iommu" else "NIC"

    def content(self, frame: Frame):
        return frame.iommu if self.which == "iommu" else frame.nic

    def render(self):
        f = self.frame
        if f is None:
            return Text("")
        tv = f.iommu if self.which == "iommu" else f.nic
        self.border_title = tv.title
        if tv.idle_reason:
            return Text(tv.idle_reason, style="italic grey62")
        table = Table(box=None, pad_edge=False, expand=False, show_edge=False, header_style="bold grey70")
        for k, c in enumerate(tv.columns):
            # identity columns (function, RID, MAC / IOVA) never shrink; counters may
            keep = max([len(c)] + [len(r[k]) for r in tv.rows]) if k < 3 else None
            table.add_column(c, no_wrap=True, overflow="ellipsis", min_width=keep)
        for row in tv.rows:
            table.add_row(*row)
        from rich.console import Group
        return Group(table, *(Text(line, style="#d7af87" if line.startswith("DMAR") else "grey70",
                                   overflow="ellipsis", no_wrap=True) for line in tv.lines))


def header_text(frame: Frame, preset: str) -> Text:
    state = ("▶ running", "bold #87d787") if frame.running else ("‖ paused", "bold #ffd75f")
    if frame.complete:
        state = ("■ complete", "bold #87afd7")
    sep = ("  ·  ", "grey42")
    return Text.assemble((" iovtui ", "bold black on #87afd7"), (" "), (frame.label, "bold"), sep,
                         (preset, ""), sep, (f"seed {frame.seed}", ""), sep, (speed_label(frame.speed), ""),
                         sep, state)
