"""A simulated multi-store chain feeding the hub over its public ingestion API.

"Pawsome & Shine": grooming salons and detailing bays in Shanghai, Beijing, Shenzhen, Sydney and
Melbourne (three IANA zones, one with DST). Customers discover the chain through ads and social
accounts (known only by a WeChat openid), book in the app (phone + app user id), are served at the
POS (phone + the store's POS id, a member card), buy retail, answer surveys and sometimes complain —
so the same person arrives through several channels with overlapping identifiers. Store touchpoints
happen only while the store is open in its own time zone.
"""
from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

WECHAT_APP = "wx-pawsome"
CN_MOBILE_PREFIXES = ("135", "136", "138", "139", "150", "158", "186", "188")
GB_MOBILE_PREFIXES = ("7400", "7500", "7720", "7800", "7900", "7940")


@dataclass(frozen=True)
class Store:
    store_id: str
    zone: str
    kind: str  # grooming | detailing
    region: str  # phone region
    opens: int = 9
    closes: int = 21

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.zone))
        return self.opens <= local.hour < self.closes


STORES = (
    Store("sh-jingan", "Asia/Shanghai", "grooming", "CN"),
    Store("sh-pudong", "Asia/Shanghai", "grooming", "CN"),
    Store("bj-chaoyang", "Asia/Shanghai", "grooming", "CN"),
    Store("sz-nanshan", "Asia/Shanghai", "detailing", "CN"),
    Store("syd-surryhills", "Australia/Sydney", "grooming", "AU"),
    Store("mel-fitzroy", "Australia/Melbourne", "detailing", "AU"),
    # Stores in Europe and on the American west coast keep some store open at every hour of the day, so
    # `make run` shows a living chain whenever it is started.
    Store("ldn-islington", "Europe/London", "grooming", "GB"),
    Store("sf-mission", "America/Los_Angeles", "detailing", "US"),
)
CURRENCIES = {"CN": "CNY", "AU": "AUD", "GB": "GBP", "US": "USD"}
CNY_PER_UNIT = {"AUD": 4.7, "GBP": 9.0, "USD": 7.1}  # the chain's prices below are in CNY fen
SERVICES = {
    "grooming": [("groom-full", 38_000), ("bath-tidy", 18_000), ("nail-trim", 6_000), ("deshed", 26_000)],
    "detailing": [("detail-full", 120_000), ("wash-wax", 28_000), ("interior", 45_000), ("ceramic", 380_000)],
}


def price_in(cny_minor: int, currency: str) -> int:
    """A price of the chain's list (CNY) in another currency, in its minor units."""
    return cny_minor if currency == "CNY" else round(cny_minor / CNY_PER_UNIT[currency])


def local_price(cny_minor: int, store: Store) -> int:
    return price_in(cny_minor, CURRENCIES[store.region])


SURNAMES_CN = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林"
GIVEN_CN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超", "秀英"]
NAMES_WESTERN = (["Olivia", "Jack", "Charlotte", "Noah", "Amelia", "Leo", "Isla", "Oliver", "Mia", "Henry"],
                 ["Smith", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Nguyen", "Martin", "Lee", "Walker"])
PETS = [("Mochi", "dog", "poodle", "s", "curly"), ("Doudou", "dog", "shiba", "m", "double"),
        ("Lucky", "dog", "golden retriever", "l", "long"), ("Nala", "cat", "ragdoll", "m", "long")]
PLATE_PREFIXES = {"CN": ["沪A", "粤B"], "AU": ["NSW ", "VIC "], "GB": ["LK"], "US": ["CA "]}
RETAIL = [("shampoo-oat", 8_800), ("kibble-2kg", 15_900), ("chew-toy", 3_900), ("wax-spray", 12_900)]


@dataclass
class Customer:
    n: int
    store: Store
    phone: str
    openid: str
    app_user_id: str | None = None
    name: str = ""
    birth_date: str = ""
    email: str | None = None
    member_card: str | None = None
    plate: str | None = None
    stage: int = 0  # how far along the journey
    staff: str = ""
    appointment: str | None = None
    service: tuple[str, int] | None = None


@dataclass
class Chain:
    rng: random.Random
    customers: list[Customer] = field(default_factory=list)

    def staff_of(self, store: Store) -> str:
        return f"{store.store_id}-staff-{self.rng.randint(1, 5)}"

    def new_customer(self, at: datetime) -> Customer:
        """Someone who first gets in touch at `at`: near a store that is open then (people find a salon
        in their own daytime)."""
        store = self.rng.choice([s for s in STORES if s.is_open(at)] or STORES)
        n = len(self.customers) + 1
        c = Customer(n, store, self._phone(store.region),
                     openid=f"o{uuid.UUID(int=self.rng.getrandbits(128)).hex[:20]}")
        twin = self.rng.choice(self.customers) if self.customers and self.rng.random() < 0.05 else None
        if twin:  # the same person registering again with another number: a match suggestion to review
            c.name, c.birth_date = twin.name, twin.birth_date
        elif store.region == "CN":
            c.name = self.rng.choice(SURNAMES_CN) + self.rng.choice(GIVEN_CN)
        else:
            c.name = f"{self.rng.choice(NAMES_WESTERN[0])} {self.rng.choice(NAMES_WESTERN[1])}"
        if not twin:
            c.birth_date = f"{self.rng.randint(1960, 2004)}-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}"
        if store.kind == "detailing":
            c.plate = f"{self.rng.choice(PLATE_PREFIXES[store.region])}{self.rng.randint(10000, 99999)}"
        if self.rng.random() < 0.4:
            c.email = f"customer{n}@example.com"
        self.customers.append(c)
        return c

    def _phone(self, region: str) -> str:
        """A number from an allocated mobile range of the region, so every generated number is valid."""
        if region == "CN":
            return f"{self.rng.choice(CN_MOBILE_PREFIXES)}{self.rng.randint(10_000_000, 99_999_999)}"
        if region == "AU":
            return f"+614{self.rng.randint(0, 3)}{self.rng.randint(1_000_000, 9_999_999)}"
        if region == "GB":
            return f"+44{self.rng.choice(GB_MOBILE_PREFIXES)}{self.rng.randint(100_000, 999_999)}"
        return f"+1415{self.rng.randint(2_000_000, 9_999_999)}"


def _ids(c: Customer, *kinds: str) -> list[dict]:
    out = []
    for kind in kinds:
        if kind == "phone":
            out.append({"type": "phone", "value": c.phone})
        elif kind == "openid":
            out.append({"type": "wechat_openid", "value": c.openid, "scope": WECHAT_APP})
        elif kind == "app" and c.app_user_id:
            out.append({"type": "app_user_id", "value": c.app_user_id})
        elif kind == "email" and c.email:
            out.append({"type": "email", "value": c.email})
        elif kind == "pos":
            out.append({"type": "pos_customer_id", "value": f"P{c.n:06d}", "scope": c.store.store_id})
        elif kind == "card" and c.member_card:
            out.append({"type": "member_card", "value": c.member_card})
        elif kind == "plate" and c.plate:
            out.append({"type": "license_plate", "value": c.plate})
    return out


def _event(type_: str, c: Customer, channel: str, ids: list[dict], at: datetime, payload: dict | None = None,
           store: bool = True) -> dict:
    ev = {"event_id": str(uuid.uuid4()), "type": type_, "occurred_at": at.isoformat(), "channel": channel,
          "identifiers": ids, "source": "simulator"}
    if store:
        ev["store_id"] = c.store.store_id
    if payload is not None:
        ev["payload"] = payload
    return ev


def next_events(chain: Chain, at: datetime) -> list[dict]:
    """One customer moment: a newcomer's first contact, or the next step of someone's journey."""
    rng = chain.rng
    if not chain.customers or rng.random() < 0.25:
        c = chain.new_customer(at)
        if rng.random() < 0.6:
            return [_event("ad.exposed", c, "ads", _ids(c, "openid"), at,
                           {"campaign_id": rng.choice(["spring-groom", "winter-detail", "new-store"]),
                            "platform": rng.choice(["douyin", "xiaohongshu", "wechat_moments"]),
                            "clicked": rng.random() < 0.3}, store=False)]
        return [_event("social.interacted", c, "social", _ids(c, "openid"), at,
                       {"platform": "wechat", "action": rng.choice(["follow", "like", "message"])}, store=False)]
    c = rng.choice(chain.customers)
    kind = c.store.kind
    step = c.stage
    if step >= 2 and not c.store.is_open(at):  # the in-store journey waits for the store to open
        return [_event("social.interacted", c, "social", _ids(c, "openid"), at,
                       {"platform": "wechat", "action": "like"}, store=False)]
    c.stage += 1
    if step == 0:
        c.app_user_id = f"u{c.n:07d}"
        profile = {"name": c.name, "birth_date": c.birth_date}
        if c.plate:
            profile["vehicles"] = [{"plate": c.plate, "make": rng.choice(["Tesla", "BYD", "Toyota"])}]
        else:
            name, species, breed, size, coat = rng.choice(PETS)
            profile["pets"] = [{"name": name, "species": species, "breed": breed, "size": size, "coat": coat}]
        return [_event("consultation.held", c, "wechat_miniprogram", _ids(c, "openid", "phone"), at,
                       {"topic": "first visit", "service_category": kind}),
                _event("profile.updated", c, "app", _ids(c, "phone", "app"), at, profile, store=False)]
    if step == 1 or (step > 9 and rng.random() < 0.5):
        c.service = rng.choice(SERVICES[kind])
        c.appointment = f"A{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
        c.staff = chain.staff_of(c.store)
        c.stage = 2
        return [_event("booking.created", c, "app", _ids(c, "phone", "app"), at,
                       {"appointment_id": c.appointment, "service_id": c.service[0], "service_category": kind,
                        "starts_at": (at + timedelta(days=rng.randint(1, 10))).isoformat(),
                        "staff_id": c.staff})]
    if step == 2:
        return [_event("reception.checked_in", c, "pos", _ids(c, "phone", "pos", "plate"), at,
                       {"appointment_id": c.appointment, "staff_id": c.staff})]
    if step == 3:
        service = c.service or SERVICES[kind][0]
        return [
            _event("service.performed", c, "pos", _ids(c, "phone", "pos", "plate"), at,
                   {"appointment_id": c.appointment, "service_ids": [service[0]], "service_category": kind,
                    "staff_id": c.staff, "amount_minor": local_price(service[1], c.store),
                    "currency": CURRENCIES[c.store.region]}),
            _event("result.shown", c, "pos", _ids(c, "phone"), at, {"appointment_id": c.appointment,
                                                                     "media_count": rng.randint(1, 6)}),
        ]
    if step == 4:
        nps = min(10, max(0, int(rng.gauss(8.3, 2.0))))
        events = [_event("survey.answered", c, "wechat_miniprogram", _ids(c, "openid", "phone"), at,
                         {"appointment_id": c.appointment, "nps": nps, "csat": max(1, min(5, round(nps / 2))),
                          "step_ratings": {"reception": rng.randint(3, 5), "service_quality": rng.randint(2, 5)},
                          "staff_id": c.staff})]
        if nps <= 4 and rng.random() < 0.6:
            events.append(_event("complaint.filed", c, "phone", _ids(c, "phone"), at,
                                 {"category": rng.choice(["service_quality", "waiting_time", "staff"]),
                                  "severity": "high" if nps <= 2 else "medium",
                                  "appointment_id": c.appointment}))
        return events
    if step == 5:
        c.member_card = f"M{c.n:08d}"
        return [_event("membership.invited", c, "pos", _ids(c, "phone", "card"), at,
                       {"program": "paws-club", "accepted": rng.random() < 0.6}),
                _event("consent.changed", c, "pos", _ids(c, "phone"), at,
                       {"purpose": "marketing_sms", "granted": rng.random() < 0.7, "evidence": "paws-club form v2"})]
    if step == 6:
        sku, price = rng.choice(RETAIL)
        price, qty = local_price(price, c.store), rng.randint(1, 3)
        return [_event("purchase.completed", c, "pos", _ids(c, "phone", "card", "pos"), at,
                       {"order_id": f"O{rng.getrandbits(40):x}", "amount_minor": price * qty,
                        "currency": CURRENCIES[c.store.region],
                        "items": [{"sku": sku, "quantity": qty, "unit_price_minor": price}]})]
    if step == 7:
        return [_event("followup.contacted", c, "phone", _ids(c, "phone"), at,
                       {"reason": rng.choice(["care_tips", "rebook_reminder"]), "outcome": "reached"})]
    if step == 8:
        return [_event("recommendation.offered", c, "app", _ids(c, "app", "email"), at,
                       {"item_id": rng.choice(RETAIL)[0], "accepted": rng.random() < 0.3}, store=False)]
    return [_event("store.visited", c, "walk_in", _ids(c, "phone"), at, {"purpose": "browse"})]


def generate(n: int, seed: int = 7, start: datetime | None = None, spacing_s: float | None = None) -> list[dict]:
    """n events of a fresh chain, for tests and benchmarks. By default they occur from now on over at most
    an hour: identity refuses an occurred_at more than a day ahead, and a second apart 300,000 events
    would have reached two days."""
    chain = Chain(random.Random(seed))
    at = start or datetime.now(UTC)
    spacing_s = min(1.0, 3600 / max(n, 1)) if spacing_s is None else spacing_s
    out: list[dict] = []
    while len(out) < n:
        out.extend(next_events(chain, at))
        at += timedelta(seconds=spacing_s)
    return out[:n]


# The simulated chain's loyalty program: defaults, plus points on services its POS reports without a
# booking, and rates for its stores' currencies other than the yuan.
LOYALTY_PROGRAM = {
    "exchange_rates": CNY_PER_UNIT,
    "earn_rules": {"booking.completed": {"per_unit": 1}, "purchase.completed": {"per_unit": 1},
                   "service.performed": {"per_unit": 1}, "survey.answered": {"fixed": 50},
                   "feedback.survey_answered": {"fixed": 50},
                   "referral.converted": {"fixed": 500}},
}


def store_hours(store: Store) -> dict:
    """Feedback's view of a store: when its manager can answer a case."""
    return {"timezone": store.zone, "manager": f"{store.store_id}-manager",
            "hours": {d: [{"start": f"{store.opens:02d}:00", "end": f"{store.closes:02d}:00"}]
                      for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}


def set_up_services(headers: dict, loyalty_url: str | None, feedback_url: str | None,
                    insights_url: str | None = None) -> None:
    if insights_url:  # the dashboard's dates are store-local
        for store in STORES:
            httpx.put(f"{insights_url}/v1/stores/{store.store_id}", headers=headers, timeout=30,
                      json={"name": store.store_id, "timezone": store.zone}).raise_for_status()
    if loyalty_url:
        httpx.put(f"{loyalty_url}/v1/program", json=LOYALTY_PROGRAM, headers=headers, timeout=30).raise_for_status()
    if feedback_url:
        for store in STORES:
            httpx.put(f"{feedback_url}/v1/stores/{store.store_id}/hours", json=store_hours(store), headers=headers,
                      timeout=30).raise_for_status()


def run(identity_url: str, api_key: str, rate: float, duration_s: float | None, seed: int,
        on_batch=None, booking_url: str | None = None, loyalty_url: str | None = None,
        feedback_url: str | None = None, insights_url: str | None = None) -> int:
    """Post events at about `rate` per second until `duration_s` (forever when None); with `booking_url`,
    also set up the booking catalogue and run the front desk (about two booking actions per second); with
    `loyalty_url`, `feedback_url` and `insights_url`, set the chain's loyalty program, its stores' hours and
    zones first."""
    from hub.simulate_booking import FrontDesk, seed_catalogue

    chain = Chain(random.Random(seed))
    sent = 0
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=identity_url, headers=headers, timeout=30) as client, \
            httpx.Client(base_url=booking_url or identity_url, headers=headers, timeout=30) as desk_client:
        desk = None
        set_up_services(headers, loyalty_url, feedback_url, insights_url)
        if booking_url:
            seed_catalogue(desk_client)
            desk = FrontDesk(desk_client, chain, random.Random(seed + 1))
        while duration_s is None or time.monotonic() - started < duration_s:
            tick = time.monotonic()
            batch: list[dict] = []
            while len(batch) < max(1, int(rate / 2)):
                batch.extend(next_events(chain, datetime.now(UTC)))
            try:
                response = client.post("/v1/touchpoints", json={"events": batch})
                if response.status_code == 200:
                    sent += response.json()["accepted"]
                if on_batch:
                    on_batch(response, sent)
                if desk:
                    desk.step()
            except httpx.HTTPError as exc:
                if on_batch:
                    on_batch(exc, sent)
            time.sleep(max(0.0, 0.5 - (time.monotonic() - tick)))
    return sent
