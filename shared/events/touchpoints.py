"""Touchpoint types: the 12-point service journey of a grooming / detailing chain, plus commerce,
complaints and loyalty. Type names are past tense and never renamed; a changed shape gets a new
`schema_version` and an upcaster in `shared.events.upcasters`.

Money is always integer minor units (fen, cents) with an ISO currency, never floats.
"""
from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import Field

from shared.events.base import Currency, MinorUnits, Payload, Slug, Touchpoint, UtcDatetime
from shared.events.booking import BOOKING_TOUCHPOINT_TYPES

Text = Annotated[str, Field(max_length=2000)]
ShortText = Annotated[str, Field(max_length=200)]


# 1. Ad exposure
class AdExposedPayload(Payload):
    campaign_id: Slug
    platform: ShortText = Field(description="douyin, xiaohongshu, wechat_moments, google …")
    creative_id: Slug | None = None
    clicked: bool = False


class AdExposed(Touchpoint):
    """The customer saw (or clicked) one of the chain's ads."""

    type: Literal["ad.exposed"] = "ad.exposed"
    schema_version: Literal[1] = 1
    payload: AdExposedPayload


# 2. Social interaction
class SocialInteractedPayload(Payload):
    platform: ShortText
    action: Literal["follow", "like", "comment", "share", "message", "mention"]
    content_id: Slug | None = None


class SocialInteracted(Touchpoint):
    """A follow, like, comment, share or direct message on a social account of the chain."""

    type: Literal["social.interacted"] = "social.interacted"
    schema_version: Literal[1] = 1
    payload: SocialInteractedPayload


# 3. Store visit
class StoreVisitedPayload(Payload):
    purpose: Literal["browse", "enquiry", "pickup", "service", "other"] = "browse"


class StoreVisited(Touchpoint):
    """The customer walked into a store (counted by staff, Wi-Fi or the POS)."""

    type: Literal["store.visited"] = "store.visited"
    schema_version: Literal[1] = 1
    payload: StoreVisitedPayload = StoreVisitedPayload()


# 4. Consultation
class ConsultationHeldPayload(Payload):
    topic: ShortText
    staff_id: Slug | None = None
    service_category: Slug | None = None
    quoted_amount_minor: MinorUnits | None = None
    currency: Currency = "CNY"


class ConsultationHeld(Touchpoint):
    """Advice or a quote before a purchase: coat condition, paint correction options, …"""

    type: Literal["consultation.held"] = "consultation.held"
    schema_version: Literal[1] = 1
    payload: ConsultationHeldPayload


# 5. Booking
class AppointmentBookedPayload(Payload):
    appointment_id: Slug
    service_id: Slug
    service_category: Slug | None = None
    starts_at: UtcDatetime
    staff_id: Slug | None = None


class AppointmentBooked(Touchpoint):
    type: Literal["booking.created"] = "booking.created"
    schema_version: Literal[1] = 1
    payload: AppointmentBookedPayload


# 6. Reception / check-in
class CheckedInPayload(Payload):
    appointment_id: Slug | None = None
    staff_id: Slug | None = None


class CheckedIn(Touchpoint):
    """Reception: the pet or vehicle was handed over at the counter."""

    type: Literal["reception.checked_in"] = "reception.checked_in"
    schema_version: Literal[1] = 1
    payload: CheckedInPayload = CheckedInPayload()


# 7. Service performed
class ServicePerformedPayload(Payload):
    appointment_id: Slug | None = None
    service_ids: Annotated[tuple[Slug, ...], Field(min_length=1, max_length=20)]
    service_category: Slug | None = None
    staff_id: Slug | None = None
    amount_minor: MinorUnits
    currency: Currency = "CNY"


class ServicePerformed(Touchpoint):
    type: Literal["service.performed"] = "service.performed"
    schema_version: Literal[1] = 1
    payload: ServicePerformedPayload


# 8. Result shown
class ResultShownPayload(Payload):
    appointment_id: Slug | None = None
    media_count: Annotated[int, Field(ge=0, le=100)] = 0
    medium: Literal["in_store", "photo", "video", "report"] = "photo"


class ResultShown(Touchpoint):
    """Before/after photos or a walk-around shown to the customer at pickup."""

    type: Literal["result.shown"] = "result.shown"
    schema_version: Literal[1] = 1
    payload: ResultShownPayload = ResultShownPayload()


# 9. Follow-up contact
class FollowUpContactedPayload(Payload):
    reason: Literal["care_tips", "rebook_reminder", "satisfaction_check", "case_followup", "other"]
    outcome: Literal["reached", "no_answer", "replied", "opted_out"] = "reached"


class FollowUpContacted(Touchpoint):
    type: Literal["followup.contacted"] = "followup.contacted"
    schema_version: Literal[1] = 1
    payload: FollowUpContactedPayload


# 10. Survey answered
class SurveyAnsweredPayload(Payload):
    survey_id: Slug | None = None
    appointment_id: Slug | None = None
    nps: Annotated[int, Field(ge=0, le=10)] | None = None
    csat: Annotated[int, Field(ge=1, le=5)] | None = None
    step_ratings: dict[Slug, Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=dict)
    staff_id: Slug | None = None
    service_id: Slug | None = None


class SurveyAnswered(Touchpoint):
    type: Literal["survey.answered"] = "survey.answered"
    schema_version: Literal[1] = 1
    payload: SurveyAnsweredPayload


# 11. Recommendation offered
class RecommendationOfferedPayload(Payload):
    item_id: Slug = Field(description="A product or service recommended.")
    accepted: bool | None = None
    staff_id: Slug | None = None


class RecommendationOffered(Touchpoint):
    type: Literal["recommendation.offered"] = "recommendation.offered"
    schema_version: Literal[1] = 1
    payload: RecommendationOfferedPayload


# 12. Membership invitation
class MembershipInvitedPayload(Payload):
    program: Slug = "default"
    accepted: bool | None = None


class MembershipInvited(Touchpoint):
    type: Literal["membership.invited"] = "membership.invited"
    schema_version: Literal[1] = 1
    payload: MembershipInvitedPayload = MembershipInvitedPayload()


# Commerce
class PurchaseItem(Payload):
    sku: Slug
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    unit_price_minor: MinorUnits


class PurchaseCompletedPayload(Payload):
    order_id: Slug
    amount_minor: MinorUnits
    currency: Currency = "CNY"
    items: Annotated[tuple[PurchaseItem, ...], Field(max_length=200)] = ()


class PurchaseCompleted(Touchpoint):
    """A retail purchase (food, shampoo, wax …). v2 moved money to integer minor units."""

    type: Literal["purchase.completed"] = "purchase.completed"
    schema_version: Literal[2] = 2
    payload: PurchaseCompletedPayload


class RefundIssuedPayload(Payload):
    order_id: Slug
    amount_minor: MinorUnits
    currency: Currency = "CNY"
    reason: ShortText | None = None


class RefundIssued(Touchpoint):
    type: Literal["refund.issued"] = "refund.issued"
    schema_version: Literal[1] = 1
    payload: RefundIssuedPayload


class ComplaintFiledPayload(Payload):
    category: Literal["service_quality", "waiting_time", "staff", "price", "cleanliness", "injury", "damage", "other"]
    severity: Literal["low", "medium", "high"] = "medium"
    appointment_id: Slug | None = None
    comment: Text | None = Field(None, description="Free text; treated as personal data.")


class ComplaintFiled(Touchpoint):
    type: Literal["complaint.filed"] = "complaint.filed"
    schema_version: Literal[1] = 1
    payload: ComplaintFiledPayload


# Referral: the envelope's identifiers are the referrer's (who earns for it)
class ReferralConvertedPayload(Payload):
    referral_id: Slug
    referred_order_id: Slug | None = None


class ReferralConverted(Touchpoint):
    """Someone the customer referred became a paying customer."""

    type: Literal["referral.converted"] = "referral.converted"
    schema_version: Literal[1] = 1
    payload: ReferralConvertedPayload


# Profile and consent, from any channel (app sign-up, POS registration, import)
class PetProfile(Payload):
    name: ShortText
    species: Literal["dog", "cat", "rabbit", "bird", "other"] = "dog"
    breed: ShortText | None = None
    size: Literal["xs", "s", "m", "l", "xl"] | None = None
    coat: Literal["short", "medium", "long", "double", "curly", "wire"] | None = None
    birthday: date | None = None
    vaccinations: dict[Slug, date] = Field(default_factory=dict, description="Vaccine -> date given.")


class VehicleProfile(Payload):
    plate: ShortText
    make: ShortText | None = None
    model: ShortText | None = None
    colour: ShortText | None = None
    vehicle_class: Literal["compact", "sedan", "suv", "van", "truck", "other"] | None = None


class ProfileUpdatedPayload(Payload):
    """Personal fields are encrypted by identity and never leave it: the resolved copy of this event
    carries only which fields were given."""

    name: ShortText | None = None
    birth_date: date | None = None
    gender: Literal["female", "male", "other"] | None = None
    address: Text | None = None
    verified: bool = Field(False, description="The customer proved these (e.g. SMS code, ID at the counter).")
    pets: Annotated[tuple[PetProfile, ...], Field(max_length=20)] = ()
    vehicles: Annotated[tuple[VehicleProfile, ...], Field(max_length=20)] = ()
    given_fields: tuple[str, ...] = Field((), description="Set by identity on the redacted, resolved copy.")


class ProfileUpdated(Touchpoint):
    """The customer registered or corrected their profile: name, birth date, address, pets, vehicles."""

    type: Literal["profile.updated"] = "profile.updated"
    schema_version: Literal[1] = 1
    payload: ProfileUpdatedPayload


class ConsentChangedPayload(Payload):
    purpose: Literal["marketing_sms", "marketing_wechat", "marketing_email", "analytics"]
    granted: bool
    evidence: ShortText | None = Field(None, description="Checkbox text version, unsubscribe keyword, …")


class ConsentChanged(Touchpoint):
    """A consent given or withdrawn at a channel (sign-up checkbox, SMS STOP, WeChat unsubscribe)."""

    type: Literal["consent.changed"] = "consent.changed"
    schema_version: Literal[1] = 1
    payload: ConsentChangedPayload


JOURNEY = (
    AdExposed, SocialInteracted, StoreVisited, ConsultationHeld, AppointmentBooked, CheckedIn,
    ServicePerformed, ResultShown, FollowUpContacted, SurveyAnswered, RecommendationOffered,
    MembershipInvited,
)
TOUCHPOINT_TYPES: tuple[type[Touchpoint], ...] = JOURNEY + (
    PurchaseCompleted, RefundIssued, ComplaintFiled, ReferralConverted,
    ProfileUpdated, ConsentChanged,
) + BOOKING_TOUCHPOINT_TYPES
