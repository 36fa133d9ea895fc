"""Personal data at rest: keyed hashes for lookups, AES-GCM ciphertext under a per-customer key for
display. Per-customer keys are wrapped with a master key derived from IDENTITY_PII_MASTER_KEY;
erasure deletes a customer's wrapped key, so every ciphertext made with it (in Postgres, in backups
of the data tables, in exports) can no longer be read."""
from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=b"customer-hub", info=purpose).derive(master)


class Vault:
    def __init__(self, master_secret: str, cache_size: int = 50_000):
        master = master_secret.encode()
        self._wrap = AESGCM(_derive(master, b"wrap-customer-keys"))
        self._seal = AESGCM(_derive(master, b"service-secrets"))
        # Copying a keyed HMAC is cheaper than keying a new one for every token.
        self._token_mac = hmac.new(_derive(master, b"identifier-tokens"), digestmod=hashlib.sha256)
        self._keys: OrderedDict[UUID, AESGCM] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def token(self, *parts: str) -> str:
        """A stable keyed hash: equal inputs give equal tokens; without the key nobody can test a guess."""
        mac = self._token_mac.copy()
        mac.update("\x1f".join(parts).encode())
        return mac.hexdigest()[:40]

    def new_key(self, key_id: UUID) -> bytes:
        """A fresh data key for a customer; returns it wrapped (what the database stores)."""
        raw = AESGCM.generate_key(bit_length=256)
        self._remember(key_id, AESGCM(raw))
        nonce = os.urandom(_NONCE)
        return nonce + self._wrap.encrypt(nonce, raw, key_id.bytes)

    def load_key(self, key_id: UUID, wrapped: bytes) -> None:
        raw = self._wrap.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], key_id.bytes)
        self._remember(key_id, AESGCM(raw))

    def has_key(self, key_id: UUID) -> bool:
        """Also marks the key recently used, so loading other keys next cannot evict it."""
        with self._lock:
            if key_id in self._keys:
                self._keys.move_to_end(key_id)
                return True
            return False

    def forget(self, key_ids) -> None:
        with self._lock:
            for key_id in key_ids:
                self._keys.pop(key_id, None)

    def seal(self, plaintext: str, context: bytes) -> bytes:
        """Encrypt one of the hub's own secrets (a webhook signing secret) bound to its context."""
        nonce = os.urandom(_NONCE)
        return nonce + self._seal.encrypt(nonce, plaintext.encode(), context)

    def unseal(self, blob: bytes, context: bytes) -> str:
        blob = bytes(blob)
        return self._seal.decrypt(blob[:_NONCE], blob[_NONCE:], context).decode()

    def encrypt(self, key_id: UUID, plaintext: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._key(key_id).encrypt(nonce, plaintext.encode(), key_id.bytes)

    def decrypt(self, key_id: UUID, blob: bytes) -> str:
        blob = bytes(blob)
        return self._key(key_id).decrypt(blob[:_NONCE], blob[_NONCE:], key_id.bytes).decode()

    def _key(self, key_id: UUID) -> AESGCM:
        with self._lock:
            key = self._keys.get(key_id)
            if key is None:
                raise KeyError(f"no data key {key_id} loaded (erased, or not loaded by the caller)")
            self._keys.move_to_end(key_id)
            return key

    def _remember(self, key_id: UUID, key: AESGCM) -> None:
        with self._lock:
            self._keys[key_id] = key
            while len(self._keys) > self._cache_size:
                self._keys.popitem(last=False)


class BatchVault:
    """A vault for one batch: each token is computed once (resolving a batch asks for the same
    identifier's token about a dozen times); everything else is the vault's own."""

    def __init__(self, vault: Vault):
        self.vault = vault
        self._tokens: dict[tuple[str, ...], str] = {}
        self.new_key, self.load_key, self.has_key, self.forget = vault.new_key, vault.load_key, vault.has_key, vault.forget
        self.encrypt, self.decrypt = vault.encrypt, vault.decrypt

    def token(self, *parts: str) -> str:
        found = self._tokens.get(parts)
        if found is None:
            found = self._tokens[parts] = self.vault.token(*parts)
        return found


def mask(kind: str, value: str) -> str:
    """What a marketing key sees: enough to recognise, not enough to contact."""
    if kind == "phone" and len(value) > 7:
        return value[:-8] + "****" + value[-4:]
    if kind == "email" and "@" in value:
        local, _, domain = value.partition("@")
        return local[:1] + "***@" + domain
    if not value:
        return value
    return value[:1] + "*" * min(len(value) - 1, 8)
