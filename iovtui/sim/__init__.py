"""The model: pure Python, never imports textual or rich (the UI reads it)."""
