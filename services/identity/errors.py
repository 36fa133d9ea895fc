"""Domain errors the API maps to HTTP statuses (404, 409, 410)."""
from __future__ import annotations

from datetime import datetime


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    """The request contradicts the current state; the message says how."""


class Gone(Exception):
    """The customer was erased; `erased_at` says when."""

    def __init__(self, erased_at: datetime | None = None):
        super().__init__("erased")
        self.erased_at = erased_at
