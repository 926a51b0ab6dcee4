"""The one error 1C needs beyond the core tree."""

from __future__ import annotations

from connector.errors import PermanentError


class UrlTooLong(PermanentError):
    """IIS 404.15 / HTTP 414: the query string was too long; the caller splits its key batch."""
