"""The churn backtest on a population whose future is known: regular groomers, some of whom stop
coming. Scores come from the live scoring code at the as-of instant; labels from what happened next."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.insights.backtest import Outcome, calibration, roc_auc, run_backtest
from services.insights.customers import Changes, CustomerBook
from services.insights.profile import Profile
from services.insights.schema import TOUCHPOINTS
from services.insights.settings import InsightsSettings
from services.insights.warehouse import Warehouse, touchpoint_row
from tests import timelines as t

from .conftest import settings_for

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def seed_population(warehouse: Warehouse, customers: int = 300, seed: int = 11) -> dict:
    """Each customer grooms every ~6 weeks from a random start; a third stop at a random point, some
    before the as-of date (overdue by then) and some after it (still regular then: hard to predict)."""
    rng = random.Random(seed)
    book, changes = CustomerBook(warehouse, clock=lambda: AS_OF), Changes()
    as_of_day = (AS_OF - t.T0).days
    stopped_before = 0
    for n in range(customers):
        customer_id = uuid.UUID(int=n + 1)
        profile = Profile("demo", str(customer_id))
        start = rng.uniform(-500, as_of_day - 60)
        stop = rng.uniform(start + 30, as_of_day + 120) if rng.random() < 0.35 else as_of_day + 400
        stopped_before += stop < as_of_day
        day = start
        while day < min(stop, as_of_day + 200):
            event = t.visit(day, customer_id, amount=rng.randint(15_000, 60_000))
            changes.rows[TOUCHPOINTS].append(touchpoint_row(event, ""))
            profile.apply_touchpoint(event)
            day += rng.gauss(42, 6)
        book.rescore(profile, changes, now=AS_OF + timedelta(days=200))
    warehouse.insert_many(changes.rows)
    return {"stopped_before": stopped_before}


def test_roc_auc_and_calibration_on_known_outcomes():
    perfect = [Outcome(0.9, True, True), Outcome(0.8, True, True), Outcome(0.2, False, True)]
    assert roc_auc(perfect) == 1.0
    assert roc_auc([Outcome(0.5, True, True), Outcome(0.5, False, True)]) == 0.5  # a tie is a coin flip
    assert roc_auc([Outcome(0.1, True, True), Outcome(0.9, False, True)]) == 0.0
    assert roc_auc([Outcome(0.1, True, True)]) is None
    table = calibration(perfect)
    assert [(r["from"], r["customers"], r["churned_rate"]) for r in table] == [(0.2, 1, 0.0), (0.8, 1, 1.0),
                                                                               (0.9, 1, 1.0)]


def test_risk_separates_customers_who_stopped_coming_from_those_who_return(service_env):
    warehouse = Warehouse.open(settings_for(InsightsSettings, service_env))
    seed_population(warehouse)
    result = run_backtest(warehouse, "demo", AS_OF, 90)
    paid = result["customers_with_paid_visit"]
    assert paid["customers"] >= 280
    assert 0.2 < paid["churn_rate"] < 0.45
    assert paid["roc_auc"] > 0.85           # who already stopped is overdue by the as-of date
    assert paid["precision"] > 0.8 and paid["recall"] > 0.4  # the rest stop after it: no signal yet
    assert result["learned_intervals"]["full_groom"] == pytest.approx(42, abs=4)
    assert sum(r["customers"] for r in paid["calibration"]) == paid["customers"]
    print(f"\nbacktest on the synthetic chain: {paid['roc_auc']=} {paid['precision']=} {paid['recall']=}")


def test_the_backtest_command_reads_the_embedded_engine_and_prints_json(tmp_path):
    path = tmp_path / "clickhouse"
    env = {**os.environ, "INSIGHTS_CLICKHOUSE_PATH": str(path), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", "from services.insights.warehouse import Warehouse\n"
                    "from tests.integration.test_insights_backtest import seed_population\n"
                    f"w = Warehouse(url=None, path={str(path)!r}, database='hub'); w.migrate()\n"
                    "seed_population(w, customers=120)"], check=True, env=env, cwd=ROOT, timeout=120)
    hub = Path(sys.executable).parent / "hub"
    done = subprocess.run([str(hub), "insights", "backtest", "--as-of", "2026-06-01", "--horizon", "90", "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["horizon_days"] == 90 and result["customers_with_paid_visit"]["customers"] >= 100
    assert result["customers_with_paid_visit"]["roc_auc"] > 0.8
    table = subprocess.run([str(hub), "insights", "backtest", "--as-of", "2026-06-01"], capture_output=True,
                           text=True, env=env, cwd=ROOT, timeout=120)
    assert "ROC AUC" in table.stdout and "Calibration" in table.stdout
