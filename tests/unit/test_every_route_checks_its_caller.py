"""Walks every HTTP route of every service: each one either is on the short list of open routes (health,
docs, metrics, and the survey link a customer opens; the dashboard's static page is not in the API) or answers 401 without a
key, 401 with a forged one, and 403 to every role it does not allow, before its handler runs (the apps
are not started: a handler that ran would fail for want of a database)."""
from __future__ import annotations

import re
import uuid

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from services.booking.app import create_app as booking
from services.feedback.app import create_app as feedback
from services.identity.app import create_app as identity
from services.insights.app import create_app as insights
from services.loyalty.app import create_app as loyalty
from shared.auth import KeyVerifier, Role

SECRET = "route-walk-secret"
OPEN = {  # (method, path) anyone may call, and why
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),  # probes and scraping
    ("GET", "/v1/surveys/{token}"), ("POST", "/v1/surveys/{token}/responses"),  # the token is the credential
}
APPS = {"identity": identity, "booking": booking, "loyalty": loyalty, "feedback": feedback, "insights": insights}


def routes(app) -> list[tuple[str, str, object]]:
    """(method, path, dependant) of every documented route; FastAPI may keep included routers as
    lazily expanded groups, so both shapes are walked."""
    found = []
    for route in app.routes:
        contexts = route.effective_candidates() if hasattr(route, "effective_candidates") else [route]
        for ctx in contexts:
            if isinstance(ctx, Route) and not isinstance(ctx, APIRoute):
                continue  # docs pages from Starlette
            if getattr(ctx, "include_in_schema", False) or ctx.path == "/metrics":
                found += [(method, ctx.path, ctx.dependant) for method in sorted(ctx.methods)]
    return found


def allowed_roles(dependant) -> set[Role] | None:
    """The roles of the route's `require(...)` dependency, found in its dependency tree."""
    stack = [dependant]
    while stack:
        dependant = stack.pop()
        call = dependant.call
        if call is not None and call.__name__ == "check" and call.__closure__:
            for cell in call.__closure__:
                if isinstance(cell.cell_contents, set) and all(isinstance(r, Role) for r in cell.cell_contents):
                    return cell.cell_contents
        stack.extend(dependant.dependencies)
    return None


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


@pytest.fixture(scope="module")
def clients():
    made = {}
    for name, create in APPS.items():
        settings_cls = create.__globals__[f"{name.capitalize()}Settings"]
        app = create(settings_cls(auth_secret=SECRET, demo_api_key=""))
        made[name] = TestClient(app, raise_server_exceptions=False)  # not entered: no lifespan, no database
    return made


CASES = [(name, method, path) for name, create in APPS.items() for method, path, _ in routes(
    create(create.__globals__[f"{name.capitalize()}Settings"](auth_secret=SECRET, demo_api_key="")))]


def test_every_service_has_routes_to_walk_and_every_open_route_exists():
    assert {name for name, _, _ in CASES} == set(APPS) and len(CASES) > 100
    assert OPEN <= {(method, path) for _, method, path in CASES}


@pytest.mark.parametrize(("service", "method", "path"), CASES, ids=[f"{s} {m} {p}" for s, m, p in CASES])
def test_the_route_refuses_callers_it_does_not_allow(clients, service, method, path):
    client = clients[service]
    route = next(r for m, p, r in routes(client.app) if (m, p) == (method, path))
    roles = allowed_roles(route)
    if (method, path) in OPEN:
        assert roles is None, f"{method} {path} is listed open but requires a key"
        return
    assert roles, f"{method} {path} has no require(...) dependency: anyone could call it"
    url = concrete(path)
    assert client.request(method, url).status_code == 401
    assert client.request(method, url, headers={"Authorization": "Bearer forged"}).status_code == 401
    other_secret = KeyVerifier("another-secret").issue("demo", Role.admin)
    assert client.request(method, url, headers={"Authorization": f"Bearer {other_secret}"}).status_code == 401
    for role in set(Role) - roles:
        key = KeyVerifier(SECRET).issue("demo", role)
        response = client.request(method, url, headers={"Authorization": f"Bearer {key}"}, json={})
        assert response.status_code == 403, (role, response.status_code, response.text[:200])
