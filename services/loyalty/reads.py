"""What the loyalty API shows: a member (tier, balance, what expires soon, progress to the next tier),
their ledger, and the liability per store that finance books."""
from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from services.loyalty import members, program as programs, redemptions

EXPIRY_HORIZONS_DAYS = (30, 60, 90)


def member(cur, tenant_id: str, customer_id: UUID, now: datetime) -> dict:
    found = members.get_member(cur, tenant_id, customer_id)
    cid = found["customer_id"]
    program = programs.load(cur, tenant_id)
    cur.execute("select coalesce(sum(qualifying) filter (where qualifies_at > %s), 0), "
                "(select coalesce(array_agg(customer_id order by customer_id), '{}') from members "
                " where merged_into = %s and status = 'merged') from entries where customer_id = %s",
                (program.window_start(now), cid, cid))
    earned, merged_from = cur.fetchone()
    cur.execute("select " + ", ".join(f"coalesce(sum(remaining) filter (where expires_at <= %s), 0)"
                                      for _ in EXPIRY_HORIZONS_DAYS) + " from lots where customer_id = %s",
                [now + timedelta(days=d) for d in EXPIRY_HORIZONS_DAYS] + [cid])
    expiring = dict(zip((f"next_{d}_days" for d in EXPIRY_HORIZONS_DAYS), map(int, cur.fetchone())))
    held = redemptions.held_points(cur, cid, now)
    tier, upcoming = program.tier(found["tier"]), program.next_tier(found["tier"])
    return {
        "customer_id": cid, "asked_for": customer_id, "merged_from": merged_from,
        "tier": {"name": tier.name, "since": found["tier_since"], "earn_multiplier": tier.earn_multiplier,
                 "discount_pct": tier.discount_pct},
        "balance": found["balance"], "held": held, "available": max(found["balance"] - held, 0),
        "debt": found["debt"],
        "earned_in_window": int(earned), "window_months": program.window_months,
        "next_tier": None if upcoming is None else {
            "name": upcoming.name, "threshold": upcoming.threshold,
            "points_needed": max(upcoming.threshold - int(earned), 0)},
        "expiring": expiring, "next_review_at": found["next_review_at"],
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
