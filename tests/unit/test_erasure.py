"""The shared part of honouring customer.erased: the confirmation every service publishes."""
from __future__ import annotations

import uuid

import pytest

from shared.erasure import customer_change, erasure_confirmed
from shared.events import CustomerErased, DecodeError, ErasureConfirmed, TraceContext, decode, encode, from_document
from shared.events.customers import CustomerErasedPayload


def erased() -> CustomerErased:
    return CustomerErased(
        event_id=uuid.uuid4(), occurred_at="2026-11-23T08:00:00Z", recorded_at="2026-11-23T08:00:01Z",
        tenant_id="chain-b", source="identity", customer_id=uuid.uuid4(),
        trace=TraceContext(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        payload=CustomerErasedPayload(erasure_request_id=uuid.uuid4(), customer_ids=(uuid.uuid4(), uuid.uuid4())))


def test_a_confirmation_names_the_erasure_request_the_service_and_its_counts():
    request = erased()
    confirmation = erasure_confirmed(request, "loyalty", deleted=3, anonymised=2)
    assert decode(encode(confirmation)) == confirmation
    assert isinstance(confirmation, ErasureConfirmed) and confirmation.event_id != request.event_id
    assert (confirmation.tenant_id, confirmation.customer_id, confirmation.source) == \
           (request.tenant_id, request.customer_id, "loyalty")
    assert confirmation.recorded_at > request.recorded_at and confirmation.trace == request.trace
    p = confirmation.payload
    assert (p.erasure_request_id, p.service, p.records_deleted, p.records_anonymised) == \
           (request.payload.erasure_request_id, "loyalty", 3, 2)


def test_anything_but_a_profile_change_on_customers_changes_is_refused():
    assert customer_change(erased()).type == "customer.erased"
    touchpoint = from_document({
        "event_id": str(uuid.uuid4()), "type": "store.visited", "occurred_at": "2026-03-08T09:30:00+08:00",
        "recorded_at": "2026-03-08T01:30:01Z", "tenant_id": "demo", "source": "pos", "channel": "walk_in",
        "identifiers": [{"type": "phone", "value": "13912345678"}]})
    confirmation = erasure_confirmed(erased(), "booking")
    for wrong in (touchpoint, confirmation):
        with pytest.raises(DecodeError):
            customer_change(wrong)
