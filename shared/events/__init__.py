"""The event contract: envelope, types, codec. See docs/events/ for the generated schemas."""
from shared.events.base import Channel, Event, Identifier, IdentifierType, Touchpoint, TraceContext, utcnow
from shared.events.codec import EVENT_TYPES, TOUCHPOINT_TYPE_NAMES, DecodeError, decode, encode, from_document
from shared.events.customers import (
    CustomerConsentChanged, CustomerCreated, CustomerErased, CustomerEvent, CustomerMerged, CustomerSplit,
    ErasureConfirmed,
)

__all__ = [
    "Channel", "CustomerConsentChanged", "CustomerCreated", "CustomerErased", "CustomerEvent", "CustomerMerged",
    "CustomerSplit", "ErasureConfirmed", "DecodeError", "EVENT_TYPES", "Event", "Identifier",
    "IdentifierType", "TOUCHPOINT_TYPE_NAMES", "Touchpoint", "TraceContext", "decode", "encode",
    "from_document", "utcnow",
]
