"""Screens: the compare view (full size); modal: the key help, the annotated hex view of a RAM page, the preset picker.

Each loads on first use (PEP 562 ``__getattr__``): the first frame needs
none of them, and the compare view alone (with ``sim.compare``) costs more to
import than a frame takes to draw.
"""

from importlib import import_module

__all__ = ["CompareScreen", "HelpScreen", "HexScreen", "PresetScreen", "QuestionScreen", "SweepScreen", "TooSmallScreen", "annotate_page", "hex_text"]

_HOME = {"CompareScreen": "compare", "HelpScreen": "help", "HexScreen": "hexview", "annotate_page": "hexview",
         "hex_text": "hexview", "QuestionScreen": "predict", "PresetScreen": "presets", "SweepScreen": "sweep",
         "TooSmallScreen": "toosmall"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
