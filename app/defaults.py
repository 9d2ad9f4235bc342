"""Defaults of ``eat app`` that its flags show (kept apart so ``eat --help`` loads nothing
heavy)."""

DEFAULT_GALLERY = "fashion-mnist:test"
DEFAULT_MAP_POINTS = 5000
