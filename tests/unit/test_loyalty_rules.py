"""The points ledger's arithmetic and the program's rules, without storage: lots and debt always add
up to the balance, merges and splits move exactly what they should, tiers follow points earned."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.loyalty import ledger
from services.loyalty.program import EarnRule, Program, TierRule

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROGRAM = Program()


def earn(points: int, day: int, store: str = "s1") -> ledger.Entry:
    entry_id = uuid.uuid4()
    at = T0 + timedelta(days=day)
    return ledger.Entry(entry_id, "earn", points, at, store, lot_key=entry_id, expires_at=PROGRAM.expires_at(at),
                        qualifying=points, qualifies_at=at)


def debit(kind: str, points: int, day: int, lot: ledger.Entry | None = None) -> ledger.Entry:
    return ledger.Entry(uuid.uuid4(), kind, -points, T0 + timedelta(days=day), lot.store_id if lot else "s2",
                        lot_key=lot.lot_key if lot else None, qualifying=-points if kind == "reverse" else 0,
                        qualifies_at=lot.qualifies_at if (lot and kind == "reverse") else None)


# Operations on one ledger: ("earn", points, day) | ("redeem", points, day) | ("reverse", index, day)
# | ("expire", day) — expire takes what the clock would at that day.
operations = st.lists(st.one_of(
    st.tuples(st.just("earn"), st.integers(1, 500), st.integers(0, 500)),
    st.tuples(st.just("redeem"), st.integers(1, 400), st.integers(0, 500)),
    st.tuples(st.just("reverse"), st.integers(0, 20), st.integers(0, 500)),
    st.tuples(st.just("expire"), st.integers(0, 900)),
), max_size=30)


def play(ops) -> list[ledger.Entry]:
    entries: list[ledger.Entry] = []
    earns: list[ledger.Entry] = []
    for op in ops:
        if op[0] == "earn":
            earns.append(earn(op[1], op[2]))
            entries.append(earns[-1])
        elif op[0] == "redeem":
            entries.append(debit("redeem", op[1], op[2]))
        elif op[0] == "reverse" and earns:
            target = earns[op[1] % len(earns)]
            entries.append(debit("reverse", target.points, op[2], target))
        elif op[0] == "expire":
            now = T0 + timedelta(days=op[1])
            for lot in ledger.expiring(ledger.holdings(entries), now):
                entries.append(ledger.Entry(uuid.uuid4(), "expire", -lot.remaining, now, lot.store_id,
                                            lot_key=lot.lot_key))
    return [ledger.Entry(**{**e.__dict__, "seq": i}) for i, e in enumerate(entries)]


@given(operations)
def test_lots_minus_debt_is_always_the_sum_of_entries(ops):
    entries = play(ops)
    state = ledger.holdings(entries)
    assert state.balance == sum(e.points for e in entries)
    assert all(lot.remaining > 0 for lot in state.lots.values())
    assert state.debt >= 0 and sum(state.debt_by_store.values()) == state.debt
    assert state.debt == 0 or not state.lots  # debt is paid from credits before any lot holds points


@given(operations)
def test_an_expiry_pass_leaves_nothing_expired_and_a_second_pass_expires_nothing(ops):
    entries = play(ops + [("expire", 2000)])
    assert ledger.expiring(ledger.holdings(entries), T0 + timedelta(days=2000)) == []


@given(operations, operations)
@settings(max_examples=60)
def test_a_merge_moves_the_whole_balance_and_the_tier_points(survivor_ops, loser_ops):
    survivor, loser = play(survivor_ops), play(loser_ops)
    now = T0 + timedelta(days=1000)
    out, into = [], []
    for transfer in ledger.merge_transfers(loser, now):
        o, i = transfer.entries(now, uuid.uuid4(), uuid.uuid4())
        out.append(o)
        into.append(i)
    since = T0 - timedelta(days=1)
    assert ledger.holdings(loser + out).balance == 0
    assert ledger.earned_in_window(loser + out, since) == 0
    merged = survivor + into
    assert sum(e.points for e in merged) == sum(e.points for e in survivor + loser)
    assert ledger.holdings(merged).balance == sum(e.points for e in merged)
    assert ledger.earned_in_window(merged, since) == (ledger.earned_in_window(survivor, since)
                                                      + ledger.earned_in_window(loser, since))


def test_a_merged_lot_keeps_its_expiry_so_it_still_expires_first():
    old = earn(100, 0)
    young = earn(100, 200)
    transfers = ledger.merge_transfers([old], T0 + timedelta(days=300))
    _, moved = transfers[0].entries(T0 + timedelta(days=300), uuid.uuid4(), uuid.uuid4())
    state = ledger.holdings([young, moved])
    assert [lot.expires_at for lot in ledger.expiring(state, old.expires_at)] == [old.expires_at]
    spent = ledger.holdings([young, moved, debit("redeem", 150, 301)])
    assert {lot.lot_key: lot.remaining for lot in spent.lots.values()} == {young.lot_key: 50}


def test_a_split_moves_an_earn_net_of_its_reversal_and_leaves_spent_points_owed():
    moved, kept = earn(300, 0), earn(100, 1)
    reversal = debit("reverse", 100, 2, moved)
    redeem = debit("redeem", 350, 3)
    history = [moved, kept, reversal, redeem]
    transfers = ledger.split_transfers([moved, reversal], T0 + timedelta(days=5))
    assert [(t.points, t.qualifying) for t in transfers] == [(200, 200)]
    out, into = transfers[0].entries(T0 + timedelta(days=5), uuid.uuid4(), uuid.uuid4())
    giver = ledger.holdings(history + [out])
    assert giver.balance == 300 + 100 - 100 - 350 - 200 == -250  # the spent points it no longer had
    assert giver.debt == 250
    assert ledger.holdings([into]).balance == 200


def test_a_reversal_of_spent_points_goes_negative_and_the_next_earn_pays_it_back_first():
    first = earn(100, 0)
    history = [first, debit("redeem", 100, 1), debit("reverse", 100, 2, first)]
    assert ledger.holdings(history).balance == -100
    later = earn(150, 3, store="s9")
    state = ledger.holdings(history + [later])
    assert (state.debt, state.held) == (0, 50)
    assert next(iter(state.lots.values())).store_id == "s9"


# --- program rules -------------------------------------------------------------------------------------
def test_points_follow_amount_fixed_points_and_the_tier_multiplier():
    assert PROGRAM.points_for("booking.completed", 20_050, "silver") == 200
    assert PROGRAM.points_for("booking.completed", 20_000, "gold") == 240
    assert PROGRAM.points_for("survey.answered", None, "vip") == 50
    assert PROGRAM.points_for("store.visited", 99_999, "vip") == 0


def test_amounts_in_other_currencies_earn_at_the_programs_exchange_rate():
    program = Program(exchange_rates={"AUD": 4.7})
    assert program.points_for("purchase.completed", 10_000, "silver", "AUD") == 470
    with pytest.raises(ValueError, match="no exchange rate for USD"):
        program.points_for("purchase.completed", 10_000, "silver", "USD")


def test_the_tier_comes_from_points_earned_and_reviews_follow_the_downgrade_policy():
    assert PROGRAM.qualified(1_999).name == "silver" and PROGRAM.qualified(8_000).name == "diamond"
    assert PROGRAM.review_tier("vip", 100).name == "diamond"  # one tier down per review
    window = PROGRAM.model_copy(update={"downgrade": "window"})
    assert window.review_tier("vip", 100).name == "silver"
    assert PROGRAM.review_tier("gold", 9_000).name == "gold"  # reviews never upgrade


@pytest.mark.parametrize("zone, after, expected", [
    # New York's first-of-month midnight in November is EST (-5), in April EDT (-4)
    ("America/New_York", datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 1, 4, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 3, 20, tzinfo=UTC), datetime(2026, 4, 1, 4, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 12, 1, 5, tzinfo=UTC)),
    ("Asia/Shanghai", datetime(2026, 1, 31, 16, 30, tzinfo=UTC), datetime(2026, 2, 28, 16, tzinfo=UTC)),
])
def test_reviews_start_at_local_midnight_of_the_next_period(zone, after, expected):
    assert Program(timezone=zone).next_review(after) == expected


def test_quarterly_and_yearly_reviews():
    at = datetime(2026, 5, 10, tzinfo=UTC)
    assert Program(review="quarterly", timezone="UTC").next_review(at) == datetime(2026, 7, 1, tzinfo=UTC)
    assert Program(review="yearly", timezone="UTC").next_review(at) == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("change, message", [
    ({"tiers": [TierRule(name="silver", threshold=10)]}, "threshold must be 0"),
    ({"tiers": [TierRule(name="silver", threshold=0), TierRule(name="gold", threshold=0)]}, "strictly increase"),
    ({"tiers": [TierRule(name="a", threshold=0), TierRule(name="a", threshold=5)]}, "unique"),
    ({"earn_rules": {"no.such_type": EarnRule(fixed=1)}}, "unknown touchpoint types"),
    ({"timezone": "Mars/Olympus"}, "unknown IANA timezone"),
])
def test_an_impossible_program_is_refused_with_the_reason(change, message):
    with pytest.raises(ValidationError, match=message):
        Program.model_validate({**PROGRAM.model_dump(), **{k: v for k, v in change.items()}})
