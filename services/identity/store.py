"""Identity's SQL. Every function takes the caller's cursor: the caller owns the transaction."""
from __future__ import annotations

from datetime import datetime
from uuid import UUID

import psycopg2.extras

from services.identity.domain import IdKey, KnownCustomer

SCHEMA = "identity"


def tenant_regions(cur, tenants: set[str], default_region: str) -> dict[str, str]:
    """Each tenant's default phone region; a tenant seen for the first time is registered."""
    cur.execute("select tenant_id, default_region from identity.tenants where tenant_id = any(%s)", (list(tenants),))
    regions = dict(cur.fetchall())
    missing = tenants - regions.keys()
    if missing:
        psycopg2.extras.execute_values(
            cur, "insert into identity.tenants (tenant_id, default_region) values %s on conflict do nothing",
            [(t, default_region) for t in missing],
        )
        regions.update({t: default_region for t in missing})
    return regions


def record_ingested(cur, tenant_id: str, event_ids: list[UUID]) -> set[UUID]:
    """Insert event ids; returns those not seen before (the others are duplicates)."""
    if not event_ids:
        return set()
    rows = psycopg2.extras.execute_values(
        cur,
        "insert into identity.ingested_events (tenant_id, event_id) values %s "
        "on conflict do nothing returning event_id",
        [(tenant_id, e) for e in event_ids], fetch=True, page_size=1000,
    )
    return {r[0] for r in rows}


def already_resolved(cur, pairs: list[tuple[str, UUID]]) -> set[tuple[str, UUID]]:
    if not pairs:
        return set()
    rows = psycopg2.extras.execute_values(
        cur,
        "select r.tenant_id, r.event_id from (values %s) as v(tenant_id, event_id) "
        "join identity.resolved_events r on r.tenant_id = v.tenant_id and r.event_id = v.event_id::uuid",
        pairs, fetch=True, page_size=1000,
    )
    return {(t, e) for t, e in rows}


def lock_identifiers(cur, keys: list[IdKey]) -> None:
    """Transaction-scoped advisory locks, always in the same order, so two consumers resolving events
    that share an identifier serialise instead of both creating a customer (and never deadlock)."""
    ids = sorted({k.lock_id() for k in keys})
    cur.execute("select count(pg_advisory_xact_lock(k)) from unnest(%s::bigint[]) as k", (ids,))


def load_owners(cur, keys: list[IdKey]) -> dict[IdKey, KnownCustomer]:
    if not keys:
        return {}
    rows = psycopg2.extras.execute_values(
        cur,
        "select i.tenant_id, i.id_type, i.id_scope, i.id_value, c.customer_id, c.created_at "
        "from (values %s) as v(tenant_id, id_type, id_scope, id_value) "
        "join identity.identifiers i on i.tenant_id = v.tenant_id and i.id_type = v.id_type "
        " and i.id_scope = v.id_scope and i.id_value = v.id_value "
        "join identity.customers c on c.customer_id = i.customer_id",
        [(k.tenant_id, k.type, k.scope, k.value) for k in set(keys)], fetch=True, page_size=1000,
    )
    return {IdKey(t, ty, s, v): KnownCustomer(cid, created) for t, ty, s, v, cid, created in rows}


def insert_customers(cur, rows: list[tuple[UUID, str, datetime, UUID]]) -> None:
    psycopg2.extras.execute_values(
        cur, "insert into identity.customers (customer_id, tenant_id, created_at, first_event_id) values %s",
        rows, page_size=1000,
    )


def link_identifiers(cur, links: dict[IdKey, UUID], seen_at: datetime) -> None:
    psycopg2.extras.execute_values(
        cur,
        "insert into identity.identifiers "
        "(tenant_id, id_type, id_scope, id_value, customer_id, first_seen_at, last_seen_at) values %s "
        "on conflict do nothing",
        [(k.tenant_id, k.type, k.scope, k.value, cid, seen_at, seen_at) for k, cid in links.items()],
        page_size=1000,
    )


def record_resolved(cur, rows: list[tuple[str, UUID, UUID]]) -> None:
    psycopg2.extras.execute_values(
        cur, "insert into identity.resolved_events (tenant_id, event_id, customer_id) values %s "
        "on conflict do nothing", rows, page_size=1000,
    )


def find_customer(cur, key: IdKey) -> UUID | None:
    cur.execute(
        "select customer_id from identity.identifiers "
        "where tenant_id = %s and id_type = %s and id_scope = %s and id_value = %s",
        (key.tenant_id, key.type, key.scope, key.value),
    )
    row = cur.fetchone()
    return row[0] if row else None


def customer_profile(cur, tenant_id: str, customer_id: UUID) -> dict | None:
    cur.execute(
        "select customer_id, created_at from identity.customers where tenant_id = %s and customer_id = %s",
        (tenant_id, customer_id),
    )
    row = cur.fetchone()
    if row is None:
        return None
    cur.execute(
        "select id_type, id_scope, id_value, first_seen_at from identity.identifiers "
        "where customer_id = %s order by first_seen_at, id_type",
        (customer_id,),
    )
    identifiers = [
        {"type": t, "scope": s or None, "value": v, "first_seen_at": seen} for t, s, v, seen in cur.fetchall()
    ]
    return {"customer_id": row[0], "tenant_id": tenant_id, "created_at": row[1], "identifiers": identifiers}
