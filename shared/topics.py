"""The topic registry: every Kafka topic the platform uses, who writes it, who reads it, and why.

Code names topics only through these constants (a test walks the services' imports to check it),
so this module is the map of what crosses between services.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.settings import SERVICE_PORTS

SERVICES = tuple(SERVICE_PORTS)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    key: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    why: str
    carries: str = "touchpoint"  # the `topic_kind` of the events it carries: touchpoint, customer, erasure, score
    public: bool = False

    @property
    def dlq(self) -> "TopicSpec":
        """Where a consumer parks a message it cannot process, with the reason in its headers."""
        return TopicSpec(
            name=f"{self.name}.dlq", partitions=1, key=self.key, producers=self.consumers,
            consumers=(), why=f"Messages of {self.name} that could not be processed, with the error.",
            carries=self.carries,
        )


TOUCHPOINTS_RAW = TopicSpec(
    name="touchpoints.raw",
    partitions=12,
    key="tenant_id|type|value of the event's first identifier (no customer id yet)",
    producers=("identity", "booking", "loyalty", "feedback"),
    consumers=("identity",),
    why="Every accepted touchpoint before resolution: the ingestion API's and the services' outboxes "
        "write here so that identity is the single place customers are resolved.",
)

TOUCHPOINTS_RESOLVED = TopicSpec(
    name="touchpoints.resolved",
    partitions=12,
    key="customer_id",
    producers=("identity",),
    consumers=("insights", "booking", "loyalty", "feedback", "identity"),
    why="Touchpoints carrying their canonical customer_id, keyed by it so one customer's events stay in "
        "order for every downstream processor; booking learns from it whose appointment each booking is; "
        "loyalty earns and reverses points from it; feedback invites to surveys after visits and opens "
        "cases on complaints; identity fans it out to webhook subscribers.",
    public=True,
)

CUSTOMERS_CHANGES = TopicSpec(
    name="customers.changes",
    partitions=6,
    key="customer_id",
    producers=("identity",),
    consumers=("booking", "loyalty", "feedback", "insights", "identity"),
    why="Profile lifecycle (created, merged, split, consent changed, erased) so downstream state can follow "
        "the profile: merged ids move to the survivor, split events move, erased customers are deleted; "
        "identity fans it out to webhook subscribers.",
    carries="customer",
    public=True,
)

ERASURE_CONFIRMATIONS = TopicSpec(
    name="erasure.confirmations",
    partitions=3,
    key="customer_id",
    producers=("booking", "loyalty", "feedback", "insights"),
    consumers=("identity",),
    why="Each service's proof that it erased a customer, so identity can show when an erasure completed.",
    carries="erasure",
)

CUSTOMERS_SCORES = TopicSpec(
    name="customers.scores",
    partitions=6,
    key="customer_id",
    producers=("insights",),
    consumers=("identity",),
    why="Lifecycle stage and churn risk changes, kept by identity in the customer 360 and offered to "
        "subscribers.",
    carries="score",
    public=True,
)

LOYALTY_CHANGES = TopicSpec(
    name="loyalty.changes",
    partitions=6,
    key="customer_id",
    producers=("loyalty",),
    consumers=("identity", "insights"),
    why="Points earned, redeemed, expired, reversed or adjusted and tier changes, each with the balance "
        "after it: identity shows tier and balance in the customer 360; insights scores tier changes; "
        "subscribers read it.",
    carries="loyalty",
    public=True,
)

FEEDBACK_CHANGES = TopicSpec(
    name="feedback.changes",
    partitions=6,
    key="customer_id (the response id for an anonymous kiosk answer)",
    producers=("feedback",),
    consumers=("identity", "loyalty", "insights"),
    why="Survey invitations for the message channel to deliver, answers with their scores, and complaint "
        "cases opened, breaching their SLA and resolved: identity keeps the last NPS in the 360, loyalty "
        "awards points for answers; insights keeps answers and cases for NPS trends, complaint SLAs and churn risk.",
    carries="feedback",
    public=True,
)

REGISTRY: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (TOUCHPOINTS_RAW, TOUCHPOINTS_RESOLVED, CUSTOMERS_CHANGES, ERASURE_CONFIRMATIONS, CUSTOMERS_SCORES,
                 LOYALTY_CHANGES, FEEDBACK_CHANGES)
}


def all_topics() -> list[TopicSpec]:
    """Every topic including the dead-letter topic of each consumed one."""
    specs = list(REGISTRY.values())
    return specs + [spec.dlq for spec in specs if spec.consumers]


def produced_by(service: str) -> list[TopicSpec]:
    return [spec for spec in REGISTRY.values() if service in spec.producers]


def consumed_by(service: str) -> list[TopicSpec]:
    return [spec for spec in REGISTRY.values() if service in spec.consumers]
