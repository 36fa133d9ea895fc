"""IANA zone names as a validated field: instants are stored in UTC and computed in a store's or a
program's own zone, so an unknown name is refused where it comes in."""
from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field


def _known(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {value!r}") from None
    return value


IanaZone = Annotated[str, AfterValidator(_known), Field(description="IANA zone, e.g. Asia/Shanghai, Europe/London.")]
