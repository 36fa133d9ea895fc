"""Identifier normalisation and resolution rules of identity (pure)."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.identity.domain import (
    IdentifierError, IdKey, KnownCustomer, normalise, normalise_touchpoint, partition_key, resolve,
)
from shared.events import Identifier, from_document

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def ident(type_, value, scope=None):
    return Identifier(type=type_, value=value, scope=scope)


def touchpoint(*identifiers, store="sh-jingan", tenant="demo"):
    return from_document({
        "event_id": str(uuid.uuid4()), "type": "store.visited", "occurred_at": NOW.isoformat(),
        "recorded_at": NOW.isoformat(), "tenant_id": tenant, "source": "test", "channel": "pos",
        "store_id": store, "identifiers": [i.model_dump(exclude_none=True) for i in identifiers],
    })


@pytest.mark.parametrize("written", ["13912345678", "139 1234 5678", "+86 139-1234-5678", "008613912345678"])
def test_chinese_mobile_numbers_in_any_format_become_one_e164_value(written):
    assert normalise(ident("phone", written), region="CN", store_id=None).value == "+8613912345678"


def test_a_number_without_country_code_uses_the_tenant_region():
    assert normalise(ident("phone", "0412 345 678"), region="AU", store_id=None).value == "+61412345678"


@pytest.mark.parametrize("value", ["12345", "not a phone", "1391234567899999"])
def test_invalid_phone_numbers_are_refused(value):
    with pytest.raises(IdentifierError, match="phone"):
        normalise(ident("phone", value), region="CN", store_id=None)


def test_emails_are_lower_cased_and_trimmed():
    assert normalise(ident("email", "  Lily.Wang@Example.COM "), region="CN", store_id=None).value == "lily.wang@example.com"


def test_license_plates_ignore_spaces_dots_and_case():
    a = normalise(ident("license_plate", "沪A·12345"), region="CN", store_id=None)
    b = normalise(ident("license_plate", "沪a 12345"), region="CN", store_id=None)
    assert a.value == b.value == "沪A12345"


def test_a_wechat_openid_needs_its_app_id():
    with pytest.raises(IdentifierError, match="app id"):
        normalise(ident("wechat_openid", "oAbc"), region="CN", store_id=None)


def test_a_pos_customer_id_is_scoped_to_the_store_that_issued_it():
    n = normalise(ident("pos_customer_id", "P0001"), region="CN", store_id="sh-pudong")
    assert n.scope == "sh-pudong"


def test_scope_is_dropped_for_identifiers_that_are_global():
    assert normalise(ident("phone", "13912345678", scope="x"), region="CN", store_id=None).scope is None


def test_tenant_defined_custom_types_are_accepted_and_unknown_builtins_refused():
    assert normalise(ident("custom:loyalty_app", " 77 "), region="CN", store_id=None).value == "77"
    with pytest.raises(IdentifierError, match="unknown identifier type"):
        normalise(ident("fax", "123"), region="CN", store_id=None)


def test_duplicate_identifiers_in_one_event_collapse():
    event = normalise_touchpoint(touchpoint(ident("phone", "13912345678"), ident("phone", "+8613912345678")), "CN")
    assert len(event.identifiers) == 1


def test_partition_key_holds_no_personal_data():
    event = normalise_touchpoint(touchpoint(ident("phone", "13912345678")), "CN")
    assert "13912345678" not in partition_key(event)
    assert partition_key(event) == partition_key(event)


def test_an_event_with_unknown_identifiers_creates_a_customer_and_links_them():
    event = normalise_touchpoint(touchpoint(ident("phone", "13912345678"), ident("email", "a@b.cn")), "CN")
    new_id = uuid.uuid4()
    result = resolve([event], {}, lambda: new_id, NOW)
    assert result.customer_of[event.event_id] == new_id
    assert [c for c, _ in result.new_customers] == [new_id]
    assert set(result.new_links.values()) == {new_id} and len(result.new_links) == 2


def test_later_events_in_one_batch_see_customers_created_earlier_in_it():
    first = normalise_touchpoint(touchpoint(ident("phone", "13912345678")), "CN")
    second = normalise_touchpoint(touchpoint(ident("phone", "139 1234 5678"), ident("email", "x@y.cn")), "CN")
    result = resolve([first, second], {}, uuid.uuid4, NOW)
    assert result.customer_of[first.event_id] == result.customer_of[second.event_id]
    assert len(result.new_customers) == 1


def test_when_identifiers_belong_to_several_customers_the_oldest_is_chosen():
    event = normalise_touchpoint(touchpoint(ident("phone", "13912345678"), ident("email", "x@y.cn")), "CN")
    older, newer = uuid.uuid4(), uuid.uuid4()
    known = {
        IdKey("demo", "phone", "", "+8613912345678"): KnownCustomer(newer, NOW),
        IdKey("demo", "email", "", "x@y.cn"): KnownCustomer(older, NOW - timedelta(days=3)),
    }
    assert resolve([event], known, uuid.uuid4, NOW).customer_of[event.event_id] == older


def test_the_same_identifier_in_two_tenants_is_two_customers():
    a = normalise_touchpoint(touchpoint(ident("phone", "13912345678"), tenant="chain-a"), "CN")
    b = normalise_touchpoint(touchpoint(ident("phone", "13912345678"), tenant="chain-b"), "CN")
    result = resolve([a, b], {}, uuid.uuid4, NOW)
    assert result.customer_of[a.event_id] != result.customer_of[b.event_id]


def test_every_identifier_the_simulator_generates_is_valid():
    from hub.simulate import generate

    for doc in generate(3000, seed=3):
        event = from_document({**doc, "tenant_id": "demo", "recorded_at": doc["occurred_at"]})
        normalise_touchpoint(event, "CN")  # raises on any invalid identifier
