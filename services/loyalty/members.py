"""Members and their ledger in Postgres: find and lock a member (following merges), post entries
idempotently, and refresh what the ledger implies (lots, debt, balance, tier) in the same transaction,
announcing each change through the outbox."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from services.loyalty import ledger
from services.loyalty.program import Program
from shared import bulk_sql
from shared.bus.outbox import enqueue
from shared.errors import NotFound
from shared.events.loyalty import (
    PointsAdjusted, PointsAdjustedPayload, PointsEarned, PointsEarnedPayload, PointsExpired, PointsPayload,
    PointsRedeemed, PointsRedeemedPayload, PointsReversed, PointsReversedPayload, TierChanged, TierChangedPayload,
)
from shared.topics import LOYALTY_CHANGES

SCHEMA = "loyalty"
MEMBER_COLUMNS = "tenant_id, customer_id, status, merged_into, tier, tier_since, balance, debt, next_review_at"
ENTRY_COLUMNS = ("entry_id, kind, points, occurred_at, store_id, lot_key, expires_at, qualifying, qualifies_at, seq, "
                 "source_event_id, source_type, source_ref, reason")


@dataclass
class Posting:
    """An entry to append, with what it is about (idempotent on `idem_key` within the tenant)."""

    entry: ledger.Entry
    idem_key: str
    source_type: str | None = None
    source_event_id: UUID | None = None
    source_ref: str | None = None
    reason: str | None = None
    actor: str | None = None
    amount_minor: int | None = None
    announce: dict | None = None  # extra payload fields for the event (redemption_id, reversed entry …)


def member_row(row) -> dict:
    return dict(zip(MEMBER_COLUMNS.split(", "), row))


def canonical_ids(cur, customer_ids: set[UUID]) -> dict[UUID, UUID]:
    """Each id's current member id: merged ids follow merged_into (kept compressed to one hop)."""
    if not customer_ids:
        return {}
    cur.execute("select customer_id, merged_into from members where customer_id = any(%s) and status = 'merged'",
                (list(customer_ids),))
    merged = dict(cur.fetchall())
    return {cid: merged.get(cid, cid) for cid in customer_ids}


def lock_in_order(cur, customer_ids: set[UUID]) -> None:
    """Lock every existing member these ids name or resolve to, in one statement in id order. A batch
    that then works through its merges one at a time takes no lock out of that order, so two batches
    sharing members wait for each other instead of deadlocking."""
    ids = set(customer_ids) | set(canonical_ids(cur, customer_ids).values())
    if ids:
        cur.execute("select 1 from members where customer_id = any(%s) order by customer_id for update",
                    (sorted(ids, key=str),))


def lock(cur, tenant_id: str, customer_ids: set[UUID], program: Program | None, now: datetime,
         enrol: bool = True) -> dict[UUID, dict]:
    """Lock the members these ids resolve to, enrolling new ones (at the entry tier) when `enrol`.
    Returns requested id -> member row (possibly the survivor of a merge, or an erased member)."""
    for _ in range(5):  # a merge may move an id between the read and the lock: then look again
        canonical = canonical_ids(cur, customer_ids)
        targets = sorted(set(canonical.values()), key=str)
        enrolled = set()
        if enrol and targets:
            entry_tier = program.tiers[0].name
            cur.execute("insert into members (tenant_id, customer_id, tier, tier_since, next_review_at) "
                        "select %s, unnest(%s::uuid[]), %s, %s, %s on conflict do nothing returning customer_id",
                        (tenant_id, targets, entry_tier, now, program.next_review(now)))
            enrolled = {r[0] for r in cur.fetchall()}
        cur.execute(f"select {MEMBER_COLUMNS} from members where customer_id = any(%s) and tenant_id = %s "
                    "order by customer_id for update", (targets, tenant_id))
        rows = {r["customer_id"]: {**r, "enrolled": r["customer_id"] in enrolled}
                for r in map(member_row, cur.fetchall())}
        if all(r["status"] != "merged" for r in rows.values()):
            return {cid: rows[target] for cid, target in canonical.items() if target in rows}
    raise RuntimeError("members kept merging while being locked")


def get_member(cur, tenant_id: str, customer_id: UUID, for_update: bool = False) -> dict:
    """The active member this id resolves to, or NotFound with the reason."""
    cur.execute(f"select {MEMBER_COLUMNS} from members where tenant_id = %s and customer_id = "
                "coalesce((select merged_into from members where customer_id = %s and status = 'merged'), %s)"
                + (" for update" if for_update else ""), (tenant_id, customer_id, customer_id))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"unknown member {customer_id}: no points were ever earned or adjusted for this customer")
    member = member_row(row)
    if member["status"] == "erased":
        raise NotFound(f"member {customer_id} was erased")
    return member


def entries_of(cur, customer_ids: list[UUID]) -> dict[UUID, list[ledger.Entry]]:
    found: dict[UUID, list[ledger.Entry]] = {cid: [] for cid in customer_ids}
    if not customer_ids:
        return found
    cur.execute(f"select customer_id, {ENTRY_COLUMNS} from entries where customer_id = any(%s)", (customer_ids,))
    for row in cur.fetchall():
        found[row[0]].append(to_entry(row[1:]))
    return found


def to_entry(row) -> ledger.Entry:
    (entry_id, kind, points, occurred_at, store_id, lot_key, expires_at, qualifying, qualifies_at, seq) = row[:10]
    return ledger.Entry(entry_id, kind, points, occurred_at, store_id, lot_key, expires_at, qualifying,
                        qualifies_at, seq)


def post(cur, tenant_id: str, customer_id: UUID, postings: list[Posting]) -> list[Posting]:
    """Append entries; returns those that were new (a posting whose idem_key exists is a redelivery)."""
    return post_many(cur, [(tenant_id, customer_id, p) for p in postings])


ENTRY_SPEC = (("entry_id", "uuid"), ("tenant_id", "text"), ("customer_id", "uuid"), ("kind", "text"),
              ("points", "int"), ("qualifying", "int"), ("qualifies_at", "timestamptz"), ("lot_key", "uuid"),
              ("expires_at", "timestamptz"), ("store_id", "text"), ("occurred_at", "timestamptz"),
              ("source_type", "text"), ("source_event_id", "uuid"), ("source_ref", "text"), ("reason", "text"),
              ("actor", "text"), ("amount_minor", "bigint"), ("idem_key", "text"))


def post_many(cur, rows: list[tuple[str, UUID, Posting]]) -> list[Posting]:
    """post() for many members in one statement (COPY; a redelivered posting's conflict falls back to
    an insert that skips it)."""
    if not rows:
        return []
    inserted = bulk_sql.insert_rows(
        cur, "entries", ENTRY_SPEC,
        [(p.entry.entry_id, tenant_id, customer_id, p.entry.kind, p.entry.points, p.entry.qualifying,
          p.entry.qualifies_at, p.entry.lot_key, p.entry.expires_at, p.entry.store_id, p.entry.occurred_at,
          p.source_type, p.source_event_id, p.source_ref, p.reason, p.actor, p.amount_minor, p.idem_key)
         for tenant_id, customer_id, p in rows],
        "on conflict (tenant_id, idem_key) do nothing returning entry_id")
    if inserted is None:
        return [p for _, _, p in rows]
    new = {r[0] for r in inserted}
    return [p for _, _, p in rows if p.entry.entry_id in new]


def refresh(cur, program: Program, member: dict, now: datetime, posted: list[Posting],
            tier_reason: str = "earned") -> dict:
    return refresh_many(cur, {member["tenant_id"]: program}, [(member, posted)], now, tier_reason)[0]


def refresh_many(cur, programs: dict[str, Program], touched: list[tuple[dict, list[Posting]]], now: datetime,
                 tier_reason: str = "earned") -> list[dict]:
    """Recompute lots, debt and balance from each member's whole ledger, upgrade tiers the window now
    qualifies for, store it all and announce the new entries and tier changes — a few statements for
    the whole batch, however many members it touched. Returns the updated members."""
    ids = [member["customer_id"] for member, _ in touched]
    ledgers = entries_of(cur, ids)
    cur.execute("delete from lots where customer_id = any(%s)", (ids,))
    cur.execute("delete from debts where customer_id = any(%s)", (ids,))
    lots, debts, rows, events, updated_members = [], [], [], [], []
    for member, posted in touched:
        cid, program = member["customer_id"], programs[member["tenant_id"]]
        entries = ledgers[cid]
        state = ledger.holdings(entries)
        lots += [(member["tenant_id"], cid, lot.lot_key, lot.store_id, lot.earned_at, lot.expires_at, lot.remaining)
                 for lot in state.lots.values()]
        debts += [(member["tenant_id"], cid, store or "", points) for store, points in state.debt_by_store.items()]
        earned = ledger.earned_in_window(entries, program.window_start(now))
        old_tier, tier, since = member["tier"], member["tier"], member["tier_since"]
        if member["status"] == "active" and program.rank(program.qualified(earned).name) > program.rank(old_tier):
            tier, since = program.qualified(earned).name, now
        rows.append((cid, state.balance, state.debt, tier, since))
        updated = {**member, "balance": state.balance, "debt": state.debt, "tier": tier, "tier_since": since}
        updated_members.append(updated)
        if member["status"] != "active":
            continue
        mine = announcements(updated, posted, now)
        if member.get("enrolled"):  # readers learn the entry tier too, not only later changes
            before = updated["balance"] - sum(p.entry.points for p in posted)
            mine.insert(0, tier_changed({**updated, "tier": old_tier, "balance": before}, None, "enrolled", 0, now))
        if tier != old_tier:
            mine.append(tier_changed(updated, old_tier, f"{tier_reason}: {earned} points earned in "
                                                        f"{program.window_months} months", earned, now))
        events += [(LOYALTY_CHANGES, str(cid), e) for e in mine]
    bulk_sql.copy_rows(cur, "lots", ("tenant_id", "customer_id", "lot_key", "store_id", "earned_at", "expires_at",
                                     "remaining"), lots)
    bulk_sql.copy_rows(cur, "debts", ("tenant_id", "customer_id", "store_id", "points"), debts)
    types = ("uuid", "int", "int", "text", "timestamptz")
    cur.execute("update members m set balance = v.balance, debt = v.debt, tier = v.tier, tier_since = v.since, "
                f"updated_at = %s from {bulk_sql.unnest(types)} as v(customer_id, balance, debt, tier, since) "
                "where m.customer_id = v.customer_id", (now, *bulk_sql.columns(rows, len(types), types)))
    enqueue(cur, SCHEMA, events)
    return updated_members


def set_tier(cur, program: Program, member: dict, tier: str, reason: str, earned: int, now: datetime) -> None:
    cur.execute("update members set tier = %s, tier_since = %s, next_review_at = %s where customer_id = %s",
                (tier, now, program.next_review(now), member["customer_id"]))
    updated = {**member, "tier": tier}
    enqueue(cur, SCHEMA, [(LOYALTY_CHANGES, str(member["customer_id"]),
                           tier_changed(updated, member["tier"], reason, earned, now))])


def tier_changed(member: dict, old_tier: str | None, reason: str, earned: int, now: datetime) -> TierChanged:
    return TierChanged(**_envelope(member, now), payload=TierChangedPayload(
        from_tier=old_tier, to_tier=member["tier"], reason=reason, earned_in_window=earned,
        balance_after=member["balance"]))


def announcements(member: dict, posted: list[Posting], now: datetime) -> list:
    """One event per new entry, each with the balance right after it (entries in posting order)."""
    events = []
    balance = member["balance"] - sum(p.entry.points for p in posted)
    for p in posted:
        e = p.entry
        balance += e.points
        common = {"points": abs(e.points), "balance_after": balance, "store_id": e.store_id, "entry_id": e.entry_id}
        envelope = _envelope(member, now)
        if e.kind == "earn":
            events.append(PointsEarned(**envelope, payload=PointsEarnedPayload(
                **common, source_event_id=p.source_event_id, source_type=p.source_type or "adjustment",
                expires_at=e.expires_at)))
        elif e.kind == "redeem":
            events.append(PointsRedeemed(**envelope, payload=PointsRedeemedPayload(**common, **p.announce)))
        elif e.kind == "expire":
            events.append(PointsExpired(**envelope, payload=PointsPayload(**common)))
        elif e.kind == "reverse":
            events.append(PointsReversed(**envelope, payload=PointsReversedPayload(
                **common, source_event_id=p.source_event_id, **p.announce)))
        elif e.points:  # adjust, transfer_in, transfer_out
            events.append(PointsAdjusted(**envelope, payload=PointsAdjustedPayload(
                points=e.points, balance_after=balance, entry_id=e.entry_id, reason=p.announce["reason"])))
    return events


def _envelope(member: dict, now: datetime) -> dict:
    return {"event_id": uuid.uuid4(), "occurred_at": now, "recorded_at": now, "tenant_id": member["tenant_id"],
            "source": SCHEMA, "customer_id": member["customer_id"]}
