"""What the panes share: the palette (a glyph as well as a colour for every
state, never colour alone), time formatting and the line-API base pane."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from ...sim.driver import Frame

__all__ = ["ROLE_STYLE", "FRESH", "FRESH_GLYPH", "CURSOR", "FOLLOW", "FOLLOW_GLYPH", "STAGE_MARKS", "OWNER_STYLE", "fmt_t", "flow", "TitledPane"]

#: glyph, colour and legend for each region role (a glyph as well as a colour, never colour alone)
ROLE_STYLE = {
    "kernel": ("·", "grey37", "guest kernel"),
    "desc": ("D", "bold #5fafff", "descriptors"),
    "avail": ("A", "bold #87d787", "avail ring"),
    "used": ("U", "bold #d7af5f", "used ring"),
    "drv_event": ("E", "bold #87d787", "driver event area"),
    "dev_event": ("V", "bold #d7af5f", "device event area"),
    "rx_ring": ("R", "bold #5fafff", "RX desc ring"),
    "tx_ring": ("T", "bold #af87ff", "TX desc ring"),
    "rx_buf": ("▒", "#5f87af", "RX buffers"),
    "tx_buf": ("░", "#8787af", "TX buffers"),
    "free": (" ", "grey23", "free"),
}
FRESH = Style(color="black", bgcolor="#ffd75f", bold=True, underline=True)
#: a page just written shows this instead of its buffer / kernel / free glyph
#: (ring pages keep their letter, underlined), so NO_COLOR still tells it apart
FRESH_GLYPH = "▓"
CURSOR = Style(reverse=True)
#: the followed packet (``f``): a glyph as well as a colour, in every pane
FOLLOW = Style(color="black", bgcolor="#d787ff", bold=True)
FOLLOW_GLYPH = "◆"
STAGE_MARKS = "⓪①②③④⑤⑥"
OWNER_STYLE = {"device": ("●", "#5fafff"), "driver": ("○", "grey62"), "used": ("◐", "#ffaf5f")}   # ◆ is the followed packet


def fmt_t(ns: int) -> str:
    """A time with its unit: µs below 10 ms, ms below 1 s, then s (thousands
    separated, never more than three digits before the point past µs)."""
    if ns < 10_000:
        return f"{ns / 1000:.3f} µs"
    if ns < 10_000_000:
        return f"{ns / 1000:,.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:,.3f} ms"
    return f"{ns / 1e9:,.6f} s"


def flow(items: list, width: int, style: Style, sep: str = " · ") -> list[Strip]:
    """Lay ``items`` (strings, or lists of Segments) out on as many lines as
    ``width`` needs, breaking only between items: nothing is cut off."""
    lines: list[list[Segment]] = [[Segment(" ")]]
    used = 1
    for item in items:
        segs = [Segment(item, style)] if isinstance(item, str) else list(item)
        n = sum(seg.cell_length for seg in segs)
        if used > 1 and used + len(sep) + n > width:
            lines.append([Segment(" ")])
            used = 1
        if used > 1:
            lines[-1].append(Segment(sep, Style(color="grey42")))
            used += len(sep)
        lines[-1].extend(segs)
        used += n
    return [Strip(line).crop_extend(0, width, None) for line in lines]


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
            self.repaint_changed_lines()

    def _cache_key(self) -> tuple:
        return (id(self.frame), self.size, getattr(self, "cursor", 0), self.has_focus,
                getattr(self, "ring_index", 0))

    def repaint_changed_lines(self) -> None:
        """Rebuild the strips now and repaint only the lines that differ
        (a page flashing in the RAM grid repaints one line, not the pane)."""
        build = getattr(self, "_build", None)
        key = self._cache_key()
        old = self._strips
        if (build is None or not self.is_mounted or not self.size or self._key is None
                or self._key[1:] != key[1:] or not old):
            self._key = None
            self.refresh()
            return
        new = build()
        self._strips, self._key = new, key
        if len(new) != len(old):
            self.refresh()
            return
        w = self.size.width
        dirty = [Region(0, y, w, 1) for y, (a, b) in enumerate(zip(old, new)) if a != b]
        if dirty:
            self.refresh(*dirty)

    def _cached(self, y: int, build) -> Strip:
        key = self._cache_key()
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


