"""What every screen of the app shares: it closes only from the top of the
stack (see SteadyResize.dismiss), and it ignores a Resize that is already
out of date.

Textual 8.2.8 posts a Resize to a screen from two places: the app (the
terminal's size, debounced) and the screen's own layout pass (its region
changed, so it tells itself its new size).  If two Resizes of different
sizes are queued at a screen at once, each lays the screen out again at its
size, which changes the region, which posts that size again: the screen
alternates between the two sizes for ever, a full repaint each time, and
nothing else runs (no key is read; ``TERM=dumb`` starts exactly so, Rich
assuming 80×25 while the driver reads the real size).  The app's size is
set as soon as the terminal reports one, before the screens hear of it, so
a Resize that does not match it is stale: the newer one is on its way.
"""

from __future__ import annotations

from textual import events
from textual.await_complete import AwaitComplete

__all__ = ["MainScreen", "SteadyResize"]


class SteadyResize:
    """Mixin for a Screen (put it before Screen/ModalScreen in the bases)."""

    def dismiss(self, result=None):
        """Close this screen with ``result`` -- only if it is the one on top.

        Textual's dismiss() pops whatever screen is on top; a late request
        (a selection, a second enter, a command that arrives once escape or
        the too-small cover came first) popped another screen, or raised
        ScreenStackError with only the main view left, or called this
        screen's callback twice (InvalidStateError)."""
        if self.app.screen is not self:
            return AwaitComplete.nothing()
        return super().dismiss(result)

    def _on_resize(self, event: events.Resize) -> None:
        app = self.app
        if app._size is not None and event.size != app.size:
            event.prevent_default()          # not Screen._on_resize: no layout for a size that has gone
            event.stop()


from textual.screen import Screen  # noqa: E402


class MainScreen(SteadyResize, Screen):
    """The app's first screen (the five panes)."""
