"""The one way events go on and come off the wire: JSON bytes, upcast to the current version,
validated into the frozen model of their type."""
from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from shared.events.base import Event
from shared.events.customers import CUSTOMER_EVENT_TYPES
from shared.events.feedback import FEEDBACK_EVENT_TYPES
from shared.events.loyalty import LOYALTY_EVENT_TYPES
from shared.events.scores import SCORE_EVENT_TYPES
from shared.events.touchpoints import TOUCHPOINT_TYPES
from shared.events.upcasters import UPCASTERS

EVENT_TYPES: dict[str, type[Event]] = {m.type_name(): m for m in TOUCHPOINT_TYPES + CUSTOMER_EVENT_TYPES + SCORE_EVENT_TYPES
                                    + LOYALTY_EVENT_TYPES + FEEDBACK_EVENT_TYPES}
TOUCHPOINT_TYPE_NAMES = frozenset(m.type_name() for m in TOUCHPOINT_TYPES)


class DecodeError(ValueError):
    """The bytes are not a valid event of a known type; `reason` says why, for the DLQ or a 4xx."""

    def __init__(self, reason: str, errors: list[dict] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or []


def encode(event: Event) -> bytes:
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))


def upcast(doc: dict) -> dict:
    """Apply upcasters until the document is at its type's current version."""
    model = EVENT_TYPES[doc["type"]]
    version = doc.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise DecodeError(f"schema_version must be a positive integer, got {version!r}")
    current = model.current_version()
    if version > current:
        raise DecodeError(f"{doc['type']} schema_version {version} is newer than this service knows ({current})")
    while version < current:
        step = UPCASTERS.get((doc["type"], version))
        if step is None:
            raise DecodeError(f"no upcaster for {doc['type']} v{version}")
        doc = step(doc)
        version = doc["schema_version"]
    return {**doc, "schema_version": current}


def from_document(doc: Any) -> Event:
    if not isinstance(doc, dict):
        raise DecodeError("an event must be a JSON object")
    event_type = doc.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise DecodeError("type is required")
    if event_type not in EVENT_TYPES:
        raise DecodeError(f"unknown event type {event_type!r}")
    try:
        return EVENT_TYPES[event_type].model_validate(upcast(doc))
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in exc.errors(include_url=False)
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise DecodeError(f"invalid {event_type}: {summary}", errors) from None


def decode(data: bytes) -> Event:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    return from_document(doc)
