"""Pure identity rules: identifier normalisation and deterministic resolution. No I/O."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import phonenumbers

from shared.events import Identifier, IdentifierType, Touchpoint

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PLATE_NOISE = re.compile(r"[\s\-·.]")
_SCOPED = {IdentifierType.wechat_openid: "the WeChat app id", IdentifierType.pos_customer_id: "the store id"}


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
            number = phonenumbers.parse(value, region)
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


def normalise_touchpoint(event: Touchpoint, region: str) -> Touchpoint:
    """The event with normalised, de-duplicated identifiers; raises IdentifierError on a bad one."""
    seen: dict[tuple, Identifier] = {}
    for ident in event.identifiers:
        n = normalise(ident, region=region, store_id=event.store_id)
        seen.setdefault((n.type, n.scope, n.value), n)
    return event.model_copy(update={"identifiers": tuple(seen.values())})


def id_keys(event: Touchpoint) -> list[IdKey]:
    return [IdKey(event.tenant_id, i.type, i.scope or "", i.value) for i in event.identifiers]


def partition_key(event: Touchpoint) -> str:
    """Raw events are keyed by a hash of their first identifier: no personal data in Kafka keys."""
    k = id_keys(event)[0]
    return hashlib.sha256(f"{k.tenant_id}|{k.type}|{k.scope}|{k.value}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class KnownCustomer:
    customer_id: UUID
    created_at: datetime


@dataclass
class Resolution:
    customer_of: dict[UUID, UUID] = field(default_factory=dict)  # event_id -> customer_id
    new_customers: list[tuple[UUID, Touchpoint]] = field(default_factory=list)
    new_links: dict[IdKey, UUID] = field(default_factory=dict)


def resolve(
    events: Iterable[Touchpoint],
    known: dict[IdKey, KnownCustomer],
    new_customer_id: Callable[[], UUID],
    now: datetime,
) -> Resolution:
    """Give each event a customer: the owner of any of its identifiers (the oldest when several own
    them), else a new customer. Identifiers not yet owned are linked to that customer. Events are
    taken in order and each sees what the ones before it created."""
    known = dict(known)
    result = Resolution()
    for event in events:
        keys = id_keys(event)
        owners = {known[k] for k in keys if k in known}
        if owners:
            owner = min(owners, key=lambda c: (c.created_at, str(c.customer_id)))
        else:
            owner = KnownCustomer(new_customer_id(), now)
            result.new_customers.append((owner.customer_id, event))
        for k in keys:
            if k not in known:
                known[k] = owner
                result.new_links[k] = owner.customer_id
        result.customer_of[event.event_id] = owner.customer_id
    return result
