"""How well churn risk predicts "no paid visit within the horizon": every customer first seen before
`as_of` is scored by the live scoring code with `now = as_of` (the digest's later facts are invisible
to it) and return intervals learned only from visits before `as_of`; the label is whether a paid
visit followed within `horizon_days`. Reported for customers with a paid visit before `as_of` (the
ones churn is about) and for everyone."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.insights.profile import Profile
from services.insights.scoring import DAY, ScoringConfig, paid_visits, score
from services.insights.warehouse import Warehouse


@dataclass(frozen=True)
class Outcome:
    risk: float
    churned: bool     # no paid visit within the horizon
    had_paid_visit: bool


def outcomes(profiles, as_of: datetime, horizon_days: int, intervals: dict[str, float],
             config: ScoringConfig) -> list[Outcome]:
    cutoff, until = as_of.timestamp(), as_of.timestamp() + horizon_days * DAY
    found = []
    for profile in profiles:
        if profile.first_seen is None or profile.first_seen >= cutoff:
            continue  # not a customer yet on that date
        visits = paid_visits(profile, until)
        came_back = any(v.at > cutoff for v in visits)
        found.append(Outcome(score(profile, as_of, intervals, config).risk, not came_back,
                             any(v.at <= cutoff for v in visits)))
    return found


def roc_auc(outcomes: list[Outcome]) -> float | None:
    """Probability that a churner is scored above a returner (Mann-Whitney, ties counted half)."""
    ranked = sorted(outcomes, key=lambda o: o.risk)
    positives = sum(o.churned for o in ranked)
    negatives = len(ranked) - positives
    if not positives or not negatives:
        return None
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j].risk == ranked[i].risk:
            j += 1
        average_rank = (i + 1 + j) / 2
        rank_sum += average_rank * sum(o.churned for o in ranked[i:j])
        i = j
    return round((rank_sum - positives * (positives + 1) / 2) / (positives * negatives), 4)


def at_threshold(outcomes: list[Outcome], threshold: float) -> dict:
    flagged = [o for o in outcomes if o.risk >= threshold]
    true_positives = sum(o.churned for o in flagged)
    churners = sum(o.churned for o in outcomes)
    correct = true_positives + sum(not o.churned for o in outcomes if o.risk < threshold)
    return {"threshold": threshold, "flagged": len(flagged),
            "precision": round(true_positives / len(flagged), 4) if flagged else None,
            "recall": round(true_positives / churners, 4) if churners else None,
            "accuracy": round(correct / len(outcomes), 4) if outcomes else None}


def calibration(outcomes: list[Outcome], bins: int = 10) -> list[dict]:
    table = []
    for b in range(bins):
        members = [o for o in outcomes if min(int(o.risk * bins), bins - 1) == b]
        if members:
            table.append({"from": b / bins, "to": (b + 1) / bins, "customers": len(members),
                          "mean_risk": round(sum(o.risk for o in members) / len(members), 4),
                          "churned_rate": round(sum(o.churned for o in members) / len(members), 4)})
    return table


def report(outcomes_: list[Outcome], threshold: float) -> dict:
    return {"customers": len(outcomes_), "churn_rate": round(sum(o.churned for o in outcomes_) / len(outcomes_), 4)
            if outcomes_ else None, "roc_auc": roc_auc(outcomes_), **at_threshold(outcomes_, threshold),
            "calibration": calibration(outcomes_)}


def run_backtest(warehouse: Warehouse, tenant_id: str, as_of: datetime, horizon_days: int,
                 config: ScoringConfig | None = None) -> dict:
    """The backtest over every stored digest of the tenant (what the processors built from live and
    bulk-imported touchpoints)."""
    config = config or ScoringConfig()
    intervals = warehouse.learn_intervals(tenant_id, before=as_of)
    profiles = (Profile.loads(tenant_id, str(c), state) for rows in warehouse.state_pages(tenant_id)
                for _, c, state in rows)
    found = outcomes(profiles, as_of, horizon_days, intervals, config)
    return {"tenant_id": tenant_id, "as_of": as_of.isoformat(), "horizon_days": horizon_days,
            "horizon_ends": (as_of + timedelta(days=horizon_days)).isoformat(), "learned_intervals": intervals,
            "customers_with_paid_visit": report([o for o in found if o.had_paid_visit], config.risk_high),
            "all_customers": report(found, config.risk_high)}
