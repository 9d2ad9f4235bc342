"""Plurals and escaping of user-given names."""

from __future__ import annotations


def test_texts_pluralise_and_escape_user_names():
    from app.services.text import escape_markdown, plural
    from app.services.uploads import Skipped
    from app.ui.present import skipped_markdown

    assert plural(1, "cluster") == "1 cluster" and plural(2, "image") == "2 images"
    assert plural(0, "image") == "0 images"
    import html

    name = "**bold** [x](http://e) <b> a_b\\c www.x.com $x$"
    escaped = escape_markdown(name)
    assert html.unescape(escaped) == name  # shown as the very characters
    assert not any(ch in escaped for ch in "*[]()<>_\\$") and "http:" not in escaped
    assert "www." not in escaped and "\\" not in escaped
    lines = skipped_markdown([Skipped(f"f_{i}.txt", "not an image") for i in range(25)], 20)
    assert lines.count("\n") == 20 and lines.endswith("… and 5 more skipped files")
    assert lines.startswith("- f&#95;0&#46;txt: not an image")
