"""The errors a search index raises: each says what is wrong and, where it can, what to do.

All derive from :class:`SearchIndexError` (named so it does not shadow Python's built-in
``IndexError``), so a caller can catch every index problem with one ``except``.
"""

from __future__ import annotations


class SearchIndexError(Exception):
    """Base class of every error about a search index."""


class IndexFormatError(SearchIndexError):
    """An index directory that is missing, foreign, truncated, corrupt or of another version."""


class FingerprintMismatchError(SearchIndexError):
    """The index was built with another model than the one given."""


class DimensionMismatchError(SearchIndexError, ValueError):
    """Vectors whose dimension differs from the index's."""


class EmptyIndexError(SearchIndexError):
    """A search on an index that holds no vectors."""


class UnknownIdError(SearchIndexError):
    """Item ids that the index does not hold."""


class ImageDecodeError(SearchIndexError, ValueError):
    """An image file (or upload) that cannot be decoded."""
