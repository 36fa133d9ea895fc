"""Events the loyalty service publishes about a member's points and tier (topic `loyalty.changes`,
keyed by customer id). Every one carries the balance after it, so a reader (the hub's 360, insights,
a subscriber) keeps the latest balance without asking loyalty."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import Field

from shared.events.base import Payload, Slug, UtcDatetime
from shared.events.customers import CustomerEvent

TierName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="silver, gold, diamond, vip …")]


class LoyaltyEvent(CustomerEvent):
    topic_kind: ClassVar[str] = "loyalty"


class PointsPayload(Payload):
    points: Annotated[int, Field(ge=0)]
    balance_after: int = Field(description="May be negative after a reversal of points already spent.")
    store_id: Slug | None = None
    entry_id: UUID


class PointsEarnedPayload(PointsPayload):
    source_event_id: UUID | None = None
    source_type: str = Field(description="The touchpoint type that earned them (booking.completed …).")
    expires_at: UtcDatetime


class PointsEarned(LoyaltyEvent):
    type: Literal["loyalty.points_earned"] = "loyalty.points_earned"
    schema_version: Literal[1] = 1
    payload: PointsEarnedPayload


class PointsRedeemedPayload(PointsPayload):
    redemption_id: UUID


class PointsRedeemed(LoyaltyEvent):
    type: Literal["loyalty.points_redeemed"] = "loyalty.points_redeemed"
    schema_version: Literal[1] = 1
    payload: PointsRedeemedPayload


class PointsExpired(LoyaltyEvent):
    type: Literal["loyalty.points_expired"] = "loyalty.points_expired"
    schema_version: Literal[1] = 1
    payload: PointsPayload


class PointsReversedPayload(PointsPayload):
    source_event_id: UUID = Field(description="The refund, cancellation or no-show that reversed them.")
    reversed_entry_id: UUID


class PointsReversed(LoyaltyEvent):
    type: Literal["loyalty.points_reversed"] = "loyalty.points_reversed"
    schema_version: Literal[1] = 1
    payload: PointsReversedPayload


class PointsAdjustedPayload(Payload):
    points: int = Field(description="Signed: an adjustment may add or remove points.")
    balance_after: int
    entry_id: UUID
    reason: Literal["admin", "merge", "split", "erasure"]


class PointsAdjusted(LoyaltyEvent):
    """An admin adjustment, or points moved by a merge or split (history is kept on both profiles)."""

    type: Literal["loyalty.points_adjusted"] = "loyalty.points_adjusted"
    schema_version: Literal[1] = 1
    payload: PointsAdjustedPayload


class TierChangedPayload(Payload):
    from_tier: TierName | None = None
    to_tier: TierName
    reason: str = Field(description="earned, review, merge or split, with the points earned in the window.")
    earned_in_window: int
    balance_after: int


class TierChanged(LoyaltyEvent):
    type: Literal["loyalty.tier_changed"] = "loyalty.tier_changed"
    schema_version: Literal[1] = 1
    payload: TierChangedPayload


LOYALTY_EVENT_TYPES = (PointsEarned, PointsRedeemed, PointsExpired, PointsReversed, PointsAdjusted, TierChanged)
