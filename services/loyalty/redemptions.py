"""Redemption is hold → commit or release. A hold reserves points under the member's row lock, so two
concurrent redemptions can never together take more than the balance; only a commit posts the entry.
Admin adjustments are here too: the other way points change by hand."""
from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

from services.loyalty import ledger, members, program as programs
from services.loyalty.members import Posting
from shared.errors import Conflict, Invalid, NotFound

COLUMNS = "redemption_id, tenant_id, customer_id, points, store_id, note, status, expires_at, created_at, decided_at"


def view(row) -> dict:
    found = dict(zip(COLUMNS.split(", "), row))
    found.pop("tenant_id")
    return found


def held_points(cur, customer_id: UUID, now: datetime) -> int:
    cur.execute("select coalesce(sum(points), 0) from redemptions where customer_id = %s and status = 'held' "
                "and expires_at > %s", (customer_id, now))
    return int(cur.fetchone()[0])


def hold(cur, tenant_id: str, customer_id: UUID, points: int, store_id: str | None, note: str | None,
         redemption_id: UUID | None, now: datetime) -> dict:
    if redemption_id is not None:
        existing = _get(cur, tenant_id, redemption_id)
        if existing is not None:  # a retried request: the same hold, or a clear refusal
            if existing["points"] != points or existing["customer_id"] != customer_id:
                raise Conflict(f"redemption {redemption_id} exists with other points or member")
            return existing
    member = members.get_member(cur, tenant_id, customer_id, for_update=True)
    available = member["balance"] - held_points(cur, member["customer_id"], now)
    if points > available:
        raise Conflict(f"not enough points: {points} asked, {available} available",
                       balance=member["balance"], available=max(available, 0))
    program = programs.load(cur, tenant_id)
    cur.execute(f"insert into redemptions (redemption_id, tenant_id, customer_id, points, store_id, note, status, "
                f"expires_at, created_at) values (%s, %s, %s, %s, %s, %s, 'held', %s, %s) returning {COLUMNS}",
                (redemption_id or uuid.uuid4(), tenant_id, member["customer_id"], points, store_id, note,
                 program.hold_until(now), now))
    return view(cur.fetchone())


def commit(cur, tenant_id: str, redemption_id: UUID, now: datetime) -> dict:
    found = _locked(cur, tenant_id, redemption_id, now)
    if found["status"] == "committed":
        return found
    if found["status"] != "held":
        raise Conflict(f"redemption {redemption_id} is {found['status']}: it can no longer be committed",
                       status=found["status"])
    member = members.get_member(cur, tenant_id, found["customer_id"], for_update=True)
    if member["balance"] < found["points"]:
        raise Conflict(f"the balance fell to {member['balance']} since the hold (a reversal or expiry): "
                       f"{found['points']} cannot be redeemed", balance=member["balance"])
    entry = ledger.Entry(uuid.uuid4(), "redeem", -found["points"], now, found["store_id"])
    program = programs.load(cur, tenant_id)
    posted = members.post(cur, tenant_id, member["customer_id"], [Posting(
        entry, f"redeem:{redemption_id}", announce={"redemption_id": redemption_id})])
    members.refresh(cur, program, member, now, posted)
    return _decide(cur, redemption_id, "committed", now)


def release(cur, tenant_id: str, redemption_id: UUID, now: datetime) -> dict:
    found = _locked(cur, tenant_id, redemption_id, now)
    if found["status"] in ("released", "expired"):
        return found
    if found["status"] == "committed":
        raise Conflict(f"redemption {redemption_id} is committed: reverse it with an adjustment")
    return _decide(cur, redemption_id, "released", now)


def expire_holds(cur, now: datetime, limit: int = 500) -> int:
    cur.execute("update redemptions set status = 'expired', decided_at = %s where redemption_id in (select "
                "redemption_id from redemptions where status = 'held' and expires_at <= %s limit %s "
                "for update skip locked)", (now, now, limit))
    return cur.rowcount


def get(cur, tenant_id: str, redemption_id: UUID) -> dict:
    found = _get(cur, tenant_id, redemption_id)
    if found is None:
        raise NotFound(f"unknown redemption {redemption_id}")
    return found


def _get(cur, tenant_id: str, redemption_id: UUID, lock: bool = False) -> dict | None:
    cur.execute(f"select {COLUMNS} from redemptions where tenant_id = %s and redemption_id = %s"
                + (" for update" if lock else ""), (tenant_id, redemption_id))
    row = cur.fetchone()
    return view(row) if row else None


def _locked(cur, tenant_id: str, redemption_id: UUID, now: datetime) -> dict:
    found = _get(cur, tenant_id, redemption_id, lock=True)
    if found is None:
        raise NotFound(f"unknown redemption {redemption_id}")
    if found["status"] == "held" and found["expires_at"] <= now:
        return _decide(cur, redemption_id, "expired", now)
    return found


def _decide(cur, redemption_id: UUID, status: str, now: datetime) -> dict:
    cur.execute(f"update redemptions set status = %s, decided_at = %s where redemption_id = %s returning {COLUMNS}",
                (status, now, redemption_id))
    return view(cur.fetchone())


def adjust(cur, tenant_id: str, customer_id: UUID, points: int, reason: str, actor: str,
           adjustment_id: UUID | None, now: datetime) -> dict:
    """An admin's correction, with its reason. A credit opens a lot that expires like earned points; it
    does not count toward tier. A debit may not take the balance below zero (that is what reversals are for)."""
    if points == 0:
        raise Invalid("an adjustment of 0 points changes nothing")
    program = programs.load(cur, tenant_id)
    if points > 0:
        member = members.lock(cur, tenant_id, {customer_id}, program, now)[customer_id]
        if member["status"] != "active":
            raise NotFound(f"member {customer_id} was erased")
    else:
        member = members.get_member(cur, tenant_id, customer_id, for_update=True)
        if member["balance"] + points < 0:
            raise Conflict(f"the balance is {member['balance']}: an adjustment of {points} would take it below zero",
                           balance=member["balance"])
    entry_id = adjustment_id or uuid.uuid4()
    entry = ledger.Entry(entry_id, "adjust", points, now, None, lot_key=entry_id if points > 0 else None,
                         expires_at=program.expires_at(now) if points > 0 else None)
    posted = members.post(cur, tenant_id, member["customer_id"], [Posting(
        entry, f"adjust:{entry_id}", reason=reason, actor=actor, announce={"reason": "admin"})])
    if not posted:
        cur.execute("select customer_id, points from entries where tenant_id = %s and idem_key = %s",
                    (tenant_id, f"adjust:{entry_id}"))
        if cur.fetchone() != (member["customer_id"], points):
            raise Conflict(f"adjustment {entry_id} exists with other points or member")
    updated = members.refresh(cur, program, member, now, posted)
    return {"adjustment_id": entry_id, "customer_id": member["customer_id"], "points": points,
            "balance": updated["balance"]}
