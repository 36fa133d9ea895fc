"""Dashboard data for tests: hand-built customers of two stores scored by the real scoring code
(CustomerBook.rescore, as the processors do) and written to real ClickHouse with their touchpoints,
survey answers and complaint cases."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.insights.customers import Changes, CustomerBook
from services.insights.profile import Profile
from services.insights.schema import CASE_EVENTS, SURVEY_ANSWERS, TOUCHPOINTS
from services.insights.warehouse import Warehouse, touchpoint_row
from tests import timelines as t

STORES = {"sh-jingan": ("Jing'an", "Asia/Shanghai"), "ny-soho": ("SoHo", "America/New_York")}


def seed_dashboard(warehouse: Warehouse, tenant_id: str = "demo", now: datetime | None = None) -> dict:
    """Six customers: loyal, overdue with a complaint case (the at-risk one), new, a prospect, a quarterly
    detailing regular and a long-lost car wash customer. Returns their ids and the stores."""
    now = now or datetime.now(UTC)
    for store_id, (name, zone) in STORES.items():
        warehouse.save_store(tenant_id, store_id, name, zone)
    book = CustomerBook(warehouse, clock=lambda: now)
    book.refresh_zones()
    changes, customers = Changes(), {}

    def ago(days: float) -> float:  # timeline day numbers are days after T0
        return (now - timedelta(days=days) - t.T0).total_seconds() / 86_400

    def customer(name: str, store: str, events: list) -> None:
        customer_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{name}")
        profile = Profile(tenant_id, str(customer_id))
        for event in events:
            event = event.model_copy(update={"customer_id": customer_id, "tenant_id": tenant_id})
            if event.type.startswith("feedback.case"):
                event = event.model_copy(update={"payload": event.payload.model_copy(update={"store_id": store})})
                changes.rows[CASE_EVENTS].append(book.case_row(event))
                if not event.type.endswith("breached"):
                    profile.apply_case(event)
            elif event.type == "loyalty.tier_changed":
                profile.apply_tier(event)
            else:
                event = event.model_copy(update={"store_id": store if event.store_id else None})
                changes.rows[TOUCHPOINTS].append(touchpoint_row(event, ""))
                if event.type == "survey.answered":
                    changes.rows[SURVEY_ANSWERS].append(book.answer_row(event, "touchpoint"))
                profile.apply_touchpoint(event)
        book.rescore(profile, changes)
        customers[name] = str(customer_id)

    case = uuid.uuid4()
    customer("loyal-poodle", "sh-jingan", [t.ad(ago(400)), *[t.visit(ago(n)) for n in (200, 158, 116, 74, 32)],
                                           t.answer(ago(31), 10), t.tier(ago(60), "silver", "gold")])
    customer("overdue-spaniel", "sh-jingan", [t.visit(ago(n), amount=80_000) for n in (250, 208, 166, 124)] + [
        t.complaint(ago(100)), t.answer(ago(99), 2), t.case_opened(ago(99), case), t.case_breached(ago(98), case),
        t.tier(ago(70), "diamond", "gold")])
    customer("new-cat", "sh-jingan", [t.booked(ago(12)), t.visit(ago(10)), t.answer(ago(9), 8, csat=4)])
    customer("prospect", "ny-soho", [t.ad(ago(20)), t.consultation(ago(15))])
    customer("detailing", "ny-soho", [t.visit(ago(n), category="detailing", channel="app")
                                      for n in (300, 210, 120, 30)] + [t.answer(ago(29), 9)])
    customer("lost-car", "ny-soho", [t.visit(ago(400), category="wash", channel="app"), t.answer(ago(399), 5)])
    warehouse.insert_many(changes.rows)
    return {"store_ids": list(STORES), "customers": customers, "at_risk_customer_id": customers["overdue-spaniel"],
            "now": now}
