"""The Textual user interface (reads the model's Frames; computes nothing)."""
