"""The command palette (ctrl+p), guarded against Textual 8.2.8 faults."""

from __future__ import annotations

from textual.command import CommandList, CommandPalette
from textual.widgets import LoadingIndicator

from .base import SteadyResize

__all__ = ["IovCommandPalette"]


class IovCommandPalette(SteadyResize, CommandPalette):
    """Textual's palette, with PageUp / PageDown ignored while it is still filling.

    Textual 8.2.8's OptionList._move_page looks the highlighted option up in
    its line map, which is built only once the list has been laid out; the
    palette highlights its first command as soon as the commands arrive, so
    a PageDown typed (or pasted) right after ctrl+p, before the next layout,
    raised ``KeyError: 0`` and ended the app.  The keys work again a frame
    later, once the list is on screen.
    """

    # Textual's search worker goes on after the palette is closed (escape,
    # or a key that pops it, while it still gathers commands) and shows or
    # hides the list it no longer has: NoMatches "CommandList" ended the app
    # (found by the fuzz test).  A closed palette has nothing to show.
    def _watch__list_visible(self) -> None:
        if self.query(CommandList) and self.query("#--input"):
            super()._watch__list_visible()

    async def _watch__show_busy(self) -> None:
        if self.query(CommandList) and self.query(LoadingIndicator):
            await super()._watch__show_busy()

    def _action_command_list(self, action: str) -> None:
        if action in ("page_up", "page_down"):
            commands = self.query_one(CommandList)
            h = commands.highlighted
            if h is not None and (h not in commands._index_to_line or not commands._lines):
                return
        super()._action_command_list(action)
