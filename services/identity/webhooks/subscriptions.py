"""Webhook subscriptions: what a downstream tool asked for (events, filter, consent purpose, how much
personal data), validated so a bad request is refused with its reason, and kept with a sealed secret."""
from __future__ import annotations

import ipaddress
import socket
import uuid
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import urlsplit
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.identity.errors import NotFound
from services.identity.pii import Vault
from services.identity.webhooks.signing import new_secret
from shared.events.customers import Purpose
from shared.events.docs import public_catalog
from shared.events.scores import Stage
from shared.events.base import Channel, Slug

PiiLevel = Literal["none", "hashed", "contact"]
_COLUMNS = ("subscription_id, tenant_id, url, event_types, filter, purpose, pii_level, description, state, "
            "created_at, updated_at, previous_secret_until")


@lru_cache(maxsize=1)
def public_event_types() -> frozenset[str]:
    """Generated from the event models, so fixed for the process: built once, not per request (building
    the catalogue's JSON Schemas takes a good part of a second)."""
    return frozenset(e["type"] for topic in public_catalog()["topics"] for e in topic["events"])


class Filter(BaseModel):
    """Only events matching every given field are delivered; an unknown field is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    store_ids: Annotated[tuple[Slug, ...], Field(max_length=500)] | None = Field(
        None, description="The event happened at one of these stores.")
    channels: tuple[Channel, ...] | None = Field(None, description="The touchpoint came through one of these.")
    stages: tuple[Stage, ...] | None = Field(None, description="The customer's lifecycle stage is one of these.")
    min_churn_risk: float | None = Field(None, ge=0, le=1, description="The customer's churn risk is at least this.")
    tiers: Annotated[tuple[Slug, ...], Field(max_length=20)] | None = Field(
        None, description="The customer's loyalty tier is one of these.")


class SubscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, Field(max_length=2048)] = Field(description="Where events are POSTed (http or https).")
    event_types: Annotated[list[str], Field(min_length=1, max_length=100)] = Field(
        description="Event types from the public catalogue (/v1/catalog).")
    purpose: Purpose = Field(description="The consent purpose the receiver uses the data for: only customers "
                                         "who consented to it are delivered.")
    filter: Filter = Field(default_factory=Filter)
    pii_level: PiiLevel = Field("none", description="none: ids only; hashed: SHA-256 of normalised phone and "
                                                    "email (ad-platform matching); contact: phone, email, WeChat ids.")
    secret: Annotated[str, Field(min_length=24, max_length=200)] | None = Field(
        None, description="Signing secret; generated (and returned once) when omitted.")
    description: Annotated[str, Field(max_length=500)] = ""

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, types: list[str]) -> list[str]:
        unknown = sorted(set(types) - public_event_types())
        if unknown:
            raise ValueError(f"not in the public event catalogue: {', '.join(unknown)} (see /v1/catalog)")
        return sorted(set(types))


def check_url(url: str, allow_private: bool) -> str:
    """http(s) with a host; in production also no loopback, private, link-local or reserved address (the
    hub must not be a way into the chain's own network)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must be an http or https URL with a host, not {url[:100]!r}")
    if allow_private:
        return url
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443)}
    except socket.gaierror:
        raise ValueError(f"the host {parts.hostname!r} does not resolve") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            raise ValueError(f"{parts.hostname} resolves to {ip}, a private or loopback address, which "
                             "production does not deliver to")
    return url


def _context(subscription_id: UUID) -> bytes:
    return b"webhook-secret:" + subscription_id.bytes


def create(cur, vault: Vault, tenant_id: str, request: SubscriptionRequest, now: datetime) -> tuple[dict, str]:
    subscription_id = uuid.uuid4()
    secret = request.secret or new_secret()
    cur.execute(
        f"insert into identity.webhook_subscriptions ({_COLUMNS}, secret_enc) values "
        "(%s, %s, %s, %s, %s, %s, %s, %s, 'active', %s, %s, null, %s)",
        (subscription_id, tenant_id, request.url, request.event_types,
         orjson.dumps(request.filter.model_dump(exclude_none=True, mode="json")).decode(), request.purpose,
         request.pii_level, request.description, now, now, vault.seal(secret, _context(subscription_id))))
    return get(cur, tenant_id, subscription_id), secret


def _row(row) -> dict:
    return dict(zip([c.strip() for c in _COLUMNS.split(",")], row))


def get(cur, tenant_id: str, subscription_id: UUID) -> dict:
    cur.execute(f"select {_COLUMNS} from identity.webhook_subscriptions where tenant_id = %s and "
                "subscription_id = %s and state <> 'deleted'", (tenant_id, subscription_id))
    row = cur.fetchone()
    if row is None:
        raise NotFound("no such subscription")
    return _with_counts(cur, _row(row))


def _with_counts(cur, subscription: dict) -> dict:
    cur.execute("select state, count(*) from identity.webhook_deliveries where subscription_id = %s "
                "and state in ('pending', 'dead') group by state", (subscription["subscription_id"],))
    counts = dict(cur.fetchall())
    return {**subscription, "pending": counts.get("pending", 0), "dead_letters": counts.get("dead", 0)}


def list_for(cur, tenant_id: str) -> list[dict]:
    cur.execute(f"select {_COLUMNS} from identity.webhook_subscriptions where tenant_id = %s and state <> 'deleted' "
                "order by created_at", (tenant_id,))
    return [_with_counts(cur, _row(r)) for r in cur.fetchall()]


def set_state(cur, tenant_id: str, subscription_id: UUID, state: str, now: datetime) -> dict:
    current = get(cur, tenant_id, subscription_id)
    cur.execute("update identity.webhook_subscriptions set state = %s, updated_at = %s where subscription_id = %s",
                (state, now, subscription_id))
    if state == "deleted":  # nothing more goes out for it
        cur.execute("update identity.webhook_deliveries set state = 'dropped', reason = 'subscription deleted', "
                    "finished_at = %s where subscription_id = %s and state = 'pending'", (now, subscription_id))
    return {**current, "state": state, "updated_at": now}


def rotate_secret(cur, vault: Vault, tenant_id: str, subscription_id: UUID, grace: timedelta, now: datetime,
                  secret: str | None = None) -> tuple[dict, str]:
    """A new secret; the old one still signs alongside it for `grace`, so the receiver can switch."""
    get(cur, tenant_id, subscription_id)
    cur.execute("select secret_enc from identity.webhook_subscriptions where subscription_id = %s", (subscription_id,))
    old = cur.fetchone()[0]
    secret = secret or new_secret()
    cur.execute("update identity.webhook_subscriptions set secret_enc = %s, previous_secret_enc = %s, "
                "previous_secret_until = %s, updated_at = %s where subscription_id = %s",
                (vault.seal(secret, _context(subscription_id)), old, now + grace, now, subscription_id))
    return get(cur, tenant_id, subscription_id), secret


def signing_secrets(vault: Vault, subscription_id: UUID, secret_enc: bytes, previous_enc: bytes | None,
                    previous_until: datetime | None, now: datetime) -> list[str]:
    found = [vault.unseal(secret_enc, _context(subscription_id))]
    if previous_enc is not None and previous_until is not None and now < previous_until:
        found.append(vault.unseal(previous_enc, _context(subscription_id)))
    return found


def replay(cur, tenant_id: str, subscription_id: UUID, since: datetime | None, dead_letters: bool,
           now: datetime) -> int:
    """Queue again, as new deliveries after everything already queued: every delivery made since a time, or
    the dead letters (which are then marked requeued). Erased or dropped deliveries are not replayed."""
    get(cur, tenant_id, subscription_id)
    condition = "state = 'dead'" if dead_letters else "state in ('delivered', 'dead') and created_at >= %(since)s"
    cur.execute(
        "insert into identity.webhook_deliveries (subscription_id, tenant_id, event_id, event_type, customer_id, "
        " occurred_at, body, next_attempt_at, created_at, replay_of) "
        "select subscription_id, tenant_id, event_id, event_type, customer_id, occurred_at, body, %(now)s, %(now)s, "
        f" delivery_id from identity.webhook_deliveries where subscription_id = %(sub)s and body is not null "
        f" and {condition} order by delivery_id returning replay_of",
        {"sub": subscription_id, "since": since, "now": now})
    replayed = [r[0] for r in cur.fetchall()]
    if dead_letters and replayed:
        cur.execute("update identity.webhook_deliveries set state = 'requeued' where delivery_id = any(%s)",
                    (replayed,))
    return len(replayed)


def deliveries(cur, tenant_id: str, subscription_id: UUID, state: str | None, limit: int,
               before: int | None) -> list[dict]:
    """The delivery log, newest first, each delivery with its attempts."""
    get(cur, tenant_id, subscription_id)
    cur.execute(
        "select d.delivery_id, d.event_id, d.event_type, d.customer_id, d.state, d.attempts, d.last_status, "
        " d.last_error, d.last_latency_ms, d.reason, d.created_at, d.first_attempt_at, d.finished_at, "
        " d.next_attempt_at, d.replay_of, coalesce((select json_agg(json_build_object('attempt', a.attempt, "
        " 'at', a.attempted_at, 'status_code', a.status_code, 'latency_ms', a.latency_ms, 'error', a.error) "
        " order by a.attempt) from identity.webhook_attempts a where a.delivery_id = d.delivery_id), '[]') "
        "from identity.webhook_deliveries d where d.subscription_id = %s and (%s::text is null or d.state = %s) "
        "and (%s::bigint is null or d.delivery_id < %s) order by d.delivery_id desc limit %s",
        (subscription_id, state, state, before, before, limit))
    names = ("delivery_id", "event_id", "event_type", "customer_id", "state", "attempts", "last_status",
             "last_error", "last_latency_ms", "reason", "created_at", "first_attempt_at", "finished_at",
             "next_attempt_at", "replay_of", "attempt_log")
    return [dict(zip(names, r)) for r in cur.fetchall()]


def drop_for_erased(cur, customer_ids: list[UUID], now: datetime) -> int:
    """An erased customer is never delivered again: queued deliveries go, and so do the bodies of past
    ones (nothing left to replay)."""
    cur.execute("update identity.webhook_deliveries set state = case when state = 'pending' then 'dropped' "
                "else state end, reason = case when state = 'pending' then 'customer erased' else reason end, "
                "finished_at = coalesce(finished_at, %s), body = null "
                "where customer_id = any(%s) and body is not null", (now, customer_ids))
    return cur.rowcount


def prune(cur, before: datetime, limit: int = 10_000) -> int:
    """The delivery log keeps finished deliveries for the retention period (replay reaches that far back);
    dead letters stay until they are replayed."""
    cur.execute("delete from identity.webhook_deliveries where delivery_id in (select delivery_id from "
                "identity.webhook_deliveries where state in ('delivered', 'dropped', 'requeued') and finished_at < %s "
                "limit %s)", (before, limit))
    return cur.rowcount
