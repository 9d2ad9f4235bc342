"""The errors a person's request can cause in the services, whose message says what to do
differently: a bad upload, a setting out of range, an index that cannot answer. The UI shows
them as they are; anything else is a bug, logged and reported in general terms."""

from __future__ import annotations

from index import SearchIndexError

from .uploads import UploadError

USER_ERRORS: tuple[type[Exception], ...] = (UploadError, ValueError, SearchIndexError)
