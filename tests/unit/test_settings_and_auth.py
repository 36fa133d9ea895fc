from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.identity.settings import IdentitySettings
from services.insights.settings import InsightsSettings
from shared.auth import KeyVerifier, Role


def test_production_refuses_to_start_with_the_default_secret(monkeypatch):
    monkeypatch.setenv("HUB_ENV", "production")
    monkeypatch.delenv("HUB_AUTH_SECRET", raising=False)
    with pytest.raises(ValidationError, match="HUB_AUTH_SECRET"):
        IdentitySettings()


def test_production_starts_with_a_real_secret(monkeypatch):
    monkeypatch.setenv("HUB_ENV", "production")
    monkeypatch.setenv("HUB_AUTH_SECRET", "a-long-random-secret")
    monkeypatch.setenv("IDENTITY_PII_MASTER_KEY", "another-long-random-secret")
    assert IdentitySettings().auth_secret.get_secret_value() == "a-long-random-secret"


def test_production_refuses_the_default_personal_data_key(monkeypatch):
    monkeypatch.setenv("HUB_ENV", "production")
    monkeypatch.setenv("HUB_AUTH_SECRET", "a-long-random-secret")
    with pytest.raises(ValueError, match="IDENTITY_PII_MASTER_KEY"):
        IdentitySettings()


def test_ports_default_per_service_and_follow_their_prefixed_variable(monkeypatch):
    assert IdentitySettings().port == 8101 and InsightsSettings().port == 8105
    monkeypatch.setenv("IDENTITY_PORT", "9101")
    assert IdentitySettings().port == 9101


def test_platform_wide_variables_are_read_by_every_service(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("CLICKHOUSE_URL", "http://default:pw@clickhouse:8123")
    assert IdentitySettings().kafka_bootstrap_servers == "kafka:9092"
    assert InsightsSettings().clickhouse_url == "http://default:pw@clickhouse:8123"


def test_an_issued_key_names_its_tenant_and_role():
    verifier = KeyVerifier("s3cret")
    who = verifier.verify(verifier.issue("chain-a", Role.ingest))
    assert (who.tenant_id, who.role) == ("chain-a", Role.ingest)


def test_a_key_signed_with_another_secret_or_tampered_is_refused():
    key = KeyVerifier("other").issue("chain-a")
    assert KeyVerifier("s3cret").verify(key) is None
    good = KeyVerifier("s3cret").issue("chain-a")
    assert KeyVerifier("s3cret").verify(good[:-2] + ("AA" if good[-2:] != "AA" else "BB")) is None


def test_the_demo_key_belongs_to_the_demo_tenant_only():
    verifier = KeyVerifier("s3cret", demo_key="demo-key-123", demo_tenant="demo")
    assert verifier.verify("demo-key-123").tenant_id == "demo"
    assert verifier.verify("demo-key-124") is None


def test_production_refuses_the_demo_key(monkeypatch):
    monkeypatch.setenv("HUB_ENV", "production")
    monkeypatch.setenv("HUB_AUTH_SECRET", "a-long-random-secret")
    monkeypatch.setenv("HUB_DEMO_API_KEY", "demo-key")
    with pytest.raises(ValidationError, match="HUB_DEMO_API_KEY"):
        IdentitySettings()
