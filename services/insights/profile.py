"""A customer's timeline digest: the few facts per event that lifecycle and churn scoring need, keyed by
event id. Applying an event is a keyed insert, so the digest is the same whatever order the events came
in and a redelivered event changes nothing; a merge is a union and a split moves the entries of the
moved events. Pure: no I/O, time in epoch seconds (UTC instants)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from shared.events import Touchpoint
from shared.events.feedback import CaseOpened, CaseResolved, SurveyAnswered
from shared.events.loyalty import TierChanged

# Touchpoint type -> kind of entry. Types not listed only move first_seen and channels.
AWARE, INTEREST, CONSIDER, VISIT, PURCHASE, REFUND, COMPLAINT, NO_SHOW, CANCEL = (
    "aware", "interest", "consider", "visit", "purchase", "refund", "complaint", "no_show", "cancel")
_KIND_OF_TYPE = {
    "ad.exposed": AWARE, "social.interacted": AWARE,
    "store.visited": INTEREST, "consultation.held": INTEREST, "recommendation.offered": INTEREST,
    "booking.created": CONSIDER, "booking.held": CONSIDER, "booking.confirmed": CONSIDER,
    "booking.rescheduled": CONSIDER, "waitlist.joined": CONSIDER, "waitlist.claimed": CONSIDER,
    "booking.completed": VISIT, "service.performed": VISIT,
    "purchase.completed": PURCHASE, "refund.issued": REFUND, "complaint.filed": COMPLAINT,
    "booking.no_show": NO_SHOW, "booking.cancelled": CANCEL,
}
RETAIL = "retail"


def _ts(instant: datetime) -> float:
    return round(instant.timestamp(), 3)


@dataclass(frozen=True)
class Entry:
    at: float
    kind: str
    amount: int = 0          # minor units; visits and purchases add, refunds subtract
    category: str = ""       # service category (the return interval depends on it); "retail" for purchases
    store: str = ""
    key: str = ""            # appointment or order id: a booking.completed and its service.performed are one visit
    currency: str = ""       # the amount's; "" in digests stored before currencies were kept

    def row(self) -> list:
        return [self.at, self.kind, self.amount, self.category, self.store, self.key, self.currency]


def entry_of(event: Touchpoint) -> Entry | None:
    kind = _KIND_OF_TYPE.get(event.type)
    if kind is None:
        return None
    p: Any = event.payload
    if event.type == "store.visited" and p.purpose in ("service", "pickup"):
        return None  # the visit counts when the service completes
    if event.type == "consultation.held" and p.quoted_amount_minor:
        kind = CONSIDER  # a quote is consideration, advice alone is interest
    category = getattr(p, "service_category", None) or (RETAIL if kind in (PURCHASE, REFUND) else "")
    amount = getattr(p, "amount_minor", 0) or 0
    key = getattr(p, "appointment_id", None) or getattr(p, "order_id", None) or ""
    return Entry(_ts(event.occurred_at), kind, amount, category or "", event.store_id or "", str(key),
                 getattr(p, "currency", "") if amount else "")


@dataclass
class Profile:
    tenant_id: str
    customer_id: str
    first_seen: float | None = None
    first_channel: str = ""
    channels: set[str] = field(default_factory=set)
    last_store: str = ""
    entries: dict[str, Entry] = field(default_factory=dict)          # event id -> entry
    answers: dict[str, tuple[float, int, int, str]] = field(default_factory=dict)  # id -> (at, nps|-1, csat|-1, store)
    cases: dict[str, tuple[float, float]] = field(default_factory=dict)  # case id -> (opened, resolved or 0)
    tiers: dict[str, tuple[float, str, str]] = field(default_factory=dict)  # event id -> (at, old, new)
    # What scoring last published, to announce only changes:
    stage: str = ""
    stage_since: float = 0.0
    peak_stage: str = ""
    band: str = ""

    # --- applying events (idempotent, order-independent) ---
    def touch(self, at: float, channel: str, store: str) -> None:
        if self.first_seen is None or at < self.first_seen:
            self.first_seen, self.first_channel = at, channel
        self.channels.add(channel)
        if store:
            self.last_store = store

    def apply_touchpoint(self, event: Touchpoint) -> bool:
        """True if the event changed what scoring sees."""
        key = str(event.event_id)
        if key in self.entries or key in self.answers:
            return False
        before = (self.first_seen, len(self.channels))
        self.touch(_ts(event.occurred_at), event.channel.value, event.store_id or "")
        if event.type == "survey.answered":
            p: Any = event.payload
            self.answers[key] = (_ts(event.occurred_at), -1 if p.nps is None else p.nps,
                                 -1 if p.csat is None else p.csat, event.store_id or "")
            return True
        entry = entry_of(event)
        if entry is not None:
            self.entries[key] = entry
            return True
        return before != (self.first_seen, len(self.channels))

    def apply_answer(self, event: SurveyAnswered) -> bool:
        key = str(event.event_id)
        if key in self.answers:
            return False
        p = event.payload
        self.answers[key] = (_ts(event.occurred_at), -1 if p.nps is None else p.nps,
                             -1 if p.csat is None else p.csat, p.store_id or "")
        return True

    def apply_case(self, event: CaseOpened | CaseResolved) -> bool:
        case_id = str(event.payload.case_id)
        opened, resolved = self.cases.get(case_id, (0.0, 0.0))
        if isinstance(event, CaseOpened):
            opened = _ts(event.occurred_at)
        else:
            resolved = _ts(event.occurred_at)
        changed = self.cases.get(case_id) != (opened, resolved)
        self.cases[case_id] = (opened, resolved)
        return changed

    def apply_tier(self, event: TierChanged) -> bool:
        key = str(event.event_id)
        if key in self.tiers:
            return False
        p = event.payload
        self.tiers[key] = (_ts(event.occurred_at), p.from_tier or "", p.to_tier)
        return True

    # --- following identity ---
    def absorb(self, other: "Profile") -> None:
        """customer.merged: the survivor takes every fact of a merged profile."""
        if other.first_seen is not None:
            self.touch(other.first_seen, other.first_channel, "")
        self.channels |= other.channels
        self.last_store = self.last_store or other.last_store
        self.entries.update(other.entries)
        self.answers.update(other.answers)
        self.cases.update(other.cases)
        self.tiers.update(other.tiers)
        if STAGE_RANK.get(other.peak_stage, -1) > STAGE_RANK.get(self.peak_stage, -1):
            self.peak_stage = other.peak_stage

    def split_off(self, new_customer_id: str, event_ids: set[str]) -> "Profile":
        """customer.split: the moved events' facts leave with them to a new profile."""
        moved = Profile(self.tenant_id, new_customer_id)
        for source, target in ((self.entries, moved.entries), (self.answers, moved.answers)):
            for key in [k for k in source if k in event_ids]:
                target[key] = source.pop(key)
        times = [e.at for e in moved.entries.values()] + [a[0] for a in moved.answers.values()]
        if times:
            moved.first_seen = min(times)
            moved.first_channel = self.first_channel
            moved.channels = set(self.channels)
        return moved

    # --- storage ---
    def dumps(self) -> bytes:
        return orjson.dumps({
            "f": self.first_seen, "fc": self.first_channel, "c": sorted(self.channels), "ls": self.last_store,
            "e": {k: v.row() for k, v in self.entries.items()}, "a": self.answers, "k": self.cases,
            "t": self.tiers, "s": [self.stage, self.stage_since, self.peak_stage, self.band],
        })

    @classmethod
    def loads(cls, tenant_id: str, customer_id: str, data: bytes | str) -> "Profile":
        d = orjson.loads(data)
        stage, since, peak, band = d["s"]
        return cls(tenant_id, customer_id, d["f"], d["fc"], set(d["c"]), d["ls"],
                   {k: Entry(*v) for k, v in d["e"].items()}, {k: tuple(v) for k, v in d["a"].items()},
                   {k: tuple(v) for k, v in d["k"].items()}, {k: tuple(v) for k, v in d["t"].items()},
                   stage, since, peak, band)


FUNNEL = ("awareness", "interest", "consideration", "purchase", "repeat", "loyal")
STAGE_RANK = {stage: rank for rank, stage in enumerate(FUNNEL)}
