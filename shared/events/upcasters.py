"""Upcasters turn an old schema version of an event into the next one at decode time, so stored
or in-flight old events keep working and handlers only ever see the current model."""
from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal

Upcaster = Callable[[dict], dict]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int):
    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


def _to_minor(amount) -> int:
    return int((Decimal(str(amount)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@upcaster("purchase.completed", 1)
def upcast_purchase_completed_v1_to_v2(doc: dict) -> dict:
    """v1 carried money as decimal major units (`amount`, `unit_price`); v2 uses integer minor units."""
    payload = dict(doc.get("payload") or {})
    if "amount" in payload:
        payload["amount_minor"] = _to_minor(payload.pop("amount"))
    payload["items"] = [
        {**{k: v for k, v in item.items() if k != "unit_price"}, "unit_price_minor": _to_minor(item["unit_price"])}
        if "unit_price" in item else item
        for item in payload.get("items", [])
    ]
    return {**doc, "payload": payload, "schema_version": 2}


@upcaster("booking.cancelled", 1)
def upcast_booking_cancelled_v1_to_v2(doc: dict) -> dict:
    """v1 said only whether the cancellation was late; whether a fee is due was never decided, so none is."""
    payload = {**(doc.get("payload") or {}), "fee_applies": False}
    return {**doc, "payload": payload, "schema_version": 2}
