"""Hand-built customer timelines for the insights tests: touchpoints and feedback/loyalty events on
chosen days after T0, as the processors receive them (resolved, with a customer id)."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.events import Identifier
from shared.events.feedback import (
    CaseOpened, CaseOpenedPayload, CaseResolved, CaseResolvedPayload, CaseSlaBreached, CaseSlaBreachedPayload,
)
from shared.events.loyalty import TierChanged, TierChangedPayload
from shared.events.touchpoints import (
    AdExposed, AdExposedPayload, AppointmentBooked, AppointmentBookedPayload, ComplaintFiled, ComplaintFiledPayload,
    ConsultationHeld, ConsultationHeldPayload, PurchaseCompleted, PurchaseCompletedPayload, ServicePerformed,
    ServicePerformedPayload, SurveyAnswered, SurveyAnsweredPayload,
)

T0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
CUSTOMER = uuid.UUID("00000000-0000-4000-8000-000000000001")
OTHER = uuid.UUID("00000000-0000-4000-8000-000000000002")


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def _envelope(n: float, customer: uuid.UUID, tenant: str, store: str | None, channel: str) -> dict:
    return dict(event_id=uuid.uuid4(), occurred_at=day(n), recorded_at=day(n), tenant_id=tenant, source="test",
                store_id=store, channel=channel, customer_id=customer,
                identifiers=(Identifier(type="phone", value="+8613900000001"),))


def ad(n, customer=CUSTOMER, tenant="demo"):
    return AdExposed(**_envelope(n, customer, tenant, None, "ads"), payload=AdExposedPayload(campaign_id="c1",
                                                                                           platform="douyin"))


def consultation(n, customer=CUSTOMER, tenant="demo", quote=None):
    return ConsultationHeld(**_envelope(n, customer, tenant, "s1", "walk_in"), payload=ConsultationHeldPayload(
        topic="coat", quoted_amount_minor=quote))


def booked(n, customer=CUSTOMER, tenant="demo"):
    return AppointmentBooked(**_envelope(n, customer, tenant, "s1", "app"), payload=AppointmentBookedPayload(
        appointment_id=f"a{uuid.uuid4().hex[:8]}", service_id="full-groom", starts_at=day(n + 2)))


def visit(n, customer=CUSTOMER, tenant="demo", amount=30_000, category="full_groom", store="s1", channel="pos",
          currency="CNY"):
    return ServicePerformed(**_envelope(n, customer, tenant, store, channel), payload=ServicePerformedPayload(
        service_ids=("full-groom",), service_category=category, amount_minor=amount, currency=currency))


def purchase(n, customer=CUSTOMER, tenant="demo", amount=8_000, currency="CNY"):
    return PurchaseCompleted(**_envelope(n, customer, tenant, "s1", "pos"), payload=PurchaseCompletedPayload(
        order_id=f"o{uuid.uuid4().hex[:8]}", amount_minor=amount, currency=currency))


def complaint(n, customer=CUSTOMER, tenant="demo"):
    return ComplaintFiled(**_envelope(n, customer, tenant, "s1", "phone"), payload=ComplaintFiledPayload(
        category="waiting_time"))


def answer(n, nps, customer=CUSTOMER, tenant="demo", csat=None):
    return SurveyAnswered(**_envelope(n, customer, tenant, "s1", "app"), payload=SurveyAnsweredPayload(
        nps=nps, csat=csat, staff_id="amy", service_id="full-groom"))


def tier(n, old, new, customer=CUSTOMER, tenant="demo"):
    return TierChanged(event_id=uuid.uuid4(), occurred_at=day(n), recorded_at=day(n), tenant_id=tenant,
                       source="loyalty", customer_id=customer, payload=TierChangedPayload(
                           from_tier=old, to_tier=new, reason="review", earned_in_window=0, balance_after=0))


def case_opened(n, case_id, customer=CUSTOMER, tenant="demo", store="s1"):
    return CaseOpened(event_id=uuid.uuid4(), occurred_at=day(n), recorded_at=day(n), tenant_id=tenant,
                      source="feedback", customer_id=customer, payload=CaseOpenedPayload(
                          case_id=case_id, store_id=store, priority="high", state="open", reason="detractor",
                          owner="manager", first_response_due=day(n + 0.05), resolution_due=day(n + 1)))


def case_resolved(n, case_id, customer=CUSTOMER, tenant="demo", store="s1"):
    return CaseResolved(event_id=uuid.uuid4(), occurred_at=day(n), recorded_at=day(n), tenant_id=tenant,
                        source="feedback", customer_id=customer, payload=CaseResolvedPayload(
                            case_id=case_id, store_id=store, priority="high", state="resolved", reason="detractor",
                            root_cause="waiting", service_step="reception", resolved_in_business_minutes=90))


def case_breached(n, case_id, customer=CUSTOMER, tenant="demo", store="s1"):
    return CaseSlaBreached(event_id=uuid.uuid4(), occurred_at=day(n), recorded_at=day(n), tenant_id=tenant,
                           source="feedback", customer_id=customer, payload=CaseSlaBreachedPayload(
                               case_id=case_id, store_id=store, priority="high", state="open", reason="detractor",
                               sla="first_response", due_at=day(n - 0.01)))
