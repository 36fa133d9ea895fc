"""The signature every webhook request carries, so a receiver can prove the hub sent it and that it is
fresh: `Hub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`. While a rotated
secret is in its grace period the header carries one v1 per secret, so receivers can switch at leisure."""
from __future__ import annotations

import hashlib
import hmac
import secrets as _secrets

SIGNATURE_HEADER = "Hub-Signature"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + _secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secrets: list[str], timestamp: int, body: bytes) -> str:
    return Signer(secrets).header(timestamp, body)


class Signer:
    """signature_header for fixed secrets, with each HMAC keyed once (copying a keyed HMAC is cheaper
    than keying a new one for every request)."""

    def __init__(self, secrets: list[str]):
        self._macs = [hmac.new(s.encode(), digestmod=hashlib.sha256) for s in secrets]

    def header(self, timestamp: int, body: bytes) -> str:
        prefix = f"{timestamp}.".encode()
        signatures = []
        for keyed in self._macs:
            mac = keyed.copy()
            mac.update(prefix)
            mac.update(body)
            signatures.append(f"v1={mac.hexdigest()}")
        return ",".join([f"t={timestamp}", *signatures])


def verify(header: str, secret: str, body: bytes, now: float, tolerance_s: int = 300) -> bool:
    """What a receiver does (the example receiver in examples/ does the same with the standard library)."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in parts if k == "t"]
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit() and len(stamps[0]) <= 12):
        return False
    if abs(now - int(stamps[0])) > tolerance_s:
        return False
    expected = signature(secret, int(stamps[0]), body).encode()
    return any(hmac.compare_digest(expected, v.encode()) for k, v in parts if k == "v1")
