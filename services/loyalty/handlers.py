"""Loyalty's consumers' use cases. Each batch is one transaction: points earned and reversed from
resolved touchpoints; ledgers combined on merges, moved on splits, forfeited and anonymised on erasure.
A redelivered event changes nothing (processed_events, and every entry's idempotency key)."""
from __future__ import annotations

import uuid
from collections import defaultdict
from uuid import UUID

from services.loyalty import earning, ledger, members, program as programs
from services.loyalty.members import Posting
from services.loyalty.settings import LoyaltySettings
from shared.bus.consumer import Delivery
from shared.bus.outbox import enqueue
from shared.db import Database
from shared.erasure import EraseStatement, customer_change, erase_customers
from shared.events import CustomerErased, CustomerMerged, CustomerSplit, Touchpoint, utcnow
from shared.events.feedback import SurveyAnswered
from shared.topics import ERASURE_CONFIRMATIONS

SERVICE = "loyalty"

ERASE_STATEMENTS: tuple[EraseStatement, ...] = (
    # The ledger stays (finance's totals per store); free text that might name the person goes.
    EraseStatement("update entries set reason = null, actor = null where tenant_id = %(tenant_id)s "
                   "and customer_id = any(%(customer_ids)s) and (reason is not null or actor is not null)",
                   anonymises=True),
    EraseStatement("update redemptions set note = null, status = case when status = 'held' then 'released' "
                   "else status end where tenant_id = %(tenant_id)s and customer_id = any(%(customer_ids)s)",
                   anonymises=True),
    EraseStatement("delete from moved_events where customer_id = any(%(customer_ids)s)"),
)


def claim(cur, event_ids: list[UUID]) -> set[UUID]:
    if not event_ids:
        return set()
    cur.execute("insert into processed_events (event_id) select unnest(%s::uuid[]) on conflict do nothing "
                "returning event_id", (event_ids,))
    return {r[0] for r in cur.fetchall()}


class Batch:
    """Postings of one transaction per member, refreshed and announced once at the end."""

    def __init__(self, cur, now):
        self.cur, self.now = cur, now
        self.programs: dict[str, programs.Program] = {}
        self.touched: dict[UUID, tuple[dict, list[Posting]]] = {}
        self.pending: list[tuple[dict, Posting]] = []
        self.earned_refs: dict[str, list[str]] = {}  # tenant -> order/appointment refs earned on in this batch

    def program(self, tenant_id: str) -> programs.Program:
        if tenant_id not in self.programs:
            self.programs[tenant_id] = programs.load(self.cur, tenant_id)
        return self.programs[tenant_id]

    def post(self, member: dict, postings: list[Posting]) -> None:
        """Buffer postings; they are written by the next flush (before anything reads the ledger)."""
        self.touched.setdefault(member["customer_id"], (member, []))
        self.pending += [(member, p) for p in postings]

    def flush(self) -> None:
        new = {p.entry.entry_id for p in members.post_many(
            self.cur, [(m["tenant_id"], m["customer_id"], p) for m, p in self.pending])}
        for member, posting in self.pending:
            if posting.entry.entry_id in new:
                self.touched[member["customer_id"]][1].append(posting)
        self.pending = []

    def finish(self, tier_reason: str = "earned") -> None:
        self.flush()
        if self.touched:
            members.refresh_many(self.cur, {t: self.program(t) for t in {m["tenant_id"] for m, _ in
                                                                         self.touched.values()}},
                                 list(self.touched.values()), self.now, tier_reason)


def apply_touchpoints(deliveries: list[Delivery], db: Database) -> None:
    """Earn and reverse from resolved touchpoints and from feedback's survey answers (the same rules)."""
    events = [d.event for d in deliveries if isinstance(d.event, Touchpoint | SurveyAnswered) and d.event.customer_id]
    if not events:
        return
    with db.transaction() as cur:
        batch = Batch(cur, utcnow())
        fresh = claim(cur, [e.event_id for e in events])
        events = [e for e in events if e.event_id in fresh and earning.is_relevant(e, batch.program(e.tenant_id))]
        if not events:
            return
        moved = moved_to(cur, [e.event_id for e in events])
        by_tenant: dict[str, list[Touchpoint]] = defaultdict(list)
        for e in events:
            by_tenant[e.tenant_id].append(e)
        for tenant, tenant_events in by_tenant.items():
            owner = {e.event_id: moved.get(e.event_id, e.customer_id) for e in tenant_events}
            earners = {owner[e.event_id] for e in tenant_events if e.type in batch.program(tenant).earn_rules}
            locked = members.lock(cur, tenant, earners, batch.program(tenant), batch.now)
            for event in sorted(tenant_events, key=lambda e: e.occurred_at):
                if event.type in batch.program(tenant).earn_rules:
                    _earn(batch, locked[owner[event.event_id]], event)
                else:
                    _reverse(batch, event)
            _apply_pending(batch, tenant)
        batch.finish()


def _earn(batch: Batch, member: dict, event: Touchpoint) -> None:
    if member["status"] != "active":
        return  # erased: nothing is credited to them again
    postings = earning.earn(batch.cur, batch.program(event.tenant_id), member, event)
    batch.post(member, postings)
    batch.earned_refs.setdefault(event.tenant_id, []).extend(p.source_ref for p in postings if p.source_ref)


def _apply_pending(batch: Batch, tenant_id: str) -> None:
    """Reversals that arrived before the earns this batch posted."""
    refs = batch.earned_refs.pop(tenant_id, [])
    if not refs:
        return
    for ref, event_id, event_type, amount, occurred_at in earning.take_pending(batch.cur, tenant_id, refs):
        _post_reversals(batch, tenant_id, event_id, event_type, ref, amount, occurred_at)


def _reverse(batch: Batch, event: Touchpoint) -> None:
    found = earning.reversal_of(event)
    if found is None:
        return
    ref, amount = found
    if not _post_reversals(batch, event.tenant_id, event.event_id, event.type, ref, amount, event.occurred_at):
        earning.keep_pending(batch.cur, event, ref, amount)


def _post_reversals(batch: Batch, tenant_id: str, event_id, event_type: str, ref: str, amount, occurred_at) -> bool:
    """Reverse the earns made for `ref`; False when there was none (yet)."""
    cur = batch.cur
    batch.flush()  # the earns this batch made are part of what there is to reverse
    cur.execute("select exists (select 1 from entries where tenant_id = %s and source_ref = %s and kind = 'earn')",
                (tenant_id, ref))
    if not cur.fetchone()[0]:
        return False
    for holder, posting in earning.reverse(cur, tenant_id, event_id, event_type, ref, amount, occurred_at):
        member = members.lock(cur, tenant_id, {holder}, None, batch.now, enrol=False)[holder]
        if member["status"] == "active":
            batch.post(member, [posting])
    return True


def moved_to(cur, event_ids: list[UUID]) -> dict[UUID, UUID]:
    cur.execute("select event_id, customer_id from moved_events where event_id = any(%s)", (event_ids,))
    return dict(cur.fetchall())


# --- profile changes -------------------------------------------------------------------------------
def apply_customer_changes(deliveries: list[Delivery], db: Database, settings: LoyaltySettings) -> None:
    schema = settings.service_name
    with db.transaction() as cur:
        changes = [customer_change(d.event) for d in deliveries]
        # Merges and splits are claimed here, erasures by erase_customers; the rest does not concern loyalty.
        fresh = claim(cur, [e.event_id for e in changes if isinstance(e, CustomerMerged | CustomerSplit)])
        members.lock_in_order(cur, {cid for e in changes if e.event_id in fresh or isinstance(e, CustomerErased)
                                    for cid in _members_touched(e)})
        for event in changes:
            if event.event_id not in fresh:
                continue
            if isinstance(event, CustomerMerged):
                merge(cur, event)
            elif isinstance(event, CustomerSplit):
                split(cur, event)
        erasures = [e for e in changes if isinstance(e, CustomerErased)]
        for event in erasures:
            forfeit(cur, event)
        confirmations = erase_customers(cur, schema, SERVICE, erasures, ERASE_STATEMENTS)
        enqueue(cur, schema, [(ERASURE_CONFIRMATIONS, str(c.customer_id), c) for c in confirmations])


def _members_touched(event) -> tuple[UUID, ...]:
    if isinstance(event, CustomerMerged):
        return event.customer_id, *event.payload.merged_customer_ids
    if isinstance(event, CustomerSplit):
        return event.customer_id, event.payload.new_customer_id
    if isinstance(event, CustomerErased):
        return event.payload.customer_ids
    return ()


def merge(cur, event: CustomerMerged) -> None:
    """The merged profiles' points, lots, debt, tier points and open holds move to the survivor; their
    own history stays, closed by transfer_out entries; ids that pointed at them point at the survivor,
    and so does a touchpoint for a merged id that arrives later. The survivor keeps the higher tier."""
    tenant = event.tenant_id
    survivor = members.canonical_ids(cur, {event.customer_id})[event.customer_id]
    losers = [loser for loser in event.payload.merged_customer_ids if loser != survivor]
    if not losers:
        return  # already one member (an older merge folded the survivor into this id)
    batch = Batch(cur, utcnow())
    program = batch.program(tenant)
    cur.execute("select customer_id from members where customer_id = any(%s) and status = 'active'", (losers,))
    holding = sorted((r[0] for r in cur.fetchall()), key=str)
    locked = members.lock(cur, tenant, {survivor, *holding}, program, batch.now, enrol=bool(holding))
    target = locked.get(survivor)
    survivor = target["customer_id"] if target else survivor
    cur.execute("insert into members (tenant_id, customer_id, status, merged_into, tier, tier_since, next_review_at) "
                "select %s, unnest(%s::uuid[]), 'merged', %s, %s, %s, %s on conflict (customer_id) do update "
                "set status = 'merged', merged_into = excluded.merged_into where members.status <> 'erased'",
                (tenant, losers, survivor, program.tiers[0].name, batch.now, batch.now))
    cur.execute("update members set merged_into = %s where merged_into = any(%s)", (survivor, losers))
    if not holding or target is None or target["status"] != "active":
        return
    cur.execute("update redemptions set customer_id = %s where customer_id = any(%s) and status = 'held'",
                (survivor, losers))
    ledgers = members.entries_of(cur, holding)
    best_tier = target["tier"]
    for loser in holding:
        source = {**locked[loser], "status": "merged"}
        for transfer in ledger.merge_transfers(ledgers[loser], batch.now):
            _transfer(batch, event.event_id, transfer, source, target, "merge")
        batch.touched.setdefault(loser, (source, []))
        if program.rank(source["tier"]) > program.rank(best_tier):
            best_tier = source["tier"]
    batch.finish(tier_reason="merge")
    current = members.get_member(cur, tenant, survivor)
    if program.rank(best_tier) > program.rank(current["tier"]):
        earned = ledger.earned_in_window(members.entries_of(cur, [survivor])[survivor],
                                         program.window_start(batch.now))
        members.set_tier(cur, program, current, best_tier, "merge: the higher tier of the merged profiles", earned,
                         batch.now)


def split(cur, event: CustomerSplit) -> None:
    """Entries earned by the moved touchpoints (and their reversals and expiry) move to the new profile."""
    tenant, source_id, new_id = event.tenant_id, event.customer_id, event.payload.new_customer_id
    moved_ids = list(event.payload.moved_event_ids)
    if moved_ids:
        cur.execute("insert into moved_events (event_id, customer_id) select unnest(%s::uuid[]), %s "
                    "on conflict (event_id) do update set customer_id = excluded.customer_id", (moved_ids, new_id))
    cur.execute("select entry_id from entries where tenant_id = %s and kind = 'earn' and source_event_id = any(%s)",
                (tenant, moved_ids))
    lot_keys = {r[0] for r in cur.fetchall()}
    if not lot_keys:
        return
    batch = Batch(cur, utcnow())
    program = batch.program(tenant)
    locked = members.lock(cur, tenant, {source_id, new_id}, program, batch.now)
    source, target = locked[source_id], locked[new_id]
    if source["status"] != "active" or target["status"] != "active":
        return
    held = [e for e in members.entries_of(cur, [source["customer_id"]])[source["customer_id"]]
            if e.lot_key in lot_keys]
    for transfer in ledger.split_transfers(held, batch.now):
        _transfer(batch, event.event_id, transfer, source, target, "split")
    batch.finish(tier_reason="split")


def _transfer(batch: Batch, cause: UUID, transfer: ledger.Transfer, source: dict, target: dict, reason: str) -> None:
    out_entry, in_entry = transfer.entries(batch.now, uuid.uuid4(), uuid.uuid4())
    key = f"{reason}:{cause}:{transfer.lot_key or transfer.store_id}"
    announce = {"reason": reason}
    batch.post(source, [Posting(out_entry, f"{key}:out:{source['customer_id']}", announce=announce)])
    batch.post(target, [Posting(in_entry, f"{key}:in:{target['customer_id']}", announce=announce)])


def forfeit(cur, event: CustomerErased) -> None:
    """An erased member can never redeem: their balance is written off (so liability stays exact) and
    they leave the active members. The ledger rows stay, anonymised by the erase statements."""
    now = utcnow()
    program = programs.load(cur, event.tenant_id)
    ids = list(event.payload.customer_ids)
    cur.execute(f"select {members.MEMBER_COLUMNS} from members where tenant_id = %s and customer_id = any(%s) "
                "and status = 'active' order by customer_id for update", (event.tenant_id, ids))
    for member in map(members.member_row, cur.fetchall()):
        if member["balance"]:
            entry = ledger.Entry(uuid.uuid4(), "adjust", -member["balance"], now, None)
            members.post(cur, event.tenant_id, member["customer_id"], [Posting(
                entry, f"forfeit:{event.payload.erasure_request_id}:{member['customer_id']}",
                reason=None, actor="erasure")])
        members.refresh(cur, program, {**member, "status": "erased"}, now, [])
    cur.execute("insert into members (tenant_id, customer_id, status, tier, tier_since, next_review_at) "
                "select %s, unnest(%s::uuid[]), 'erased', %s, %s, %s on conflict (customer_id) "
                "do update set status = 'erased', merged_into = null",
                (event.tenant_id, ids, program.tiers[0].name, now, now))
