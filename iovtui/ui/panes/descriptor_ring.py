"""The descriptor ring of the focused VM, as its bytes in guest RAM say."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from ...sim.driver import Frame
from .common import OWNER_STYLE, TitledPane

__all__ = ["RingPane"]


def _col_widths(r) -> list[int]:
    widths = [len(c) for c in r.columns]
    for row in r.rows[:64]:
        for k, c in enumerate(row):
            if len(c) > widths[k]:
                widths[k] = len(c)
    return widths



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

