"""Events identity publishes about customer profiles (topic `customers.changes`), and the erasure
confirmations every service sends back (topic `erasure.confirmations`).

No event here carries personal data: identifiers appear as types only, so the topics can keep their
history after a customer is erased.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import Field

from shared.events.base import Event, Payload, UtcDatetime

Purpose = Literal["marketing_sms", "marketing_wechat", "marketing_email", "analytics"]
PURPOSES: tuple[str, ...] = Purpose.__args__


class CustomerEvent(Event):
    topic_kind: ClassVar[str] = "customer"
    customer_id: UUID


class CustomerCreatedPayload(Payload):
    identifier_types: tuple[str, ...] = Field(description="Types only: values are personal data.")
    first_event_id: UUID | None = None
    rule: str = Field("new_identifiers", description="new_identifiers, split, household_conflict, import")


class CustomerCreated(CustomerEvent):
    type: Literal["customer.created"] = "customer.created"
    schema_version: Literal[1] = 1
    payload: CustomerCreatedPayload


class CustomerMergedPayload(Payload):
    merged_customer_ids: Annotated[tuple[UUID, ...], Field(min_length=1)]
    rule: str = Field(description="shared_strong_identifier, suggestion_accepted or auto_match")
    triggering_event_ids: tuple[UUID, ...] = ()
    decision_id: UUID | None = None
    evidence_identifier_types: tuple[str, ...] = ()


class CustomerMerged(CustomerEvent):
    """Profiles were unioned; `customer_id` is the survivor (the oldest). Move the merged ids' state to it."""

    type: Literal["customer.merged"] = "customer.merged"
    schema_version: Literal[1] = 1
    payload: CustomerMergedPayload


class CustomerSplitPayload(Payload):
    new_customer_id: UUID = Field(description="The profile that received the moved identifiers and events.")
    moved_identifier_types: tuple[str, ...]
    moved_event_ids: tuple[UUID, ...] = Field(
        (), description="Touchpoints re-attributed to new_customer_id (large splits come in several events).")
    part: int = Field(1, ge=1, description="This event's part when moved_event_ids come in several events.")
    parts: int = Field(1, ge=1)
    decision_id: UUID
    reason: str = ""


class CustomerSplit(CustomerEvent):
    """Identifiers and their touchpoints moved from `customer_id` to `new_customer_id`: move their data too."""

    type: Literal["customer.split"] = "customer.split"
    schema_version: Literal[1] = 1
    payload: CustomerSplitPayload


class CustomerConsentChangedPayload(Payload):
    purpose: Purpose
    granted: bool
    source: str
    effective_at: UtcDatetime


class CustomerConsentChanged(CustomerEvent):
    """A consent was given or withdrawn; downstream senders must honour it from effective_at."""

    type: Literal["customer.consent_changed"] = "customer.consent_changed"
    schema_version: Literal[1] = 1
    payload: CustomerConsentChangedPayload


class CustomerErasedPayload(Payload):
    erasure_request_id: UUID
    customer_ids: Annotated[tuple[UUID, ...], Field(min_length=1,
                            description="Every id that resolved to this person (survivor and merged ids).")]


class CustomerErased(CustomerEvent):
    """Delete or anonymise everything held about these ids, then publish customer.erasure_confirmed."""

    type: Literal["customer.erased"] = "customer.erased"
    schema_version: Literal[1] = 1
    payload: CustomerErasedPayload


class ErasureConfirmedPayload(Payload):
    erasure_request_id: UUID
    service: str
    records_deleted: int = Field(0, ge=0)
    records_anonymised: int = Field(0, ge=0)


class ErasureConfirmed(CustomerEvent):
    """A service finished erasing a customer (its deletion is committed)."""

    topic_kind: ClassVar[str] = "erasure"
    type: Literal["customer.erasure_confirmed"] = "customer.erasure_confirmed"
    schema_version: Literal[1] = 1
    payload: ErasureConfirmedPayload


CUSTOMER_EVENT_TYPES = (
    CustomerCreated, CustomerMerged, CustomerSplit, CustomerConsentChanged, CustomerErased, ErasureConfirmed,
)
