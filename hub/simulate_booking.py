"""The simulated chain's front desk: it sets up the booking catalogue (stores in their zones, groomers
and detailers with shifts and lunch breaks, tables and wash bays, services priced by pet size or vehicle
class) and then books, confirms, cancels, joins waitlists and records walk-ins through the booking API,
as the app and the counter would. Refusals (a slot just taken) are part of the day, not errors."""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from hub.simulate import (CNY_PER_UNIT, CURRENCIES, PETS, SERVICES, STORES, Chain, Customer, Store, _ids, local_price,
                          price_in)

WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STAFF_PER_STORE = 5
DURATIONS = {"groom-full": 90, "bath-tidy": 60, "nail-trim": 20, "deshed": 75,
             "detail-full": 240, "wash-wax": 60, "interior": 120, "ceramic": 300}


def catalogue(store: Store) -> dict:
    """The PUT bodies that set one store up."""
    hours = [{"start": f"{store.opens:02d}:00", "end": f"{store.closes:02d}:00"}]
    skill, kind = ("grooming", "grooming_table") if store.kind == "grooming" else ("detailing", "wash_bay")
    return {
        f"/v1/stores/{store.store_id}": {"name": store.store_id, "timezone": store.zone,
                                         "currency": CURRENCIES[store.region],
                                         "opening_hours": {d: hours for d in WEEK}},
        **{f"/v1/staff/{store.store_id}-staff-{i}": {
            "name": f"{store.store_id} staff {i}", "skills": [skill],
            "schedule": [{"store_id": store.store_id, "weekday": d, "start": f"{store.opens:02d}:00",
                          "end": f"{store.closes:02d}:00", "breaks": [{"start": f"{12 + i % 2}:00",
                                                                        "end": f"{13 + i % 2}:00"}]}
                         for d in WEEK if (WEEK.index(d) + i) % 7 != 0]}  # one day off a week each
           for i in range(1, STAFF_PER_STORE + 1)},
        f"/v1/resources/{store.store_id}-{kind}": {"store_id": store.store_id, "kind": kind, "name": kind,
                                                   "capacity": 3},
    }


def services() -> dict:
    out = {}
    for kind, offered in SERVICES.items():
        for service_id, price in offered:
            minutes = DURATIONS[service_id]
            variants = ([{"size": "l", "minutes": minutes + 30}, {"size": "l", "coat": "long", "minutes": minutes + 45}]
                        if kind == "grooming" else [{"vehicle_class": "suv", "minutes": minutes + 30}])
            out[f"/v1/services/{service_id}"] = {
                "name": service_id, "category": service_id, "duration_minutes": minutes, "variants": variants,
                "buffer_after_minutes": 15, "price_minor": price,
                "prices": {currency: price_in(price, currency) for currency in CNY_PER_UNIT},
                "required_skill": "grooming" if kind == "grooming" else "detailing",
                "resource_kind": "grooming_table" if kind == "grooming" else "wash_bay",
                "rebook_interval_days": 42 if kind == "grooming" else 90}
    return out


def seed_catalogue(client: httpx.Client) -> None:
    bodies = services()
    for store in STORES:
        bodies.update(catalogue(store))
    for path in sorted(bodies, key=lambda p: not p.startswith("/v1/stores")):  # stores before their staff
        client.put(path, json=bodies[path]).raise_for_status()


def booking_customer(c: Customer) -> dict:
    if c.plate:
        return {"identifiers": _ids(c, "phone", "app", "plate"), "subject": {"kind": "vehicle", "vehicle_class": "suv"
                                                                             if c.n % 3 == 0 else "sedan"}}
    name, species, _breed, size, coat = PETS[c.n % len(PETS)]
    return {"identifiers": _ids(c, "phone", "app"),
            "subject": {"kind": "pet", "name": name, "species": species, "size": size, "coat": coat}}


class FrontDesk:
    """One booking action per step, chosen like a day at the counter."""

    def __init__(self, client: httpx.Client, chain: Chain, rng: random.Random):
        self.client, self.chain, self.rng = client, chain, rng
        self.upcoming: list[str] = []
        self.done = {"booked": 0, "cancelled": 0, "walk_ins": 0, "waitlisted": 0, "refused": 0}

    def step(self) -> None:
        if not self.chain.customers:
            return
        c = self.rng.choice(self.chain.customers)
        roll = self.rng.random()
        if roll < 0.1 and self.upcoming:
            self._cancel()
        elif roll < 0.35 and c.store.is_open(datetime.now(UTC)):
            self._walk_in(c)
        else:
            self._book(c)

    def _service(self, c: Customer) -> str:
        return self.rng.choice(SERVICES[c.store.kind])[0]

    def _book(self, c: Customer) -> None:
        service = self._service(c)
        day = (datetime.now(UTC) + timedelta(days=self.rng.randint(1, 10))).astimezone(ZoneInfo(c.store.zone)).date()
        slots = self.client.get("/v1/availability", params={
            "store_id": c.store.store_id, "service_id": service, "date": day.isoformat()}).json().get("slots", [])
        if not slots:
            self._waitlist(c, service, day)
            return
        held = self.client.post("/v1/appointments", json={
            "store_id": c.store.store_id, "service_id": service, "starts_at": self.rng.choice(slots)["starts_at"],
            "customer": booking_customer(c), "channel": self.rng.choice(["app", "wechat_miniprogram", "phone"])})
        if held.status_code != 201:
            self.done["refused"] += 1
            return
        appointment_id = held.json()["appointment_id"]
        if self.rng.random() < 0.9:  # some holds are left to expire, as customers abandon checkout
            if self.client.post(f"/v1/appointments/{appointment_id}/confirm").status_code == 200:
                self.upcoming.append(appointment_id)
                self.done["booked"] += 1

    def _cancel(self) -> None:
        appointment_id = self.upcoming.pop(self.rng.randrange(len(self.upcoming)))
        if self.client.post(f"/v1/appointments/{appointment_id}/cancel",
                            json={"reason": "plans changed"}).status_code == 200:
            self.done["cancelled"] += 1

    def _waitlist(self, c: Customer, service: str, day) -> None:
        if self.client.post("/v1/waitlist", json={
                "store_id": c.store.store_id, "service_id": service, "day": day.isoformat(),
                "window_start": f"{c.store.opens:02d}:00", "window_end": f"{c.store.closes:02d}:00",
                "customer": booking_customer(c)}).status_code == 201:
            self.done["waitlisted"] += 1

    def _walk_in(self, c: Customer) -> None:
        service = self._service(c)
        staff = f"{c.store.store_id}-staff-{self.rng.randint(1, STAFF_PER_STORE)}"
        started = datetime.now(UTC) - timedelta(minutes=self.rng.randint(0, 30))
        response = self.client.post("/v1/walk-ins", json={
            "store_id": c.store.store_id, "service_id": service, "staff_id": staff, "started_at": started.isoformat(),
            "customer": booking_customer(c),
            "amount_minor": local_price(dict(SERVICES[c.store.kind])[service], c.store)})
        self.done["walk_ins" if response.status_code == 201 else "refused"] += 1
