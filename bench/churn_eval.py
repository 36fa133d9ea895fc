"""Churn-risk quality on public transaction data, against the standard probabilistic model.

Each dataset's transactions become purchase or service touchpoints, are folded into digests and stored
in an embedded ClickHouse exactly as the processors do it, and `run_backtest` (what
`hub insights backtest` runs) scores every customer as of a date with only what came before. The
label is "no paid visit within the horizon". The baseline is BG/NBD (Fader, Hardie & Lee 2005), fitted
by the `lifetimes` package on the same customers' history before the date; its score is the
probability of no purchase within the horizon.

  cdnow     CDNOW master (23,570 customers of an online music retailer, 1997-01..1998-06; shipped
            inside the lifetimes package): as of 1997-10-01, horizon 273 days (the classic
            39-week calibration and holdout split)
  example   lifetimes' example transactions (5,000 customers in 2014): as of 2014-09-01, horizon 120
  groomers  a synthetic grooming chain: every ~6 weeks from a random start, 35 % stop at a random
            point: as of 2026-06-01, horizon 90

Needs the eval extra (`.venv/bin/pip install -e '.[eval]'`: lifetimes, with numpy, scipy, pandas).
Prints a table and writes bench/churn_eval.json. Usage: python -m bench.churn_eval [--dataset NAME]
"""
from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from bench.common import ROOT, git_commit, uncommitted_files
from services.insights.backtest import Outcome, at_threshold, roc_auc, run_backtest
from services.insights.customers import Changes, CustomerBook
from services.insights.profile import Profile
from services.insights.schema import TOUCHPOINTS
from services.insights.scoring import DAY, ScoringConfig, paid_visits
from services.insights.warehouse import Warehouse, touchpoint_row
from shared.events import from_document

TENANT = "eval"


@dataclass(frozen=True)
class Sale:
    customer: str
    at: datetime
    amount_minor: int
    category: str | None = None  # None: a retail purchase; else a service of that category


@dataclass(frozen=True)
class Dataset:
    name: str
    sales: list[Sale]
    as_of: datetime
    horizon_days: int
    source: str


def _lifetimes_file(name: str) -> str:
    return (resources.files("lifetimes.datasets") / name).read_text()


def cdnow() -> Dataset:
    sales = []
    for line in _lifetimes_file("CDNOW_master.txt").splitlines()[1:]:  # after the header
        customer, day, _cds, dollars = line.split()
        sales.append(Sale(customer, datetime.strptime(day, "%Y%m%d").replace(hour=12, tzinfo=UTC),
                          round(float(dollars) * 100)))
    return Dataset("cdnow", sales, datetime(1997, 10, 1, tzinfo=UTC), 273,
                   "CDNOW_master.txt from the lifetimes package")


def example() -> Dataset:
    sales = []
    for line in _lifetimes_file("example_transactions.csv").splitlines()[1:]:
        day, customer = line.split(",")
        sales.append(Sale(customer, datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC), 1_000))
    return Dataset("example", sales, datetime(2014, 9, 1, tzinfo=UTC), 120,
                   "example_transactions.csv from the lifetimes package (no amounts: 10.00 each)")


def groomers(customers: int = 3_000, seed: int = 11) -> Dataset:
    rng, as_of = random.Random(seed), datetime(2026, 6, 1, tzinfo=UTC)
    sales = []
    for n in range(customers):
        start = rng.uniform(-500, -60)
        stop = rng.uniform(start + 30, 120) if rng.random() < 0.35 else 400
        day = start
        while day < min(stop, 200):
            sales.append(Sale(f"c{n}", as_of + timedelta(days=day), rng.randint(15_000, 60_000), "full_groom"))
            day += rng.gauss(42, 6)
    return Dataset("groomers", sales, as_of, 90, "synthetic: a ~42-day rhythm, 35 % stop at a random point")


DATASETS = {"cdnow": cdnow, "example": example, "groomers": groomers}


def touchpoint(sale: Sale, n: int):
    envelope = {"event_id": str(uuid.uuid4()), "occurred_at": sale.at.isoformat(), "recorded_at": sale.at.isoformat(),
                "tenant_id": TENANT, "source": "import", "channel": "pos", "store_id": "s1",
                "customer_id": str(uuid.uuid5(uuid.NAMESPACE_OID, sale.customer)),
                "identifiers": [{"type": "source_record", "value": sale.customer}]}
    if sale.category is None:
        return from_document({**envelope, "type": "purchase.completed", "schema_version": 2, "payload": {
            "order_id": f"o{n}", "amount_minor": sale.amount_minor}})
    return from_document({**envelope, "type": "service.performed", "payload": {
        "service_ids": [sale.category.replace("_", "-")], "service_category": sale.category,
        "amount_minor": sale.amount_minor}})


def stored_profiles(dataset: Dataset, warehouse: Warehouse) -> list[Profile]:
    """The touchpoints and digests as the processors store them (scored as of the horizon's end)."""
    book, changes, profiles = CustomerBook(warehouse, clock=lambda: dataset.as_of), Changes(), {}
    for n, sale in enumerate(dataset.sales):
        event = touchpoint(sale, n)
        changes.rows[TOUCHPOINTS].append(touchpoint_row(event, ""))
        profiles.setdefault(sale.customer, Profile(TENANT, str(event.customer_id))).apply_touchpoint(event)
    end = dataset.as_of + timedelta(days=dataset.horizon_days)
    for profile in profiles.values():
        book.rescore(profile, changes, now=end)
    warehouse.insert_many(changes.rows)
    return list(profiles.values())


def bgnbd(profiles: list[Profile], as_of: datetime, horizon_days: int) -> dict:
    """BG/NBD on each customer's paid-visit days before `as_of` (weeks), scored by the probability of
    no purchase within the horizon: P(X(h) = 0) = (1 - P(alive)) + P(alive) ((α+T)/(α+T+h))^(r+x)."""
    import numpy as np
    from lifetimes import BetaGeoFitter

    t, until = as_of.timestamp(), as_of.timestamp() + horizon_days * DAY
    x, recency, age, churned = [], [], [], []
    for profile in profiles:
        visits = paid_visits(profile, until)
        days = sorted({math.floor(v.at / DAY) for v in visits if v.at <= t})
        if not days:
            continue  # the backtest's "customers with a paid visit", the population BG/NBD describes
        x.append(len(days) - 1)
        recency.append((days[-1] - days[0]) / 7)
        age.append((t / DAY - days[0]) / 7)
        churned.append(not any(t < v.at <= until for v in visits))
    x, recency, age, churned = (np.array(a, dtype=float) for a in (x, recency, age, churned))
    with warnings.catch_warnings():  # lifetimes' standard errors take square roots of negative variances
        warnings.simplefilter("ignore", RuntimeWarning)
        fitter = BetaGeoFitter(penalizer_coef=0.0).fit(x, recency, age)
    r, alpha = fitter.params_["r"], fitter.params_["alpha"]
    alive = fitter.conditional_probability_alive(x, recency, age)
    no_purchase = (1 - alive) + alive * ((alpha + age) / (alpha + age + horizon_days / 7)) ** (r + x)
    # scored with the backtest's own measures
    scored = [Outcome(float(risk), bool(c), True) for risk, c in zip(no_purchase, churned)]
    return {"params": {k: round(float(v), 4) for k, v in fitter.params_.items()}, "customers": len(x),
            "roc_auc": roc_auc(scored),
            **{f"accuracy_at_{th}": at_threshold(scored, th)["accuracy"] for th in (0.5, 0.7)}}


def evaluate(dataset: Dataset) -> dict:
    with tempfile.TemporaryDirectory(prefix="churn-eval-") as work:
        warehouse = Warehouse(url=None, path=str(Path(work) / "clickhouse"), database="hub")
        warehouse.migrate()
        try:
            profiles = stored_profiles(dataset, warehouse)
            ours = run_backtest(warehouse, TENANT, dataset.as_of, dataset.horizon_days)["customers_with_paid_visit"]
        finally:
            warehouse.close()
    threshold = ScoringConfig().risk_high
    return {"source": dataset.source, "transactions": len(dataset.sales), "as_of": dataset.as_of.date().isoformat(),
            "horizon_days": dataset.horizon_days,
            "hub": {"customers": ours["customers"], "churn_rate": ours["churn_rate"], "roc_auc": ours["roc_auc"],
                    f"accuracy_at_{threshold}": ours["accuracy"], f"precision_at_{threshold}": ours["precision"],
                    f"recall_at_{threshold}": ours["recall"], "calibration": ours["calibration"]},
            "bgnbd": bgnbd(profiles, dataset.as_of, dataset.horizon_days)}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS), help="Default: all.")
    args = parser.parse_args()
    results = {name: evaluate(DATASETS[name]()) for name in args.dataset or DATASETS}
    print(f"{'dataset':10} {'customers':>9} {'churn':>6} {'hub AUC':>8} {'BG/NBD AUC':>10} "
          f"{'hub acc@0.7':>11} {'BG/NBD acc@0.5':>14}")
    for name, r in results.items():
        print(f"{name:10} {r['hub']['customers']:>9} {r['hub']['churn_rate']:>6} {r['hub']['roc_auc']:>8} "
              f"{r['bgnbd']['roc_auc']:>10} {r['hub']['accuracy_at_0.7']:>11} {r['bgnbd']['accuracy_at_0.5']:>14}")
    out = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "commit": git_commit(),
           "uncommitted_files_outside_bench": uncommitted_files(), "label": "no paid visit within the horizon",
           "datasets": results}
    (ROOT / "bench" / "churn_eval.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
