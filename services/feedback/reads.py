"""NPS for a store, staff member or service over a period, and which service steps the low scores came
from. The trend analytics (by week, by channel, across the chain) are insights' job."""
from __future__ import annotations

from datetime import datetime

from services.feedback import nps

FILTERS = ("store_id", "staff_id", "service_id")


def _where(tenant_id: str, filters: dict, start: datetime, end: datetime) -> tuple[str, list]:
    clauses, args = ["tenant_id = %s", "answered_at >= %s", "answered_at < %s"], [tenant_id, start, end]
    for name in FILTERS:
        if filters.get(name):
            clauses.append(f"{name} = %s")
            args.append(filters[name])
    return " and ".join(clauses), args


def score(cur, tenant_id: str, filters: dict, start: datetime, end: datetime) -> dict:
    where, args = _where(tenant_id, filters, start, end)
    cur.execute(f"select count(*) filter (where nps >= {nps.PROMOTER_MIN}), "
                f"count(*) filter (where nps > {nps.DETRACTOR_MAX} and nps < {nps.PROMOTER_MIN}), "
                f"count(*) filter (where nps <= {nps.DETRACTOR_MAX}), avg(csat), count(csat) "
                f"from responses where {where} and case_id is null", args)
    promoters, passives, detractors, csat, csat_count = cur.fetchone()
    return {**{k: v for k, v in filters.items() if v}, "from": start, "to": end,
            **nps.summary(promoters, passives, detractors),
            "csat": {"responses": csat_count, "average": None if csat is None else round(float(csat), 2)}}


def steps(cur, tenant_id: str, filters: dict, start: datetime, end: datetime) -> dict:
    """Per service step: how it was rated overall and in low answers, and how often a low answer rated it
    low — the step most often rated low in low answers is where to look first."""
    where, args = _where(tenant_id, filters, start, end)
    cur.execute(
        f"select s.key, count(*), avg(s.value::int), "
        f"count(*) filter (where {_low('r')}), avg(s.value::int) filter (where {_low('r')}), "
        f"count(*) filter (where {_low('r')} and s.value::int <= {nps.LOW_STEP_RATING}) "
        f"from responses r, jsonb_each_text(r.step_ratings) s where {where} "
        f"and r.case_id is null group by s.key", args)
    cur_steps = []
    for step, rated, average, rated_low, average_low, low_in_low in cur.fetchall():
        cur_steps.append({"step": step, "ratings": rated, "average": round(float(average), 2),
                          "ratings_in_low_answers": rated_low,
                          "average_in_low_answers": None if average_low is None else round(float(average_low), 2),
                          "rated_low_in_low_answers": low_in_low})
    cur_steps.sort(key=lambda s: (-s["rated_low_in_low_answers"], s["step"]))
    cur.execute(f"select count(*) filter (where {_low('responses')}) from responses where {where} and case_id is null",
                args)
    return {**{k: v for k, v in filters.items() if v}, "from": start, "to": end,
            "low_answers": cur.fetchone()[0], "steps": cur_steps}


def _low(alias: str) -> str:
    return f"({alias}.nps <= {nps.DETRACTOR_MAX} or {alias}.csat <= 2)"
