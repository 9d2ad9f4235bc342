"""Small text helpers for what the app shows people."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 image``, ``2 images`` (``many`` for an irregular plural)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


#: characters of a user-supplied name written as HTML character references: Markdown and
#: HTML syntax, and what makes a renderer turn text into a link (``:``, ``/``, ``.``, ``@``)
_LITERAL = set("\\`*_{}[]()<>#+-.!|~:/@&\"'=$")


def escape_markdown(text: str) -> str:
    """A user-supplied name shown literally in Gradio's Markdown: its special characters as
    numeric character references (``&#42;``), which every Markdown and HTML renderer shows
    as the character itself. Backslash escapes are not used: renderers disagree on which
    they honour, and the others show the backslash; the references also keep URL-like
    names (``www.x.com.png``) from becoming links."""
    return "".join(f"&#{ord(ch)};" if ch in _LITERAL else ch for ch in text)
