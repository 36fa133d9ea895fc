"""Re-attributions of one batch of customer changes become as few ClickHouse rewrites as give the same
owners as applying them one by one."""
from __future__ import annotations

from services.insights.customers import coalesced


def owners_one_by_one(moves, rows):
    rows = dict(rows)  # event -> owner
    for _, mapping, event_ids in moves:
        for event, owner in rows.items():
            if owner in mapping and (event_ids is None or event in event_ids):
                rows[event] = mapping[owner]
    return rows


def test_a_merge_chain_becomes_one_rewrite_with_the_same_owners():
    moves = [("t", {"a": "b"}, None), ("t", {"b": "c"}, None), ("t", {"d": "c"}, None)]
    rows = {"e1": "a", "e2": "b", "e3": "d", "e4": "x"}
    assert coalesced(moves) == [("t", {"a": "c", "b": "c", "d": "c"}, None)]
    assert owners_one_by_one(coalesced(moves), rows) == owners_one_by_one(moves, rows) == \
        {"e1": "c", "e2": "c", "e3": "c", "e4": "x"}


def test_a_split_keeps_its_place_between_merges():
    moves = [("t", {"a": "b"}, None), ("t", {"b": "n"}, ("e1",)), ("t", {"n": "z"}, None)]
    rows = {"e1": "a", "e2": "b"}
    assert len(coalesced(moves)) == 3
    assert owners_one_by_one(coalesced(moves), rows) == owners_one_by_one(moves, rows) == {"e1": "z", "e2": "b"}


def test_merges_of_another_tenant_are_not_folded_in():
    moves = [("t", {"a": "b"}, None), ("u", {"a": "c"}, None), ("t", {"b": "d"}, None)]
    assert [tenant for tenant, _, _ in coalesced(moves)] == ["t", "u", "t"]
