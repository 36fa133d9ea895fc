"""The catalogue a chain sets up once and edits rarely: stores (zone, hours, holidays, booking policy),
staff (skills, weekly shifts with breaks, time off), resources with capacity, and services. Request
models validate everything a rule needs, so a bad catalogue is refused with the reason, never stored."""
from __future__ import annotations

import re
import uuid
from datetime import date, time
from functools import lru_cache
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.booking.localtime import zone
from services.booking.rules import WEEKDAYS, Service, Shift, Staff, Store, StorePolicy, Variant
from shared.db import Prepared
from shared.errors import Invalid, NotFound
from shared.events.base import Currency, Slug
from shared.http import BIGINT_MAX, Instant

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
OFFSET = re.compile(r"^P(?:(?P<days>[1-9]\d?)D|T(?:(?P<hours>\d{1,3})H)?(?:(?P<minutes>\d{1,4})M)?)$")


def parse_clock(value: str) -> time:
    """'09:30' -> 09:30; '24:00' -> midnight (only meaningful as an interval's end)."""
    if value == "24:00":
        return time(0)
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day (HH:MM)") from None


def _minutes(t: time, end: bool) -> int:
    return 24 * 60 if end and t == time(0) else t.hour * 60 + t.minute


class ClockInterval(BaseModel):
    """[start, end) in local wall-clock time; end may be 24:00."""

    model_config = ConfigDict(frozen=True)
    start: str
    end: str

    @model_validator(mode="after")
    def _ordered(self):
        if _minutes(parse_clock(self.end), True) <= _minutes(parse_clock(self.start), False):
            raise ValueError(f"interval {self.start}-{self.end} ends before it starts")
        return self

    def times(self) -> tuple[time, time]:
        return parse_clock(self.start), parse_clock(self.end)


def _no_overlap(intervals: list[ClockInterval], what: str) -> None:
    spans = sorted((_minutes(i.times()[0], False), _minutes(i.times()[1], True)) for i in intervals)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"{what} overlap")


def offset_parts(offset: str) -> tuple[int, int]:
    """(calendar days, elapsed minutes) of a reminder offset: P1D, PT2H, PT30M, PT1H30M."""
    m = OFFSET.match(offset)
    if not m or not any(int(v) for v in m.groupdict().values() if v):
        raise ValueError(f"reminder offset {offset!r} must be P<n>D (same local time n days before) or "
                         "PT<h>H<m>M (elapsed time before)")
    return int(m["days"] or 0), int(m["hours"] or 0) * 60 + int(m["minutes"] or 0)


class StorePolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_notice_minutes: int = Field(60, ge=0, le=60 * 24 * 14)
    hold_minutes: int = Field(10, ge=1, le=24 * 60, description="How long a hold keeps a slot before it expires.")
    slot_step_minutes: int = Field(15, ge=5, le=240)
    cancellation_window_hours: int = Field(24, ge=0, le=24 * 14,
                                           description="Cancelling later than this before the start is late.")
    no_show_after_minutes: int = Field(15, ge=0, le=24 * 60)
    reminder_offsets: list[str] = Field(["P1D", "PT2H"], max_length=5)
    waitlist_offer_minutes: int = Field(30, ge=1, le=24 * 60)
    visit_due_local_time: str = Field("10:00", description="Local time of day a visit-due notice goes out.")

    @field_validator("reminder_offsets")
    @classmethod
    def _offsets(cls, value: list[str]) -> list[str]:
        for offset in value:
            offset_parts(offset)
        if len(set(value)) != len(value):
            raise ValueError("reminder offsets repeat")
        return value

    @field_validator("visit_due_local_time")
    @classmethod
    def _clock(cls, value: str) -> str:
        parse_clock(value)
        return value


class StoreIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    timezone: str = Field(description="IANA zone, e.g. Asia/Shanghai, Europe/London, America/New_York.")
    opening_hours: dict[Weekday, list[ClockInterval]] = Field(
        description='Local opening intervals per weekday, e.g. {"mon": [{"start": "09:00", "end": "18:00"}]}.')
    holidays: list[date] = Field([], max_length=366, description="Local dates the store is closed.")
    policy: StorePolicyIn = StorePolicyIn()
    currency: Currency = Field("CNY", description="What the store charges in: appointments there are priced, and "
                                                  "amounts recorded there are, in this currency.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="after")
    def _hours(self):
        for day, intervals in self.opening_hours.items():
            _no_overlap(intervals, f"opening hours on {day}")
        return self


class ShiftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store_id: Slug
    weekday: Weekday
    start: str
    end: str
    breaks: list[ClockInterval] = Field([], max_length=6)

    @model_validator(mode="after")
    def _inside(self):
        shift = ClockInterval(start=self.start, end=self.end)
        lo, hi = _minutes(shift.times()[0], False), _minutes(shift.times()[1], True)
        for b in self.breaks:
            if _minutes(b.times()[0], False) < lo or _minutes(b.times()[1], True) > hi:
                raise ValueError(f"break {b.start}-{b.end} is outside the shift {self.start}-{self.end}")
        _no_overlap(self.breaks, "breaks")
        return self


class StaffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    skills: list[Slug] = Field([], max_length=50)
    schedule: list[ShiftIn] = Field([], max_length=100, description="Weekly shifts; a shift's store is an assignment.")
    active: bool = True

    @model_validator(mode="after")
    def _shifts(self):
        by_day: dict[str, list[ClockInterval]] = {}
        for s in self.schedule:
            by_day.setdefault(s.weekday, []).append(ClockInterval(start=s.start, end=s.end))
        for day, shifts in by_day.items():
            _no_overlap(shifts, f"shifts on {day} (one person cannot work two stores at once)")
        return self


class TimeOffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    starts_at: Instant
    ends_at: Instant
    reason: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _ordered(self):
        if self.ends_at <= self.starts_at:
            raise ValueError("time off ends before it starts")
        return self


class ResourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store_id: Slug
    kind: Slug = Field(description="grooming_table, bathing_station, wash_bay, mobile_van …")
    name: str = Field(min_length=1, max_length=200)
    capacity: int = Field(1, ge=1, le=100, description="How many appointments it takes at once.")


class VariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: Literal["xs", "s", "m", "l", "xl"] | None = None
    coat: Literal["short", "medium", "long", "double", "curly", "wire"] | None = None
    vehicle_class: Literal["compact", "sedan", "suv", "van", "truck", "other"] | None = None
    minutes: int = Field(ge=5, le=1440)
    price_minor: int | None = Field(None, ge=0, le=BIGINT_MAX)

    @model_validator(mode="after")
    def _has_trait(self):
        if not (self.size or self.coat or self.vehicle_class):
            raise ValueError("a variant names a size, coat or vehicle_class")
        return self


class ServiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    category: Slug = Field(description="full_groom, bath, nail_trim, exterior_wash, interior_detail …")
    duration_minutes: int = Field(ge=5, le=1440, description="When no variant matches the pet or vehicle.")
    variants: list[VariantIn] = Field([], max_length=50)
    buffer_before_minutes: int = Field(0, ge=0, le=240)
    buffer_after_minutes: int = Field(0, ge=0, le=240)
    price_minor: int = Field(0, ge=0, le=BIGINT_MAX)
    currency: Currency = "CNY"
    prices: dict[Currency, Annotated[int, Field(ge=0, le=BIGINT_MAX)]] = Field(
        {}, max_length=50, description='List prices in other currencies, for stores that charge in them, '
                                       'e.g. {"GBP": 4500}; variant prices apply in `currency` only.')
    required_skill: Slug | None = None
    resource_kind: Slug | None = None
    rebook_interval_days: int | None = Field(None, ge=1, le=730, description="e.g. 42 for a full groom every 6 weeks.")
    active: bool = True


# --- storage --------------------------------------------------------------------------------------

def _json(model: BaseModel | list) -> str:
    data = [m.model_dump(mode="json") for m in model] if isinstance(model, list) else model.model_dump(mode="json")
    return orjson.dumps(data).decode()


def put_store(cur, tenant_id: str, store_id: str, body: StoreIn) -> dict:
    hours = {day: [i.model_dump() for i in intervals] for day, intervals in body.opening_hours.items()}
    cur.execute(
        "insert into stores (tenant_id, store_id, name, timezone, opening_hours, holidays, policy, currency) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s) on conflict (tenant_id, store_id) do update set name = excluded.name, "
        "timezone = excluded.timezone, opening_hours = excluded.opening_hours, holidays = excluded.holidays, "
        "policy = excluded.policy, currency = excluded.currency, updated_at = now()",
        (tenant_id, store_id, body.name, body.timezone, orjson.dumps(hours).decode(), body.holidays, _json(body.policy),
         body.currency))
    return get_store(cur, tenant_id, store_id)


def _store_row(row) -> dict:
    store_id, name, tz, hours, holidays, policy, currency = row
    return {"store_id": store_id, "name": name, "timezone": tz, "opening_hours": hours, "holidays": holidays,
            "policy": StorePolicyIn(**policy).model_dump(), "currency": currency}


# Read on every availability and booking request (with _SERVICE below): prepared, so Postgres plans
# them once per session.
_STORE = Prepared("booking_store", ("text", "text"), "select store_id, name, timezone, opening_hours, holidays, "
                  "policy, currency from stores where tenant_id = $1 and store_id = $2")
# The rules' columns as text: the rules built from them are cached by that text (store_rules, staff_rules).
_STORE_RULES = Prepared("booking_store_rules", ("text", "text"), "select timezone, opening_hours::text, "
                        "holidays, policy::text, currency from stores where tenant_id = $1 and store_id = $2")
_STORE_STAFF = Prepared("booking_store_staff", ("text", "text"), "select staff_id, skills, schedule::text from staff "
                        "where tenant_id = $1 and active and schedule @> jsonb_build_array(jsonb_build_object("
                        "'store_id', $2)) order by staff_id")


def get_store(cur, tenant_id: str, store_id: str) -> dict:
    _STORE.execute(cur, (tenant_id, store_id))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"unknown store {store_id!r}")
    return _store_row(row)


def list_stores(cur, tenant_id: str) -> list[dict]:
    cur.execute("select store_id, name, timezone, opening_hours, holidays, policy, currency from stores "
                "where tenant_id = %s order by store_id", (tenant_id,))
    return [_store_row(r) for r in cur.fetchall()]


def store_rules(cur, tenant_id: str, store_id: str) -> Store:
    _STORE_RULES.execute(cur, (tenant_id, store_id))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"unknown store {store_id!r}")
    timezone, hours_json, holidays, policy_json, currency = row
    return _store_rules(store_id, timezone, hours_json, tuple(holidays), policy_json, currency)


@lru_cache(maxsize=1024)
def _store_rules(store_id: str, timezone: str, hours_json: str, holidays: tuple[date, ...], policy_json: str,
                 currency: str) -> Store:
    """Keyed by the row's own text: a changed store is a new key, so nothing stale is ever served."""
    hours = {WEEKDAYS.index(day): tuple((parse_clock(i["start"]), parse_clock(i["end"])) for i in intervals)
             for day, intervals in orjson.loads(hours_json).items()}
    p = StorePolicyIn(**orjson.loads(policy_json)).model_dump()
    return Store(store_id, zone(timezone), hours, frozenset(holidays),
                 StorePolicy(**{**p, "reminder_offsets": tuple(p["reminder_offsets"])}), currency)


def put_staff(cur, tenant_id: str, staff_id: str, body: StaffIn) -> dict:
    stores = {s.store_id for s in body.schedule}
    cur.execute("select store_id from stores where tenant_id = %s and store_id = any(%s)", (tenant_id, list(stores)))
    if missing := stores - {r[0] for r in cur.fetchall()}:
        raise Invalid(f"the schedule names unknown stores: {sorted(missing)}")
    cur.execute(
        "insert into staff (tenant_id, staff_id, name, skills, active, schedule) values (%s, %s, %s, %s, %s, %s) "
        "on conflict (tenant_id, staff_id) do update set name = excluded.name, skills = excluded.skills, "
        "active = excluded.active, schedule = excluded.schedule, updated_at = now()",
        (tenant_id, staff_id, body.name, body.skills, body.active, _json(body.schedule)))
    return get_staff(cur, tenant_id, staff_id)


def get_staff(cur, tenant_id: str, staff_id: str) -> dict:
    cur.execute("select staff_id, name, skills, active, schedule from staff where tenant_id = %s and staff_id = %s",
                (tenant_id, staff_id))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"unknown staff member {staff_id!r}")
    cur.execute("select time_off_id, lower(during), upper(during), reason from staff_time_off "
                "where tenant_id = %s and staff_id = %s and upper(during) > now() order by lower(during)",
                (tenant_id, staff_id))
    time_off = [{"time_off_id": t, "starts_at": a, "ends_at": b, "reason": r} for t, a, b, r in cur.fetchall()]
    return {"staff_id": row[0], "name": row[1], "skills": row[2], "active": row[3], "schedule": row[4],
            "upcoming_time_off": time_off}


def list_staff(cur, tenant_id: str, store_id: str | None) -> list[dict]:
    cur.execute("select staff_id, name, skills, active, schedule from staff where tenant_id = %s "
                "and (%s::text is null or schedule @> jsonb_build_array(jsonb_build_object('store_id', %s::text))) "
                "order by staff_id", (tenant_id, store_id, store_id))
    return [{"staff_id": r[0], "name": r[1], "skills": r[2], "active": r[3], "schedule": r[4]} for r in cur.fetchall()]


def staff_rules(cur, tenant_id: str, store_id: str) -> tuple[Staff, ...]:
    """Active staff with at least one shift at the store."""
    _STORE_STAFF.execute(cur, (tenant_id, store_id))
    return tuple(_staff_rules(staff_id, tuple(skills), schedule) for staff_id, skills, schedule in cur.fetchall())


@lru_cache(maxsize=16384)
def _staff_rules(staff_id: str, skills: tuple[str, ...], schedule_json: str) -> Staff:
    """Keyed by the row's own text, as _store_rules: parsing every schedule was a fifth of a hold's Python."""
    return Staff(staff_id, frozenset(skills), tuple(
        Shift(sh["store_id"], WEEKDAYS.index(sh["weekday"]), parse_clock(sh["start"]), parse_clock(sh["end"]),
              tuple((parse_clock(b["start"]), parse_clock(b["end"])) for b in sh["breaks"]))
        for sh in orjson.loads(schedule_json)))


def add_time_off(cur, tenant_id: str, staff_id: str, body: TimeOffIn) -> dict:
    get_staff(cur, tenant_id, staff_id)
    time_off_id = uuid.uuid4()
    cur.execute("insert into staff_time_off (tenant_id, time_off_id, staff_id, during, reason) "
                "values (%s, %s, %s, tstzrange(%s, %s), %s)",
                (tenant_id, time_off_id, staff_id, body.starts_at, body.ends_at, body.reason))
    return {"time_off_id": time_off_id, "staff_id": staff_id, "starts_at": body.starts_at, "ends_at": body.ends_at,
            "reason": body.reason}


def delete_time_off(cur, tenant_id: str, staff_id: str, time_off_id: uuid.UUID) -> None:
    cur.execute("delete from staff_time_off where tenant_id = %s and staff_id = %s and time_off_id = %s",
                (tenant_id, staff_id, time_off_id))
    if cur.rowcount == 0:
        raise NotFound(f"unknown time off {time_off_id}")


def put_resource(cur, tenant_id: str, resource_id: str, body: ResourceIn) -> dict:
    cur.execute("select 1 from stores where tenant_id = %s and store_id = %s", (tenant_id, body.store_id))
    if cur.fetchone() is None:  # the body is wrong, not the path: 422, like a staff schedule naming one
        raise Invalid(f"the resource names an unknown store: {body.store_id!r}")
    cur.execute(
        "insert into resources (tenant_id, resource_id, store_id, kind, name, capacity) values (%s, %s, %s, %s, %s, %s) "
        "on conflict (tenant_id, resource_id) do update set store_id = excluded.store_id, kind = excluded.kind, "
        "name = excluded.name, capacity = excluded.capacity, updated_at = now()",
        (tenant_id, resource_id, body.store_id, body.kind, body.name, body.capacity))
    return {"resource_id": resource_id, **body.model_dump()}


def list_resources(cur, tenant_id: str, store_id: str | None) -> list[dict]:
    cur.execute("select resource_id, store_id, kind, name, capacity from resources where tenant_id = %s "
                "and (%s::text is null or store_id = %s) order by resource_id", (tenant_id, store_id, store_id))
    cols = ("resource_id", "store_id", "kind", "name", "capacity")
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def put_service(cur, tenant_id: str, service_id: str, body: ServiceIn) -> dict:
    cur.execute(
        "insert into services (tenant_id, service_id, name, category, duration_minutes, variants, "
        "buffer_before_minutes, buffer_after_minutes, price_minor, currency, required_skill, resource_kind, "
        "rebook_interval_days, active, prices) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "on conflict (tenant_id, service_id) do update set name = excluded.name, category = excluded.category, "
        "duration_minutes = excluded.duration_minutes, variants = excluded.variants, "
        "buffer_before_minutes = excluded.buffer_before_minutes, buffer_after_minutes = excluded.buffer_after_minutes, "
        "price_minor = excluded.price_minor, currency = excluded.currency, required_skill = excluded.required_skill, "
        "resource_kind = excluded.resource_kind, rebook_interval_days = excluded.rebook_interval_days, "
        "active = excluded.active, prices = excluded.prices, updated_at = now()",
        (tenant_id, service_id, body.name, body.category, body.duration_minutes, _json(body.variants),
         body.buffer_before_minutes, body.buffer_after_minutes, body.price_minor, body.currency, body.required_skill,
         body.resource_kind, body.rebook_interval_days, body.active, orjson.dumps(body.prices).decode()))
    return get_service(cur, tenant_id, service_id)


SERVICE_COLUMNS = ("service_id", "name", "category", "duration_minutes", "variants", "buffer_before_minutes",
                   "buffer_after_minutes", "price_minor", "currency", "required_skill", "resource_kind",
                   "rebook_interval_days", "active", "prices")
_SERVICE = Prepared("booking_service", ("text", "text"), f"select {', '.join(SERVICE_COLUMNS)} from services "
                    "where tenant_id = $1 and service_id = $2")


def get_service(cur, tenant_id: str, service_id: str) -> dict:
    _SERVICE.execute(cur, (tenant_id, service_id))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"unknown service {service_id!r}")
    return dict(zip(SERVICE_COLUMNS, row))


def list_services(cur, tenant_id: str) -> list[dict]:
    cur.execute(f"select {', '.join(SERVICE_COLUMNS)} from services where tenant_id = %s order by service_id",
                (tenant_id,))
    return [dict(zip(SERVICE_COLUMNS, r)) for r in cur.fetchall()]


def service_rules(cur, tenant_id: str, service_id: str) -> Service:
    s = get_service(cur, tenant_id, service_id)
    if not s["active"]:
        raise Invalid(f"service {service_id!r} is no longer offered")
    variants = tuple(Variant({k: v[k] for k in ("size", "coat", "vehicle_class") if v.get(k)}, v["minutes"],
                             v.get("price_minor")) for v in s["variants"])
    return Service(s["service_id"], s["category"], s["duration_minutes"], s["buffer_before_minutes"],
                   s["buffer_after_minutes"], s["price_minor"], s["currency"], s["required_skill"],
                   s["resource_kind"], s["rebook_interval_days"], variants, s["prices"])

