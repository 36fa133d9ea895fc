"""Tenant API keys. A key is a signed token naming its tenant and role, so every service can verify
it with the shared secret without calling another service. The embedded demo key is a literal value
(HUB_DEMO_API_KEY) accepted for the demo tenant.
"""
from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from itsdangerous import BadSignature, URLSafeSerializer

KEY_PREFIX = "hub_"


class Role(StrEnum):
    """What a key may do. admin may do everything within its tenant."""

    admin = "admin"
    ingest = "ingest"  # channels and integrations: send touchpoints and consents
    store_staff = "store_staff"  # the counter: look customers up, book, record consent
    ops = "ops"  # the chain's operations team: dashboards, complaints, merge review, splits
    marketing = "marketing"  # segments and subscriptions; sees personal data masked


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    role: Role
    key_id: str


class KeyVerifier:
    CACHE_SIZE = 10_000  # verified keys remembered; a key's claims never change, so a hit is exact

    def __init__(self, secret: str, demo_key: str | None = None, demo_tenant: str = "demo"):
        self._serializer = URLSafeSerializer(secret, salt="hub-api-key")
        self._demo_key, self._demo_tenant = demo_key, demo_tenant
        # Checking the signature (HMAC, base64, JSON) cost ~0.1 ms of every request; only keys that
        # verified are kept, so invalid ones cannot crowd them out.
        self._verified: dict[str, Principal] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "KeyVerifier":
        demo = settings.demo_api_key.get_secret_value() if settings.demo_api_key else None
        return cls(settings.auth_secret.get_secret_value(), demo, settings.demo_tenant_id)

    def issue(self, tenant_id: str, role: Role = Role.admin) -> str:
        token = self._serializer.dumps({"t": tenant_id, "r": role.value, "k": secrets.token_hex(6)})
        return KEY_PREFIX + token

    def verify(self, key: str) -> Principal | None:
        if self._demo_key and hmac.compare_digest(key.encode(), self._demo_key.encode()):
            return Principal(self._demo_tenant, Role.admin, "demo")
        found = self._verified.get(key)
        if found is not None:
            return found
        if not key.startswith(KEY_PREFIX):
            return None
        try:
            claims = self._serializer.loads(key[len(KEY_PREFIX):])
            found = Principal(claims["t"], Role(claims["r"]), claims["k"])
        except (BadSignature, KeyError, ValueError, TypeError):
            return None
        with self._lock:
            if len(self._verified) >= self.CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # the oldest
            self._verified[key] = found
        return found


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller's tenant and role from `Authorization: Bearer <key>`. Async (it
    does not block): a sync dependency would cost a hop to the thread pool on every request."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HTTPException(401, "missing API key: send Authorization: Bearer <key>",
                            headers={"WWW-Authenticate": "Bearer"})
    found = request.app.state.key_verifier.verify(key.strip())
    if found is None:
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
    return found


def require(*roles: Role):
    allowed = {Role.admin, *roles}

    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.role not in allowed:
            raise HTTPException(403, f"role {who.role} may not do this; needs one of {sorted(allowed)}")
        return who

    return check


CallerIngest = Annotated[Principal, Depends(require(Role.ingest))]
CallerRead = Annotated[Principal, Depends(require(Role.store_staff, Role.ops, Role.marketing))]
CallerOps = Annotated[Principal, Depends(require(Role.ops))]
CallerStaff = Annotated[Principal, Depends(require(Role.store_staff, Role.ops))]
CallerConsent = Annotated[Principal, Depends(require(Role.ingest, Role.store_staff, Role.ops))]
CallerAdmin = Annotated[Principal, Depends(require())]
CallerBooking = Annotated[Principal, Depends(require(Role.ingest, Role.store_staff, Role.ops))]
"""Channels (app, mini-program) and the counter: availability and appointments."""
CallerAny = Annotated[Principal, Depends(require(*Role))]
