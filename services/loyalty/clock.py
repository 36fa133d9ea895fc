"""The loyalty clock: expires points whose lot has run out (oldest first, as the lots say), lapses
redemption holds, and reviews tiers when a member's review period starts. Members are claimed with
SKIP LOCKED, so replicas share the work and never post the same expiry twice (it is idempotent anyway)."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from services.loyalty import ledger, members, program as programs, redemptions
from services.loyalty.members import Posting
from shared.bus.worker import Clock, run_jobs
from shared.db import Database
from shared.events.base import utcnow

BATCH = 200
PENDING_REVERSAL_DAYS = 90  # a reversal whose earn never came is forgotten after this


def expire_points(cur, now: datetime) -> int:
    cur.execute("select m.tenant_id, m.customer_id from members m where m.status = 'active' and exists "
                "(select 1 from lots l where l.customer_id = m.customer_id and l.expires_at <= %s) "
                "limit %s for update of m skip locked", (now, BATCH))
    due = cur.fetchall()
    for tenant_id, customer_id in due:
        program = programs.load(cur, tenant_id)
        member = members.get_member(cur, tenant_id, customer_id)
        state = ledger.holdings(members.entries_of(cur, [customer_id])[customer_id])
        postings = [Posting(ledger.Entry(uuid.uuid4(), "expire", -lot.remaining, now, lot.store_id,
                                         lot_key=lot.lot_key),
                            f"expire:{customer_id}:{lot.lot_key}:{lot.expires_at.isoformat()}")
                    for lot in ledger.expiring(state, now)]
        posted = members.post(cur, tenant_id, customer_id, postings)
        members.refresh(cur, program, member, now, posted)
    return len(due)


def review_tiers(cur, now: datetime) -> int:
    cur.execute(f"select {members.MEMBER_COLUMNS} from members where status = 'active' and next_review_at <= %s "
                "order by next_review_at limit %s for update skip locked", (now, BATCH))
    due = [members.member_row(r) for r in cur.fetchall()]
    for member in due:
        program = programs.load(cur, member["tenant_id"])
        entries = members.entries_of(cur, [member["customer_id"]])[member["customer_id"]]
        earned = ledger.earned_in_window(entries, program.window_start(now))
        tier = program.review_tier(member["tier"], earned).name
        if tier != member["tier"]:
            members.set_tier(cur, program, member, tier, f"review ({program.downgrade}): {earned} points earned in "
                                                         f"{program.window_months} months", earned, now)
        else:
            cur.execute("update members set next_review_at = %s where customer_id = %s",
                        (program.next_review(now), member["customer_id"]))
    return len(due)


def forget_pending(cur, now: datetime) -> int:
    cur.execute("delete from pending_reversals where occurred_at < %s",
                (now - timedelta(days=PENDING_REVERSAL_DAYS),))
    return cur.rowcount


JOBS = (("points_expired", expire_points), ("holds_expired", redemptions.expire_holds),
        ("tiers_reviewed", review_tiers), ("pending_forgotten", forget_pending))


def tick(db: Database, now: datetime | None = None) -> dict[str, int]:
    return run_jobs(db, JOBS, now or utcnow())


def loyalty_clock(db: Database, interval_s: float = 5.0) -> Clock:
    return Clock("loyalty-clock", db, JOBS, interval_s, BATCH, utcnow)
