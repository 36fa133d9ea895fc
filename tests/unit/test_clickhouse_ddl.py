"""ClickHouse DDL is rendered from one column list per table; the files under deploy/clickhouse are
snapshots of that rendering."""
from pathlib import Path

from services.insights.schema import TOUCHPOINTS, render, rendered_migrations

DDL_DIR = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"


def test_deploy_ddl_matches_the_rendered_tables():
    for name, content in rendered_migrations().items():
        assert (DDL_DIR / name).read_text() == content, f"run `hub docs` to refresh {name}"


def test_touchpoints_deduplicate_by_event_and_keep_the_latest_attribution():
    ddl = render(TOUCHPOINTS)
    assert "ReplacingMergeTree(attribution_version)" in ddl
    assert "event_id)" in ddl.split("ORDER BY")[1]


def test_times_are_stored_as_utc_instants():
    for name, type_, _ in TOUCHPOINTS.columns:
        if name.endswith("_at"):
            assert type_.startswith("DateTime64(3, 'UTC')"), name


def test_identifier_values_never_reach_clickhouse():
    assert "identifier_types" in TOUCHPOINTS.column_names
    assert not {"identifiers", "phone", "email"} & set(TOUCHPOINTS.column_names)
