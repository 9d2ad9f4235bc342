"""What the result objects share when they become the API's JSON."""

from __future__ import annotations

from collections.abc import Mapping


def attributes(obj, *names: str, rename: Mapping[str, str] | None = None) -> dict:
    """``{name: obj.name}`` for each of ``names``, in order; ``rename`` maps an attribute to
    the key it goes by (``{"item_id": "id"}``)."""
    rename = rename or {}
    return {rename.get(name, name): getattr(obj, name) for name in names}


def rounded(scores: Mapping[str, float] | None, digits: int = 4) -> dict[str, float] | None:
    """Scores rounded for display (None stays None)."""
    return None if scores is None else {k: round(v, digits) for k, v in scores.items()}
