-- Webhook subscriptions and their deliveries. A delivery row is the durable queue entry, the delivery
-- log and the replay history at once; attempts keep every try's status code and latency.
create table webhook_subscriptions (
    subscription_id      uuid primary key,
    tenant_id            text not null,
    url                  text not null,
    event_types          text[] not null,
    filter               jsonb not null default '{}'::jsonb,
    purpose              text not null,
    pii_level            text not null check (pii_level in ('none', 'hashed', 'contact')),
    description          text not null default '',
    secret_enc           bytea not null,                 -- sealed with a key derived from the master key
    previous_secret_enc  bytea,                          -- still signed with until previous_secret_until
    previous_secret_until timestamptz,
    state                text not null check (state in ('active', 'paused', 'deleted')),
    created_at           timestamptz not null,
    updated_at           timestamptz not null
);
create index webhook_subscriptions_by_tenant on webhook_subscriptions (tenant_id) where state <> 'deleted';

create table webhook_deliveries (
    delivery_id      bigserial primary key,          -- also the order of a subscription's deliveries
    subscription_id  uuid not null references webhook_subscriptions (subscription_id),
    tenant_id        text not null,
    event_id         uuid not null,
    event_type       text not null,
    customer_id      uuid,                           -- the ordering lane; null: the event is its own lane
    occurred_at      timestamptz not null,
    body             bytea,                          -- the public event; null once the customer is erased
    state            text not null default 'pending'
                     check (state in ('pending', 'delivered', 'dead', 'dropped', 'requeued')),
    attempts         integer not null default 0,
    next_attempt_at  timestamptz not null,
    first_attempt_at timestamptz,
    last_status      integer,
    last_error       text,
    last_latency_ms  real,
    reason           text,                           -- why it is dead or dropped
    created_at       timestamptz not null,
    finished_at      timestamptz,
    replay_of        bigint
);
-- A redelivered Kafka message fans out once; replays are new rows pointing at what they replay.
create unique index webhook_deliveries_once on webhook_deliveries (subscription_id, event_id) where replay_of is null;
create index webhook_deliveries_pending on webhook_deliveries (subscription_id, delivery_id) where state = 'pending';
create index webhook_deliveries_log on webhook_deliveries (subscription_id, created_at);
create index webhook_deliveries_by_customer on webhook_deliveries (customer_id) where customer_id is not null;

create table webhook_attempts (
    delivery_id  bigint not null references webhook_deliveries (delivery_id) on delete cascade,
    attempt      integer not null,
    attempted_at timestamptz not null,
    status_code  integer,
    latency_ms   real,
    error        text,
    primary key (delivery_id, attempt)
);
