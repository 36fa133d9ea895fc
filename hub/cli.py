"""`hub`: the one command line of the platform (the Makefile calls it)."""
from __future__ import annotations

import importlib
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from hub.embedded import database_url

from shared.settings import SERVICE_PORTS

app = typer.Typer(help="Customer data hub for multi-store service chains.", no_args_is_help=True)
SERVICE_NAMES = tuple(SERVICE_PORTS)




def _identity_tool(name: str):
    """Identity's bulk tools, loaded by module path like `hub serve` loads services: the launcher
    and CLI never import a service at module level."""
    return getattr(importlib.import_module("services.identity.bulk_import"), name)

@app.command()
def run(
    simulate: Annotated[bool, typer.Option(help="Feed the platform with a simulated chain.")] = True,
    rate: Annotated[float, typer.Option(help="Simulated touchpoints per second.")] = 20.0,
    home: Annotated[Path, typer.Option(envvar="HUB_HOME", help="Where state lives.")] = Path(".hub"),
):
    """Start the whole platform on embedded defaults (no Docker needed)."""
    from hub.launcher import run as run_stack

    raise typer.Exit(run_stack(home.resolve(), simulate, rate))


@app.command()
def serve(service: Annotated[str, typer.Argument(help="/".join(SERVICE_NAMES))]):
    """Run one service (what the launcher and docker-compose start)."""
    from hub.serve import serve as serve_service

    if service not in SERVICE_NAMES:
        raise typer.BadParameter(f"one of {', '.join(SERVICE_NAMES)}")
    serve_service(service)


@app.command()
def simulate(
    identity_url: Annotated[str, typer.Option(help="Base URL of the identity service.")] = "http://127.0.0.1:8101",
    api_key: Annotated[str, typer.Option(envvar="HUB_DEMO_API_KEY", help="Tenant API key.")] = "",
    rate: Annotated[float, typer.Option(help="Touchpoints per second.")] = 20.0,
    duration: Annotated[float | None, typer.Option(help="Seconds to run (default: until stopped).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the chain.")] = 7,
    booking_url: Annotated[str | None, typer.Option(help="Base URL of the booking service: also set up its "
                                                         "catalogue and book through it.")] = None,
    loyalty_url: Annotated[str | None, typer.Option(help="Base URL of the loyalty service: set the chain's "
                                                         "program (rules, exchange rates) first.")] = None,
    feedback_url: Annotated[str | None, typer.Option(help="Base URL of the feedback service: set the stores' "
                                                          "business hours and case owners first.")] = None,
    insights_url: Annotated[str | None, typer.Option(help="Base URL of the insights service: set the stores' "
                                                          "zones first.")] = None,
):
    """Post a simulated chain's touchpoints to the ingestion API (and book through the booking API)."""
    from hub.simulate import run as run_simulation

    if not api_key:
        raise typer.BadParameter("--api-key or HUB_DEMO_API_KEY is required")

    def report(result, sent):
        if not hasattr(result, "status_code") or result.status_code != 200:
            typer.echo(f"ingestion answered {getattr(result, 'status_code', result)}", err=True)

    sent = run_simulation(identity_url, api_key, rate, duration, seed, on_batch=report, booking_url=booking_url,
                          loyalty_url=loyalty_url, feedback_url=feedback_url, insights_url=insights_url)
    typer.echo(f"accepted {sent} touchpoints")


@app.command("issue-key")
def issue_key(
    tenant: Annotated[str, typer.Option(help="Tenant (chain) id the key is scoped to.")],
    role: Annotated[str, typer.Option(help="admin, ingest or read.")] = "admin",
):
    """Issue a signed API key for a tenant (uses HUB_AUTH_SECRET)."""
    from shared.auth import KeyVerifier, Role

    secret = os.environ.get("HUB_AUTH_SECRET") or (Path(".hub") / "auth_secret").read_text().strip()
    typer.echo(KeyVerifier(secret).issue(tenant, Role(role)))


@app.command()
def docs(check: Annotated[bool, typer.Option(help="Fail if the files are stale instead of writing.")] = False):
    """Regenerate docs/events (JSON Schema, AsyncAPI) and deploy/clickhouse DDL from the code."""
    from hub.docs import write_generated

    stale = write_generated(Path.cwd(), check=check)
    if stale and check:
        typer.echo("stale: " + ", ".join(stale), err=True)
        raise typer.Exit(1)
    typer.echo("up to date" if not stale else f"wrote {len(stale)} files")


@app.command()
def bench(rate: Annotated[float, typer.Option(help="Touchpoints per second offered to identity.")] = 5000,
          seconds: Annotated[float, typer.Option(help="How long the rate is held.")] = 60,
          reads: Annotated[float, typer.Option(help="Customer-360 reads per second meanwhile (0: none).")] = 1000,
          readme: Annotated[bool, typer.Option(help="Rewrite the README's benchmark table.")] = True):
    """The end-to-end benchmark on the embedded stack; writes bench/results.json and prints the table."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ lives beside hub/, not installed
    from bench.e2e import main

    main(rate, seconds, reads, readme)


import_app = typer.Typer(help="Bulk imports from a legacy system: a CSV plus a YAML mapping (resumable).",
                         no_args_is_help=True)
identity_app = typer.Typer(help="Identity tools.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(identity_app, name="identity")

MappingOption = Annotated[Path, typer.Option("--mapping", help="YAML mapping of the CSV's columns.", exists=True,
                                             dir_okay=False)]
TenantOption = Annotated[str, typer.Option(envvar="HUB_DEMO_TENANT", help="Tenant (chain) id.")]
BatchOption = Annotated[int, typer.Option("--batch", min=1, max=20_000, help="Rows per transaction/checkpoint.")]
HomeOption = Annotated[Path, typer.Option(envvar="HUB_HOME", help="Where `make run` keeps its state (embedded "
                                                                  "Postgres) when DATABASE_URL is not set.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]
WorkersOption = Annotated[int, typer.Option(min=1, max=64, help="Processes resolving batches in parallel.")]


@import_app.command("customers")
def import_customers(file: Annotated[Path, typer.Argument(help="CSV file with a header row.")],
                     mapping: MappingOption, tenant: TenantOption = "demo", batch: BatchOption = 2000,
                     home: HomeOption = Path(".hub"), json: JsonOption = False, workers: WorkersOption = 1):
    """Customers: one profile per row, merged with what the hub knows; bad rows go to FILE.rejects.csv."""
    run_import_command = _identity_tool("run_import_command")

    url, how, _server = database_url(home)  # _server keeps an embedded Postgres up for the command
    raise typer.Exit(run_import_command("customers", file, mapping, tenant, batch, (url, how), json, workers))


@import_app.command("touchpoints")
def import_touchpoints(file: Annotated[Path, typer.Argument(help="CSV file with a header row.")],
                       mapping: MappingOption, tenant: TenantOption = "demo", batch: BatchOption = 2000,
                       home: HomeOption = Path(".hub"), json: JsonOption = False,
                       workers: WorkersOption = 1):
    """Touchpoints of one type (e.g. a legacy POS's sales), resolved to customers like live ones."""
    run_import_command = _identity_tool("run_import_command")

    url, how, _server = database_url(home)
    raise typer.Exit(run_import_command("touchpoints", file, mapping, tenant, batch, (url, how), json, workers))


@identity_app.command("export-clusters")
def export_clusters(out: Annotated[Path, typer.Argument(help="CSV to write: source_record,customer_id.")],
                    tenant: TenantOption = "demo",
                    source: Annotated[str | None, typer.Option(help="Only this source system's records.")] = None,
                    home: HomeOption = Path(".hub")):
    """Apply pending match suggestions (drains the match queue), then write each imported record's customer."""
    run_export_command = _identity_tool("run_export_command")

    url, how, _server = database_url(home)
    raise typer.Exit(run_export_command(out, tenant, source, (url, how)))


insights_app = typer.Typer(help="Insights tools.", no_args_is_help=True)
app.add_typer(insights_app, name="insights")


@insights_app.command("backtest")
def backtest(as_of: Annotated[datetime, typer.Option("--as-of", formats=["%Y-%m-%d"],
                                                     help="Score with only what was known before this day.")],
             horizon: Annotated[int, typer.Option("--horizon", min=1, max=730,
                                                  help="Days in which a paid visit counts as staying.")] = 90,
             tenant: TenantOption = "demo", home: HomeOption = Path(".hub"), json: JsonOption = False):
    """How well churn risk predicts "no paid visit within the horizon": ROC AUC, precision and recall at
    the alert threshold, calibration. Reads ClickHouse: CLICKHOUSE_URL, or the embedded data of `make run`
    (stop it first: one process may open the embedded engine)."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    insights = {name: importlib.import_module(f"services.insights.{name}") for name in
                ("backtest", "settings", "warehouse")}  # loaded like `hub serve` loads services
    os.environ.setdefault("INSIGHTS_CLICKHOUSE_PATH", str(home.resolve() / "clickhouse"))
    settings = insights["settings"].InsightsSettings()
    warehouse = insights["warehouse"].Warehouse.open(settings)
    cutoff = as_of.replace(tzinfo=ZoneInfo(settings.default_timezone))
    result = insights["backtest"].run_backtest(warehouse, tenant, cutoff, horizon, settings.scoring)
    if json:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    summary = Table(title=f"Churn backtest — {tenant}, as of {as_of.date()}, {horizon}-day horizon")
    for column in ("population", "customers", "churn rate", "ROC AUC", "flagged", "precision", "recall", "accuracy"):
        summary.add_column(column)
    for name in ("customers_with_paid_visit", "all_customers"):
        r = result[name]
        summary.add_row(name.replace("_", " "), *(str(r[k]) for k in (
            "customers", "churn_rate", "roc_auc", "flagged", "precision", "recall", "accuracy")))
    console.print(summary)
    calibration = Table(title="Calibration (customers with a paid visit)")
    for column in ("risk", "customers", "mean risk", "churned"):
        calibration.add_column(column)
    for row in result["customers_with_paid_visit"]["calibration"]:
        calibration.add_row(f"{row['from']:.1f}–{row['to']:.1f}", str(row["customers"]), str(row["mean_risk"]),
                            str(row["churned_rate"]))
    console.print(calibration)
