"""The command palette (ctrl+p), guarded against two Textual 8.2.8 faults."""

from __future__ import annotations

from textual.command import CommandList, CommandPalette

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

    def _action_command_list(self, action: str) -> None:
        if action in ("page_up", "page_down"):
            commands = self.query_one(CommandList)
            h = commands.highlighted
            if h is not None and (h not in commands._index_to_line or not commands._lines):
                return
        super()._action_command_list(action)
