from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.identity.app import create_app as create_identity
from services.identity.settings import IdentitySettings
from services.insights.app import create_app as create_insights
from services.insights.settings import InsightsSettings
from services.loyalty.app import create_app as create_loyalty
from services.loyalty.settings import LoyaltySettings
from shared.auth import KeyVerifier, Role

DEMO = {"Authorization": "Bearer test-demo-key"}


def settings_for(cls, service_env, **overrides):
    fields = {k: v for k, v in service_env.items() if k in cls.model_fields}
    return cls(**{**fields, **overrides})


@pytest.fixture
def identity(service_env):
    app = create_identity(settings_for(IdentitySettings, service_env))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def insights(service_env):
    app = create_insights(settings_for(InsightsSettings, service_env))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def loyalty(service_env):
    """Loyalty with its clock idle: tests run its ticks at the instants they choose."""
    app = create_loyalty(settings_for(LoyaltySettings, service_env, clock_interval_s=3600))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def other_tenant_headers():
    return {"Authorization": f"Bearer {KeyVerifier('test-secret').issue('chain-b', Role.admin)}"}


@pytest.fixture
def read_only_headers():
    return {"Authorization": f"Bearer {KeyVerifier('test-secret').issue('demo', Role.marketing)}"}
