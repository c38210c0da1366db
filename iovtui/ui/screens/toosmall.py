"""Shown over any other screen (a modal, the compare view) while the
terminal is smaller than the app needs; the main screen has its own message
(the ``-tiny`` class).  It goes away when the terminal grows again."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static
from .base import SteadyResize

__all__ = ["TooSmallScreen"]


class TooSmallScreen(SteadyResize, Screen):
    BINDINGS = [
        Binding("q", "app.quit", "quit"),
        # every other key of the app and its screens does nothing until the terminal grows
        Binding("1,2,3,space,n,b,plus,equals_sign,minus,p,c,e,v,i,k,f,g,t,r,m,enter,escape,question_mark,"
                "left,right,up,down,a,d,s", "ignore", show=False),
    ]
    DEFAULT_CSS = """
    TooSmallScreen { align: center middle; }
    TooSmallScreen > Static {
        width: 1fr; height: 1fr; content-align: center middle; text-align: center;
        text-style: bold; padding: 0 1;
    }
    """

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        yield Static(self.message, id="too-small-msg")

    def action_ignore(self) -> None:
        pass

    def update(self, message: str) -> None:
        self.message = message            # (compose shows it if the screen is not composed yet)
        for msg in self.query("#too-small-msg").results(Static):
            msg.update(message)
