"""The envelope every event travels in.

Events are frozen: a consumer can never mutate what it received, only derive a new event
(`model_copy(update=...)`). Datetimes must carry a timezone; they are normalised to UTC.
"""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Slug = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]  # ISO 4217
MinorUnits = Annotated[int, Field(ge=0, description="Amount in minor units (fen, cents).")]


class Channel(StrEnum):
    app = "app"
    wechat_miniprogram = "wechat_miniprogram"
    web = "web"
    pos = "pos"
    phone = "phone"
    walk_in = "walk_in"
    social = "social"
    ads = "ads"


class IdentifierType(StrEnum):
    """Built-in identifier types; tenants may add `custom:<name>` types."""

    phone = "phone"
    email = "email"
    wechat_openid = "wechat_openid"  # scoped to the WeChat app id
    wechat_unionid = "wechat_unionid"
    app_user_id = "app_user_id"
    member_card = "member_card"
    pos_customer_id = "pos_customer_id"  # scoped to the store whose POS issued it
    license_plate = "license_plate"
    source_record = "source_record"  # a legacy system's record key, scoped to that system (imports)


class Identifier(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Annotated[str, Field(pattern=r"^([a-z_]+|custom:[a-z0-9_]{1,32})$", max_length=48)]
    value: Annotated[str, Field(min_length=1, max_length=256)]
    scope: Annotated[str | None, Field(max_length=128)] = Field(
        None, description="App id for wechat_openid, store id for pos_customer_id."
    )


class TraceContext(BaseModel):
    """W3C trace context, so one touchpoint is one trace across services."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    traceparent: str | None = None
    tracestate: str | None = None


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmptyPayload(Payload):
    pass


class Event(BaseModel):
    """Fields every event has, touchpoint or not."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    topic_kind: ClassVar[str] = "event"

    event_id: UUID
    type: str
    schema_version: int = 1
    occurred_at: UtcDatetime
    recorded_at: UtcDatetime
    tenant_id: Slug
    source: Annotated[str, Field(min_length=1, max_length=64)]
    trace: TraceContext | None = None

    @classmethod
    def type_name(cls) -> str:
        return cls.model_fields["type"].default

    @classmethod
    def current_version(cls) -> int:
        return cls.model_fields["schema_version"].default


class Touchpoint(Event):
    """A customer touchpoint: one step of the journey, from any channel or service."""

    topic_kind: ClassVar[str] = "touchpoint"

    store_id: Slug | None = None
    channel: Channel
    identifiers: Annotated[tuple[Identifier, ...], Field(min_length=1, max_length=20)]
    customer_id: UUID | None = Field(None, description="Set by identity resolution.")
    payload: Payload = EmptyPayload()


def utcnow() -> datetime:
    return datetime.now(UTC)


def raw_partition_key(event: Touchpoint) -> str:
    """Key of a touchpoint on the raw topic: a hash of its first identifier, so one person's events keep
    their order before resolution and no personal data sits in Kafka keys."""
    first = event.identifiers[0]
    return hashlib.sha256(f"{event.tenant_id}|{first.type}|{first.scope}|{first.value}".encode()).hexdigest()[:32]
