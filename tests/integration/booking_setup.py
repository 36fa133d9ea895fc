"""A small grooming chain for booking tests: one store per zone, groomers with shifts, tables, services."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.auth import KeyVerifier, Role

DEMO = {"Authorization": "Bearer test-demo-key"}
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def key(role: Role, tenant: str = "demo") -> dict:
    return {"Authorization": f"Bearer {KeyVerifier('test-secret').issue(tenant, role)}"}


def ok(response, status: int = 200):
    assert response.status_code == status, response.text
    return response.json()


def setup_store(client, store_id: str = "s1", tz: str = "Asia/Shanghai", hours=("09:00", "18:00"),
                staff=("g1",), tables: int | None = 1, policy: dict | None = None, breaks=(("12:00", "13:00"),),
                holidays=()):
    ok(client.put(f"/v1/stores/{store_id}", headers=DEMO, json={
        "name": f"Store {store_id}", "timezone": tz, "holidays": list(holidays),
        "opening_hours": {d: [{"start": hours[0], "end": hours[1]}] for d in WEEK},
        "policy": {"min_notice_minutes": 0, **(policy or {})}}))
    for staff_id in staff:
        ok(client.put(f"/v1/staff/{staff_id}", headers=DEMO, json={
            "name": staff_id, "skills": ["grooming"],
            "schedule": [{"store_id": store_id, "weekday": d, "start": hours[0], "end": hours[1],
                          "breaks": [{"start": b0, "end": b1} for b0, b1 in breaks]} for d in WEEK]}))
    if tables:
        ok(client.put(f"/v1/resources/{store_id}-tables", headers=DEMO, json={
            "store_id": store_id, "kind": "grooming_table", "name": "Tables", "capacity": tables}))
    ok(client.put("/v1/services/full-groom", headers=DEMO, json={
        "name": "Full groom", "category": "full_groom", "duration_minutes": 60,
        "variants": [{"size": "l", "minutes": 90}, {"size": "l", "coat": "long", "minutes": 120}],
        "buffer_after_minutes": 15, "price_minor": 20000, "required_skill": "grooming",
        "resource_kind": "grooming_table" if tables else None, "rebook_interval_days": 42}))


def customer(phone: str = "+8613912345678", pet: str = "Lucky", size: str = "m") -> dict:
    return {"identifiers": [{"type": "phone", "value": phone}],
            "subject": {"kind": "pet", "name": pet, "species": "dog", "size": size}}


def local_day(tz: str, days_ahead: int = 7) -> date:
    return (datetime.now(UTC) + timedelta(days=days_ahead)).astimezone(ZoneInfo(tz)).date()


def next_transition(tz: str, forward: bool) -> date:
    """The next local date on which the zone's clocks spring forward (or fall back)."""
    zone = ZoneInfo(tz)
    day = datetime.now(UTC).astimezone(zone).date() + timedelta(days=2)
    for _ in range(800):
        start = datetime(day.year, day.month, day.day, tzinfo=zone).utcoffset()
        nxt = day + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).utcoffset()
        if (end > start) if forward else (end < start):
            return day
        day = nxt
    raise AssertionError(f"{tz} has no DST transition")


def hold(client, day: date, local_time: str, store_id: str = "s1", staff_id: str | None = "g1", who=None,
         headers=DEMO):
    body = {"store_id": store_id, "service_id": "full-groom", "local_start": f"{day.isoformat()}T{local_time}",
            "customer": who or customer()}
    if staff_id:
        body["staff_id"] = staff_id
    return client.post("/v1/appointments", headers=headers, json=body)
