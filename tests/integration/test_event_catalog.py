"""The public event catalogue a subscriber reads at identity:/v1/catalog: public topics only, every event
type on them with its current version and schema, generated from the models."""
from __future__ import annotations

from shared.events.codec import EVENT_TYPES
from shared.topics import REGISTRY

from .conftest import DEMO


def test_the_catalogue_lists_public_topics_with_each_events_version_and_schema(identity):
    body = identity.get("/v1/catalog", headers=DEMO).json()
    topics = {t["topic"]: t for t in body["topics"]}
    assert set(topics) == {name for name, spec in REGISTRY.items() if spec.public}
    assert "touchpoints.raw" not in topics and not any(name.endswith(".dlq") for name in topics)
    scores = {e["type"]: e for e in topics["customers.scores"]["events"]}
    assert set(scores) == {"customer.lifecycle_changed", "customer.churn_risk_changed"}
    lifecycle = scores["customer.lifecycle_changed"]
    assert lifecycle["version"] == EVENT_TYPES["customer.lifecycle_changed"].current_version()
    assert "to_stage" in str(lifecycle["schema"]) and topics["customers.scores"]["key"] == "customer_id"
    purchase = next(e for e in topics["touchpoints.resolved"]["events"] if e["type"] == "purchase.completed")
    assert purchase["version"] == 2  # money moved to minor units in v2


def test_one_event_type_and_the_public_asyncapi_document(identity):
    one = identity.get("/v1/catalog/events/loyalty.tier_changed", headers=DEMO).json()
    assert (one["topic"], one["version"]) == ("loyalty.changes", 1)
    missing = identity.get("/v1/catalog/events/customer.erasure_confirmed", headers=DEMO)
    assert missing.status_code == 404 and "not an event type of a public topic" in missing.text
    document = identity.get("/v1/catalog/asyncapi.json", headers=DEMO).json()
    assert document["asyncapi"] == "3.0.0"
    assert {c["address"] for c in document["channels"].values()} == {n for n, s in REGISTRY.items() if s.public}
    message = document["components"]["messages"]["customer.churn_risk_changed"]
    assert message["payload"]["title"] == "CustomerChurnRiskChanged"  # inlined, not a file reference
    assert identity.get("/v1/catalog").status_code == 401
