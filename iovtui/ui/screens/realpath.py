"""The palette's "Compare with a real trace…": asks for the path of a file a
real KVM host recorded (perf kvm stat report, trace-cmd report / perf script
of kvm:kvm_exit, kvm_stat --log / --csv / --once) and, if it reads, hands the
trace back (the compare view then shows it next to the model's columns)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from .base import SteadyResize

__all__ = ["RealPathScreen"]


class RealPathScreen(SteadyResize, ModalScreen):
    """One line to type a path in; enter reads it, escape closes."""

    DEFAULT_CSS = """
    RealPathScreen { align: center middle; }
    RealPathScreen > Vertical { width: 80%; max-width: 100; height: auto; border: round #d7afff;
                                background: $surface; padding: 0 1; }
    RealPathScreen #real-error { color: #ff875f; height: auto; }
    """
    BINDINGS = [Binding("escape", "close", "close")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("Compare with a real trace — the path of a file from perf kvm stat report, "
                              "trace-cmd report, perf script or kvm_stat (enter reads it, escape closes)",
                              style="bold"))
            yield Input(placeholder="e.g. perf-kvm-report.txt", id="real-path")
            yield Static("", id="real-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        from ...real import RealTraceError, read_real

        event.stop()
        path = event.value.strip()
        if not path:
            return
        import os.path
        try:
            trace = read_real(os.path.expanduser(path))
        except RealTraceError as e:             # the same one line as `iovtui real` prints
            self.query_one("#real-error", Static).update(Text(str(e)))
            return
        self.dismiss(trace)

    def action_close(self) -> None:
        self.dismiss(None)
