-- Loyalty: programs, members, the append-only points ledger, the lots it leaves (what expires when,
-- what each store owes), redemption holds, and reversals waiting for the earn they reverse.

create table programs (
    tenant_id  text primary key,
    config     jsonb not null,
    updated_at timestamptz not null default now()
);

create table members (
    tenant_id      text not null,
    customer_id    uuid primary key,
    status         text not null default 'active' check (status in ('active', 'merged', 'erased')),
    merged_into    uuid,
    tier           text not null,
    tier_since     timestamptz not null,
    balance        integer not null default 0,  -- = sum(entries.points), kept in the same transaction
    debt           integer not null default 0,
    next_review_at timestamptz not null,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now()
);
create index members_review on members (next_review_at) where status = 'active';
create index members_merged_into on members (merged_into) where merged_into is not null;

create table entries (
    entry_id        uuid primary key,
    tenant_id       text not null,
    customer_id     uuid not null,
    seq             bigint generated always as identity,
    kind            text not null check (kind in ('earn', 'redeem', 'expire', 'reverse', 'adjust', 'transfer_in',
                                                  'transfer_out')),
    points          integer not null,
    qualifying      integer not null default 0,
    qualifies_at    timestamptz,
    lot_key         uuid,
    expires_at      timestamptz,
    store_id        text,
    occurred_at     timestamptz not null,
    posted_at       timestamptz not null default now(),
    source_type     text,
    source_event_id uuid,
    amount_minor    bigint,  -- the money an earn was for (a partial refund reverses its share)
    source_ref      text,  -- order:<id> or appointment:<id>: what a refund, cancellation or no-show names
    reason          text,
    actor           text,
    -- Idempotency: an entry's cause (event, redemption, adjustment, lot) may post it once.
    idem_key        text not null,
    unique (tenant_id, idem_key)
);
create index entries_customer on entries (customer_id, occurred_at);
create index entries_source_ref on entries (tenant_id, source_ref) where source_ref is not null;
create index entries_source_event on entries (source_event_id) where source_event_id is not null;

-- Derived from the ledger after every posting (services/loyalty/ledger.py): points still held per lot.
create table lots (
    tenant_id   text not null,
    customer_id uuid not null,
    lot_key     uuid not null,
    store_id    text,
    earned_at   timestamptz not null,
    expires_at  timestamptz,
    remaining   integer not null check (remaining > 0),
    primary key (customer_id, lot_key)
);
create index lots_expiry on lots (expires_at) where expires_at is not null;
create index lots_store on lots (tenant_id, store_id);

-- Debt per store: reversals of points already spent, not yet earned back.
create table debts (
    tenant_id   text not null,
    customer_id uuid not null,
    store_id    text not null default '',
    points      integer not null check (points > 0),
    primary key (customer_id, store_id)
);

create table redemptions (
    redemption_id uuid primary key,
    tenant_id     text not null,
    customer_id   uuid not null,
    points        integer not null check (points > 0),
    store_id      text,
    note          text,
    status        text not null check (status in ('held', 'committed', 'released', 'expired')),
    expires_at    timestamptz not null,
    created_at    timestamptz not null default now(),
    decided_at    timestamptz
);
create index redemptions_held on redemptions (customer_id) where status = 'held';
create index redemptions_expiry on redemptions (expires_at) where status = 'held';

-- A reversal that arrived before the earn it reverses (ordering across merges is not guaranteed).
create table pending_reversals (
    tenant_id       text not null,
    source_ref      text not null,
    event_id        uuid not null,
    event_type      text not null,
    amount_minor    bigint,  -- a partial refund; null reverses all
    store_id        text,
    occurred_at     timestamptz not null,
    primary key (tenant_id, source_ref, event_id)
);

-- Touchpoints a split moved to another profile, for when loyalty sees them after the split.
create table moved_events (
    event_id    uuid primary key,
    customer_id uuid not null
);
