"""Property-based, against real Postgres: for any interleaving of earns, refunds, redemption holds,
commits, releases, expiry passes and merges, every balance is the sum of its entries (and of its lots
minus debt), a hold never reserves more than is available, and a commit never overdraws."""
from __future__ import annotations

import uuid
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.loyalty import clock, redemptions
from shared.errors import DomainError
from shared.events import utcnow
from tests.integration.loyalty_setup import deliver, ledger_is_exact, purchase, refund, sql
from tests.integration.test_loyalty_follows_identity import merged

WHO = st.integers(0, 1)
steps = st.lists(st.one_of(
    st.tuples(st.just("earn"), WHO, st.integers(10_000, 90_000)),
    st.tuples(st.just("refund"), st.integers(0, 9), st.integers(1, 90_000)),
    st.tuples(st.just("hold"), WHO, st.integers(100, 700)),
    st.tuples(st.just("hold"), WHO, st.integers(100, 700)),
    st.tuples(st.just("commit"), st.integers(0, 9)),
    st.tuples(st.just("release"), st.integers(0, 9)),
    st.tuples(st.just("expire"), st.sampled_from([0, 400])),
    st.tuples(st.just("merge"), WHO, WHO),
), min_size=1, max_size=14)


def balance_and_held(db, customer_id):
    with db.transaction() as cur:
        cur.execute("select balance from loyalty.members where customer_id = coalesce((select merged_into from "
                    "loyalty.members where customer_id = %s and status = 'merged'), %s)", (customer_id, customer_id))
        row = cur.fetchone()
        balance = row[0] if row else 0
        return balance, redemptions.held_points(cur, customer_id, utcnow())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_any_interleaving_keeps_the_ledger_exact_and_never_overdraws(loyalty, plan):
    db = loyalty.app.state.db
    people = [uuid.uuid4() for _ in range(2)]
    orders: list[tuple[uuid.UUID, str]] = []
    holds: list[dict] = []
    for step in [("earn", 0, 90_000), ("earn", 1, 90_000)] + plan:  # both start with points to spend
        kind = step[0]
        try:
            if kind == "earn":
                order = f"p-{uuid.uuid4().hex[:12]}"
                orders.append((people[step[1]], order))
                deliver(loyalty, purchase(people[step[1]], step[2], order_id=order))
            elif kind == "refund" and orders:
                who, order = orders[step[1] % len(orders)]
                deliver(loyalty, refund(who, order, step[2]))
            elif kind == "hold":
                who = people[step[1]]
                balance, held = balance_and_held(db, who)
                with db.transaction() as cur:
                    holds.append(redemptions.hold(cur, "demo", who, step[2], None, None, None, utcnow()))
                assert step[2] <= balance - held, "a hold reserved more than was available"
            elif kind in ("commit", "release") and holds:
                hold = holds[step[1] % len(holds)]
                with db.transaction() as cur:
                    done = getattr(redemptions, kind)(cur, "demo", hold["redemption_id"], utcnow())
                if kind == "commit" and done["status"] == "committed":
                    assert balance_and_held(db, hold["customer_id"])[0] >= 0, "a commit overdrew"
            elif kind == "expire":
                clock.tick(db, utcnow() + timedelta(days=step[1]))
            elif kind == "merge" and step[1] != step[2]:
                deliver(loyalty, merged(people[step[1]], people[step[2]]))
        except DomainError:
            pass  # a refusal (not enough points, a released hold …) is an allowed outcome
        ledger_is_exact(loyalty, people)
    totals = sql(loyalty, "select coalesce(sum(points), 0) from loyalty.entries where customer_id = any(%s)", people)
    balances = sql(loyalty, "select coalesce(sum(balance), 0) from loyalty.members where customer_id = any(%s)",
                   people)
    assert totals == balances
