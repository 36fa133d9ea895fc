"""Personal data at rest: tokens for lookups, per-customer keys that erasure destroys, masking."""
from __future__ import annotations

import uuid

import pytest
from cryptography.exceptions import InvalidTag

from services.identity.pii import Vault, mask


def test_tokens_are_stable_and_depend_on_the_master_key():
    a, b = Vault("one-secret"), Vault("another-secret")
    assert a.token("demo", "phone", "", "+8613912345678") == Vault("one-secret").token("demo", "phone", "", "+8613912345678")
    assert a.token("demo", "phone", "", "+8613912345678") != b.token("demo", "phone", "", "+8613912345678")
    assert a.token("demo", "phone", "", "+8613912345678") != a.token("chain-b", "phone", "", "+8613912345678")


def test_a_value_encrypted_for_one_customer_needs_that_customers_key():
    vault = Vault("secret")
    alice, bob = uuid.uuid4(), uuid.uuid4()
    wrapped = vault.new_key(alice)
    vault.new_key(bob)
    blob = vault.encrypt(alice, "王丽")
    assert "王丽".encode() not in blob
    assert vault.decrypt(alice, blob) == "王丽"
    with pytest.raises(InvalidTag):
        vault.decrypt(bob, blob)

    restarted = Vault("secret")
    restarted.load_key(alice, wrapped)  # a new process unwraps the stored key
    assert restarted.decrypt(alice, blob) == "王丽"


def test_once_a_key_is_forgotten_its_ciphertexts_cannot_be_read():
    vault = Vault("secret")
    customer = uuid.uuid4()
    vault.new_key(customer)
    blob = vault.encrypt(customer, "+8613912345678")
    vault.forget([customer])
    with pytest.raises(KeyError):
        vault.decrypt(customer, blob)


def test_a_wrapped_key_cannot_be_unwrapped_with_another_master_key():
    customer = uuid.uuid4()
    wrapped = Vault("secret").new_key(customer)
    with pytest.raises(InvalidTag):
        Vault("guess").load_key(customer, wrapped)


@pytest.mark.parametrize(("kind", "value", "masked"), [
    ("phone", "+8613912345678", "+86139****5678"),
    ("email", "lily.wang@example.com", "l***@example.com"),
    ("name", "王丽", "王*"),
])
def test_marketing_sees_values_masked(kind, value, masked):
    assert mask(kind, value) == masked


def test_a_key_found_present_is_not_evicted_by_loading_the_missing_ones():
    source = Vault("secret")
    a, b, c, d = (uuid.uuid4() for _ in range(4))
    wrapped = {k: source.new_key(k) for k in (a, b, c, d)}
    vault = Vault("secret", cache_size=3)
    for k in (a, b, c):
        vault.load_key(k, wrapped[k])
    assert vault.has_key(a)  # as store.load_keys checks before loading d
    vault.load_key(d, wrapped[d])
    assert vault.decrypt(a, source.encrypt(a, "x")) == "x"
