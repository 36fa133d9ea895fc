"""deploy/grafana checked against the code, without Grafana: every query of the ops dashboard names only
tables and columns of services/insights/schema.py, the datasource points at the compose ClickHouse and the
insights database, the grafana container mounts what the provisioning reads, and the dashboard covers the
same views as the insights page (GET /dashboard). The last test runs every query on the real engine."""
from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from services.insights.schema import TABLES
from services.insights.settings import InsightsSettings

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "ops.json").read_text())
DATASOURCES = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yml").read_text())["datasources"]
PROVIDERS = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())["providers"]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
DATABASE = InsightsSettings.model_fields["clickhouse_database"].default
COLUMNS = {t.name: {c[0] for c in t.columns} for t in TABLES}
PLUGIN = "grafana-clickhouse-datasource"
# The page's panels (services/insights/dashboard/index.html) and the Grafana panels showing the same view.
SAME_VIEWS = {
    "panel-nps": ["NPS trend"],
    "panel-funnel": ["Lifecycle funnel", "Outside the funnel"],
    "panel-churn": ["Churn-risk distribution", "Risk bands"],
    "panel-at-risk": ["At-risk customers"],
    "panel-customer": ["Customer scores", "Stage transitions", "Recent touchpoints"],
    "panel-channels": ["Channel performance"],
    "panel-complaints": ["Complaint SLA", "Complaints by day"],
    "panel-tiers": ["Loyalty tier mix"],
}
SQL_WORDS = {
    "select", "from", "where", "and", "or", "not", "group", "by", "order", "as", "final", "in", "is", "null",
    "between", "limit", "desc", "asc", "with", "union", "all", "distinct", "over", "fill", "to", "having",
    "case", "when", "then", "else", "end", "on", "join", "left", "inner", "like", "true", "false",
}


def _panels(panels=DASHBOARD["panels"]):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row keeps its panels inside


QUERIES = {f"panel {p['title']!r}": t["rawSql"] for p in _panels() for t in p.get("targets", [])}
QUERIES.update({f"variable {v['name']!r}": v["query"] for v in DASHBOARD["templating"]["list"] if v["type"] == "query"})


def _without_grafana_syntax(sql: str) -> str:
    """Macros and variables out (a macro's column argument stays), then string literals out."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1", sql)
    sql = re.sub(r"\$__\w+", "0", sql)
    sql = re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+", "'v'", sql)
    return re.sub(r"'(?:[^'\\]|\\.|'')*'", "''", sql)


def tables_and_names(sql: str) -> tuple[list[tuple[str, str]], set[str]]:
    """(database, table) of every FROM/JOIN, and every other name that is neither a function, a keyword nor
    an alias the query defines: the columns it reads."""
    sql = _without_grafana_syntax(sql)
    tables = re.findall(r"\b(?:FROM|JOIN)\s+(?:(\w+)\.)?([A-Za-z_]\w*)\b(?!\s*\()", sql, re.I)
    aliases = set(re.findall(r"\bAS\s+(\w+)", sql, re.I))
    rest = re.sub(r"\b(?:FROM|JOIN)\s+(?:\w+\.)?[A-Za-z_]\w*\b(?!\s*\()", " ", sql, flags=re.I)
    names = set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)\b(?!\s*\()", rest))
    return tables, {n for n in names if n.lower() not in SQL_WORDS and n not in aliases}


def test_the_dashboard_has_queries():
    assert len(QUERIES) >= 12


@pytest.mark.parametrize("where", sorted(QUERIES))
def test_every_query_names_only_tables_and_columns_of_the_schema(where):
    tables, names = tables_and_names(QUERIES[where])
    assert tables, f"{where} reads no table"
    for database, table in tables:
        assert database in ("", DATABASE), f"{where} reads {database}.{table}, not the insights database"
        assert table in COLUMNS, f"{where} reads {table}, which services/insights/schema.py has no table for"
    readable = set().union(*(COLUMNS[t] for _, t in tables))
    assert names <= readable, f"{where} names {sorted(names - readable)}, no column of {[t for _, t in tables]}"


def test_the_identifier_check_catches_a_wrong_column_and_table():
    assert tables_and_names("SELECT nps_score FROM hub.survey_answers")[1] == {"nps_score"}
    assert tables_and_names("SELECT x FROM hub.surveys")[0] == [("hub", "surveys")]
    tables, names = tables_and_names(
        "SELECT countIf(nps >= 9) AS p FROM hub.survey_answers FINAL WHERE tenant_id = ${tenant:sqlstring} "
        "AND $__timeFilter(answered_at) AND store_id = 'it''s' GROUP BY p")
    assert tables == [("hub", "survey_answers")] and names == {"nps", "tenant_id", "answered_at", "store_id"}


def test_every_panel_reads_the_provisioned_clickhouse_datasource():
    [datasource] = DATASOURCES
    assert datasource["type"] == PLUGIN
    for panel in _panels():
        for target in panel.get("targets", []):
            assert panel["datasource"] == target["datasource"] == {"type": PLUGIN, "uid": datasource["uid"]}, \
                panel["title"]
            assert target["editorType"] == "sql" and target["rawSql"].strip()
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": PLUGIN, "uid": datasource["uid"]}


def test_the_datasource_is_the_compose_clickhouse_and_the_insights_database():
    [datasource] = DATASOURCES
    settings = datasource["jsonData"]
    assert settings["host"] in COMPOSE, "the datasource host is a compose service"
    probe = " ".join(COMPOSE[settings["host"]]["healthcheck"]["test"])
    assert f":{settings['port']}/" in probe, "the port ClickHouse answers HTTP on"
    assert settings["protocol"] == "http" and settings["defaultDatabase"] == DATABASE
    assert COMPOSE["insights"]["environment"]["CLICKHOUSE_URL"].endswith(f"@{settings['host']}:{settings['port']}")
    # The password is read from the grafana container's environment, which takes it from the shell.
    variable = re.fullmatch(r"\$\{?(\w+)\}?", datasource["secureJsonData"]["password"]).group(1)
    assert variable in COMPOSE["grafana"]["environment"]


def test_the_grafana_container_mounts_the_provisioning_and_installs_the_plugin():
    grafana = COMPOSE["grafana"]
    assert PLUGIN in grafana["environment"]["GF_INSTALL_PLUGINS"].split(",")
    mounts = {target: ROOT / source for source, target, *_ in (v.split(":") for v in grafana["volumes"])
              if source.startswith("./")}
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    [provider] = PROVIDERS
    assert mounts[provider["options"]["path"]] == GRAFANA / "dashboards"
    assert grafana["depends_on"] == {"clickhouse": {"condition": "service_healthy"}}
    assert [p.split(":")[-1] for p in grafana["ports"]] == ["3000"]
    assert "127.0.0.1:3000/api/health" in " ".join(grafana["healthcheck"]["test"])


def test_the_dashboard_shows_the_same_views_as_the_insights_page():
    page = (ROOT / "services" / "insights" / "dashboard" / "index.html").read_text()
    titles = {p["title"] for p in _panels()}
    for element, panels in SAME_VIEWS.items():
        assert f'id="{element}"' in page, element
        assert set(panels) <= titles, f"{element}: no {sorted(set(panels) - titles)} in ops.json"
    assert {v["name"] for v in DASHBOARD["templating"]["list"]} >= {"tenant", "store", "channel", "grain", "customer"}


# --- on the real engine ---------------------------------------------------------------------------------
def _as_clickhouse(sql: str, database: str, variables: dict[str, str], start: datetime, end: datetime) -> str:
    """What the plugin sends: macros expanded (as toDateTime of epoch seconds), variables substituted."""
    def instant(at: datetime) -> str:
        return f"toDateTime(intDiv({int(at.timestamp() * 1000)}, 1000))"

    sql = re.sub(r"\$__timeFilter\((\w+)\)", lambda m: f"{m[1]} >= {instant(start)} AND {m[1]} <= {instant(end)}", sql)
    sql = sql.replace("$__fromTime", instant(start)).replace("$__toTime", instant(end))

    def variable(m: re.Match) -> str:
        value = variables[m[1]]
        return "'" + value.replace("'", "''") + "'" if m[2] == "sqlstring" else value

    sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}", variable, sql)
    return re.sub(rf"\b{DATABASE}\.", f"{database}.", sql)


def test_every_query_runs_on_clickhouse_over_seeded_data(clickhouse_target):
    from services.insights.warehouse import Warehouse
    from tests.integration.insights_data import seed_dashboard

    database = f"t_{uuid.uuid4().hex[:12]}"
    warehouse = Warehouse(url=clickhouse_target["url"], path=clickhouse_target["path"], database=database)
    try:
        warehouse.migrate()
        seeded = seed_dashboard(warehouse, "grafana-test")
        end = datetime.now(UTC)
        start = end - timedelta(days=420)
        results = {}
        for store in ["all", *seeded["store_ids"]]:
            variables = {"tenant": "grafana-test", "store": store, "channel": "all", "grain": "toMonday",
                         "customer": seeded["at_risk_customer_id"]}
            for where, sql in QUERIES.items():
                try:
                    results[where, store] = warehouse.query(_as_clickhouse(sql, database, variables, start, end))
                except Exception as exc:
                    pytest.fail(f"{where} with store={store}: {exc}")
    finally:
        warehouse.close()

    def rows(title, store="all"):
        columns, found = results[f"panel {title!r}", store]
        return [dict(zip(columns, r)) for r in found]

    at_risk = seeded["at_risk_customer_id"]
    assert at_risk in [r["customer"] for r in rows("At-risk customers")]
    assert [r["customer"] for r in rows("Customer scores")] == [at_risk]
    assert rows("Stage transitions") and rows("Recent touchpoints")
    assert len(rows("Churn-risk distribution")) == 10
    assert sum(r["customers"] for r in rows("Churn-risk distribution")) == sum(rows("Risk bands")[0].values())
    funnel = rows("Lifecycle funnel")
    assert funnel[0]["stage"] == "awareness" and funnel[0]["conversion"] is None
    assert [r["reached"] for r in funnel] == sorted((r["reached"] for r in funnel), reverse=True)
    assert sum(r["promoters"] + r["passives"] + r["detractors"] for r in rows("NPS trend")) > 0
    assert rows("Complaint SLA")[0]["opened"] > 0 and rows("Channel performance") and rows("Loyalty tier mix")
    stores = [r[0] for r in results["variable 'store'", "all"][1]]
    assert stores[0] == "all" and set(seeded["store_ids"]) <= set(stores[1:])
    for store in seeded["store_ids"]:  # a store sees a part of the chain
        assert len(rows("At-risk customers", store)) <= len(rows("At-risk customers"))
