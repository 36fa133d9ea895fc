"""Bulk import (hub import customers / touchpoints) and hub identity export-clusters, on a real Postgres:
duplicates merge, bad rows are rejected without stopping the import, an interrupted import resumes
without importing any row twice, and the export gives one customer per person."""
from __future__ import annotations

import csv
import functools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from services.identity import bulk_import as importer
from services.identity.settings import IdentitySettings
from shared.db import Database

from .conftest import settings_for

ROOT = Path(__file__).resolve().parents[2]
HEADER = ["cust_no", "given", "surname", "mobile", "email", "dob", "sex", "street", "city"]
MAPPING = """
source: legacy_crm
record_key: cust_no
identifiers:
  - {type: phone, column: mobile}
  - {type: email, column: email}
attributes:
  name: [given, surname]
  birth_date: {column: dob, format: "%Y-%m-%d"}
  gender: sex
  address: [street, city]
matching: {auto_merge_threshold: 0.9, suggest_threshold: 0.75}
"""
ROWS = [
    ["C01", "Li", "Wang", "139 1234 5678", "li.wang@example.com", "1990-03-01", "F", "1 Nanjing Rd", "Shanghai"],
    ["C02", "Li", "Wang", "+86 139-1234-5678", "", "1990-03-01", "female", "", "Shanghai"],  # C01's phone
    ["C03", "Ming", "Zhao", "13812345678", "ming@example.com", "31/02/1990", "M", "", ""],  # broken date
    ["C04", "Too", "Few"],  # too few columns
    ["C05", "Hua", "Chen", "13712345670", "", "1985-07-09", "", "", ""],
    ["C06", "Hua", "Chen", "", "hua.chen@example.com", "1985-07-09", "", "", ""],
    ["C07", "Hua", "Chen", "13712345670", "hua.chen@example.com", "", "", "", ""],  # joins C05 and C06: a merge
    ["C08", "Jun", "Sun", "13612345678", "", "1979-11-30", "M", "9 Xizang Rd", "Shanghai"],
    ["C09", "Yan", "Zhou", "", "yan.zhou@example.com", "2001-01-15", "F", "", "Beijing"],
]
VALID = ["C01", "C02", "C05", "C06", "C07", "C08", "C09"]


@pytest.fixture
def db(database_url):
    database = Database(database_url, maxconn=4)
    yield database
    database.close()


@pytest.fixture
def settings(database_url):
    return settings_for(IdentitySettings, {"database_url": database_url})


def write_csv(path: Path, rows, header=HEADER) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def customers_import(db, settings, csv_path, mapping_text=MAPPING, batch=2, **kw):
    mapping_path = csv_path.with_suffix(".yaml")
    mapping_path.write_text(mapping_text)
    mapping = importer.load_mapping(mapping_path, "customers")
    return importer.import_file(db, settings, "customers", csv_path, mapping, tenant="demo",
                                batch_size=batch, **kw)


def scalar(db, sql, *params):
    with db.transaction() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def rejects_of(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {r["row"]: r["reason"] for r in csv.DictReader(f)}


def clusters(db, settings, out: Path) -> dict[str, str]:
    importer.export_clusters(db, settings, out, tenant="demo")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len({r["source_record"] for r in rows}), "a record exported twice"
    return {r["source_record"]: r["customer_id"] for r in rows}


def test_import_merges_duplicates_rejects_bad_rows_and_exports_one_customer_per_person(db, settings, tmp_path):
    report = customers_import(db, settings, write_csv(tmp_path / "customers.csv", ROWS))

    assert report.finished and not report.interrupted
    assert (report.rows_total, report.imported, report.rejected) == (9, 7, 2)
    assert report.customers_created == 5  # C01 (+C02), C05, C06, C08, C09; C07 merges C05 and C06
    assert report.profiles_merged == 1
    reasons = rejects_of(tmp_path / "customers.rejects.csv")
    assert set(reasons) == {"3", "4"}
    assert "birth_date" in reasons["3"] and "31/02/1990" in reasons["3"]
    assert "expected 9 columns, found 3" in reasons["4"]

    found = clusters(db, settings, tmp_path / "clusters.csv")
    assert set(found) == set(VALID)
    assert found["C01"] == found["C02"]
    assert found["C05"] == found["C06"] == found["C07"]
    assert len({found[k] for k in ("C01", "C05", "C08", "C09")}) == 4
    # every exported id is a live (surviving) customer
    with db.transaction() as cur:
        cur.execute("select count(*) from identity.customers where customer_id = any(%s::uuid[]) "
                    "and status = 'active'", (list(set(found.values())),))
        assert cur.fetchone()[0] == 4


def test_the_mapping_sets_the_tenant_policy_and_export_applies_auto_merges(db, settings, tmp_path):
    rows = [["M1", "Mei", "Lin", "13911110001", "", "1988-05-17", "F", "88 Huaihai Rd", "Shanghai"],
            ["M2", "Mei", "Lin", "13911110002", "", "1988-05-17", "F", "88 Huaihai Road", "Shanghai"],
            ["M3", "Bo", "Xu", "13911110003", "", "1970-01-02", "M", "", ""]]
    report = customers_import(db, settings, write_csv(tmp_path / "c.csv", rows))
    assert report.customers_created == 3  # no shared identifier: resolution alone keeps them apart
    assert scalar(db, "select policy->>'auto_merge_threshold' from identity.tenants where tenant_id = 'demo'") \
        == "0.9"

    found = clusters(db, settings, tmp_path / "clusters.csv")
    assert found["M1"] == found["M2"]  # same person by name, birth date and address: auto-merged
    assert found["M3"] != found["M1"]


def test_three_records_of_one_person_matched_in_one_batch_end_as_one_customer(db, settings, tmp_path):
    """The matcher scores a batch of profiles at once: an auto-merge inside it must not stop the batch,
    and the survivor is matched afresh, so the third record joins it too."""
    rows = [["T1", "Mei", "Lin", "13911120001", "", "1988-05-17", "F", "88 Huaihai Rd", "Shanghai"],
            ["T2", "Mei", "Lin", "13911120002", "", "1988-05-17", "F", "88 Huaihai Road", "Shanghai"],
            ["T3", "Mei", "Lin", "13911120003", "", "1988-05-17", "F", "88 Huaihai Rd.", "Shanghai"],
            ["T4", "Bo", "Xu", "13911120004", "", "1970-01-02", "M", "", ""]]
    customers_import(db, settings, write_csv(tmp_path / "c.csv", rows))
    found = clusters(db, settings, tmp_path / "clusters.csv")
    assert found["T1"] == found["T2"] == found["T3"] != found["T4"]
    assert scalar(db, "select count(*) from identity.match_suggestions where status = 'auto_merged'") == 2


def test_a_duplicate_is_found_among_many_namesakes_when_only_a_few_candidates_are_scored(db, database_url,
                                                                                     tmp_path):
    """The matcher scores only a profile's candidates sharing its rarest blocking keys: the namesake who
    also shares the birth date and address outranks eight who share only the (common) name."""
    rows = [["D1", "Wei", "Wang", "13911130001", "", "1990-03-01", "M", "1 Nanjing Rd", "Shanghai"],
            ["D2", "Wei", "Wang", "13911130002", "", "1990-03-01", "M", "1 Nanjing Road", "Shanghai"]]
    rows += [[f"N{i}", "Wei", "Wang", f"1391113010{i}", "", f"19{70 + i}-06-1{i}", "M", "", ""] for i in range(8)]
    settings = settings_for(IdentitySettings, {"database_url": database_url, "match_candidates": 1})
    customers_import(db, settings, write_csv(tmp_path / "c.csv", rows), batch=10)
    found = clusters(db, settings, tmp_path / "clusters.csv")
    assert found["D1"] == found["D2"]
    assert len({found[f"N{i}"] for i in range(8)} | {found["D1"]}) == 9


def test_an_interrupted_import_resumes_and_imports_no_row_twice(db, settings, tmp_path):
    path = write_csv(tmp_path / "customers.csv", ROWS)
    calls = []

    def stop_after_first_batch(progress):
        calls.append(progress.rows_done)
        if progress.rows_done >= 2:
            raise KeyboardInterrupt  # what Ctrl-C does between two batches

    first = customers_import(db, settings, path, on_progress=stop_after_first_batch)
    assert first.interrupted and not first.finished
    assert scalar(db, "select rows_done from identity.import_runs where run_id = %s", first.run_id) == 2
    assert scalar(db, "select count(*) from identity.resolved_events") == 2

    second = customers_import(db, settings, path)
    assert second.finished and second.run_id == first.run_id
    assert second.rows_skipped == 2
    assert second.imported == len(VALID) - 2 and second.already_imported == 0
    assert scalar(db, "select rows_done from identity.import_runs where run_id = %s", first.run_id) == 9
    assert scalar(db, "select count(*) from identity.resolved_events") == len(VALID)
    assert scalar(db, "select count(*) from identity.outbox where topic = 'touchpoints.resolved'") == len(VALID)
    assert set(rejects_of(tmp_path / "customers.rejects.csv")) == {"3", "4"}

    third = customers_import(db, settings, path)
    assert third.rows_skipped == 9 and third.imported == 0
    assert scalar(db, "select count(*) from identity.resolved_events") == len(VALID)


def test_parallel_workers_import_the_same_clusters_and_an_interrupted_run_resumes_exactly(db, settings, tmp_path):
    extra = [[f"P{i:02d}", "Given", f"Sur{i}", f"1350000{i:04d}", "", "", "", "", ""] for i in range(40)]
    path = write_csv(tmp_path / "customers.csv", ROWS + extra)
    valid = len(VALID) + len(extra)
    pressed = []

    def stop_at_once(progress):  # Ctrl-C once, as the first batch reports; the batches in flight finish
        if progress.rows_done > 0 and not pressed:
            pressed.append(progress.rows_done)
            raise KeyboardInterrupt

    first = customers_import(db, settings, path, workers=2, on_progress=stop_at_once)
    assert first.interrupted
    checkpoint = scalar(db, "select rows_done from identity.import_runs")
    assert 2 <= checkpoint < 49
    assert scalar(db, "select count(*) from identity.resolved_events") == first.imported  # nothing past it

    second = customers_import(db, settings, path, workers=2)
    assert second.finished and second.rows_skipped == checkpoint
    assert first.imported + second.imported == valid and second.already_imported == 0
    assert scalar(db, "select count(*) from identity.resolved_events") == valid
    assert scalar(db, "select count(*) from identity.outbox where topic = 'touchpoints.resolved'") == valid
    with open(tmp_path / "customers.rejects.csv", newline="") as f:
        assert [r["row"] for r in csv.DictReader(f)] == ["3", "4"]
    found = clusters(db, settings, tmp_path / "clusters.csv")
    assert found["C01"] == found["C02"] and found["C05"] == found["C06"] == found["C07"]
    assert len(set(found.values())) == 4 + len(extra)


def test_a_batch_that_fails_midway_rolls_back_and_the_rerun_writes_each_reject_once(db, settings, tmp_path,
                                                                                    monkeypatch):
    path = write_csv(tmp_path / "customers.csv", ROWS)
    real, calls = importer.resolve_events, []

    def crash_in_second_batch(cur, events, *args, **kw):
        calls.append(len(events))
        plan = real(cur, events, *args, **kw)  # the batch's SQL ran; the transaction is still open
        if len(calls) == 2:
            raise RuntimeError("connection lost")
        return plan

    monkeypatch.setattr(importer, "resolve_events", crash_in_second_batch)
    with pytest.raises(RuntimeError):  # batches of 3: rows 1-3 commit, rows 4-6 (4 is a reject) fail
        customers_import(db, settings, path, batch=3)
    assert scalar(db, "select rows_done from identity.import_runs") == 3
    assert scalar(db, "select count(*) from identity.resolved_events") == 2  # the second batch rolled back
    assert set(rejects_of(tmp_path / "customers.rejects.csv")) == {"3", "4"}  # 4 was written before the commit

    monkeypatch.setattr(importer, "resolve_events", real)
    report = customers_import(db, settings, path, batch=3)
    assert report.finished and report.rows_skipped == 3 and report.rejected == 1
    with open(tmp_path / "customers.rejects.csv", newline="") as f:
        assert [r["row"] for r in csv.DictReader(f)] == ["3", "4"]
    assert scalar(db, "select count(*) from identity.resolved_events") == len(VALID)


def test_an_import_larger_than_the_vault_key_cache_still_links_rows_to_old_customers(db, settings, tmp_path,
                                                                                      monkeypatch):
    # A key cache of 6: batches 1-2 create C1..C10, so C5 is the oldest key cached; batch 3 then
    # needs C5 (cached) and C1, C2 (not cached, loaded). A vault kept across batches loses C5's key
    # while loading the others (its LRU is full) and resolution fails; one vault per batch does not.
    monkeypatch.setattr(importer, "Vault", functools.partial(importer.Vault, cache_size=6))
    rows = [[f"C{i}", "Given", f"Sur{i}", f"1391000000{i - 1}", "", "", "", "", ""] for i in range(1, 11)]
    rows += [["R11", "Given", "Sur5", "13910000004", "", "", "", "", ""],
             ["R12", "Given", "Sur1", "13910000000", "", "", "", "", ""],
             ["R13", "Given", "Sur2", "13910000001", "", "", "", "", ""]]
    report = customers_import(db, settings, write_csv(tmp_path / "c.csv", rows), batch=5)
    assert report.finished and report.imported == 13 and report.customers_created == 10

    found = clusters(db, settings, tmp_path / "clusters.csv")
    assert (found["R11"], found["R12"], found["R13"]) == (found["C5"], found["C1"], found["C2"])


def test_reimporting_the_rows_with_another_mapping_changes_nothing(db, settings, tmp_path):
    path = write_csv(tmp_path / "customers.csv", ROWS)
    first = customers_import(db, settings, path)
    customers = scalar(db, "select count(*) from identity.customers")

    reordered_name = MAPPING.replace("name: [given, surname]", "name: {columns: [surname, given], separator: ''}")
    again = customers_import(db, settings, path, mapping_text=reordered_name, batch=5)
    assert again.run_id != first.run_id and again.rows_skipped == 0
    assert (again.imported, again.already_imported, again.rejected) == (0, len(VALID), 2)
    assert scalar(db, "select count(*) from identity.customers") == customers
    assert scalar(db, "select count(*) from identity.resolved_events") == len(VALID)


def test_touchpoints_from_a_legacy_pos_resolve_to_the_imported_customers(db, settings, tmp_path):
    customers_import(db, settings, write_csv(tmp_path / "customers.csv", ROWS))
    sales = write_csv(tmp_path / "sales.csv", [
        ["T1", "sh-01", "2023-06-01 18:30", "C01", "", "128.50", "wash|dry"],
        ["T2", "sh-01", "2023-06-02 09:00", "", "13612345678", "80", "nails"],  # C08 by phone
        ["T3", "sh-02", "yesterday", "C05", "", "10", "wash"],  # unparseable time
        ["T4", "sh-02", "2023-06-03 10:00", "", "", "10", "wash"],  # no identifier at all
        ["T5", "sh-02", "2023-06-03 11:00", "C09", "", "-5", "wash"],  # negative amount: the model refuses
    ], header=["ticket", "store", "sold_at", "cust_no", "mobile", "amount", "services"])
    mapping = tmp_path / "sales.yaml"
    mapping.write_text("""
type: service.performed
source: legacy_pos
record_key: ticket
channel: pos
store_id: store
occurred_at: {column: sold_at, format: "%Y-%m-%d %H:%M", timezone: Asia/Shanghai}
identifiers:
  - {type: source_record, column: cust_no, scope: legacy_crm}
  - {type: phone, column: mobile}
payload:
  amount_minor: {column: amount, as: minor_units}
  service_ids: {column: services, split: "|"}
""")
    report = importer.import_file(db, settings, "touchpoints", sales,
                                  importer.load_mapping(mapping, "touchpoints"), tenant="demo", batch_size=2)
    assert (report.imported, report.rejected, report.customers_created) == (2, 3, 0)
    reasons = rejects_of(tmp_path / "sales.rejects.csv")
    assert "occurred_at" in reasons["3"] and "no usable identifier" in reasons["4"] and "amount_minor" in reasons["5"]

    found = clusters(db, settings, tmp_path / "clusters.csv")
    with db.transaction() as cur:
        cur.execute("select r.store_id, r.occurred_at, coalesce(c.merged_into, c.customer_id), r.summary "
                    "from identity.resolved_events r join identity.customers c using (customer_id) "
                    "where r.type = 'service.performed' order by r.occurred_at")
        (store1, at1, cid1, summary1), (_, _, cid2, _) = cur.fetchall()
    assert store1 == "sh-01" and at1 == datetime(2023, 6, 1, 10, 30, tzinfo=UTC)  # 18:30 in Shanghai
    assert summary1["amount_minor"] == 12850 and summary1["service_ids"] == ["wash", "dry"]
    assert str(cid1) == found["C01"] and str(cid2) == found["C08"]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_cli_killed_mid_import_resumes_where_it_stopped(database_url, db, tmp_path, workers):
    rows = [[f"K{i:05d}", "Given", f"Sur{i}", f"139{i:08d}", "", "1990-01-01", "", "", ""] for i in range(3000)]
    path = write_csv(tmp_path / "big.csv", rows)
    mapping = tmp_path / "big.yaml"
    mapping.write_text(MAPPING)
    env = {**os.environ, "DATABASE_URL": database_url}
    command = [sys.executable, "-m", "hub", "import", "customers", str(path), "--mapping", str(mapping),
               "--batch", "50", "--workers", str(workers), "--json"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    children = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = scalar(db, "select coalesce(max(rows_done), 0) from identity.import_runs")
            except Exception:  # the schema is not migrated yet
                done = 0
            if done >= 100:
                break
            time.sleep(0.02)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    assert len(children) >= workers - 1
    _, alive = psutil.wait_procs(children, timeout=15)  # workers die with the import, none is orphaned
    assert not alive
    at_kill = scalar(db, "select rows_done from identity.import_runs")
    committed = scalar(db, "select count(*) from identity.resolved_events")
    assert 100 <= at_kill < 3000, "the import was not interrupted mid-file"
    assert committed == at_kill if workers == 1 else committed >= at_kill  # workers: batches past it may commit

    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout)
    assert summary["rows_skipped_done_before"] == at_kill
    assert summary["imported"] == 3000 - committed and summary["already_imported"] == committed - at_kill
    assert scalar(db, "select count(*) from identity.resolved_events") == 3000
    assert scalar(db, "select count(*) from identity.customers") == 3000
