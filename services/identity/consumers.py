"""Identity's Kafka consumers: thin wiring of topics to use cases."""
from __future__ import annotations

from functools import partial

from services.identity import privacy, projection
from services.identity.pii import Vault
from services.identity.resolution import resolve_touchpoints
from services.identity.settings import IdentitySettings
from services.identity.webhooks.fanout import any_subscription, enqueue_deliveries
from shared.bus.consumer import Delivery
from shared.db import Database
from shared.events import ErasureConfirmed
from shared.events.feedback import SurveyAnswered
from shared.events.loyalty import LoyaltyEvent, TierChanged
from shared.events.scores import CustomerChurnRiskChanged, CustomerLifecycleChanged
from shared.runtime import ConsumerSpec
from shared.topics import (
    CUSTOMERS_SCORES, ERASURE_CONFIRMATIONS, FEEDBACK_CHANGES, LOYALTY_CHANGES, TOUCHPOINTS_RAW, all_topics,
)


def record_confirmations(deliveries: list[Delivery], db: Database) -> None:
    with db.transaction() as cur:
        privacy.record_confirmations(cur, [d.event for d in deliveries if isinstance(d.event, ErasureConfirmed)])


def record_scores(deliveries: list[Delivery], db: Database) -> None:
    """Lifecycle stage and churn risk into the 360; a late score never replaces a newer one."""
    facts = []
    for e in (d.event for d in deliveries):
        if isinstance(e, CustomerLifecycleChanged):
            value = {"stage": e.payload.to_stage, "from_stage": e.payload.from_stage, "reason": e.payload.reason}
            facts.append((e.tenant_id, e.customer_id, "lifecycle", value, e.occurred_at))
        elif isinstance(e, CustomerChurnRiskChanged):
            value = {"risk": e.payload.risk, "band": e.payload.band, "reasons": list(e.payload.reasons)}
            facts.append((e.tenant_id, e.customer_id, "churn_risk", value, e.occurred_at))
    with db.transaction() as cur:
        projection.set_facts(cur, facts)


def record_loyalty(deliveries: list[Delivery], db: Database) -> None:
    """Tier and points balance into the 360, from the balance every loyalty event carries."""
    facts = []
    for e in (d.event for d in deliveries):
        if not isinstance(e, LoyaltyEvent):
            continue
        facts.append((e.tenant_id, e.customer_id, "points_balance", e.payload.balance_after, e.occurred_at))
        if isinstance(e, TierChanged):
            facts.append((e.tenant_id, e.customer_id, "loyalty_tier", e.payload.to_tier, e.occurred_at))
    with db.transaction() as cur:
        projection.set_facts(cur, facts)


def record_feedback(deliveries: list[Delivery], db: Database) -> None:
    """The last survey answer (NPS, CSAT) into the 360; cases and invitations are not the hub's to keep."""
    facts = [(e.tenant_id, e.customer_id, "last_nps", {
        "nps": e.payload.nps, "csat": e.payload.csat, "store_id": e.payload.store_id, "staff_id": e.payload.staff_id,
        "answered_at": e.occurred_at.isoformat()}, e.occurred_at)
        for e in (d.event for d in deliveries) if isinstance(e, SurveyAnswered) and e.customer_id
        and e.payload.nps is not None]
    with db.transaction() as cur:
        projection.set_facts(cur, facts)


def consumer_specs(db: Database, settings: IdentitySettings, vault: Vault) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(TOUCHPOINTS_RAW, "identity-resolver",
                     partial(resolve_touchpoints, db=db, settings=settings, vault=vault),
                     max_records=settings.resolve_batch),
        ConsumerSpec(ERASURE_CONFIRMATIONS, "identity-erasure", partial(record_confirmations, db=db)),
        ConsumerSpec(CUSTOMERS_SCORES, "identity-scores", partial(record_scores, db=db)),
        ConsumerSpec(LOYALTY_CHANGES, "identity-loyalty", partial(record_loyalty, db=db)),
        ConsumerSpec(FEEDBACK_CHANGES, "identity-feedback", partial(record_feedback, db=db)),
        # Webhooks: every public topic fans out to the subscriptions that want its events.
        *(ConsumerSpec(spec, f"identity-webhooks.{spec.name}", partial(enqueue_deliveries, db=db), max_records=1000,
                       wanted=partial(any_subscription, db))
          for spec in all_topics() if spec.public),
    ]
