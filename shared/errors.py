"""Domain errors a use case raises and every service's HTTP layer turns into a problem body: the
status says what kind of refusal it is, `extra` carries what helps the caller act (alternatives)."""
from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400

    def __init__(self, detail: str, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    """The request contradicts the current state (a taken slot, an expired hold)."""

    status = 409


class Invalid(DomainError):
    """Well-formed but impossible: a time the clocks skip, a slot outside opening hours."""

    status = 422


class Gone(DomainError):
    """It existed but can no longer be used (an expired survey link)."""

    status = 410
