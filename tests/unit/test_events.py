"""The event contract: envelope rules, versioning, the codec, and the generated docs."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.events import EVENT_TYPES, DecodeError, Event, decode, encode, from_document
from shared.events.docs import generated_files
from shared.events.touchpoints import JOURNEY

ROOT = Path(__file__).resolve().parents[2]


def doc(**overrides) -> dict:
    base = {
        "event_id": str(uuid.uuid4()), "type": "store.visited", "occurred_at": "2026-03-08T09:30:00+08:00",
        "recorded_at": "2026-03-08T01:30:01Z", "tenant_id": "demo", "source": "pos", "channel": "walk_in",
        "store_id": "sh-jingan", "identifiers": [{"type": "phone", "value": "13912345678"}],
    }
    return {**base, **overrides}


def test_the_twelve_journey_steps_each_have_a_touchpoint_type():
    assert len(JOURNEY) == 12
    assert len({m.type_name() for m in JOURNEY}) == 12


def test_event_times_are_normalised_to_utc():
    event = from_document(doc())
    assert event.occurred_at == datetime(2026, 3, 8, 1, 30, tzinfo=UTC)


def test_a_time_without_timezone_is_refused_with_the_field_named():
    with pytest.raises(DecodeError) as err:
        from_document(doc(occurred_at="2026-03-08T09:30:00"))
    assert err.value.errors[0]["field"] == "occurred_at"


def test_a_touchpoint_without_identifiers_is_refused():
    with pytest.raises(DecodeError, match="identifiers"):
        from_document(doc(identifiers=[]))


def test_an_unknown_type_is_refused_by_name():
    with pytest.raises(DecodeError, match="unknown event type 'teleported'"):
        from_document(doc(type="teleported"))


def test_an_unknown_channel_is_refused():
    with pytest.raises(DecodeError, match="channel"):
        from_document(doc(channel="carrier_pigeon"))


def test_events_are_frozen():
    event = from_document(doc())
    with pytest.raises(Exception):
        event.store_id = "elsewhere"


def test_a_v1_purchase_is_upcast_to_integer_minor_units():
    event = from_document(doc(type="purchase.completed", schema_version=1, payload={
        "order_id": "o-1", "amount": 199.9, "items": [{"sku": "kibble", "quantity": 2, "unit_price": 99.95}]}))
    assert event.schema_version == 2
    assert event.payload.amount_minor == 19990
    assert event.payload.items[0].unit_price_minor == 9995


def test_a_version_newer_than_known_is_refused():
    with pytest.raises(DecodeError, match="newer"):
        from_document(doc(schema_version=9))


def test_encode_then_decode_gives_the_same_event():
    event = from_document(doc(type="service.performed", payload={
        "service_ids": ["groom-full"], "amount_minor": 38000, "staff_id": "sh-jingan-staff-1"}))
    assert decode(encode(event)) == event


@given(st.binary(max_size=300))
def test_any_bytes_either_decode_or_raise_decode_error(data):
    try:
        assert isinstance(decode(data), Event)
    except DecodeError as exc:
        assert exc.reason


@given(st.dictionaries(st.sampled_from(list(doc()) + ["payload"]), st.none() | st.integers() | st.text(max_size=20)))
def test_any_json_object_either_validates_or_raises_decode_error(fields):
    try:
        from_document({**doc(), **fields})
    except DecodeError as exc:
        assert exc.reason


# Names the booking contract fixes: a state reached ("due") or the industry's noun for a missed visit.
STATE_NAMES = {"booking.reminder_due", "booking.visit_due", "booking.no_show"}


def test_every_event_type_has_a_past_tense_dotted_name():
    for name in EVENT_TYPES:
        family, _, verb = name.partition(".")
        assert family and verb, name
        assert name in STATE_NAMES or any(
            part.endswith(("ed", "wn")) or part in ("held", "split", "sent") for part in verb.split("_")), name


def test_generated_event_docs_are_up_to_date():
    stale = [name for name, content in generated_files().items()
             if not (ROOT / "docs" / "events" / name).exists()
             or (ROOT / "docs" / "events" / name).read_text() != content]
    assert not stale, f"run `hub docs`: stale {stale}"


def test_asyncapi_lists_every_registered_topic_with_its_messages():
    import json

    from shared.topics import all_topics

    spec = json.loads(generated_files()["asyncapi.json"])
    addresses = {c["address"]: c for c in spec["channels"].values()}
    for topic in all_topics():
        assert topic.name in addresses
    assert "service_performed" in addresses["touchpoints.resolved"]["messages"]
    assert "customer_created" in addresses["customers.changes"]["messages"]

