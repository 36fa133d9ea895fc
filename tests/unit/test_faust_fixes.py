"""The commit position faust's consumer takes from acknowledged offsets, with the fix applied: it never
steps over a message that was not acknowledged (services/insights/faust_fixes.py, fix 3)."""
from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from services.insights import faust_fixes

TP = ("touchpoints.resolved", 0)


def consumer(committed, acked):
    return SimpleNamespace(_acked=defaultdict(list, {TP: list(acked)}), _committed_offset=defaultdict(
        lambda: None, {TP: committed}), _acked_index=defaultdict(set, {TP: set(acked)}))


def new_offset(c):
    return faust_fixes._offset_after_acknowledged_run(c, TP)


def test_the_commit_moves_past_the_run_of_acknowledged_offsets_from_the_committed_one():
    c = consumer(committed=7, acked=[9, 7, 8, 11])
    assert new_offset(c) == 10  # 7, 8, 9 acknowledged; 10 not yet
    assert c._acked[TP] == [11] and c._acked_index[TP] == {11}


def test_the_commit_waits_while_the_message_at_the_committed_offset_is_unacknowledged():
    c = consumer(committed=7, acked=[8, 9])  # faust's own check let this commit 10, skipping 7
    assert new_offset(c) is None
    assert c._acked[TP] == [8, 9]  # kept for when 7 is acknowledged
    c._acked[TP].append(7)
    assert new_offset(c) == 10


def test_a_partition_never_committed_commits_what_it_read_and_an_empty_one_nothing():
    assert new_offset(consumer(committed=None, acked=[3, 4])) == 5
    assert new_offset(consumer(committed=0, acked=[1])) is None
    assert new_offset(consumer(committed=5, acked=[])) is None


def test_apply_installs_the_fixes_on_fausts_consumer():
    from faust.transport.consumer import Consumer

    faust_fixes.apply()
    assert Consumer._new_offset is faust_fixes._offset_after_acknowledged_run
