"""Small text helpers for what the app shows people."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 image``, ``2 images`` (``many`` for an irregular plural)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def escape_markdown(text: str) -> str:
    """A user-supplied name shown literally: Markdown and HTML characters escaped."""
    out = text.replace("\\", "\\\\")
    for ch in "`*_{}[]()<>#+-.!|~":
        out = out.replace(ch, "\\" + ch)
    return out
