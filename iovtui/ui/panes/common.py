"""What the panes share: the palette (a glyph as well as a colour for every
state, never colour alone), time formatting and the line-API base pane."""

from __future__ import annotations

from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from ...sim.driver import Frame

__all__ = ["ROLE_STYLE", "FRESH", "CURSOR", "STAGE_MARKS", "OWNER_STYLE", "fmt_t", "TitledPane"]

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


def fmt_t(ns: int) -> str:
    if ns < 10_000:
        return f"{ns / 1000:.3f} µs"
    if ns < 10_000_000:
        return f"{ns / 1000:,.1f} µs"
    return f"{ns / 1e6:,.3f} ms"


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


