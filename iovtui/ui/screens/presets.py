"""The `p` picker: every preset with what it demonstrates."""

from __future__ import annotations

from rich.console import Group
from rich.padding import Padding
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static
from .base import SteadyResize

__all__ = ["PresetScreen"]


class PresetScreen(SteadyResize, ModalScreen):
    """Pick a preset; each is listed with what it demonstrates."""

    BINDINGS = [Binding("escape,p", "app.pop_screen", "close")]

    def __init__(self, presets: list[tuple[str, str, str]], current: str) -> None:
        super().__init__()
        self.presets = presets    # (name, description, origin)
        self.current = current

    def compose(self) -> ComposeResult:
        from textual.widgets import OptionList
        from textual.widgets.option_list import Option

        options = []
        for name, desc, origin in self.presets:
            mark = "● " if name == self.current else "  "
            head = Text.assemble((mark, "#ffd75f"), (name, "bold"), (" (user)" if origin == "user" else "", "grey62"))
            # the description wraps under itself (a hanging indent), not at the left edge
            label = Group(head, Padding(Text(desc, style="grey70"), (0, 0, 0, 4)))
            options.append(Option(label, id=name))
        with VerticalScroll(id="preset-box"):
            yield Static(Text("Presets — enter restarts the run with the chosen one (same seed); escape closes",
                              style="bold"), classes="title")
            ol = OptionList(*options, id="preset-list")
            yield ol

    def on_mount(self) -> None:
        from textual.widgets import OptionList
        ol = self.query_one(OptionList)
        names = [n for n, _, _ in self.presets]
        if self.current in names:
            ol.highlighted = names.index(self.current)
        ol.focus()

    def on_option_list_option_selected(self, event) -> None:
        event.stop()
        # a selection that arrives once the picker has left the top of the
        # stack (escape, or a second enter, came first) is too late: dismiss()
        # pops whatever screen is on top, and with only the main view left
        # Textual raised ScreenStackError
        if self.app.screen is not self or self._chosen:
            return
        self._chosen = True
        self.dismiss(event.option.id)

    _chosen = False

