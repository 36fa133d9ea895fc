-- Feedback: survey templates, store hours for SLA clocks, consent and reachable channels per customer,
-- invitations (one per visit), responses, and complaint cases with their SLA deadlines.

create table survey_templates (
    tenant_id  text primary key,
    config     jsonb not null,
    updated_at timestamptz not null default now()
);

create table store_hours (
    tenant_id  text not null,
    store_id   text not null,
    config     jsonb not null,
    updated_at timestamptz not null default now(),
    primary key (tenant_id, store_id)
);

-- From customer.consent_changed: the latest decision per purpose.
create table consents (
    customer_id  uuid not null,
    purpose      text not null,
    granted      boolean not null,
    effective_at timestamptz not null,
    primary key (customer_id, purpose)
);

-- Which message channels a customer can be reached on (identifier types seen on their touchpoints).
create table customer_channels (
    customer_id uuid not null,
    channel     text not null,
    primary key (customer_id, channel)
);

create table invitations (
    invitation_id   uuid primary key,
    tenant_id       text not null,
    customer_id     uuid,
    visit_ref       text not null,  -- appointment:<id>, order:<id> or case:<id>: one invitation per visit
    source_event_id uuid,
    store_id        text,
    staff_id        text,
    service_id      text,
    appointment_id  text,
    case_id         uuid,
    status          text not null check (status in ('scheduled', 'sent', 'answered', 'expired', 'skipped')),
    skip_reason     text,
    send_at         timestamptz not null,
    sent_at         timestamptz,
    expires_at      timestamptz,
    channel         text,
    language        text not null default 'zh',
    token_hash      bytea unique,
    created_at      timestamptz not null default now(),
    unique (tenant_id, visit_ref)
);
create index invitations_due on invitations (send_at) where status = 'scheduled';
create index invitations_expiry on invitations (expires_at) where status = 'sent';
create index invitations_customer_sent on invitations (customer_id, sent_at) where sent_at is not null;
create index invitations_source on invitations (source_event_id) where source_event_id is not null;

create table responses (
    response_id    uuid primary key,
    tenant_id      text not null,
    invitation_id  uuid unique,  -- an invitation is answered once
    customer_id    uuid,
    source         text not null check (source in ('link', 'kiosk', 'staff')),
    store_id       text,
    staff_id       text,
    service_id     text,
    appointment_id text,
    case_id        uuid,         -- set for a case's follow-up answer
    nps            smallint check (nps between 0 and 10),
    csat           smallint check (csat between 1 and 5),
    step_ratings   jsonb not null default '{}'::jsonb,
    comment        text,
    answers        jsonb not null,
    answered_at    timestamptz not null,
    entered_by     text
);
create index responses_store on responses (tenant_id, store_id, answered_at);
create index responses_staff on responses (tenant_id, staff_id, answered_at) where staff_id is not null;
create index responses_service on responses (tenant_id, service_id, answered_at) where service_id is not null;
create index responses_customer on responses (customer_id) where customer_id is not null;

create table cases (
    case_id              uuid primary key,
    tenant_id            text not null,
    store_id             text,
    customer_id          uuid,
    reason               text not null,
    source_ref           text not null,  -- response:<id> or complaint:<event id>: one case per cause
    source_event_id      uuid,
    response_id          uuid,
    priority             text not null check (priority in ('low', 'medium', 'high')),
    owner                text not null,
    state                text not null check (state in ('open', 'in_progress', 'resolved', 'closed')),
    opened_at            timestamptz not null,
    first_response_due   timestamptz not null,
    resolution_due       timestamptz not null,
    first_response_at    timestamptz,
    resolved_at          timestamptz,
    closed_at            timestamptz,
    first_response_breached boolean not null default false,
    resolution_breached  boolean not null default false,
    root_cause           text,
    service_step         text,
    notes                jsonb not null default '[]'::jsonb,
    follow_up_invitation_id uuid,
    follow_up_response_id uuid,
    follow_up_nps        smallint,
    updated_at           timestamptz not null default now(),
    unique (tenant_id, source_ref)
);
create index cases_list on cases (tenant_id, opened_at desc, case_id);
create index cases_store_state on cases (tenant_id, store_id, state, opened_at desc);
create index cases_state on cases (tenant_id, state, opened_at desc);
create index cases_first_response_due on cases (first_response_due) where state = 'open' and not first_response_breached;
create index cases_resolution_due on cases (resolution_due) where state in ('open', 'in_progress') and not resolution_breached;
create index cases_customer on cases (customer_id) where customer_id is not null;

-- Ids feedback should no longer use: merged ids point at their survivor, erased ids at the nil id, so a
-- touchpoint resolved before a merge or an erasure and delivered after it lands right.
create table customer_moves (
    customer_id uuid primary key,
    survivor    uuid not null
);
