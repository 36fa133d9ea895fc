"""Pure identity rules: identifier normalisation, classification by tenant policy, and deterministic
resolution with merges and households. No I/O."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import phonenumbers

from services.identity import phones
from services.identity.policy import TenantPolicy
from shared.events import Identifier, IdentifierType, Touchpoint

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PLATE_NOISE = re.compile(r"[\s\-·.]")
_SCOPED = {IdentifierType.wechat_openid: "the WeChat app id", IdentifierType.pos_customer_id: "the store id",
           IdentifierType.source_record: "the source system"}


class IdentifierError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class IdKey:
    """What makes an identifier the same identifier: tenant, type, scope and normalised value."""

    tenant_id: str
    type: str
    scope: str
    value: str

    def lock_id(self) -> int:
        digest = hashlib.sha256(f"{self.tenant_id}|{self.type}|{self.scope}|{self.value}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)


def normalise(identifier: Identifier, *, region: str, store_id: str | None) -> Identifier:
    value = identifier.value.strip()
    scope = (identifier.scope or "").strip() or None
    kind = identifier.type
    if kind == IdentifierType.phone:
        try:
            number = phones.parse(value, region)
        except phonenumbers.NumberParseException as exc:
            raise IdentifierError(f"phone: not a phone number ({exc})") from None
        if not phonenumbers.is_valid_number(number):
            raise IdentifierError("phone: not a valid number for its region")
        value = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    elif kind == IdentifierType.email:
        value = value.lower()
        if not _EMAIL.match(value):
            raise IdentifierError("email: not an email address")
    elif kind == IdentifierType.license_plate:
        value = _PLATE_NOISE.sub("", value).upper()
    elif kind not in IdentifierType.__members__ and not kind.startswith("custom:"):
        raise IdentifierError(f"unknown identifier type {kind!r}")
    if kind == IdentifierType.pos_customer_id and scope is None:
        scope = store_id
    if kind in _SCOPED and scope is None:
        raise IdentifierError(f"{kind} needs scope ({_SCOPED[IdentifierType(kind)]})")
    if not value:
        raise IdentifierError(f"{kind}: empty value")
    return Identifier(type=kind, value=value, scope=scope if kind in _SCOPED else None)


def partition_key(event: Touchpoint) -> str:
    """Raw events are keyed by a hash of their first identifier: no personal data in Kafka keys."""
    first = event.identifiers[0]
    return hashlib.sha256(f"{event.tenant_id}|{first.type}|{first.scope}|{first.value}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Rejected:
    type: str
    value: str
    reason: str


@dataclass
class Classified:
    """An event's identifiers sorted by what they may do: strong ones merge, weak ones only suggest,
    rejected ones are kept with the reason and never match anything."""

    event: Touchpoint
    strong: list[IdKey] = field(default_factory=list)
    weak: list[IdKey] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def keys(self) -> list[IdKey]:
        return self.strong + self.weak


def classify(event: Touchpoint, policy: TenantPolicy) -> Classified:
    out = Classified(event)
    seen: set[IdKey] = set()
    for ident in event.identifiers:
        try:
            n = normalise(ident, region=policy.default_region, store_id=event.store_id)
        except IdentifierError as exc:
            out.rejected.append(Rejected(ident.type, ident.value, str(exc)))
            continue
        junk = policy.junk_reason(n.type, ident.value, n.value)
        if junk:
            out.rejected.append(Rejected(n.type, n.value, junk))
            continue
        key = IdKey(event.tenant_id, n.type, n.scope or "", n.value)
        if key in seen:
            continue
        seen.add(key)
        (out.strong if policy.is_strong(n.type) else out.weak).append(key)
    return out


def usable_identifiers(event: Touchpoint, region: str) -> list[str]:
    """Reasons for each identifier that cannot be normalised; empty when at least one is usable."""
    reasons = []
    for ident in event.identifiers:
        try:
            normalise(ident, region=region, store_id=event.store_id)
            return []
        except IdentifierError as exc:
            reasons.append(str(exc))
    return reasons


@dataclass
class IdOwner:
    customer_id: UUID
    shared: bool = False
    junk: bool = False
    linked_count: int = 0


@dataclass
class CustomerState:
    customer_id: UUID
    created_at: datetime
    counts: Counter = field(default_factory=Counter)  # identifier type -> how many the profile holds

    def age(self) -> tuple:
        return (self.created_at, str(self.customer_id))


@dataclass
class Snapshot:
    """What the database knows about the identifiers and customers a batch touches (canonical ids)."""

    owners: dict[IdKey, IdOwner] = field(default_factory=dict)
    customers: dict[UUID, CustomerState] = field(default_factory=dict)
    blocked_pairs: set[frozenset] = field(default_factory=set)
    weak_holders: dict[IdKey, set[UUID]] = field(default_factory=dict)


@dataclass
class Merge:
    survivor: UUID
    losers: list[UUID]
    evidence: list[IdKey]
    event_ids: list[UUID]


@dataclass
class HouseholdLink:
    customer_id: UUID
    other_id: UUID
    via: IdKey
    event_id: UUID


@dataclass
class Plan:
    customer_of: dict[UUID, UUID] = field(default_factory=dict)  # event_id -> canonical customer
    new_customers: dict[UUID, Touchpoint] = field(default_factory=dict)  # id -> the event that created it
    links: dict[IdKey, UUID] = field(default_factory=dict)
    weak_links: set[tuple[IdKey, UUID]] = field(default_factory=set)
    merges: list[Merge] = field(default_factory=list)
    households: list[HouseholdLink] = field(default_factory=list)
    shared: dict[IdKey, IdOwner] = field(default_factory=dict)  # identifiers newly shared or junk
    rejected: list[tuple[UUID, Rejected]] = field(default_factory=list)  # (event_id, ...)

    def canonical(self, customer_id: UUID) -> UUID:
        """Where the batch's merges, applied in order, leave this id. Indexed by loser rather than
        scanning every merge per call, which made a batch's persistence quadratic in its merges."""
        losses, position = self._losses(), -1
        while True:
            later = [(i, s) for i, s in losses.get(customer_id, ()) if i > position]
            if not later:
                return customer_id
            position, customer_id = later[0]

    def _losses(self) -> dict[UUID, list[tuple[int, UUID]]]:
        """loser -> [(merge position, survivor)]; merges are only appended, so only new ones are indexed."""
        losses, indexed = self.__dict__.setdefault("_loss_index", ({}, 0))
        for position in range(indexed, len(self.merges)):
            merge = self.merges[position]
            for loser in merge.losers:
                losses.setdefault(loser, []).append((position, merge.survivor))
        self.__dict__["_loss_index"] = (losses, len(self.merges))
        return losses


class Resolver:
    """Plans the resolution of a batch in order; each event sees what the ones before it did."""

    def __init__(self, snapshot: Snapshot, policy_of: Callable[[str], TenantPolicy],
                 new_customer_id: Callable[[], UUID], now: datetime):
        self.s, self.policy_of, self.new_id, self.now = snapshot, policy_of, new_customer_id, now
        self.plan = Plan()
        self._canon: dict[UUID, UUID] = {}

    def canon(self, customer_id: UUID) -> UUID:
        while customer_id in self._canon:
            customer_id = self._canon[customer_id]
        return customer_id

    def run(self, batch: Iterable[Classified]) -> Plan:
        for item in batch:
            target = self._resolve(item, self.policy_of(item.event.tenant_id))
            self.plan.customer_of[item.event.event_id] = target
            self.plan.rejected.extend((item.event.event_id, r) for r in item.rejected)
        self.plan.customer_of = {e: self.canon(c) for e, c in self.plan.customer_of.items()}
        return self.plan

    def _owner(self, key: IdKey) -> IdOwner | None:
        owner = self.s.owners.get(key)
        if owner is None:
            return None
        owner.customer_id = self.canon(owner.customer_id)
        return owner

    def _resolve(self, item: Classified, policy: TenantPolicy) -> UUID:
        owned = {k: o for k in item.strong if (o := self._owner(k)) is not None and not o.junk}
        free = [k for k in item.strong if k not in self.s.owners]
        linking = {k: o for k, o in owned.items() if not o.shared}
        candidates = sorted({o.customer_id for o in linking.values()}, key=lambda c: self.s.customers[c].age())

        if not candidates:
            if free:
                target = self._create(item.event, "new_identifiers")
            elif owned:  # only shared identifiers: the household's first owner, nothing merges
                target = min((o.customer_id for o in owned.values()), key=lambda c: self.s.customers[c].age())
            else:
                target = self._weak_holder(item) or self._create(item.event, "new_identifiers")
        elif self._mergeable(candidates, free, policy):
            target = candidates[0]
            if len(candidates) > 1:
                self._merge(target, candidates[1:], list(linking), item.event.event_id)
        else:
            target = self._separate(item, owned, policy)
            self._attach_weak(item, target)
            return target

        for key in free:
            self._link(key, target, policy, item)
        for key, owner in owned.items():  # a shared identifier on someone else: one more household member
            if owner.shared and owner.customer_id != target:
                self._share(key, owner, target, item.event.event_id, policy)
        self._attach_weak(item, target)
        return target

    def _mergeable(self, candidates: list[UUID], free: list[IdKey], policy: TenantPolicy) -> bool:
        for i, a in enumerate(candidates):
            for b in candidates[i + 1:]:
                if frozenset((a, b)) in self.s.blocked_pairs:
                    return False
        counts = Counter()
        for c in candidates:
            counts.update(self.s.customers[c].counts)
        counts.update(k.type for k in free)
        return all(n <= policy.for_type(t).max_per_profile for t, n in counts.items())

    def _separate(self, item: Classified, owned: dict[IdKey, IdOwner], policy: TenantPolicy) -> UUID:
        """These identifiers belong to different people (a merge would break a per-profile limit or a
        split's verdict): the event goes to the owner of its most specific identifier; the others
        become shared and link the people into a household."""
        def specificity(k: IdKey):
            o = owned.get(k)
            return (policy.for_type(k.type).max_per_profile, 0 if o and not o.shared else 1, k.type, k.value)

        anchor = min(item.strong, key=specificity)
        anchor_owner = owned.get(anchor)
        target = anchor_owner.customer_id if anchor_owner else self._create(item.event, "household_conflict")
        for key in item.strong:
            owner = owned.get(key)
            if owner is None and key not in self.s.owners:
                self._link(key, target, policy, item)
            elif owner is not None and owner.customer_id != target:
                self._share(key, owner, target, item.event.event_id, policy)
        return target

    def _share(self, key: IdKey, owner: IdOwner, target: UUID, event_id: UUID, policy: TenantPolicy) -> None:
        owner.shared = True
        owner.linked_count += 1
        if owner.linked_count >= policy.junk_after_links:
            owner.junk = True  # a store iPad or a placeholder: stop linking anyone through it
        else:
            self.plan.households.append(HouseholdLink(target, owner.customer_id, key, event_id))
        self.plan.shared[key] = owner

    def _link(self, key: IdKey, target: UUID, policy: TenantPolicy, item: Classified) -> None:
        state = self.s.customers[target]
        if state.counts[key.type] >= policy.for_type(key.type).max_per_profile:
            item.rejected.append(Rejected(key.type, key.value, f"{key.type}: profile already holds "
                                          f"{policy.for_type(key.type).max_per_profile}, the most allowed"))
            return
        state.counts[key.type] += 1
        self.s.owners[key] = IdOwner(target)
        self.plan.links[key] = target

    def _attach_weak(self, item: Classified, target: UUID) -> None:
        for key in item.weak:
            holders = self.s.weak_holders.setdefault(key, set())
            if target not in holders:
                holders.add(target)
                self.plan.weak_links.add((key, target))

    def _weak_holder(self, item: Classified) -> UUID | None:
        """An event with only weak identifiers joins the one profile holding them, if there is exactly one."""
        holders = {self.canon(c) for k in item.weak for c in self.s.weak_holders.get(k, ())}
        return holders.pop() if len(holders) == 1 else None

    def _create(self, event: Touchpoint, rule: str) -> UUID:
        customer_id = self.new_id()
        self.s.customers[customer_id] = CustomerState(customer_id, self.now)
        self.plan.new_customers[customer_id] = event
        return customer_id

    def _merge(self, survivor: UUID, losers: list[UUID], evidence: list[IdKey], event_id: UUID) -> None:
        state = self.s.customers[survivor]
        for loser in losers:
            self._canon[loser] = survivor
            state.counts.update(self.s.customers[loser].counts)
        self.s.blocked_pairs = {
            frozenset(survivor if c in losers else c for c in pair) for pair in self.s.blocked_pairs
        }
        self.plan.merges.append(Merge(survivor, list(losers), evidence, [event_id]))
