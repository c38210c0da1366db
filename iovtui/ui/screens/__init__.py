"""Screens: the compare view (full size); modal: the key help, the annotated hex view of a RAM page, the preset picker."""

from .compare import CompareScreen
from .help import HelpScreen
from .hexview import HexScreen, annotate_page, hex_text
from .predict import QuestionScreen
from .presets import PresetScreen
from .toosmall import TooSmallScreen

__all__ = ["CompareScreen", "HelpScreen", "HexScreen", "PresetScreen", "QuestionScreen", "TooSmallScreen", "annotate_page", "hex_text"]
