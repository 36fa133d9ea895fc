"""Events identity publishes about customer profiles (topic `customers.changes`)."""
from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from shared.events.base import Event, Payload


class CustomerCreatedPayload(Payload):
    identifier_types: tuple[str, ...] = Field(description="Types only: values are personal data.")
    first_event_id: UUID


class CustomerCreated(Event):
    type: Literal["customer.created"] = "customer.created"
    schema_version: Literal[1] = 1
    customer_id: UUID
    payload: CustomerCreatedPayload


class CustomerMergedPayload(Payload):
    merged_customer_ids: Annotated[tuple[UUID, ...], Field(min_length=1)]
    rule: str
    triggering_event_ids: tuple[UUID, ...] = ()


class CustomerMerged(Event):
    """Profiles were unioned; `customer_id` is the survivor (the oldest)."""

    type: Literal["customer.merged"] = "customer.merged"
    schema_version: Literal[1] = 1
    customer_id: UUID
    payload: CustomerMergedPayload


CUSTOMER_EVENT_TYPES = (CustomerCreated, CustomerMerged)
