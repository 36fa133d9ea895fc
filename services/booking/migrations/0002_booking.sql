-- Booking: the catalogue (stores, staff, resources, services), appointments, waitlist and the clock's
-- due work (reminders, visit-due notices). All instants are timestamptz (UTC); wall-clock rules
-- (opening hours, schedules) are local `time`s interpreted in the store's IANA zone.

create table stores (
    tenant_id   text not null,
    store_id    text not null,
    name        text not null,
    timezone    text not null,
    -- {"mon": [["09:00","18:00"]], ...}: local opening intervals per weekday
    opening_hours jsonb not null,
    holidays    date[] not null default '{}',
    policy      jsonb not null default '{}'::jsonb,
    updated_at  timestamptz not null default now(),
    primary key (tenant_id, store_id)
);

create table staff (
    tenant_id  text not null,
    staff_id   text not null,
    staff_key  bigint generated always as identity unique,  -- the staff member's lane in the exclusion constraint
    name       text not null,
    skills     text[] not null default '{}',
    active     boolean not null default true,
    -- [{"store_id","weekday","start","end","breaks":[["12:00","13:00"]]}]: weekly, store-local
    schedule   jsonb not null default '[]'::jsonb,
    updated_at timestamptz not null default now(),
    primary key (tenant_id, staff_id)
);

create table staff_time_off (
    tenant_id   text not null,
    time_off_id uuid primary key,
    staff_id    text not null,
    during      tstzrange not null check (not isempty(during)),
    reason      text not null default '',
    foreign key (tenant_id, staff_id) references staff on delete cascade
);
create index staff_time_off_by_staff on staff_time_off (tenant_id, staff_id, upper(during));

create table resources (
    tenant_id   text not null,
    resource_id text not null,
    resource_key bigint generated always as identity unique,
    store_id    text not null,
    kind        text not null,
    name        text not null,
    capacity    int not null check (capacity between 1 and 100),
    updated_at  timestamptz not null default now(),
    primary key (tenant_id, resource_id),
    foreign key (tenant_id, store_id) references stores
);
create index resources_by_store_kind on resources (tenant_id, store_id, kind);

create table services (
    tenant_id        text not null,
    service_id       text not null,
    name             text not null,
    category         text not null,
    duration_minutes int not null check (duration_minutes between 5 and 1440),
    -- [{"size":"l","coat":"long","minutes":120,"price_minor":30000}]: the most specific match wins
    variants         jsonb not null default '[]'::jsonb,
    buffer_before_minutes int not null default 0 check (buffer_before_minutes between 0 and 240),
    buffer_after_minutes  int not null default 0 check (buffer_after_minutes between 0 and 240),
    price_minor      bigint not null default 0 check (price_minor >= 0),
    currency         text not null default 'CNY',
    required_skill   text,
    resource_kind    text,
    rebook_interval_days int check (rebook_interval_days between 1 and 730),
    active           boolean not null default true,
    updated_at       timestamptz not null default now(),
    primary key (tenant_id, service_id)
);

-- One row per appointment over its whole life. `occupied` is the service time plus its buffers: the
-- exclusion constraints below make two live appointments of one staff member, or of one unit of a
-- resource, overlapping in time impossible, whatever the application does. A resource of capacity N
-- has units 1..N; each appointment takes one.
--
-- The constraints compare time ranges laid out in lanes: each staff member (and resource unit) owns the
-- numeric range [key * 1e10, key * 1e10 + 1e10) and an appointment's lane range is its occupied time in
-- epoch seconds inside it. Two lane ranges overlap exactly when the staff member (or unit) is the same and
-- the times overlap, so one built-in GiST range constraint does what `staff_id with =, occupied with &&`
-- would, without the btree_gist extension (missing from the embedded Postgres).
create table appointments (
    tenant_id       text not null,
    appointment_id  uuid primary key,
    store_id        text not null,
    service_id      text not null,
    staff_id        text not null,
    staff_key       bigint not null,
    resource_id     text,
    resource_key    bigint,
    resource_unit   int,
    status          text not null check (status in ('held', 'confirmed', 'checked_in', 'completed', 'cancelled',
                                                    'no_show', 'expired')),
    starts_at       timestamptz not null,
    ends_at         timestamptz not null,
    occupied        tstzrange not null,
    hold_expires_at timestamptz,
    channel         text not null,
    customer_id     uuid,
    identifiers     jsonb not null,
    subject         jsonb,
    subject_key     text,  -- a keyed hash of (customer identifier, pet or vehicle): no personal data
    price_minor     bigint not null,
    currency        text not null,
    notes           text,
    amount_minor    bigint,
    services_performed text[],
    performed_by    text,
    late_cancel     boolean,
    fee_applies     boolean,
    cancel_reason   text,
    waitlist_offer_id uuid,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    staff_lane      numrange generated always as (numrange(
        staff_key * 10000000000 + extract(epoch from lower(occupied) - '1970-01-01 00:00:00+00'::timestamptz),
        staff_key * 10000000000 + extract(epoch from upper(occupied) - '1970-01-01 00:00:00+00'::timestamptz))) stored,
    resource_lane   numrange generated always as (numrange(
        (resource_key * 1000 + resource_unit) * 10000000000
            + extract(epoch from lower(occupied) - '1970-01-01 00:00:00+00'::timestamptz),
        (resource_key * 1000 + resource_unit) * 10000000000
            + extract(epoch from upper(occupied) - '1970-01-01 00:00:00+00'::timestamptz))) stored,
    check (ends_at > starts_at),
    check (lower(occupied) >= '1970-01-02 00:00:00+00' and upper(occupied) < '2286-01-01 00:00:00+00'),
    check ((resource_id is null) = (resource_unit is null) and (resource_id is null) = (resource_key is null)),
    check (resource_unit between 1 and 999),
    constraint staff_never_double_booked exclude using gist (staff_lane with &&)
        where (status in ('held', 'confirmed', 'checked_in', 'completed')),
    constraint resource_unit_never_double_booked exclude using gist (resource_lane with &&)
        where (status in ('held', 'confirmed', 'checked_in', 'completed') and resource_id is not null)
);
create index appointments_by_store_time on appointments (tenant_id, store_id, starts_at);
create index appointments_by_staff_time on appointments (tenant_id, staff_id, starts_at);
create index appointments_by_resource_time on appointments (tenant_id, resource_id, starts_at)
    where resource_id is not null;
create index appointments_by_customer on appointments (tenant_id, customer_id) where customer_id is not null;
create index appointments_by_subject on appointments (tenant_id, subject_key, starts_at) where subject_key is not null;
create index appointments_holds on appointments (hold_expires_at) where status = 'held';

-- Which touchpoint announced what, so a split in identity can move the appointments whose events moved.
create table appointment_events (
    event_id       uuid primary key,
    appointment_id uuid references appointments on delete cascade,
    waitlist_id    uuid,
    customer_id    uuid
);
create index appointment_events_by_appointment on appointment_events (appointment_id);

create table waitlist (
    tenant_id    text not null,
    waitlist_id  uuid primary key,
    store_id     text not null,
    service_id   text not null,
    staff_id     text,
    day          date not null,
    window_start time not null,
    window_end   time not null check (window_end > window_start),
    status       text not null check (status in ('waiting', 'offered', 'claimed', 'cancelled', 'lapsed')),
    channel      text not null,
    customer_id  uuid,
    identifiers  jsonb not null,
    subject      jsonb,
    created_at   timestamptz not null default now()
);
create index waitlist_waiting on waitlist (tenant_id, store_id, day, created_at) where status = 'waiting';

-- An offer holds the slot (a `held` appointment) for the first in line until it expires.
create table waitlist_offers (
    offer_id       uuid primary key,
    tenant_id      text not null,
    waitlist_id    uuid not null references waitlist on delete cascade,
    appointment_id uuid not null references appointments,
    expires_at     timestamptz not null,
    status         text not null check (status in ('offered', 'claimed', 'declined', 'expired')),
    created_at     timestamptz not null default now()
);
create index waitlist_offers_open on waitlist_offers (expires_at) where status = 'offered';

-- Work the booking clock emits when due: reminders before appointments and visit-due notices.
create table reminders (
    appointment_id uuid not null references appointments on delete cascade,
    offset_label   text not null,
    due_at         timestamptz not null,
    sent_at        timestamptz,
    primary key (appointment_id, offset_label)
);
create index reminders_due on reminders (due_at) where sent_at is null;

create table visit_due (
    tenant_id      text not null,
    subject_key    text not null,
    category       text not null,
    due_at         timestamptz not null,
    appointment_id uuid not null references appointments on delete cascade,
    sent_at        timestamptz,
    primary key (tenant_id, subject_key, category)
);
create index visit_due_pending on visit_due (due_at) where sent_at is null;

-- Customers erased here: a touchpoint resolved later to one of them is anonymised on arrival.
create table erased_customers (
    tenant_id   text not null,
    customer_id uuid not null,
    primary key (tenant_id, customer_id)
);
