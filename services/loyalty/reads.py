"""What the loyalty API shows: a member (tier, balance, what expires soon, progress to the next tier),
their ledger, and the liability per store that finance books."""
from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from services.loyalty import members, program as programs
from shared.errors import NotFound

EXPIRY_HORIZONS_DAYS = (30, 60, 90)


def member(cur, tenant_id: str, customer_id: UUID, now: datetime, program: programs.Program) -> dict:
    """The member view in one statement (the API's hottest read); a merged id answers with its survivor."""
    horizons = {f"d{d}": now + timedelta(days=d) for d in EXPIRY_HORIZONS_DAYS}
    cur.execute(
        "select m.customer_id, m.status, m.tier, m.tier_since, m.balance, m.debt, m.next_review_at, "
        " (select coalesce(sum(e.qualifying), 0) from entries e "
        "   where e.customer_id = m.customer_id and e.qualifies_at > %(since)s), "
        " (select coalesce(array_agg(x.customer_id order by x.customer_id), '{}') from members x "
        "   where x.merged_into = m.customer_id and x.status = 'merged'), "
        " (select coalesce(sum(r.points), 0) from redemptions r "
        "   where r.customer_id = m.customer_id and r.status = 'held' and r.expires_at > %(now)s), "
        + ", ".join(f"(select coalesce(sum(l.remaining), 0) from lots l where l.customer_id = m.customer_id "
                    f"and l.expires_at <= %(d{d})s)" for d in EXPIRY_HORIZONS_DAYS) +
        " from members m where m.tenant_id = %(tenant)s and m.customer_id = coalesce((select merged_into from "
        " members where customer_id = %(asked)s and status = 'merged'), %(asked)s)",
        {"since": program.window_start(now), "now": now, "tenant": tenant_id, "asked": customer_id, **horizons})
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"unknown member {customer_id}: no points were ever earned or adjusted for this customer")
    cid, status, tier_name, since, balance, debt, next_review, earned, merged_from, held, *soon = row
    if status == "erased":
        raise NotFound(f"member {customer_id} was erased")
    tier, upcoming = program.tier(tier_name), program.next_tier(tier_name)
    return {
        "customer_id": cid, "asked_for": customer_id, "merged_from": merged_from,
        "tier": {"name": tier.name, "since": since, "earn_multiplier": tier.earn_multiplier,
                 "discount_pct": tier.discount_pct},
        "balance": balance, "held": int(held), "available": max(balance - int(held), 0), "debt": debt,
        "earned_in_window": int(earned), "window_months": program.window_months,
        "next_tier": None if upcoming is None else {
            "name": upcoming.name, "threshold": upcoming.threshold,
            "points_needed": max(upcoming.threshold - int(earned), 0)},
        "expiring": {f"next_{d}_days": int(n) for d, n in zip(EXPIRY_HORIZONS_DAYS, soon)},
        "next_review_at": next_review,
    }


def entries(cur, tenant_id: str, customer_id: UUID, limit: int, before: int | None, include_merged: bool) -> dict:
    found = members.get_member(cur, tenant_id, customer_id)
    cid = found["customer_id"]
    owners = [cid]
    if include_merged:
        cur.execute("select customer_id from members where merged_into = %s", (cid,))
        owners += [r[0] for r in cur.fetchall()]
    cur.execute("select entry_id, customer_id, seq, kind, points, store_id, occurred_at, posted_at, expires_at, "
                "source_type, source_event_id, source_ref, reason, actor, lot_key from entries "
                "where customer_id = any(%s) and (%s::bigint is null or seq < %s) order by seq desc limit %s",
                (owners, before, before, limit))
    columns = [d[0] for d in cur.description]
    items = [dict(zip(columns, row)) for row in cur.fetchall()]
    return {"customer_id": cid, "balance": found["balance"], "items": items,
            "next_before": items[-1]["seq"] if len(items) == limit else None}


def liability(cur, tenant_id: str, store_id: str | None) -> dict:
    """Outstanding points per store where they were earned (lots not yet spent, expired or reversed),
    their money value, and points owed back by members whose reversals exceeded their balance."""
    program = programs.load(cur, tenant_id)
    cur.execute("select coalesce(store_id, ''), sum(remaining), count(distinct customer_id) from lots "
                "where tenant_id = %s and (%s::text is null or store_id = %s) group by 1",
                (tenant_id, store_id, store_id))
    stores: dict[str, dict] = {}
    for store, points, holders in cur.fetchall():
        stores.setdefault(store, _line(store))["outstanding_points"] = int(points)
        stores[store]["members_holding"] = holders
    cur.execute("select store_id, sum(points), count(distinct customer_id) from debts "
                "where tenant_id = %s and (%s::text is null or store_id = %s) group by 1",
                (tenant_id, store_id, store_id))
    for store, points, debtors in cur.fetchall():
        stores.setdefault(store, _line(store))["negative_points"] = int(points)
        stores[store]["members_negative"] = debtors
    lines = sorted(stores.values(), key=lambda s: s["store_id"] or "")
    for line in lines:
        line["net_points"] = line["outstanding_points"] - line["negative_points"]
        line["value_minor"] = round(line["net_points"] * program.point_value_minor)
    total = {k: sum(line[k] for line in lines) for k in ("outstanding_points", "negative_points", "net_points",
                                                          "value_minor")}
    return {"currency": program.currency, "point_value_minor": program.point_value_minor, "stores": lines,
            "total": total}


def _line(store: str) -> dict:
    return {"store_id": store or None, "outstanding_points": 0, "members_holding": 0, "negative_points": 0,
            "members_negative": 0}
