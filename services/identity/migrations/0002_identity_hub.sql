-- The hub: policies, merges and their decisions, households, encrypted personal data, the 360
-- projection, consent, erasure and match suggestions. Identifier values are stored as a keyed hash
-- (lookups) plus ciphertext under the owner's key (display); erasure destroys the key.

alter table tenants add column policy jsonb not null default '{}'::jsonb;

alter table customers
    add column status       text not null default 'active' check (status in ('active', 'merged', 'erased')),
    add column merged_into  uuid references customers (customer_id),
    add column household_id uuid,
    add column erased_at    timestamptz,
    alter column first_event_id drop not null;
create index customers_merged_into on customers (merged_into) where merged_into is not null;
create index customers_household on customers (household_id) where household_id is not null;

-- Per-customer data keys, wrapped with the service's master key. Deleting a row makes every
-- ciphertext written under it unreadable, wherever copies of that ciphertext live.
create table customer_keys (
    key_id      uuid primary key,
    tenant_id   text not null,
    wrapped_key bytea not null,
    created_at  timestamptz not null default now()
);

drop table identifiers;
create table identifiers (
    tenant_id     text not null,
    id_type       text not null,
    id_scope      text not null default '',
    token         text not null,                -- keyed hash of tenant|type|scope|value
    customer_id   uuid not null references customers (customer_id),
    value_enc     bytea not null,
    key_id        uuid not null,
    shared        boolean not null default false, -- seen on several people: links a household, never merges
    junk          boolean not null default false, -- seen on too many people: ignored like a blocklisted value
    linked_count  integer not null default 0,
    first_seen_at timestamptz not null,
    last_seen_at  timestamptz not null,
    primary key (tenant_id, id_type, id_scope, token)
);
create index identifiers_by_customer on identifiers (customer_id);

-- Weak identifiers (licence plates by default) are held by many profiles; they only feed suggestions.
create table weak_identifiers (
    tenant_id   text not null,
    id_type     text not null,
    id_scope    text not null default '',
    token       text not null,
    customer_id uuid not null references customers (customer_id),
    value_enc   bytea not null,
    key_id      uuid not null,
    seen_at     timestamptz not null,
    primary key (tenant_id, id_type, id_scope, token, customer_id)
);
create index weak_identifiers_by_customer on weak_identifiers (customer_id);

-- Identifiers that failed validation, were blocklisted or over a limit: kept with the reason, never matched.
create table rejected_identifiers (
    tenant_id   text not null,
    customer_id uuid not null references customers (customer_id),
    event_id    uuid not null,
    id_type     text not null,
    value_enc   bytea,
    key_id      uuid,
    reason      text not null,
    seen_at     timestamptz not null
);
create index rejected_identifiers_by_customer on rejected_identifiers (customer_id);

-- Every merge, split, household link and suggestion decision, with its evidence.
create table decisions (
    decision_id          uuid primary key,
    tenant_id            text not null,
    kind                 text not null check (kind in ('merge', 'split', 'household', 'junk_identifier')),
    rule                 text not null,
    customer_id          uuid not null,           -- the survivor / the split source / household anchor
    other_customer_ids   uuid[] not null default '{}',
    evidence             jsonb not null default '[]'::jsonb, -- identifier types and tokens, scores
    triggering_event_ids uuid[] not null default '{}',
    decided_by           text not null default 'resolver',
    decided_at           timestamptz not null default now()
);
create index decisions_by_customer on decisions (tenant_id, customer_id, decided_at);
create index decisions_by_other on decisions using gin (other_customer_ids);

-- Pairs a split separated: never merged automatically again.
create table merge_blocks (
    tenant_id  text not null,
    customer_a uuid not null,
    customer_b uuid not null,
    primary key (tenant_id, customer_a, customer_b),
    check (customer_a < customer_b)
);

-- The timeline and the per-event attribution a split needs (which identifiers an event carried).
alter table resolved_events
    add column type        text not null default '',
    add column channel     text not null default '',
    add column store_id    text,
    add column occurred_at timestamptz not null default now(),
    add column tokens      text[] not null default '{}',
    add column summary     jsonb not null default '{}'::jsonb;
create index resolved_events_timeline on resolved_events (customer_id, occurred_at desc, event_id desc);

-- Observed profile attributes; the golden record picks one per attribute by survivorship.
create table profile_attributes (
    tenant_id   text not null,
    customer_id uuid not null references customers (customer_id),
    attribute   text not null,
    value_enc   bytea not null,
    key_id      uuid not null,
    source      text not null,
    verified    boolean not null default false,
    observed_at timestamptz not null,
    event_id    uuid not null,
    primary key (event_id, attribute)
);
create index profile_attributes_by_customer on profile_attributes (customer_id);

-- Pets and vehicles: the customer's service subjects, keyed within the customer by name+species / plate.
create table subjects (
    tenant_id   text not null,
    customer_id uuid not null references customers (customer_id),
    kind        text not null check (kind in ('pet', 'vehicle')),
    subject_key text not null,
    attributes  jsonb not null,
    updated_at  timestamptz not null,
    primary key (customer_id, kind, subject_key)
);

-- Consent history per purpose; the current state is the latest effective row.
create table consents (
    consent_id   uuid primary key,
    tenant_id    text not null,
    customer_id  uuid not null references customers (customer_id),
    purpose      text not null,
    granted      boolean not null,
    source       text not null,
    evidence     text,
    effective_at timestamptz not null,
    recorded_at  timestamptz not null default now(),
    event_id     uuid unique
);
create index consents_by_customer on consents (customer_id, purpose, effective_at desc);

-- The 360 projection of other services' facts, each field with the event time it came from so a
-- late event never overwrites a newer fact.
create table customer_facts (
    customer_id    uuid primary key references customers (customer_id),
    tenant_id      text not null,
    facts          jsonb not null default '{}'::jsonb,  -- name -> {"value": ..., "at": iso time}
    updated_at     timestamptz not null default now()
);

create table customer_appointments (
    tenant_id      text not null,
    appointment_id text not null,
    customer_id    uuid not null references customers (customer_id),
    store_id       text,
    service_id     text,
    starts_at      timestamptz,
    status         text not null,
    status_at      timestamptz not null,
    primary key (tenant_id, appointment_id)
);
create index customer_appointments_next on customer_appointments (customer_id, starts_at) where status = 'booked';

-- Erasure: one request per erasure, one confirmation per service that holds customer data.
create table erasure_requests (
    request_id   uuid primary key,
    tenant_id    text not null,
    customer_id  uuid not null,
    customer_ids uuid[] not null,
    requested_by text not null,
    requested_at timestamptz not null default now(),
    expected     text[] not null,
    completed_at timestamptz
);
create table erasure_confirmations (
    request_id         uuid not null references erasure_requests (request_id),
    service            text not null,
    records_deleted    integer not null,
    records_anonymised integer not null,
    confirmed_at       timestamptz not null,
    primary key (request_id, service)
);

-- Match suggestions: candidate pairs found by blocking, scored, waiting for review.
create table blocking_keys (
    tenant_id   text not null,
    token       text not null,
    customer_id uuid not null references customers (customer_id),
    primary key (tenant_id, token, customer_id)
);
create index blocking_keys_by_customer on blocking_keys (customer_id);

create table match_queue (
    customer_id uuid primary key,
    tenant_id   text not null,
    queued_at   timestamptz not null default now()
);

create table match_suggestions (
    suggestion_id uuid primary key,
    tenant_id     text not null,
    customer_a    uuid not null,
    customer_b    uuid not null,
    score         real not null,
    reasons       jsonb not null,
    status        text not null default 'open' check (status in ('open', 'accepted', 'rejected', 'auto_merged', 'obsolete')),
    created_at    timestamptz not null default now(),
    decided_at    timestamptz,
    decided_by    text,
    unique (tenant_id, customer_a, customer_b),
    check (customer_a < customer_b)
);
create index match_suggestions_open on match_suggestions (tenant_id, score desc) where status = 'open';

-- Bulk import bookkeeping: which file rows are done, so an interrupted import resumes.
create table import_runs (
    run_id     text primary key,
    tenant_id  text not null,
    kind       text not null,
    rows_done  bigint not null default 0,
    updated_at timestamptz not null default now()
);
