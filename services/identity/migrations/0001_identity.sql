-- Identity resolution state. The search_path is the identity schema while this runs.
create table tenants (
    tenant_id      text primary key,
    default_region text not null default 'CN',
    created_at     timestamptz not null default now()
);

create table customers (
    customer_id    uuid primary key,
    tenant_id      text not null,
    created_at     timestamptz not null default now(),
    first_event_id uuid not null
);
create index customers_by_tenant on customers (tenant_id, created_at);

-- One row per normalised identifier; the primary key makes "one owner per identifier" a database fact.
create table identifiers (
    tenant_id     text not null,
    id_type       text not null,
    id_scope      text not null default '',
    id_value      text not null,
    customer_id   uuid not null references customers (customer_id),
    first_seen_at timestamptz not null,
    last_seen_at  timestamptz not null,
    primary key (tenant_id, id_type, id_scope, id_value)
);
create index identifiers_by_customer on identifiers (customer_id);

-- Ingestion idempotency: a client retrying a batch gets `duplicate`, never a second event.
create table ingested_events (
    tenant_id   text not null,
    event_id    uuid not null,
    received_at timestamptz not null default now(),
    primary key (tenant_id, event_id)
);

-- Resolution idempotency: a redelivered touchpoint is resolved once.
create table resolved_events (
    tenant_id   text not null,
    event_id    uuid not null,
    customer_id uuid not null,
    resolved_at timestamptz not null default now(),
    primary key (tenant_id, event_id)
);
