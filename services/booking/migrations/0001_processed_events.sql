-- Consumers record each event id they applied, so a redelivered event changes nothing.
create table processed_events (
    event_id     uuid primary key,
    processed_at timestamptz not null default now()
);
