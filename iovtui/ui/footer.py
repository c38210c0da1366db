"""Textual's Footer, composed once per change of what it shows.

Two costs of Textual 8.2.8's Footer that the app does not need to pay:

- ``FooterKey.compact`` is a ``reactive(True)`` whose watcher runs at
  initialisation: every key is mounted with the ``-compact`` class added (a
  style pass over the key), then the footer's data binding sets
  ``compact = False`` and takes it off again (a second pass) -- 22 style
  passes for the main view's 11 keys, every time the footer is composed.
  Each key here gets the value it would end with before it mounts: the same
  classes, the same look, no pass.
- The footer recomposes (removes and mounts every key) on each "bindings
  updated" signal, which a focus change sends -- twice right after the first
  frame, and on every ``tab`` -- although the keys it shows are the same.
  Here it recomposes only when what it would compose differs from what it
  shows (the shown bindings, their state, the palette key, compact).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

__all__ = ["KeysFooter"]


class KeysFooter(Footer):
    """A Footer whose keys start with their final ``compact`` value, and
    which skips a recompose that would change nothing."""

    _shown: tuple | None = None

    def _what_it_shows(self, screen) -> tuple:
        app = self.app
        palette = app.COMMAND_PALETTE_BINDING if self.show_command_palette and app.ENABLE_COMMAND_PALETTE else None
        return (tuple((key, binding, enabled, tooltip)
                      for key, (_node, binding, enabled, tooltip) in screen.active_bindings.items()
                      if binding.show or key == palette),
                palette, self.compact, self.combine_groups)

    def compose(self) -> ComposeResult:
        if self._bindings_ready:
            self._shown = self._what_it_shows(self.screen)
        for widget in super().compose():
            if isinstance(widget, FooterKey):
                # the value it ends with: the footer's where the key is bound to
                # it (the binding then changes nothing), else the default, True
                # (the palette key); the class the watcher would have set, set
                # now, before the key's first style pass
                bound = "compact" in (widget._reactive_connect or {})
                compact = self.compact if bound else True
                widget.set_reactive(FooterKey.compact, compact)
                widget.set_class(compact, "-compact", update=False)
            yield widget

    def bindings_changed(self, screen) -> None:
        if (self._shown is not None and self.is_attached and screen is self.screen
                and self._what_it_shows(screen) == self._shown):
            self._bindings_ready = True
            return                                   # the same keys: nothing to recompose
        super().bindings_changed(screen)
