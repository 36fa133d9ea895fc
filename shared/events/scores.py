"""Scores insights computes per customer (topic `customers.scores`); identity keeps them in the 360."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from shared.events.customers import CustomerEvent
from shared.events.base import Payload

Stage = Literal["awareness", "interest", "consideration", "purchase", "repeat", "loyal", "at_risk", "churned",
                "win_back"]


class LifecycleChangedPayload(Payload):
    from_stage: Stage | None = None
    to_stage: Stage
    reason: str


class CustomerLifecycleChanged(CustomerEvent):
    topic_kind: ClassVar[str] = "score"
    type: Literal["customer.lifecycle_changed"] = "customer.lifecycle_changed"
    schema_version: Literal[1] = 1
    payload: LifecycleChangedPayload


class ChurnRiskChangedPayload(Payload):
    risk: Annotated[float, Field(ge=0, le=1)]
    band: Literal["low", "medium", "high"]
    reasons: tuple[str, ...] = ()


class CustomerChurnRiskChanged(CustomerEvent):
    topic_kind: ClassVar[str] = "score"
    type: Literal["customer.churn_risk_changed"] = "customer.churn_risk_changed"
    schema_version: Literal[1] = 1
    payload: ChurnRiskChangedPayload


SCORE_EVENT_TYPES = (CustomerLifecycleChanged, CustomerChurnRiskChanged)
