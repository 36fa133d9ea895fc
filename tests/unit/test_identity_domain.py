"""Identifier normalisation, classification and resolution rules of identity (pure)."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from services.identity.domain import (
    CustomerState, IdentifierError, IdKey, IdOwner, Resolver, Snapshot, classify, normalise, partition_key,
)
from services.identity.policy import TenantPolicy, TypePolicy
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


POLICY = TenantPolicy()


def plan(*events, snapshot=None, policy=POLICY):
    items = [classify(e, policy) for e in events]
    return Resolver(snapshot or Snapshot(), lambda tenant: policy, uuid.uuid4, NOW).run(items), items


def known(snapshot, customer, age_days, *keys, **state):
    snapshot.customers[customer] = CustomerState(customer, NOW - timedelta(days=age_days))
    for key in keys:
        snapshot.owners[key] = IdOwner(customer, **state)
        snapshot.customers[customer].counts[key.type] += 1


PHONE = IdKey("demo", "phone", "", "+8613912345678")
EMAIL = IdKey("demo", "email", "", "x@y.cn")


def test_duplicate_identifiers_in_one_event_collapse():
    item = classify(touchpoint(ident("phone", "13912345678"), ident("phone", "+8613912345678")), POLICY)
    assert item.strong == [PHONE]


def test_partition_key_holds_no_personal_data():
    event = touchpoint(ident("phone", "13912345678"))
    assert "13912345678" not in partition_key(event)
    assert partition_key(event) == partition_key(event)


def test_an_event_with_unknown_identifiers_creates_a_customer_and_links_them():
    event = touchpoint(ident("phone", "13912345678"), ident("email", "a@b.cn"))
    result, _ = plan(event)
    (new_id,) = result.new_customers
    assert result.customer_of[event.event_id] == new_id
    assert set(result.links.values()) == {new_id} and len(result.links) == 2


def test_later_events_in_one_batch_see_customers_created_earlier_in_it():
    first = touchpoint(ident("phone", "13912345678"))
    second = touchpoint(ident("phone", "139 1234 5678"), ident("email", "x@y.cn"))
    result, _ = plan(first, second)
    assert result.customer_of[first.event_id] == result.customer_of[second.event_id]
    assert len(result.new_customers) == 1


def test_two_profiles_sharing_a_strong_identifier_merge_into_the_oldest():
    older, newer = uuid.uuid4(), uuid.uuid4()
    snap = Snapshot()
    known(snap, newer, 1, PHONE)
    known(snap, older, 3, EMAIL)
    event = touchpoint(ident("phone", "13912345678"), ident("email", "x@y.cn"))
    result, _ = plan(event, snapshot=snap)
    assert result.customer_of[event.event_id] == older
    assert [(m.survivor, m.losers) for m in result.merges] == [(older, [newer])]
    assert result.canonical(newer) == older


@pytest.mark.parametrize("order", [(0, 1, 2, 3, 4), (3, 4, 0, 1, 2), (4, 3, 2, 1, 0), (1, 4, 0, 3, 2)])
def test_a_merge_chain_arriving_in_any_order_ends_as_one_customer(order):
    a, b, c = ident("email", "a@x.cn"), ident("email", "b@x.cn"), ident("email", "c@x.cn")
    events = [touchpoint(a), touchpoint(b), touchpoint(c), touchpoint(a, b), touchpoint(b, c)]
    result, _ = plan(*[events[i] for i in order])
    assert len(set(result.customer_of.values())) == 1


@given(st.lists(st.lists(st.integers(0, 7), min_size=1, max_size=3), min_size=1, max_size=12), st.randoms())
@settings(max_examples=60)
def test_clusters_do_not_depend_on_arrival_order(events_ids, rnd):
    """Without per-profile limits in play, who ends up together is the union of shared identifiers."""
    policy = TenantPolicy(types={"custom:k": TypePolicy(max_per_profile=100)})
    events = [touchpoint(*[ident("custom:k", f"v{i}") for i in ids]) for ids in events_ids]
    shuffled = events[:]
    rnd.shuffle(shuffled)

    def clusters(batch):
        result, _ = plan(*batch, policy=policy)
        groups = {}
        for e in batch:
            groups.setdefault(result.customer_of[e.event_id], set()).add(e.event_id)
        return sorted(sorted(map(str, g)) for g in groups.values())

    assert clusters(events) == clusters(shuffled)


def test_junk_values_are_rejected_with_the_reason_and_never_link_two_people():
    first = touchpoint(ident("phone", "13800000000"), ident("email", "a@x.cn"))
    second = touchpoint(ident("phone", "138 0000 0000"), ident("email", "b@x.cn"))
    result, items = plan(first, second)
    assert result.customer_of[first.event_id] != result.customer_of[second.event_id]
    assert [r.reason for r in items[0].rejected] == ["phone: blocklisted value"]


@pytest.mark.parametrize("value", ["null", "unknown", "0", "test@test.com"])
def test_placeholder_values_from_mandatory_fields_are_junk(value):
    item = classify(touchpoint(ident("email", value), ident("phone", "13912345678")), POLICY)
    assert item.strong == [PHONE] and len(item.rejected) == 1


def test_an_invalid_phone_is_kept_as_rejected_and_the_rest_of_the_event_still_resolves():
    event = touchpoint(ident("phone", "12345"), ident("email", "x@y.cn"))
    result, items = plan(event)
    assert "phone" in items[0].rejected[0].reason
    assert list(result.links) == [EMAIL]


def test_a_weak_identifier_never_merges_two_people():
    one = touchpoint(ident("phone", "13912345678"), ident("license_plate", "沪A12345"))
    two = touchpoint(ident("phone", "13987654321"), ident("license_plate", "沪A 12345"))
    result, _ = plan(one, two)
    assert result.customer_of[one.event_id] != result.customer_of[two.event_id]
    assert not result.merges


def test_an_event_with_only_a_weak_identifier_joins_its_only_holder_and_otherwise_gets_its_own_profile():
    holder = touchpoint(ident("phone", "13912345678"), ident("license_plate", "沪A12345"))
    plate_only = touchpoint(ident("license_plate", "沪A12345"))
    result, _ = plan(holder, plate_only)
    assert result.customer_of[plate_only.event_id] == result.customer_of[holder.event_id]
    other = touchpoint(ident("phone", "13987654321"), ident("license_plate", "沪A12345"))
    result, _ = plan(holder, other, plate_only)
    assert result.customer_of[plate_only.event_id] not in {result.customer_of[holder.event_id],
                                                           result.customer_of[other.event_id]}


def test_a_family_phone_links_two_people_into_a_household_instead_of_merging_them():
    mom = touchpoint(ident("phone", "13912345678"), ident("app_user_id", "mom"))
    dad = touchpoint(ident("phone", "13912345678"), ident("app_user_id", "dad"))
    later = touchpoint(ident("phone", "13912345678"))
    result, _ = plan(mom, dad, later)
    assert result.customer_of[mom.event_id] != result.customer_of[dad.event_id]
    assert not result.merges
    assert [(h.customer_id, h.other_id) for h in result.households] == [
        (result.customer_of[dad.event_id], result.customer_of[mom.event_id])]
    assert result.shared[PHONE].shared
    assert result.customer_of[later.event_id] == result.customer_of[mom.event_id]  # the first owner, no merge


def test_an_identifier_seen_on_too_many_people_becomes_junk():
    policy = TenantPolicy(junk_after_links=3)
    events = [touchpoint(ident("phone", "13912345678"), ident("app_user_id", f"u{i}")) for i in range(5)]
    result, _ = plan(*events, policy=policy)
    assert len(set(result.customer_of.values())) == 5
    assert result.shared[PHONE].junk
    assert len(result.households) == 2  # the third link made it junk: no household of a store iPad


def test_a_profile_never_holds_more_identifiers_of_a_type_than_the_policy_allows():
    policy = TenantPolicy(types={"email": TypePolicy(max_per_profile=2)})
    event = touchpoint(ident("phone", "13912345678"), *[ident("email", f"e{i}@x.cn") for i in range(3)])
    result, items = plan(event, policy=policy)
    assert sum(1 for k in result.links if k.type == "email") == 2
    assert "the most allowed" in items[0].rejected[0].reason


def test_a_pair_separated_by_a_split_is_not_merged_again():
    a, b = uuid.uuid4(), uuid.uuid4()
    snap = Snapshot()
    known(snap, a, 5, PHONE)
    known(snap, b, 1, EMAIL)
    snap.blocked_pairs.add(frozenset((a, b)))
    result, _ = plan(touchpoint(ident("phone", "13912345678"), ident("email", "x@y.cn")), snapshot=snap)
    assert not result.merges and len(result.households) == 1


def test_the_same_identifier_in_two_tenants_is_two_customers():
    a = touchpoint(ident("phone", "13912345678"), tenant="chain-a")
    b = touchpoint(ident("phone", "13912345678"), tenant="chain-b")
    result, _ = plan(a, b)
    assert result.customer_of[a.event_id] != result.customer_of[b.event_id]


@pytest.mark.parametrize("utc_hour", [2, 10, 18])  # newcomers join stores open then: each region in turn
def test_every_identifier_the_simulator_generates_is_valid(utc_hour):
    from hub.simulate import generate

    for doc in generate(3000, seed=3, start=datetime(2026, 11, 24, utc_hour, tzinfo=UTC)):
        event = from_document({**doc, "tenant_id": "demo", "recorded_at": doc["occurred_at"]})
        assert not classify(event, POLICY).rejected


@settings(max_examples=3000, deadline=None)
@given(value=st.text(alphabet="0123456789", min_size=1, max_size=19) | st.from_regex(r"1[0-9]{10}", fullmatch=True),
       region=st.sampled_from(["CN", "US", "GB", "AU", "DE", "IT", "HK", "SG", "JP", "BR", "RU", "IN", "FR"]))
def test_the_bare_digits_shortcut_parses_phone_numbers_exactly_as_phonenumbers(value, region):
    import phonenumbers

    from services.identity import phones

    def parsed(parse):
        try:
            n = parse(value, region)
        except phonenumbers.NumberParseException as exc:
            return str(exc)
        return (n, n.italian_leading_zero, n.number_of_leading_zeros, n.extension, n.country_code_source)

    assert parsed(phones.parse) == parsed(phonenumbers.parse)


def test_plans_point_merged_ids_at_the_survivor_of_the_last_merge():
    from services.identity.domain import Merge, Plan

    a, b, c, d = (uuid.uuid4() for _ in range(4))
    result = Plan(merges=[Merge(b, [a], [], []), Merge(c, [b, d], [], [])])
    assert [result.canonical(x) for x in (a, b, c, d)] == [c, c, c, c]
    result.merges.append(Merge(a, [c], [], []))  # survivors can lose later; ids never seen map to themselves
    assert result.canonical(d) == a and result.canonical(uuid.UUID(int=1)) == uuid.UUID(int=1)
