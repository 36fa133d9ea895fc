"""The ops dashboard's JSON API (read by the page, by Grafana-less tools and scripts): NPS trend, lifecycle
funnel, churn-risk distribution and the at-risk list with a drill-down, channel performance, complaint
SLAs and the loyalty tier mix. Periods are store-local dates (the default zone when no store is chosen);
customer panels filter on the customer's home store and first channel."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from services.insights.profile import FUNNEL
from shared.auth import CallerOps, CallerRead
from shared.events.base import Channel, Slug
from shared.timezones import IanaZone

routes = APIRouter(prefix="/v1/dashboard", tags=["dashboard"])
stores = APIRouter(prefix="/v1/stores", tags=["stores"])

MAX_PERIOD_DAYS = 3 * 366
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2149, 6, 5)  # ClickHouse's Date range (the day after the last fits)
UNKNOWN_STORE = {404: {"description": "Unknown store: not configured and never seen in touchpoints"}}
FromDate = Annotated[date | None, Query(alias="from", description="First store-local day (default: 90 days ago).")]
ToDate = Annotated[date | None, Query(alias="to", description="Last store-local day (default: today).")]
StoreFilter = Annotated[Slug | None, Query(description="One store; none: the whole chain.")]
ChannelFilter = Annotated[Channel | None, Query(description="Customers first seen through this channel.")]


class Scope:
    """Tenant, store, zone and period of one dashboard request, checked."""

    def __init__(self, request: Request, tenant_id: str, store_id: str | None, start: date | None, end: date | None,
                 channel: Channel | None = None):
        warehouse = request.app.state.warehouse
        configured = warehouse.stores(tenant_id)
        zone = request.app.state.settings.default_timezone
        if store_id:
            if (tenant_id, store_id) in configured:
                zone = configured[(tenant_id, store_id)][1]
            elif store_id not in _seen_stores(warehouse, tenant_id):
                raise HTTPException(404, f"unknown store {store_id!r}: not configured and never seen in touchpoints")
        self.zone = ZoneInfo(zone)
        today = datetime.now(self.zone).date()
        self.end = end or today
        if any(day is not None and not FIRST_DAY <= day <= LAST_DAY for day in (start, self.end)):
            raise HTTPException(422, f"the period must lie within {FIRST_DAY}..{LAST_DAY}")
        self.start = start or max(self.end - timedelta(days=89), FIRST_DAY)
        if self.start > self.end:
            raise HTTPException(422, f"the period starts ({self.start}) after it ends ({self.end})")
        if (self.end - self.start).days > MAX_PERIOD_DAYS:
            raise HTTPException(422, f"a period may span at most {MAX_PERIOD_DAYS} days")
        self.tenant_id, self.store_id, self.channel, self.warehouse = tenant_id, store_id, channel, warehouse

    @property
    def utc_range(self) -> tuple[datetime, datetime]:
        """The period's local days as UTC instants [start, end) — DST days have 23 or 25 hours."""
        return (datetime.combine(self.start, time(), self.zone),
                datetime.combine(self.end + timedelta(days=1), time(), self.zone))

    def params(self, **more) -> dict:
        start, end = self.utc_range
        return {"tenant": self.tenant_id, "store": self.store_id or "", "channel": self.channel or "",
                "day_from": self.start, "day_to": self.end, "utc_from": start, "utc_to": end, **more}

    def customer_filter(self, period: bool = False) -> str:
        """WHERE conditions on customer_scores for this scope."""
        where = ["tenant_id = {tenant:String}", "deleted = 0"]
        if self.store_id:
            where.append("home_store_id = {store:String}")
        if self.channel:
            where.append("first_channel = {channel:String}")
        if period:
            where.append("first_seen_at >= {utc_from:DateTime64(3)} AND first_seen_at < {utc_to:DateTime64(3)}")
        return " AND ".join(where)

    def query(self, sql: str, **more) -> list[dict]:
        columns, rows = self.warehouse.query(sql, self.params(**more))
        return [dict(zip(columns, row)) for row in rows]


def _seen_stores(warehouse, tenant_id: str) -> set[str]:
    _, rows = warehouse.query(
        "SELECT DISTINCT home_store_id FROM {db}.customer_scores WHERE tenant_id = {t:String} UNION DISTINCT "
        "SELECT DISTINCT store_id FROM {db}.survey_answers WHERE tenant_id = {t:String}", {"t": tenant_id})
    return {s for (s,) in rows if s}


def _nps(promoters: int, passives: int, detractors: int) -> float | None:
    answered = promoters + passives + detractors
    return round(100 * (promoters - detractors) / answered, 1) if answered else None


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def _in_thread(fn, *args):
    return await run_in_threadpool(fn, *args)


# --- stores ---
class StoreConfig(BaseModel):
    name: str = ""
    timezone: IanaZone


@stores.put("/{store_id}", summary="Name a store and set its IANA zone (dashboard dates are store-local)")
async def put_store(store_id: Slug, body: StoreConfig, request: Request, caller: CallerOps) -> dict:
    await _in_thread(request.app.state.warehouse.save_store, caller.tenant_id, store_id, body.name, body.timezone)
    if (processor := request.app.state.processor) is not None:  # this process scores: use the zone from now on
        await _in_thread(processor.hub_book.refresh_zones)
    return {"store_id": store_id, **body.model_dump()}


@routes.get("/stores", summary="Stores to filter by: configured ones and any seen in the data")
async def list_stores(request: Request, caller: CallerRead) -> dict:
    def read():
        warehouse = request.app.state.warehouse
        configured = {s: v for (t, s), v in warehouse.stores(caller.tenant_id).items()}
        ids = sorted(set(configured) | _seen_stores(warehouse, caller.tenant_id))
        default = request.app.state.settings.default_timezone
        return {"stores": [{"store_id": s, "name": configured.get(s, (s, default))[0] or s,
                            "timezone": configured.get(s, ("", default))[1]} for s in ids],
                "default_timezone": default}
    return await _in_thread(read)


# --- NPS ---
_GRAIN = {"day": "local_date", "week": "toMonday(local_date)", "month": "toStartOfMonth(local_date)"}


@routes.get("/nps", responses=UNKNOWN_STORE, summary="NPS trend: promoters, passives, detractors and score per store-local day, week or month")
async def nps_trend(request: Request, caller: CallerRead, store_id: StoreFilter = None, start: FromDate = None,
                    end: ToDate = None, grain: Literal["day", "week", "month"] = "week",
                    staff_id: Slug | None = None, service_id: Slug | None = None) -> dict:
    def read():
        scope = Scope(request, caller.tenant_id, store_id, start, end)
        where = ["tenant_id = {tenant:String}", "local_date BETWEEN {day_from:Date} AND {day_to:Date}"]
        where += [f"{col} = {{{col}:String}}" for col, value in (("store_id", store_id), ("staff_id", staff_id),
                                                                  ("service_id", service_id)) if value]
        rows = scope.query(
            f"SELECT {_GRAIN[grain]} AS period, sum(responses) AS responses, sum(promoters) AS promoters, "
            "sum(passives) AS passives, sum(detractors) AS detractors, sum(csat_sum) AS csat_sum, "
            f"sum(csat_answers) AS csat_answers FROM {{db}}.nps_daily WHERE {' AND '.join(where)} "
            "GROUP BY period ORDER BY period", store_id=store_id or "", staff_id=staff_id or "",
            service_id=service_id or "")

        def point(r: dict) -> dict:
            return {"responses": r["responses"], "promoters": r["promoters"], "passives": r["passives"],
                    "detractors": r["detractors"], "nps": _nps(r["promoters"], r["passives"], r["detractors"]),
                    "csat_avg": round(r["csat_sum"] / r["csat_answers"], 2) if r["csat_answers"] else None}

        keys = ("responses", "promoters", "passives", "detractors", "csat_sum", "csat_answers")
        total = {k: sum(r[k] for r in rows) for k in keys}
        return {"store_id": store_id, "timezone": str(scope.zone), "grain": grain, "from": scope.start,
                "to": scope.end, "points": [{"period": r["period"], **point(r)} for r in rows], "total": point(total)}
    return await _in_thread(read)


# --- lifecycle funnel ---
@routes.get("/funnel", responses=UNKNOWN_STORE, summary="Customers first seen in the period: furthest stage reached, stage now, conversion")
async def funnel(request: Request, caller: CallerRead, store_id: StoreFilter = None, start: FromDate = None,
                 end: ToDate = None, channel: ChannelFilter = None) -> dict:
    def read():
        scope = Scope(request, caller.tenant_id, store_id, start, end, channel)
        rows = scope.query(f"SELECT peak_stage, stage, count() AS customers FROM {{db}}.customer_scores FINAL "
                           f"WHERE {scope.customer_filter(period=True)} GROUP BY peak_stage, stage")
        now = {stage: sum(r["customers"] for r in rows if r["stage"] == stage) for stage in
               (*FUNNEL, "at_risk", "churned", "win_back")}
        stages, previous = [], None
        for rank, stage in enumerate(FUNNEL):
            reached = sum(r["customers"] for r in rows if FUNNEL.index(r["peak_stage"] or "awareness") >= rank)
            stages.append({"stage": stage, "customers_now": now[stage], "reached": reached,
                           "conversion": None if previous is None else _ratio(reached, previous)})
            previous = reached
        return {"from": scope.start, "to": scope.end, "stages": stages,
                "other": {k: now[k] for k in ("at_risk", "churned", "win_back")}}
    return await _in_thread(read)


# --- churn risk ---
@routes.get("/churn", responses=UNKNOWN_STORE, summary="Churn-risk distribution and the customers most at risk, with reasons")
async def churn(request: Request, caller: CallerRead, store_id: StoreFilter = None, channel: ChannelFilter = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict:
    def read():
        scope = Scope(request, caller.tenant_id, store_id, None, None, channel)
        where = scope.customer_filter()
        buckets = {r["bucket"]: r["customers"] for r in scope.query(
            f"SELECT least(toUInt8(floor(risk * 10)), 9) AS bucket, count() AS customers FROM {{db}}.customer_scores "
            f"FINAL WHERE {where} GROUP BY bucket")}
        bands = {r["band"]: r["customers"] for r in scope.query(
            f"SELECT band, count() AS customers FROM {{db}}.customer_scores FINAL WHERE {where} GROUP BY band")}
        at_risk = scope.query(
            "SELECT toString(customer_id) AS customer_id, risk, band, stage, reasons, overdue_days, last_paid_visit_at, "
            f"value_tier, rfm_segment, home_store_id FROM {{db}}.customer_scores FINAL WHERE {where} "
            "AND (stage = 'at_risk' OR (band = 'high' AND stage != 'churned' AND visits > 0)) "
            "ORDER BY value_tier = 'high' DESC, risk DESC LIMIT {limit:UInt32}", limit=limit)
        for row in at_risk:
            row["risk"] = round(row["risk"], 4)
        return {"bands": {b: bands.get(b, 0) for b in ("low", "medium", "high")},
                "histogram": [{"from": i / 10, "to": (i + 1) / 10, "customers": buckets.get(i, 0)} for i in range(10)],
                "at_risk": at_risk}
    return await _in_thread(read)


@routes.get("/customers/{customer_id}",
            responses={404: {"description": "No scores for this customer (unknown, merged into another, or erased)"}},
            summary="One customer: stage, risk and reasons, RFM, transitions, touchpoints")
async def customer(customer_id: UUID, request: Request, caller: CallerRead) -> dict:
    def read():
        scope = Scope(request, caller.tenant_id, None, None, None)
        found = scope.query("SELECT * FROM {db}.customer_scores FINAL WHERE tenant_id = {tenant:String} "
                            "AND customer_id = {c:UUID} AND deleted = 0", c=str(customer_id))
        if not found:
            raise HTTPException(404, "no scores for this customer (unknown, merged into another, or erased)")
        s = found[0]
        transitions = scope.query(
            "SELECT at, from_stage, to_stage, reason FROM {db}.lifecycle_transitions FINAL "
            "WHERE tenant_id = {tenant:String} AND customer_id = {c:UUID} ORDER BY at DESC LIMIT 50", c=str(customer_id))
        # The customer's rows are found through the bloom filter, then read with FINAL by primary key (day,
        # event): a split customer's moved events, re-attributed in a newer row, drop out. At 10M touchpoints
        # about 3x faster at p95 than FINAL over the customer filter alone (bench/insights.py).
        touchpoints = scope.query(
            "SELECT occurred_at, type, channel, store_id FROM {db}.touchpoints FINAL WHERE tenant_id = {tenant:String} "
            "AND (toDate(occurred_at), event_id) IN (SELECT toDate(occurred_at), event_id FROM {db}.touchpoints "
            "WHERE tenant_id = {tenant:String} AND customer_id = {c:UUID}) AND customer_id = {c:UUID} "
            "ORDER BY occurred_at DESC LIMIT 30", c=str(customer_id))
        return {"customer_id": str(customer_id), "stage": s["stage"], "stage_since": s["stage_since"],
                "risk": round(s["risk"], 4), "band": s["band"], "reasons": s["reasons"],
                "rfm": {"recency_days": s["recency_days"], "frequency": s["frequency"],
                        "monetary_minor": s["monetary_minor"], "r": s["r"], "f": s["f"], "m": s["m"],
                        "segment": s["rfm_segment"]},
                "value_tier": s["value_tier"], "home_store_id": s["home_store_id"], "tier": s["tier"] or None,
                "first_channel": s["first_channel"], "expected_interval_days": round(s["expected_interval_days"], 1),
                "overdue_days": s["overdue_days"], "last_paid_visit_at": s["last_paid_visit_at"],
                "transitions": transitions, "recent_touchpoints": touchpoints}
    return await _in_thread(read)


# --- channels ---
@routes.get("/channels", responses=UNKNOWN_STORE, summary="Per first channel: customers acquired in the period, converted, retained 90 days")
async def channels(request: Request, caller: CallerRead, store_id: StoreFilter = None, start: FromDate = None,
                   end: ToDate = None) -> dict:
    def read():
        scope = Scope(request, caller.tenant_id, store_id, start, end)
        rows = scope.query(
            "SELECT first_channel AS channel, count() AS acquired, countIf(first_paid_at IS NOT NULL) AS converted, "
            f"countIf(returned_within_90d = 1) AS retained_90d FROM {{db}}.customer_scores FINAL "
            f"WHERE {scope.customer_filter(period=True)} GROUP BY channel ORDER BY acquired DESC")
        return {"from": scope.start, "to": scope.end, "channels": [
            {**r, "conversion": _ratio(r["converted"], r["acquired"]),
             "retention_90d": _ratio(r["retained_90d"], r["converted"])} for r in rows]}
    return await _in_thread(read)


# --- complaints ---
@routes.get("/complaints", responses=UNKNOWN_STORE, summary="Complaint cases in the period: opened, resolved, SLA breaches, resolution time")
async def complaints(request: Request, caller: CallerRead, store_id: StoreFilter = None, start: FromDate = None,
                     end: ToDate = None) -> dict:
    def read():
        scope = Scope(request, caller.tenant_id, store_id, start, end)
        where = "tenant_id = {tenant:String} AND local_date BETWEEN {day_from:Date} AND {day_to:Date}" + (
            " AND store_id = {store:String}" if store_id else "")
        counts = "countIf(kind = 'opened') AS opened, countIf(kind = 'resolved') AS resolved, " \
                 "uniqExactIf(case_id, kind = 'breached') AS breaches"
        [total] = scope.query(
            f"SELECT {counts}, countIf(kind = 'breached' AND sla = 'first_response') AS first_response_breaches, "
            "countIf(kind = 'breached' AND sla = 'resolution') AS resolution_breaches, "
            "quantileExactIf(0.5)(resolved_in_business_minutes, kind = 'resolved') AS median_minutes "
            f"FROM {{db}}.case_events FINAL WHERE {where}")
        by_day = scope.query(f"SELECT local_date AS period, {counts} FROM {{db}}.case_events FINAL WHERE {where} "
                             "GROUP BY period ORDER BY period")
        return {"from": scope.start, "to": scope.end, "opened": total["opened"], "resolved": total["resolved"],
                "first_response_breaches": total["first_response_breaches"],
                "resolution_breaches": total["resolution_breaches"],
                "breach_rate": _ratio(total["breaches"], total["opened"]),
                "median_resolution_business_minutes": total["median_minutes"] if total["resolved"] else None,
                "by_day": by_day}
    return await _in_thread(read)


# --- loyalty tiers ---
@routes.get("/tiers", responses=UNKNOWN_STORE, summary="Loyalty tier mix of the customers")
async def tiers(request: Request, caller: CallerRead, store_id: StoreFilter = None,
                channel: ChannelFilter = None) -> dict:
    def read():
        scope = Scope(request, caller.tenant_id, store_id, None, None, channel)
        rows = scope.query(f"SELECT if(tier = '', 'none', tier) AS tier, count() AS customers FROM "
                           f"{{db}}.customer_scores FINAL WHERE {scope.customer_filter()} AND visits > 0 "
                           "GROUP BY tier ORDER BY customers DESC")
        return {"tiers": rows}
    return await _in_thread(read)
