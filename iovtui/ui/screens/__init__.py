"""Modal screens: the key help, the annotated hex view of a RAM page, the preset picker."""

from .help import HelpScreen
from .hexview import HexScreen, annotate_page, hex_text
from .presets import PresetScreen

__all__ = ["HelpScreen", "HexScreen", "PresetScreen", "annotate_page", "hex_text"]
