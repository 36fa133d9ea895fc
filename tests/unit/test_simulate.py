"""The simulated chain `make run` feeds the platform with must look alive whenever it is started."""
from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from hub.simulate import CURRENCIES, LOYALTY_PROGRAM, STORES, generate


def test_some_store_is_open_at_every_half_hour_of_the_year_across_both_dst_seasons():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    closed = []
    while at.year == 2026:
        if not any(store.is_open(at) for store in STORES):
            closed.append(at)
        at += timedelta(minutes=30)
    assert closed == []


@pytest.mark.parametrize("utc_hour", range(0, 24, 2))
def test_a_chain_started_at_any_hour_soon_sells_serves_and_asks_for_consent(utc_hour):
    start = datetime(2026, 11, 24, utc_hour, tzinfo=UTC)
    events = generate(600, seed=5, start=start, spacing_s=0.5)  # the first five minutes of `make run`
    kinds = Counter(e["type"] for e in events)
    assert kinds["purchase.completed"] >= 3 and kinds["service.performed"] >= 3 and kinds["consent.changed"] >= 3
    for event in events:
        if event.get("store_id") and event["type"] in {"reception.checked_in", "service.performed",
                                                        "purchase.completed"}:
            store = next(s for s in STORES if s.store_id == event["store_id"])
            assert store.is_open(datetime.fromisoformat(event["occurred_at"])), event


def test_loyalty_can_price_every_currency_the_chain_sells_in():
    assert set(CURRENCIES.values()) - {"CNY"} <= set(LOYALTY_PROGRAM["exchange_rates"])
