"""The `?` overlay: every key."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from rich.table import Table

__all__ = ["HelpScreen"]


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "close")]

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column(style="bold #ffd75f", no_wrap=True)
        t.add_column()
        for k, d in self.keys:
            t.add_row(k, d)
        with VerticalScroll(id="help-box"):
            yield Static(Text("iovtui keys", style="bold"), classes="title")
            yield Static(t)
            yield Static(Text("All actions are also in the command palette (ctrl+p). escape closes.",
                              style="italic grey62"))

