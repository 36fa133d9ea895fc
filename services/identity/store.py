"""Identity's SQL for resolution: policies, identifiers, customers, keys, merges, households.
Every function takes the caller's cursor: the caller owns the transaction."""
from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from datetime import datetime
from uuid import UUID

import orjson
import psycopg2.extras

from services.identity.domain import CustomerState, IdKey, IdOwner, Merge, Snapshot
from services.identity.pii import Vault
from services.identity.policy import TenantPolicy, merged_policy
from shared import bulk_sql
from shared.db import Prepared

SCHEMA = "identity"

# Tables whose rows belong to one customer and follow it through merges and erasure.
CUSTOMER_OWNED = ("identifiers", "rejected_identifiers", "profile_attributes", "consents", "resolved_events",
                  "customer_appointments")
# Keyed by customer too, so a merge copies what the survivor lacks and drops the rest.
CUSTOMER_KEYED = {
    "weak_identifiers": "tenant_id, id_type, id_scope, token, value_enc, key_id, seen_at",
    "subjects": "tenant_id, kind, subject_key, attributes, updated_at",
}


def token_of(vault: Vault, key: IdKey) -> str:
    return vault.token(key.tenant_id, key.type, key.scope, key.value)


def lock_id(token: str) -> int:
    return int.from_bytes(bytes.fromhex(token[:16]), "big", signed=True)


def _values(cur, sql: str, rows, fetch: bool = False, template: str | None = None):
    return psycopg2.extras.execute_values(cur, sql, rows, template=template, fetch=fetch, page_size=1000)


def tenant_policies(cur, tenants: set[str], default_region: str) -> dict[str, TenantPolicy]:
    """Each tenant's identity policy; a tenant seen for the first time is registered with defaults."""
    cur.execute("select tenant_id, default_region, policy from identity.tenants where tenant_id = any(%s)",
                (list(tenants),))
    found = {t: merged_policy(policy, region) for t, region, policy in cur.fetchall()}
    missing = tenants - found.keys()
    if missing:
        _values(cur, "insert into identity.tenants (tenant_id, default_region) values %s on conflict do nothing",
                [(t, default_region) for t in missing])
        found.update({t: merged_policy({}, default_region) for t in missing})
    return found


def save_policy(cur, tenant_id: str, policy: TenantPolicy) -> None:
    stored = policy.model_dump(mode="json", exclude={"default_region"}, exclude_defaults=True)
    cur.execute(
        "insert into identity.tenants (tenant_id, default_region, policy) values (%s, %s, %s) "
        "on conflict (tenant_id) do update set default_region = excluded.default_region, policy = excluded.policy",
        (tenant_id, policy.default_region, orjson.dumps(stored).decode()),
    )


def record_ingested(cur, tenant_id: str, event_ids: list[UUID]) -> set[UUID]:
    """Insert event ids; returns those not seen before (the others are duplicates)."""
    if not event_ids:
        return set()
    rows = bulk_sql.insert_rows(cur, "identity.ingested_events", [("tenant_id", "text"), ("event_id", "uuid")],
                                [(tenant_id, e) for e in event_ids], "on conflict do nothing returning event_id")
    return set(event_ids) if rows is None else {r[0] for r in rows}


def already_resolved(cur, pairs: list[tuple[str, UUID]]) -> set[tuple[str, UUID]]:
    if not pairs:
        return set()
    cur.execute("select r.tenant_id, r.event_id from unnest(%s::text[], %s::uuid[]) as v(tenant_id, event_id) "
                "join identity.resolved_events r on r.tenant_id = v.tenant_id and r.event_id = v.event_id",
                bulk_sql.columns(pairs, 2))
    return {(t, e) for t, e in cur.fetchall()}


# Identifier locks hash into this many advisory locks: a bulk batch then holds at most this many
# entries of Postgres's shared lock table (64 x max_connections by default) instead of one per identifier.
LOCK_BUCKETS = 2048
_LOCK_BASE = int.from_bytes(hashlib.sha256(b"identity-identifier-locks").digest()[:5], "big") << 16


def lock_tokens(cur, tokens, bulk: bool = False) -> None:
    """Transaction-scoped advisory locks, always in the same order, so two consumers resolving events
    that share an identifier serialise instead of both creating a customer (and never deadlock).

    Each identifier's bucket is locked exclusively. A bulk import's batch covers most buckets, so its
    workers would take turns whatever they resolve: with `bulk` the buckets are held shared (which
    still excludes every other resolver of those buckets) and then each identifier's own lock
    exclusively, which excludes another bulk batch only where the two share an identifier. Buckets
    first, then identifiers, both in order: no cycle of waits."""
    tokens = set(tokens)
    buckets = sorted({_LOCK_BASE + lock_id(t) % LOCK_BUCKETS for t in tokens})
    if not buckets:
        return
    if not bulk:
        cur.execute("select count(pg_advisory_xact_lock(k)) from unnest(%s::bigint[]) as k", (buckets,))
        return
    cur.execute("select count(pg_advisory_xact_lock_shared(k)) from unnest(%s::bigint[]) as k", (buckets,))
    # The (int, int) form: a key space of its own, apart from every bigint-keyed lock.
    own = sorted({divmod(lock_id(t), 1 << 32) for t in tokens})  # (signed high, unsigned low) halves
    cur.execute("select count(pg_advisory_xact_lock(a, b)) from unnest(%s::int[], %s::int[]) as k(a, b)",
                ([a for a, _ in own], [b - (1 << 32) if b >= 1 << 31 else b for _, b in own]))


_KEYS = "unnest(%s::text[], %s::text[], %s::text[], %s::text[]) as v(tenant_id, id_type, id_scope, token)"


def _key_columns(tokens: dict[str, IdKey]) -> list[str]:
    return bulk_sql.columns([(k.tenant_id, k.type, k.scope, t) for t, k in tokens.items()], 4)


def _owners(cur, tokens: dict[str, IdKey]) -> dict[IdKey, IdOwner]:
    if not tokens:
        return {}
    cur.execute(
        "select i.token, coalesce(c.merged_into, c.customer_id), i.shared, i.junk, i.linked_count "
        f"from {_KEYS} join identity.identifiers i on i.tenant_id = v.tenant_id and i.id_type = v.id_type "
        " and i.id_scope = v.id_scope and i.token = v.token "
        "join identity.customers c on c.customer_id = i.customer_id",
        _key_columns(tokens),
    )
    return {tokens[t]: IdOwner(cid, shared, junk, linked) for t, cid, shared, junk, linked in cur.fetchall()}


def _weak_holders(cur, tokens: dict[str, IdKey]) -> dict[IdKey, set[UUID]]:
    if not tokens:
        return {}
    cur.execute(
        f"select w.token, w.customer_id from {_KEYS} "
        "join identity.weak_identifiers w on w.tenant_id = v.tenant_id and w.id_type = v.id_type "
        " and w.id_scope = v.id_scope and w.token = v.token",
        _key_columns(tokens),
    )
    holders: dict[IdKey, set[UUID]] = {}
    for token, cid in cur.fetchall():
        holders.setdefault(tokens[token], set()).add(cid)
    return holders


def lock_customers(cur, customer_ids) -> dict[UUID, tuple[datetime, UUID | None, str]]:
    """Row locks on the customers a transaction will write to, in id order; every writer of a
    customer's identifiers holds this lock, so a merge never races a link to the merged profile."""
    if not customer_ids:
        return {}
    cur.execute("select customer_id, created_at, merged_into, status from identity.customers "
                "where customer_id = any(%s) order by customer_id for no key update", (sorted(customer_ids),))
    return {cid: (created, merged, status) for cid, created, merged, status in cur.fetchall()}


def load_snapshot(cur, strong: dict[str, IdKey], weak: dict[str, IdKey]) -> Snapshot:
    """Owners of the batch's identifiers, with their customers locked and consistent: re-read until
    no concurrent merge moved an owner between the read and the lock."""
    locked: dict[UUID, tuple] = {}
    while True:
        owners = _owners(cur, strong)
        holders = _weak_holders(cur, weak)
        wanted = {o.customer_id for o in owners.values()} | {c for cs in holders.values() for c in cs}
        if wanted <= locked.keys():
            break
        locked.update(lock_customers(cur, wanted - locked.keys()))
        # Re-read only what had an owner: an identifier without one cannot gain one meanwhile, since
        # linking it needs the identifier's lock, which this transaction holds (lock_tokens).
        strong = {t: k for t, k in strong.items() if k in owners}
        weak = {t: k for t, k in weak.items() if k in holders}
    counts: dict[UUID, Counter] = {cid: Counter() for cid in locked}
    if locked:
        cur.execute("select customer_id, id_type, count(*) from identity.identifiers "
                    "where customer_id = any(%s) group by 1, 2", (list(locked),))
        for cid, id_type, n in cur.fetchall():
            counts[cid][id_type] = n
    snapshot = Snapshot(
        owners=owners, weak_holders=holders,
        customers={cid: CustomerState(cid, created, counts[cid]) for cid, (created, _, _) in locked.items()},
    )
    if len(locked) > 1:
        cur.execute("select customer_a, customer_b from identity.merge_blocks "
                    "where customer_a = any(%s) and customer_b = any(%s)", (list(locked), list(locked)))
        snapshot.blocked_pairs = {frozenset(pair) for pair in cur.fetchall()}
    return snapshot


def load_keys(cur, vault: Vault, key_ids) -> set[UUID]:
    """Unwrap the data keys not yet cached; returns the ids that exist (an erased key is gone)."""
    missing = [k for k in set(key_ids) if not vault.has_key(k)]
    if missing:
        cur.execute("select key_id, wrapped_key from identity.customer_keys where key_id = any(%s)", (missing,))
        for key_id, wrapped in cur.fetchall():
            vault.load_key(key_id, bytes(wrapped))
    return {k for k in set(key_ids) if vault.has_key(k)}


def insert_customers(cur, vault: Vault, rows: list[tuple[UUID, str, datetime, UUID | None]]) -> None:
    """New profiles, each with its own data key."""
    if not rows:
        return
    bulk_sql.copy_rows(cur, "identity.customers", ("customer_id", "tenant_id", "created_at", "first_event_id"), rows)
    bulk_sql.copy_rows(cur, "identity.customer_keys", ("key_id", "tenant_id", "wrapped_key"),
                       [(cid, tenant, vault.new_key(cid)) for cid, tenant, _, _ in rows])


_IDENTIFIER_COLUMNS = (("tenant_id", "text"), ("id_type", "text"), ("id_scope", "text"), ("token", "text"),
                       ("customer_id", "uuid"), ("value_enc", "bytea"), ("key_id", "uuid"),
                       ("first_seen_at", "timestamptz"), ("last_seen_at", "timestamptz"))
_WEAK_COLUMNS = (("tenant_id", "text"), ("id_type", "text"), ("id_scope", "text"), ("token", "text"),
                 ("customer_id", "uuid"), ("value_enc", "bytea"), ("key_id", "uuid"), ("seen_at", "timestamptz"))


def link_identifiers(cur, vault: Vault, links: dict[IdKey, UUID], seen_at: datetime) -> None:
    if not links:
        return
    bulk_sql.insert_rows(
        cur, "identity.identifiers", _IDENTIFIER_COLUMNS,
        [(k.tenant_id, k.type, k.scope, token_of(vault, k), cid, vault.encrypt(cid, k.value), cid, seen_at, seen_at)
         for k, cid in links.items()],
    )


def link_weak(cur, vault: Vault, links: set[tuple[IdKey, UUID]], seen_at: datetime) -> None:
    if not links:
        return
    bulk_sql.insert_rows(
        cur, "identity.weak_identifiers", _WEAK_COLUMNS,
        [(k.tenant_id, k.type, k.scope, token_of(vault, k), cid, vault.encrypt(cid, k.value), cid, seen_at)
         for k, cid in links],
    )


def mark_shared(cur, vault: Vault, shared: dict[IdKey, IdOwner]) -> None:
    if not shared:
        return
    cur.execute(
        "update identity.identifiers i set shared = v.shared, junk = v.junk, linked_count = v.linked "
        "from unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bool[], %s::bool[], %s::int[]) "
        "as v(tenant_id, id_type, id_scope, token, shared, junk, linked) "
        "where i.tenant_id = v.tenant_id and i.id_type = v.id_type and i.id_scope = v.id_scope and i.token = v.token",
        bulk_sql.columns([(k.tenant_id, k.type, k.scope, token_of(vault, k), o.shared, o.junk, o.linked_count)
                          for k, o in shared.items()], 7),
    )


_PAIRS = "unnest(%s::uuid[], %s::uuid[]) as v(loser, survivor)"


def apply_merges(cur, merges: list[Merge], final: dict[UUID, UUID]) -> None:
    """Union the merged profiles into their survivors: customer-owned rows move, merged ids point at the
    final survivor (path compression, so a lookup by any old id is one hop)."""
    if not merges:
        return
    mapping = [(loser, final[loser]) for m in merges for loser in m.losers]
    losers = [loser for loser, _ in mapping]
    pairs = bulk_sql.columns(mapping, 2)
    cur.execute(f"update identity.customers c set status = 'merged', merged_into = v.survivor "
                f"from {_PAIRS} where c.customer_id = v.loser", pairs)
    cur.execute(f"update identity.customers c set merged_into = v.survivor "
                f"from {_PAIRS} where c.merged_into = v.loser", pairs)
    for table in CUSTOMER_OWNED:
        cur.execute(f"update identity.{table} t set customer_id = v.survivor "
                    f"from {_PAIRS} where t.customer_id = v.loser", pairs)
    for table, columns in CUSTOMER_KEYED.items():
        cur.execute(f"insert into identity.{table} (customer_id, {columns}) "
                    f"select v.survivor, {', '.join('t.' + c.strip() for c in columns.split(','))} "
                    f"from identity.{table} t join {_PAIRS} on t.customer_id = v.loser "
                    "on conflict do nothing", pairs)
        cur.execute(f"delete from identity.{table} where customer_id = any(%s)", (losers,))
    cur.execute("delete from identity.blocking_keys where customer_id = any(%s)", (losers,))
    cur.execute("delete from identity.match_queue where customer_id = any(%s)", (losers,))
    cur.execute("update identity.match_suggestions set status = 'obsolete', decided_at = now() "
                "where status = 'open' and (customer_a = any(%s) or customer_b = any(%s))", (losers, losers))
    _merge_households(cur, pairs)
    _merge_facts(cur, mapping)
    cur.execute("insert into identity.match_queue (customer_id, tenant_id) "
                "select customer_id, tenant_id from identity.customers where customer_id = any(%s) "
                "on conflict do nothing", (list({s for _, s in mapping}),))


def _merge_households(cur, pairs: list[str]) -> None:
    cur.execute("update identity.customers s set household_id = coalesce(s.household_id, l.household_id) "
                f"from {_PAIRS} join identity.customers l on l.customer_id = v.loser "
                "where s.customer_id = v.survivor", pairs)


def _merge_facts(cur, mapping) -> None:
    """Each projected fact keeps the newest observation of the merged profiles."""
    cur.execute("select customer_id, tenant_id, facts from identity.customer_facts where customer_id = any(%s)",
                ([c for pair in mapping for c in pair],))
    facts = {cid: (tenant, f) for cid, tenant, f in cur.fetchall()}
    for loser, survivor in mapping:
        if loser not in facts:
            continue
        tenant, theirs = facts.pop(loser)
        ours = facts.get(survivor, (tenant, {}))[1]
        combined = newest_facts(ours, theirs)
        facts[survivor] = (tenant, combined)
        upsert_facts(cur, [(survivor, tenant, combined)])
    cur.execute("delete from identity.customer_facts where customer_id = any(%s)", ([loser for loser, _ in mapping],))


def newest_facts(ours: dict, theirs: dict) -> dict:
    combined = dict(ours)
    for name, fact in theirs.items():
        if name not in combined or fact.get("at", "") > combined[name].get("at", ""):
            combined[name] = fact
    return combined


def upsert_facts(cur, rows: list[tuple[UUID, str, dict]]) -> None:
    """(customer, tenant, facts): each customer's projected facts replaced whole."""
    _values(cur, "insert into identity.customer_facts (customer_id, tenant_id, facts, updated_at) values %s "
                 "on conflict (customer_id) do update set facts = excluded.facts, updated_at = now()",
            [(cid, tenant, orjson.dumps(facts).decode()) for cid, tenant, facts in rows],
            template="(%s, %s, %s, now())")


def link_household(cur, a: UUID, b: UUID) -> UUID:
    """Put two people in one household (joining their households if both had one)."""
    cur.execute("select customer_id, household_id from identity.customers where customer_id in (%s, %s)", (a, b))
    current = {cid: hid for cid, hid in cur.fetchall()}
    household = current.get(a) or current.get(b) or uuid.uuid4()
    olds = [h for h in current.values() if h and h != household]
    cur.execute("update identity.customers set household_id = %s where customer_id in (%s, %s) "
                "or household_id = any(%s)", (household, a, b, olds))
    return household


def record_decision(cur, *, tenant_id: str, kind: str, rule: str, customer_id: UUID, others: list[UUID],
                    evidence: list, event_ids: list[UUID], decided_by: str = "resolver",
                    decision_id: UUID | None = None) -> UUID:
    decisions = Decisions()
    decision_id = decisions.add(tenant_id=tenant_id, kind=kind, rule=rule, customer_id=customer_id, others=others,
                                evidence=evidence, event_ids=event_ids, decided_by=decided_by,
                                decision_id=decision_id)
    decisions.write(cur)
    return decision_id


class Decisions:
    """Decisions collected while a batch is persisted, written with one COPY."""

    COLUMNS = ("decision_id", "tenant_id", "kind", "rule", "customer_id", "other_customer_ids", "evidence",
               "triggering_event_ids", "decided_by")

    def __init__(self):
        self.rows: list[tuple] = []

    def add(self, *, tenant_id: str, kind: str, rule: str, customer_id: UUID, others: list[UUID], evidence: list,
            event_ids: list[UUID], decided_by: str = "resolver", decision_id: UUID | None = None) -> UUID:
        decision_id = decision_id or uuid.uuid4()
        self.rows.append((decision_id, tenant_id, kind, rule, customer_id, list(others),
                          orjson.dumps(evidence).decode(), list(event_ids), decided_by))
        return decision_id

    def write(self, cur) -> None:
        bulk_sql.copy_rows(cur, "identity.decisions", self.COLUMNS, self.rows)
        self.rows = []


def canonical_id(cur, tenant_id: str, customer_id: UUID) -> tuple[UUID, str] | None:
    """The surviving id and status for any id the tenant ever had (merged ids point at their survivor)."""
    cur.execute("select coalesce(merged_into, customer_id), status from identity.customers "
                "where tenant_id = %s and customer_id = %s", (tenant_id, customer_id))
    row = cur.fetchone()
    if row is None:
        return None
    if row[0] != customer_id:
        cur.execute("select status from identity.customers where customer_id = %s", (row[0],))
        return row[0], cur.fetchone()[0]
    return row[0], row[1]


# The API's hottest statement, kept planned per session: 4-5 % more lookups/s than parsing and planning
# the call each time (bench.identity, 100k customers).
_FIND_CUSTOMER = Prepared("identity_find_customer", ("text", "text", "text", "text"),
                          "select identity.find_customer($1, $2, $3, $4)")


def find_customer(cur, tenant_id: str, id_type: str, scope: str, token: str) -> UUID | None:
    """The canonical owner of a strong identifier, else the only holder of a weak one (see
    0003_find_customer.sql): one statement, so it needs no transaction of its own."""
    _FIND_CUSTOMER.execute(cur, (tenant_id, id_type, scope, token))
    return cur.fetchone()[0]


# Many lookups in one round trip: the same rule per identifier (find_customer), results in input order.
_FIND_CUSTOMERS = Prepared("identity_find_customers", ("text", "text[]", "text[]", "text[]"),
                           "select identity.find_customer($1, q.id_type, q.id_scope, q.token) from "
                           "unnest($2, $3, $4) with ordinality as q(id_type, id_scope, token, n) order by q.n")


def find_customers(cur, tenant_id: str, keys: list[tuple[str, str, str]]) -> list[UUID | None]:
    """find_customer for each (type, scope, token), in one statement."""
    if not keys:
        return []
    _FIND_CUSTOMERS.execute(cur, (tenant_id, *bulk_sql.columns(keys, 3)))
    return [row[0] for row in cur.fetchall()]


def queue_for_matching(cur, rows: set[tuple[UUID, str]]) -> None:
    if rows:  # often queued already: insert ... on conflict rather than COPY
        cur.execute("insert into identity.match_queue (customer_id, tenant_id) "
                    "select * from unnest(%s::uuid[], %s::text[]) on conflict do nothing", bulk_sql.columns(list(rows), 2))


def record_rejected(cur, rows: list[tuple]) -> None:
    if rows:
        bulk_sql.copy_rows(cur, "identity.rejected_identifiers", ("tenant_id", "customer_id", "event_id", "id_type",
                                                                  "value_enc", "key_id", "reason", "seen_at"), rows)


def replace_blocking_keys(cur, rows: list[tuple[str, str, UUID]], customer_ids: list[UUID]) -> None:
    """These profiles' blocking keys are now `rows` (tenant, token, customer) and nothing else."""
    cur.execute("delete from identity.blocking_keys where customer_id = any(%s)", (customer_ids,))
    if rows:  # on conflict: a profile re-queued meanwhile may be keyed by another worker's batch too
        cur.execute("insert into identity.blocking_keys (tenant_id, token, customer_id) select * from "
                    + bulk_sql.unnest(("text", "text", "uuid")) + " on conflict do nothing", bulk_sql.columns(rows, 3))
