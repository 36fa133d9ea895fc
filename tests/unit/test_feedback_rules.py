"""Feedback's pure rules: NPS arithmetic, SLA deadlines in store business hours (closing time, weekends,
time zones, daylight-saving days), and survey templates and the answers they accept."""
from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from services.feedback import nps
from services.feedback.business_hours import Interval, StoreHours
from services.feedback.templates import DEFAULT, Question, Template, Texts
from shared.errors import Invalid


@pytest.mark.parametrize("scores, expected", [
    ([], {"responses": 0, "promoters": 0, "passives": 0, "detractors": 0, "nps": None}),
    ([7, 8, 7, 8], {"responses": 4, "promoters": 0, "passives": 4, "detractors": 0, "nps": 0.0}),
    ([10, 9, 9], {"responses": 3, "promoters": 3, "passives": 0, "detractors": 0, "nps": 100.0}),
    ([0, 6, 6], {"responses": 3, "promoters": 0, "passives": 0, "detractors": 3, "nps": -100.0}),
    # 5 promoters, 3 passives, 2 detractors of 10: 50 % − 20 % = 30
    ([10, 10, 9, 9, 9, 8, 7, 7, 6, 0], {"responses": 10, "promoters": 5, "passives": 3, "detractors": 2, "nps": 30.0}),
    # 1 of 3 promoters, 1 detractor: 33.3 − 33.3 = 0; 2 promoters of 3: 66.7
    ([9, 7, 6], {"responses": 3, "promoters": 1, "passives": 1, "detractors": 1, "nps": 0.0}),
    ([9, 10, 8], {"responses": 3, "promoters": 2, "passives": 1, "detractors": 0, "nps": 66.7}),
])
def test_nps_by_hand(scores, expected):
    assert nps.of_scores(scores) == expected


def test_a_low_answer_is_a_detractor_or_a_csat_of_two_or_less():
    assert nps.is_low(6, None) and nps.is_low(None, 2) and nps.is_low(9, 1)
    assert not nps.is_low(7, 3) and not nps.is_low(None, None)


WEEKDAYS_ONLY = StoreHours(timezone="Asia/Shanghai", hours={
    d: (Interval(start="09:00", end="18:00"),) for d in ("mon", "tue", "wed", "thu", "fri")})


def test_an_hour_of_business_time_waits_for_the_store_to_open():
    friday_1730 = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)  # 17:30 in Shanghai (UTC+8)
    due = WEEKDAYS_ONLY.add(friday_1730, 60)
    assert due == datetime(2026, 11, 30, 1, 30, tzinfo=UTC)  # Monday 09:30 local: 30 min Friday, 30 Monday
    assert WEEKDAYS_ONLY.between(friday_1730, due) == 60


def test_a_complaint_at_night_starts_its_clock_at_opening_and_lunch_breaks_pause_it():
    store = StoreHours(timezone="Asia/Shanghai", hours={d: (Interval(start="09:00", end="12:00"),
                                                            Interval(start="13:00", end="18:00"))
                                                        for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")})
    night = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # 23:00 local
    assert store.add(night, 60) == datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 next morning
    before_lunch = datetime(2026, 11, 25, 3, 30, tzinfo=UTC)  # 11:30 local
    assert store.add(before_lunch, 60) == datetime(2026, 11, 25, 5, 30, tzinfo=UTC)  # 13:30 local


def test_holidays_are_skipped_and_24_hours_of_business_time_span_days():
    store = StoreHours(timezone="UTC", hours={d: (Interval(start="10:00", end="18:00"),)
                                              for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
                       holidays=(date(2026, 12, 25),))
    christmas_eve_noon = datetime(2026, 12, 24, 12, 0, tzinfo=UTC)
    # 6 h on the 24th, closed on the 25th, 8 h on the 26th, 8 h on the 27th, 2 h on the 28th
    assert store.add(christmas_eve_noon, 24 * 60) == datetime(2026, 12, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("zone, opened, expected", [
    # London springs forward on 29 March 2026: 17:30 GMT leaves 30 minutes, then 09:00 BST is 08:00Z
    ("Europe/London", datetime(2026, 3, 28, 17, 30, tzinfo=UTC), datetime(2026, 3, 29, 8, 30, tzinfo=UTC)),
    # New York falls back on 1 November 2026: 17:30 EDT leaves 30 minutes, then 09:00 EST is 14:00Z
    ("America/New_York", datetime(2026, 10, 31, 21, 30, tzinfo=UTC), datetime(2026, 11, 1, 14, 30, tzinfo=UTC)),
])
def test_deadlines_follow_the_stores_wall_clock_across_daylight_saving_changes(zone, opened, expected):
    store = StoreHours(timezone=zone)  # 09:00–18:00 daily
    assert store.add(opened, 60) == expected


def test_a_day_that_loses_an_hour_has_one_business_hour_less_when_open_across_the_change():
    all_night = StoreHours(timezone="Europe/London", hours={d: (Interval(start="00:00", end="24:00"),)
                                                            for d in ("sat", "sun", "mon")})
    sunday = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    monday = datetime(2026, 3, 29, 23, 0, tzinfo=UTC)  # local midnight after the change (BST)
    assert all_night.between(sunday, monday) == 23 * 60


@pytest.mark.parametrize("hours, message", [
    ({"mon": ({"start": "18:00", "end": "09:00"},)}, "ends after it starts"),
    ({"monday": ({"start": "09:00", "end": "18:00"},)}, "unknown weekdays"),
    ({"mon": ()}, "at least one day"),
])
def test_impossible_store_hours_are_refused(hours, message):
    with pytest.raises(ValidationError, match=message):
        StoreHours.model_validate({"timezone": "Asia/Shanghai", "hours": hours})


def test_the_default_survey_reads_scores_and_refuses_out_of_range_or_unknown_answers():
    scores = DEFAULT.read({"nps": 4, "csat": 2, "waiting_time": 1, "comment": "  waited an hour "})
    assert scores == {"nps": 4, "csat": 2, "step_ratings": {"waiting_time": 1}, "comment": "waited an hour"}
    for bad, message in (({"nps": 11}, "from 0 to 10"), ({"nps": 5, "csat": 0}, "from 1 to 5"),
                         ({"nps": True}, "from 0 to 10"), ({"nps": 5, "mood": 3}, "unknown questions"),
                         ({"csat": 4}, "nps is required")):
        with pytest.raises(Invalid, match=message):
            DEFAULT.read(bad)
    assert {q["text"] for q in DEFAULT.public("en")} >= {"Reception", "Waiting time"}
    assert len(DEFAULT.questions) <= 8


def question(id_: str, kind: str, step: str | None = None) -> Question:
    return Question(id=id_, kind=kind, step=step, text=Texts(zh="问", en="Q"))


@pytest.mark.parametrize("questions, message", [
    ([question(f"s{i}", "step", f"s{i}") for i in range(8)] + [question("nps", "nps")], "at most 8"),
    ([question("a", "step", "reception")], "NPS or a CSAT"),
    ([question("nps", "nps"), question("nps", "csat")], "unique"),
    ([question("nps", "nps"), question("a", "step", "x"), question("b", "step", "x")], "rated once"),
])
def test_an_impossible_template_is_refused(questions, message):
    with pytest.raises(ValidationError, match=message):
        Template(questions=questions)
