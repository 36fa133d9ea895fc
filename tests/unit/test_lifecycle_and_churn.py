"""Lifecycle stage and churn risk on hand-built timelines: the same pure scoring the processors and the
backtest run, with the clock as a parameter."""
from __future__ import annotations

import uuid

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.insights.profile import Profile
from services.insights.scoring import ScoringConfig, score
from tests.timelines import (
    CUSTOMER, OTHER, ad, answer, booked, case_opened, case_resolved, complaint, consultation, day, purchase, tier, visit,
)


def profile_of(*events, customer=CUSTOMER) -> Profile:
    profile = Profile("demo", str(customer))
    for event in events:
        if hasattr(event, "channel"):
            profile.apply_touchpoint(event)
        else:
            profile.apply_tier(event)
    return profile


def stage_at(events, n) -> str:
    return score(profile_of(*events), day(n)).stage


def test_a_prospect_moves_from_awareness_through_interest_to_consideration():
    assert stage_at([ad(0)], 1) == "awareness"
    assert stage_at([ad(0), consultation(1)], 2) == "interest"
    assert stage_at([ad(0), consultation(1), booked(2)], 3) == "consideration"
    assert stage_at([ad(0), consultation(1, quote=20_000)], 2) == "consideration"


def test_paid_visits_make_a_purchase_then_repeat_then_loyal_at_the_groom_rhythm():
    assert stage_at([booked(0), visit(2)], 3) == "purchase"
    assert stage_at([visit(0), visit(60)], 61) == "repeat"
    regular = [visit(0), visit(42), visit(85), visit(126)]
    assert stage_at(regular, 127) == "loyal"
    assert "every 4" in score(profile_of(*regular), day(127)).stage_reason  # about every 41-42 days


def test_an_overdue_customer_becomes_at_risk_then_churned_and_a_return_is_a_win_back():
    history = [visit(0), visit(42), visit(84)]
    assert stage_at(history, 84 + 50) == "loyal"          # 50 days: due, not alarming
    assert stage_at(history, 84 + 70) == "at_risk"        # 70 days: 1.7 x the 42-day rhythm
    assert stage_at(history, 84 + 130) == "churned"       # more than 3 x
    back = history + [visit(84 + 200)]
    assert stage_at(back, 84 + 201) == "win_back"
    assert "returned after 200 days" in score(profile_of(*back), day(285)).stage_reason
    assert stage_at(back + [visit(84 + 240)], 84 + 241) in ("repeat", "loyal")


def test_the_expected_interval_depends_on_the_service_category():
    # 70 days after a quarterly detail is not overdue; 70 days after a groom is.
    detailing = [visit(0, category="detailing"), visit(90, category="detailing")]
    assert stage_at(detailing, 160) == "repeat"
    grooming = [visit(0), visit(42)]
    assert stage_at(grooming, 112) == "at_risk"
    # A chain whose customers groom every 60 days has that rhythm learned:
    assert score(profile_of(*grooming), day(112), intervals={"full_groom": 60.0}).stage == "repeat"


def test_risk_rises_while_nothing_happens_and_names_how_overdue_the_customer_is():
    profile = profile_of(visit(0), visit(42), visit(84))
    risks = [score(profile, day(84 + d)).risk for d in (10, 40, 60, 90, 150)]
    assert risks == sorted(risks) and risks[0] < 0.2 and risks[-1] > 0.8
    assert score(profile, day(84 + 10)).band == "low"
    late = score(profile, day(84 + 150))
    assert late.band == "high"
    assert "overdue 108 days vs expected 42 (full_groom)" in late.reasons


def test_a_complaint_a_detractor_score_and_an_open_case_raise_risk_with_their_reasons():
    base = [visit(0), visit(42), visit(84)]
    calm = score(profile_of(*base), day(100))
    upset_profile = profile_of(*base, complaint(90), answer(91, nps=3))
    case = uuid.uuid4()
    upset_profile.apply_case(case_opened(91, case))
    upset = score(upset_profile, day(100))
    assert upset.risk > 4 * calm.risk  # odds multiplied by e^1.7
    assert {"complaint 10 days ago", "detractor score 3", "open complaint case"} <= set(upset.reasons)
    upset_profile.apply_case(case_resolved(93, case))
    assert "open complaint case" not in score(upset_profile, day(100)).reasons
    # Old complaints stop counting after the recent window.
    assert "complaint" not in " ".join(score(upset_profile, day(200)).reasons)


def test_a_tier_downgrade_and_declining_frequency_are_reasons():
    events = [visit(0), visit(30), visit(60), visit(90), visit(200), tier(150, "gold", "silver")]
    result = score(profile_of(*events), day(205))
    assert "tier downgraded to silver" in result.reasons
    assert any(r.startswith("visits getting rarer: last gap 110 days") for r in result.reasons)


def test_rfm_and_value_tier():
    big = profile_of(*[visit(n * 30, amount=60_000) for n in range(8)])
    result = score(big, day(215))
    assert (result.r, result.f, result.m) == (5, 5, 5)
    assert result.rfm_segment == "champions" and result.value_tier == "high"
    small = score(profile_of(visit(0, amount=3_000)), day(200))
    assert small.rfm_segment == "hibernating" and small.value_tier == "low"
    assert score(profile_of(ad(0)), day(1)).rfm_segment == "prospect"


def test_a_refund_comes_off_spend_and_a_visit_and_its_receipt_count_once():
    profile = profile_of(purchase(0, amount=10_000), visit(5, amount=20_000))
    assert score(profile, day(6)).monetary_minor == 30_000


def test_spend_in_other_currencies_counts_at_the_configured_rates():
    london = profile_of(visit(0, amount=4_000, currency="GBP"), purchase(5, amount=1_000, currency="GBP"),
                        visit(10, amount=20_000))
    assert score(london, day(11), config=ScoringConfig(exchange_rates={"GBP": 9.0})).monetary_minor == 65_000
    assert score(london, day(11)).monetary_minor == 25_000  # no rate: counted as recorded
    stored = orjson.loads(london.dumps())
    stored["e"] = {k: v[:6] for k, v in stored["e"].items()}  # a digest from before currencies were kept
    assert score(Profile.loads("demo", "c", orjson.dumps(stored)), day(11)).monetary_minor == 25_000


TIMELINE = [ad(-10), consultation(-5), booked(-3), visit(0), visit(40), complaint(41), answer(42, nps=4),
            visit(85), purchase(90), visit(170), tier(100, "gold", "silver")]


@settings(max_examples=40, deadline=None)
@given(st.permutations(TIMELINE), st.lists(st.sampled_from(TIMELINE), max_size=5))
def test_events_in_any_order_and_redelivered_give_the_same_scores(order, redelivered):
    in_order = score(profile_of(*TIMELINE), day(200))
    shuffled = profile_of(*order, *redelivered)
    assert score(shuffled, day(200)) == in_order
    ordered = profile_of(*TIMELINE)
    assert (shuffled.entries, shuffled.answers, shuffled.tiers, shuffled.first_seen, shuffled.channels) == \
        (ordered.entries, ordered.answers, ordered.tiers, ordered.first_seen, ordered.channels)


STAGES = {"awareness", "interest", "consideration", "purchase", "repeat", "loyal", "at_risk", "churned", "win_back"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["visit", "purchase", "complaint", "answer"]),
                          st.integers(0, 400), st.sampled_from([0, 0.3, 0.9])), max_size=12),
       st.integers(0, 800))
@example([("visit", 10, 0), ("purchase", 10, 0.3), ("purchase", 10, 0.9)], 11)
def test_any_history_scores_to_a_known_stage_and_a_risk_between_0_and_1(history, as_of):
    """Several receipts on one day (a groom and shampoo bought at the till) once crashed the processor."""
    make = {"visit": visit, "purchase": purchase, "complaint": complaint, "answer": lambda n: answer(n, nps=3)}
    scores = score(profile_of(*(make[kind](n + offset) for kind, n, offset in history)), day(as_of))
    assert scores.stage in STAGES and 0 <= scores.risk <= 1


def test_several_receipts_on_one_day_are_one_visit_day():
    one_day = [visit(0), purchase(0.2), purchase(0.3)]
    assert score(profile_of(*one_day), day(1)).stage == "repeat"
    same_days = [visit(0), purchase(0.2), visit(42), purchase(42.1), visit(84), purchase(84.3)]
    assert score(profile_of(*same_days), day(90)).stage == "loyal"


def test_a_merge_scores_the_union_and_a_split_takes_the_moved_visits_back_out():
    mine = [visit(0), visit(42)]
    theirs = [visit(10, customer=OTHER), visit(52, customer=OTHER), complaint(53, customer=OTHER)]
    survivor, merged = profile_of(*mine), profile_of(*theirs, customer=OTHER)
    survivor.absorb(merged)
    together = score(survivor, day(60))
    assert together.visits == 4 and "complaint 7 days ago" in together.reasons
    moved = survivor.split_off(str(OTHER), {str(e.event_id) for e in theirs})
    assert score(survivor, day(60)) == score(profile_of(*mine), day(60))
    assert score(moved, day(60)).visits == 2


def test_the_digest_survives_storage():
    profile = profile_of(*TIMELINE)
    profile.apply_case(case_opened(50, uuid.uuid4()))
    profile.stage, profile.band, profile.peak_stage = "repeat", "low", "loyal"
    again = Profile.loads("demo", str(CUSTOMER), profile.dumps())
    assert again.dumps() == profile.dumps()
    assert score(again, day(200)) == score(profile, day(200))


def test_thresholds_are_configurable():
    history = [visit(0), visit(42)]
    assert score(profile_of(*history), day(100)).stage == "repeat"
    assert score(profile_of(*history), day(100), config=ScoringConfig(at_risk_ratio=1.2)).stage == "at_risk"


def test_scoring_as_of_a_date_sees_nothing_after_it():
    """What the backtest relies on: the full digest scored at a past instant equals the digest of only
    the events before that instant."""
    for as_of in (45, 95, 150):
        before = [e for e in TIMELINE if e.occurred_at <= day(as_of)]
        assert score(profile_of(*TIMELINE), day(as_of)) == score(profile_of(*before), day(as_of)), as_of
