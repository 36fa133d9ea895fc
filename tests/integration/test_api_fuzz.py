"""Schemathesis over every service's own OpenAPI document, against the real stack: each service runs
under uvicorn in this process over Postgres, the broker and ClickHouse, with a little data seeded so that
generated ids sometimes name real resources, and every operation is called with an admin key of the
seeded tenant. Every answer must be no server error (5xx) and must keep the document's promise: a
documented status code, the documented content type and headers, and a body matching the schema.

The budget is kept small for `make test`; raise it for a long hunt with HUB_FUZZ_EXAMPLES (examples per
operation in schemathesis' fuzzing phase; its examples and coverage phases run as well), e.g.

    HUB_FUZZ_EXAMPLES=300 .venv/bin/pytest -q tests/integration/test_api_fuzz.py
"""
from __future__ import annotations

import os
import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.booking.app import create_app as booking
from services.booking.settings import BookingSettings
from services.feedback.app import create_app as feedback
from services.feedback.settings import FeedbackSettings
from services.identity.app import create_app as identity
from services.identity.settings import IdentitySettings
from services.insights.app import create_app as insights
from services.insights.settings import InsightsSettings
from services.loyalty.app import create_app as loyalty
from services.loyalty.settings import LoyaltySettings
from shared.auth import KeyVerifier, Role

from tests.conftest import serve_in_thread

from .conftest import DEMO, settings_for

EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "10"))
SECRET = "test-secret"
ADMIN = {"Authorization": f"Bearer {KeyVerifier(SECRET).issue('demo', Role.admin)}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# The coverage phase would also call each path with methods it lacks; only the `unsupported_method` check
# judges those answers (405s), and it is not among ours, so they would cost time and test nothing here.
CONFIG = schemathesis.Config.from_dict({"phases": {"coverage": {"unexpected-methods": []}}})
# (create_app, settings class, overrides): clocks idle and insights' processors off, so that only the
# fuzzer's requests change anything.
SERVICES = {
    "identity": (identity, IdentitySettings, {}),
    "booking": (booking, BookingSettings, {"clock_interval_s": 3600}),
    "loyalty": (loyalty, LoyaltySettings, {"clock_interval_s": 3600}),
    "feedback": (feedback, FeedbackSettings, {"clock_interval_s": 3600}),
    "insights": (insights, InsightsSettings, {"run_processors": False}),
}
KNOWN: dict[str, dict[str, list[str]]] = {}  # service -> parameter name -> seeded ids, filled by seeding
# Schemathesis' own generation draws from `random` inside strategies; Hypothesis warns about that (its
# concern, not the API's).
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")


def _service_of(operation) -> str:
    return operation.schema.raw_schema["info"]["title"].rsplit(" ", 1)[-1]


def _with_real_ids(ctx, values):
    """Keep the generated values, or name seeded resources in the parameters that hold ids."""
    known = KNOWN.get(_service_of(ctx.operation), {}) if ctx.operation else {}
    real = {name: st.sampled_from(known[name]) for name in (values or {}) if name in known}
    if not real:
        return st.just(values)
    return st.one_of(st.just(values), st.fixed_dictionaries(real).map(lambda ids: {**values, **ids}))


def _schema(name: str):
    """The document the service serves, from an app that is never started (it needs no engines)."""
    create, cls, _ = SERVICES[name]
    document = create(cls(auth_secret=SECRET, demo_api_key="")).openapi()
    schema = schemathesis.openapi.from_dict(document, config=CONFIG)
    schema.hook("flatmap_path_parameters")(_with_real_ids)
    schema.hook("flatmap_query")(_with_real_ids)
    return schema


class Served:
    """A service on a free port under uvicorn, in a thread of this process (its lifespan migrates the
    database and starts its consumers, as in production)."""

    def __init__(self, app):
        self.app = app
        self.server, self.thread, self.port = serve_in_thread(app, "fuzz-uvicorn", timeout_s=120)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=60)
        self.client.app = app  # the seeding helpers reach consumers' handlers through it

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(60)


def _seed_identity(client) -> dict:
    from .helpers import resolved_customer

    customer_id = resolved_customer(client, "+8613900000777", DEMO)
    erased = resolved_customer(client, "+8613900000778", DEMO)
    request_id = client.post(f"/v1/customers/{erased}/erasure", headers=DEMO).json()["request_id"]
    subscription = client.post("/v1/subscriptions", headers=DEMO, json={
        "url": "https://crm.example.com/hook", "event_types": ["customer.lifecycle_changed"],
        "purpose": "marketing_sms"}).json()
    return {"customer_id": [customer_id, erased], "request_id": [request_id],
            "subscription_id": [subscription["subscription_id"]], "event_type": ["customer.created"]}


def _seed_booking(client) -> dict:
    from .booking_setup import hold, local_day, setup_store

    setup_store(client)
    held = hold(client, local_day("Asia/Shanghai"), "10:00")
    assert held.status_code == 201, held.text
    return {"appointment_id": [held.json()["appointment_id"]], "store_id": ["s1"], "staff_id": ["g1"],
            "resource_id": ["s1-tables"], "service_id": ["full-groom"]}


def _seed_loyalty(client) -> dict:
    from .loyalty_setup import deliver, purchase

    customer_id = uuid.uuid4()
    deliver(client, purchase(customer_id, 250_000))
    held = client.post("/v1/redemptions", headers=DEMO, json={"customer_id": str(customer_id), "points": 100})
    assert held.status_code == 201, held.text
    return {"customer_id": [str(customer_id)], "redemption_id": [held.json()["redemption_id"]]}


def _seed_feedback(client) -> dict:
    from .test_feedback import complaint, deliver

    customer_id = uuid.uuid4()
    deliver(client, complaint(customer_id, store_id="fb-1"))
    [case] = client.get("/v1/cases", headers=DEMO, params={"store_id": "fb-1"}).json()["items"]
    return {"case_id": [str(case["case_id"])], "store_id": ["fb-1"], "customer_id": [str(customer_id)]}


def _seed_insights(client) -> dict:
    from .insights_data import seed_dashboard

    warehouse = client.app.state.warehouse
    seeded = seed_dashboard(warehouse)
    _, [(event_id,)] = warehouse.query("SELECT any(event_id) FROM {db}.touchpoints")
    return {"event_id": [str(event_id)], "customer_id": [str(c) for c in seeded["customers"].values()],
            "store_id": ["sh-jingan"]}


SEED = {"identity": _seed_identity, "booking": _seed_booking, "loyalty": _seed_loyalty,
        "feedback": _seed_feedback, "insights": _seed_insights}


class Stack:
    """Starts a service when its first operation is tested, and stops the one before: the operations
    come grouped by service, so each starts once and only one runs at a time."""

    def __init__(self, env_for):
        self.env_for, self.name, self.served = env_for, None, None
        self.broken: dict[str, str] = {}  # service -> why it could not be started and seeded

    def serve(self, name: str) -> Served:
        if name in self.broken:  # each of its operations fails fast, with the first error
            pytest.fail(f"{name} could not be started and seeded: {self.broken[name]}")
        if name != self.name:
            self.stop()
            create, cls, overrides = SERVICES[name]
            try:
                self.served = Served(create(settings_for(cls, self.env_for(name), **overrides)))
                KNOWN[name] = SEED[name](self.served.client)
            except Exception as exc:
                self.broken[name] = repr(exc)
                self.stop()
                raise
            self.name = name
        return self.served

    def stop(self) -> None:
        if self.served is not None:
            self.served.stop()
        self.name = self.served = None


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, database_janitor, kafka_bootstrap, clickhouse_target, tmp_path_factory):
    """Like `service_env`, once per service for the whole module: its own database, topics and ClickHouse
    database."""
    from tests.conftest import create_database

    def env_for(service: str) -> dict:
        database, url = create_database(pg_admin_dsn)
        databases.append(database)
        return {
            "database_url": url, "kafka_bootstrap_servers": kafka_bootstrap,
            "topic_prefix": f"t{uuid.uuid4().hex[:10]}.", "demo_api_key": "test-demo-key", "auth_secret": SECRET,
            "clickhouse_url": clickhouse_target["url"], "clickhouse_path": clickhouse_target["path"],
            "clickhouse_database": f"t_{uuid.uuid4().hex[:12]}",
            "data_dir": str(tmp_path_factory.mktemp(f"faust-{service}")), "consumer_session_timeout_ms": 6000,
        }

    databases: list[str] = []
    running = Stack(env_for)
    yield running
    running.stop()
    for database in databases:
        database_janitor.names.put(database)


def pytest_generate_tests(metafunc):
    # The caller, as a parameter: it also gives each operation's item a node id of its own, which
    # schemathesis' items lack under pytest >= 9.2 (it names them all after the bare function).
    metafunc.parametrize("caller", [ADMIN], ids=["admin"])


@schemathesis.pytest.parametrize(**{name: _schema(name) for name in SERVICES})
@settings(max_examples=EXAMPLES, deadline=None,  # a shared machine: no per-example time limit
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_operation_answers_within_its_own_schema_and_never_with_a_server_error(case, caller, stack):
    served = stack.serve(_service_of(case.operation))
    case.call_and_validate(base_url=served.url, headers=caller, checks=CHECKS)
