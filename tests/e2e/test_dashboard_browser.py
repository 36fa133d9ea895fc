"""The ops dashboard page in headless Chromium (Debian's, driven by playwright; no browser download),
against the insights app served by uvicorn in this process over the real ClickHouse engine.

    apt-get install -y chromium      # then: pytest tests/e2e/test_dashboard_browser.py
"""
from __future__ import annotations

import shutil
import time
import uuid
from datetime import date, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from services.insights.app import create_app
from services.insights.settings import InsightsSettings
from shared.auth import KeyVerifier, Role
from tests.conftest import serve_in_thread

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed: apt-get install chromium")

TENANT = "dashboard-e2e"
SECRET = "test-secret"
CHART_PANELS = ("panel-nps", "panel-funnel", "panel-churn", "panel-channels", "panel-complaints", "panel-tiers")
FILTERED = ("nps", "funnel", "churn", "channels", "complaints", "tiers")  # the endpoints a filter change re-queries


class Served:
    """The insights app on a free port, in a thread of this process (the embedded engine allows one data
    directory per process, so it shares the session's)."""

    def __init__(self, settings: InsightsSettings):
        self.app = create_app(settings)

    def __enter__(self):
        self.server, self.thread, self.port = serve_in_thread(self.app, "insights-uvicorn")
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def served(clickhouse_target, tmp_path_factory):
    from tests.integration.insights_data import seed_dashboard

    settings = InsightsSettings(
        clickhouse_url=clickhouse_target["url"], clickhouse_path=clickhouse_target["path"],
        clickhouse_database=f"t_{uuid.uuid4().hex[:12]}", run_processors=False, auth_secret=SECRET,
        demo_api_key=None, data_dir=str(tmp_path_factory.mktemp("faust")))
    with Served(settings) as s:
        s.seeded = seed_dashboard(s.app.state.warehouse, TENANT)
        s.key = KeyVerifier(SECRET).issue(TENANT, Role.ops)
        yield s


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    tab.errors = []
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    yield tab
    context.close()


def loaded(page, renders_above: int = 0) -> str:
    """Wait until a load has finished (ready or error) after panels rendered more than `renders_above`
    times; returns the state."""
    page.wait_for_function(
        "n => ['ready', 'error'].includes(document.body.dataset.state) && "
        "(n === 0 || Number(document.querySelector('#panel-nps').dataset.renders || 0) > n)", arg=renders_above)
    return page.evaluate("document.body.dataset.state")


def renders(page) -> dict[str, int]:
    return page.evaluate("""ids => Object.fromEntries(ids.map(id =>
        [id, Number(document.getElementById(id).dataset.renders || 0)]))""",
        [*CHART_PANELS, "panel-at-risk"])


def is_churn(response) -> bool:
    return urlsplit(response.url).path == "/v1/dashboard/churn"


def test_the_dashboard_renders_every_panel_filters_by_store_and_drills_into_a_customer(served, page, tmp_path):
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    started = time.monotonic()
    with page.expect_response(is_churn) as first_churn:
        page.goto(f"{served.url}/dashboard?key={served.key}")
    assert loaded(page) == "ready", page.inner_text("#error")
    print(f"first load ready after {time.monotonic() - started:.1f} s")
    assert "key=" not in page.url, "the key is taken out of the address bar"
    assert page.evaluate("localStorage.getItem('hub.dashboard.apiKey')") == served.key
    assert page.is_hidden("#error")
    assert page.inner_text("#updated-at").startswith("Updated ")

    # Every panel rendered; over a period reaching back to all the seeded history, every one shows data.
    for panel in CHART_PANELS:
        assert page.locator(f"#{panel} .main-svg").count() > 0, f"{panel} has no chart"
    end = date.fromisoformat(page.input_value("#f-to"))
    assert date.fromisoformat(page.input_value("#f-from")) == end - timedelta(days=89)
    before = renders(page)
    page.fill("#f-from", (end - timedelta(days=420)).isoformat())
    assert loaded(page, before["panel-nps"]) == "ready", page.inner_text("#error")
    for panel in CHART_PANELS:
        assert "No data for these filters" not in page.inner_text(f"#{panel}"), f"{panel} is empty"
    rows = page.locator("#panel-at-risk tbody tr[data-customer-id]")
    assert rows.count() > 0
    at_risk_id = served.seeded["at_risk_customer_id"]
    assert at_risk_id in [rows.nth(i).get_attribute("data-customer-id") for i in range(rows.count())]
    assert "Click an at-risk customer" in page.inner_text("#panel-customer")

    # The store filter lists the seeded stores and re-queries every panel with the chosen one.
    store_ids = served.seeded["store_ids"]
    options = page.eval_on_selector_all("#f-store option", "os => os.map(o => o.value)")
    assert options[0] == "" and set(store_ids) <= set(options[1:])
    home = next((c["home_store_id"] for c in first_churn.value.json()["at_risk"] if c["customer_id"] == at_risk_id), "")
    store = home if home in store_ids else store_ids[0]
    before = renders(page)
    requests.clear()
    with page.expect_response(is_churn) as store_churn:
        page.select_option("#f-store", store)
    assert loaded(page, before["panel-nps"]) == "ready", page.inner_text("#error")
    queried = {}
    for url in requests:
        parts = urlsplit(url)
        if parts.path.startswith("/v1/dashboard/"):
            queried[parts.path.rsplit("/", 1)[1]] = parse_qs(parts.query).get("store_id")
    assert {name: queried.get(name) for name in FILTERED} == {name: [store] for name in FILTERED}
    after = renders(page)
    assert all(after[p] > before[p] for p in after), f"not re-rendered: {before} -> {after}"

    # Drill down into the first at-risk customer of that store.
    listed = store_churn.value.json()["at_risk"]
    assert listed, f"no at-risk customer in store {store}"
    first = listed[0]
    first_row = page.locator("#panel-at-risk tbody tr[data-customer-id]").first
    assert first_row.get_attribute("data-customer-id") == first["customer_id"]
    first_row.click()
    page.wait_for_selector(f"#panel-customer[data-state=ready][data-customer-id='{first['customer_id']}']")
    shown = page.inner_text("#panel-customer")
    assert first["customer_id"] in shown and first["stage"] in shown
    assert first["reasons"], "an at-risk customer has reasons"
    reasons = page.eval_on_selector_all("#panel-customer li", "items => items.map(i => i.textContent)")
    assert reasons == first["reasons"]
    assert "stage transitions" in shown.lower() and "recent touchpoints" in shown.lower()

    screenshot = tmp_path / "dashboard.png"  # a look at it: pytest --basetemp=DIR keeps it
    page.screenshot(path=str(screenshot), full_page=True)
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000, f"{len(data)} bytes"
    assert not page.errors, page.errors


def test_a_period_that_ends_before_it_starts_shows_the_apis_detail(served, page):
    page.goto(f"{served.url}/dashboard?key={served.key}")
    assert loaded(page) == "ready", page.inner_text("#error")
    end = date.fromisoformat(page.input_value("#f-to"))
    with page.expect_response(lambda r: urlsplit(r.url).path == "/v1/dashboard/nps") as nps:
        page.fill("#f-from", (end + timedelta(days=7)).isoformat())
    assert loaded(page) == "error"
    assert 400 <= nps.value.status < 500
    detail = nps.value.json()["detail"]
    assert page.is_visible("#error")
    assert detail in page.inner_text("#error")
    assert not page.errors, page.errors
