"""The descriptor ring of the focused VM, as its bytes in guest RAM say."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from ...sim.driver import Frame
from .common import FOLLOW, FOLLOW_GLYPH, OWNER_STYLE, TitledPane, flow

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
        #: None: the ring where the traffic is (the TX ring for a transmit preset)
        self.ring_index: int | None = None
        self.border_title = "Descriptor ring"

    def ring(self):
        f = self.frame
        if f is None or not f.rings:
            return None
        vm = f.memory[min(self.vm_index, len(f.memory) - 1)].vm if f.memory else ""
        mine = [r for r in f.rings if r.vm == vm] or list(f.rings)
        return mine[self._index(mine) % len(mine)]

    def _index(self, mine) -> int:
        if self.ring_index is not None:
            return self.ring_index
        want = "tx" if self.frame is not None and self.frame.direction == "tx" else "rx"
        return next((k for k, r in enumerate(mine) if r.name == want), 0)

    def cycle(self) -> None:
        f = self.frame
        vm = f.memory[min(self.vm_index, len(f.memory) - 1)].vm if f is not None and f.memory else ""
        mine = [r for r in f.rings if r.vm == vm] if f is not None else []
        self.ring_index = self._index(mine or (list(f.rings) if f is not None else [])) + 1
        self._key = None
        self.refresh()

    def update_frame(self, frame: Frame) -> None:
        super().update_frame(frame)
        r = self.ring()
        # with several VMs the title names the one whose ring this is
        title = f"Descriptor ring · {r.vm} {r.name}" if r is not None and len(frame.memory) > 1 else "Descriptor ring"
        if self.border_title != title:
            self.border_title = title

    def content(self, frame: Frame):
        old = self.frame
        self.frame = frame
        try:
            return (self.ring(), self._followed_row(frame))
        finally:
            self.frame = old

    def _followed_row(self, frame: Frame | None) -> int | None:
        """The followed packet's descriptor, if it is on the ring shown."""
        fv = frame.follow if frame is not None else None
        r = self.ring()
        if fv is None or fv.desc is None or r is None or r.vm != fv.vm or (fv.queue and r.name != fv.queue):
            return None
        return fv.desc

    def render_line(self, y: int) -> Strip:
        return self._cached(y, self._build)

    def _build(self) -> list[Strip]:
        w, h = self.size.width, self.size.height
        r = self.ring()
        if r is None:
            return [Strip.blank(w)] * h
        out = flow([f"{r.vm} {r.name}", r.kind, f"{r.size:,} entries"] + [f"{k} {v}" for k, v in r.marks],
                   w, Style(color="#d7d7af"))
        out += flow(r.note.split(" · "), w, Style(color="grey62"))     # breaks between its parts
        widths = self._widths(r)
        head = "".join(f" {c:>{widths[k]}}" for k, c in enumerate(r.columns)) + "  owner"
        out.append(Strip([Segment(head, Style(bold=True, color="grey70"))]).crop_extend(0, w, None))
        followed = self._followed_row(self.frame)
        if followed is not None:
            fv = self.frame.follow
            out += flow([[Segment(FOLLOW_GLYPH, FOLLOW), Segment(f" frame #{fv.pkt} · descriptor {followed}",
                                                                 Style(color="#d787ff"))]], w, Style())
        visible = max(1, h - len(out))
        # a calm window: it pages only when the active row would leave it
        # (or, following a packet, when its descriptor would)
        active = followed if followed is not None else (r.active if r.active >= 0 else 0)
        first = getattr(self, "_first", 0)
        if not first <= active < first + visible - 1:
            first = active - visible // 3
        first = max(0, min(first, r.size - visible))
        self._first = first
        for i in range(first, min(r.size, first + visible)):
            row = r.rows[i]
            owner = r.owners[i]
            glyph, color = OWNER_STYLE.get(owner, ("?", "white"))
            text = "".join(f" {c:>{widths[k]}}" for k, c in enumerate(row))
            if i == followed:
                segs = [Segment(FOLLOW_GLYPH, FOLLOW), Segment(text[1:], FOLLOW)]
            elif i == r.active:
                segs = [Segment("▸", Style(color="#ffd75f", bold=True)),
                        Segment(text[1:], Style(color="white", bold=True, bgcolor="#3a3a3a"))]
            else:
                segs = [Segment(text, Style(color="grey85"))]
            segs.append(Segment(f"  {glyph} {owner}", Style.parse(color)))
            out.append(Strip(segs).crop_extend(0, w, None))
        return out[:h]

    def _widths(self, r):
        c = getattr(self, "_wcache", None)
        if c is None or c[0] is not r:
            self._wcache = (r, _col_widths(r))
        return self._wcache[1]

