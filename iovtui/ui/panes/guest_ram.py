"""Guest RAM: one cell per 4 KiB page of the focused VM, on the line API."""

from __future__ import annotations

from functools import lru_cache

from rich.segment import Segment
from rich.style import Style
from textual.reactive import reactive
from textual.strip import Strip

from ...sim.driver import Frame
from ...sim.memory import PAGE
from .common import CURSOR, FOLLOW, FOLLOW_GLYPH, FRESH, FRESH_GLYPH, ROLE_STYLE, TitledPane, flow

__all__ = ["GuestRamPane"]


class GuestRamPane(TitledPane):
    """One cell per 4 KiB page of the focused VM's guest-physical memory, drawn
    line by line (the line API: no widget per cell)."""

    cursor = reactive(0)

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.vm_index = 0
        self.border_title = "Guest RAM"
        #: drawn rows with no page just written, followed or under the cursor,
        #: by (regions, first page, pages per row, end, width)
        self._plain_rows: dict[tuple, Strip] = {}

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

    def update_frame(self, frame: Frame) -> None:
        super().update_frame(frame)
        # with several VMs the title names the one shown (m, the palette's "Jump to VM…")
        n = len(frame.memory)
        title = "Guest RAM"
        if n > 1:
            i = min(self.vm_index, n - 1)
            title = f"Guest RAM · {frame.memory[i].vm} ({i + 1:,} of {n:,} VMs · m: next)"
        if self.border_title != title:
            self.border_title = title

    def content(self, frame: Frame):
        mv = frame.memory[min(self.vm_index, len(frame.memory) - 1)] if frame.memory else None
        return (mv, frame.technique, self._followed(frame))

    def _followed(self, frame: Frame | None) -> int | None:
        """The page of the followed packet's buffer, if it is in this VM."""
        fv = frame.follow if frame is not None else None
        if fv is None or fv.gpa is None or not frame.memory:
            return None
        mv = frame.memory[min(self.vm_index, len(frame.memory) - 1)]
        return fv.gpa // PAGE * PAGE if mv.vm == fv.vm else None

    def render_line(self, y: int) -> Strip:
        return self._cached(y, self._build)

    def _build(self) -> list[Strip]:
        w, h = self.size.width, self.size.height
        lay = self._layout()
        if lay is None:
            return [Strip.blank(w)] * h
        mv, start, end, per = lay
        grey = Style(color="grey62")
        out = flow([mv.vm, f"{mv.size >> 20} MiB", f"HPA base 0x{mv.hpa_base:x}",
                    f"0x0–0x{start - 1:x} guest kernel"], w, grey) if start else flow([mv.vm, f"{mv.size >> 20} MiB"], w, grey)
        rows = (end - start + per * PAGE - 1) // (per * PAGE)
        fresh_pages = self._fresh_pages(mv)
        followed = self._followed(self.frame)
        out += [self._row(y, mv, start, end, per, rows, fresh_pages, w, followed) for y in range(1, rows + 1)]
        out += self._legend(mv, w)
        if followed is not None:
            fv = self.frame.follow
            where = f"GPA 0x{fv.gpa:x}" + (f" → HPA 0x{fv.hpa:x}" if fv.hpa is not None else "")
            out += flow([[Segment(FOLLOW_GLYPH, FOLLOW), Segment(f" frame #{fv.pkt}'s buffer", Style(color="#d787ff"))],
                         where], w, Style(color="#d787ff"))
        sel = self.selected_gpa()
        if sel is not None:
            r = next((r for r in reversed(mv.regions) if r.start <= sel < r.end), None)
            items = [f"page GPA 0x{sel:x}"]
            if self.frame and self.frame.technique == "sriov":
                items[0] += f" → HPA 0x{mv.hpa_base + sel:x}"
            items += [r.label if r else "free", "enter: hex view"]
            out += flow(items, w, Style(color="#d7d7af"))
        return out[:h]

    def _legend(self, mv, w: int) -> list[Strip]:
        key = (tuple(r.role for r in mv.regions), w)
        c = getattr(self, "_legend_cache", None)
        if c is None or c[0] != key:
            items = []
            for role in ("desc", "avail", "used", "drv_event", "dev_event", "rx_ring", "tx_ring", "rx_buf", "tx_buf"):
                if any(r.role == role for r in mv.regions):
                    g, col, name = ROLE_STYLE[role]
                    items.append([Segment(g, Style.parse(col)), Segment(f" {name}", Style(color="grey62"))])
            items.append([Segment(FRESH_GLYPH, FRESH), Segment(" just written", Style(color="grey62"))])
            self._legend_cache = c = (key, flow(items, w, Style(), sep="  "))
        return c[1]

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

    def _row(self, y, mv, start, end, per, rows, fresh_pages, w, followed=None) -> Strip:
        if 1 <= y <= rows:
            base = start + (y - 1) * per * PAGE
            cells = _cells(mv.regions, base, per, end)
            sel = self.selected_gpa() if self.has_focus else None
            first, last = base // PAGE, base // PAGE + len(cells)
            plain = (not (fresh_pages and any(first <= p < last for p in fresh_pages))
                     and not (followed is not None and base <= followed < base + len(cells) * PAGE)
                     and not (sel is not None and base <= sel < base + len(cells) * PAGE))
            key = (mv.regions, base, per, end, w)
            if plain and key in self._plain_rows:        # (most rows, most frames: nothing on them changed)
                return self._plain_rows[key]
            segs = [Segment(f" {base:08x} ", _ADDR)]
            for i, (glyph, style) in enumerate(cells):
                gpa = base + i * PAGE
                if gpa // PAGE in fresh_pages:
                    style = FRESH
                    glyph = glyph if glyph.isalpha() else FRESH_GLYPH
                if gpa == followed:
                    style, glyph = FOLLOW, FOLLOW_GLYPH
                if gpa == sel:
                    style = style + CURSOR
                segs.append(Segment(glyph, style))
            strip = Strip(segs).crop_extend(0, w, None)
            if plain:
                if len(self._plain_rows) > 512:
                    self._plain_rows.clear()
                self._plain_rows[key] = strip
            return strip
        return Strip.blank(w)


_ADDR = Style(color="grey50")


@lru_cache(maxsize=256)
def _cells(regions, base: int, per: int, end: int) -> tuple:
    """(glyph, style) of each page of the row that starts at ``base``: the
    newest region holding the page decides its role."""
    out = []
    for i in range(per):
        gpa = base + i * PAGE
        if gpa >= end:
            break
        role = "free"
        for r in reversed(regions):
            if r.start <= gpa < r.end:
                role = r.role
                break
        glyph, color, _ = ROLE_STYLE.get(role, ROLE_STYLE["free"])
        out.append((glyph, Style.parse(color)))
    return tuple(out)
