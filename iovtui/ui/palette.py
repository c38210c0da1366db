"""Themes, the colour-blind-safe palette and presenter contrast, as one line
filter over everything drawn.

The panes pick their colours for a dark background.  Rather than a second
set of colours in every pane, :class:`Look` rewrites each style on its way to
the terminal (Textual's LineFilter, the mechanism it uses for NO_COLOR):

- ``light``: dark backgrounds the panes set become light and light text on
  a light background becomes dark, keeping each hue;
- ``colorblind``: every saturated colour becomes the nearest of the
  Okabe–Ito colours (distinct under deuteranopia, protanopia and
  tritanopia); states never rely on colour alone anyway — each has a glyph
  or a word as well (▶ ‖ ■, ⌂ kvm / ⇧ user, ● ○ ◐ owners, ◆ followed packet, ▓ just written, ✓ ✗, ◀ stage);
- ``contrast`` (presenter mode): greys become full white (or black on
  light) and all text is bold, for projectors.

NO_COLOR is honoured by Textual itself (every colour becomes grey); the
glyphs carry the meaning then.  Styles are rewritten once each (cached).
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style
from textual.color import Color
from textual.filter import LineFilter

__all__ = ["Look", "PALETTES", "THEMES", "OKABE_ITO"]

THEMES = ("dark", "light")
PALETTES = ("default", "colorblind")
TEXTUAL_THEME = {"dark": "textual-dark", "light": "textual-light"}
INK = RichColor.parse("#1e1e1e")
LIGHT_GROUND = RichColor.parse("#e0e0e0")     # textual-light's panel, behind the line-API panes
DARK_GROUND = RichColor.parse("#1e1e1e")
_NULL = Style()

#: Okabe & Ito (2008), "Color Universal Design": (hue upper bound, colour)
OKABE_ITO = {
    "vermillion": "#D55E00",
    "orange": "#E69F00",
    "yellow": "#F0E442",
    "bluish green": "#009E73",
    "sky blue": "#56B4E9",
    "blue": "#0072B2",
    "reddish purple": "#CC79A7",
}
_HUES = ((20, "vermillion"), (45, "orange"), (70, "yellow"), (165, "bluish green"), (205, "sky blue"),
         (255, "blue"), (335, "reddish purple"), (361, "vermillion"))


def _hls(c: RichColor) -> tuple[float, float, float]:
    t = c.get_truecolor()
    return colorsys.rgb_to_hls(t.red / 255, t.green / 255, t.blue / 255)


def _from_hls(h: float, l: float, s: float) -> RichColor:
    r, g, b = colorsys.hls_to_rgb(h, max(0.0, min(1.0, l)), s)
    return RichColor.from_rgb(r * 255, g * 255, b * 255)


def _luminance(c: RichColor) -> float:
    """WCAG relative luminance."""
    t = c.get_truecolor()

    def ch(v: int) -> float:
        x = v / 255
        return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4
    return 0.2126 * ch(t.red) + 0.7152 * ch(t.green) + 0.0722 * ch(t.blue)


def _ratio(a: RichColor, b: RichColor) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _readable(fg: RichColor, bg: RichColor, least: float) -> RichColor:
    """``fg`` with its hue kept, made lighter (on a dark ``bg``) or darker (on
    a light one) just until it reaches a contrast ratio of ``least``."""
    if _ratio(fg, bg) >= least:
        return fg
    h, l, s = _hls(fg)
    up = _luminance(bg) < 0.18                # nearer black: white text has more room
    for step in range(1, 21):
        c = _from_hls(h, l + step * 0.05 if up else l - step * 0.05, s)
        if _ratio(c, bg) >= least:
            return c
    return RichColor.parse("#ffffff" if up else "#000000")


def _okabe_ito(c: RichColor) -> RichColor:
    h, l, s = _hls(c)
    if s < 0.25 or l < 0.08 or l > 0.95:
        return c                              # greys, black and white stay
    deg = h * 360
    name = next(n for bound, n in _HUES if deg < bound)
    return RichColor.parse(OKABE_ITO[name])


class Look(LineFilter):
    """The app's look: theme (dark/light), palette, and presenter contrast."""

    def __init__(self, theme: str = "dark", palette: str = "default", contrast: bool = False,
                 no_style_safe: bool = False) -> None:
        super().__init__(enabled=True)
        self.theme = theme
        self.palette = palette
        self.contrast = contrast
        #: give unstyled segments a null style: Textual's NO_COLOR (Monochrome)
        #: filter, which runs after this one, fails on a segment with no style
        self.no_style_safe = no_style_safe

    @property
    def enabled(self) -> bool:                # Textual skips a disabled filter: no per-line cost in the default look
        return self.no_style_safe or not self.identity

    @enabled.setter
    def enabled(self, _value: bool) -> None:  # (LineFilter.__init__ sets it; the look decides)
        pass

    @property
    def identity(self) -> bool:
        return self.theme == "dark" and self.palette == "default" and not self.contrast

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        if self.identity:
            if self.no_style_safe:
                null = _NULL
                return [s if s.style is not None else Segment(s.text, null, s.control) for s in segments]
            return segments
        restyle = _restyle
        light = self.theme == "light"
        # line-API panes leave the background unset (the terminal's own shows
        # through); on the light theme it must be the widget's light one
        ground = background.rich_color if light and background.a > 0 else None
        base = background.rich_color if background.a > 0 else (LIGHT_GROUND if light else DARK_GROUND)
        key = (ground, base, light, self.palette == "colorblind", self.contrast)
        bare = restyle(_NULL, *key)           # an unstyled segment: the terminal's own colours would show through
        return [Segment(text, bare if style is None else restyle(style, *key), control)
                for text, style, control in segments]


@lru_cache(4096)
def _restyle(style: Style, ground: RichColor | None, base: RichColor, light: bool, colorblind: bool,
             contrast: bool) -> Style:
    fg, bg = style.color, style.bgcolor
    if bg is None and ground is not None:
        bg = ground
    if fg is None and light:
        fg = INK                              # the terminal's own (light) foreground would show through
    if colorblind:
        fg = _okabe_ito(fg) if fg is not None else None
        bg = _okabe_ito(bg) if bg is not None else None
    if light:
        if bg is not None:
            h, l, s = _hls(bg)
            if l < 0.45:                      # a dark band the panes set: make it light
                bg = _from_hls(h, 1.0 - l * 0.6, s)
        on_light = bg is None or _hls(bg)[1] >= 0.45
        if fg is not None and on_light:
            h, l, s = _hls(fg)
            if l > 0.35:                      # light text on a light ground: darken, keep the hue
                fg = _from_hls(h, min(0.32, 1.0 - l), max(s, 0.35) if s > 0.1 else s)
    if contrast:
        if fg is not None:
            h, l, s = _hls(fg)
            on_dark = bg is None and not light or (bg is not None and _hls(bg)[1] < 0.45)
            if s < 0.2:                       # greys: full contrast
                fg = RichColor.parse("#ffffff" if on_dark else "#000000")
            elif on_dark and l < 0.6:
                fg = _from_hls(h, 0.7, s)
        style = style + Style(bold=True)
    least = 4.5 if light or contrast else 3.0  # whatever the rules above did: readable on what is behind it
    if style.reverse and fg is not None:      # (a cursor) the background colour is the text
        bg = _readable(bg if bg is not None else base, fg, least)
    elif fg is not None:
        fg = _readable(fg, bg if bg is not None else base, least)
    if fg is style.color and bg is style.bgcolor:
        return style
    return style + Style(color=fg, bgcolor=bg)
